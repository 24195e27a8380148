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

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use forkyard_child::{Child, Exit};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::channel::{Channel, Config};
use crate::error::{Error, Result};

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

/// An accepted connection the parent holds until a worker acknowledges it.
#[derive(Debug)]
struct PendingConn {
    id: u64,
    socket: OwnedFd,
    /// When it was last handed to a worker.
    handed_at: Instant,
}

/// How long round-robin waits for the worker whose turn it is to acknowledge
/// its previous connection before handing the next one to another worker.
const ACK_PATIENCE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct WorkerEntry {
    slot: WorkerSlot,
    pid: u32,
    state: WorkerState,
    to_worker: mpsc::UnboundedSender<ToWorker>,
    /// Dropping it (or sending a grace) stops the process.
    stop: Option<oneshot::Sender<Duration>>,
    in_flight: Option<PendingConn>,
    handed: u64,
    open: u64,
    reported: Counts,
    channel_closed: bool,
    /// Set once the process is gone: how it ended, in words.
    exit: Option<String>,
    status: Option<Exit>,
    /// When a draining worker gets stopped.
    drain_deadline: Option<Instant>,
}

impl WorkerEntry {
    fn alive(&self) -> bool {
        self.exit.is_none() && !self.channel_closed
    }

    /// Gone for good, with every message it sent processed (its final counts
    /// included): the process was reaped and its channel read to the end.
    fn finished(&self) -> bool {
        self.exit.is_some() && self.channel_closed
    }

    fn free(&self) -> bool {
        self.state == WorkerState::Ready && self.in_flight.is_none() && self.alive()
    }

    fn stats(&self, mode: Mode) -> WorkerStats {
        WorkerStats {
            index: self.slot.index,
            generation: self.slot.generation,
            pid: self.pid,
            state: self.state,
            connections: if mode.parent_accepts() {
                self.handed
            } else {
                self.reported.connections
            },
            open: self.open,
            requests: self.reported.requests,
            in_flight: self.in_flight.is_some(),
            exit: self.status.clone(),
        }
    }
}

pub(crate) enum Event {
    Message(usize, FromWorker),
    ChannelClosed(usize, Option<String>),
    Exited(usize, std::result::Result<Exit, String>),
}

/// A generation on its way in: waiting for its workers to be ready, then
/// (in a handoff) for the one before it to drain.
pub(crate) struct Transition {
    pub(crate) generation: u64,
    pub(crate) previous: Option<u64>,
    pub(crate) ready_deadline: Instant,
    pub(crate) switched: bool,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

struct StatsWaiter {
    waiting: HashSet<usize>,
    deadline: Instant,
    reply: oneshot::Sender<ClusterStats>,
}

/// The cluster's actor: owns the listener, the workers and every connection
/// not yet acknowledged. Everything happens in its one task, so no state is
/// shared and no lock is held.
pub(crate) struct Engine {
    pub(crate) config: ClusterConfig,
    command: CommandFactory,
    listener: std::net::TcpListener,
    accept: Option<tokio::net::TcpListener>,
    accepting: bool,
    workers: Vec<WorkerEntry>,
    /// The generation connections go to.
    pub(crate) serving: u64,
    /// The newest generation spawned.
    pub(crate) generation: u64,
    pending: VecDeque<PendingConn>,
    next_conn: u64,
    rr_cursor: usize,
    events_tx: mpsc::UnboundedSender<Event>,
    pub(crate) transition: Option<Transition>,
    stats_waiters: Vec<StatsWaiter>,
    shutdown: Option<oneshot::Sender<ClusterStats>>,
    redispatched: u64,
    closed_undelivered: u64,
}

impl Engine {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut cmds_open = true;
        loop {
            if self.shutdown.is_some() && self.workers.iter().all(WorkerEntry::finished) {
                let stats = self.snapshot();
                if let Some(reply) = self.shutdown.take() {
                    let _ = reply.send(stats);
                }
                return;
            }
            if !cmds_open && self.shutdown.is_none() {
                // Every handle is gone without a shutdown: kill everything now
                // (dropping the stop senders SIGKILLs each group).
                tracing::debug!("cluster: handle dropped, killing workers");
                return;
            }
            let can_accept = self.accepting && self.pending.len() < self.config.max_pending;
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => cmds_open = false,
                },
                Some(event) = events.recv() => self.on_event(event),
                accepted = accept(self.accept.as_ref()), if can_accept => match accepted {
                    Ok(stream) => self.on_accept(stream),
                    Err(e) => {
                        // EMFILE and friends: do not spin on a listener that
                        // keeps failing; the connection stays in the backlog.
                        tracing::warn!(error = %e, "cluster: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = forkyard_child::sleep_until(deadline) => self.on_deadline(),
            }
        }
    }

    fn on_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Stats(reply) => {
                let waiting: HashSet<usize> = (0..self.workers.len())
                    .filter(|&w| {
                        self.workers[w].alive() && self.workers[w].state != WorkerState::Starting
                    })
                    .collect();
                for &w in &waiting {
                    let _ = self.workers[w].to_worker.send(ToWorker::Report);
                }
                let waiter = StatsWaiter {
                    waiting,
                    deadline: Instant::now() + Duration::from_secs(1),
                    reply,
                };
                self.stats_waiters.push(waiter);
                self.settle_stats_waiters();
            }
            Cmd::Handoff(reply) => self.begin_handoff(reply),
            Cmd::Shutdown(reply) => {
                self.accepting = false;
                self.accept = None;
                for conn in self.pending.drain(..) {
                    drop(conn);
                    self.closed_undelivered += 1;
                }
                if let Some(t) = self.transition.take() {
                    let _ = t.reply.send(Err(Error::NotReady {
                        generation: t.generation,
                        reason: "the cluster is shutting down".into(),
                    }));
                }
                for w in 0..self.workers.len() {
                    self.drain_worker(w);
                }
                self.shutdown = Some(reply);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(w, msg) => self.on_message(w, msg),
            Event::ChannelClosed(w, why) => {
                let grace = self.config.stop_grace;
                let entry = &mut self.workers[w];
                entry.channel_closed = true;
                if let Some(why) = why {
                    tracing::debug!(worker = entry.slot.index, generation = entry.slot.generation, error = %why, "cluster: worker channel failed");
                }
                // A worker that hangs up without being asked to drain can no
                // longer be managed: stop it. (A draining one closes its channel
                // on its way out; its drain deadline covers it.)
                if entry.state != WorkerState::Draining
                    && entry.exit.is_none()
                    && let Some(stop) = entry.stop.take()
                {
                    let _ = stop.send(grace);
                }
                self.worker_lost(w);
            }
            Event::Exited(w, exit) => {
                let entry = &mut self.workers[w];
                let text = match exit {
                    Ok(exit) => {
                        let text = exit.to_string();
                        entry.status = Some(exit);
                        text
                    }
                    Err(e) => e,
                };
                tracing::debug!(worker = entry.slot.index, generation = entry.slot.generation, pid = entry.pid, exit = %text, "cluster: worker exited");
                entry.exit = Some(text);
                entry.state = WorkerState::Gone;
                entry.stop = None;
                self.worker_lost(w);
            }
        }
        self.dispatch();
    }

    fn on_message(&mut self, w: usize, msg: FromWorker) {
        let entry = &mut self.workers[w];
        match msg {
            FromWorker::Ready => {
                if entry.state == WorkerState::Starting {
                    entry.state = WorkerState::Ready;
                    tracing::debug!(
                        worker = entry.slot.index,
                        generation = entry.slot.generation,
                        pid = entry.pid,
                        "cluster: worker ready"
                    );
                    self.check_transition();
                }
            }
            FromWorker::Accepted { id } => {
                if entry.in_flight.as_ref().is_some_and(|c| c.id == id) {
                    // The worker has its own copy now: close ours.
                    entry.in_flight = None;
                    entry.handed += 1;
                    entry.open += 1;
                }
            }
            FromWorker::Rejected { id } => {
                if entry.in_flight.as_ref().is_some_and(|c| c.id == id)
                    && let Some(conn) = entry.in_flight.take()
                {
                    self.redispatched += 1;
                    self.pending.push_front(conn);
                }
            }
            FromWorker::Closed { .. } => entry.open = entry.open.saturating_sub(1),
            FromWorker::Report(counts) => {
                entry.reported = counts;
                for waiter in &mut self.stats_waiters {
                    waiter.waiting.remove(&w);
                }
                self.settle_stats_waiters();
            }
            FromWorker::Done(counts) => {
                entry.reported = counts;
                for waiter in &mut self.stats_waiters {
                    waiter.waiting.remove(&w);
                }
                self.settle_stats_waiters();
            }
        }
    }

    /// A worker's channel closed or its process exited: take back what it held.
    fn worker_lost(&mut self, w: usize) {
        let entry = &mut self.workers[w];
        if let Some(conn) = entry.in_flight.take() {
            tracing::debug!(
                worker = entry.slot.index,
                generation = entry.slot.generation,
                conn = conn.id,
                "cluster: worker lost with a connection in flight; handing it on"
            );
            self.redispatched += 1;
            self.pending.push_front(conn);
        }
        for waiter in &mut self.stats_waiters {
            waiter.waiting.remove(&w);
        }
        self.settle_stats_waiters();
        self.check_transition();
    }

    fn on_accept(&mut self, stream: std::net::TcpStream) {
        let id = self.next_conn;
        self.next_conn += 1;
        self.pending.push_back(PendingConn {
            id,
            socket: OwnedFd::from(stream),
            handed_at: Instant::now(),
        });
        self.dispatch();
    }

    /// Hands pending connections to free workers of the serving generation.
    fn dispatch(&mut self) {
        if !self.config.mode.parent_accepts() {
            return;
        }
        while !self.pending.is_empty() {
            let Some(w) = self.pick() else { break };
            let conn = self.pending.pop_front().expect("checked non-empty");
            let socket = match conn.socket.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot duplicate a connection; closing it");
                    self.closed_undelivered += 1;
                    continue;
                }
            };
            let entry = &mut self.workers[w];
            if entry
                .to_worker
                .send(ToWorker::Connection {
                    id: conn.id,
                    socket,
                })
                .is_err()
            {
                // Its writer is gone; the loss event will follow. Try another.
                entry.channel_closed = true;
                self.pending.push_front(conn);
                continue;
            }
            entry.in_flight = Some(PendingConn {
                handed_at: Instant::now(),
                ..conn
            });
        }
        // Nobody can ever take them: close rather than keep clients waiting.
        let hope = self.transition.is_some()
            || self.workers.iter().any(|e| {
                e.slot.generation == self.serving && e.alive() && e.state != WorkerState::Draining
            });
        if !hope && !self.pending.is_empty() {
            tracing::warn!(
                n = self.pending.len(),
                "cluster: no worker left; closing pending connections"
            );
            self.closed_undelivered += self.pending.len() as u64;
            self.pending.clear();
        }
    }

    fn pick(&mut self) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&w| self.workers[w].slot.generation == self.serving && self.workers[w].free())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match self.config.mode {
            Mode::LeastConnections => {
                let least = candidates
                    .iter()
                    .map(|&w| self.workers[w].open)
                    .min()
                    .expect("non-empty");
                // Among the least loaded, take turns.
                let tied: Vec<usize> = candidates
                    .into_iter()
                    .filter(|&w| self.workers[w].open == least)
                    .collect();
                tied.iter()
                    .copied()
                    .find(|&w| w >= self.rr_cursor)
                    .unwrap_or(tied[0])
            }
            _ => {
                // Round-robin by turns taken, not by who is free first. With
                // "next free worker", whichever acknowledges faster takes more
                // of a burst (wrk's 32 simultaneous connections split 10/24).
                // So a connection waits for the worker whose turn it is (the
                // one that has taken the fewest, counting the one in flight),
                // unless that worker has sat on its in-flight connection past
                // ACK_PATIENCE: a stuck worker is routed around, not waited for.
                let now = Instant::now();
                let turns = |w: &WorkerEntry| w.handed + u64::from(w.in_flight.is_some());
                let floor = self
                    .workers
                    .iter()
                    .filter(|w| {
                        w.slot.generation == self.serving
                            && w.state == WorkerState::Ready
                            && w.alive()
                    })
                    .filter(|w| {
                        w.in_flight
                            .as_ref()
                            .is_none_or(|c| now < c.handed_at + ACK_PATIENCE)
                    })
                    .map(turns)
                    .min()?;
                let due: Vec<usize> = candidates
                    .into_iter()
                    .filter(|&w| turns(&self.workers[w]) <= floor)
                    .collect();
                due.iter()
                    .copied()
                    .find(|&w| w >= self.rr_cursor)
                    .or(due.first().copied())?
            }
        };
        self.rr_cursor = chosen + 1;
        Some(chosen)
    }

    /// Spawns one worker of `slot`'s generation.
    fn spawn_worker(&mut self, slot: WorkerSlot) -> Result<()> {
        let mut cmd = (self.command)(slot);
        cmd.env(WORKER_INDEX_ENV, slot.index.to_string())
            .env(GENERATION_ENV, slot.generation.to_string());
        let builder = Child::builder(&mut cmd);
        let (child, chan): (Child, Channel<ToWorker, FromWorker>) =
            crate::spawn::spawn_with(builder, self.config.channel.clone())?;
        let pid = child.id();
        let w = self.workers.len();
        let (to_worker, mut outbox) = mpsc::unbounded_channel::<ToWorker>();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (mut tx, mut rx) = chan.split();
        let events = self.events_tx.clone();
        // Writer: the parent's messages to this worker, in order.
        tokio::spawn(async move {
            while let Some(msg) = outbox.recv().await {
                if tx.send(&msg).await.is_err() {
                    // The reader reports the loss; what is queued here (fds
                    // included) is dropped, and the parent still holds its
                    // own copy of any connection in flight.
                    break;
                }
            }
        });
        // Reader: this worker's messages, as events.
        tokio::spawn(async move {
            let why = loop {
                match rx.recv().await {
                    Ok(Some(msg)) => {
                        if events.send(Event::Message(w, msg)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "cluster: skipped an undecodable message from a worker");
                    }
                    Err(e) => break Some(e.to_string()),
                }
            };
            let _ = events.send(Event::ChannelClosed(w, why));
        });
        // Keeper: owns the process; reports its exit, stops it on request,
        // kills it if the engine goes away.
        let events = self.events_tx.clone();
        tokio::spawn(keep(w, child, stop_rx, events));
        // In shared mode the worker gets its dup of the listener when its
        // whole generation is ready (`switch_to`), not now: a worker of a
        // generation that then fails to start would otherwise accept
        // connections and take them down with it.
        tracing::debug!(
            worker = slot.index,
            generation = slot.generation,
            pid,
            "cluster: worker spawned"
        );
        self.workers.push(WorkerEntry {
            slot,
            pid,
            state: WorkerState::Starting,
            to_worker,
            stop: Some(stop_tx),
            in_flight: None,
            handed: 0,
            open: 0,
            reported: Counts::default(),
            channel_closed: false,
            exit: None,
            status: None,
            drain_deadline: None,
        });
        Ok(())
    }

    /// Spawns the next generation; `reply` learns whether it became ready.
    pub(crate) fn begin_generation(&mut self, reply: oneshot::Sender<Result<u64>>) {
        self.generation += 1;
        let generation = self.generation;
        let previous = (self.serving != 0).then_some(self.serving);
        tracing::info!(generation, "cluster: starting a generation");
        for index in 0..self.config.workers {
            if let Err(e) = self.spawn_worker(WorkerSlot { index, generation }) {
                self.abort_generation(generation);
                let _ = reply.send(Err(Error::NotReady {
                    generation,
                    reason: format!("worker {index} could not be spawned: {e}"),
                }));
                return;
            }
        }
        self.transition = Some(Transition {
            generation,
            previous,
            ready_deadline: Instant::now() + self.config.ready_timeout,
            switched: false,
            reply,
        });
        self.check_transition();
    }

    /// Moves a transition on: switch when the new generation is all ready,
    /// finish when the previous one is all gone, abort if the new one fails.
    fn check_transition(&mut self) {
        let Some(t) = &self.transition else { return };
        let generation = t.generation;
        if !t.switched {
            let lost = self
                .workers
                .iter()
                // A worker whose channel closed is stopped, and counts as lost
                // once it has exited, so the reason can say how it ended.
                .find(|w| w.slot.generation == generation && w.exit.is_some())
                .map(|lost| {
                    format!(
                        "worker {} (pid {}) {} before it was ready",
                        lost.slot.index,
                        lost.pid,
                        lost.exit
                            .as_deref()
                            .map_or(String::new(), |e| format!("exited ({e})"))
                    )
                });
            if let Some(reason) = lost {
                self.fail_transition(reason);
                return;
            }
            if self
                .workers
                .iter()
                .filter(|w| w.slot.generation == generation)
                .all(|w| w.state == WorkerState::Ready)
            {
                self.switch_to(generation);
            }
        }
        let Some(t) = &self.transition else { return };
        if t.switched {
            let old_gone = t.previous.is_none_or(|p| {
                self.workers
                    .iter()
                    .filter(|w| w.slot.generation == p)
                    .all(WorkerEntry::finished)
            });
            if old_gone {
                let t = self.transition.take().expect("checked above");
                tracing::info!(
                    generation = t.generation,
                    "cluster: generation serving alone"
                );
                let _ = t.reply.send(Ok(t.generation));
            }
        }
    }

    fn switch_to(&mut self, generation: u64) {
        let previous = self.serving;
        self.serving = generation;
        if let Some(t) = &mut self.transition {
            t.switched = true;
        }
        tracing::info!(generation, "cluster: generation ready");
        if !self.config.mode.parent_accepts() {
            // Shared listener: the new generation starts accepting before the
            // old one stops, so there is no gap.
            for w in 0..self.workers.len() {
                if self.workers[w].slot.generation == generation && self.workers[w].alive() {
                    self.hand_listener(w);
                }
            }
        }
        if previous != 0 {
            for w in 0..self.workers.len() {
                if self.workers[w].slot.generation == previous {
                    self.drain_worker(w);
                }
            }
        }
        self.dispatch();
    }

    /// Gives worker `w` its own dup of the listening socket (shared mode).
    fn hand_listener(&mut self, w: usize) {
        match self.listener.try_clone() {
            Ok(dup) => {
                let _ = self.workers[w].to_worker.send(ToWorker::Listen {
                    listener: OwnedFd::from(dup),
                });
            }
            // Out of fds: this worker serves nothing; its peers still do,
            // and the next handoff tries again.
            Err(e) => tracing::warn!(
                worker = self.workers[w].slot.index,
                error = %e,
                "cluster: cannot duplicate the listener"
            ),
        }
    }

    fn fail_transition(&mut self, reason: String) {
        let Some(t) = self.transition.take() else {
            return;
        };
        tracing::warn!(generation = t.generation, %reason, "cluster: generation failed to start; the previous one keeps serving");
        self.abort_generation(t.generation);
        let _ = t.reply.send(Err(Error::NotReady {
            generation: t.generation,
            reason,
        }));
    }

    /// Kills every worker of `generation` (one that never became ready).
    fn abort_generation(&mut self, generation: u64) {
        for entry in self
            .workers
            .iter_mut()
            .filter(|w| w.slot.generation == generation)
        {
            if let Some(conn) = entry.in_flight.take() {
                self.pending.push_front(conn);
            }
            // Dropping the stop sender makes the keeper SIGKILL the group.
            entry.stop = None;
            if entry.exit.is_none() {
                entry.state = WorkerState::Draining;
            }
        }
    }

    fn drain_worker(&mut self, w: usize) {
        let entry = &mut self.workers[w];
        if entry.exit.is_some() || entry.state == WorkerState::Draining {
            return;
        }
        entry.state = WorkerState::Draining;
        entry.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        if entry.to_worker.send(ToWorker::Drain).is_err() {
            // No channel: nothing to drain through, stop it.
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(self.config.stop_grace);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let transition = self
            .transition
            .as_ref()
            .filter(|t| !t.switched)
            .map(|t| t.ready_deadline);
        let drains = self
            .workers
            .iter()
            .filter(|w| w.exit.is_none() && w.stop.is_some())
            .filter_map(|w| w.drain_deadline);
        let stats = self.stats_waiters.iter().map(|s| s.deadline);
        // Round-robin waiting on a slow acknowledgement: look again when
        // patience runs out.
        let patience = self
            .workers
            .iter()
            .filter(|_| !self.pending.is_empty())
            .filter_map(|w| w.in_flight.as_ref())
            .map(|c| c.handed_at + ACK_PATIENCE)
            .filter(|&t| t > Instant::now());
        transition
            .into_iter()
            .chain(drains)
            .chain(stats)
            .chain(patience)
            .min()
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        if self
            .transition
            .as_ref()
            .is_some_and(|t| !t.switched && t.ready_deadline <= now)
        {
            let generation = self.transition.as_ref().map_or(0, |t| t.generation);
            let unready: Vec<String> = self
                .workers
                .iter()
                .filter(|w| w.slot.generation == generation && w.state != WorkerState::Ready)
                .map(|w| w.slot.index.to_string())
                .collect();
            let reason = format!(
                "worker(s) {} not ready within {:?}",
                unready.join(", "),
                self.config.ready_timeout
            );
            self.fail_transition(reason);
        }
        let grace = self.config.stop_grace;
        for entry in &mut self.workers {
            if entry.exit.is_none() && entry.drain_deadline.is_some_and(|d| d <= now) {
                tracing::warn!(
                    worker = entry.slot.index,
                    generation = entry.slot.generation,
                    pid = entry.pid,
                    "cluster: drain timed out; stopping the worker"
                );
                entry.drain_deadline = None;
                if let Some(stop) = entry.stop.take() {
                    let _ = stop.send(grace);
                }
            }
        }
        for waiter in &mut self.stats_waiters {
            if waiter.deadline <= now {
                waiter.waiting.clear();
            }
        }
        self.settle_stats_waiters();
        self.dispatch();
    }

    fn settle_stats_waiters(&mut self) {
        if self.stats_waiters.iter().all(|s| !s.waiting.is_empty()) {
            return;
        }
        let snapshot = self.snapshot();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .stats_waiters
            .drain(..)
            .partition(|s| s.waiting.is_empty());
        self.stats_waiters = waiting;
        for waiter in done {
            let _ = waiter.reply.send(snapshot.clone());
        }
    }

    fn snapshot(&self) -> ClusterStats {
        ClusterStats {
            mode: self.config.mode,
            generation: self.serving,
            workers: self
                .workers
                .iter()
                .map(|w| w.stats(self.config.mode))
                .collect(),
            pending: self.pending.len(),
            redispatched: self.redispatched,
            closed_undelivered: self.closed_undelivered,
        }
    }
}

async fn accept(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<std::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await?.0.into_std(),
        None => std::future::pending().await,
    }
}

/// Owns one worker process: reports its exit; on a grace, stops it (SIGTERM,
/// grace, SIGKILL); if the engine drops the stop sender, kills it at once.
async fn keep(
    w: usize,
    mut child: Child,
    stop: oneshot::Receiver<Duration>,
    events: mpsc::UnboundedSender<Event>,
) {
    let exit = tokio::select! {
        exit = child.wait() => exit,
        grace = stop => match grace {
            Ok(grace) => child.stop(grace).await,
            Err(_) => child.kill().await,
        },
    };
    let _ = events.send(Event::Exited(w, exit.map_err(|e| e.to_string())));
}

// ---------------------------------------------------------------------------
// The worker's side.

/// A worker's end of a [`Cluster`]: yields connections, counts them, drains.
pub struct Worker {
    slot: WorkerSlot,
    shared: Arc<WorkerShared>,
    work: mpsc::Receiver<Work>,
    listener: Option<tokio::net::TcpListener>,
    out: mpsc::UnboundedSender<FromWorker>,
    drain: watch::Receiver<bool>,
    ready_sent: bool,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("slot", &self.slot)
            .field("open", &self.shared.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

enum Work {
    Listen(OwnedFd),
    Connection { id: u64, socket: OwnedFd },
}

#[derive(Debug, Default)]
struct WorkerShared {
    connections: AtomicU64,
    requests: AtomicU64,
    open: AtomicU64,
    all_closed: Notify,
}

impl WorkerShared {
    fn counts(&self) -> Counts {
        Counts {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

impl Worker {
    /// Connects to the parent's [`Cluster`] over the channel it made
    /// (`FORKYARD_IPC_FD`). Must be called inside a tokio runtime.
    pub fn from_parent() -> Result<Worker> {
        let chan = Channel::<FromWorker, ToWorker>::from_parent()?;
        let slot = WorkerSlot {
            index: env_number(WORKER_INDEX_ENV).unwrap_or(0) as usize,
            generation: env_number(GENERATION_ENV).unwrap_or(1),
        };
        Ok(Self::over(chan, slot))
    }

    fn over(chan: Channel<FromWorker, ToWorker>, slot: WorkerSlot) -> Worker {
        let shared = Arc::new(WorkerShared::default());
        let (mut tx, mut rx) = chan.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<FromWorker>();
        let (work_tx, work) = mpsc::channel(4);
        let (drain_tx, drain) = watch::channel(false);
        let writer = tokio::spawn(async move {
            // `Done` is the last word: written, then the channel is closed.
            let mut done = false;
            while let Some(msg) = out_rx.recv().await {
                done |= matches!(msg, FromWorker::Done(_));
                if tx.feed(&msg).await.is_err() {
                    return;
                }
                while !done && let Ok(msg) = out_rx.try_recv() {
                    done |= matches!(msg, FromWorker::Done(_));
                    if tx.feed(&msg).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() || done {
                    break;
                }
            }
            let _ = tx.close().await;
        });
        let reports = out.clone();
        let counts = shared.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Some(ToWorker::Listen { listener })) => {
                        if work_tx.send(Work::Listen(listener)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(ToWorker::Connection { id, socket })) => {
                        if let Err(mpsc::error::SendError(Work::Connection { id, .. })) =
                            work_tx.send(Work::Connection { id, socket }).await
                        {
                            let _ = reports.send(FromWorker::Rejected { id });
                            break;
                        }
                    }
                    Ok(Some(ToWorker::Report)) => {
                        let _ = reports.send(FromWorker::Report(counts.counts()));
                    }
                    Ok(Some(ToWorker::Drain)) => {
                        drain_tx.send_replace(true);
                    }
                    Ok(None) => break,
                    Err(e) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "worker: skipped an undecodable message");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "worker: channel to the parent failed");
                        break;
                    }
                }
            }
            // The parent is gone (or broke the channel): drain.
            drain_tx.send_replace(true);
        });
        Worker {
            slot,
            shared,
            work,
            listener: None,
            out,
            drain,
            ready_sent: false,
            writer: Some(writer),
        }
    }

    /// This worker's index and generation (from `FORKYARD_WORKER` and
    /// `FORKYARD_GENERATION`).
    pub fn slot(&self) -> WorkerSlot {
        self.slot
    }

    /// Tells the parent this worker is ready. [`Worker::accept`] does it on
    /// its first call; call it yourself to say so earlier.
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = self.out.send(FromWorker::Ready);
        }
    }

    /// The next connection, from the shared listener or from the parent;
    /// `None` once the parent asked this worker to drain (or went away).
    /// Cancel-safe.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.ready();
        loop {
            if *self.drain.borrow() {
                self.listener = None;
                return None;
            }
            tokio::select! {
                biased;
                _ = self.drain.changed() => {}
                work = self.work.recv() => match work? {
                    Work::Listen(fd) => {
                        let std = std::net::TcpListener::from(fd);
                        match std.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(std)) {
                            Ok(l) => self.listener = Some(l),
                            Err(e) => tracing::warn!(error = %e, "worker: unusable listener from the parent"),
                        }
                    }
                    Work::Connection { id, socket } => {
                        if *self.drain.borrow() {
                            let _ = self.out.send(FromWorker::Rejected { id });
                            continue;
                        }
                        let _ = self.out.send(FromWorker::Accepted { id });
                        return Some(self.lease(std::net::TcpStream::from(socket), Some(id)));
                    }
                },
                accepted = accept(self.listener.as_ref()), if self.listener.is_some() => match accepted {
                    Ok(stream) => return Some(self.lease(stream, None)),
                    Err(e) => {
                        tracing::warn!(error = %e, "worker: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    fn lease(&self, stream: std::net::TcpStream, id: Option<u64>) -> Connection {
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        Connection {
            stream,
            lease: Lease {
                id,
                shared: self.shared.clone(),
                out: self.out.clone(),
            },
        }
    }

    /// Counters the worker's connection tasks bump ([`Counters::request`]).
    pub fn counters(&self) -> Counters {
        Counters(self.shared.clone())
    }

    /// Resolves once the parent asks this worker to drain (or goes away);
    /// connection tasks use it to finish up (say, answer with
    /// `Connection: close`).
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal(self.drain.clone())
    }

    /// Stops accepting, hands back connections not yet taken, waits until
    /// every [`Lease`] is dropped, sends the final counters and closes the
    /// channel. Call it after [`Worker::accept`] returned `None`, then exit.
    pub async fn finish(mut self) -> Result<()> {
        self.listener = None;
        self.work.close();
        while let Ok(work) = self.work.try_recv() {
            if let Work::Connection { id, .. } = work {
                let _ = self.out.send(FromWorker::Rejected { id });
            }
        }
        loop {
            let notified = self.shared.all_closed.notified();
            if self.shared.open.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        let _ = self.out.send(FromWorker::Done(self.shared.counts()));
        let writer = self.writer.take();
        drop(self);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(())
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// A connection handed to a worker, with the [`Lease`] that reports its end.
#[derive(Debug)]
pub struct Connection {
    stream: std::net::TcpStream,
    lease: Lease,
}

impl Connection {
    /// The socket (in non-blocking mode: call `set_nonblocking(false)` for
    /// blocking I/O) and its lease.
    pub fn into_parts(self) -> (std::net::TcpStream, Lease) {
        (self.stream, self.lease)
    }

    /// The socket registered with tokio, and its lease.
    pub fn into_tokio(self) -> std::io::Result<(tokio::net::TcpStream, Lease)> {
        self.stream.set_nonblocking(true)?;
        Ok((tokio::net::TcpStream::from_std(self.stream)?, self.lease))
    }
}

/// Proof that a connection is open: drop it when the connection ends.
pub struct Lease {
    id: Option<u64>,
    shared: Arc<WorkerShared>,
    out: mpsc::UnboundedSender<FromWorker>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.out.send(FromWorker::Closed { id });
        }
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// A worker's counters, for its connection tasks.
#[derive(Debug, Clone)]
pub struct Counters(Arc<WorkerShared>);

impl Counters {
    /// Counts one request served.
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Connections taken so far.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }
}

/// Tells connection tasks the worker is draining.
#[derive(Debug, Clone)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// True once draining.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}
