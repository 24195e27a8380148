//! Typed messages and file descriptors between processes, and the four
//! patterns built on them: request-response, pub-sub, handle passing with load
//! balancing, and zero-downtime handoff.
//!
//! # The problem
//!
//! A parent and its worker processes must talk. What is at hand is a pipe and
//! `serde_json`, and each project then rediscovers the same holes:
//!
//! - **Framing.** Where does a message end? A length prefix read from a
//!   hostile or buggy peer can announce 4 GiB; allocating it first is a crash.
//!   A peer dying mid-message must be an error, not a hang.
//! - **Version skew.** A worker built from other code (a re-exec'd binary that
//!   was replaced on disk, a Python worker with last month's schema) decodes
//!   garbage, or fails far from the cause.
//! - **Handles.** Passing a socket or a file to another process needs
//!   `SCM_RIGHTS`, which is easy to get wrong: fds leak when a read is split,
//!   arrive with the wrong message, or are inherited by the next child; at the
//!   fd limit the kernel silently truncates them (`MSG_CTRUNC`).
//! - **Patterns.** Request-response with many calls in flight, publish-subscribe
//!   with slow consumers, several processes serving one port, replacing them
//!   without dropping a connection: each is a small distributed system, and the
//!   failure cases (a worker killed mid-request, a connection in flight to a dead
//!   worker, a new version that never starts) are where home-grown code breaks.
//!
//! Node's `child_process.fork` answers most of this for JavaScript (a message
//! channel at `NODE_CHANNEL_FD`, server handles sent to workers, the `cluster`
//! module on top). This crate does the same for Rust, typed and faster.
//!
//! # The approach
//!
//! A [`Channel<Tx, Rx>`](Channel) is a Unix stream socket with framing, a
//! handshake and fd passing:
//!
//! 1. **Transport.** [`spawn`] makes a socketpair and hands the child its end
//!    as fd 3, announced in `FORKYARD_IPC_FD` (and the codec in
//!    `FORKYARD_IPC_CODEC`); the child calls [`Channel::from_parent`]. The child
//!    itself is a [`forkyard_child::Child`]: its own process group, killed with
//!    its owner.
//! 2. **Framing.** `u32` little-endian length, a count of attached fds, a
//!    postcard payload. The length is checked against
//!    [`Config::max_frame_len`] (16 MiB by default) *before* anything is
//!    allocated; zero-length, oversized, truncated and undecodable frames and a
//!    peer closing mid-frame are typed [`Error`]s. An undecodable frame costs
//!    that message only; the stream stays in step.
//! 3. **Handshake.** Each side first sends one JSON line: a magic, the protocol
//!    version, the codec, and a structural fingerprint of the types it sends
//!    and receives (field names, types and variants at every depth). A mismatch fails both sides at the first `send` or
//!    `recv` with an error naming both types.
//! 4. **File descriptors.** An `OwnedFd` field marked
//!    `#[serde(with = "forkyard_ipc::fd")]` travels as `SCM_RIGHTS` with its
//!    frame, received with `MSG_CMSG_CLOEXEC` (so no later child inherits
//!    it). The kernel delivers fds with the read that reaches their first byte;
//!    the receiver tags them with the stream offset and hands each frame
//!    exactly its own (see `frame.rs`). A count mismatch or `MSG_CTRUNC` is a
//!    typed error and every fd that did arrive is closed.
//! 5. **Codecs.** [`Codec::Postcard`] for Rust workers, [`Codec::JsonLines`] so
//!    a worker in Python, Node or shell can join (the crate ships one in
//!    `python/ipc_worker.py`; the README documents the wire format).
//! 6. **Backpressure.** A sender facing a reader that does not read waits once
//!    the socket and its bounded write buffer are full; memory stays bounded.
//!
//! The patterns, a module each:
//!
//! | module | what it gives | the failure it handles |
//! |---|---|---|
//! | [`rpc`] | [`Rpc::call`](rpc::Rpc::call): correlation ids, many in flight, per-call deadline, cancel on drop, both directions | a worker dying fails every call at once |
//! | [`pubsub`] | the parent as [`Broker`](pubsub::Broker), topics, worker [`Client`](pubsub::Client)s | a slow subscriber: bounded buffer, drop-oldest (counted) or disconnect |
//! | [`balance`] | a [`Cluster`](balance::Cluster) of workers on one port: shared listener, round-robin, least-connections; per-worker counts and Jain's index | a worker dying with a connection in flight: handed to another, or closed |
//! | [`handoff`] | [`Cluster::handoff`](balance::Cluster::handoff): a new generation takes over, the old drains | a new generation that never gets ready is killed; the old keeps serving |
//!
//! # Example
//!
//! Two ends in one process (a socketpair), to show the types; with a real
//! worker the parent calls [`spawn`] and the worker [`Channel::from_parent`].
//!
//! ```
//! use std::os::fd::OwnedFd;
//! use forkyard_ipc::Channel;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum ToWorker {
//!     Job { id: u64 },
//!     /// A file travels with its message.
//!     Log { #[serde(with = "forkyard_ipc::fd")] file: OwnedFd },
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum FromWorker {
//!     Done { id: u64 },
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), forkyard_ipc::Error> {
//! let (mut parent, mut worker) = Channel::<ToWorker, FromWorker>::pair()?;
//! parent.send(&ToWorker::Job { id: 7 }).await?;
//! parent.send(&ToWorker::Log { file: std::fs::File::open("/dev/null").unwrap().into() }).await?;
//!
//! let Some(ToWorker::Job { id }) = worker.recv().await? else { panic!() };
//! worker.send(&FromWorker::Done { id }).await?;
//! let Some(ToWorker::Log { file }) = worker.recv().await? else { panic!() };
//! # drop(file);
//!
//! assert_eq!(parent.recv().await?, Some(FromWorker::Done { id: 7 }));
//! drop(worker);
//! assert_eq!(parent.recv().await?, None); // a clean end of stream
//! # Ok(()) }
//! ```
//!
//! And across processes:
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] enum ToWorker { Job { id: u64 } }
//! # #[derive(Serialize, Deserialize)] enum FromWorker { Done { id: u64 } }
//! # async fn parent() -> Result<(), forkyard_ipc::Error> {
//! // parent
//! let mut cmd = std::process::Command::new("./worker");
//! let (mut child, mut chan) = forkyard_ipc::spawn::<ToWorker, FromWorker>(&mut cmd)?;
//! chan.send(&ToWorker::Job { id: 7 }).await?;
//! let reply: Option<FromWorker> = chan.recv().await?;
//! # Ok(()) }
//! # async fn worker() -> Result<(), forkyard_ipc::Error> {
//! // worker
//! let mut chan = forkyard_ipc::Channel::<FromWorker, ToWorker>::from_parent()?;
//! while let Some(ToWorker::Job { id }) = chan.recv().await? {
//!     chan.send(&FromWorker::Done { id }).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! `cargo xtask demo ipc` runs every pattern against real worker processes.
//!
//! # Caveats
//!
//! - **Linux only** (`SCM_RIGHTS` semantics, `MSG_CMSG_CLOEXEC`, `poll` with
//!   `POLLRDHUP`), and a tokio runtime is required: constructors return
//!   [`Error::NoRuntime`] outside one.
//! - **Dropping.** Dropping a [`Sender`] shuts the socket for writing, so the
//!   peer's `recv` returns `Ok(None)`; what is still buffered is written only if
//!   the socket takes it at once. Call [`Sender::close`] (or `flush`) to be
//!   sure. Dropping a channel does not stop the child: dropping the
//!   [`forkyard_child::Child`] does (SIGKILL to its group).
//! - **Send futures queue at once.** [`Channel::send`] and [`Channel::feed`]
//!   encode the message before the future is polled; dropping the future gives
//!   up the wait, not the message, which goes out whole before the next one.
//! - **Fingerprints are structural, not semantic.** Same field names and types,
//!   same fingerprint: reordering variants changes postcard's encoding *and* the
//!   fingerprint, but changing what a field means does not. Types that cannot
//!   be traced (those using `deserialize_any`, such as untagged or flattened
//!   enums) fall back to their Rust type name, which differs between crates. A foreign-language worker cannot compute fingerprints and echoes
//!   the parent's (see `python/ipc_worker.py`).
//! - **JSON lines cannot carry fds**; sending one is [`Error::FdsNotSupported`].
//! - **`FORKYARD_IPC_FD` stays in the environment** of the worker, so a
//!   grandchild started without forkyard-ipc inherits the variable (not the
//!   fd, which is close-on-exec). [`Channel::from_parent`] checks that the fd is
//!   an open stream socket before using it, and takes it at most once.
//! - **Workers must cooperate with draining.** A [`Cluster`](balance::Cluster)
//!   drains a worker by asking it; one that ignores the request is stopped at
//!   the drain timeout (SIGTERM, grace, SIGKILL). The cluster does not restart
//!   workers that die: that is a supervisor's decision (`forkyard-supervise`),
//!   or run a [`handoff`](balance::Cluster::handoff).
//! - **Shared-listener balancing is the kernel's.** Under a burst of connects,
//!   epoll's wake-up order can give one worker most connections (measured in
//!   the README); use round-robin or least-connections when fairness matters.
//!
//! # How it compares
//!
//! - **Node's `child_process.fork` IPC and `cluster`.** The model this crate
//!   follows: a channel on an inherited fd, announced in an environment
//!   variable (`NODE_CHANNEL_FD` there, `FORKYARD_IPC_FD` here), JSON messages
//!   and handle passing. Differences: messages are typed and checked by a
//!   handshake on both sides (Node sends whatever `JSON.stringify` makes and
//!   finds out on `message`); a binary codec (postcard) beside JSON lines;
//!   `send` waits under backpressure instead of buffering without bound
//!   (Node's `send()` returns `false` and keeps queueing); fds travel as
//!   `OwnedFd` fields of any message rather than one `sendHandle` per message.
//!   `Cluster` keeps Node's round-robin with one connection in flight per
//!   worker, and adds least-connections and generation handoff.
//! - **ipc-channel (Servo).** Typed channels between processes with bincode,
//!   one OS channel per `IpcSender` plus a one-shot server to bootstrap;
//!   fds travel inside `IpcSharedMemory` and `OsIpcChannel`s. forkyard-ipc is
//!   one socket per child, made by the parent, with the handshake catching a
//!   type mismatch before the first message; it is Linux only, where
//!   ipc-channel also covers macOS and Windows.
//! - **A raw `socketpair` with your own framing.** What most Rust programs do.
//!   The round trip costs about 1.2x a hand-written ping-pong over the same
//!   socket (README, "Figures"); in exchange a frame never loses its fds to a
//!   split read, a hostile peer cannot make the parent allocate or hold more
//!   than its limits allow, and a dead peer is one error, not several.
//!
//! # See also
//!
//! - `forkyard-child`: the process under every channel (groups, pidfds,
//!   the owner-death watchdog).
//! - `forkyard-pool`: a task queue over many channels, with retries and
//!   recycling.
//! - `forkyard-supervise`: restarts and health probes for long-lived workers.
#![deny(missing_docs)]

pub mod balance;
mod channel;
mod codec;
mod error;
pub mod fd;
mod frame;
pub use balance::handoff;
mod handshake;
pub mod pubsub;
pub mod rpc;
mod shape;
pub(crate) mod spawn;

pub use channel::{Channel, Config, Receiver, Sender};
pub use codec::Codec;
pub use error::{Earlier, Error, HandshakeError, Result};
pub use handshake::{PROTOCOL_VERSION, TypeInfo};
pub use spawn::{IPC_CODEC_ENV, IPC_FD, IPC_FD_ENV, spawn, spawn_with};

/// What a channel can carry: any serde type that can cross threads.
///
/// Implemented for every such type; you never implement it yourself.
pub trait Message: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Message for T {}
