//! The async shell around the core: the `Pool` handle, the shared state, a
//! timer task, and one driver and one reader task per worker process.
//!
//! ```text
//!   callers ─submit/cancel─┐                    ┌─Dispatch/Drain/Kill/Stop─▶ driver ──▶ worker
//!   readers ─Ready/Done────┼─▶ lock(State) ─────┤                                         │
//!   drivers ─Exited────────┤   core.event       └─Complete─▶ caller's oneshot             │
//!   timer ───tick──────────┘   → actions                               reader ◀───────────┘
//! ```
//!
//! The [`Core`] decides; whoever brings news feeds it under the lock and
//! carries out its actions, none of which blocks; outcomes reach callers
//! right after the lock is let go. A driver owns one worker's
//! [`Child`] and the sending half of its channel; a reader owns the receiving
//! half. Nothing else touches a worker.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkyard_child::{Child, Exit, Input, Launch, Output, Reason};
use forkyard_ipc::{Channel, Codec, Message};
use forkyard_supervise::{Backoff, BreakerConfig};
use rustc_hash::FxHashMap;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::call::{CallOptions, TaskHandle};
use crate::core::{
    Action, Autoscale, Core, Failure, KillReason, Payload, Refused, Rules, TaskId, TaskRules,
    WorkerId,
};
use crate::error::{BuildError, ControlError, PoolError, TaskError, Why};
use crate::events::{Emitter, Outcome, PoolEvent, Subscription};
use crate::protocol::{FromWorker, ToWorker};
use crate::stats::{FailureKind, Stats, WorkerStats};
use crate::{ShutdownMode, worker};

type CommandFactory = Arc<dyn Fn() -> Launch + Send + Sync>;

/// The parent's end of the channel to one worker.
type WorkerChannel<Req, Resp> = Channel<ToWorker<Req>, FromWorker<Resp>>;

/// Events a subscriber may fall behind by before it misses some.
const DEFAULT_EVENT_CAPACITY: usize = 4096;

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
    events: Emitter,
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
                cancel_grace: Duration::from_secs(1),
                autoscale: None,
            },
            codec: Codec::Postcard,
            stop_grace: Duration::from_secs(5),
            sample_every: Duration::from_millis(500),
            seed: 0x5eed,
            events: Emitter::new(DEFAULT_EVENT_CAPACITY),
            _types: PhantomData,
        }
    }

    /// How to start a worker: called once per worker process (and again for
    /// every replacement). It returns a plain `Command` or a
    /// [`Launch`](forkyard_child::Launch) (a cgroup, passed fds, hooks, or a
    /// sandboxed start from forkyard-secure's `SecureCommand::into_launch`).
    /// The pool sets the worker's stdin (null) and stderr (its last lines go
    /// into crash reports) and hands it its channel as fd 3; everything else in
    /// the `Launch` is kept.
    pub fn command<L: Into<Launch>>(
        mut self,
        make: impl Fn() -> L + Send + Sync + 'static,
    ) -> Self {
        self.command = Some(Arc::new(move || make().into()));
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
            Launch::new(cmd)
        }));
        Ok(self)
    }

    /// Number of worker processes (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.rules.workers = n;
        self
    }

    /// Grow and shrink with the load between `scale.min` and `scale.max`
    /// workers (see [`Autoscale`]); the pool starts with `scale.min`, and
    /// [`workers`](Builder::workers) is ignored. [`Pool::resize`] still
    /// sets the size at once; the autoscaler goes on from there.
    pub fn autoscale(mut self, scale: Autoscale) -> Self {
        self.rules.autoscale = Some(scale);
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

    /// Delay before starting a worker again in a slot whose last start failed
    /// or whose last worker died at once with nothing done (a crash loop;
    /// default: exponential, 50 ms to 10 s). Each slot backs off on its own;
    /// a worker that completed a task or was up for a second is replaced at once.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.rules.backoff = backoff;
        self
    }

    /// When to stop trying to start workers that cannot start (default: 5
    /// start failures within 30 s open the breaker for 5 s, then 1 trial).
    /// A failed start counts here only from the second failure in a row in
    /// its slot: one start killed from outside does not stop the pool.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.rules.breaker = breaker;
        self
    }

    /// How long a worker told to abandon a cancelled task has to say it did
    /// (default 1 s); then its process group is killed, it is replaced, and
    /// its other tasks re-run without being charged.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.rules.cancel_grace = grace;
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

    /// How many events a subscriber may fall behind by before it loses the
    /// oldest (default 4096). Set it before [`subscribe`](Self::subscribe):
    /// it starts a new event stream.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.events = Emitter::new(n);
        self
    }

    /// Subscribes to the pool's [events](crate::events) before it is built,
    /// so as to see its first workers spawn and become ready too.
    pub fn subscribe(&self) -> Subscription {
        self.events.subscribe()
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
        let mut rules = self.rules;
        if let Some(scale) = rules.autoscale {
            if scale.min == 0 {
                return Err(BuildError::Invalid("autoscale min must be at least 1"));
            }
            if scale.max < scale.min {
                return Err(BuildError::Invalid("autoscale max must be at least min"));
            }
            rules.workers = scale.min;
        }
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
        let (started_tx, started_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core: Core::new(rules.clone(), self.seed, Instant::now().into_std()),
                command,
                codec: self.codec,
                stop_grace: self.stop_grace,
                callers: FxHashMap::default(),
                drivers: FxHashMap::default(),
                last_exit: FxHashMap::default(),
                started: Some(started_tx),
                shutdown_waiters: Vec::new(),
                report: None,
                armed: None,
                deliveries: Vec::new(),
                spare_actions: Vec::new(),
                dispatched: Dispatched::default(),
                handles_gone: false,
            }),
            ticker: Notify::new(),
            permits: Arc::new(Semaphore::new(rules.queue_capacity)),
            next_task: AtomicU64::new(1),
            timeout: rules.task_timeout,
            events: self.events,
        });
        // The first workers were decided by the core when it was made.
        shared.with(|_| ());
        tokio::spawn(tick(shared.clone(), self.sample_every));
        match started_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                // Nothing may outlive a pool that failed to build.
                drop(Inner { shared });
                return Err(BuildError::NoWorkers(reason.cause()));
            }
            Err(_) => {
                return Err(BuildError::NoWorkers(
                    Why::new("the pool stopped while starting").cause(),
                ));
            }
        }
        Ok(Pool {
            inner: Arc::new(Inner { shared }),
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
pub struct Pool<Req: Message + Clone + Sync, Resp: Message> {
    inner: Arc<Inner<Req, Resp>>,
}

impl<Req: Message + Clone + Sync, Resp: Message> Clone for Pool<Req, Resp> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<Req: Message + Clone + Sync, Resp: Message> fmt::Debug for Pool<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// What the users' handles share; dropping the last one ends the pool.
struct Inner<Req: Message + Clone + Sync, Resp: Message> {
    shared: Arc<Shared<Req, Resp>>,
}

impl<Req: Message + Clone + Sync, Resp: Message> Drop for Inner<Req, Resp> {
    fn drop(&mut self) {
        self.shared.permits.close();
        self.shared.with(|st| {
            debug!("last pool handle dropped; killing workers");
            st.handles_gone = true;
            let now = Instant::now().into_std();
            st.core.shutdown(
                ShutdownMode::Cancel {
                    grace: Duration::ZERO,
                },
                now,
            );
            st.core.tick(now);
        });
        self.shared.ticker.notify_one();
    }
}

type Reply<Resp> = oneshot::Sender<Result<Resp, PoolError>>;

impl<Req: Message + Clone + Sync, Resp: Message> Pool<Req, Resp> {
    /// Settings for a new pool.
    pub fn builder() -> Builder<Req, Resp> {
        Builder::new()
    }

    /// Runs `req` on a worker and returns its result, waiting for room in the
    /// queue first. Dropping the future cancels the task: if it has not been
    /// dispatched it never runs; if it is running, its worker is told to
    /// abandon it (an async handler stops at its next `.await`; one that
    /// cannot be stopped runs to its end and its result is dropped).
    pub async fn call(&self, req: Req) -> Result<Resp, PoolError> {
        let permit = self.room().await?;
        self.submit(req, permit).await
    }

    /// Like [`call`](Pool::call), with this call's own deadline, timeout,
    /// retries and cancel token (see [`CallOptions`]).
    ///
    /// Cancelling with the token stops a queued task from ever running. A
    /// running one: its worker is told to abandon it (an async handler is
    /// dropped at its next `.await`); a worker that has not within the
    /// [cancel grace](Builder::cancel_grace) has its process group killed and
    /// is replaced, and its other tasks re-run uncharged. The outcome is
    /// [`PoolError::Cancelled`]. Dropping the future cancels as
    /// [`call`](Pool::call) does, without the kill.
    pub async fn call_with(&self, req: Req, options: CallOptions) -> Result<Resp, PoolError> {
        self.start(req, options).await?.await
    }

    /// Queues `req` (waiting for room) and returns a handle on the task at
    /// once: its [id](TaskHandle::id) (as in events and the shutdown report),
    /// a [cancel](TaskHandle::cancel), and, awaited, its outcome. Dropping
    /// the handle cancels the task.
    pub async fn start(
        &self,
        req: Req,
        options: CallOptions,
    ) -> Result<TaskHandle<Resp>, PoolError> {
        let permit = self.room().await?;
        let shared = &self.inner.shared;
        let id = shared.next_task.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let rules = options.task_rules();
        shared.with(|st| st.submit(id, Payload::One(req), rules, Caller::One(reply), permit));
        Ok(TaskHandle::new(id, rx, options.cancel, canceller(shared)))
    }

    /// Waits for room in the queue.
    pub(crate) async fn room(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        self.inner
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::ShuttingDown)
    }

    /// Queues a chunk of a batch; its items' results go to `to`.
    pub(crate) fn submit_chunk(
        &self,
        items: Vec<Req>,
        rules: TaskRules,
        to: mpsc::UnboundedSender<ChunkMsg<Resp>>,
        permit: OwnedSemaphorePermit,
    ) -> TaskId {
        let shared = &self.inner.shared;
        let id = shared.next_task.fetch_add(1, Ordering::Relaxed);
        shared.with(|st| st.submit(id, Payload::Chunk(items), rules, Caller::Chunk(to), permit));
        id
    }

    /// A function that cancels a task of this pool by id.
    pub(crate) fn canceller(&self) -> Canceller {
        canceller(&self.inner.shared)
    }

    /// The pool's size: the number of worker slots (see [`resize`](Pool::resize)).
    pub fn size(&self) -> usize {
        self.inner.shared.with(|st| st.core.size())
    }

    /// Sets the pool's size to `n` workers (operators: this emits
    /// [`PoolEvent::Resized`]). Growing starts workers at once. Shrinking
    /// drains the workers that matter least (not yet started, then the least
    /// busy): they get no new task, finish and answer the ones they have, and
    /// exit, so no task is lost or run twice. Returns the size before.
    pub fn resize(&self, n: usize) -> Result<usize, ControlError> {
        if n == 0 {
            return Err(ControlError::ZeroSize(n));
        }
        self.inner.shared.with(|st| {
            if st.report.is_some() {
                return Err(ControlError::ShuttingDown);
            }
            let from = st.core.resize(n, Instant::now().into_std());
            if n != from {
                info!(from, to = n, "pool resized");
            }
            Ok(from)
        })
    }

    /// Recycles one worker by id (operators; as in [`Stats::workers`]): a
    /// replacement starts, and once it is ready the worker drains and exits,
    /// so capacity never dips and no task runs twice. Emits
    /// [`PoolEvent::WorkerRecycled`] with [`RecycleReason::Operator`](crate::RecycleReason::Operator).
    pub fn recycle(&self, worker: u64) -> Result<(), ControlError> {
        self.inner.shared.with(|st| {
            if st.report.is_some() {
                return Err(ControlError::ShuttingDown);
            }
            if st.core.recycle(worker, Instant::now().into_std()) {
                info!(worker, "worker recycled by request");
                Ok(())
            } else {
                Err(ControlError::NoSuchWorker(worker))
            }
        })
    }

    /// Opens the circuit breaker by hand (operators; emits
    /// [`PoolEvent::BreakerOpened`]): no worker starts until
    /// [`close_breaker`](Pool::close_breaker), not even a replacement.
    /// Running workers keep serving; once none is left, calls fail fast with
    /// [`PoolError::Unavailable`] and [`Stats::degraded`] says why.
    pub fn open_breaker(&self) {
        self.inner
            .shared
            .with(|st| st.core.hold_breaker(true, Instant::now().into_std()));
    }

    /// Closes the circuit breaker (operators; emits
    /// [`PoolEvent::BreakerClosed`]), whether an operator or failed starts
    /// opened it: past start failures and backoffs are forgotten and missing
    /// workers start at once.
    pub fn close_breaker(&self) {
        self.inner
            .shared
            .with(|st| st.core.hold_breaker(false, Instant::now().into_std()));
    }

    /// Drains the pool (operators): [`shutdown`](Pool::shutdown) with
    /// [`ShutdownMode::Drain`]: no new task is taken, queued and running
    /// ones finish within `grace`, then workers exit. Emits
    /// [`PoolEvent::ShuttingDown`].
    pub async fn drain(&self, grace: Duration) -> ShutdownReport {
        self.shutdown(ShutdownMode::Drain { grace }).await
    }

    /// Like [`call`](Pool::call), but fails at once with
    /// [`PoolError::QueueFull`] instead of waiting for room.
    pub async fn try_call(&self, req: Req) -> Result<Resp, PoolError> {
        let permit = self
            .inner
            .shared
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
        let shared = &self.inner.shared;
        let id = shared.next_task.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        shared.with(|st| {
            st.submit(
                id,
                Payload::One(req),
                TaskRules::default(),
                Caller::One(reply),
                permit,
            )
        });
        // If this future is dropped before the outcome arrives, cancel the task.
        let guard = CancelGuard {
            id,
            shared,
            armed: true,
        };
        let outcome = rx.await.unwrap_or(Err(PoolError::ShuttingDown));
        guard.disarm();
        outcome
    }

    /// Subscribes to the pool's [events](crate::events): every task
    /// submitted, dispatched, finished or retried, every worker spawned,
    /// ready, sampled, recycled or exited, from now on. A subscriber that
    /// falls behind by more than the [event capacity](Builder::event_capacity)
    /// loses the oldest events (and is told how many); it never slows the pool.
    pub fn subscribe(&self) -> Subscription {
        self.inner.shared.events.subscribe()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.inner.shared.with(|st| st.stats())
    }

    /// The task timeout this pool was built with.
    pub fn task_timeout(&self) -> Option<Duration> {
        self.inner.shared.timeout
    }

    /// Shuts the pool down (see [`ShutdownMode`]) and reports what happened to
    /// every task. Further calls fail with [`PoolError::ShuttingDown`]. Calling
    /// it again (or from another handle) waits for the same shutdown.
    pub async fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let shared = &self.inner.shared;
        // Refuse new callers at once.
        shared.permits.close();
        let (tx, rx) = oneshot::channel();
        shared.with(|st| {
            st.shutdown_waiters.push(tx);
            if st.report.is_none() {
                info!(
                    ?mode,
                    queued = st.core.queue_len(),
                    running = st.core.running_len(),
                    "pool shutting down"
                );
                st.report = Some(ShutdownState::default());
                st.core.shutdown(mode, Instant::now().into_std());
            }
        });
        shared.ticker.notify_one();
        rx.await.unwrap_or_default()
    }
}

/// Cancels a task by id, hard (an explicit cancel: kill its worker after the
/// grace) or not (the caller stopped waiting); what a [`TaskHandle`] and a
/// batch keep of the pool.
pub(crate) type Canceller = Arc<dyn Fn(TaskId, bool) + Send + Sync>;

fn canceller<Req: Message + Clone + Sync, Resp: Message>(
    shared: &Arc<Shared<Req, Resp>>,
) -> Canceller {
    let shared = Arc::downgrade(shared);
    Arc::new(move |id, hard| {
        if let Some(shared) = shared.upgrade() {
            shared.with(|st| st.core.cancel(id, hard, Instant::now().into_std()));
        }
    })
}

struct CancelGuard<'a, Req: Message + Clone + Sync, Resp: Message> {
    id: TaskId,
    shared: &'a Arc<Shared<Req, Resp>>,
    armed: bool,
}

impl<Req: Message + Clone + Sync, Resp: Message> CancelGuard<'_, Req, Resp> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl<Req: Message + Clone + Sync, Resp: Message> Drop for CancelGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            self.shared
                .with(|st| st.core.cancel(id, false, Instant::now().into_std()));
        }
    }
}

/// What [`Pool::shutdown`] reports.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every task that was queued or running when the shutdown began, or was
    /// submitted after, with its [`Outcome`].
    pub tasks: Vec<TaskOutcome>,
    /// How each worker ended.
    pub workers: Vec<WorkerEnd>,
    /// The statistics after the last worker ended.
    pub stats: Option<Stats>,
}

impl ShutdownReport {
    /// How many of the reported tasks ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.tasks.iter().filter(|t| t.outcome == outcome).count()
    }
}

/// One task's outcome in a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// The task's id.
    pub task: u64,
    /// How it ended.
    pub outcome: Outcome,
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

// ---- the shared state -----------------------------------------------------

/// Everything the pool knows, behind one lock, plus what wakes its timer task.
///
/// There is no manager task: whoever has news (a caller submitting, a reader
/// with a reply, a driver with an exit, the timer) takes the lock, feeds the
/// core, and carries out the core's actions before letting go. None of those
/// actions blocks: they send to a worker's driver or start a process; what
/// callers get (outcomes, room in the queue, reports) is collected and
/// handed over right after the lock is let go, since waking a caller can mean
/// waking a thread. So a reply travels from the worker's socket to its caller
/// in one task hop, not three.
struct Shared<Req, Resp> {
    state: Mutex<State<Req, Resp>>,
    /// Wakes the timer task when an earlier deadline appears, or at shutdown.
    ticker: Notify,
    permits: Arc<Semaphore>,
    next_task: AtomicU64,
    timeout: Option<Duration>,
    /// The event stream; events are built only while someone subscribes.
    events: Emitter,
}

impl<Req: Message + Clone + Sync, Resp: Message> Shared<Req, Resp> {
    /// Runs `f` on the state, then carries out whatever the core decided, and
    /// wakes the timer if a deadline earlier than the one it sleeps to appeared.
    fn with<T>(self: &Arc<Self>, f: impl FnOnce(&mut State<Req, Resp>) -> T) -> T {
        let (out, wake, deliveries) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.core.observe = self.events.observed();
            let out = f(&mut st);
            st.perform(self);
            // Sent under the lock, so that subscribers see the pool's order.
            for event in st.core.notes.drain(..) {
                self.events.send(event);
            }
            let next = st.core.next_deadline();
            let wake = match (next, st.armed) {
                (Some(n), Some(armed)) => n < armed,
                (Some(_), None) => true,
                _ => false,
            };
            (out, wake, std::mem::take(&mut st.deliveries))
        };
        // Waking callers (and callers waiting for room) can mean waking a
        // thread: done after the lock is let go, so nobody waits for it.
        for delivery in deliveries {
            delivery.hand_over();
        }
        if wake {
            self.ticker.notify_one();
        }
        out
    }
}

#[derive(Debug)]
enum Event<Resp> {
    Ready {
        worker: WorkerId,
    },
    Done {
        worker: WorkerId,
        task: TaskId,
        result: Result<Resp, TaskError>,
    },
    Protocol {
        worker: WorkerId,
        message: Why,
    },
    Items {
        worker: WorkerId,
        task: TaskId,
        results: Vec<(u32, Result<Resp, TaskError>)>,
    },
    Cancelled {
        worker: WorkerId,
        task: TaskId,
    },
    Unsendable {
        worker: WorkerId,
        task: TaskId,
        why: Why,
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

/// Who waits for a task's outcome.
enum Caller<Resp> {
    /// A call: one outcome.
    One(Reply<Resp>),
    /// A chunk of a batch: its items' results as they come, then its end.
    Chunk(mpsc::UnboundedSender<ChunkMsg<Resp>>),
}

/// What a batch hears about one of its chunks.
pub(crate) enum ChunkMsg<Resp> {
    /// Results of some items, by their index in the chunk.
    Items(TaskId, Vec<(u32, Result<Resp, PoolError>)>),
    /// The chunk ended: every item answered (`None`), or this error for
    /// every item not answered.
    End(TaskId, Option<PoolError>),
}

/// What callers get, handed over once the lock is let go, in this order.
enum Delivery<Resp> {
    /// An outcome for a waiting caller, with the queue room it held (if it
    /// still held some), released first so the caller, once woken, finds it.
    Reply(
        Reply<Resp>,
        Result<Resp, PoolError>,
        Option<OwnedSemaphorePermit>,
    ),
    /// Room in the queue: dropping the permit lets a waiting caller in.
    Room(OwnedSemaphorePermit),
    /// News for a batch about one of its chunks.
    Chunk(
        mpsc::UnboundedSender<ChunkMsg<Resp>>,
        ChunkMsg<Resp>,
        Option<OwnedSemaphorePermit>,
    ),
    /// `build` learns whether the pool reached full size.
    Started(oneshot::Sender<Result<(), Why>>, Result<(), Why>),
    /// A shutdown report, after the outcomes it reports.
    Report(oneshot::Sender<ShutdownReport>, Box<ShutdownReport>),
}

impl<Resp> Delivery<Resp> {
    fn hand_over(self) {
        match self {
            Delivery::Reply(reply, outcome, room) => {
                drop(room);
                let _ = reply.send(outcome);
            }
            Delivery::Room(permit) => drop(permit),
            Delivery::Chunk(to, msg, room) => {
                drop(room);
                let _ = to.send(msg);
            }
            Delivery::Started(tx, result) => {
                let _ = tx.send(result);
            }
            Delivery::Report(tx, report) => {
                let _ = tx.send(*report);
            }
        }
    }
}

/// How many tasks each worker is sent in one batch of the core's actions, so
/// a driver can be told whether its worker had tasks in flight before them.
///
/// The core counts a task in flight as soon as it decides the dispatch, so
/// by the time the batch is performed a worker's count includes the tasks
/// of the batch itself. A list, not a map: a batch reaches a few workers,
/// and the list keeps its room from one batch to the next.
#[derive(Debug, Default)]
struct Dispatched(Vec<(WorkerId, usize)>);

impl Dispatched {
    /// Counts the dispatches in `actions`, forgetting the previous batch.
    fn count<Req, Resp>(&mut self, actions: &[Action<Req, Resp>]) {
        self.0.clear();
        for action in actions {
            if let Action::Dispatch { worker, .. } = action {
                match self.0.iter_mut().find(|(w, _)| w == worker) {
                    Some((_, n)) => *n += 1,
                    None => self.0.push((*worker, 1)),
                }
            }
        }
    }

    /// Whether `worker`, which has `in_flight` tasks counting this batch's,
    /// had any before the batch.
    fn pipelined(&self, worker: WorkerId, in_flight: usize) -> bool {
        let batch = self
            .0
            .iter()
            .find(|(w, _)| *w == worker)
            .map_or(0, |(_, n)| *n);
        in_flight > batch
    }
}

enum DriverCmd<Req> {
    Dispatch {
        task: TaskId,
        req: Payload<Req>,
        /// The worker had other tasks in flight before this batch of
        /// dispatches (so batching costs no latency).
        pipelined: bool,
    },
    Cancel(TaskId),
    Drain,
    Kill(KillReason),
    Stop(Duration),
    Sample,
}

struct DriverHandle<Req> {
    tx: mpsc::UnboundedSender<DriverCmd<Req>>,
    spawned_at: Instant,
    pid: Option<u32>,
    rss: Option<u64>,
    cpu: Option<Duration>,
}

#[derive(Default)]
struct ShutdownState {
    tasks: Vec<TaskOutcome>,
    workers: Vec<WorkerEnd>,
}

struct State<Req, Resp> {
    core: Core<Req, Resp>,
    command: CommandFactory,
    codec: Codec,
    stop_grace: Duration,
    callers: FxHashMap<TaskId, (Caller<Resp>, Option<OwnedSemaphorePermit>)>,
    drivers: FxHashMap<WorkerId, DriverHandle<Req>>,
    last_exit: FxHashMap<WorkerId, (Exit, Vec<String>)>,
    started: Option<oneshot::Sender<Result<(), Why>>>,
    shutdown_waiters: Vec<oneshot::Sender<ShutdownReport>>,
    report: Option<ShutdownState>,
    /// The deadline the timer task sleeps to.
    armed: Option<std::time::Instant>,
    /// Outcomes and room to hand out once the lock is let go.
    deliveries: Vec<Delivery<Resp>>,
    /// An empty buffer for the core's next actions (kept to save allocations).
    spare_actions: Vec<Action<Req, Resp>>,
    /// Tasks per worker in the batch of actions being performed.
    dispatched: Dispatched,
    handles_gone: bool,
}

impl<Req: Message + Clone + Sync, Resp: Message> State<Req, Resp> {
    fn submit(
        &mut self,
        id: TaskId,
        req: Payload<Req>,
        rules: TaskRules,
        caller: Caller<Resp>,
        permit: OwnedSemaphorePermit,
    ) {
        // Registered first: an empty chunk ends within `submit_with`.
        self.callers.insert(id, (caller, Some(permit)));
        match self
            .core
            .submit_with(id, req, rules, Instant::now().into_std())
        {
            Ok(_) => {}
            Err(refused) => {
                let error = match refused {
                    Refused::QueueFull => PoolError::QueueFull,
                    Refused::ShuttingDown => PoolError::ShuttingDown,
                    Refused::Unavailable(reason) => PoolError::Unavailable(reason.cause()),
                };
                let (caller, permit) = self.callers.remove(&id).expect("inserted above");
                self.deliveries.push(match caller {
                    Caller::One(reply) => Delivery::Reply(reply, Err(error), permit),
                    Caller::Chunk(to) => {
                        Delivery::Chunk(to, ChunkMsg::End(id, Some(error)), permit)
                    }
                });
                if let Some(report) = &mut self.report {
                    report.tasks.push(TaskOutcome {
                        task: id,
                        outcome: Outcome::Failed(FailureKind::ShuttingDown),
                    });
                }
            }
        }
    }

    fn event(&mut self, ev: Event<Resp>) {
        let now = Instant::now().into_std();
        match ev {
            Event::Ready { worker } => {
                let pid = self.drivers.get(&worker).and_then(|d| d.pid);
                info!(worker, pid, "worker ready");
                if self.core.observe
                    && self.core.is_starting(worker)
                    && let Some(d) = self.drivers.get(&worker)
                {
                    self.core.notes.push(PoolEvent::WorkerReady {
                        worker,
                        spawn_to_ready: d.spawned_at.elapsed(),
                    });
                }
                self.core.ready(worker, now);
                // `build` returns once the pool is at full size.
                let ready = self
                    .core
                    .workers()
                    .iter()
                    .filter(|w| w.state.is_ready())
                    .count();
                if ready >= self.core.size()
                    && let Some(started) = self.started.take()
                {
                    self.deliveries.push(Delivery::Started(started, Ok(())));
                }
            }
            Event::Done {
                worker,
                task,
                result,
            } => self.core.reply(worker, task, result, now),
            Event::Items {
                worker,
                task,
                results,
            } => self.core.items(worker, task, results, now),
            Event::Cancelled { worker, task } => self.core.cancelled(worker, task, now),
            Event::Unsendable { worker, task, why } => {
                warn!(worker, task, %why, "a request could not be sent");
                self.core.unsendable(worker, task, why, now);
            }
            Event::Protocol { worker, message } => {
                warn!(worker, %message, "worker broke the protocol; killing it");
                self.core.protocol_error(worker, message, now);
            }
            Event::Sample { worker, rss, cpu } => {
                if let Some(d) = self.drivers.get_mut(&worker) {
                    d.rss = Some(rss);
                    d.cpu = Some(cpu);
                }
                if self.core.observe {
                    self.core.notes.push(PoolEvent::WorkerSampled {
                        worker,
                        rss_bytes: rss,
                        cpu,
                    });
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
                if self.core.observe
                    && let Some(cause) = self.core.exit_cause(worker)
                {
                    self.core.notes.push(PoolEvent::WorkerExited {
                        worker,
                        cause,
                        exit: Box::new(exit.clone()),
                    });
                }
                self.last_exit.insert(worker, (exit, stderr_tail));
                self.core.exited(worker, now);
            }
        }
    }

    /// Carries out the core's actions (none of them blocks).
    fn perform(&mut self, shared: &Arc<Shared<Req, Resp>>) {
        let mut actions = std::mem::take(&mut self.spare_actions);
        loop {
            self.core.swap_actions(&mut actions);
            if actions.is_empty() {
                break;
            }
            self.dispatched.count(&actions);
            for action in actions.drain(..) {
                match action {
                    Action::Spawn {
                        worker,
                        replacement,
                    } => self.spawn(worker, replacement, shared),
                    Action::Dispatch { worker, task, req } => {
                        debug!(
                            worker,
                            pid = self.drivers.get(&worker).and_then(|d| d.pid),
                            task,
                            "task dispatched"
                        );
                        if let Some((_, permit)) = self.callers.get_mut(&task)
                            && let Some(permit) = permit.take()
                        {
                            // It left the queue: a waiting caller may enter.
                            self.deliveries.push(Delivery::Room(permit));
                        }
                        if let Some(d) = self.drivers.get(&worker) {
                            // Whether it had tasks in flight before this
                            // batch: an idle worker sent a burst (its first
                            // Ready, a replacement, a resize) gets it at once.
                            let pipelined = self
                                .dispatched
                                .pipelined(worker, self.core.in_flight_on(worker));
                            let _ = d.tx.send(DriverCmd::Dispatch {
                                task,
                                req,
                                pipelined,
                            });
                        }
                    }
                    Action::Cancel { worker, task } => {
                        debug!(worker, task, "telling the worker to abandon a task");
                        if let Some(d) = self.drivers.get(&worker) {
                            let _ = d.tx.send(DriverCmd::Cancel(task));
                        }
                    }
                    Action::Items { task, results } => self.items(task, results),
                    Action::ChunkEnd { task, failure } => self.chunk_end(task, failure),
                    Action::Drain { worker, reason } => {
                        if let Some(reason) = reason {
                            let pid = self.drivers.get(&worker).and_then(|d| d.pid);
                            info!(worker, pid, %reason, "recycling worker");
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
        self.spare_actions = actions;
        // Still starting and the breaker is open: `build` gives up.
        if self.started.is_some()
            && let Some(reason) = self.core.degraded()
        {
            let reason = reason.clone();
            if let Some(started) = self.started.take() {
                self.deliveries
                    .push(Delivery::Started(started, Err(reason)));
            }
        }
        if self.core.is_finished() && self.drivers.is_empty() {
            self.finish_shutdown();
        }
        // An exit is needed only while the outcomes it causes are delivered.
        self.last_exit.clear();
    }

    fn complete(&mut self, task: TaskId, outcome: Result<Resp, Failure>) {
        let label = match &outcome {
            Ok(_) => Outcome::Completed,
            Err(Failure::Cancelled) => Outcome::Cancelled,
            Err(f) => Outcome::Failed(FailureKind::of(f)),
        };
        if let Some(report) = &mut self.report {
            report.tasks.push(TaskOutcome {
                task,
                outcome: label,
            });
        }
        let Some((caller, permit)) = self.callers.remove(&task) else {
            return;
        };
        let outcome = outcome.map_err(|f| self.error(f));
        match caller {
            Caller::One(reply) => self
                .deliveries
                .push(Delivery::Reply(reply, outcome, permit)),
            Caller::Chunk(_) => unreachable!("a chunk ends with ChunkEnd"),
        }
    }

    /// Results of some of a chunk's items, for its batch.
    fn items(&mut self, task: TaskId, results: Vec<(u32, Result<Resp, TaskError>)>) {
        let Some((Caller::Chunk(to), permit)) = self.callers.get_mut(&task) else {
            return;
        };
        let results = results
            .into_iter()
            .map(|(i, r)| (i, r.map_err(PoolError::Task)))
            .collect();
        self.deliveries.push(Delivery::Chunk(
            to.clone(),
            ChunkMsg::Items(task, results),
            permit.take(),
        ));
    }

    /// A chunk's end, for its batch.
    fn chunk_end(&mut self, task: TaskId, failure: Option<Failure>) {
        let label = match &failure {
            None => Outcome::Completed,
            Some(Failure::Cancelled) => Outcome::Cancelled,
            Some(f) => Outcome::Failed(FailureKind::of(f)),
        };
        if let Some(report) = &mut self.report {
            report.tasks.push(TaskOutcome {
                task,
                outcome: label,
            });
        }
        let Some((caller, permit)) = self.callers.remove(&task) else {
            return;
        };
        let error = failure.map(|f| self.error(f));
        if let Caller::Chunk(to) = caller {
            self.deliveries
                .push(Delivery::Chunk(to, ChunkMsg::End(task, error), permit));
        }
    }

    /// The error a caller gets for a failure.
    fn error(&self, f: Failure) -> PoolError {
        match f {
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
            Failure::TimedOut { after } => PoolError::TimedOut { after },
            Failure::Cancelled => PoolError::Cancelled,
            Failure::ShuttingDown => PoolError::ShuttingDown,
            Failure::Task(m) => PoolError::Task(m),
            Failure::Protocol(why) => PoolError::Protocol(why.cause()),
            Failure::Unavailable(why) => PoolError::Unavailable(why.cause()),
            Failure::Unsendable(why) => PoolError::Unsendable(why.cause()),
        }
    }

    fn spawn(&mut self, worker: WorkerId, restart: bool, shared: &Arc<Shared<Req, Resp>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let launch = (self.command)();
        match start_worker::<Req, Resp>(launch, self.codec) {
            Ok((child, channel)) => {
                let pid = child.id();
                info!(worker, pid, restart, "worker spawned");
                if self.core.observe {
                    self.core.notes.push(PoolEvent::WorkerSpawned {
                        worker,
                        pid,
                        replacement: restart,
                    });
                }
                self.drivers.insert(
                    worker,
                    DriverHandle {
                        tx,
                        spawned_at: Instant::now(),
                        pid: Some(pid),
                        rss: None,
                        cpu: None,
                    },
                );
                tokio::spawn(drive(worker, child, channel, rx, shared.clone()));
            }
            Err(reason) => {
                warn!(worker, %reason, "worker could not be started");
                self.core
                    .spawn_failed(worker, reason, Instant::now().into_std());
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
            idle_workers: views
                .iter()
                .filter(|w| w.state == crate::stats::WorkerState::Idle)
                .count(),
            queue_wait: self.core.histograms.queue_wait.summary(),
            service_time: self.core.histograms.service.summary(),
            degraded: self.core.degraded().map(|why| error_chain(&*why.cause())),
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
        let state = self.report.take().unwrap_or_default();
        let report = ShutdownReport {
            tasks: state.tasks,
            workers: state.workers,
            stats: Some(self.stats()),
        };
        info!(tasks = report.tasks.len(), "pool shut down");
        for waiter in self.shutdown_waiters.drain(..) {
            self.deliveries
                .push(Delivery::Report(waiter, Box::new(report.clone())));
        }
        self.report = Some(ShutdownState::default());
    }

    /// Whether the timer task can end: shut down, nothing left, nobody to tell.
    fn done(&self) -> bool {
        self.core.is_finished()
            && self.drivers.is_empty()
            && (self.handles_gone || self.shutdown_waiters.is_empty())
    }
}

/// The timer task: fires the core's deadlines and samples workers' memory.
async fn tick<Req: Message + Clone + Sync, Resp: Message>(
    shared: Arc<Shared<Req, Resp>>,
    sample_every: Duration,
) {
    let mut sampler = tokio::time::interval(sample_every);
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.done() {
                return;
            }
            st.armed = st.core.next_deadline();
            st.armed
        };
        tokio::select! {
            () = forkyard_child::sleep_until(deadline) => {
                shared.with(|st| st.core.tick(Instant::now().into_std()));
            }
            () = shared.ticker.notified() => {}
            _ = sampler.tick() => {
                shared.with(|st| {
                    for d in st.drivers.values() {
                        let _ = d.tx.send(DriverCmd::Sample);
                    }
                });
            }
        }
    }
}

/// Starts one worker process with its channel.
fn start_worker<Req: Message, Resp: Message>(
    launch: Launch,
    codec: Codec,
) -> Result<(Child, WorkerChannel<Req, Resp>), Why> {
    let launch = launch
        .stdin(Input::Null)
        .stderr(Output::lines().max_line(4096));
    forkyard_ipc::spawn_with::<ToWorker<Req>, FromWorker<Resp>>(
        launch,
        forkyard_ipc::Config::new().codec(codec),
    )
    .map_err(Why::of)
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
async fn drive<Req: Message + Clone + Sync, Resp: Message>(
    worker: WorkerId,
    mut child: Child,
    channel: WorkerChannel<Req, Resp>,
    mut cmds: mpsc::UnboundedReceiver<DriverCmd<Req>>,
    shared: Arc<Shared<Req, Resp>>,
) {
    let (mut tx, rx) = channel.split();
    let reader = tokio::spawn(read(worker, rx, shared.clone()));
    // The last lines of stderr, for crash reports; read by a task of its own
    // because `wait` needs the `Child` mutably.
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
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
                Some(DriverCmd::Dispatch { task, req, pipelined }) => {
                    // Batch every dispatch already waiting into one write.
                    let mut result = feed(&mut tx, task, req, worker, &shared).await;
                    if pipelined {
                        // The worker is busy with others: let the tasks ready
                        // to run submit theirs first. A caller that dispatched
                        // wakes this driver into the runtime's next-task slot,
                        // ahead of the other callers its worker's answers
                        // woke; without the yield the write carries only what
                        // was dispatched before the driver ran, and there are
                        // many more writes, each a system call. (The figures:
                        // README, "What made the pool faster".) A worker with
                        // nothing in flight before this batch of dispatches,
                        // sent one task or a burst, gets it at once.
                        tokio::task::yield_now().await;
                    }
                    let mut deferred = Vec::new();
                    while result.is_ok() {
                        match cmds.try_recv() {
                            Ok(DriverCmd::Dispatch { task, req, .. }) => {
                                result = feed(&mut tx, task, req, worker, &shared).await
                            }
                            Ok(other) => deferred.push(other),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = result.and(tx.flush().await) {
                        // The worker is gone or wedged; its exit (or the kill) follows.
                        debug!(worker, error = %e, "cannot send to worker");
                        let _ = child.start_kill(Reason::Kill);
                    }
                    for other in deferred {
                        handle_other(other, &mut child, &mut tx, worker, &shared).await;
                    }
                }
                Some(other) => handle_other(other, &mut child, &mut tx, worker, &shared).await,
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
            // Reaping failed (it should not): kill, and report a crash without
            // an exit is impossible, so say what happened and stop tracking it.
            warn!(worker, error = %e, "waiting for worker failed");
            let _ = child.start_kill(Reason::Kill);
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
    shared.with(|st| {
        st.event(Event::Exited {
            worker,
            exit,
            stderr_tail,
        })
    });
}

/// Queues one task or chunk for the worker. A request that cannot be sent
/// (too large for a frame, or not encodable) fails alone, with
/// `Unsendable`: the stream to the worker is still in step.
async fn feed<Req: Message + Clone + Sync, Resp: Message>(
    tx: &mut forkyard_ipc::Sender<ToWorker<Req>>,
    task: TaskId,
    req: Payload<Req>,
    worker: WorkerId,
    shared: &Arc<Shared<Req, Resp>>,
) -> Result<(), forkyard_ipc::Error> {
    let msg = match req {
        Payload::One(req) => ToWorker::Task { id: task, req },
        Payload::Chunk(items) => ToWorker::Chunk { id: task, items },
    };
    match tx.feed(&msg).await {
        Err(e @ (forkyard_ipc::Error::FrameTooLarge { .. } | forkyard_ipc::Error::Encode(_))) => {
            let why = Why::of(e);
            shared.with(|st| st.event(Event::Unsendable { worker, task, why }));
            Ok(())
        }
        other => other,
    }
}

async fn handle_other<Req: Message + Clone + Sync, Resp: Message>(
    cmd: DriverCmd<Req>,
    child: &mut Child,
    tx: &mut forkyard_ipc::Sender<ToWorker<Req>>,
    worker: WorkerId,
    shared: &Arc<Shared<Req, Resp>>,
) {
    match cmd {
        DriverCmd::Dispatch { task, req, .. } => {
            if feed(tx, task, req, worker, shared).await.is_err() || tx.flush().await.is_err() {
                let _ = child.start_kill(Reason::Kill);
            }
        }
        DriverCmd::Cancel(task) => {
            if tx.send(&ToWorker::Cancel { id: task }).await.is_err() {
                let _ = child.start_kill(Reason::Kill);
            }
        }
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
                KillReason::DrainTimeout | KillReason::Resize => Reason::Recycle,
                KillReason::CancelGrace => Reason::Timeout,
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
                let (rss, cpu) = (s.rss_bytes, s.user_cpu + s.system_cpu);
                shared.with(|st| st.event(Event::Sample { worker, rss, cpu }));
            }
        }
    }
}

/// One worker's reader: feeds its messages to the core as they arrive, a
/// burst that one read brought in under one lock.
async fn read<Req: Message + Clone + Sync, Resp: Message>(
    worker: WorkerId,
    mut rx: forkyard_ipc::Receiver<FromWorker<Resp>>,
    shared: Arc<Shared<Req, Resp>>,
) {
    let mut batch = Vec::new();
    loop {
        let mut next = Some(rx.recv().await);
        let mut last = false;
        while let Some(msg) = next.take() {
            let event = match msg {
                Ok(Some(FromWorker::Ready)) => Event::Ready { worker },
                Ok(Some(FromWorker::Done { id, result })) => Event::Done {
                    worker,
                    task: id,
                    result,
                },
                Ok(Some(FromWorker::Items { id, results })) => Event::Items {
                    worker,
                    task: id,
                    results,
                },
                Ok(Some(FromWorker::Cancelled { id })) => Event::Cancelled { worker, task: id },
                Ok(None) => {
                    last = true;
                    break;
                }
                // A worker that died mid-frame is a crash: its exit tells.
                Err(e) if is_peer_gone(&e) => {
                    last = true;
                    break;
                }
                Err(e) => {
                    last = true;
                    batch.push(Event::Protocol {
                        worker,
                        message: Why::of(e),
                    });
                    break;
                }
            };
            batch.push(event);
            next = rx.recv_buffered().map(|msg| msg.map(Some));
        }
        if !batch.is_empty() {
            shared.with(|st| {
                for event in batch.drain(..) {
                    st.event(event);
                }
            });
        }
        if last {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one_worker() -> Rules {
        Rules {
            workers: 1,
            max_in_flight: 8,
            queue_capacity: 16,
            task_timeout: None,
            retries: 0,
            recycle_after_tasks: None,
            recycle_above_rss: None,
            recycle_after_age: None,
            start_timeout: Duration::from_secs(2),
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)),
            breaker: BreakerConfig::new(3, Duration::from_secs(10)),
            cancel_grace: Duration::from_secs(1),
            autoscale: None,
        }
    }

    /// Whether each dispatch in the core's next batch of actions would be
    /// sent as pipelined, as `perform` decides it.
    fn next_batch(core: &mut Core<u32, u32>, dispatched: &mut Dispatched) -> Vec<bool> {
        let actions = core.take_actions();
        dispatched.count(&actions);
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch { worker, .. } => {
                    Some(dispatched.pipelined(*worker, core.in_flight_on(*worker)))
                }
                _ => None,
            })
            .collect()
    }

    /// An idle worker sent a burst gets it at once (its driver does not yield
    /// before the first write); a worker with tasks in flight is pipelined,
    /// even for a lone task.
    #[test]
    fn a_burst_to_an_idle_worker_is_not_pipelined() {
        let now = std::time::Instant::now();
        let mut core = Core::<u32, u32>::new(one_worker(), 7, now);
        let mut dispatched = Dispatched::default();
        let worker = match core.take_actions().as_slice() {
            [Action::Spawn { worker, .. }] => *worker,
            other => panic!("expected one spawn, got {}", other.len()),
        };
        // Three tasks queued before the worker is ready: its first Ready
        // dispatches them in one batch.
        for id in 0..3 {
            core.submit(id, id as u32, now).unwrap();
        }
        assert!(next_batch(&mut core, &mut dispatched).is_empty());
        core.ready(worker, now);
        assert_eq!(next_batch(&mut core, &mut dispatched), [false; 3]);
        // One more while those three are in flight.
        core.submit(3, 3, now).unwrap();
        assert_eq!(next_batch(&mut core, &mut dispatched), [true]);
    }
}
