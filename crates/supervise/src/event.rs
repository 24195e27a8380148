//! Typed lifecycle events and status snapshots.

use std::fmt;
use std::time::Duration;

use crate::breaker::BreakerState;
use crate::policy::ExitReport;

/// Something that happened in a supervisor, in the order it decided it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// Time since the root supervisor started.
    pub at: Duration,
    /// Path of the supervisor that decided it: `"root"`, `"root/db"` for a nested one.
    pub supervisor: String,
    /// The child it is about, if any.
    pub child: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// Why a supervisor asked a child to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Someone called [`Supervisor::stop_child`](crate::Supervisor::stop_child).
    Manual,
    /// The supervisor is shutting down.
    Shutdown,
    /// A sibling failed under one_for_all or rest_for_one.
    Sibling,
    /// Its liveness probe failed too often.
    Unhealthy,
    /// It did not become ready in time.
    NotReady,
    /// A rolling restart: its replacement is ready.
    Recycle,
    /// The supervisor gave up and is stopping everything.
    GiveUp,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Manual => "manual stop",
            StopReason::Shutdown => "shutdown",
            StopReason::Sibling => "sibling failed",
            StopReason::Unhealthy => "unhealthy",
            StopReason::NotReady => "not ready in time",
            StopReason::Recycle => "replaced",
            StopReason::GiveUp => "supervisor gave up",
        })
    }
}

/// Which kind of health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeRole {
    /// Gates "started": the child is ready once it passes.
    Readiness,
    /// Watches a ready child: failing it restarts the child.
    Liveness,
}

impl fmt::Display for ProbeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeRole::Readiness => "readiness",
            ProbeRole::Liveness => "liveness",
        })
    }
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A process (or nested supervisor) was started; not ready yet unless it has no readiness
    /// probe, in which case `Ready` follows at once.
    Spawned {
        /// Its pid (0 for a nested supervisor, here and in the other events).
        pid: u32,
    },
    /// Starting it failed before it ran (no such program, permission denied ...).
    SpawnFailed {
        /// The error.
        error: String,
    },
    /// It passed its readiness probe.
    Ready {
        /// Its pid.
        pid: u32,
        /// Time from spawn to ready.
        after: Duration,
    },
    /// A probe failed (liveness failures below the threshold, for the record).
    ProbeFailed {
        /// Which probe.
        role: ProbeRole,
        /// Consecutive failures so far.
        consecutive: u32,
        /// What went wrong.
        detail: String,
    },
    /// It failed its liveness probe `failures` times in a row and is being restarted.
    Unhealthy {
        /// Its pid.
        pid: u32,
        /// Consecutive failures.
        failures: u32,
        /// The last probe's error.
        detail: String,
    },
    /// It did not become ready (readiness failures or start timeout): a failed start.
    NotReady {
        /// Its pid.
        pid: u32,
        /// Why.
        detail: String,
    },
    /// The supervisor asked it to stop.
    Stopping {
        /// Its pid.
        pid: u32,
        /// Why.
        reason: StopReason,
    },
    /// It ended.
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended, with resource usage.
        exit: ExitReport,
        /// How long it had run.
        uptime: Duration,
        /// Whether the supervisor had asked it to stop.
        expected: bool,
    },
    /// It will be started again after `after`.
    Restarting {
        /// The backoff delay.
        after: Duration,
        /// Consecutive failures counted by its backoff.
        attempt: u32,
        /// Why, in words.
        reason: String,
    },
    /// It stays down: it ended and its restart type says not to restart it, or it was stopped.
    Down {
        /// Why.
        reason: String,
    },
    /// Its circuit breaker opened: no restart before `retry_after` has passed.
    BreakerOpened {
        /// Failures counted in the window.
        failures: u32,
        /// Time until the half-open trial.
        retry_after: Duration,
    },
    /// Its breaker is half-open: one trial start.
    BreakerHalfOpen,
    /// Its breaker closed again: the trial succeeded.
    BreakerClosed,
    /// Optional children are down; the group keeps serving without them.
    Degraded {
        /// Names of the optional children that are down.
        which: Vec<String>,
        /// Why, per child, joined with "; ".
        why: String,
    },
    /// No optional child is down any more.
    Recovered,
    /// A rolling restart replaced it: the new instance was ready before the old one stopped.
    Replaced {
        /// The old instance's pid.
        old_pid: u32,
        /// The new instance's pid.
        new_pid: u32,
    },
    /// A rolling restart failed to bring up a replacement; the old instance keeps running.
    ReplaceFailed {
        /// Why.
        detail: String,
    },
    /// All children have been started (the initial start is complete).
    Running,
    /// The supervisor gave up: its restart budget ran out or a critical child's breaker opened.
    /// It stops every child and escalates to its parent.
    GaveUp {
        /// Why.
        reason: String,
    },
    /// The supervisor has stopped every child and ended.
    Stopped,
    /// The event stream's reader fell behind and missed this many events.
    Lagged {
        /// How many were dropped.
        missed: u64,
    },
}

/// Where a child stands, in a [`ChildStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildState {
    /// Waiting for its turn in the start order.
    NotStarted,
    /// Spawned, not ready yet.
    Starting,
    /// Ready and running.
    Running,
    /// Asked to stop, not exited yet.
    Stopping,
    /// Waiting out its backoff before a restart.
    BackingOff {
        /// Time left.
        restart_in: Duration,
    },
    /// Its circuit breaker is open.
    BreakerOpen {
        /// Time until the trial start.
        retry_in: Duration,
    },
    /// Stopped on request, or the supervisor stopped.
    Stopped,
    /// Ended and not restarted (transient after a clean exit, or temporary).
    Exited,
}

/// A snapshot of one child.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChildStatus {
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: ChildState,
    /// The running instance's pid (`None` for a nested supervisor).
    pub pid: Option<u32>,
    /// How long the running instance has been up (since spawn).
    pub uptime: Option<Duration>,
    /// How many times it has been started again after its first start.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<ExitReport>,
    /// Whether the group can serve without it.
    pub optional: bool,
    /// Its circuit breaker, if it has one.
    pub breaker: Option<BreakerState>,
}

/// Whether a supervisor's group is fully up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Every child that should run is running (or on its way back).
    Healthy,
    /// Optional children are down; the rest keeps serving.
    Degraded {
        /// Names of the optional children that are down.
        which: Vec<String>,
        /// Why, per child.
        why: String,
    },
}

impl fmt::Display for EventKind {
    /// One line in words: `exited pid 41: exit code 1 after 310ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Spawned { pid } => write!(f, "spawned{}", Pid(*pid)),
            EventKind::SpawnFailed { error } => write!(f, "spawn failed: {error}"),
            EventKind::Ready { pid, after } => {
                write!(f, "ready{} after {}", Pid(*pid), fmt_duration(*after))
            }
            EventKind::ProbeFailed {
                role,
                consecutive,
                detail,
            } => write!(f, "{role} probe failed ({consecutive} in a row): {detail}"),
            EventKind::Unhealthy {
                pid,
                failures,
                detail,
            } => write!(
                f,
                "unhealthy{}: liveness failed {failures} times in a row ({detail})",
                Pid(*pid)
            ),
            EventKind::NotReady { pid, detail } => write!(f, "not ready{}: {detail}", Pid(*pid)),
            EventKind::Stopping { pid, reason } => write!(f, "stopping{}: {reason}", Pid(*pid)),
            EventKind::Exited {
                pid,
                exit,
                uptime,
                expected,
            } => {
                write!(
                    f,
                    "exited{}: {exit} after {}",
                    Pid(*pid),
                    fmt_duration(*uptime)
                )?;
                if *expected {
                    f.write_str(" (as asked)")?;
                }
                Ok(())
            }
            EventKind::Restarting {
                after,
                attempt,
                reason,
            } => write!(
                f,
                "restarting in {} (attempt {attempt}): {reason}",
                fmt_duration(*after)
            ),
            EventKind::Down { reason } => write!(f, "down: {reason}"),
            EventKind::BreakerOpened {
                failures,
                retry_after,
            } => write!(
                f,
                "breaker opened after {failures} failures; trial in {}",
                fmt_duration(*retry_after)
            ),
            EventKind::BreakerHalfOpen => f.write_str("breaker half-open: trial start"),
            EventKind::BreakerClosed => f.write_str("breaker closed"),
            EventKind::Degraded { which, why } => {
                write!(f, "degraded, down: {} ({why})", which.join(", "))
            }
            EventKind::Recovered => f.write_str("recovered: no optional child is down"),
            EventKind::Replaced { old_pid, new_pid } => {
                write!(f, "replaced pid {old_pid} by ready pid {new_pid}")
            }
            EventKind::ReplaceFailed { detail } => {
                write!(f, "replacement failed, old instance kept: {detail}")
            }
            EventKind::Running => f.write_str("running: all children started"),
            EventKind::GaveUp { reason } => write!(f, "gave up: {reason}"),
            EventKind::Stopped => f.write_str("stopped"),
            EventKind::Lagged { missed } => write!(f, "missed {missed} events (reader too slow)"),
        }
    }
}

/// " pid 41", or nothing for a nested supervisor (pid 0).
struct Pid(u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            pid => write!(f, " pid {pid}"),
        }
    }
}

impl fmt::Display for ChildState {
    /// `running`, `backing off (restart in 400ms)`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildState::NotStarted => f.write_str("not started"),
            ChildState::Starting => f.write_str("starting"),
            ChildState::Running => f.write_str("running"),
            ChildState::Stopping => f.write_str("stopping"),
            ChildState::BackingOff { restart_in } => {
                write!(f, "backing off (restart in {})", fmt_duration(*restart_in))
            }
            ChildState::BreakerOpen { retry_in } => {
                write!(f, "breaker open (trial in {})", fmt_duration(*retry_in))
            }
            ChildState::Stopped => f.write_str("stopped"),
            ChildState::Exited => f.write_str("exited, not restarted"),
        }
    }
}

impl fmt::Display for Event {
    /// `  1.250s root/web: exited pid 41: exit code 1 after 310ms`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>3}.{:03}s {}",
            self.at.as_secs(),
            self.at.subsec_millis(),
            self.supervisor
        )?;
        if let Some(child) = &self.child {
            write!(f, "/{child}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// A human-friendly duration: `850ms`, `1.5s`, `2m05s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        if d.as_micros() < 1_000 && !d.is_zero() {
            return format!("{}us", d.as_micros());
        }
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let secs = d.as_secs();
        if secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(1_000), "1s"),
            (Duration::from_millis(1_549), "1.5s"),
            (Duration::from_millis(59_990), "60s"),
            (Duration::from_secs(125), "2m05s"),
            (Duration::from_secs(3_600), "60m"),
        ];
        for (d, want) in cases {
            assert_eq!(fmt_duration(d), want);
        }
    }
}
