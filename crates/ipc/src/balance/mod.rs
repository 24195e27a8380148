//! Handle passing and load balancing: N worker processes serving one port.
//!
//! # The problem
//!
//! One process per core serving one TCP port needs every worker to get
//! connections, and to get its fair share. Three ways to do it, each with a
//! failure mode:
//!
//! - **Shared listener** ([`Mode::Shared`]): every worker holds a duplicate of
//!   the listening socket and the kernel hands each `accept` to whichever
//!   worker asks. Cheap, no parent in the path, but the kernel balances badly:
//!   epoll wakes the most recently waiting worker first, and Node measured over
//!   70% of connections landing on 2 of 8 workers.
//! - **Round-robin** ([`Mode::RoundRobin`]) and **least-connections**
//!   ([`Mode::LeastConnections`]): the parent accepts and passes each
//!   connection's fd to a chosen worker over its channel (`SCM_RIGHTS`).
//!   Fair by construction, at the cost of one hop per connection (not per
//!   request: keep-alive connections stay with their worker).
//!
//! And handing fds around invites leaks: a worker that dies holding a
//! connection nobody else knows about leaves a client hanging.
//!
//! # The approach
//!
//! A [`Cluster`] owns the listening socket and the workers (spawned from your
//! command, each with a channel). In the parent-accepts modes it follows Node
//! cluster's scheme: each worker has **at most one connection in flight** and
//! must acknowledge it before it gets another; the parent keeps its own copy of
//! the fd until the acknowledgement. If the worker refuses it (it is draining)
//! or dies first, the connection goes to another worker; with no worker left it
//! is closed. Nothing is leaked and no client waits for a dead process.
//!
//! Workers count what they serve; [`Cluster::stats`] gathers per-worker
//! connections and requests and computes Jain's fairness index
//! ([`jain_index`]): 1.0 when every worker got the same share, `1/n` when one
//! got everything.
//!
//! The worker side is the same in every mode: [`Worker::accept`] yields
//! [`Connection`]s, whether they come from its copy of the listener or from the
//! parent, and returns `None` once the parent asks it to drain. Each connection
//! carries a [`Lease`]; dropping it tells the parent the connection ended
//! (least-connections counts on it) and lets [`Worker::finish`] know when the
//! last one is done.
//!
//! ```no_run
//! use std::process::Command;
//! use forkyard_ipc::balance::{Cluster, ClusterConfig, Mode};
//!
//! # async fn demo() -> Result<(), forkyard_ipc::Error> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let config = ClusterConfig::new(Mode::RoundRobin).workers(2);
//! let cluster = Cluster::start(listener, config, |_slot| Command::new("./my-worker")).await?;
//! // ... serve ...
//! let report = cluster.shutdown().await?;
//! for w in report.current() {
//!     println!("worker {}: {} connections, {} requests", w.index, w.connections, w.requests);
//! }
//! println!("fairness: {:.3}", report.fairness());
//! # Ok(()) }
//! ```
//!
//! And the worker (`my-worker`):
//!
//! ```no_run
//! # async fn worker() -> Result<(), forkyard_ipc::Error> {
//! let mut worker = forkyard_ipc::balance::Worker::from_parent()?;
//! let counters = worker.counters();
//! while let Some(conn) = worker.accept().await {
//!     let (stream, lease) = conn.into_tokio().map_err(|e| forkyard_ipc::Error::Io { op: "registering", source: e })?;
//!     let counters = counters.clone();
//!     tokio::spawn(async move {
//!         // ... serve requests on `stream`, calling counters.request() for each ...
//!         # let _ = (stream, counters);
//!         drop(lease); // the connection is over
//!     });
//! }
//! worker.finish().await // waits for open connections, reports, closes
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Duration;

use forkyard_child::Exit;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::channel::Config;
use crate::error::{Error, Result};

mod engine;
pub mod handoff;
mod worker;

pub(crate) use engine::Engine;
pub use worker::{Connection, Counters, DrainSignal, Lease, Worker};

/// The variable that tells a worker its index within its generation.
pub const WORKER_INDEX_ENV: &str = "FORKYARD_WORKER";
/// The variable that tells a worker its generation (1 for the first).
pub const GENERATION_ENV: &str = "FORKYARD_GENERATION";

/// How connections reach workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Every worker accepts on its own duplicate of the listening socket,
    /// handed to it once its whole generation is ready (so a generation that
    /// fails to start never takes a connection down with it).
    Shared,
    /// The parent accepts and hands connections to workers in turn: each
    /// goes to the free worker that has taken the fewest so far, so a worker
    /// that was busy when its turn came gets the next one it can take.
    RoundRobin,
    /// The parent accepts and hands each connection to the free worker with
    /// the fewest open connections.
    LeastConnections,
}

impl Mode {
    /// The names the examples take on their command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::RoundRobin => "round-robin",
            Mode::LeastConnections => "least-conn",
        }
    }

    fn parent_accepts(self) -> bool {
        !matches!(self, Mode::Shared)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "shared" => Ok(Mode::Shared),
            "round-robin" | "rr" => Ok(Mode::RoundRobin),
            "least-conn" | "least-connections" | "lc" => Ok(Mode::LeastConnections),
            other => Err(format!(
                "unknown mode `{other}` (shared, round-robin, least-conn)"
            )),
        }
    }
}

/// What the parent tells a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Accept on this duplicate of the listening socket.
    Listen {
        #[serde(with = "crate::fd")]
        listener: OwnedFd,
    },
    /// A connection for you; acknowledge it with `Accepted` (or `Rejected`).
    Connection {
        id: u64,
        #[serde(with = "crate::fd")]
        socket: OwnedFd,
    },
    /// Send your counters.
    Report,
    /// Stop accepting, finish your connections, send `Done`, exit.
    Drain,
}

/// What a worker tells the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    Ready,
    Accepted { id: u64 },
    Rejected { id: u64 },
    Closed { id: u64 },
    Report(Counts),
    Done(Counts),
}

/// A worker's own counters, as it reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    connections: u64,
    requests: u64,
}

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) mode: Mode,
    pub(crate) workers: usize,
    pub(crate) ready_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) max_pending: usize,
    pub(crate) channel: Config,
}

impl ClusterConfig {
    /// Defaults for `mode`: 2 workers, 10 s to become ready, 10 s to drain,
    /// 1 s between SIGTERM and SIGKILL, 1024 accepted connections waiting for a
    /// free worker at most.
    pub fn new(mode: Mode) -> Self {
        ClusterConfig {
            mode,
            workers: 2,
            ready_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(1),
            max_pending: 1024,
            channel: Config::default(),
        }
    }

    /// Workers per generation (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// How long a new worker has to say it is ready (default 10 s); past it,
    /// it is killed and the start or handoff fails with [`Error::NotReady`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a draining worker has to finish its connections and exit
    /// (default 10 s) before it is stopped (SIGTERM, then SIGKILL).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Grace between SIGTERM and SIGKILL when a worker must be stopped (default 1 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Accepted connections held while no worker is free (default 1024). Beyond
    /// it the parent stops accepting and the kernel's backlog holds the rest.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// Channel settings for the workers' channels (the codec must be postcard:
    /// connections travel as fds).
    pub fn channel(mut self, config: Config) -> Self {
        self.channel = config;
        self
    }
}

/// Which worker a command is for: handed to your command factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSlot {
    /// Index within the generation, from 0.
    pub index: usize,
    /// Generation, from 1; each handoff starts the next.
    pub generation: u64,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Spawned, not yet ready.
    Starting,
    /// Serving.
    Ready,
    /// Told to drain: finishing its connections.
    Draining,
    /// Exited (or its channel closed).
    Gone,
}

/// One worker's figures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Index within its generation.
    pub index: usize,
    /// Its generation.
    pub generation: u64,
    /// Its pid.
    pub pid: u32,
    /// Where it is in its life.
    pub state: WorkerState,
    /// Connections it took: counted by the parent when it hands them out,
    /// reported by the worker in shared mode.
    pub connections: u64,
    /// Connections open now (parent-accepts modes).
    pub open: u64,
    /// Requests, as last reported by the worker.
    pub requests: u64,
    /// True while a handed connection waits for its acknowledgement.
    pub in_flight: bool,
    /// How it ended, once it has (and was reaped).
    pub exit: Option<Exit>,
}

/// A snapshot of the cluster, from [`Cluster::stats`] or [`Cluster::shutdown`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The mode.
    pub mode: Mode,
    /// The generation serving now.
    pub generation: u64,
    /// Every worker so far, of every generation, in spawn order.
    pub workers: Vec<WorkerStats>,
    /// Accepted connections waiting for a free worker.
    pub pending: usize,
    /// Connections handed again after a worker refused them or died holding them.
    pub redispatched: u64,
    /// Connections closed because no worker was left to take them.
    pub closed_undelivered: u64,
}

impl ClusterStats {
    /// The workers of the serving generation.
    pub fn current(&self) -> impl Iterator<Item = &WorkerStats> {
        self.workers
            .iter()
            .filter(move |w| w.generation == self.generation)
    }

    /// Jain's fairness index of connections over the serving generation.
    pub fn fairness(&self) -> f64 {
        jain_index(self.current().map(|w| w.connections as f64))
    }

    /// Jain's fairness index of requests over the serving generation.
    pub fn request_fairness(&self) -> f64 {
        jain_index(self.current().map(|w| w.requests as f64))
    }
}

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1.0 when all shares are equal,
/// `1/n` when one takes everything. 1.0 for no shares or all zero.
pub fn jain_index(shares: impl IntoIterator<Item = f64>) -> f64 {
    let (mut n, mut sum, mut sum_sq) = (0.0, 0.0, 0.0);
    for x in shares {
        n += 1.0;
        sum += x;
        sum_sq += x * x;
    }
    if n == 0.0 || sum_sq == 0.0 {
        1.0
    } else {
        sum * sum / (n * sum_sq)
    }
}

/// The parent's handle on a cluster of workers. Dropping it kills them all;
/// [`Cluster::shutdown`] drains them first.
pub struct Cluster {
    cmds: mpsc::UnboundedSender<Cmd>,
    local_addr: SocketAddr,
    mode: Mode,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("local_addr", &self.local_addr)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

pub(crate) enum Cmd {
    Stats(oneshot::Sender<ClusterStats>),
    Handoff(oneshot::Sender<Result<u64>>),
    Shutdown(oneshot::Sender<ClusterStats>),
}

/// Builds a worker's `Command`.
pub(crate) type CommandFactory = Box<dyn FnMut(WorkerSlot) -> Command + Send>;

impl Cluster {
    /// Spawns the first generation of workers on `listener` and waits until
    /// every one is ready. A worker that fails to start or is not ready within
    /// the ready timeout fails the start with [`Error::NotReady`], and nothing
    /// is left running.
    ///
    /// `command` builds each worker's command; the cluster adds the channel
    /// (`FORKYARD_IPC_FD`) and the worker's index and generation
    /// (`FORKYARD_WORKER`, `FORKYARD_GENERATION`).
    pub async fn start(
        listener: std::net::TcpListener,
        config: ClusterConfig,
        command: impl FnMut(WorkerSlot) -> Command + Send + 'static,
    ) -> Result<Cluster> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the listener non-blocking", e))?;
        let accept = if config.mode.parent_accepts() {
            let dup = listener
                .try_clone()
                .map_err(|e| Error::io("duplicating the listener", e))?;
            Some(
                tokio::net::TcpListener::from_std(dup)
                    .map_err(|e| Error::io("registering the listener", e))?,
            )
        } else {
            None
        };
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mode = config.mode;
        let mut engine = Engine {
            config,
            command: Box::new(command),
            listener,
            accept,
            accepting: true,
            workers: Vec::new(),
            serving: 0,
            generation: 0,
            pending: VecDeque::new(),
            next_conn: 1,
            rr_cursor: 0,
            events_tx,
            transition: None,
            stats_waiters: Vec::new(),
            shutdown: None,
            redispatched: 0,
            closed_undelivered: 0,
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        engine.begin_generation(ready_tx);
        tokio::spawn(engine.run(cmd_rx, events_rx));
        match ready_rx.await {
            Ok(Ok(_)) => Ok(Cluster {
                cmds,
                local_addr,
                mode,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// The address the cluster serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Asks every live worker for its counters (waiting at most a second for
    /// each) and returns the snapshot.
    pub async fn stats(&self) -> Result<ClusterStats> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Stats(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Stops accepting, closes connections no worker has taken, drains every
    /// worker (each finishes its connections, reports and exits; one that takes
    /// longer than the drain timeout is stopped) and returns the final figures.
    /// Afterwards every method fails with [`Error::Closed`].
    pub async fn shutdown(&self) -> Result<ClusterStats> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Shutdown(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    pub(crate) fn send(&self, cmd: Cmd) -> Result<()> {
        self.cmds.send(cmd).map_err(|_| Error::Closed)
    }
}
