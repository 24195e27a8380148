//! Starting a child with a channel to it, and the child's end: `from_parent`.
//!
//! The parent makes a Unix socketpair, keeps one end, and hands the other to
//! the child as fd 3 (forkyard-child closes every other inherited fd), saying
//! so in `FORKYARD_IPC_FD=3`, as Node says `NODE_CHANNEL_FD`. The codec goes in
//! `FORKYARD_IPC_CODEC`, so a worker needs no configuration to match its parent.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use std::borrow::BorrowMut;

use forkyard_child::{Child, Launch};

use crate::channel::Config;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::{Channel, Message};

/// The variable that announces the channel's fd to the child.
pub const IPC_FD_ENV: &str = "FORKYARD_IPC_FD";
/// The variable that names the channel's codec (`postcard` or `json-lines`).
pub const IPC_CODEC_ENV: &str = "FORKYARD_IPC_CODEC";
/// The fd number the child finds its end of the channel at.
pub const IPC_FD: RawFd = 3;

/// Spawns `cmd` as a [`Child`] with a channel to it (default settings).
///
/// The child takes its end with [`Channel::from_parent`].
pub fn spawn<Tx: Message, Rx: Message>(cmd: &mut Command) -> Result<(Child, Channel<Tx, Rx>)> {
    spawn_with(Child::builder(cmd), Config::default())
}

/// Spawns the child `launch` describes (stdio, timeout, cgroup, hooks, ...)
/// with a channel to it using `config`. Takes an owned
/// [`Launch`](forkyard_child::Launch) or a [`Builder`](forkyard_child::Builder)
/// over a borrowed `Command` alike.
pub fn spawn_with<Tx: Message, Rx: Message>(
    launch: Launch<impl BorrowMut<Command>>,
    config: Config,
) -> Result<(Child, Channel<Tx, Rx>)> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let (ours, theirs) =
        StdUnixStream::pair().map_err(|e| Error::io("creating a socketpair", e))?;
    let child = launch
        .env(IPC_FD_ENV, IPC_FD.to_string())
        .env(IPC_CODEC_ENV, config.codec_in_use().name())
        .pass_fd(OwnedFd::from(theirs), IPC_FD)
        .spawn()
        .map_err(|e| Error::Spawn(Box::new(e)))?;
    // A failure here drops (and so kills) the child: no half-set-up worker.
    let channel = Channel::from_stream_with(ours, config)?;
    Ok((child, channel))
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl<Tx: Message, Rx: Message> Channel<Tx, Rx> {
    /// The child's end of the channel its parent made with [`spawn`]: the fd
    /// named by `FORKYARD_IPC_FD`, in the codec named by `FORKYARD_IPC_CODEC`.
    ///
    /// Can be taken once per process; the fd is made close-on-exec, so the
    /// child's own children do not inherit it. Must be called inside a tokio
    /// runtime.
    pub fn from_parent() -> Result<Self> {
        let mut config = Config::default();
        if let Some(name) = std::env::var_os(IPC_CODEC_ENV) {
            let name = name.to_string_lossy();
            let codec = Codec::from_name(&name).ok_or_else(|| Error::NoParentChannel {
                reason: format!("{IPC_CODEC_ENV}={name} is not a codec this build knows"),
            })?;
            config = config.codec(codec);
        }
        Self::from_parent_with(config)
    }

    /// [`Channel::from_parent`] with explicit settings (the codec must match the parent's).
    pub fn from_parent_with(config: Config) -> Result<Self> {
        let no = |reason: String| Error::NoParentChannel { reason };
        let raw = std::env::var(IPC_FD_ENV).map_err(|_| no(format!("{IPC_FD_ENV} is not set")))?;
        let fd: RawFd = raw
            .trim()
            .parse()
            .map_err(|_| no(format!("{IPC_FD_ENV}={raw} is not an fd number")))?;
        if fd < 3 {
            return Err(no(format!("{IPC_FD_ENV}={fd} names a stdio fd")));
        }
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(no(
                "the parent channel was already taken in this process".into()
            ));
        }
        // SAFETY: the fd is only borrowed for the checks below, during which
        // nothing else in this process closes it (it was announced to us alone,
        // and `TAKEN` makes this the only taker).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            return Err(no(format!("fd {fd} is not open")));
        }
        match rustix::net::sockopt::socket_type(borrowed) {
            Ok(rustix::net::SocketType::STREAM) => {}
            Ok(other) => {
                return Err(no(format!(
                    "fd {fd} is a socket of type {other:?}, not a stream"
                )));
            }
            Err(e) => return Err(no(format!("fd {fd} is not a socket ({e})"))),
        }
        // SAFETY: the fd is open, is a stream socket, and was handed to this
        // process for exactly this use; `TAKEN` guarantees we take ownership once.
        let owned = unsafe { OwnedFd::from_raw_fd(borrowed.as_raw_fd()) };
        rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| Error::io("marking the parent channel close-on-exec", e.into()))?;
        Channel::from_stream_with(StdUnixStream::from(owned), config)
    }
}
