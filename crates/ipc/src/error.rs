//! Every way a channel or a pattern built on it can fail.
//!
//! The variants fall in two groups, and [`Error::is_fatal`] tells them apart:
//!
//! * **Frame errors** (`Decode`, `FdMismatch`, `FdsTruncated`, `Encode`,
//!   `TooManyFds`, `FdsNotSupported`, `FrameTooLarge` on send): one message was
//!   refused, the byte stream is still in step, the next `send`/`recv` works.
//! * **Stream errors** (everything else on a channel): the byte stream in that
//!   direction can no longer be trusted, so the half that met the error
//!   ([`Sender`](crate::Sender) or [`Receiver`](crate::Receiver)) refuses
//!   further use. It says so with the same error every time for the events
//!   that have one meaning ([`Error::Closed`]: the peer is gone;
//!   [`Error::Handshake`]), and with [`Error::Broken`] carrying the first
//!   error's message otherwise.
//!
//! The two directions of a socket are independent, and so are the halves: a
//! receiver broken by a garbled frame leaves the sender working for as long
//! as the peer reads, so a worker can still answer what it had started (and a
//! handshake failure, which concerns both directions, fails both). To end
//! both, drop the channel.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::handshake::TypeInfo;

/// The error type of forkyard-ipc.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the socket failed.
    #[error("i/o error while {op}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The handshake failed: the peer is not a forkyard-ipc channel of the same
    /// protocol, codec and message types.
    #[error("handshake failed")]
    Handshake(#[source] HandshakeError),
    /// A frame header announced a zero-length frame, which no encoder produces.
    #[error("zero-length frame at stream offset {offset}")]
    ZeroLengthFrame {
        /// Byte offset of the frame in the received stream.
        offset: u64,
    },
    /// A frame is longer than the configured maximum; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Announced (or, on send, encoded) length.
        len: u64,
        /// The configured `max_frame_len`.
        max: u32,
    },
    /// The payload ended before the message it encodes was complete.
    #[error("truncated frame: the payload of {len} bytes ends inside the message")]
    Truncated {
        /// Payload length.
        len: usize,
        /// The decoder's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The payload is not a valid encoding of the receive type.
    #[error("undecodable frame of {len} bytes")]
    Decode {
        /// Payload length.
        len: usize,
        /// The decoder's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The message could not be encoded (a serde error, or an fd that could not be duplicated).
    #[error("cannot encode message")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The peer closed the connection in the middle of a frame.
    #[error("peer closed the channel mid-frame ({have} bytes of an unfinished frame received)")]
    PeerClosedMidFrame {
        /// Bytes of the unfinished frame that did arrive.
        have: usize,
    },
    /// A frame declared a different number of file descriptors than arrived with it.
    /// The fds that did arrive were closed.
    #[error("frame declared {declared} file descriptors but {received} arrived")]
    FdMismatch {
        /// Count written in the frame header (0 for JSON lines).
        declared: usize,
        /// Count received with the frame's bytes.
        received: usize,
    },
    /// The kernel truncated the file descriptors of a frame (`MSG_CTRUNC`),
    /// typically because this process is at its `RLIMIT_NOFILE`. The fds that
    /// did arrive were closed; the rest were closed by the kernel.
    #[error(
        "file descriptors truncated by the kernel (MSG_CTRUNC): declared {declared}, installed {received}; is the process at its open-file limit?"
    )]
    FdsTruncated {
        /// Count written in the frame header.
        declared: usize,
        /// Count the kernel managed to install before truncating.
        received: usize,
    },
    /// A message carries more fds than one frame may (the kernel's `SCM_MAX_FD`).
    #[error("a message may carry at most {max} file descriptors, this one has {count}")]
    TooManyFds {
        /// Fds in the message.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The JSON-lines codec cannot carry file descriptors.
    #[error("the json-lines codec cannot carry file descriptors")]
    FdsNotSupported,
    /// The peer has gone: it closed its end, or died, or stopped reading for good.
    #[error("the peer closed the channel")]
    Closed,
    /// An earlier stream error left this half unusable; the source is that
    /// error, with its causes.
    #[error("the channel is broken by an earlier error")]
    Broken(#[source] Earlier),
    /// [`Sender::close`](crate::Sender::close) was called; nothing more can be sent.
    #[error("the sender was closed")]
    SenderClosed,
    /// `from_stream`, `from_parent` or `spawn` was called outside a tokio runtime.
    #[error("forkyard-ipc needs a tokio runtime (call it inside one)")]
    NoRuntime,
    /// The child process could not be spawned.
    #[error("cannot spawn the worker")]
    Spawn(#[source] Box<forkyard_child::Error>),
    /// `Channel::from_parent` found no usable `FORKYARD_IPC_FD`.
    #[error("no ipc channel from the parent: {reason}")]
    NoParentChannel {
        /// Why.
        reason: String,
    },
    /// A request did not get its response before its deadline (request-response).
    #[error("no response within {0:?}")]
    DeadlineExceeded(Duration),
    /// The peer's handler failed on our request (request-response).
    #[error("the peer failed to handle the request: {0}")]
    Remote(String),
    /// A generation handoff is already running (handoff).
    #[error("a handoff is already in progress")]
    HandoffInProgress,
    /// The new generation did not become ready; it was killed and the old one keeps serving (handoff).
    #[error("generation {generation} did not become ready: {reason}")]
    NotReady {
        /// The generation that failed.
        generation: u64,
        /// What happened (timeout, exit, channel error).
        reason: String,
    },
}

impl Error {
    /// True when the channel cannot be used after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Decode { .. }
                | Error::Truncated { .. }
                | Error::FdMismatch { .. }
                | Error::FdsTruncated { .. }
                | Error::Encode(_)
                | Error::TooManyFds { .. }
                | Error::FdsNotSupported
                | Error::DeadlineExceeded(_)
                | Error::Remote(_)
                | Error::HandoffInProgress
                | Error::NotReady { .. }
        )
    }

    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        if matches!(
            source.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Error::Closed;
        }
        Error::Io { op, source }
    }
}

/// An earlier error, kept for every call after it: its message and each of its
/// causes, as they read. ([`Error`] holds OS errors and decoder errors that
/// cannot be cloned, and the caller that met the error gets the error itself;
/// this is what later callers get as [`Error::Broken`]'s source, so that
/// `{:#}` and anyhow chains still show every cause.)
#[derive(Debug, Clone)]
pub struct Earlier {
    message: String,
    source: Option<Box<Earlier>>,
}

impl Earlier {
    /// Takes down `error`'s message and the messages of its sources.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Earlier {
        Earlier {
            message: error.to_string(),
            source: error.source().map(|s| Box::new(Earlier::of(s))),
        }
    }
}

impl std::fmt::Display for Earlier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Earlier {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Why a handshake failed. Both sides see the mismatch: each checks the hello
/// the other sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's first bytes are not a forkyard-ipc hello.
    #[error("the peer is not a forkyard-ipc channel: its first bytes are {first_bytes:?}")]
    BadMagic {
        /// Up to 32 of the peer's first bytes, lossily as text.
        first_bytes: String,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version {
        /// Ours.
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peer uses another codec.
    #[error("codec mismatch: we use {ours}, the peer uses {theirs}")]
    Codec {
        /// Ours.
        ours: String,
        /// The peer's.
        theirs: String,
    },
    /// The types do not match in one direction.
    #[error("message type mismatch: we {direction} {ours} but the peer {peer_direction} {theirs}")]
    Types {
        /// "send" or "receive".
        direction: &'static str,
        /// "receives" or "sends".
        peer_direction: &'static str,
        /// Our side's type (boxed to keep [`Error`] small).
        ours: Box<TypeInfo>,
        /// The peer's side's type.
        theirs: Box<TypeInfo>,
    },
    /// The peer closed before completing its hello.
    #[error("the peer closed the channel before its hello")]
    PeerClosed,
    /// The hello line is longer than allowed.
    #[error("the peer's hello exceeds {max} bytes")]
    HelloTooLong {
        /// The limit.
        max: usize,
    },
    /// The peer sent no complete hello in time.
    #[error("no hello from the peer within {0:?}")]
    Timeout(Duration),
    /// An i/o error during the handshake.
    #[error("i/o error during the handshake")]
    Io(#[source] Arc<io::Error>),
}

/// The result type of forkyard-ipc.
pub type Result<T, E = Error> = std::result::Result<T, E>;
