//! The typed channel: a connected Unix stream socket, framed, with a handshake.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::Message;
use crate::codec::Codec;
use crate::error::{Earlier, Error, HandshakeError, Result};
use crate::frame::{self, Decoder, MAX_FDS};
use crate::handshake::{Hello, MAX_HELLO_LEN};

/// Channel settings. Both sides must use the same codec.
///
/// ```
/// use forkyard_ipc::{Codec, Config};
/// let config = Config::new().codec(Codec::JsonLines).max_frame_len(1 << 20);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) codec: Codec,
    pub(crate) max_frame_len: u32,
    pub(crate) write_buffer: usize,
    pub(crate) handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            codec: Codec::Postcard,
            max_frame_len: 16 << 20,
            write_buffer: 64 << 10,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The defaults: postcard, 16 MiB frames, 64 KiB write buffer, 10 s handshake timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The codec (default [`Codec::Postcard`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Longest payload accepted or sent (default 16 MiB). A longer announced
    /// frame is refused before anything is allocated for it.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = max;
        self
    }

    /// How many encoded bytes [`Sender::feed`] may buffer before it waits for
    /// the socket (default 64 KiB). This bounds a sender's memory.
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.write_buffer = bytes.max(1);
        self
    }

    /// How long the first `send`/`recv` waits for the peer's hello (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The codec in use.
    pub fn codec_in_use(&self) -> Codec {
        self.codec
    }
}

/// What both halves share: the socket and the handshake's outcome.
struct Shared {
    io: AsyncFd<StdUnixStream>,
    config: Config,
    ours: Hello,
    /// Hello bytes not yet written (normally none: a fresh socket takes them at once).
    hello_out: Mutex<Vec<u8>>,
    peer: tokio::sync::OnceCell<std::result::Result<Hello, HandshakeError>>,
}

impl Shared {
    fn new<Tx: Message, Rx: Message>(stream: StdUnixStream, config: Config) -> Result<Arc<Shared>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the socket non-blocking", e))?;
        let ours = Hello::ours::<Tx, Rx>(config.codec);
        let mut line = ours.to_line();
        // A fresh socket has room for the hello; if not, the handshake finishes the write.
        match rustix::net::send(&stream, &line, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(n) => drop(line.drain(..n)),
            // The peer already gone (or its buffer full): the handshake
            // reports it on first use, when the caller can also look at why
            // (a spawned child's exit, say).
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::PIPE) => {}
            Err(e) => return Err(Error::io("sending the hello", e.into())),
        }
        let io =
            // SAFETY: the `AsyncFd` owns the stream, so its fd stays open and
            // names the same socket until the `AsyncFd` is dropped (we never
            // take the stream back out), and `UnixStream::as_raw_fd` always
            // returns that one fd.
            unsafe { AsyncFd::register(stream) }.map_err(|e| Error::io("registering the socket", e.into()))?;
        Ok(Arc::new(Shared {
            io,
            config,
            ours,
            hello_out: Mutex::new(line),
            peer: tokio::sync::OnceCell::new(),
        }))
    }

    /// Writes what is left of our hello without waiting; true once it is all out.
    fn hello_written(&self) -> bool {
        let mut out = self.hello_out.lock().unwrap_or_else(|e| e.into_inner());
        while !out.is_empty() {
            match rustix::net::send(&self.io, &out, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
                Ok(n) => drop(out.drain(..n)),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits for the peer's hello (once per channel) and returns the verdict.
    async fn handshake(&self) -> Result<&Hello> {
        let verdict = self
            .peer
            .get_or_init(|| async {
                let timeout = self.config.handshake_timeout;
                match tokio::time::timeout(timeout, self.exchange_hello()).await {
                    Ok(verdict) => verdict,
                    Err(_) => Err(HandshakeError::Timeout(timeout)),
                }
            })
            .await;
        verdict.as_ref().map_err(|e| Error::Handshake(e.clone()))
    }

    async fn exchange_hello(&self) -> std::result::Result<Hello, HandshakeError> {
        let hs_io = |e: io::Error| HandshakeError::Io(Arc::new(e));
        // 1. Finish writing our hello, should the constructor not have managed.
        loop {
            let done = {
                let mut out = self.hello_out.lock().unwrap_or_else(|e| e.into_inner());
                if out.is_empty() {
                    true
                } else {
                    match self.io.try_io(Interest::WRITABLE, |_| {
                        Ok(rustix::net::send(
                            &self.io,
                            &out,
                            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
                        )?)
                    }) {
                        Ok(n) => {
                            out.drain(..n);
                            out.is_empty()
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                        // The peer shut its end (or exited) before our hello
                        // went out. It may still have sent its own hello and
                        // data, which are in our receive buffer: our hello can
                        // never arrive, but theirs can still be read, so go on
                        // to read it rather than hide what is there. A send
                        // after this reports `Closed`.
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                            ) =>
                        {
                            out.clear();
                            true
                        }
                        Err(e) => return Err(hs_io(e)),
                    }
                }
            };
            if done {
                break;
            }
            drop(self.io.writable().await.map_err(hs_io)?);
        }
        // 2. Peek until the peer's whole hello line is there. Peeking consumes
        //    nothing, so a cancelled handshake can be resumed by the other half.
        let mut peeked = vec![0u8; MAX_HELLO_LEN + 1];
        let line_len = loop {
            drop(self.io.readable().await.map_err(hs_io)?);
            let r = self.io.try_io(Interest::READABLE, |_| {
                let (_, n) = rustix::net::recv(
                    &self.io,
                    &mut peeked[..],
                    RecvFlags::PEEK | RecvFlags::DONTWAIT,
                )?;
                if n == 0 {
                    return Ok(None);
                }
                if let Some(i) = peeked[..n].iter().position(|&b| b == b'\n') {
                    return Ok(Some(i + 1));
                }
                if n > MAX_HELLO_LEN {
                    return Ok(Some(usize::MAX));
                }
                // Incomplete. If the peer has already hung up, no more bytes
                // (and no new readiness edge) will come: that is the end.
                // Peeking cannot see it, so ask poll(2), which reports the
                // hang-up level-triggered.
                let mut fds = [rustix::event::PollFd::new(
                    &self.io,
                    rustix::event::PollFlags::RDHUP,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if rustix::event::poll(&mut fds, Some(&zero))? > 0
                    && fds[0]
                        .revents()
                        .intersects(rustix::event::PollFlags::RDHUP | rustix::event::PollFlags::HUP)
                {
                    return Ok(None);
                }
                // Report WouldBlock so tokio clears readiness and wakes us
                // when more bytes arrive.
                Err(io::ErrorKind::WouldBlock.into())
            });
            match r {
                Ok(None) => return Err(HandshakeError::PeerClosed),
                // Reset: the peer closed with our bytes unread and nothing of
                // its own left to read (queued bytes would come first).
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(HandshakeError::PeerClosed);
                }
                Ok(Some(usize::MAX)) => {
                    if !peeked.starts_with(b"{") {
                        return Err(HandshakeError::BadMagic {
                            first_bytes: String::from_utf8_lossy(&peeked[..32]).into_owned(),
                        });
                    }
                    return Err(HandshakeError::HelloTooLong { max: MAX_HELLO_LEN });
                }
                Ok(Some(len)) => break len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A peer speaking something else may never send a newline:
                    // judge its first bytes as soon as they cannot start a hello.
                    if peeked[0] != 0 && peeked[0] != b'{' {
                        return Err(HandshakeError::BadMagic {
                            first_bytes: String::from_utf8_lossy(&peeked[..peeked.len().min(32)])
                                .trim_end_matches('\0')
                                .to_owned(),
                        });
                    }
                    continue;
                }
                Err(e) => return Err(hs_io(e)),
            }
        };
        // 3. Consume exactly the hello line (it is all there), dropping any fds a
        //    confused peer attached to it.
        let mut consumed = 0;
        while consumed < line_len {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [io::IoSliceMut::new(&mut peeked[consumed..line_len])];
            match rustix::net::recvmsg(
                &self.io,
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            ) {
                Ok(m) if m.bytes == 0 => return Err(HandshakeError::PeerClosed),
                Ok(m) => consumed += m.bytes,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(hs_io(e.into())),
            }
        }
        let mut line = &peeked[..line_len - 1];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        Hello::check(&self.ours, line)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("fd", &self.io.as_fd())
            .field("codec", &self.config.codec)
            .finish_non_exhaustive()
    }
}

/// A typed, bidirectional channel to another process: sends `Tx`, receives `Rx`.
///
/// The peer must be a `Channel<Rx, Tx>` (or speak the same wire format); the
/// handshake checks that before the first message goes either way.
/// [`Channel::split`] gives halves for separate tasks.
pub struct Channel<Tx, Rx> {
    tx: Sender<Tx>,
    rx: Receiver<Rx>,
}

impl<Tx, Rx> fmt::Debug for Channel<Tx, Rx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("shared", &self.tx.shared)
            .finish_non_exhaustive()
    }
}

impl<Tx: Message, Rx: Message> Channel<Tx, Rx> {
    /// A channel over a connected Unix stream socket, with the default [`Config`].
    ///
    /// Sends our hello at once; the first `send` or `recv` checks the peer's.
    /// Must be called inside a tokio runtime.
    pub fn from_stream(stream: StdUnixStream) -> Result<Self> {
        Self::from_stream_with(stream, Config::default())
    }

    /// [`Channel::from_stream`] with settings.
    pub fn from_stream_with(stream: StdUnixStream, config: Config) -> Result<Self> {
        let shared = Shared::new::<Tx, Rx>(stream, config)?;
        Ok(Channel {
            tx: Sender::new(shared.clone()),
            rx: Receiver::new(shared),
        })
    }

    /// Two connected channels in this process (a socketpair): handy for tests
    /// and for handing one end to a child yourself.
    pub fn pair() -> Result<(Channel<Tx, Rx>, Channel<Rx, Tx>)> {
        Self::pair_with(Config::default())
    }

    /// [`Channel::pair`] with settings (used for both ends).
    pub fn pair_with(config: Config) -> Result<(Channel<Tx, Rx>, Channel<Rx, Tx>)> {
        let (a, b) = StdUnixStream::pair().map_err(|e| Error::io("creating a socketpair", e))?;
        Ok((
            Channel::from_stream_with(a, config.clone())?,
            Channel::<Rx, Tx>::from_stream_with(b, config)?,
        ))
    }

    /// Sends one message and waits until it is written to the socket.
    ///
    /// Waits while the peer is not reading and the socket buffer is full
    /// (backpressure). If the future is dropped part-way, the message stays
    /// queued and goes out, whole, before the next one.
    pub fn send<'a>(
        &'a mut self,
        msg: &Tx,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, Tx, Rx> {
        self.tx.send(msg)
    }

    /// Queues one message without writing it unless the buffer is full; see
    /// [`Sender::feed`].
    pub fn feed<'a>(
        &'a mut self,
        msg: &Tx,
    ) -> impl Future<Output = Result<()>> + Send + use<'a, Tx, Rx> {
        self.tx.feed(msg)
    }

    /// Writes all queued messages.
    pub async fn flush(&mut self) -> Result<()> {
        self.tx.flush().await
    }

    /// Receives the next message; `Ok(None)` when the peer closed cleanly
    /// between frames. Cancel-safe: nothing read is lost if the future is dropped.
    pub async fn recv(&mut self) -> Result<Option<Rx>> {
        self.rx.recv().await
    }

    /// The next message if one is already buffered; see [`Receiver::recv_buffered`].
    pub fn recv_buffered(&mut self) -> Option<Result<Rx>> {
        self.rx.recv_buffered()
    }

    /// Splits into a send half and a receive half, for use from different tasks.
    pub fn split(self) -> (Sender<Tx>, Receiver<Rx>) {
        (self.tx, self.rx)
    }

    /// Puts the halves of one channel back together; if they come from
    /// different channels, hands both back unchanged as the `Err`.
    #[expect(
        clippy::result_large_err,
        reason = "the Err gives the caller back its own two halves; boxing them would only add an allocation"
    )]
    pub fn reunite(
        tx: Sender<Tx>,
        rx: Receiver<Rx>,
    ) -> std::result::Result<Self, (Sender<Tx>, Receiver<Rx>)> {
        if Arc::ptr_eq(&tx.shared, &rx.shared) {
            Ok(Channel { tx, rx })
        } else {
            Err((tx, rx))
        }
    }

    /// Waits for the handshake and returns the peer's message types:
    /// `(what it sends, what it receives)`.
    pub async fn handshake(&self) -> Result<(crate::TypeInfo, crate::TypeInfo)> {
        let hello = self.tx.shared.handshake().await?;
        Ok((hello.sends.clone(), hello.receives.clone()))
    }
}

/// Why a half refuses further use, kept so that one event always reads as
/// one error: a peer that went away is [`Error::Closed`] on every later call,
/// not `Closed` once and then `Broken` by "the peer closed the channel".
#[derive(Debug, Clone)]
enum Poison {
    Closed,
    Handshake(HandshakeError),
    Broken(Earlier),
}

impl Poison {
    fn of(e: &Error) -> Poison {
        match e {
            Error::Closed => Poison::Closed,
            Error::Handshake(e) => Poison::Handshake(e.clone()),
            Error::Broken(earlier) => Poison::Broken(earlier.clone()),
            other => Poison::Broken(Earlier::of(other)),
        }
    }

    fn error(&self) -> Error {
        match self {
            Poison::Closed => Error::Closed,
            Poison::Handshake(e) => Error::Handshake(e.clone()),
            Poison::Broken(earlier) => Error::Broken(earlier.clone()),
        }
    }
}

/// One fd-carrying frame waiting in a [`Sender`]'s buffer.
#[derive(Debug)]
struct PendingFds {
    start: usize,
    end: usize,
    fds: Vec<OwnedFd>,
}

/// The sending half of a [`Channel`].
///
/// Dropping it shuts the socket down for writing, so the peer's `recv`
/// returns `Ok(None)` once it has read everything; messages still buffered
/// are written if the socket takes them at once (call [`Sender::close`] to
/// wait for them instead).
pub struct Sender<T> {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    written: usize,
    fds: VecDeque<PendingFds>,
    broken: Option<Poison>,
    _msg: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("shared", &self.shared)
            .field("buffered", &(self.buf.len() - self.written))
            .finish_non_exhaustive()
    }
}

impl<T: Message> Sender<T> {
    fn new(shared: Arc<Shared>) -> Self {
        Sender {
            shared,
            buf: Vec::new(),
            written: 0,
            fds: VecDeque::new(),
            broken: None,
            _msg: PhantomData,
        }
    }

    /// Sends one message and waits until it is written; see [`Channel::send`].
    ///
    /// The message is encoded before the returned future is first polled, so
    /// the future does not borrow it (and `T` need not be `Sync`).
    pub fn send<'a>(&'a mut self, msg: &T) -> impl Future<Output = Result<()>> + Send + use<'a, T> {
        let queued = self.queue(msg);
        async move {
            queued?;
            self.flush().await
        }
    }

    /// Encodes one message into the write buffer. Writes (and waits for the
    /// socket) only once the buffer holds `write_buffer` bytes, so a burst of
    /// small messages goes out in few system calls. Follow with
    /// [`Sender::flush`].
    ///
    /// The message is queued (or refused with an error) before the returned
    /// future is first polled; dropping the future only gives up the wait.
    pub fn feed<'a>(&'a mut self, msg: &T) -> impl Future<Output = Result<()>> + Send + use<'a, T> {
        let queued = self.queue(msg);
        async move {
            queued?;
            if self.buf.len() - self.written >= self.shared.config.write_buffer {
                self.flush().await?;
            }
            Ok(())
        }
    }

    /// Encodes `msg` at the end of the write buffer, with its fds.
    fn queue(&mut self, msg: &T) -> Result<()> {
        self.check_broken()?;
        let start = self.buf.len();
        let fds = frame::encode(
            self.shared.config.codec,
            self.shared.config.max_frame_len,
            msg,
            &mut self.buf,
        )?;
        if !fds.is_empty() {
            self.fds.push_back(PendingFds {
                start,
                end: self.buf.len(),
                fds,
            });
        }
        Ok(())
    }

    /// Writes everything queued, waiting for the socket as needed (and, the
    /// first time, for the handshake). Cancel-safe: progress is kept.
    pub async fn flush(&mut self) -> Result<()> {
        self.check_broken()?;
        if self.written == self.buf.len() {
            return Ok(());
        }
        if let Err(e) = self.shared.handshake().await {
            return Err(self.poison(e));
        }
        while self.written < self.buf.len() {
            match self
                .shared
                .io
                .try_io(Interest::WRITABLE, |_| self.write_some())
            {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.shared.io.writable().await.map(drop) {
                        return Err(self.poison(Error::io("waiting to send", e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.poison(Error::io("sending", e))),
            }
        }
        self.buf.clear();
        self.written = 0;
        Ok(())
    }

    /// Flushes, then shuts the socket down for writing: the peer's `recv`
    /// returns `Ok(None)` after the last message.
    pub async fn close(&mut self) -> Result<()> {
        self.flush().await?;
        self.broken = Some(Poison::Broken(Earlier::of(&Error::SenderClosed)));
        rustix::net::shutdown(&self.shared.io, rustix::net::Shutdown::Write)
            .map_err(|e| Error::io("shutting down the socket", e.into()))
    }

    fn check_broken(&self) -> Result<()> {
        match &self.broken {
            Some(poison) => Err(poison.error()),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        if e.is_fatal() && self.broken.is_none() {
            self.broken = Some(Poison::of(&e));
        }
        e
    }
}

impl<T> Sender<T> {
    /// One `send`/`sendmsg` of the buffered bytes, respecting the fd rule in
    /// [`crate::frame`]: an fd-carrying frame starts its own call and ends it.
    fn write_some(&self) -> io::Result<usize> {
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        match self.fds.front() {
            Some(p) if p.start == self.written => {
                let borrowed: Vec<_> = p.fds.iter().map(AsFd::as_fd).collect();
                let mut space =
                    vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                let pushed = control.push(SendAncillaryMessage::ScmRights(&borrowed));
                debug_assert!(pushed, "space was sized for these fds");
                let iov = [io::IoSlice::new(&self.buf[p.start..p.end])];
                Ok(rustix::net::sendmsg(
                    &self.shared.io,
                    &iov,
                    &mut control,
                    flags,
                )?)
            }
            next => {
                let limit = next.map_or(self.buf.len(), |p| p.start);
                Ok(rustix::net::send(
                    &self.shared.io,
                    &self.buf[self.written..limit],
                    flags,
                )?)
            }
        }
    }

    fn advance(&mut self, n: usize) {
        if self.fds.front().is_some_and(|p| p.start == self.written) && n > 0 {
            // The kernel holds its own references now; close our duplicates.
            self.fds.pop_front();
        }
        self.written += n;
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Best effort, without waiting: what the socket takes now goes out
        // (fd frames included), so a sender dropped right after `feed` still
        // delivers what fits. A frame cut short here reads as
        // `PeerClosedMidFrame` on the other side; `close()` waits for all.
        let refused = self.shared.peer.get().is_some_and(|p| p.is_err());
        if self.broken.is_none()
            && !refused
            && self.written < self.buf.len()
            && self.shared.hello_written()
        {
            while self.written < self.buf.len() {
                match self.write_some() {
                    Ok(n) if n > 0 => self.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        }
        let _ = rustix::net::shutdown(&self.shared.io, rustix::net::Shutdown::Write);
    }
}

/// The receiving half of a [`Channel`].
pub struct Receiver<T> {
    shared: Arc<Shared>,
    decoder: Decoder,
    eof: bool,
    broken: Option<Poison>,
    _msg: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<T: Message> Receiver<T> {
    fn new(shared: Arc<Shared>) -> Self {
        let decoder = Decoder::new(shared.config.codec, shared.config.max_frame_len);
        Receiver {
            shared,
            decoder,
            eof: false,
            broken: None,
            _msg: PhantomData,
        }
    }

    /// Receives the next message; see [`Channel::recv`].
    pub async fn recv(&mut self) -> Result<Option<T>> {
        if let Some(poison) = &self.broken {
            return Err(poison.error());
        }
        if let Err(e) = self.shared.handshake().await {
            return Err(self.poison(e));
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(raw)) => {
                    let payload = self.decoder.payload(&raw);
                    return frame::decode(self.shared.config.codec, payload, raw.fds).map(Some);
                }
                Ok(None) => {}
                Err(e) => return Err(self.poison(e)),
            }
            if self.eof {
                return match self.decoder.at_eof() {
                    Ok(()) => Ok(None),
                    Err(e) => Err(self.poison(e)),
                };
            }
            if let Err(e) = self.fill().await {
                return Err(self.poison(e));
            }
        }
    }

    /// Takes the next message if an earlier [`recv`](Receiver::recv) already
    /// read it from the socket, without waiting and without a system call.
    /// `None` means a `recv` would have to read the socket (or report the end
    /// of the stream, or an error the channel is broken by).
    ///
    /// One `recv` often reads a burst of messages at once; draining the rest
    /// with this lets a receiver handle the burst as one batch (answer it with
    /// one write, take a lock once) instead of one wake-up per message.
    /// Messages come in the order `recv` would have returned them.
    pub fn recv_buffered(&mut self) -> Option<Result<T>> {
        if self.broken.is_some() {
            return None;
        }
        match self.decoder.next_frame() {
            Ok(Some(raw)) => {
                let payload = self.decoder.payload(&raw);
                Some(frame::decode(self.shared.config.codec, payload, raw.fds))
            }
            Ok(None) => None,
            Err(e) => Some(Err(self.poison(e))),
        }
    }

    /// One read into the decoder, waiting for the socket as needed.
    async fn fill(&mut self) -> Result<()> {
        let shared = &self.shared;
        loop {
            let mut ready = shared
                .io
                .readable()
                .await
                .map_err(|e| Error::io("waiting to receive", e))?;
            let spare = self.decoder.spare();
            let room = spare.len();
            match ready.try_io(|io| read_some(io.get_ref(), spare)) {
                Ok(Ok((0, _, _))) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(Ok((n, fds, truncated))) => {
                    // A read that left room in the buffer and brought no fds
                    // emptied the socket (Linux glues every queued skb into one
                    // read unless it carries fds), so readiness is stale:
                    // clearing it now saves the next `recv` a `recvmsg` that
                    // would only say EAGAIN. (tokio's own `poll_read` does the
                    // same; a wake-up that raced in since is kept.)
                    if n < room && fds.is_empty() && !truncated {
                        ready.clear_ready();
                    }
                    self.decoder.commit(n, fds, truncated);
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(Error::io("receiving", e)),
                // Would block: readiness was cleared; wait for the next edge.
                Err(_) => {}
            }
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        if e.is_fatal() && self.broken.is_none() {
            self.broken = Some(Poison::of(&e));
        }
        e
    }
}

/// One `recvmsg` with room for a frame's worth of fds, close-on-exec.
fn read_some(io: &StdUnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(
        io,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fds = Vec::new();
    for cmsg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    Ok((msg.bytes, fds, msg.flags.contains(ReturnFlags::CTRUNC)))
}
