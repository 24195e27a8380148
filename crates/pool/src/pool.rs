//! The async shell around the core: the `Pool` handle, its manager task, and
//! one driver task per worker process.
//!
//! ```text
//!   callers ──Submit/Cancel/Stats/Shutdown──▶ manager ◀──Ready/Done/Exited/Sample── drivers
//!                                             │  core.step → actions                 ▲
//!                                             └──Dispatch/Drain/Kill/Stop/Sample─────┘
//! ```
//!
//! The manager is the only owner of the [`Core`]; it turns messages into core
//! events, and the core's actions into messages. A driver owns one worker's
//! [`Child`] and the sending half of its channel; a reader task per worker owns
//! the receiving half. Nothing else touches a worker.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use forkyard_child::{Child, Exit, Input, Output, Reason};
use forkyard_ipc::{Channel, Codec, Message};
use forkyard_supervise::{Backoff, BreakerConfig};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::core::{Action, Core, Failure, KillReason, Refused, Rules, TaskId, WorkerId};
use crate::error::{BuildError, PoolError};
use crate::protocol::{FromWorker, ToWorker};
use crate::stats::{Stats, WorkerStats};
use crate::{ShutdownMode, worker};

type CommandFactory = Arc<dyn Fn() -> Command + Send + Sync>;

/// How many stderr lines of a worker are kept for crash reports.
const STDERR_TAIL: usize = 20;

/// Settings for a [`Pool`]; made by [`Pool::builder`].
#[must_use = "a builder does nothing until .build() is awaited"]
pub struct Builder<Req, Resp> {
    command: Option<CommandFactory>,
    rules: Rules,
    codec: Codec,
    stop_grace: Duration,
    sample_every: Duration,
    seed: u64,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> fmt::Debug for Builder<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("rules", &self.rules)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<Req: Message + Clone + Sync, Resp: Message> Builder<Req, Resp> {
    fn new() -> Self {
        Builder {
            command: None,
            rules: Rules {
                workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
                max_in_flight: 1,
                queue_capacity: 1024,
                task_timeout: None,
                retries: 0,
                recycle_after_tasks: None,
                recycle_above_rss: None,
                recycle_after_age: None,
                start_timeout: Duration::from_secs(10),
                backoff: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(10)),
                breaker: BreakerConfig::new(5, Duration::from_secs(30))
                    .open_for(Duration::from_secs(5))
                    .trials(1),
            },
            codec: Codec::Postcard,
            stop_grace: Duration::from_secs(5),
            sample_every: Duration::from_millis(500),
            seed: 0x5eed,
            _types: PhantomData,
        }
    }

    /// How to start a worker: called once per worker process (and again for
    /// every replacement).
    pub fn command(mut self, make: impl Fn() -> Command + Send + Sync + 'static) -> Self {
        self.command = Some(Arc::new(make));
        self
    }

    /// Workers are this very binary, started again with `args` and with
    /// [`worker::WORKER_ENV`] set; its `main` must call
    /// [`worker::serve`] when [`worker::is_worker`] says so.
    pub fn self_exec<I, S>(mut self, args: I) -> Result<Self, BuildError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let exe = std::env::current_exe().map_err(BuildError::CurrentExe)?;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        self.command = Some(Arc::new(move || {
            let mut cmd = Command::new(&exe);
            cmd.args(&args).env(worker::WORKER_ENV, "1");
            cmd
        }));
        Ok(self)
    }

    /// Number of worker processes (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.rules.workers = n;
        self
    }

    /// Tasks sent to one worker before it answers (pipelining; default 1).
    pub fn max_in_flight_per_worker(mut self, n: usize) -> Self {
        self.rules.max_in_flight = n;
        self
    }

    /// Tasks that may wait in the queue (default 1024); `call` waits for room,
    /// `try_call` fails with [`PoolError::QueueFull`].
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.rules.queue_capacity = n;
        self
    }

    /// A task running longer than this fails with [`PoolError::TimedOut`] and
    /// its worker's process group is killed (default: no limit).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.rules.task_timeout = Some(timeout);
        self
    }

    /// How many times a task whose worker died is re-run on another worker
    /// (default 0). Timeouts, handler errors and protocol errors are not retried.
    pub fn retries(mut self, n: u32) -> Self {
        self.rules.retries = n;
        self
    }

    /// Retire a worker after it has completed `n` tasks.
    pub fn recycle_after_tasks(mut self, n: u64) -> Self {
        self.rules.recycle_after_tasks = Some(n);
        self
    }

    /// Retire a worker whose resident memory exceeds `bytes` (sampled every
    /// [`sample_every`](Self::sample_every)).
    pub fn recycle_above_rss(mut self, bytes: u64) -> Self {
        self.rules.recycle_above_rss = Some(bytes);
        self
    }

    /// Retire a worker once it has been up this long.
    pub fn recycle_after_age(mut self, age: Duration) -> Self {
        self.rules.recycle_after_age = Some(age);
        self
    }

    /// How long a new worker has to say it is ready (default 10 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.rules.start_timeout = timeout;
        self
    }

    /// Delay before replacing a crashed worker (default: exponential, 50 ms to 10 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.rules.backoff = backoff;
        self
    }

    /// When to stop trying to start workers that cannot start (default: 5
    /// start failures within 30 s open the breaker for 5 s, then 1 trial).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.rules.breaker = breaker;
        self
    }

    /// The wire codec (default postcard; [`Codec::JsonLines`] for workers in other languages).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// At shutdown, how long a worker gets between SIGTERM and SIGKILL (default 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How often workers' memory and CPU are sampled (default 500 ms).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every;
        self
    }

    /// Seed for the backoff jitter (default fixed, so runs are reproducible).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts the workers and waits until they are all ready.
    ///
    /// Fails with [`BuildError::NoWorkers`] if workers cannot start until the
    /// circuit breaker opens.
    pub async fn build(self) -> Result<Pool<Req, Resp>, BuildError> {
        let command = self.command.ok_or(BuildError::NoCommand)?;
        let rules = self.rules;
        if rules.workers == 0 {
            return Err(BuildError::Invalid("workers must be at least 1"));
        }
        if rules.max_in_flight == 0 {
            return Err(BuildError::Invalid(
                "max_in_flight_per_worker must be at least 1",
            ));
        }
        if rules.queue_capacity == 0 {
            return Err(BuildError::Invalid("queue_capacity must be at least 1"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (started_tx, started_rx) = oneshot::channel();
        let permits = Arc::new(Semaphore::new(rules.queue_capacity));
        let timeout = rules.task_timeout;
        let manager = Manager {
            core: Core::new(rules.clone(), self.seed, Instant::now().into_std()),
            rules,
            command,
            codec: self.codec,
            stop_grace: self.stop_grace,
            callers: HashMap::new(),
            drivers: HashMap::new(),
            last_exit: HashMap::new(),
            ev_tx,
            started: Some(started_tx),
            shutdown_waiters: Vec::new(),
            report: None,
        };
        tokio::spawn(manager.run(cmd_rx, ev_rx, self.sample_every));
        match started_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(BuildError::NoWorkers(reason)),
            Err(_) => {
                return Err(BuildError::NoWorkers(
                    "the pool's manager task ended".into(),
                ));
            }
        }
        Ok(Pool {
            inner: Arc::new(Inner {
                cmd_tx,
                permits,
                next_task: AtomicU64::new(1),
                timeout,
                _types: PhantomData,
            }),
        })
    }
}

/// A pool of worker processes fed from a bounded queue.
///
/// Cloning gives another handle on the same pool. See the [crate docs](crate).
///
/// # Caveats
///
/// Dropping the last handle kills every worker (SIGKILL to their process
/// groups) and fails nothing silently: tasks still waiting are answered with
/// [`PoolError::ShuttingDown`]. Call [`shutdown`](Pool::shutdown) for a graceful end.
pub struct Pool<Req, Resp> {
    inner: Arc<Inner<Req, Resp>>,
}

impl<Req, Resp> Clone for Pool<Req, Resp> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for Pool<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

struct Inner<Req, Resp> {
    cmd_tx: mpsc::UnboundedSender<Cmd<Req, Resp>>,
    permits: Arc<Semaphore>,
    next_task: AtomicU64,
    timeout: Option<Duration>,
    _types: PhantomData<fn(Req) -> Resp>,
}

type Reply<Resp> = oneshot::Sender<Result<Resp, PoolError>>;

enum Cmd<Req, Resp> {
    Submit {
        id: TaskId,
        req: Req,
        reply: Reply<Resp>,
        permit: OwnedSemaphorePermit,
    },
    Cancel(TaskId),
    Stats(oneshot::Sender<Stats>),
    Shutdown(ShutdownMode, oneshot::Sender<ShutdownReport>),
}

impl<Req: Message + Clone + Sync, Resp: Message> Pool<Req, Resp> {
    /// Settings for a new pool.
    pub fn builder() -> Builder<Req, Resp> {
        Builder::new()
    }

    /// Runs `req` on a worker and returns its result, waiting for room in the
    /// queue first. Dropping the future cancels the task: if it has not been
    /// dispatched it never runs; if it is running, its result is discarded.
    pub async fn call(&self, req: Req) -> Result<Resp, PoolError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::ShuttingDown)?;
        self.submit(req, permit).await
    }

    /// Like [`call`](Pool::call), but fails at once with
    /// [`PoolError::QueueFull`] instead of waiting for room.
    pub async fn try_call(&self, req: Req) -> Result<Resp, PoolError> {
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|e| match e {
                tokio::sync::TryAcquireError::NoPermits => PoolError::QueueFull,
                tokio::sync::TryAcquireError::Closed => PoolError::ShuttingDown,
            })?;
        self.submit(req, permit).await
    }

    async fn submit(&self, req: Req, permit: OwnedSemaphorePermit) -> Result<Resp, PoolError> {
        let id = self.inner.next_task.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd_tx
            .send(Cmd::Submit {
                id,
                req,
                reply,
                permit,
            })
            .map_err(|_| PoolError::ShuttingDown)?;
        // If this future is dropped before the outcome arrives, tell the manager.
        let guard = CancelGuard {
            id,
            tx: &self.inner.cmd_tx,
            armed: true,
        };
        let outcome = rx.await.unwrap_or(Err(PoolError::ShuttingDown));
        guard.disarm();
        outcome
    }

    /// A snapshot of the statistics.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd_tx.send(Cmd::Stats(tx)).is_err() {
            return Stats::empty();
        }
        rx.await.unwrap_or_else(|_| Stats::empty())
    }

    /// The task timeout this pool was built with.
    pub fn task_timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Shuts the pool down (see [`ShutdownMode`]) and reports what happened to
    /// every task. Further calls fail with [`PoolError::ShuttingDown`]. Calling
    /// it again (or from another handle) waits for the same shutdown.
    pub async fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let (tx, rx) = oneshot::channel();
        // Refuse new callers at once, before the manager hears of it.
        self.inner.permits.close();
        if self.inner.cmd_tx.send(Cmd::Shutdown(mode, tx)).is_err() {
            return ShutdownReport::default();
        }
        rx.await.unwrap_or_default()
    }
}

struct CancelGuard<'a, Req, Resp> {
    id: TaskId,
    tx: &'a mpsc::UnboundedSender<Cmd<Req, Resp>>,
    armed: bool,
}

impl<Req, Resp> CancelGuard<'_, Req, Resp> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl<Req, Resp> Drop for CancelGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Cmd::Cancel(self.id));
        }
    }
}

/// What [`Pool::shutdown`] reports.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every task that was queued or running when the shutdown began, or was
    /// submitted after, with its outcome: `completed`, or a [`FailureKind`](crate::FailureKind)
    /// in snake case, or `cancelled`.
    pub tasks: Vec<TaskOutcome>,
    /// How each worker ended.
    pub workers: Vec<WorkerEnd>,
    /// The statistics after the last worker ended.
    pub stats: Option<Stats>,
}

impl ShutdownReport {
    /// How many of the reported tasks ended with `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.tasks.iter().filter(|t| t.outcome == outcome).count()
    }
}

/// One task's outcome in a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// The task's id.
    pub task: u64,
    /// `completed`, `cancelled`, or the failure kind (`shutting_down`, `timed_out`, ...).
    pub outcome: String,
}

/// How one worker ended, in a [`ShutdownReport`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct WorkerEnd {
    /// The pool's id for the worker.
    pub worker: u64,
    /// How its process ended.
    pub exit: Exit,
}

// ---- the manager ----------------------------------------------------------

enum Event<Resp> {
    Spawned {
        worker: WorkerId,
        pid: u32,
    },
    SpawnFailed {
        worker: WorkerId,
        reason: String,
    },
    Ready {
        worker: WorkerId,
    },
    Done {
        worker: WorkerId,
        task: TaskId,
        result: Result<Resp, String>,
    },
    Protocol {
        worker: WorkerId,
        message: String,
    },
    Sample {
        worker: WorkerId,
        rss: u64,
        cpu: Duration,
    },
    Exited {
        worker: WorkerId,
        exit: Exit,
        stderr_tail: Vec<String>,
    },
}

enum DriverCmd<Req> {
    Dispatch { task: TaskId, req: Req },
    Drain,
    Kill(KillReason),
    Stop(Duration),
    Sample,
}

struct DriverHandle<Req> {
    tx: mpsc::UnboundedSender<DriverCmd<Req>>,
    pid: Option<u32>,
    rss: Option<u64>,
    cpu: Option<Duration>,
}

struct ShutdownState {
    tasks: Vec<TaskOutcome>,
    workers: Vec<WorkerEnd>,
}

struct Manager<Req, Resp> {
    core: Core<Req, Resp>,
    rules: Rules,
    command: CommandFactory,
    codec: Codec,
    stop_grace: Duration,
    callers: HashMap<TaskId, (Reply<Resp>, Option<OwnedSemaphorePermit>)>,
    drivers: HashMap<WorkerId, DriverHandle<Req>>,
    last_exit: HashMap<WorkerId, (Exit, Vec<String>)>,
    ev_tx: mpsc::UnboundedSender<Event<Resp>>,
    started: Option<oneshot::Sender<Result<(), String>>>,
    shutdown_waiters: Vec<oneshot::Sender<ShutdownReport>>,
    report: Option<ShutdownState>,
}

impl<Req: Message + Clone + Sync, Resp: Message> Manager<Req, Resp> {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Cmd<Req, Resp>>,
        mut ev_rx: mpsc::UnboundedReceiver<Event<Resp>>,
        sample_every: Duration,
    ) {
        self.perform();
        let mut sampler = tokio::time::interval(sample_every);
        sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut handles_gone = false;
        loop {
            let deadline = self.core.next_deadline().map(Instant::from_std);
            tokio::select! {
                cmd = cmd_rx.recv(), if !handles_gone => match cmd {
                    Some(cmd) => self.command_in(cmd),
                    None => {
                        // Every Pool handle is gone: kill the workers (drivers
                        // drop their Child, which kills the group) and stop.
                        handles_gone = true;
                        debug!("last pool handle dropped; killing workers");
                        let now = Instant::now().into_std();
                        self.core.shutdown(ShutdownMode::Cancel { grace: Duration::ZERO }, now);
                        self.core.tick(now);
                    }
                },
                Some(ev) = ev_rx.recv() => self.event_in(ev),
                () = sleep_until_opt(deadline) => self.core.tick(Instant::now().into_std()),
                _ = sampler.tick() => {
                    for d in self.drivers.values() {
                        let _ = d.tx.send(DriverCmd::Sample);
                    }
                }
            }
            self.perform();
            if self.core.is_finished() && self.drivers.is_empty() {
                self.finish_shutdown();
                if handles_gone || cmd_rx.is_closed() {
                    return;
                }
                // Keep answering stats and late calls until the handles are gone.
                match cmd_rx.recv().await {
                    Some(cmd) => self.command_in(cmd),
                    None => return,
                }
                self.perform();
            }
        }
    }

    fn command_in(&mut self, cmd: Cmd<Req, Resp>) {
        let now = Instant::now().into_std();
        match cmd {
            Cmd::Submit {
                id,
                req,
                reply,
                permit,
            } => match self.core.submit(id, req, now) {
                Ok(id) => {
                    self.callers.insert(id, (reply, Some(permit)));
                }
                Err(refused) => {
                    let _ = reply.send(Err(match refused {
                        Refused::QueueFull => PoolError::QueueFull,
                        Refused::ShuttingDown => PoolError::ShuttingDown,
                        Refused::Unavailable(reason) => PoolError::Unavailable(reason),
                    }));
                    if let Some(report) = &mut self.report {
                        report.tasks.push(TaskOutcome {
                            task: id,
                            outcome: "shutting_down".into(),
                        });
                    }
                }
            },
            Cmd::Cancel(id) => self.core.cancel(id, now),
            Cmd::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Cmd::Shutdown(mode, reply) => {
                self.shutdown_waiters.push(reply);
                if self.report.is_none() {
                    info!(
                        ?mode,
                        queued = self.core.queue_len(),
                        running = self.core.running_len(),
                        "pool shutting down"
                    );
                    self.report = Some(ShutdownState {
                        tasks: Vec::new(),
                        workers: Vec::new(),
                    });
                    // Tasks queued or running now are reported as they finish.
                    self.core.shutdown(mode, now);
                }
            }
        }
    }

    fn event_in(&mut self, ev: Event<Resp>) {
        let now = Instant::now().into_std();
        match ev {
            Event::Spawned { worker, pid } => {
                if let Some(d) = self.drivers.get_mut(&worker) {
                    d.pid = Some(pid);
                }
                debug!(worker, pid, "worker spawned");
            }
            Event::SpawnFailed { worker, reason } => {
                warn!(worker, %reason, "worker could not be started");
                self.drivers.remove(&worker);
                self.core.spawn_failed(worker, reason, now);
            }
            Event::Ready { worker } => {
                let pid = self.drivers.get(&worker).and_then(|d| d.pid);
                info!(worker, pid, "worker ready");
                self.core.ready(worker, now);
                if let Some(started) = self.started.take() {
                    let _ = started.send(Ok(()));
                }
            }
            Event::Done {
                worker,
                task,
                result,
            } => self.core.reply(worker, task, result, now),
            Event::Protocol { worker, message } => {
                warn!(worker, %message, "worker broke the protocol; killing it");
                self.core.protocol_error(worker, message, now);
            }
            Event::Sample { worker, rss, cpu } => {
                if let Some(d) = self.drivers.get_mut(&worker) {
                    d.rss = Some(rss);
                    d.cpu = Some(cpu);
                }
                self.core.rss(worker, rss, now);
            }
            Event::Exited {
                worker,
                exit,
                stderr_tail,
            } => {
                let pid = exit.pid();
                match exit.ended_by() {
                    Some(t) => debug!(worker, pid, %exit, reason = %t.reason, "worker ended"),
                    None if exit.success() => debug!(worker, pid, "worker exited"),
                    None => warn!(worker, pid, %exit, "worker crashed"),
                }
                self.drivers.remove(&worker);
                if let Some(report) = &mut self.report {
                    report.workers.push(WorkerEnd {
                        worker,
                        exit: exit.clone(),
                    });
                }
                self.last_exit.insert(worker, (exit, stderr_tail));
                self.core.exited(worker, now);
            }
        }
    }

    /// Carries out the core's actions.
    fn perform(&mut self) {
        loop {
            let actions = self.core.take_actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    Action::Spawn { worker } => self.spawn(worker),
                    Action::Dispatch { worker, task, req } => {
                        debug!(worker, task, "task dispatched");
                        if let Some((_, permit)) = self.callers.get_mut(&task) {
                            // It left the queue: a waiting caller may enter.
                            permit.take();
                        }
                        if let Some(d) = self.drivers.get(&worker) {
                            let _ = d.tx.send(DriverCmd::Dispatch { task, req });
                        }
                    }
                    Action::Drain { worker, reason } => {
                        if let Some(reason) = reason {
                            info!(worker, %reason, "recycling worker");
                        }
                        if let Some(d) = self.drivers.get(&worker) {
                            let _ = d.tx.send(DriverCmd::Drain);
                        }
                    }
                    Action::Kill { worker, reason } => {
                        info!(worker, ?reason, "killing worker");
                        if let Some(d) = self.drivers.get(&worker) {
                            let _ = d.tx.send(DriverCmd::Kill(reason));
                        }
                    }
                    Action::Stop { worker } => {
                        if let Some(d) = self.drivers.get(&worker) {
                            let _ = d.tx.send(DriverCmd::Stop(self.stop_grace));
                        }
                    }
                    Action::Complete { task, outcome } => self.complete(task, outcome),
                }
            }
        }
        // Still starting and the breaker is open: `build` gives up.
        if self.started.is_some()
            && let Some(reason) = self.core.degraded()
        {
            let reason = reason.to_owned();
            if let Some(started) = self.started.take() {
                let _ = started.send(Err(reason));
            }
        }
    }

    fn complete(&mut self, task: TaskId, outcome: Result<Resp, Failure>) {
        let label = match &outcome {
            Ok(_) => "completed".to_owned(),
            Err(Failure::Cancelled) => "cancelled".to_owned(),
            Err(f) => crate::stats::FailureKind::of(f).as_str().to_owned(),
        };
        if let Some(report) = &mut self.report {
            report.tasks.push(TaskOutcome {
                task,
                outcome: label,
            });
        }
        let Some((reply, _permit)) = self.callers.remove(&task) else {
            return;
        };
        let outcome = outcome.map_err(|f| match f {
            Failure::Crashed { worker } => {
                let (exit, stderr_tail) = self
                    .last_exit
                    .get(&worker)
                    .cloned()
                    .expect("crash outcomes follow an exit");
                PoolError::WorkerCrashed {
                    exit: Box::new(exit),
                    stderr_tail,
                }
            }
            Failure::TimedOut => PoolError::TimedOut {
                after: self.rules.task_timeout.unwrap_or_default(),
            },
            Failure::Cancelled => PoolError::Cancelled,
            Failure::ShuttingDown => PoolError::ShuttingDown,
            Failure::Task(m) => PoolError::Task(m),
            Failure::Protocol(m) => PoolError::Protocol(m),
            Failure::Unavailable(m) => PoolError::Unavailable(m),
        });
        let _ = reply.send(outcome);
    }

    fn spawn(&mut self, worker: WorkerId) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.drivers.insert(
            worker,
            DriverHandle {
                tx,
                pid: None,
                rss: None,
                cpu: None,
            },
        );
        let ev_tx = self.ev_tx.clone();
        let mut cmd = (self.command)();
        let codec = self.codec;
        match start_worker::<Req, Resp>(&mut cmd, codec) {
            Ok((child, channel)) => {
                let _ = ev_tx.send(Event::Spawned {
                    worker,
                    pid: child.id(),
                });
                tokio::spawn(drive(worker, child, channel, rx, ev_tx));
            }
            Err(reason) => {
                let _ = ev_tx.send(Event::SpawnFailed { worker, reason });
            }
        }
    }

    fn stats(&self) -> Stats {
        let c = &self.core.counters;
        let views = self.core.workers();
        Stats {
            submitted: c.submitted,
            completed: c.completed,
            failed: c.failed.clone(),
            cancelled: c.cancelled,
            retried: c.retried,
            restarts: c.restarts,
            crashes: c.crashes,
            start_failures: c.start_failures,
            recycled: c.recycled,
            queued: self.core.queue_len(),
            running: self.core.running_len(),
            busy_workers: views.iter().filter(|w| w.in_flight > 0).count(),
            idle_workers: views.iter().filter(|w| w.state == "idle").count(),
            queue_wait: self.core.histograms.queue_wait.summary(),
            service_time: self.core.histograms.service.summary(),
            degraded: self.core.degraded().map(str::to_owned),
            workers: views
                .into_iter()
                .map(|w| {
                    let d = self.drivers.get(&w.id);
                    WorkerStats {
                        worker: w.id,
                        pid: d.and_then(|d| d.pid),
                        state: w.state,
                        in_flight: w.in_flight,
                        completed: w.completed,
                        rss_bytes: d.and_then(|d| d.rss),
                        cpu: d.and_then(|d| d.cpu),
                    }
                })
                .collect(),
        }
    }

    fn finish_shutdown(&mut self) {
        if self.shutdown_waiters.is_empty() {
            return;
        }
        let state = self.report.take().unwrap_or(ShutdownState {
            tasks: Vec::new(),
            workers: Vec::new(),
        });
        let report = ShutdownReport {
            tasks: state.tasks,
            workers: state.workers,
            stats: Some(self.stats()),
        };
        info!(tasks = report.tasks.len(), "pool shut down");
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(report.clone());
        }
        self.report = Some(ShutdownState {
            tasks: Vec::new(),
            workers: Vec::new(),
        });
    }
}

impl Stats {
    fn empty() -> Stats {
        Stats {
            submitted: 0,
            completed: 0,
            failed: Default::default(),
            cancelled: 0,
            retried: 0,
            restarts: 0,
            crashes: 0,
            start_failures: 0,
            recycled: 0,
            queued: 0,
            running: 0,
            busy_workers: 0,
            idle_workers: 0,
            queue_wait: Default::default(),
            service_time: Default::default(),
            degraded: None,
            workers: Vec::new(),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts one worker process with its channel.
fn start_worker<Req: Message, Resp: Message>(
    cmd: &mut Command,
    codec: Codec,
) -> Result<(Child, Channel<ToWorker<Req>, FromWorker<Resp>>), String> {
    let builder = Child::builder(cmd)
        .stdin(Input::Null)
        .stderr(Output::lines().max_line(4096))
        .grace(Duration::from_secs(5));
    forkyard_ipc::spawn_with::<ToWorker<Req>, FromWorker<Resp>>(
        builder,
        forkyard_ipc::Config::new().codec(codec),
    )
    .map_err(|e| error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One worker's driver: owns its `Child` and the sending half of its channel.
async fn drive<Req: Message + Sync, Resp: Message>(
    worker: WorkerId,
    mut child: Child,
    channel: Channel<ToWorker<Req>, FromWorker<Resp>>,
    mut cmds: mpsc::UnboundedReceiver<DriverCmd<Req>>,
    events: mpsc::UnboundedSender<Event<Resp>>,
) {
    let (mut tx, rx) = channel.split();
    let reader = tokio::spawn(read(worker, rx, events.clone()));
    // The last lines of stderr, for crash reports; read by a task of its own
    // because `wait` needs the `Child` mutably.
    let stderr_tail = Arc::new(std::sync::Mutex::new(VecDeque::<String>::new()));
    if let Some(mut lines) = child.take_lines() {
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            while let Some(line) = lines.next_line().await {
                let text = line.text().into_owned();
                debug!(target: "forkyard_pool::worker_stderr", worker, "{text}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
        });
    }
    let mut commands_open = true;
    let exit = loop {
        tokio::select! {
            exit = child.wait() => break exit,
            cmd = cmds.recv(), if commands_open => match cmd {
                Some(DriverCmd::Dispatch { task, req }) => {
                    // Batch every dispatch already waiting into one write.
                    let mut result = tx.feed(&ToWorker::Task { id: task, req }).await;
                    while result.is_ok() {
                        match cmds.try_recv() {
                            Ok(DriverCmd::Dispatch { task, req }) => result = tx.feed(&ToWorker::Task { id: task, req }).await,
                            Ok(other) => { handle_other(other, &mut child, &mut tx, worker, &events).await; }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = result.and(tx.flush().await) {
                        // The worker is gone or wedged; its exit (or the kill) follows.
                        debug!(worker, error = %e, "cannot send to worker");
                        let _ = child.start_kill(Reason::Kill);
                    }
                }
                Some(other) => handle_other(other, &mut child, &mut tx, worker, &events).await,
                None => {
                    commands_open = false;
                    let _ = child.start_kill(Reason::Shutdown);
                }
            },
        }
    };
    let exit = match exit {
        Ok(exit) => exit,
        Err(e) => {
            warn!(worker, error = %e, "waiting for worker failed");
            let _ = child.start_kill(Reason::Kill);
            // Reaping failed; report what we can. (Drop reaps in the background.)
            return;
        }
    };
    // Let the reader deliver every answer the worker sent before it exited, so
    // the exit never overtakes a reply (a draining worker's last answers).
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        debug!(worker, "reader still open 2 s after the worker exited");
    }
    let stderr_tail = stderr_tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let _ = events.send(Event::Exited {
        worker,
        exit,
        stderr_tail,
    });
}

async fn handle_other<Req: Message + Sync, Resp: Message>(
    cmd: DriverCmd<Req>,
    child: &mut Child,
    tx: &mut forkyard_ipc::Sender<ToWorker<Req>>,
    worker: WorkerId,
    events: &mpsc::UnboundedSender<Event<Resp>>,
) {
    match cmd {
        DriverCmd::Dispatch { .. } => unreachable!("dispatches are handled by the caller"),
        DriverCmd::Drain => {
            if tx.send(&ToWorker::Drain).await.is_err() {
                let _ = child.start_kill(Reason::Recycle);
            }
        }
        DriverCmd::Kill(reason) => {
            let reason = match reason {
                KillReason::Timeout => Reason::Timeout,
                KillReason::StartTimeout => Reason::Unhealthy,
                KillReason::Protocol => Reason::Kill,
                KillReason::Shutdown => Reason::Shutdown,
                KillReason::DrainTimeout => Reason::Recycle,
            };
            let _ = child.start_kill(reason);
        }
        DriverCmd::Stop(grace) => {
            // Polite first: most workers exit on Drain; TERM and KILL follow.
            let _ = tx.send(&ToWorker::Drain).await;
            let _ = child.stop_because(Reason::Shutdown, grace).await;
        }
        DriverCmd::Sample => {
            if let Ok(s) = child.sample() {
                let _ = events.send(Event::Sample {
                    worker,
                    rss: s.rss_bytes,
                    cpu: s.user_cpu + s.system_cpu,
                });
            }
        }
    }
}

/// One worker's reader: turns its messages into events.
async fn read<Resp: Message>(
    worker: WorkerId,
    mut rx: forkyard_ipc::Receiver<FromWorker<Resp>>,
    events: mpsc::UnboundedSender<Event<Resp>>,
) {
    loop {
        match rx.recv().await {
            Ok(Some(FromWorker::Ready)) => {
                let _ = events.send(Event::Ready { worker });
            }
            Ok(Some(FromWorker::Done { id, result })) => {
                let _ = events.send(Event::Done {
                    worker,
                    task: id,
                    result,
                });
            }
            Ok(None) => return,
            Err(e) if e.is_fatal() => {
                let message = error_chain(&e);
                if is_peer_gone(&e) {
                    return;
                }
                let _ = events.send(Event::Protocol { worker, message });
                return;
            }
            Err(e) => {
                let _ = events.send(Event::Protocol {
                    worker,
                    message: error_chain(&e),
                });
                return;
            }
        }
    }
}

/// A worker that died mid-frame is a crash (its exit tells), not a protocol error.
fn is_peer_gone(e: &forkyard_ipc::Error) -> bool {
    matches!(
        e,
        forkyard_ipc::Error::PeerClosedMidFrame { .. }
            | forkyard_ipc::Error::Closed
            | forkyard_ipc::Error::Io { .. }
            | forkyard_ipc::Error::Handshake(
                forkyard_ipc::HandshakeError::PeerClosed | forkyard_ipc::HandshakeError::Io(_)
            )
    )
}
