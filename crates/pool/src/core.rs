//! The pool's decisions, as a pure state machine.
//!
//! Everything the pool decides (which worker gets which task, what happens to
//! the tasks of a worker that died, when to spawn, recycle, drain or kill) is
//! made here, with no I/O and no clock of its own: the async shell in
//! `pool.rs` feeds events in (a task submitted, a reply, a worker ready or
//! exited, time passing) with the current time, and carries out the
//! [`Action`]s that come out. That is what lets the property test in this
//! file run thousands of random schedules of submissions, cancellations,
//! crashes, hangs and recycles in milliseconds and check the one law that
//! matters: every task gets exactly one outcome, and the counts add up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use forkyard_supervise::{Backoff, BackoffState, BreakerConfig, BreakerState, CircuitBreaker};

use crate::error::{TaskError, Why};
use crate::events::{ExitCause, Outcome, PoolEvent};
use crate::stats::{Counters, FailureKind, Histograms, WorkerState};

pub(crate) type TaskId = u64;
pub(crate) type WorkerId = u64;
/// A place for one worker in the pool's size: its replacements take the same
/// slot, and each slot keeps its own restart backoff.
pub(crate) type SlotId = u64;

/// A worker that completed a task or stayed up this long is replaced at once
/// when it dies; one that dies sooner, having done nothing, is in a crash loop
/// and its slot backs off.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(1);

/// Failed starts in a row in one slot from which each further one also
/// counts against the pool-wide circuit breaker (a single start killed from
/// outside, say by the OOM killer, does not).
pub(crate) const BREAKER_STREAK: u32 = 2;

/// The rules the core applies; built by the pool's builder.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) workers: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) recycle_after_tasks: Option<u64>,
    pub(crate) recycle_above_rss: Option<u64>,
    pub(crate) recycle_after_age: Option<Duration>,
    pub(crate) start_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) breaker: BreakerConfig,
    /// How long a worker told to abandon a task has before it is killed.
    pub(crate) cancel_grace: Duration,
    /// Grow and shrink between bounds with the load, if set.
    pub(crate) autoscale: Option<Autoscale>,
}

/// Autoscaling, for [`Builder::autoscale`](crate::Builder::autoscale): the
/// pool starts with `min` workers, grows by one when the oldest queued task
/// has waited `scale_up_after` (once that worker is up, again if tasks still
/// wait), and shrinks by one, draining, when a worker has been idle for
/// `idle_timeout`; the autoscaler never takes it outside `min..=max`. Each change is a
/// [`PoolEvent::Resized`].
///
/// ```
/// # use std::time::Duration;
/// use forkyard_pool::Autoscale;
/// let scale = Autoscale {
///     idle_timeout: Duration::from_secs(60),
///     ..Autoscale::new(1, 8)
/// };
/// assert_eq!(scale.scale_up_after, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    /// The fewest workers (at least 1); the pool starts with these.
    pub min: usize,
    /// The most workers.
    pub max: usize,
    /// How long the oldest queued task waits before the pool grows by one.
    pub scale_up_after: Duration,
    /// How long a worker stays idle before the pool shrinks by one (it is
    /// drained: it takes nothing new and exits; it is never killed).
    pub idle_timeout: Duration,
}

impl Autoscale {
    /// Between `min` and `max` workers, growing after 100 ms of queue wait
    /// and shrinking after 10 s idle.
    pub fn new(min: usize, max: usize) -> Autoscale {
        Autoscale {
            min,
            max,
            scale_up_after: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What a task carries: one request, or a chunk of a batch's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload<Req> {
    One(Req),
    Chunk(Vec<Req>),
}

/// A task's own settings (from `CallOptions`; `None` takes the pool's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TaskRules {
    /// Re-runs after its worker died.
    pub(crate) retries: Option<u32>,
    /// Longest run per dispatch (per item for a chunk).
    pub(crate) timeout: Option<Duration>,
    /// When it must have its outcome, queued or running.
    pub(crate) deadline: Option<Instant>,
}

/// Why the core wants a worker gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// A task on it ran past its deadline.
    Timeout,
    /// It never said it was ready.
    StartTimeout,
    /// It broke the protocol (garbage, unknown task id).
    Protocol,
    /// Shutdown's grace period ran out.
    Shutdown,
    /// It was draining for longer than the grace period.
    DrainTimeout,
    /// A task on it was cancelled and did not stop within the cancel grace.
    CancelGrace,
    /// A resize removed its slot while it was starting.
    Resize,
}

/// Why a worker is being retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecycleReason {
    /// It completed its quota of tasks.
    Tasks,
    /// Its resident memory went above the limit.
    Memory,
    /// It reached its maximum age.
    Age,
    /// An operator asked for it ([`Pool::recycle`](crate::Pool::recycle)).
    Operator,
}

impl std::fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecycleReason::Tasks => "task quota",
            RecycleReason::Memory => "memory limit",
            RecycleReason::Age => "maximum age",
            RecycleReason::Operator => "operator's request",
        })
    }
}

/// How a task failed, before the shell adds what it knows (the worker's exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Its worker died with it; the shell attaches the exit.
    Crashed {
        worker: WorkerId,
    },
    TimedOut {
        after: Duration,
    },
    Cancelled,
    ShuttingDown,
    Task(TaskError),
    Protocol(Why),
    Unavailable(Why),
    /// Its request could not be sent (too large for a frame, or not encodable).
    Unsendable(Why),
}

/// What the shell must do.
#[derive(Debug)]
pub(crate) enum Action<Req, Resp> {
    /// Start a worker process with this id.
    Spawn {
        worker: WorkerId,
        /// Whether it replaces another in its slot.
        replacement: bool,
    },
    /// Send a task (or a chunk) to a ready worker.
    Dispatch {
        worker: WorkerId,
        task: TaskId,
        req: Payload<Req>,
    },
    /// Tell a worker to abandon a task.
    Cancel { worker: WorkerId, task: TaskId },
    /// Results of some of a chunk's items, by their index in the whole chunk.
    Items {
        task: TaskId,
        results: Vec<(u32, Result<Resp, TaskError>)>,
    },
    /// A chunk's end: every item answered (`None`), or the failure of every
    /// item not answered.
    ChunkEnd {
        task: TaskId,
        failure: Option<Failure>,
    },
    /// Ask a worker to finish what it has and exit.
    Drain {
        worker: WorkerId,
        reason: Option<RecycleReason>,
    },
    /// End a worker now (SIGKILL to its group).
    Kill {
        worker: WorkerId,
        reason: KillReason,
    },
    /// End a worker politely: stop signal, grace, SIGKILL (shutdown).
    Stop { worker: WorkerId },
    /// Deliver a task's one and only outcome.
    Complete {
        task: TaskId,
        outcome: Result<Resp, Failure>,
    },
}

/// How to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Stop intake, run the queued tasks too, wait up to `grace` for all of them.
    Drain {
        /// How long queued and running tasks get before workers are stopped.
        grace: Duration,
    },
    /// Stop intake, fail the queued tasks with `ShuttingDown`, wait up to
    /// `grace` for the running ones.
    Cancel {
        /// How long running tasks get before workers are stopped.
        grace: Duration,
    },
}

impl ShutdownMode {
    fn grace(self) -> Duration {
        match self {
            ShutdownMode::Drain { grace } | ShutdownMode::Cancel { grace } => grace,
        }
    }
}

/// Why a submission was refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    QueueFull,
    ShuttingDown,
    Unavailable(Why),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Spawned; waiting for its `Ready`.
    Starting { since: Instant },
    /// Taking tasks.
    Ready,
    /// Due for recycling: still taking tasks until a replacement is ready.
    Retiring(RecycleReason),
    /// Told to drain: no new tasks; exits when its in-flight tasks are done.
    Draining { since: Instant },
    /// Being killed or stopped; waiting for its exit.
    Ending { reason: Option<KillReason> },
}

#[derive(Debug)]
struct Worker {
    /// Its slot; `None` once the slot was removed by a resize.
    slot: Option<SlotId>,
    phase: Phase,
    in_flight: BTreeSet<TaskId>,
    completed: u64,
    ready_at: Option<Instant>,
    /// Tasks that were in flight when we killed it for someone else's sake:
    /// re-queued at its exit without charging an attempt.
    collateral: BTreeSet<TaskId>,
    /// Since when it has had nothing in flight (kept when autoscaling only).
    idle_since: Option<Instant>,
}

/// One slot of the pool's size.
#[derive(Debug)]
struct Slot {
    backoff: BackoffState,
    /// No spawn for this slot before this (backoff after a failure).
    spawn_after: Option<Instant>,
    /// Failed starts in a row.
    start_streak: u32,
    /// Whether a worker was ever started in it (the next one is a restart).
    used: bool,
}

#[derive(Debug)]
struct Task<Req> {
    req: Payload<Req>,
    /// A chunk's items of the current (or next) dispatch, by position: their
    /// index in the whole chunk, and whether they were answered.
    sent: Vec<(u32, bool)>,
    /// A chunk's items not answered yet.
    unanswered: usize,
    rules: TaskRules,
    /// Its worker was told to abandon it.
    cancel_sent: bool,
    /// When the worker told to abandon it gets killed if it has not.
    cancel_by: Option<Instant>,
    /// Its entry in the alarm index, if any.
    alarm: Option<Instant>,
    /// How many times it was dispatched.
    attempts: u32,
    /// Runs that were cut short through no fault of the task (its worker was
    /// killed for another task's timeout): they do not count against retries.
    forgiven: u32,
    enqueued_at: Instant,
    /// When it was first submitted (for end-to-end times).
    submitted_at: Instant,
    running: Option<Running>,
    /// The caller stopped waiting; the outcome is counted as cancelled.
    abandoned: bool,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    worker: WorkerId,
    dispatched_at: Instant,
    /// The run deadline (dispatch time plus `timeout`).
    deadline: Option<Instant>,
    /// The run time it is allowed.
    timeout: Duration,
}

#[derive(Debug)]
struct Shutdown {
    deadline: Instant,
    stopping: bool,
}

/// A worker's figures for the statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerView {
    pub(crate) id: WorkerId,
    pub(crate) state: WorkerState,
    pub(crate) in_flight: usize,
    pub(crate) completed: u64,
}

/// The pool's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Core<Req, Resp> {
    rules: Rules,
    queue: VecDeque<TaskId>,
    tasks: FxHashMap<TaskId, Task<Req>>,
    workers: BTreeMap<WorkerId, Worker>,
    next_worker: WorkerId,
    slots: BTreeMap<SlotId, Slot>,
    next_slot: SlotId,
    /// Seeds each slot's backoff jitter.
    seed: u64,
    breaker: CircuitBreaker,
    /// An operator opened the breaker: no worker starts until it is closed.
    held: bool,
    /// Queued tasks that were never dispatched (what the capacity limits).
    fresh_queued: usize,
    /// Alarms of tasks (run deadlines, end-to-end deadlines, cancel graces),
    /// soonest first (an index over `tasks`).
    deadlines: BTreeSet<(Instant, TaskId)>,
    degraded: Option<Why>,
    shutdown: Option<Shutdown>,
    pub(crate) counters: Counters,
    pub(crate) histograms: Histograms,
    actions: Vec<Action<Req, Resp>>,
    /// Whether anyone subscribed to the event stream: `notes` is filled only then.
    pub(crate) observe: bool,
    /// Task and recycling events for subscribers, in decision order.
    pub(crate) notes: Vec<PoolEvent>,
}

impl<Req: Clone, Resp> Core<Req, Resp> {
    pub(crate) fn new(rules: Rules, seed: u64, now: Instant) -> Self {
        let mut core = Core {
            slots: BTreeMap::new(),
            next_slot: 1,
            seed,
            breaker: CircuitBreaker::new(rules.breaker),
            held: false,
            rules,
            queue: VecDeque::new(),
            tasks: FxHashMap::default(),
            workers: BTreeMap::new(),
            next_worker: 1,
            fresh_queued: 0,
            deadlines: BTreeSet::new(),
            degraded: None,
            shutdown: None,
            counters: Counters::default(),
            histograms: Histograms::default(),
            actions: Vec::new(),
            observe: false,
            notes: Vec::new(),
        };
        for _ in 0..core.rules.workers {
            core.add_slot();
        }
        core.settle(now);
        core
    }

    fn add_slot(&mut self) -> SlotId {
        let id = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(
            id,
            Slot {
                backoff: BackoffState::new(
                    self.rules.backoff,
                    self.seed
                        .wrapping_add(id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                ),
                spawn_after: None,
                start_streak: 0,
                used: false,
            },
        );
        id
    }

    /// The actions decided since the last call, in order.
    #[cfg(test)]
    pub(crate) fn take_actions(&mut self) -> Vec<Action<Req, Resp>> {
        std::mem::take(&mut self.actions)
    }

    /// Moves the pending actions into `into` (which must be empty) and keeps
    /// its allocation for the next ones: no allocation per event.
    pub(crate) fn swap_actions(&mut self, into: &mut Vec<Action<Req, Resp>>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.actions, into);
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn running_len(&self) -> usize {
        self.tasks.len() - self.queue.len()
    }

    pub(crate) fn degraded(&self) -> Option<&Why> {
        self.degraded.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Shut down and nothing left: no task, no worker.
    pub(crate) fn is_finished(&self) -> bool {
        self.shutdown.is_some() && self.tasks.is_empty() && self.workers.is_empty()
    }

    pub(crate) fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(&id, w)| WorkerView {
                id,
                state: match w.phase {
                    Phase::Starting { .. } => WorkerState::Starting,
                    Phase::Ready if w.in_flight.is_empty() => WorkerState::Idle,
                    Phase::Ready => WorkerState::Busy,
                    Phase::Retiring(_) => WorkerState::Retiring,
                    Phase::Draining { .. } => WorkerState::Draining,
                    Phase::Ending { .. } => WorkerState::Ending,
                },
                in_flight: w.in_flight.len(),
                completed: w.completed,
            })
            .collect()
    }

    /// The earliest time at which [`tick`](Core::tick) has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(&(d, _)) = self.deadlines.first() {
            consider(d);
        }
        for w in self.workers.values() {
            match w.phase {
                Phase::Starting { since } => consider(since + self.rules.start_timeout),
                Phase::Ready => {
                    if let (Some(age), Some(ready)) = (self.rules.recycle_after_age, w.ready_at) {
                        consider(ready + age);
                    }
                }
                Phase::Draining { since } => consider(since + self.drain_grace()),
                _ => {}
            }
        }
        if self.deficit() > 0 {
            for slot in self.empty_slots() {
                if let Some(t) = self.slots[&slot].spawn_after {
                    consider(t);
                }
            }
            if let BreakerState::Open { until } = self.breaker.state() {
                consider(until);
            }
        }
        if let Some(s) = &self.shutdown
            && !s.stopping
        {
            consider(s.deadline);
        }
        if self.rules.autoscale.is_some() {
            if let Some(t) = self.grow_at() {
                consider(t);
            }
            if let Some((t, _)) = self.shrink_candidate() {
                consider(t);
            }
        }
        next
    }

    /// How long a draining worker may take before it is killed.
    fn drain_grace(&self) -> Duration {
        self.rules
            .task_timeout
            .unwrap_or(Duration::from_secs(60))
            .max(self.rules.start_timeout)
    }

    // ---- events ---------------------------------------------------------

    /// A new task with a fresh id chosen by the caller. `Ok(id)`, or refused at once.
    #[cfg(test)]
    pub(crate) fn submit(&mut self, id: TaskId, req: Req, now: Instant) -> Result<TaskId, Refused> {
        self.submit_with(id, Payload::One(req), TaskRules::default(), now)
    }

    /// A new task (or chunk) with its own rules; `Ok(id)`, or refused at once.
    pub(crate) fn submit_with(
        &mut self,
        id: TaskId,
        req: Payload<Req>,
        rules: TaskRules,
        now: Instant,
    ) -> Result<TaskId, Refused> {
        if self.shutdown.is_some() {
            return Err(Refused::ShuttingDown);
        }
        // Capacity counts fresh submissions only: a task re-queued for a retry
        // already had its place and must not take a newcomer's.
        if self.fresh_queued >= self.rules.queue_capacity {
            return Err(Refused::QueueFull);
        }
        if let Some(reason) = self.unavailable() {
            return Err(Refused::Unavailable(reason));
        }
        debug_assert!(!self.tasks.contains_key(&id), "task id {id} reused");
        let (sent, items) = match &req {
            Payload::One(_) => (Vec::new(), 1),
            Payload::Chunk(items) => (
                (0..items.len() as u32).map(|i| (i, false)).collect(),
                items.len(),
            ),
        };
        self.tasks.insert(
            id,
            Task {
                req,
                sent,
                unanswered: items,
                rules,
                cancel_sent: false,
                cancel_by: None,
                alarm: None,
                attempts: 0,
                forgiven: 0,
                enqueued_at: now,
                submitted_at: now,
                running: None,
                abandoned: false,
            },
        );
        if self.observe {
            self.notes.push(PoolEvent::Submitted { task: id });
        }
        self.queue.push_back(id);
        self.fresh_queued += 1;
        self.counters.submitted += items as u64;
        self.rearm(id);
        if items == 0 {
            // An empty chunk has nothing to wait for.
            self.queue.retain(|&q| q != id);
            self.finish(id, Ok(None), now);
        }
        self.settle(now);
        Ok(id)
    }

    /// Puts `task`'s alarm in the index: its end-to-end deadline, and while it
    /// runs its run deadline and cancel grace, whichever comes first.
    fn rearm(&mut self, task: TaskId) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        let mut alarm = t.rules.deadline;
        if let Some(r) = t.running {
            for a in [r.deadline, t.cancel_by].into_iter().flatten() {
                alarm = Some(alarm.map_or(a, |b| b.min(a)));
            }
        }
        if alarm != t.alarm {
            if let Some(old) = t.alarm {
                self.deadlines.remove(&(old, task));
            }
            if let Some(new) = alarm {
                self.deadlines.insert((new, task));
            }
            t.alarm = alarm;
        }
    }

    /// The caller stopped waiting for `task`.
    ///
    /// A running task's worker is told to abandon it. `hard` (an explicit
    /// cancel): a worker that has not within the cancel grace is killed.
    /// Not hard (the caller only stopped waiting): a handler that cannot be
    /// stopped runs to its end, as it would have.
    pub(crate) fn cancel(&mut self, task: TaskId, hard: bool, now: Instant) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if let Some(r) = t.running {
            // Its outcome is `Cancelled` whatever comes back.
            t.abandoned = true;
            if !t.cancel_sent {
                t.cancel_sent = true;
                self.actions.push(Action::Cancel {
                    worker: r.worker,
                    task,
                });
            }
            if hard && t.cancel_by.is_none() {
                t.cancel_by = Some(now + self.rules.cancel_grace);
                self.rearm(task);
            }
        } else {
            self.queue.retain(|&q| q != task);
            self.finish(task, Err(Failure::Cancelled), now);
        }
        self.settle(now);
    }

    /// A worker could not be started at all.
    pub(crate) fn spawn_failed(&mut self, worker: WorkerId, reason: Why, now: Instant) {
        if let Some(w) = self.workers.remove(&worker) {
            self.start_failure(w.slot, reason, now);
        }
        self.settle(now);
    }

    /// A worker said it is ready.
    pub(crate) fn ready(&mut self, worker: WorkerId, now: Instant) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if !matches!(w.phase, Phase::Starting { .. }) {
            return;
        }
        w.phase = Phase::Ready;
        w.ready_at = Some(now);
        if let Some(slot) = w.slot.and_then(|s| self.slots.get_mut(&s)) {
            slot.start_streak = 0;
            slot.backoff.up(now);
        }
        let was_closed = self.breaker.state() == BreakerState::Closed;
        self.breaker.record_success(now);
        if !was_closed && self.breaker.state() == BreakerState::Closed && self.observe {
            self.notes
                .push(PoolEvent::BreakerClosed { operator: false });
        }
        if !self.held {
            self.degraded = None;
        }
        // A worker due for recycling gives way to this one.
        let retiring = self
            .workers
            .iter()
            .find(|(_, w)| matches!(w.phase, Phase::Retiring(_)))
            .map(|(&id, _)| id);
        if let Some(old) = retiring {
            self.drain(old, now);
        }
        self.settle(now);
    }

    /// A worker answered a task.
    pub(crate) fn reply(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        result: Result<Resp, TaskError>,
        now: Instant,
    ) {
        let known = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.in_flight.contains(&task))
            && self
                .tasks
                .get(&task)
                .is_some_and(|t| matches!(t.req, Payload::One(_)));
        if !known {
            self.protocol_error(
                worker,
                Why::new(format!("reply for task {task}, which it was not running")),
                now,
            );
            return;
        }
        self.answered(worker, task, result.map(Some).map_err(Failure::Task), now);
    }

    /// A task or chunk on `worker` got its last answer.
    fn answered(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        outcome: Result<Option<Resp>, Failure>,
        now: Instant,
    ) {
        let w = self
            .workers
            .get_mut(&worker)
            .expect("checked by the caller");
        w.in_flight.remove(&task);
        w.completed += 1;
        let quota_reached = self
            .rules
            .recycle_after_tasks
            .is_some_and(|n| w.completed >= n);
        if let Some(running) = self.tasks.get(&task).and_then(|t| t.running) {
            self.histograms
                .service
                .record(now.saturating_duration_since(running.dispatched_at));
        }
        self.finish(task, outcome, now);
        if quota_reached {
            self.retire(worker, RecycleReason::Tasks);
        }
        self.settle(now);
    }

    /// A worker answered some of a chunk's items (`results` by their position
    /// in what it was sent).
    pub(crate) fn items(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        mut results: Vec<(u32, Result<Resp, TaskError>)>,
        now: Instant,
    ) {
        let on_worker = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.in_flight.contains(&task));
        let problem = match self.tasks.get_mut(&task) {
            Some(t) if on_worker && matches!(t.req, Payload::Chunk(_)) => {
                // Check every position before taking any, so a bad answer
                // changes nothing.
                let mut bad = None;
                for (pos, _) in &results {
                    match t.sent.get(*pos as usize) {
                        Some((_, false)) => {}
                        Some((_, true)) => {
                            bad = Some(format!("item {pos} of chunk {task} answered twice"))
                        }
                        None => {
                            bad = Some(format!(
                                "item {pos} of chunk {task}, which has {} items",
                                t.sent.len()
                            ))
                        }
                    }
                    if bad.is_none() {
                        t.sent[*pos as usize].1 = true;
                    }
                }
                // (On a bad answer the worker is killed and the chunk fails
                // with `Protocol`: the marks no longer matter.)
                bad
            }
            _ => Some(format!("items for chunk {task}, which it was not running")),
        };
        if let Some(problem) = problem {
            self.protocol_error(worker, Why::new(problem), now);
            return;
        }
        let t = self.tasks.get_mut(&task).expect("checked above");
        let (mut ok, mut failed) = (0u64, 0u64);
        for (pos, result) in &mut results {
            *pos = t.sent[*pos as usize].0;
            if result.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        t.unanswered -= results.len();
        let last = t.unanswered == 0;
        self.counters.completed += ok;
        if failed > 0 {
            *self.counters.failed.entry(FailureKind::Task).or_default() += failed;
        }
        self.actions.push(Action::Items { task, results });
        if last {
            self.answered(worker, task, Ok(None), now);
        }
    }

    /// A worker says it abandoned `task`, as it was told to.
    pub(crate) fn cancelled(&mut self, worker: WorkerId, task: TaskId, now: Instant) {
        let told = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.in_flight.contains(&task))
            && self.tasks.get(&task).is_some_and(|t| t.cancel_sent);
        if !told {
            self.protocol_error(
                worker,
                Why::new(format!(
                    "`Cancelled` for task {task}, which it was not told to cancel"
                )),
                now,
            );
            return;
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.in_flight.remove(&task);
        }
        self.finish(task, Err(Failure::Cancelled), now);
        self.settle(now);
    }

    /// The request of `task` could not be sent to `worker` (too large for a
    /// frame, or not encodable); the worker never saw it.
    pub(crate) fn unsendable(&mut self, worker: WorkerId, task: TaskId, why: Why, now: Instant) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if !w.in_flight.remove(&task) {
            return;
        }
        self.finish(task, Err(Failure::Unsendable(why)), now);
        self.settle(now);
    }

    /// A worker sent something it must not (garbage, wrong version, unknown task).
    pub(crate) fn protocol_error(&mut self, worker: WorkerId, message: Why, now: Instant) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if matches!(w.phase, Phase::Ending { .. }) {
            return;
        }
        let affected: Vec<TaskId> = std::mem::take(&mut w.in_flight).into_iter().collect();
        let starting = matches!(w.phase, Phase::Starting { .. });
        w.phase = Phase::Ending {
            reason: Some(KillReason::Protocol),
        };
        self.counters.protocol_errors += 1;
        if starting {
            // A worker that cannot even say hello counts as one that cannot start.
            let slot = w.slot;
            self.start_failure(
                slot,
                Why::because(
                    format!("worker {worker} broke the protocol at start"),
                    &message,
                ),
                now,
            );
        }
        self.actions.push(Action::Kill {
            worker,
            reason: KillReason::Protocol,
        });
        for task in affected {
            self.finish(task, Err(Failure::Protocol(message.clone())), now);
        }
        self.settle(now);
    }

    /// How many tasks `worker` has in flight (0 for a worker the core does not know).
    pub(crate) fn in_flight_on(&self, worker: WorkerId) -> usize {
        self.workers.get(&worker).map_or(0, |w| w.in_flight.len())
    }

    /// Whether `worker` is spawned and not yet ready.
    pub(crate) fn is_starting(&self, worker: WorkerId) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|w| matches!(w.phase, Phase::Starting { .. }))
    }

    /// How the exit of `worker` will be classified by [`exited`](Core::exited)
    /// if it comes now (`None` for a worker the core does not know).
    pub(crate) fn exit_cause(&self, worker: WorkerId) -> Option<ExitCause> {
        let w = self.workers.get(&worker)?;
        Some(match w.phase {
            Phase::Starting { .. }
            | Phase::Ending {
                reason: Some(KillReason::StartTimeout),
            } => ExitCause::StartFailed,
            Phase::Ending {
                reason: Some(KillReason::Timeout | KillReason::CancelGrace),
            } => ExitCause::TimedOut,
            Phase::Ending {
                reason: Some(KillReason::Protocol),
            } => ExitCause::Protocol,
            Phase::Ending {
                reason: Some(KillReason::DrainTimeout | KillReason::Resize),
            } => ExitCause::Drained,
            Phase::Ending { .. } => ExitCause::Shutdown,
            Phase::Draining { .. } if w.in_flight.is_empty() => ExitCause::Drained,
            Phase::Ready | Phase::Retiring(_) | Phase::Draining { .. } => ExitCause::Crashed,
        })
    }

    /// A worker's process has exited (and been reaped).
    pub(crate) fn exited(&mut self, worker: WorkerId, now: Instant) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        let in_flight: Vec<TaskId> = w.in_flight.iter().copied().collect();
        let collateral = w.collateral;
        match w.phase {
            Phase::Starting { .. } => {
                self.start_failure(
                    w.slot,
                    Why::new(format!("worker {worker} exited before it was ready")),
                    now,
                );
            }
            Phase::Ending {
                reason: Some(KillReason::StartTimeout),
            } => {
                self.start_failure(
                    w.slot,
                    Why::new(format!(
                        "worker {worker} was not ready within {:?}",
                        self.rules.start_timeout
                    )),
                    now,
                );
            }
            // Killed for a reason that is not a crash, or retired: no backoff.
            Phase::Ending { .. } => {}
            Phase::Draining { .. } if in_flight.is_empty() => {}
            Phase::Ready | Phase::Retiring(_) | Phase::Draining { .. } => {
                // An unexpected death. A worker that served (a task done, or
                // up a while) is replaced at once; one that died at once with
                // nothing done is in a crash loop, and its slot backs off.
                self.counters.crashes += 1;
                let served = w.completed > 0
                    || w.ready_at
                        .is_some_and(|r| now.saturating_duration_since(r) >= STABLE_AFTER);
                if let Some(slot) = w.slot.and_then(|s| self.slots.get_mut(&s)) {
                    if served {
                        slot.backoff.reset();
                        slot.spawn_after = None;
                    } else {
                        let delay = slot.backoff.failed(now);
                        slot.spawn_after = Some(now + delay);
                    }
                }
            }
        }
        for task in in_flight {
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            t.running = None;
            // Only its unanswered items run again.
            t.sent.retain(|&(_, answered)| !answered);
            self.rearm(task);
            let t = self.tasks.get_mut(&task).expect("present above");
            let shutting_down = self.shutdown.as_ref().is_some_and(|s| s.stopping);
            if shutting_down {
                self.finish(task, Err(Failure::ShuttingDown), now);
            } else if t.abandoned {
                // Nobody waits for it any more: do not run it again.
                self.finish(task, Err(Failure::Cancelled), now);
            } else if collateral.contains(&task)
                || t.attempts - t.forgiven <= t.rules.retries.unwrap_or(self.rules.retries)
            {
                if !collateral.contains(&task) {
                    self.counters.retried += 1;
                    if self.observe {
                        self.notes.push(PoolEvent::Retried {
                            task,
                            worker,
                            attempt: t.attempts,
                        });
                    }
                } else {
                    // Not its fault: this attempt does not count.
                    t.forgiven += 1;
                }
                t.enqueued_at = now;
                self.queue.push_front(task);
            } else {
                self.finish(task, Err(Failure::Crashed { worker }), now);
            }
        }
        self.settle(now);
    }

    /// A sample of a worker's resident memory.
    pub(crate) fn rss(&mut self, worker: WorkerId, bytes: u64, now: Instant) {
        if self
            .rules
            .recycle_above_rss
            .is_some_and(|limit| bytes > limit)
            && self
                .workers
                .get(&worker)
                .is_some_and(|w| w.phase == Phase::Ready)
        {
            self.retire(worker, RecycleReason::Memory);
            self.settle(now);
        }
    }

    /// Time passed: deadlines, start timeouts, age limits, scheduled spawns.
    pub(crate) fn tick(&mut self, now: Instant) {
        // Alarms: a running task past its deadline fails and its worker is
        // killed; one cancelled whose worker did not stop within the grace
        // ends cancelled, and the worker is killed; a queued task past its
        // end-to-end deadline fails without running.
        let due: Vec<TaskId> = self
            .deadlines
            .iter()
            .take_while(|&&(d, _)| d <= now)
            .map(|&(_, id)| id)
            .collect();
        for task in due {
            let Some(t) = self.tasks.get(&task) else {
                continue;
            };
            let late = t.rules.deadline.filter(|&d| d <= now);
            let timed_out = Failure::TimedOut {
                after: match late {
                    Some(d) => d.saturating_duration_since(t.submitted_at),
                    None => t.running.map(|r| r.timeout).unwrap_or_default(),
                },
            };
            match t.running {
                Some(r) => {
                    let grace_over = t.cancel_by.is_some_and(|c| c <= now);
                    if let Some(w) = self.workers.get_mut(&r.worker) {
                        w.in_flight.remove(&task);
                    }
                    if grace_over {
                        self.finish(task, Err(Failure::Cancelled), now);
                        self.kill(r.worker, KillReason::CancelGrace);
                    } else {
                        self.finish(task, Err(timed_out), now);
                        self.kill(r.worker, KillReason::Timeout);
                    }
                }
                None => {
                    self.queue.retain(|&q| q != task);
                    self.finish(task, Err(timed_out), now);
                }
            }
        }
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            let w = &self.workers[&id];
            match w.phase {
                Phase::Starting { since } if since + self.rules.start_timeout <= now => {
                    self.kill(id, KillReason::StartTimeout);
                }
                Phase::Ready
                    if self
                        .rules
                        .recycle_after_age
                        .zip(w.ready_at)
                        .is_some_and(|(age, ready)| ready + age <= now) =>
                {
                    self.retire(id, RecycleReason::Age);
                }
                Phase::Draining { since } if since + self.drain_grace() <= now => {
                    self.kill(id, KillReason::DrainTimeout);
                }
                _ => {}
            }
        }
        if self.rules.autoscale.is_some() {
            self.autoscale(now);
        }
        if let Some(s) = &self.shutdown
            && !s.stopping
            && s.deadline <= now
        {
            self.stop_everything(now);
        }
        self.settle(now);
    }

    /// Stop intake and wind down; see [`ShutdownMode`].
    pub(crate) fn shutdown(&mut self, mode: ShutdownMode, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(Shutdown {
            deadline: now + mode.grace(),
            stopping: false,
        });
        if self.observe {
            self.notes.push(PoolEvent::ShuttingDown {
                drain: matches!(mode, ShutdownMode::Drain { .. }),
                grace: mode.grace(),
            });
        }
        if matches!(mode, ShutdownMode::Cancel { .. }) {
            for task in std::mem::take(&mut self.queue) {
                self.finish(task, Err(Failure::ShuttingDown), now);
            }
        }
        self.settle(now);
    }

    // ---- sizing and operator controls ----------------------------------------

    /// The pool's target size (its slots).
    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    /// Sets the pool's size to `n` (at least 1). Growing adds slots, filled at
    /// once; shrinking removes the slots that matter least (empty, then
    /// starting, then the least busy) and drains their workers: they take no
    /// new task, answer what they have and exit. Returns the size before.
    pub(crate) fn resize(&mut self, n: usize, now: Instant) -> usize {
        let from = self.slots.len();
        if n > from {
            for _ in from..n {
                self.add_slot();
            }
        } else if n < from {
            let mut scored: Vec<(u8, usize, SlotId)> = self
                .slots
                .keys()
                .map(|&slot| {
                    let serving = self.workers.values().find(|w| {
                        w.slot == Some(slot)
                            && matches!(w.phase, Phase::Starting { .. } | Phase::Ready)
                    });
                    match serving.map(|w| (w.phase, w.in_flight.len())) {
                        None => (0, 0, slot),
                        Some((Phase::Starting { .. }, _)) => (1, 0, slot),
                        Some((_, busy)) => (2, busy, slot),
                    }
                })
                .collect();
            scored.sort_unstable();
            for &(_, _, slot) in scored.iter().take(from - n) {
                self.remove_slot(slot, now);
            }
        }
        self.rules.workers = n;
        if self.observe && n != from {
            self.notes.push(PoolEvent::Resized { from, to: n });
        }
        self.settle(now);
        from
    }

    /// Removes `slot`: its starting worker is killed, a serving one drained.
    fn remove_slot(&mut self, slot: SlotId, now: Instant) {
        self.slots.remove(&slot);
        let ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.slot == Some(slot))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let w = self.workers.get_mut(&id).expect("listed");
            w.slot = None;
            match w.phase {
                Phase::Starting { .. } => self.kill(id, KillReason::Resize),
                Phase::Ready | Phase::Retiring(_) => self.drain(id, now),
                Phase::Draining { .. } | Phase::Ending { .. } => {}
            }
        }
    }

    /// When the autoscaler grows the pool by one, if it may now: below
    /// `max`, not shutting down or held, every slot's worker up (one at a
    /// time), and a task queued: when the oldest has waited `scale_up_after`.
    fn grow_at(&self) -> Option<Instant> {
        let scale = self.rules.autoscale?;
        if self.shutdown.is_some() || self.held || self.slots.len() >= scale.max {
            return None;
        }
        let &front = self.queue.front()?;
        let starting = self
            .workers
            .values()
            .any(|w| w.slot.is_some() && matches!(w.phase, Phase::Starting { .. }));
        if starting || self.deficit() > 0 {
            return None;
        }
        Some(self.tasks.get(&front)?.enqueued_at + scale.scale_up_after)
    }

    /// The ready worker idle the longest, with when it is due to go, if the
    /// pool is above `min` with nothing queued.
    fn shrink_candidate(&self) -> Option<(Instant, WorkerId)> {
        let scale = self.rules.autoscale?;
        if self.shutdown.is_some() || self.slots.len() <= scale.min || !self.queue.is_empty() {
            return None;
        }
        self.workers
            .iter()
            .filter(|(_, w)| w.slot.is_some() && w.phase == Phase::Ready && w.in_flight.is_empty())
            .filter_map(|(&id, w)| w.idle_since.map(|t| (t + scale.idle_timeout, id)))
            .min()
    }

    /// Grows by one if tasks waited long enough; shrinks by one per worker
    /// idle long enough. Each change is a `Resized`.
    fn autoscale(&mut self, now: Instant) {
        if self.grow_at().is_some_and(|t| t <= now) {
            self.resize(self.slots.len() + 1, now);
        }
        while let Some((due, worker)) = self.shrink_candidate()
            && due <= now
        {
            let from = self.slots.len();
            let slot = self.workers[&worker].slot.expect("a candidate has a slot");
            self.remove_slot(slot, now);
            self.rules.workers = from - 1;
            if self.observe {
                self.notes.push(PoolEvent::Resized { from, to: from - 1 });
            }
        }
    }

    /// An operator's recycle: `worker` is replaced (the replacement is ready
    /// before it drains). `false` if it is not a ready worker.
    pub(crate) fn recycle(&mut self, worker: WorkerId, now: Instant) -> bool {
        let ok = match self.workers.get(&worker).map(|w| w.phase) {
            Some(Phase::Ready) => {
                self.retire(worker, RecycleReason::Operator);
                true
            }
            Some(Phase::Retiring(_)) => true,
            _ => false,
        };
        self.settle(now);
        ok
    }

    /// An operator opens (`true`) or closes the breaker. Open: no worker
    /// starts (running ones keep serving; with none left, calls fail fast
    /// with `Unavailable`). Closed: failures are forgotten and starts resume.
    pub(crate) fn hold_breaker(&mut self, open: bool, now: Instant) {
        if open == self.held {
            return;
        }
        self.held = open;
        if open {
            self.degraded = Some(Why::new("the breaker was opened by an operator"));
            if self.observe {
                self.notes.push(PoolEvent::BreakerOpened { operator: true });
            }
        } else {
            self.breaker.reset();
            self.degraded = None;
            for slot in self.slots.values_mut() {
                slot.spawn_after = None;
                slot.start_streak = 0;
                slot.backoff.reset();
            }
            if self.observe {
                self.notes.push(PoolEvent::BreakerClosed { operator: true });
            }
        }
        self.settle(now);
    }

    // ---- internals ------------------------------------------------------

    /// Delivers a task's outcome (exactly once) and updates the counters.
    ///
    /// `Ok(Some(response))` for a task, `Ok(None)` for a chunk whose every
    /// item was answered; a failure fails the task, or every item of the
    /// chunk not answered. A task whose caller cancelled it ends `Cancelled`
    /// whatever came back.
    fn finish(&mut self, task: TaskId, outcome: Result<Option<Resp>, Failure>, now: Instant) {
        let Some(t) = self.tasks.remove(&task) else {
            debug_assert!(false, "task {task} finished twice");
            return;
        };
        if t.running.is_none() && t.attempts == 0 {
            // It leaves the queue without ever having run.
            self.fresh_queued -= 1;
        }
        if let Some(alarm) = t.alarm {
            self.deadlines.remove(&(alarm, task));
        }
        let outcome = if t.abandoned {
            Err(Failure::Cancelled)
        } else {
            outcome
        };
        // Items this outcome decides (a chunk's answered items were counted
        // as they came).
        let items = match t.req {
            Payload::One(_) => 1,
            Payload::Chunk(_) => t.unanswered as u64,
        };
        let kind = match &outcome {
            Err(Failure::Cancelled) => None,
            Ok(_) => {
                self.counters.completed += items;
                None
            }
            Err(f) => Some(FailureKind::of(f)),
        };
        match kind {
            Some(kind) => *self.counters.failed.entry(kind).or_default() += items,
            None if outcome.is_err() => self.counters.cancelled += items,
            None => {}
        }
        if self.observe {
            let outcome = match kind {
                Some(kind) => Outcome::Failed(kind),
                None if outcome.is_err() => Outcome::Cancelled,
                None => Outcome::Completed,
            };
            self.notes.push(PoolEvent::Finished {
                task,
                worker: t.running.map(|r| r.worker),
                service: t
                    .running
                    .map(|r| now.saturating_duration_since(r.dispatched_at)),
                end_to_end: now.saturating_duration_since(t.submitted_at),
                outcome,
            });
        }
        match (t.req, outcome) {
            (Payload::Chunk(_), outcome) => self.actions.push(Action::ChunkEnd {
                task,
                failure: outcome.err(),
            }),
            (Payload::One(_), Ok(Some(resp))) => self.actions.push(Action::Complete {
                task,
                outcome: Ok(resp),
            }),
            (Payload::One(_), Err(f)) => self.actions.push(Action::Complete {
                task,
                outcome: Err(f),
            }),
            (Payload::One(_), Ok(None)) => unreachable!("a task's answer carries its response"),
        }
    }

    /// A start failed in `slot`: the slot backs off; the pool-wide breaker
    /// counts it only once starts in that slot keep failing.
    fn start_failure(&mut self, slot: Option<SlotId>, reason: Why, now: Instant) {
        self.counters.start_failures += 1;
        let streak = match slot.and_then(|s| self.slots.get_mut(&s)) {
            Some(slot) => {
                slot.start_streak += 1;
                let delay = slot.backoff.failed(now);
                slot.spawn_after = Some(now + delay);
                slot.start_streak
            }
            None => BREAKER_STREAK,
        };
        // A trial start while half-open that fails opens the breaker again.
        if streak >= BREAKER_STREAK || matches!(self.breaker.state(), BreakerState::HalfOpen { .. })
        {
            let was_open = matches!(self.breaker.state(), BreakerState::Open { .. });
            self.breaker.record_failure(now);
            if !was_open
                && matches!(self.breaker.state(), BreakerState::Open { .. })
                && self.observe
            {
                self.notes
                    .push(PoolEvent::BreakerOpened { operator: false });
            }
        }
        if let BreakerState::Open { .. } = self.breaker.state() {
            self.degraded = Some(Why::because("workers cannot start", &reason));
        }
    }

    /// Slots with no worker starting or ready in them.
    fn empty_slots(&self) -> Vec<SlotId> {
        let mut empty: BTreeSet<SlotId> = self.slots.keys().copied().collect();
        for w in self.workers.values() {
            if matches!(w.phase, Phase::Starting { .. } | Phase::Ready)
                && let Some(s) = w.slot
            {
                empty.remove(&s);
            }
        }
        empty.into_iter().collect()
    }

    /// Slots with a worker starting or ready in them. A slot holds at most
    /// one such worker (a spawn goes only to an empty slot, and only a
    /// starting worker becomes ready), so this counts them; it runs after
    /// every event, and allocates nothing (the property test checks the
    /// count against [`empty_slots`](Core::empty_slots)).
    fn serving_in_slots(&self) -> usize {
        self.workers
            .values()
            .filter(|w| {
                matches!(w.phase, Phase::Starting { .. } | Phase::Ready)
                    && w.slot.is_some_and(|s| self.slots.contains_key(&s))
            })
            .count()
    }

    /// Workers missing from the pool's size. During a shutdown only while
    /// there are still tasks for them (a draining shutdown runs the queue too).
    fn deficit(&self) -> usize {
        match &self.shutdown {
            Some(s) if s.stopping || self.tasks.is_empty() => 0,
            _ => self.slots.len().saturating_sub(self.serving_in_slots()),
        }
    }

    /// Why nothing can run right now, if so: no worker is up or starting and
    /// the breaker refuses to start one.
    fn unavailable(&self) -> Option<Why> {
        let anyone = self
            .workers
            .values()
            .any(|w| !matches!(w.phase, Phase::Ending { .. }));
        match (&self.degraded, anyone, self.breaker.state()) {
            (Some(reason), false, BreakerState::Open { .. }) => Some(reason.clone()),
            (Some(reason), false, _) if self.held => Some(reason.clone()),
            _ => None,
        }
    }

    fn retire(&mut self, worker: WorkerId, reason: RecycleReason) {
        if let Some(w) = self.workers.get_mut(&worker)
            && w.phase == Phase::Ready
        {
            w.phase = Phase::Retiring(reason);
            self.counters.recycled += 1;
            if self.observe {
                self.notes
                    .push(PoolEvent::WorkerRecycled { worker, reason });
            }
        }
    }

    fn drain(&mut self, worker: WorkerId, now: Instant) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let reason = match w.phase {
            Phase::Retiring(r) => Some(r),
            _ => None,
        };
        w.phase = Phase::Draining { since: now };
        self.actions.push(Action::Drain { worker, reason });
    }

    fn kill(&mut self, worker: WorkerId, reason: KillReason) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if matches!(w.phase, Phase::Ending { .. }) {
            return;
        }
        w.phase = Phase::Ending {
            reason: Some(reason),
        };
        // Whatever else it was running is not at fault: re-run at its exit.
        w.collateral = w.in_flight.clone();
        self.actions.push(Action::Kill { worker, reason });
    }

    fn stop_everything(&mut self, now: Instant) {
        if let Some(s) = self.shutdown.as_mut() {
            s.stopping = true;
        }
        for task in std::mem::take(&mut self.queue) {
            self.finish(task, Err(Failure::ShuttingDown), now);
        }
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            let w = self.workers.get_mut(&id).expect("listed");
            if !matches!(w.phase, Phase::Ending { .. }) {
                w.phase = Phase::Ending {
                    reason: Some(KillReason::Shutdown),
                };
                self.actions.push(Action::Stop { worker: id });
            }
        }
    }

    /// After every event: spawn what is missing, dispatch what can run, and
    /// during shutdown drain workers once there is nothing left for them.
    fn settle(&mut self, now: Instant) {
        // Spawns: a worker for each empty slot, gated by the slot's backoff
        // and the pool's breaker.
        let empty = if self.deficit() > 0 {
            self.empty_slots()
        } else {
            Vec::new()
        };
        for slot_id in empty {
            let slot = &self.slots[&slot_id];
            if slot.spawn_after.is_some_and(|t| t > now) || self.held || !self.breaker.admit(now) {
                continue;
            }
            let slot = self.slots.get_mut(&slot_id).expect("listed");
            slot.spawn_after = None;
            let restart = std::mem::replace(&mut slot.used, true);
            let id = self.next_worker;
            self.next_worker += 1;
            self.workers.insert(
                id,
                Worker {
                    slot: Some(slot_id),
                    phase: Phase::Starting { since: now },
                    in_flight: BTreeSet::new(),
                    completed: 0,
                    ready_at: None,
                    collateral: BTreeSet::new(),
                    idle_since: None,
                },
            );
            if restart {
                self.counters.restarts += 1;
            }
            self.actions.push(Action::Spawn {
                worker: id,
                replacement: restart,
            });
        }
        // Nobody can run anything and nobody will be started: fail the queue
        // rather than let it wait forever.
        if let Some(reason) = self.unavailable() {
            for task in std::mem::take(&mut self.queue) {
                self.finish(task, Err(Failure::Unavailable(reason.clone())), now);
            }
        }
        self.dispatch(now);
        if self.rules.autoscale.is_some() {
            for w in self.workers.values_mut() {
                let idle = w.phase == Phase::Ready && w.in_flight.is_empty();
                match (idle, w.idle_since) {
                    (true, None) => w.idle_since = Some(now),
                    (false, Some(_)) => w.idle_since = None,
                    _ => {}
                }
            }
        }
        if let Some(s) = &self.shutdown
            && !s.stopping
            && self.tasks.is_empty()
        {
            let idle: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    matches!(
                        w.phase,
                        Phase::Ready | Phase::Retiring(_) | Phase::Starting { .. }
                    )
                })
                .map(|(&id, _)| id)
                .collect();
            for id in idle {
                if matches!(self.workers[&id].phase, Phase::Starting { .. }) {
                    self.kill(id, KillReason::Shutdown);
                } else {
                    self.drain(id, now);
                }
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        while let Some(&task) = self.queue.front() {
            let least_loaded = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    matches!(w.phase, Phase::Ready | Phase::Retiring(_))
                        && w.in_flight.len() < self.rules.max_in_flight
                })
                .min_by_key(|&(&id, w)| (w.in_flight.len(), id))
                .map(|(&id, _)| id);
            let Some(worker) = least_loaded else { return };
            self.queue.pop_front();
            let t = self.tasks.get_mut(&task).expect("queued tasks exist");
            if t.attempts == 0 {
                self.fresh_queued -= 1;
            }
            t.attempts += 1;
            // A chunk gets the timeout once per item it carries.
            let per_item = match t.req {
                Payload::One(_) => 1,
                Payload::Chunk(_) => t.sent.len().max(1) as u32,
            };
            let timeout = t
                .rules
                .timeout
                .or(self.rules.task_timeout)
                .map(|d| d.saturating_mul(per_item));
            t.running = Some(Running {
                worker,
                dispatched_at: now,
                deadline: timeout.map(|d| now + d),
                timeout: timeout.unwrap_or_default(),
            });
            let queue_wait = now.saturating_duration_since(t.enqueued_at);
            self.histograms.queue_wait.record(queue_wait);
            if self.observe {
                self.notes.push(PoolEvent::Dispatched {
                    task,
                    worker,
                    queue_wait,
                    attempt: t.attempts,
                });
            }
            let req = match &t.req {
                Payload::One(req) => Payload::One(req.clone()),
                Payload::Chunk(items) => Payload::Chunk(
                    t.sent
                        .iter()
                        .map(|&(i, _)| items[i as usize].clone())
                        .collect(),
                ),
            };
            self.rearm(task);
            self.workers
                .get_mut(&worker)
                .expect("chosen")
                .in_flight
                .insert(task);
            self.actions.push(Action::Dispatch { worker, task, req });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn rules() -> Rules {
        Rules {
            workers: 2,
            max_in_flight: 2,
            queue_capacity: 8,
            task_timeout: Some(Duration::from_secs(5)),
            retries: 1,
            recycle_after_tasks: Some(3),
            recycle_above_rss: Some(1000),
            recycle_after_age: None,
            start_timeout: Duration::from_secs(2),
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .jitter(0.0),
            breaker: BreakerConfig::new(3, Duration::from_secs(10))
                .open_for(Duration::from_secs(3))
                .trials(1),
            cancel_grace: Duration::from_secs(1),
            autoscale: None,
        }
    }

    /// A test harness: a core plus a model of the processes behind it.
    struct Sim {
        core: Core<u32, u32>,
        now: Instant,
        outcomes: HashMap<TaskId, Result<u32, Failure>>,
        /// Per item of a chunk: its one outcome (`Ok` value or failure).
        item_outcomes: HashMap<(TaskId, u32), Result<u32, Failure>>,
        /// Chunks submitted, with their number of items.
        chunks: HashMap<TaskId, u32>,
        /// A chunk's items in its current dispatch: their values, and
        /// whether the worker answered them.
        dispatched: HashMap<TaskId, Vec<(u32, bool)>>,
        spawned: Vec<WorkerId>,
        /// Tasks each worker process has been sent and not answered.
        sent: HashMap<WorkerId, Vec<TaskId>>,
        /// Tasks a worker was told to abandon.
        told: BTreeSet<(WorkerId, TaskId)>,
        drained: BTreeSet<WorkerId>,
        ended: BTreeSet<WorkerId>,
    }

    /// The value of item `i` of chunk `task` (so the sim can check that
    /// results come back under the right index).
    fn item_value(task: TaskId, i: u32) -> u32 {
        task as u32 * 100 + i
    }

    impl Sim {
        fn new(rules: Rules) -> Sim {
            let now = Instant::now();
            let mut sim = Sim {
                core: Core::new(rules, 7, now),
                now,
                outcomes: HashMap::new(),
                item_outcomes: HashMap::new(),
                chunks: HashMap::new(),
                dispatched: HashMap::new(),
                spawned: Vec::new(),
                sent: HashMap::new(),
                told: BTreeSet::new(),
                drained: BTreeSet::new(),
                ended: BTreeSet::new(),
            };
            sim.pump();
            sim
        }

        fn pump(&mut self) {
            for action in self.core.take_actions() {
                match action {
                    Action::Spawn { worker, .. } => {
                        self.spawned.push(worker);
                        self.sent.insert(worker, Vec::new());
                    }
                    Action::Dispatch { worker, task, req } => {
                        assert!(
                            !self.ended.contains(&worker) && !self.drained.contains(&worker),
                            "dispatch to a worker on its way out"
                        );
                        if let Payload::Chunk(items) = req {
                            assert!(!items.is_empty(), "an empty chunk dispatched");
                            for v in &items {
                                assert!(
                                    !self.item_outcomes.contains_key(&(task, v % 100)),
                                    "item {} of chunk {task} runs again after its outcome",
                                    v % 100
                                );
                            }
                            self.dispatched
                                .insert(task, items.into_iter().map(|v| (v, false)).collect());
                        }
                        self.sent.get_mut(&worker).unwrap().push(task);
                    }
                    Action::Cancel { worker, task } => {
                        assert!(
                            self.told.insert((worker, task)),
                            "told to cancel {task} twice"
                        );
                    }
                    Action::Items { task, results } => {
                        for (i, r) in results {
                            if let Ok(v) = r {
                                assert_eq!(v, item_value(task, i), "result under the wrong index");
                            }
                            let outcome = r.map_err(Failure::Task);
                            assert!(
                                self.item_outcomes.insert((task, i), outcome).is_none(),
                                "item {i} of chunk {task} got two outcomes"
                            );
                        }
                    }
                    Action::ChunkEnd { task, failure } => {
                        let n = self.chunks[&task];
                        for i in 0..n {
                            match &failure {
                                None => assert!(
                                    self.item_outcomes.contains_key(&(task, i)),
                                    "chunk {task} ended with item {i} unanswered"
                                ),
                                Some(f) => {
                                    self.item_outcomes
                                        .entry((task, i))
                                        .or_insert(Err(f.clone()));
                                }
                            }
                        }
                        assert!(
                            self.outcomes
                                .insert(task, Err(Failure::Cancelled))
                                .is_none(),
                            "chunk {task} ended twice"
                        );
                    }
                    Action::Drain { worker, .. } => {
                        self.drained.insert(worker);
                    }
                    Action::Kill { worker, .. } | Action::Stop { worker } => {
                        self.ended.insert(worker);
                    }
                    Action::Complete { task, outcome } => {
                        assert!(
                            self.outcomes.insert(task, outcome).is_none(),
                            "task {task} got two outcomes"
                        );
                    }
                }
            }
        }

        /// Worker `w` answers the first `k` unanswered items of chunk `task`.
        fn answer_items(&mut self, w: WorkerId, task: TaskId, k: usize) {
            let items = self.dispatched.get_mut(&task).unwrap();
            let mut results = Vec::new();
            for (pos, (v, done)) in items.iter_mut().enumerate() {
                if results.len() == k {
                    break;
                }
                if !*done {
                    *done = true;
                    let r = if v.is_multiple_of(7) {
                        Err("bad item".into())
                    } else {
                        Ok(*v)
                    };
                    results.push((pos as u32, r));
                }
            }
            if items.iter().all(|&(_, done)| done) {
                self.sent.get_mut(&w).unwrap().retain(|&t| t != task);
            }
            let now = self.now;
            self.core.items(w, task, results, now);
        }

        fn live(&self) -> Vec<WorkerId> {
            self.core.workers.keys().copied().collect()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.core.tick(self.now);
            self.pump();
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Submit,
        /// A chunk of 0 to 5 items.
        SubmitChunk(u32),
        /// A task with its own deadline (ms from now) and retries.
        SubmitWith(u64, u32),
        /// A worker answers up to this many items of one of its chunks.
        ReplyItems(usize, usize),
        /// A worker says it abandoned a task it was told to cancel.
        AckCancel(usize),
        /// A request that could not be sent.
        Unsendable(usize),
        Resize(usize),
        Recycle(usize),
        HoldBreaker(bool),
        Cancel(usize),
        Ready(usize),
        Reply(usize),
        Crash(usize),
        Garbage(usize),
        Rss(usize),
        Advance(u64),
        ProcessExitsAfterKillOrDrain(usize),
        Shutdown(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Submit),
            2 => (0u32..6).prop_map(Op::SubmitChunk),
            1 => (0u64..6000, 0u32..3).prop_map(|(d, r)| Op::SubmitWith(d, r)),
            3 => (any::<usize>(), 1usize..4).prop_map(|(w, k)| Op::ReplyItems(w, k)),
            1 => any::<usize>().prop_map(Op::AckCancel),
            1 => any::<usize>().prop_map(Op::Unsendable),
            1 => (1usize..5).prop_map(Op::Resize),
            1 => any::<usize>().prop_map(Op::Recycle),
            1 => any::<bool>().prop_map(Op::HoldBreaker),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => any::<usize>().prop_map(Op::Ready),
            4 => any::<usize>().prop_map(Op::Reply),
            1 => any::<usize>().prop_map(Op::Crash),
            1 => any::<usize>().prop_map(Op::Garbage),
            1 => any::<usize>().prop_map(Op::Rss),
            2 => (0u64..4000).prop_map(Op::Advance),
            2 => any::<usize>().prop_map(Op::ProcessExitsAfterKillOrDrain),
            1 => any::<bool>().prop_map(Op::Shutdown),
        ]
    }

    fn pick<T: Copy>(items: &[T], n: usize) -> Option<T> {
        (!items.is_empty()).then(|| items[n % items.len()])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Any schedule: every submitted task gets exactly one outcome once the
        /// pool has shut down, no task goes to a worker on its way out, and the
        /// counters add up.
        #[test]
        fn every_task_gets_exactly_one_outcome(ops in proptest::collection::vec(op(), 1..120), autoscaled in any::<bool>()) {
            // Half the schedules autoscale between 1 and 4 workers as well.
            let mut sim = Sim::new(if autoscaled {
                Rules {
                    workers: 1,
                    autoscale: Some(Autoscale {
                        min: 1,
                        max: 4,
                        scale_up_after: Duration::from_millis(50),
                        idle_timeout: Duration::from_millis(200),
                    }),
                    ..rules()
                }
            } else {
                rules()
            });
            let mut submitted = Vec::new();
            // Calls count one item each; chunks their number of items.
            let mut items_submitted = 0u64;
            let mut next_id: TaskId = 1;
            for op in ops {
                let now = sim.now;
                match op {
                    Op::Submit => {
                        let id = next_id; next_id += 1; if let Ok(id) = sim.core.submit(id, id as u32, now) { submitted.push(id); items_submitted += 1; }
                    }
                    Op::SubmitChunk(n) => {
                        let id = next_id; next_id += 1;
                        let items = (0..n).map(|i| item_value(id, i)).collect();
                        sim.chunks.insert(id, n);
                        match sim.core.submit_with(id, Payload::Chunk(items), TaskRules::default(), now) {
                            Ok(id) => { submitted.push(id); items_submitted += u64::from(n); }
                            Err(_) => { sim.chunks.remove(&id); }
                        }
                    }
                    Op::SubmitWith(ms, retries) => {
                        let id = next_id; next_id += 1;
                        let rules = TaskRules { retries: Some(retries), timeout: None, deadline: Some(now + Duration::from_millis(ms)) };
                        if let Ok(id) = sim.core.submit_with(id, Payload::One(id as u32), rules, now) { submitted.push(id); items_submitted += 1; }
                    }
                    Op::ReplyItems(n, k) => {
                        let busy: Vec<(WorkerId, TaskId)> = sim.sent.iter()
                            .filter(|(w, _)| !sim.ended.contains(w))
                            .flat_map(|(&w, ts)| ts.iter().filter(|t| sim.chunks.contains_key(t)).map(move |&t| (w, t)))
                            .collect::<BTreeSet<_>>().into_iter().collect();
                        if let Some((w, t)) = pick(&busy, n) { sim.answer_items(w, t, k) }
                    }
                    Op::AckCancel(n) => {
                        let told: Vec<(WorkerId, TaskId)> = sim.told.iter().copied()
                            .filter(|(w, t)| !sim.ended.contains(w) && sim.sent.get(w).is_some_and(|ts| ts.contains(t)))
                            .collect();
                        if let Some((w, t)) = pick(&told, n) {
                            sim.sent.get_mut(&w).unwrap().retain(|&x| x != t);
                            sim.core.cancelled(w, t, now);
                        }
                    }
                    Op::Unsendable(n) => {
                        let held: Vec<(WorkerId, TaskId)> = sim.sent.iter()
                            .filter(|(w, _)| !sim.ended.contains(w))
                            .flat_map(|(&w, ts)| ts.iter().map(move |&t| (w, t)))
                            .collect::<BTreeSet<_>>().into_iter().collect();
                        if let Some((w, t)) = pick(&held, n) {
                            // The worker never saw it (no item answered yet, as the shell sees it).
                            if sim.dispatched.get(&t).is_none_or(|items| items.iter().all(|&(_, done)| !done)) {
                                sim.sent.get_mut(&w).unwrap().retain(|&x| x != t);
                                sim.core.unsendable(w, t, Why::new("frame too large"), now);
                            }
                        }
                    }
                    Op::Resize(n) => { sim.core.resize(n, now); }
                    Op::Recycle(n) => if let Some(w) = pick(&sim.live(), n) { sim.core.recycle(w, now); },
                    Op::HoldBreaker(open) => sim.core.hold_breaker(open, now),
                    Op::Cancel(n) => if let Some(t) = pick(&submitted, n) { sim.core.cancel(t, n % 2 == 0, now) },
                    Op::Ready(n) => if let Some(w) = pick(&sim.live(), n) { sim.core.ready(w, now) },
                    Op::Reply(n) => {
                        let busy: Vec<WorkerId> = sim.sent.iter().filter(|(w, t)| t.iter().any(|t| !sim.chunks.contains_key(t)) && !sim.ended.contains(w)).map(|(&w, _)| w).collect::<BTreeSet<_>>().into_iter().collect();
                        if let Some(w) = pick(&busy, n) {
                            let at = sim.sent[&w].iter().position(|t| !sim.chunks.contains_key(t)).unwrap();
                            let task = sim.sent.get_mut(&w).unwrap().remove(at);
                            sim.core.reply(w, task, if task.is_multiple_of(5) { Err("bad input".into()) } else { Ok(task as u32) }, now);
                        }
                    }
                    Op::Crash(n) => if let Some(w) = pick(&sim.live(), n) { sim.ended.insert(w); sim.core.exited(w, now) },
                    Op::Garbage(n) => if let Some(w) = pick(&sim.live(), n) { sim.core.protocol_error(w, Why::new("garbage"), now) },
                    Op::Rss(n) => if let Some(w) = pick(&sim.live(), n) { sim.core.rss(w, 5000, now) },
                    Op::Advance(ms) => sim.advance(Duration::from_millis(ms)),
                    Op::ProcessExitsAfterKillOrDrain(n) => {
                        // A drained worker exits once it has answered everything.
                        let leaving: Vec<WorkerId> = sim.live().into_iter()
                            .filter(|w| sim.ended.contains(w) || (sim.drained.contains(w) && sim.sent[w].is_empty()))
                            .collect();
                        if let Some(w) = pick(&leaving, n) { sim.core.exited(w, now) }
                    }
                    Op::Shutdown(drain) => {
                        let grace = Duration::from_secs(3);
                        sim.core.shutdown(if drain { ShutdownMode::Drain { grace } } else { ShutdownMode::Cancel { grace } }, now);
                    }
                }
                sim.pump();
                // The alarm index holds exactly the tasks' alarms, and a running
                // task's alarm comes no later than its run deadline.
                let expected: BTreeSet<(Instant, TaskId)> = sim.core.tasks.iter()
                    .filter_map(|(&id, t)| Some((t.alarm?, id))).collect();
                prop_assert_eq!(&sim.core.deadlines, &expected);
                for t in sim.core.tasks.values() {
                    if let Some(d) = t.running.and_then(|r| r.deadline) {
                        prop_assert!(t.alarm.is_some_and(|a| a <= d));
                    }
                    if let Some(d) = t.rules.deadline {
                        prop_assert!(t.alarm.is_some_and(|a| a <= d));
                    }
                }
                // The pool's size follows resizes: no more workers starting or
                // ready than slots.
                let serving = sim.core.workers.values().filter(|w| matches!(w.phase, Phase::Starting { .. } | Phase::Ready)).count();
                prop_assert!(serving <= sim.core.size(), "{} serving, size {}", serving, sim.core.size());
                // At most one starting or ready worker per slot: the count the
                // core keeps its spawning by is the number of filled slots.
                prop_assert_eq!(sim.core.serving_in_slots(), sim.core.size() - sim.core.empty_slots().len());
                // Invariant at every step: each live task is either queued or on exactly one worker.
                for (&id, t) in &sim.core.tasks {
                    let holders = sim.core.workers.values().filter(|w| w.in_flight.contains(&id)).count();
                    prop_assert_eq!(holders, usize::from(t.running.is_some()), "task {} placement", id);
                }
            }
            // Wind down: shut down, let every worker answer or die, advance past every deadline.
            sim.core.shutdown(ShutdownMode::Cancel { grace: Duration::from_secs(1) }, sim.now);
            sim.pump();
            for _ in 0..50 {
                if sim.core.is_finished() { break; }
                for w in sim.live() {
                    let now = sim.now;
                    if sim.ended.contains(&w) || sim.drained.contains(&w) { sim.core.exited(w, now); } else { sim.core.ready(w, now); }
                    sim.pump();
                }
                sim.advance(Duration::from_secs(2));
            }
            prop_assert!(sim.core.is_finished(), "pool did not finish: workers {:?} tasks {:?} queue {:?} shutdown {:?} slots {:?} breaker {:?} deg {:?}", sim.core.workers(), sim.core.tasks.keys().collect::<Vec<_>>(), sim.core.queue, sim.core.shutdown, sim.core.slots, sim.core.breaker.state(), sim.core.degraded);
            for t in &submitted {
                prop_assert!(sim.outcomes.contains_key(t), "task {} has no outcome", t);
                if let Some(&n) = sim.chunks.get(t) {
                    for i in 0..n {
                        prop_assert!(sim.item_outcomes.contains_key(&(*t, i)), "item {} of chunk {} has no outcome", i, t);
                    }
                }
            }
            let c = &sim.core.counters;
            let failed: u64 = c.failed.values().sum();
            prop_assert_eq!(c.submitted, items_submitted);
            prop_assert_eq!(c.completed + failed + c.cancelled, c.submitted, "{:?}", c);
        }
    }

    /// Table-style checks of single rules.
    fn run(rules: Rules, script: impl FnOnce(&mut Sim)) -> Sim {
        let mut sim = Sim::new(rules);
        script(&mut sim);
        sim
    }

    #[test]
    fn a_crash_retries_on_another_worker_then_fails_with_the_crash() {
        let sim = run(
            Rules {
                retries: 1,
                workers: 1,
                recycle_after_tasks: None,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.ready(1, now);
                let t = sim.core.submit(110, 10, now).unwrap();
                sim.pump();
                sim.core.exited(1, now); // first crash: retried
                sim.pump();
                assert!(!sim.outcomes.contains_key(&t));
                sim.advance(Duration::from_millis(100)); // backoff over: worker 2 spawns
                let now = sim.now;
                sim.core.ready(2, now);
                sim.pump();
                assert_eq!(sim.sent[&2], vec![t], "retried on the replacement");
                sim.core.exited(2, now); // second crash: out of attempts
                sim.pump();
                assert_eq!(sim.outcomes[&t], Err(Failure::Crashed { worker: 2 }));
            },
        );
        assert_eq!(sim.core.counters.retried, 1);
        assert_eq!(sim.core.counters.crashes, 2);
    }

    #[test]
    fn autoscaling_grows_one_at_a_time_to_max_on_queue_wait_and_drains_idle_workers_to_min() {
        let scale = Autoscale {
            min: 1,
            max: 3,
            scale_up_after: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
        };
        let rules = Rules {
            workers: 1,
            max_in_flight: 1,
            recycle_after_tasks: None,
            autoscale: Some(scale),
            ..rules()
        };
        let sim = run(rules, |sim| {
            sim.core.observe = true;
            let now = sim.now;
            sim.core.ready(1, now);
            for id in 1..=5 {
                sim.core.submit(id, id as u32, now).unwrap();
            }
            sim.pump();
            // Queued, but not for long enough yet.
            sim.advance(Duration::from_millis(40));
            assert_eq!(sim.core.size(), 1);
            assert_eq!(sim.core.next_deadline(), Some(now + scale.scale_up_after));
            sim.advance(Duration::from_millis(10));
            assert_eq!((sim.core.size(), sim.spawned.len()), (2, 2));
            // One at a time: nothing more while the new worker starts.
            sim.advance(Duration::from_millis(500));
            assert_eq!(sim.core.size(), 2);
            let now = sim.now;
            sim.core.ready(2, now);
            sim.pump();
            sim.advance(Duration::from_millis(1)); // tasks still waiting long
            assert_eq!((sim.core.size(), sim.spawned.len()), (3, 3));
            let now = sim.now;
            sim.core.ready(3, now);
            sim.pump();
            sim.advance(Duration::from_secs(1));
            assert_eq!(sim.core.size(), 3, "never above max");
            // Everything answered: the workers go idle, then drain one by one.
            while let Some((&w, _)) = sim.sent.iter().find(|(_, t)| !t.is_empty()) {
                let t = sim.sent.get_mut(&w).unwrap().remove(0);
                let now = sim.now;
                sim.core.reply(w, t, Ok(t as u32), now);
                sim.pump();
            }
            assert!(sim.drained.is_empty());
            sim.advance(Duration::from_millis(199));
            assert!(sim.drained.is_empty(), "not idle long enough");
            sim.advance(Duration::from_millis(1));
            assert_eq!(sim.core.size(), 1, "never below min");
            assert_eq!(sim.drained.len(), 2, "drained, not killed");
            assert!(sim.ended.is_empty());
            sim.advance(Duration::from_secs(5));
            assert_eq!(sim.core.size(), 1);
        });
        assert_eq!(sim.outcomes.len(), 5);
        assert!(sim.outcomes.values().all(Result::is_ok));
        let resized: Vec<(usize, usize)> = sim
            .core
            .notes
            .iter()
            .filter_map(|e| match e {
                PoolEvent::Resized { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(resized, vec![(1, 2), (2, 3), (3, 2), (2, 1)]);
    }

    #[test]
    fn a_timeout_fails_the_task_kills_the_worker_and_reruns_its_neighbours() {
        run(
            Rules {
                workers: 1,
                recycle_after_tasks: None,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.ready(1, now);
                let slow = sim.core.submit(101, 1, now).unwrap();
                sim.advance(Duration::from_secs(1));
                let neighbour = sim.core.submit(102, 2, sim.now).unwrap();
                sim.pump();
                sim.advance(Duration::from_secs(4)); // slow's deadline
                assert_eq!(
                    sim.outcomes[&slow],
                    Err(Failure::TimedOut {
                        after: Duration::from_secs(5)
                    })
                );
                assert!(sim.ended.contains(&1));
                let now = sim.now;
                sim.core.exited(1, now);
                sim.pump();
                let now = sim.now;
                sim.core.ready(2, now);
                sim.pump();
                assert_eq!(sim.sent[&2], vec![neighbour], "the neighbour re-runs");
                sim.core.reply(2, neighbour, Ok(2), now);
                sim.pump();
                assert_eq!(sim.outcomes[&neighbour], Ok(2));
                assert_eq!(
                    sim.core.counters.retried, 0,
                    "collateral re-runs are not retries"
                );
            },
        );
    }

    #[test]
    fn recycling_readies_the_replacement_before_draining_the_old_worker() {
        run(
            Rules {
                workers: 1,
                recycle_after_tasks: Some(1),
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.ready(1, now);
                let a = sim.core.submit(101, 1, now).unwrap();
                sim.pump();
                sim.core.reply(1, a, Ok(1), now);
                sim.pump();
                assert_eq!(sim.spawned, vec![1, 2], "a replacement spawns at once");
                assert!(
                    !sim.drained.contains(&1),
                    "the old worker serves until then"
                );
                let b = sim.core.submit(102, 2, now).unwrap();
                sim.pump();
                assert_eq!(sim.sent[&1], vec![a, b], "and keeps taking tasks meanwhile");
                sim.core.ready(2, now);
                sim.pump();
                assert!(
                    sim.drained.contains(&1),
                    "drained once the replacement is ready"
                );
                sim.core.reply(1, b, Ok(2), now);
                sim.core.exited(1, now);
                sim.pump();
                assert_eq!(
                    sim.outcomes[&b],
                    Ok(2),
                    "the reply from a draining worker is kept"
                );
                assert_eq!(sim.core.counters.crashes, 0);
            },
        );
    }

    #[test]
    fn a_worker_that_cannot_start_opens_the_breaker_and_fails_fast() {
        run(
            Rules {
                workers: 1,
                ..rules()
            },
            |sim| {
                // The first failure counts against the slot only; from the
                // second in a row on, each also counts for the breaker (3).
                for _ in 0..4 {
                    let w = *sim.spawned.last().unwrap();
                    let now = sim.now;
                    sim.core.spawn_failed(w, Why::new("program not found"), now);
                    sim.pump();
                    sim.advance(Duration::from_secs(1));
                }
                assert!(matches!(
                    sim.core.breaker_state(),
                    BreakerState::Open { .. }
                ));
                let degraded = sim.core.degraded().unwrap();
                assert_eq!(degraded.to_string(), "workers cannot start");
                let cause = std::error::Error::source(&*degraded.cause())
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                assert_eq!(cause, "program not found");
                let spawned = sim.spawned.len();
                sim.advance(Duration::from_millis(500));
                assert_eq!(sim.spawned.len(), spawned, "no spinning while open");
                assert!(matches!(
                    sim.core.submit(101, 1, sim.now),
                    Err(Refused::Unavailable(_))
                ));
            },
        );
    }

    #[test]
    fn a_worker_that_served_is_replaced_at_once_and_a_crash_loop_backs_off_in_its_slot_only() {
        run(
            Rules {
                recycle_after_tasks: None,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.ready(1, now);
                sim.core.ready(2, now);
                let t = sim.core.submit(101, 1, now).unwrap();
                sim.pump();
                assert_eq!(sim.sent[&1], vec![t]);
                sim.core.reply(1, t, Ok(1), now);
                // Worker 1 served a task: its death is replaced at once.
                sim.core.exited(1, now);
                sim.pump();
                assert_eq!(sim.spawned, vec![1, 2, 3], "replaced with no backoff");
                // Worker 2 dies having done nothing, right after its start:
                // a crash loop, so its slot waits; slot 1 is not held back.
                sim.core.exited(2, now);
                sim.pump();
                assert_eq!(sim.spawned, vec![1, 2, 3], "slot 2 backs off");
                sim.core.ready(3, now);
                sim.core.exited(3, now);
                sim.pump();
                assert_eq!(sim.spawned, vec![1, 2, 3], "a crash loop in slot 1 too");
                sim.advance(Duration::from_millis(100));
                assert_eq!(
                    sim.spawned.len(),
                    5,
                    "both slots refill after their backoff"
                );
                assert_eq!(sim.core.counters.crashes, 3);
                assert_eq!(sim.core.counters.restarts, 3);
                assert_eq!(sim.core.breaker_state(), BreakerState::Closed);
            },
        );
    }

    #[test]
    fn a_worker_killed_while_starting_counts_against_its_slot_not_the_breaker() {
        run(
            Rules {
                workers: 1,
                breaker: BreakerConfig::new(1, Duration::from_secs(10)),
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.exited(1, now); // killed (say by the OOM killer) while starting
                sim.pump();
                assert_eq!(sim.core.breaker_state(), BreakerState::Closed);
                assert!(sim.core.degraded().is_none());
                assert_eq!(sim.core.counters.start_failures, 1);
                assert_eq!(sim.spawned, vec![1], "the slot backs off first");
                sim.advance(Duration::from_millis(100));
                assert_eq!(sim.spawned, vec![1, 2]);
                // A second failed start in a row in that slot: starts keep failing.
                let now = sim.now;
                sim.core.exited(2, now);
                sim.pump();
                assert!(matches!(
                    sim.core.breaker_state(),
                    BreakerState::Open { .. }
                ));
                assert!(sim.core.degraded().is_some());
            },
        );
    }

    #[test]
    fn a_cancel_tells_the_worker_and_only_a_hard_one_kills_it_after_the_grace() {
        run(
            Rules {
                workers: 1,
                recycle_after_tasks: None,
                task_timeout: None,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                sim.core.ready(1, now);
                let soft = sim.core.submit(101, 1, now).unwrap();
                let hard = sim.core.submit(102, 2, now).unwrap();
                sim.pump();
                sim.core.cancel(soft, false, now);
                sim.core.cancel(hard, true, now);
                sim.pump();
                assert!(sim.told.contains(&(1, soft)) && sim.told.contains(&(1, hard)));
                // The worker abandons the soft one.
                sim.core.cancelled(1, soft, now);
                sim.pump();
                assert_eq!(sim.outcomes[&soft], Err(Failure::Cancelled));
                assert!(!sim.ended.contains(&1));
                // It cannot stop the hard one: killed once the grace is over.
                sim.advance(Duration::from_millis(999));
                assert!(!sim.ended.contains(&1));
                sim.advance(Duration::from_millis(1));
                assert_eq!(sim.outcomes[&hard], Err(Failure::Cancelled));
                assert!(sim.ended.contains(&1));
                assert_eq!(sim.core.counters.cancelled, 2);
            },
        );
    }

    #[test]
    fn a_reply_for_an_unknown_task_is_a_protocol_error() {
        run(rules(), |sim| {
            let now = sim.now;
            sim.core.ready(1, now);
            let t = sim.core.submit(101, 1, now).unwrap();
            sim.pump();
            let w = sim
                .sent
                .iter()
                .find(|(_, ts)| ts.contains(&t))
                .map(|(&w, _)| w)
                .unwrap();
            sim.core.reply(w, 999, Ok(0), now);
            sim.pump();
            assert!(
                matches!(&sim.outcomes[&t], Err(Failure::Protocol(m)) if m.to_string().contains("999"))
            );
            assert!(sim.ended.contains(&w));
        });
    }

    #[test]
    fn a_cancelled_queued_task_never_starts() {
        run(
            Rules {
                workers: 1,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                let t = sim.core.submit(101, 1, now).unwrap();
                sim.core.cancel(t, true, now);
                sim.core.ready(1, now);
                sim.pump();
                assert!(sim.sent[&1].is_empty());
                assert_eq!(sim.outcomes[&t], Err(Failure::Cancelled));
                assert_eq!(sim.core.counters.cancelled, 1);
            },
        );
    }

    #[test]
    fn queue_capacity_is_enforced() {
        run(
            Rules {
                queue_capacity: 2,
                ..rules()
            },
            |sim| {
                let now = sim.now;
                assert!(sim.core.submit(101, 1, now).is_ok());
                assert!(sim.core.submit(102, 2, now).is_ok());
                assert_eq!(sim.core.submit(103, 3, now), Err(Refused::QueueFull));
            },
        );
    }
}
