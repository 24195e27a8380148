//! The pure decision core: `step(input, now) -> actions`.
//!
//! Nothing here does I/O or reads a clock. The runtime (the event loop in `crate::supervisor`)
//! feeds [`Input`]s (a child was spawned, exited, a probe answered, a timer fired, someone
//! asked for a stop) together with the current instant, and carries out the [`Action`]s that
//! come back (spawn, stop, probe, set a timer, publish an event). Because of that the whole
//! policy (restart types, intensity, backoff, breakers, strategies, probes, rolling restarts,
//! shutdown) is tested in virtual time in `tests.rs`, without a process or a sleep.
//!
//! The core is one type, [`Core`], split by concern: this file has the vocabulary (inputs,
//! actions, policies, the state of a child) and the entry points (`step`, the queries);
//! `input.rs` handles each [`Input`]; `decisions.rs` decides what a failure, a ready child or
//! a stop leads to; `queue.rs` advances the ordered work; `bookkeeping.rs` keeps instances,
//! timers, the journal and events.
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

use bookkeeping::join_why;

mod bookkeeping;
mod decisions;
mod input;
mod queue;
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
}
