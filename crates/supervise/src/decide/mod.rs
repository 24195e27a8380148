//! The pure decision core: `step(input, now) -> actions`.
//!
//! Nothing here does I/O or reads a clock. The runtime (the event loop in `crate::supervisor`)
//! feeds [`Input`]s (a child was spawned, exited, a probe answered, a timer fired, someone
//! asked for a stop) together with the current instant, and carries out the [`Action`]s that
//! come back (spawn, stop, probe, set a timer, publish an event). Because of that the whole policy (restart
//! types, intensity, backoff, breakers, strategies, probes, rolling restarts, shutdown) is
//! tested in virtual time in `tests.rs`, without a process or a sleep.
//!
//! # How a child moves
//!
//! ```text
//!            spawn            ready              exit / unhealthy
//!   Idle ─────────▶ Up(starting) ──▶ Up(ready) ─────────────────▶ failure()
//!    ▲                                                              │
//!    │  timer                    restart wanted & budget left       │
//!    └──────── Backoff ◀────────────────────────────────────────────┤
//!                                 not wanted: Down; budget gone: give up
//! ```
//!
//! Ordered work (the initial start, group restarts, shutdown, rolling restarts) goes through a
//! queue of [`Step`]s that is advanced after every input: a `Start` step waits until its child
//! is ready, a `Stop` step until its child has exited, so starts happen in order and stops in
//! reverse order, one at a time, exactly as OTP does.
//!
//! Design note: every timer and probe carries a token or an instance id. A timer that fires
//! after the state it was set for has moved on (the child was stopped during its backoff, a
//! probe answered for an instance that has since exited) is recognised as stale and ignored;
//! that is what makes "stop during backoff never restarts" hold without cancelling anything in
//! the runtime.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffState};
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::budget::RestartBudget;
use crate::event::{
    ChildState, ChildStatus, Event, EventKind, Health, ProbeRole, StopReason, fmt_duration,
};
use crate::explain::{Explanation, Journal};
use crate::policy::{CleanExits, ExitReport, Restart, Strategy};

#[cfg(test)]
mod tests;

/// Timing and thresholds of a probe (Kubernetes semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeTiming {
    pub(crate) initial_delay: Duration,
    pub(crate) period: Duration,
    pub(crate) timeout: Duration,
    /// Consecutive failures that count as failed; `None`: never (a readiness probe then relies
    /// on the start timeout alone).
    pub(crate) failure_threshold: Option<u32>,
    /// Consecutive successes needed to become ready (liveness: always 1).
    pub(crate) success_threshold: u32,
}

/// What the core needs to know about one child.
#[derive(Debug, Clone)]
pub(crate) struct ChildPolicy {
    pub(crate) name: String,
    pub(crate) restart: Restart,
    pub(crate) clean: CleanExits,
    pub(crate) backoff: Backoff,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) optional: bool,
    pub(crate) readiness: Option<ProbeTiming>,
    pub(crate) liveness: Option<ProbeTiming>,
    /// Readiness is announced by `Input::Ready` (a nested supervisor's initial start).
    pub(crate) notify_ready: bool,
    /// Not ready within this long: a failed start. `None`: no limit.
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) seed: u64,
}

/// What the core needs to know about the group.
#[derive(Debug, Clone)]
pub(crate) struct GroupPolicy {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: u32,
    pub(crate) period: Duration,
    pub(crate) children: Vec<ChildPolicy>,
}

/// Something that happened, fed to [`Core::step`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    /// Start the group (children in order).
    Start,
    /// The runtime spawned an instance.
    Spawned {
        child: usize,
        instance: u64,
        pid: u32,
    },
    /// The runtime could not spawn an instance.
    SpawnFailed {
        child: usize,
        instance: u64,
        error: String,
    },
    /// An instance ended.
    Exited {
        child: usize,
        instance: u64,
        exit: ExitReport,
    },
    /// An instance announced that it is ready (for children with `notify_ready`).
    Ready { child: usize, instance: u64 },
    /// A probe finished (the runtime applies the probe's timeout and reports it as an error).
    Probed {
        child: usize,
        instance: u64,
        role: ProbeRole,
        result: Result<(), String>,
    },
    /// A timer set by [`Action::SetTimer`] fired.
    Timer { token: u64 },
    /// Stop a child and keep it down.
    StopChild(usize),
    /// Start a stopped child again (forgets its backoff and resets its breaker).
    StartChild(usize),
    /// Replace a child (or, with `None`, every child in order) with a new instance that is
    /// ready before the old one is stopped.
    Roll(Option<usize>),
    /// Stop every child in reverse order and end.
    Shutdown,
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Spawn a new instance of a child; answer with `Spawned` or `SpawnFailed`.
    Spawn { child: usize, instance: u64 },
    /// Stop an instance according to the child's shutdown policy; answer with `Exited`.
    Stop {
        child: usize,
        instance: u64,
        reason: StopReason,
    },
    /// Run one probe with its timeout; answer with `Probed`.
    Probe {
        child: usize,
        instance: u64,
        role: ProbeRole,
    },
    /// Fire `Timer { token }` at `at`.
    SetTimer { token: u64, at: Instant },
    /// The timer is no longer needed (firing it anyway is harmless).
    CancelTimer { token: u64 },
    /// Publish an event.
    Emit(Event),
    /// Every child is down; the supervisor has ended with this outcome.
    Done(Outcome),
}

/// How a supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Asked to shut down.
    Shutdown,
    /// Gave up and escalates.
    GaveUp(String),
}

/// What an instance is doing.
#[derive(Debug, Clone)]
struct Instance {
    id: u64,
    pid: Option<u32>,
    spawned_at: Instant,
    ready_at: Option<Instant>,
    stopping: Option<StopReason>,
    /// Start-timeout timer.
    deadline: Option<u64>,
    readiness: ProbeCounter,
    liveness: ProbeCounter,
}

impl Instance {
    fn new(id: u64, now: Instant) -> Self {
        Instance {
            id,
            pid: None,
            spawned_at: now,
            ready_at: None,
            stopping: None,
            deadline: None,
            readiness: ProbeCounter::default(),
            liveness: ProbeCounter::default(),
        }
    }

    fn pid(&self) -> u32 {
        self.pid.unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default)]
struct ProbeCounter {
    timer: Option<u64>,
    in_flight: bool,
    started: Option<Instant>,
    ok: u32,
    failed: u32,
}

/// Where a child stands (the core's own view; [`ChildState`] is the public summary).
#[derive(Debug, Clone)]
enum Run {
    /// Not running, nothing scheduled: waiting for a `Start` step or never started.
    Idle,
    /// An instance exists (spawning, starting, ready or stopping).
    Up(Instance),
    /// Waiting for a restart timer. `trial`: the breaker is open and the timer is its half-open
    /// moment.
    Backoff {
        until: Instant,
        token: u64,
        trial: bool,
    },
    /// Stays down.
    Down(DownReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownReason {
    /// Stopped on request.
    Stopped,
    /// Ended and its restart type says not to restart it.
    Finished,
    /// A temporary child that ended or was taken down with a sibling.
    Removed,
    /// The supervisor shut down or gave up.
    Ended,
}

#[derive(Debug, Clone)]
struct Child {
    policy: ChildPolicy,
    run: Run,
    /// A rolling restart's new instance, while the old one still runs.
    successor: Option<Instance>,
    backoff: BackoffState,
    breaker: Option<CircuitBreaker>,
    spawns: u32,
    last_exit: Option<ExitReport>,
    /// Why it is down, for `Degraded` (set when its breaker opens).
    trouble: Option<String>,
    /// Why the last rolling restart failed to bring up a replacement (cleared when one starts).
    roll_failure: Option<String>,
    journal: Journal,
}

/// Ordered work.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Start the child (if idle) and wait until it is ready (or down).
    Start(usize),
    /// Stop the child (if up) and wait until it has exited.
    Stop(usize, StopReason),
    /// Wait until a moment (a group restart's backoff).
    Wait { until: Instant, token: Option<u64> },
    /// Replace the child by a new instance; `successor` once spawned.
    Roll {
        child: usize,
        successor: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Not started yet.
    Idle,
    /// The initial start is in progress.
    Starting,
    /// Up.
    Running,
    /// Stopping everything; ends with this outcome.
    Stopping(Outcome),
    /// Ended.
    Done,
}

/// Why a child is being handled by `failure()`.
#[derive(Debug, Clone)]
enum Cause {
    Exit(ExitReport),
    SpawnFailed(String),
    Unhealthy,
    NotReady,
}

impl Cause {
    fn describe(&self) -> String {
        match self {
            Cause::Exit(exit) => exit.to_string(),
            Cause::SpawnFailed(error) => format!("spawn failed: {error}"),
            Cause::Unhealthy => "unhealthy".to_string(),
            Cause::NotReady => "not ready in time".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
enum TimerPurpose {
    Restart(usize),
    StartDeadline {
        child: usize,
        instance: u64,
    },
    Probe {
        child: usize,
        instance: u64,
        role: ProbeRole,
    },
    QueueWait,
}

/// The decision core of one supervisor.
#[derive(Debug)]
pub(crate) struct Core {
    name: String,
    epoch: Instant,
    strategy: Strategy,
    budget: RestartBudget,
    children: Vec<Child>,
    queue: VecDeque<Step>,
    mode: Mode,
    next_instance: u64,
    next_token: u64,
    timers: BTreeMap<u64, TimerPurpose>,
    /// The degraded set last announced (name, why).
    degraded: Vec<(String, String)>,
    out: Vec<Action>,
    now: Instant,
    outcome: Option<Outcome>,
}

impl Core {
    /// A core for `policy`. `epoch` is the moment event times are measured from (the root
    /// supervisor's start, so nested supervisors' events line up).
    pub(crate) fn new(policy: GroupPolicy, epoch: Instant) -> Self {
        let children = policy
            .children
            .into_iter()
            .map(|p| Child {
                backoff: BackoffState::new(p.backoff, p.seed),
                breaker: p.breaker.map(CircuitBreaker::new),
                policy: p,
                run: Run::Idle,
                successor: None,
                spawns: 0,
                last_exit: None,
                trouble: None,
                roll_failure: None,
                journal: Journal::default(),
            })
            .collect();
        Core {
            name: policy.name,
            epoch,
            strategy: policy.strategy,
            budget: RestartBudget::new(policy.intensity, policy.period),
            children,
            queue: VecDeque::new(),
            mode: Mode::Idle,
            next_instance: 1,
            next_token: 1,
            timers: BTreeMap::new(),
            degraded: Vec::new(),
            out: Vec::new(),
            now: epoch,
            outcome: None,
        }
    }

    /// Feed one input at `now`; returns what to do, in order.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        // Monotonic even if a caller's clock is not.
        self.now = now.max(self.now);
        if self.mode != Mode::Done {
            self.handle(input);
            self.advance();
            self.update_degraded();
        }
        std::mem::take(&mut self.out)
    }

    /// Is the supervisor done (every child down after a shutdown or give-up)?
    pub(crate) fn is_done(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Has the initial start completed (or the supervisor ended)?
    pub(crate) fn is_started(&self) -> bool {
        !matches!(self.mode, Mode::Idle | Mode::Starting)
    }

    /// Is the group up and not stopping?
    pub(crate) fn is_running(&self) -> bool {
        self.mode == Mode::Running
    }

    /// How the supervisor ends, once it has begun stopping everything.
    pub(crate) fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Is the child down (not running and nothing scheduled to run it)?
    pub(crate) fn is_down(&self, child: usize) -> bool {
        let c = &self.children[child];
        c.successor.is_none() && matches!(c.run, Run::Down(_) | Run::Idle)
    }

    /// Is the child ready (and not being stopped)?
    pub(crate) fn is_ready(&self, child: usize) -> bool {
        match &self.children[child].run {
            Run::Up(inst) => inst.ready_at.is_some() && inst.stopping.is_none(),
            _ => false,
        }
    }

    /// Is a rolling restart of this child (or of everything) still queued or running?
    pub(crate) fn is_rolling(&self, child: Option<usize>) -> bool {
        self.queue.iter().any(|step| match step {
            Step::Roll { child: c, .. } => child.is_none_or(|want| want == *c),
            _ => false,
        })
    }

    /// Why the child's last rolling restart failed, if it did.
    pub(crate) fn roll_failure(&self, child: usize) -> Option<&str> {
        self.children[child].roll_failure.as_deref()
    }

    /// The group's health.
    pub(crate) fn health(&self) -> Health {
        if self.degraded.is_empty() {
            Health::Healthy
        } else {
            Health::Degraded {
                which: self.degraded.iter().map(|(n, _)| n.clone()).collect(),
                why: join_why(&self.degraded),
            }
        }
    }

    /// A snapshot of every child.
    pub(crate) fn status(&self, now: Instant) -> Vec<ChildStatus> {
        self.children
            .iter()
            .map(|c| {
                let (state, pid, uptime) = match &c.run {
                    Run::Idle => (ChildState::NotStarted, None, None),
                    Run::Up(inst) => {
                        let state = if inst.stopping.is_some() {
                            ChildState::Stopping
                        } else if inst.ready_at.is_some() {
                            ChildState::Running
                        } else {
                            ChildState::Starting
                        };
                        (
                            state,
                            inst.pid.filter(|&pid| pid != 0),
                            Some(now.saturating_duration_since(inst.spawned_at)),
                        )
                    }
                    Run::Backoff { until, trial, .. } => {
                        let left = until.saturating_duration_since(now);
                        let state = if *trial {
                            ChildState::BreakerOpen { retry_in: left }
                        } else {
                            ChildState::BackingOff { restart_in: left }
                        };
                        (state, None, None)
                    }
                    Run::Down(DownReason::Finished | DownReason::Removed) => {
                        (ChildState::Exited, None, None)
                    }
                    Run::Down(DownReason::Stopped | DownReason::Ended) => {
                        (ChildState::Stopped, None, None)
                    }
                };
                ChildStatus {
                    name: c.policy.name.clone(),
                    state,
                    pid,
                    uptime,
                    restarts: c.spawns.saturating_sub(1),
                    last_exit: c.last_exit.clone(),
                    optional: c.policy.optional,
                    breaker: c.breaker.as_ref().map(CircuitBreaker::state),
                }
            })
            .collect()
    }

    /// The recent decisions about a child.
    pub(crate) fn explain(&self, child: usize, now: Instant) -> Explanation {
        let c = &self.children[child];
        let status = &self.status(now)[child];
        Explanation {
            child: c.policy.name.clone(),
            state: format!("{}, {} restarts", status.state, status.restarts),
            decisions: c.journal.entries(),
        }
    }

    // ---- input handling -------------------------------------------------------------------

    fn handle(&mut self, input: Input) {
        match input {
            Input::Start => {
                if self.mode == Mode::Idle {
                    self.mode = Mode::Starting;
                    self.queue = (0..self.children.len()).map(Step::Start).collect();
                }
            }
            Input::Spawned {
                child,
                instance,
                pid,
            } => self.on_spawned(child, instance, pid),
            Input::SpawnFailed {
                child,
                instance,
                error,
            } => self.on_spawn_failed(child, instance, error),
            Input::Exited {
                child,
                instance,
                exit,
            } => self.on_exited(child, instance, exit),
            Input::Ready { child, instance } => {
                if self
                    .children
                    .get(child)
                    .is_some_and(|c| c.policy.notify_ready)
                    && let Some(inst) = self.instance_mut(child, instance)
                    && inst.ready_at.is_none()
                    && inst.stopping.is_none()
                {
                    self.become_ready(child, instance);
                }
            }
            Input::Probed {
                child,
                instance,
                role,
                result,
            } => self.on_probed(child, instance, role, result),
            Input::Timer { token } => self.on_timer(token),
            Input::StopChild(child) => self.on_stop_child(child),
            Input::StartChild(child) => self.on_start_child(child),
            Input::Roll(which) => self.on_roll(which),
            Input::Shutdown => self.stop_all(Outcome::Shutdown),
        }
    }

    fn on_spawned(&mut self, child: usize, instance: u64, pid: u32) {
        let now = self.now;
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        inst.pid = Some(pid);
        let stopping = inst.stopping;
        self.emit(child, EventKind::Spawned { pid });
        if let Some(reason) = stopping {
            // Asked to stop while it was being spawned: stop it now.
            self.out.push(Action::Stop {
                child,
                instance,
                reason,
            });
            self.emit(child, EventKind::Stopping { pid, reason });
            return;
        }
        let policy = &self.children[child].policy;
        let (readiness, notify) = (policy.readiness, policy.notify_ready);
        if readiness.is_none() && !notify {
            self.become_ready(child, instance);
            return;
        }
        if let Some(at) = policy.start_timeout.and_then(|t| now.checked_add(t)) {
            let deadline = self.set_timer(at, TimerPurpose::StartDeadline { child, instance });
            if let Some(inst) = self.instance_mut(child, instance) {
                inst.deadline = Some(deadline);
            }
        }
        if let Some(timing) = readiness {
            self.schedule_probe(
                child,
                instance,
                ProbeRole::Readiness,
                now + timing.initial_delay,
            );
        }
    }

    fn on_spawn_failed(&mut self, child: usize, instance: u64, error: String) {
        if self.is_successor(child, instance) {
            let s = self.children[child].successor.take();
            self.emit(
                child,
                EventKind::SpawnFailed {
                    error: error.clone(),
                },
            );
            if s.is_some_and(|s| s.stopping.is_none()) {
                self.replace_failed(child, format!("spawn failed: {error}"));
            }
            return;
        }
        let Some(inst) = self.current(child, instance) else {
            return;
        };
        let stopping = inst.stopping;
        self.emit(
            child,
            EventKind::SpawnFailed {
                error: error.clone(),
            },
        );
        match stopping {
            Some(reason) => self.stopped(child, reason),
            None => self.failure(child, Cause::SpawnFailed(error)),
        }
    }

    fn on_exited(&mut self, child: usize, instance: u64, exit: ExitReport) {
        let now = self.now;
        if self.is_successor(child, instance) {
            let Some(s) = self.children[child].successor.take() else {
                return;
            };
            self.emit(
                child,
                EventKind::Exited {
                    pid: s.pid(),
                    exit: exit.clone(),
                    uptime: now.saturating_duration_since(s.spawned_at),
                    expected: s.stopping.is_some(),
                },
            );
            self.cancel_instance_timers(&s);
            if s.stopping.is_none() || s.stopping == Some(StopReason::NotReady) {
                self.replace_failed(child, format!("replacement ended: {exit}"));
            }
            return;
        }
        let Some(inst) = self.current(child, instance).cloned() else {
            return;
        };
        self.cancel_instance_timers(&inst);
        let uptime = now.saturating_duration_since(inst.spawned_at);
        self.children[child].last_exit = Some(exit.clone());
        self.emit(
            child,
            EventKind::Exited {
                pid: inst.pid(),
                exit: exit.clone(),
                uptime,
                expected: inst.stopping.is_some(),
            },
        );
        match inst.stopping {
            Some(StopReason::Unhealthy) => self.failure(child, Cause::Unhealthy),
            Some(StopReason::NotReady) => self.failure(child, Cause::NotReady),
            Some(StopReason::Recycle) => self.adopt_successor(child, &inst),
            Some(reason) => self.stopped(child, reason),
            None => {
                // Already due to be stopped by a queued group restart: its exit changes
                // nothing about the plan, and must not start a second group restart.
                let queued_stop = self.queue.iter().find_map(|s| match s {
                    Step::Stop(c, reason) if *c == child => Some(*reason),
                    _ => None,
                });
                if let Some(reason) = queued_stop {
                    self.note(
                        child,
                        format!("exited: {exit} after {} up", fmt_duration(uptime)),
                        format!("already due to be stopped ({reason}): nothing more to do"),
                    );
                    self.stopped(child, reason);
                } else {
                    self.failure(child, Cause::Exit(exit));
                }
            }
        }
    }

    fn on_probed(
        &mut self,
        child: usize,
        instance: u64,
        role: ProbeRole,
        result: Result<(), String>,
    ) {
        let now = self.now;
        let policy = &self.children[child].policy;
        let Some(timing) = (match role {
            ProbeRole::Readiness => policy.readiness,
            ProbeRole::Liveness => policy.liveness,
        }) else {
            return;
        };
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        if inst.stopping.is_some() {
            return;
        }
        let pid = inst.pid();
        let counter = match role {
            ProbeRole::Readiness => &mut inst.readiness,
            ProbeRole::Liveness => &mut inst.liveness,
        };
        if !counter.in_flight {
            return;
        }
        counter.in_flight = false;
        let next_at = counter
            .started
            .map_or(now, |s| (s + timing.period).max(now));
        match result {
            Ok(()) => {
                counter.ok = counter.ok.saturating_add(1);
                counter.failed = 0;
                let ok = counter.ok;
                match role {
                    ProbeRole::Readiness if ok >= timing.success_threshold => {
                        self.become_ready(child, instance);
                    }
                    ProbeRole::Liveness => {
                        // Under a half-open breaker each passing liveness probe is a further
                        // successful trial (becoming ready was the first).
                        self.breaker_success(child);
                        self.schedule_probe(child, instance, role, next_at);
                    }
                    ProbeRole::Readiness => self.schedule_probe(child, instance, role, next_at),
                }
            }
            Err(detail) => {
                counter.ok = 0;
                counter.failed = counter.failed.saturating_add(1);
                let failed = counter.failed;
                let over = timing.failure_threshold.is_some_and(|t| failed >= t);
                match role {
                    ProbeRole::Readiness if over => {
                        self.emit(
                            child,
                            EventKind::NotReady {
                                pid,
                                detail: format!(
                                    "readiness probe failed {failed} times in a row: {detail}"
                                ),
                            },
                        );
                        self.stop_instance(child, instance, StopReason::NotReady);
                    }
                    ProbeRole::Readiness => self.schedule_probe(child, instance, role, next_at),
                    ProbeRole::Liveness => {
                        self.emit(
                            child,
                            EventKind::ProbeFailed {
                                role,
                                consecutive: failed,
                                detail: detail.clone(),
                            },
                        );
                        if over {
                            self.emit(
                                child,
                                EventKind::Unhealthy {
                                    pid,
                                    failures: failed,
                                    detail: detail.clone(),
                                },
                            );
                            self.note(
                                child,
                                format!("liveness probe failed {failed} times in a row: {detail}"),
                                "unhealthy: stop it and handle it as a failure".into(),
                            );
                            self.stop_instance(child, instance, StopReason::Unhealthy);
                        } else {
                            self.schedule_probe(child, instance, role, next_at);
                        }
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, token: u64) {
        let Some(purpose) = self.timers.remove(&token) else {
            return;
        };
        let now = self.now;
        match purpose {
            TimerPurpose::Restart(child) => {
                let Run::Backoff {
                    token: t, trial, ..
                } = self.children[child].run
                else {
                    return;
                };
                if t != token || !self.may_spawn() {
                    return;
                }
                if trial {
                    let c = &mut self.children[child];
                    if let Some(b) = c.breaker.as_mut()
                        && !b.admit(now)
                        && let BreakerState::Open { until } = b.state()
                    {
                        // Not time yet (cannot happen with our own timers; be safe).
                        let token = self.set_timer(until, TimerPurpose::Restart(child));
                        self.children[child].run = Run::Backoff {
                            until,
                            token,
                            trial: true,
                        };
                        return;
                    }
                    self.emit(child, EventKind::BreakerHalfOpen);
                    self.note(
                        child,
                        "breaker open time is up".into(),
                        "half-open: one trial start".into(),
                    );
                }
                self.children[child].run = Run::Idle;
                self.spawn(child);
            }
            TimerPurpose::StartDeadline { child, instance } => {
                let Some(inst) = self.instance_mut(child, instance) else {
                    return;
                };
                if inst.ready_at.is_some() || inst.stopping.is_some() {
                    return;
                }
                inst.deadline = None;
                let pid = inst.pid();
                let timeout = self.children[child]
                    .policy
                    .start_timeout
                    .unwrap_or_default();
                self.emit(
                    child,
                    EventKind::NotReady {
                        pid,
                        detail: format!("not ready within {}", fmt_duration(timeout)),
                    },
                );
                self.stop_instance(child, instance, StopReason::NotReady);
            }
            TimerPurpose::Probe {
                child,
                instance,
                role,
            } => {
                let Some(inst) = self.instance_mut(child, instance) else {
                    return;
                };
                let due = inst.stopping.is_none()
                    && match role {
                        ProbeRole::Readiness => inst.ready_at.is_none(),
                        ProbeRole::Liveness => inst.ready_at.is_some(),
                    };
                let counter = match role {
                    ProbeRole::Readiness => &mut inst.readiness,
                    ProbeRole::Liveness => &mut inst.liveness,
                };
                if counter.timer != Some(token) {
                    return;
                }
                counter.timer = None;
                if !due {
                    return;
                }
                counter.in_flight = true;
                counter.started = Some(now);
                self.out.push(Action::Probe {
                    child,
                    instance,
                    role,
                });
            }
            TimerPurpose::QueueWait => {
                if let Some(Step::Wait { token: t, .. }) = self.queue.front_mut()
                    && *t == Some(token)
                {
                    *t = None;
                }
            }
        }
    }

    fn on_stop_child(&mut self, child: usize) {
        self.queue.retain(|s| match s {
            Step::Start(c) | Step::Roll { child: c, .. } => *c != child,
            _ => true,
        });
        match self.children[child].run.clone() {
            Run::Idle => {
                self.children[child].run = Run::Down(DownReason::Stopped);
                self.emit(
                    child,
                    EventKind::Down {
                        reason: "stopped on request".into(),
                    },
                );
            }
            Run::Backoff { token, .. } => {
                self.cancel_timer(token);
                self.children[child].run = Run::Down(DownReason::Stopped);
                self.note(
                    child,
                    "stop requested during backoff".into(),
                    "cancel the restart; stays down".into(),
                );
                self.emit(
                    child,
                    EventKind::Down {
                        reason: "stopped on request".into(),
                    },
                );
            }
            Run::Up(_) => {
                self.note(
                    child,
                    "stop requested".into(),
                    "stop it; a manual stop is never followed by a restart".into(),
                );
                self.stop_child_instances(child, StopReason::Manual);
            }
            Run::Down(_) => {}
        }
        // A replacement from a rolling restart goes too.
        self.stop_child_instances(child, StopReason::Manual);
    }

    fn on_start_child(&mut self, child: usize) {
        if !self.may_spawn() {
            return;
        }
        let c = &mut self.children[child];
        match c.run.clone() {
            Run::Down(DownReason::Removed) => {}
            Run::Down(_) | Run::Idle => {
                c.backoff.reset();
                if let Some(b) = c.breaker.as_mut() {
                    b.reset();
                }
                c.trouble = None;
                c.run = Run::Idle;
                self.note(
                    child,
                    "start requested".into(),
                    "start it now; backoff and breaker forgotten".into(),
                );
                self.spawn(child);
            }
            Run::Backoff { token, .. } => {
                self.cancel_timer(token);
                let c = &mut self.children[child];
                c.backoff.reset();
                if let Some(b) = c.breaker.as_mut() {
                    b.reset();
                }
                c.trouble = None;
                c.run = Run::Idle;
                self.note(
                    child,
                    "start requested during backoff".into(),
                    "start it now; backoff and breaker forgotten".into(),
                );
                self.spawn(child);
            }
            Run::Up(_) => {}
        }
    }

    fn on_roll(&mut self, which: Option<usize>) {
        if !self.may_spawn() {
            return;
        }
        let children: Vec<usize> = match which {
            Some(c) => vec![c],
            None => (0..self.children.len()).collect(),
        };
        for child in children {
            self.queue.push_back(Step::Roll {
                child,
                successor: None,
            });
        }
    }

    // ---- decisions ------------------------------------------------------------------------

    /// A child failed (exited on its own, was unhealthy, never became ready, could not be
    /// spawned). Decide: restart (alone or with siblings, after a backoff), leave it down,
    /// open its breaker, or give up.
    fn failure(&mut self, child: usize, cause: Cause) {
        let now = self.now;
        let what = cause.describe();
        // The instance is gone; every branch below decides what the child does next.
        let uptime_note = match std::mem::replace(&mut self.children[child].run, Run::Idle) {
            Run::Up(inst) => format!(
                " after {} up",
                fmt_duration(now.saturating_duration_since(inst.spawned_at))
            ),
            _ => String::new(),
        };
        let event = match &cause {
            Cause::Exit(_) => format!("exited: {what}{uptime_note}"),
            _ => format!("failed: {what}{uptime_note}"),
        };

        if matches!(self.mode, Mode::Stopping(_) | Mode::Done) {
            self.children[child].run = Run::Down(DownReason::Ended);
            self.note(
                child,
                event,
                "the supervisor is stopping: stays down".into(),
            );
            return;
        }

        let c = &self.children[child];
        let abnormal = match &cause {
            Cause::Exit(exit) => !c.policy.clean.is_clean(&exit.ending),
            Cause::SpawnFailed(_) | Cause::Unhealthy | Cause::NotReady => true,
        };
        let restart = c.policy.restart;
        let wanted = match restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !wanted {
            let (down, why) = match restart {
                Restart::Temporary => (
                    DownReason::Removed,
                    "temporary children are never restarted",
                ),
                _ => (
                    DownReason::Finished,
                    "transient children are restarted only after an abnormal exit, and this one was clean",
                ),
            };
            self.children[child].run = Run::Down(down);
            self.note(child, event, format!("stays down: {why}"));
            self.emit(
                child,
                EventKind::Down {
                    reason: format!("{what}; {why}"),
                },
            );
            if let Some(s) = self.children[child].successor.as_ref().map(|s| s.id) {
                self.stop_instance(child, s, StopReason::Shutdown);
            }
            return;
        }
        let rule = match restart {
            Restart::Permanent => "permanent restarts after any exit".to_string(),
            _ => format!("transient restarts after an abnormal exit ({what})"),
        };

        // The breaker sees every failure first.
        let optional = self.children[child].policy.optional;
        if let Some(b) = self.children[child].breaker.as_mut() {
            b.record_failure(now);
            if let BreakerState::Open { until } = b.state() {
                let failures = b.recent_failures();
                let window = b.config().window();
                let retry_after = until.saturating_duration_since(now);
                self.emit(
                    child,
                    EventKind::BreakerOpened {
                        failures,
                        retry_after,
                    },
                );
                let why = format!(
                    "breaker open after {failures} failures within {} (last: {what})",
                    fmt_duration(window)
                );
                if optional {
                    self.note(
                        child,
                        event,
                        format!(
                            "{why}: optional, so it stays down and the group is degraded; trial start in {}",
                            fmt_duration(retry_after)
                        ),
                    );
                    self.children[child].trouble = Some(why);
                    self.drop_successor(child);
                    let token = self.set_timer(until, TimerPurpose::Restart(child));
                    self.children[child].run = Run::Backoff {
                        until,
                        token,
                        trial: true,
                    };
                } else {
                    let name = self.children[child].policy.name.clone();
                    let reason = format!("critical child {name}: {why}");
                    self.note(child, event, format!("give up and escalate: {reason}"));
                    self.give_up(reason);
                }
                return;
            }
        }

        // Critical children spend the group's restart budget; optional ones are governed by
        // their breaker alone, so a flapping cache cannot take the group down.
        let mut budget_note = String::new();
        if !optional {
            match self.budget.record(now) {
                Ok(used) => {
                    budget_note = format!(
                        "; intensity {used}/{} within {}",
                        self.budget.intensity(),
                        fmt_duration(self.budget.period())
                    );
                }
                Err(exceeded) => {
                    let name = self.children[child].policy.name.clone();
                    let reason = format!(
                        "restart intensity exceeded: {} restarts within {} (at most {} allowed); last: {name} {what}",
                        exceeded.restarts,
                        fmt_duration(self.budget.period()),
                        self.budget.intensity(),
                    );
                    self.note(child, event, format!("give up and escalate: {reason}"));
                    self.give_up(reason);
                    return;
                }
            }
        }

        let delay = self.children[child].backoff.failed(now);
        let attempt = self.children[child].backoff.attempt();
        let group = !optional && self.strategy != Strategy::OneForOne;
        if group {
            self.drop_successor(child);
        }

        // A rolling restart was bringing up a replacement: it becomes the instance.
        if !group
            && let Some(s) = self.children[child].successor.take()
            && s.stopping.is_none()
        {
            self.note(
                child,
                event,
                format!("{rule}{budget_note}: its replacement from the rolling restart takes over"),
            );
            let ready = s.ready_at.is_some();
            let id = s.id;
            self.children[child].run = Run::Up(s);
            if ready {
                self.start_liveness(child, id);
            }
            return;
        }

        if !group {
            let until = now + delay;
            let token = self.set_timer(until, TimerPurpose::Restart(child));
            self.children[child].run = Run::Backoff {
                until,
                token,
                trial: false,
            };
            self.note(
                child,
                event,
                format!(
                    "restart in {}: {rule}; backoff attempt {attempt}{budget_note}",
                    fmt_duration(delay)
                ),
            );
            self.emit(
                child,
                EventKind::Restarting {
                    after: delay,
                    attempt,
                    reason: what,
                },
            );
        } else {
            self.group_restart(child, delay, attempt, event, rule, budget_note, what);
        }
    }

    /// one_for_all / rest_for_one: stop the siblings in scope in reverse order, wait out the
    /// backoff, start them all again in order.
    #[allow(clippy::too_many_arguments)]
    fn group_restart(
        &mut self,
        origin: usize,
        delay: Duration,
        attempt: u32,
        event: String,
        rule: String,
        budget_note: String,
        what: String,
    ) {
        let now = self.now;
        let scope: Vec<usize> = match self.strategy {
            Strategy::RestForOne => (origin..self.children.len()).collect(),
            _ => (0..self.children.len()).collect(),
        };
        self.children[origin].run = Run::Idle;
        let mut queue: VecDeque<Step> = scope
            .iter()
            .rev()
            .filter(|&&j| j != origin)
            .map(|&j| Step::Stop(j, StopReason::Sibling))
            .collect();
        queue.push_back(Step::Wait {
            until: now + delay,
            token: None,
        });
        queue.extend(scope.iter().map(|&j| Step::Start(j)));
        // Keep what was still to be started outside the scope (an initial start in progress).
        for step in std::mem::take(&mut self.queue) {
            match step {
                Step::Start(j) | Step::Roll { child: j, .. } if !scope.contains(&j) => {
                    queue.push_back(step)
                }
                _ => {}
            }
        }
        self.queue = queue;
        let names: Vec<&str> = scope
            .iter()
            .map(|&j| self.children[j].policy.name.as_str())
            .collect();
        let names = names.join(", ");
        self.note(
            origin,
            event,
            format!(
                "{} restart in {}: {rule}; stop [{names}] in reverse order, start again in order; backoff attempt {attempt}{budget_note}",
                self.strategy,
                fmt_duration(delay)
            ),
        );
        self.emit(
            origin,
            EventKind::Restarting {
                after: delay,
                attempt,
                reason: format!("{what}; {} restarts {names}", self.strategy),
            },
        );
    }

    /// An instance that was asked to stop has exited (or never spawned).
    fn stopped(&mut self, child: usize, reason: StopReason) {
        let c = &mut self.children[child];
        let (down, note) = match reason {
            StopReason::Manual => (Run::Down(DownReason::Stopped), "stopped on request"),
            StopReason::Sibling if c.policy.restart == Restart::Temporary => (
                Run::Down(DownReason::Removed),
                "temporary: removed instead of restarted with its siblings",
            ),
            StopReason::Sibling => (Run::Idle, "stopped for a group restart"),
            _ => (Run::Down(DownReason::Ended), "stopped with the supervisor"),
        };
        c.run = down;
        if let Run::Down(_) = c.run {
            self.emit(
                child,
                EventKind::Down {
                    reason: note.into(),
                },
            );
        }
    }

    fn give_up(&mut self, reason: String) {
        self.emit_group(EventKind::GaveUp {
            reason: reason.clone(),
        });
        self.stop_all(Outcome::GaveUp(reason));
    }

    /// Stop everything in reverse start order, then end with `outcome`.
    fn stop_all(&mut self, outcome: Outcome) {
        if matches!(self.mode, Mode::Stopping(_) | Mode::Done) {
            return;
        }
        let reason = match outcome {
            Outcome::Shutdown => StopReason::Shutdown,
            Outcome::GaveUp(_) => StopReason::GiveUp,
        };
        self.outcome = Some(outcome.clone());
        self.mode = Mode::Stopping(outcome);
        for step in std::mem::take(&mut self.queue) {
            if let Step::Wait { token: Some(t), .. } = step {
                self.cancel_timer(t);
            }
        }
        for child in 0..self.children.len() {
            match self.children[child].run.clone() {
                Run::Backoff { token, .. } => {
                    self.cancel_timer(token);
                    self.children[child].run = Run::Down(DownReason::Ended);
                }
                Run::Idle => self.children[child].run = Run::Down(DownReason::Ended),
                _ => {}
            }
        }
        self.queue = (0..self.children.len())
            .rev()
            .map(|c| Step::Stop(c, reason))
            .collect();
    }

    /// A rolling restart's old instance has exited: the new one takes its place.
    fn adopt_successor(&mut self, child: usize, old: &Instance) {
        match self.children[child].successor.take() {
            Some(s) if s.stopping.is_none() => {
                let id = s.id;
                let new_pid = s.pid();
                let ready = s.ready_at.is_some();
                self.children[child].run = Run::Up(s);
                self.note(
                    child,
                    "rolling restart: old instance exited".into(),
                    format!("the ready replacement (pid {new_pid}) takes over"),
                );
                self.emit(
                    child,
                    EventKind::Replaced {
                        old_pid: old.pid(),
                        new_pid,
                    },
                );
                if ready {
                    self.start_liveness(child, id);
                }
            }
            _ => {
                // The replacement vanished while the old one was stopping: start afresh.
                self.children[child].run = Run::Idle;
                if self.may_spawn() {
                    self.spawn(child);
                }
            }
        }
    }

    fn replace_failed(&mut self, child: usize, detail: String) {
        self.children[child].roll_failure = Some(detail.clone());
        self.note(
            child,
            format!("rolling restart failed: {detail}"),
            "keep the old instance running".into(),
        );
        self.emit(child, EventKind::ReplaceFailed { detail });
    }

    fn become_ready(&mut self, child: usize, instance: u64) {
        let now = self.now;
        let is_successor = self.is_successor(child, instance);
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        inst.ready_at = Some(now);
        let deadline = inst.deadline.take();
        if let Some(t) = inst.readiness.timer.take() {
            self.cancel_timer(t);
        }
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        let pid = inst.pid();
        let after = now.saturating_duration_since(inst.spawned_at);
        if let Some(t) = deadline {
            self.cancel_timer(t);
        }
        self.emit(child, EventKind::Ready { pid, after });
        if is_successor {
            return;
        }
        self.children[child].backoff.up(now);
        self.breaker_success(child);
        self.start_liveness(child, instance);
    }

    fn breaker_success(&mut self, child: usize) {
        let now = self.now;
        let c = &mut self.children[child];
        let Some(b) = c.breaker.as_mut() else {
            return;
        };
        let before = b.state();
        b.record_success(now);
        if !matches!(before, BreakerState::Closed) && b.state() == BreakerState::Closed {
            c.trouble = None;
            self.note(
                child,
                "trial start succeeded".into(),
                "breaker closed".into(),
            );
            self.emit(child, EventKind::BreakerClosed);
        }
    }

    fn start_liveness(&mut self, child: usize, instance: u64) {
        if let Some(timing) = self.children[child].policy.liveness {
            let at = self.now + timing.initial_delay;
            self.schedule_probe(child, instance, ProbeRole::Liveness, at);
        }
    }

    // ---- the queue ------------------------------------------------------------------------

    fn advance(&mut self) {
        let now = self.now;
        loop {
            let Some(step) = self.queue.front().cloned() else {
                match self.mode.clone() {
                    Mode::Starting => {
                        self.mode = Mode::Running;
                        self.emit_group(EventKind::Running);
                    }
                    Mode::Stopping(outcome) if self.all_down() => {
                        self.mode = Mode::Done;
                        for t in std::mem::take(&mut self.timers).into_keys() {
                            self.out.push(Action::CancelTimer { token: t });
                        }
                        self.emit_group(EventKind::Stopped);
                        self.out.push(Action::Done(outcome));
                    }
                    _ => {}
                }
                return;
            };
            let done = match step {
                Step::Start(child) => match &self.children[child].run {
                    Run::Idle => {
                        if self.may_spawn() {
                            self.spawn(child);
                        }
                        false
                    }
                    Run::Up(inst) => inst.ready_at.is_some() && inst.stopping.is_none(),
                    // A broken optional child does not hold up the rest.
                    Run::Backoff { trial: true, .. } => self.children[child].policy.optional,
                    Run::Backoff { .. } => false,
                    Run::Down(_) => true,
                },
                Step::Stop(child, reason) => {
                    if let Run::Backoff { token, .. } = self.children[child].run {
                        self.cancel_timer(token);
                        self.children[child].run = match reason {
                            StopReason::Sibling => Run::Idle,
                            _ => Run::Down(DownReason::Ended),
                        };
                    }
                    self.stop_child_instances(child, reason);
                    !matches!(self.children[child].run, Run::Up(_))
                        && self.children[child].successor.is_none()
                }
                Step::Wait { until, token } => {
                    if now >= until {
                        true
                    } else {
                        if token.is_none() {
                            let t = self.set_timer(until, TimerPurpose::QueueWait);
                            if let Some(Step::Wait { token, .. }) = self.queue.front_mut() {
                                *token = Some(t);
                            }
                        }
                        false
                    }
                }
                Step::Roll { child, successor } => self.advance_roll(child, successor),
            };
            if !done {
                return;
            }
            self.queue.pop_front();
        }
    }

    /// One rolling-restart step; true when it is finished (or has nothing to do).
    fn advance_roll(&mut self, child: usize, successor: Option<u64>) -> bool {
        let c = &self.children[child];
        match successor {
            None => match &c.run {
                Run::Up(inst) if inst.stopping.is_none() && c.successor.is_none() => {
                    if inst.ready_at.is_none() {
                        return false; // let it finish starting first
                    }
                    if !self.may_spawn() {
                        return true;
                    }
                    let id = self.new_instance();
                    let now = self.now;
                    let c = &mut self.children[child];
                    c.successor = Some(Instance::new(id, now));
                    c.spawns += 1;
                    c.roll_failure = None;
                    self.note(
                        child,
                        "rolling restart".into(),
                        "start a replacement; stop the old instance once it is ready".into(),
                    );
                    self.out.push(Action::Spawn {
                        child,
                        instance: id,
                    });
                    if let Some(Step::Roll { successor, .. }) = self.queue.front_mut() {
                        *successor = Some(id);
                    }
                    false
                }
                Run::Up(_) => false,
                _ => true,
            },
            Some(id) => {
                if let Some(s) = &c.successor
                    && s.id == id
                {
                    if s.ready_at.is_some()
                        && let Run::Up(old) = &c.run
                        && old.stopping.is_none()
                    {
                        let old = old.id;
                        self.stop_instance(child, old, StopReason::Recycle);
                    }
                    return false;
                }
                // Either adopted (done) or the replacement failed (done, old kept).
                true
            }
        }
    }

    // ---- helpers --------------------------------------------------------------------------

    /// No instance left, current or replacement.
    fn all_down(&self) -> bool {
        self.children
            .iter()
            .all(|c| !matches!(c.run, Run::Up(_)) && c.successor.is_none())
    }

    fn may_spawn(&self) -> bool {
        matches!(self.mode, Mode::Starting | Mode::Running)
    }

    fn spawn(&mut self, child: usize) {
        let id = self.new_instance();
        let now = self.now;
        let c = &mut self.children[child];
        c.run = Run::Up(Instance::new(id, now));
        c.spawns += 1;
        self.out.push(Action::Spawn {
            child,
            instance: id,
        });
    }

    fn stop_child_instances(&mut self, child: usize, reason: StopReason) {
        if let Run::Up(inst) = &self.children[child].run {
            let id = inst.id;
            self.stop_instance(child, id, reason);
        }
        if let Some(id) = self.children[child].successor.as_ref().map(|s| s.id) {
            self.stop_instance(child, id, reason);
        }
    }

    /// Ask an instance to stop (once; a later, stronger reason replaces the recorded one so
    /// that, for example, a manual stop during an unhealthy stop is never followed by a
    /// restart).
    fn stop_instance(&mut self, child: usize, instance: u64, reason: StopReason) {
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        match inst.stopping {
            Some(previous) => {
                let overrides = matches!(
                    reason,
                    StopReason::Manual | StopReason::Shutdown | StopReason::GiveUp
                ) && !matches!(previous, StopReason::Manual | StopReason::Shutdown);
                if overrides {
                    inst.stopping = Some(reason);
                }
            }
            None => {
                inst.stopping = Some(reason);
                if let Some(pid) = inst.pid {
                    self.out.push(Action::Stop {
                        child,
                        instance,
                        reason,
                    });
                    self.emit(child, EventKind::Stopping { pid, reason });
                }
            }
        }
    }

    fn drop_successor(&mut self, child: usize) {
        if let Some(id) = self.children[child].successor.as_ref().map(|s| s.id) {
            self.stop_instance(child, id, StopReason::Shutdown);
        }
    }

    fn schedule_probe(&mut self, child: usize, instance: u64, role: ProbeRole, at: Instant) {
        let token = self.set_timer(
            at,
            TimerPurpose::Probe {
                child,
                instance,
                role,
            },
        );
        if let Some(inst) = self.instance_mut(child, instance) {
            let counter = match role {
                ProbeRole::Readiness => &mut inst.readiness,
                ProbeRole::Liveness => &mut inst.liveness,
            };
            counter.timer = Some(token);
        }
    }

    fn cancel_instance_timers(&mut self, inst: &Instance) {
        for t in [inst.deadline, inst.readiness.timer, inst.liveness.timer]
            .into_iter()
            .flatten()
        {
            self.cancel_timer(t);
        }
    }

    fn set_timer(&mut self, at: Instant, purpose: TimerPurpose) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.timers.insert(token, purpose);
        self.out.push(Action::SetTimer { token, at });
        token
    }

    fn cancel_timer(&mut self, token: u64) {
        if self.timers.remove(&token).is_some() {
            self.out.push(Action::CancelTimer { token });
        }
    }

    fn new_instance(&mut self) -> u64 {
        let id = self.next_instance;
        self.next_instance += 1;
        id
    }

    fn current(&self, child: usize, instance: u64) -> Option<&Instance> {
        match &self.children.get(child)?.run {
            Run::Up(inst) if inst.id == instance => Some(inst),
            _ => None,
        }
    }

    fn is_successor(&self, child: usize, instance: u64) -> bool {
        self.children
            .get(child)
            .and_then(|c| c.successor.as_ref())
            .is_some_and(|s| s.id == instance)
    }

    fn instance_mut(&mut self, child: usize, instance: u64) -> Option<&mut Instance> {
        let c = self.children.get_mut(child)?;
        if let Run::Up(inst) = &mut c.run
            && inst.id == instance
        {
            return Some(inst);
        }
        c.successor.as_mut().filter(|s| s.id == instance)
    }

    fn note(&mut self, child: usize, event: String, decision: String) {
        let at = self.now.saturating_duration_since(self.epoch);
        tracing::debug!(supervisor = %self.name, child = %self.children[child].policy.name, %event, %decision, "decision");
        self.children[child].journal.record(at, event, decision);
    }

    fn emit(&mut self, child: usize, kind: EventKind) {
        let event = Event {
            at: self.now.saturating_duration_since(self.epoch),
            supervisor: self.name.clone(),
            child: Some(self.children[child].policy.name.clone()),
            kind,
        };
        self.out.push(Action::Emit(event));
    }

    fn emit_group(&mut self, kind: EventKind) {
        let event = Event {
            at: self.now.saturating_duration_since(self.epoch),
            supervisor: self.name.clone(),
            child: None,
            kind,
        };
        self.out.push(Action::Emit(event));
    }

    /// Announce a change in the set of optional children that are down.
    fn update_degraded(&mut self) {
        let now: Vec<(String, String)> = self
            .children
            .iter()
            .filter(|c| c.policy.optional)
            .filter_map(|c| {
                let open = c
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state() != BreakerState::Closed);
                let down = open && !matches!(c.run, Run::Down(_));
                down.then(|| {
                    (
                        c.policy.name.clone(),
                        c.trouble.clone().unwrap_or_else(|| "breaker open".into()),
                    )
                })
            })
            .collect();
        if now == self.degraded || self.mode == Mode::Done {
            return;
        }
        let kind = if now.is_empty() {
            EventKind::Recovered
        } else {
            EventKind::Degraded {
                which: now.iter().map(|(n, _)| n.clone()).collect(),
                why: join_why(&now),
            }
        };
        self.degraded = now;
        self.emit_group(kind);
    }
}

fn join_why(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(n, w)| format!("{n}: {w}"))
        .collect::<Vec<_>>()
        .join("; ")
}
