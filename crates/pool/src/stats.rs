//! Statistics: counters, latency histograms, and the snapshot users read.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::core::Failure;

/// How a task failed, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Its worker died while running it (after any retries).
    WorkerCrashed,
    /// It ran past the task timeout.
    TimedOut,
    /// The pool shut down before it ran or finished.
    ShuttingDown,
    /// The handler returned an error.
    Task,
    /// Its worker broke the protocol.
    Protocol,
    /// No worker could be started.
    Unavailable,
    /// Its request could not be sent to a worker (too large for a frame, or
    /// not encodable).
    Unsendable,
}

impl FailureKind {
    /// The kind's name in snake case, as in serialized reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::WorkerCrashed => "worker_crashed",
            FailureKind::TimedOut => "timed_out",
            FailureKind::ShuttingDown => "shutting_down",
            FailureKind::Task => "task",
            FailureKind::Protocol => "protocol",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Unsendable => "unsendable",
        }
    }

    pub(crate) fn of(failure: &Failure) -> FailureKind {
        match failure {
            Failure::Crashed { .. } => FailureKind::WorkerCrashed,
            Failure::TimedOut { .. } => FailureKind::TimedOut,
            Failure::ShuttingDown | Failure::Cancelled => FailureKind::ShuttingDown,
            Failure::Task(_) => FailureKind::Task,
            Failure::Protocol(_) => FailureKind::Protocol,
            Failure::Unavailable(_) => FailureKind::Unavailable,
            Failure::Unsendable(_) => FailureKind::Unsendable,
        }
    }
}

/// What a worker is doing, in a [`WorkerStats`] snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Spawned, not yet ready.
    Starting,
    /// Ready, with no task.
    Idle,
    /// Ready, running tasks.
    Busy,
    /// Due for recycling: still taking tasks until its replacement is ready.
    Retiring,
    /// Finishing its tasks before it exits (recycling or shutdown).
    Draining,
    /// Being stopped or killed; waiting for its exit.
    Ending,
}

impl WorkerState {
    /// The state's name in snake case, as in serialized snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
            WorkerState::Draining => "draining",
            WorkerState::Ending => "ending",
        }
    }

    /// Ready for tasks (idle or busy).
    pub fn is_ready(self) -> bool {
        matches!(self, WorkerState::Idle | WorkerState::Busy)
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters kept by the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: BTreeMap<FailureKind, u64>,
    pub(crate) cancelled: u64,
    pub(crate) retried: u64,
    pub(crate) restarts: u64,
    pub(crate) crashes: u64,
    pub(crate) start_failures: u64,
    pub(crate) recycled: u64,
    pub(crate) protocol_errors: u64,
}

/// Queue-wait and service-time histograms, in microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Histograms {
    pub(crate) queue_wait: Latency,
    pub(crate) service: Latency,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            queue_wait: Latency::new(),
            service: Latency::new(),
        }
    }
}

/// One latency histogram (1 µs to 1 hour, 3 significant digits).
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    fn new() -> Latency {
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    pub(crate) fn summary(&self) -> Percentiles {
        let at = |q: f64| {
            Duration::from_micros(if self.0.is_empty() {
                0
            } else {
                self.0.value_at_quantile(q)
            })
        };
        Percentiles {
            count: self.0.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: Duration::from_micros(self.0.max()),
        }
    }
}

/// Percentiles of a latency distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

/// One worker in a [`Stats`] snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The pool's id for the worker (ids are never reused).
    pub worker: u64,
    /// Its pid, once spawned.
    pub pid: Option<u32>,
    /// What it is doing.
    pub state: WorkerState,
    /// Tasks running on it now.
    pub in_flight: usize,
    /// Tasks it has completed.
    pub completed: u64,
    /// Resident memory at the last sample, in bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time (user + system) at the last sample.
    pub cpu: Option<Duration>,
}

/// A snapshot of the pool's statistics, from [`Pool::stats`](crate::Pool::stats).
///
/// The counts add up: `submitted == completed + failed + cancelled + queued + running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Tasks accepted into the queue.
    pub submitted: u64,
    /// Tasks that returned a result.
    pub completed: u64,
    /// Tasks that failed, by kind.
    pub failed: BTreeMap<FailureKind, u64>,
    /// Tasks whose caller stopped waiting.
    pub cancelled: u64,
    /// Re-runs after a worker crash.
    pub retried: u64,
    /// Workers started to replace others (crashed, killed, recycled).
    pub restarts: u64,
    /// Workers that died unexpectedly.
    pub crashes: u64,
    /// Workers that could not start or never became ready.
    pub start_failures: u64,
    /// Workers retired by a recycling rule.
    pub recycled: u64,
    /// Tasks waiting in the queue.
    pub queued: usize,
    /// Tasks running on workers.
    pub running: usize,
    /// Workers running at least one task.
    pub busy_workers: usize,
    /// Ready workers with nothing to do.
    pub idle_workers: usize,
    /// Time from submission (or re-queueing) to dispatch.
    pub queue_wait: Percentiles,
    /// Time from dispatch to reply.
    pub service_time: Percentiles,
    /// Why the pool cannot start workers, when it cannot.
    pub degraded: Option<String>,
    /// Per-worker figures.
    pub workers: Vec<WorkerStats>,
}

impl Stats {
    /// Total failed tasks, all kinds.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}
