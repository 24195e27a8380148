//! Errors of forkyard-pool.

use std::time::Duration;

use forkyard_child::Exit;

/// Why a task did not produce a result. Every submitted task ends with exactly
/// one outcome: its result, or one of these.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker running the task died (after any retries the task had).
    #[error("the worker running the task died: {exit}")]
    WorkerCrashed {
        /// How the worker ended, with its rusage.
        exit: Box<Exit>,
        /// The last lines the worker wrote to stderr, if any.
        stderr_tail: Vec<String>,
    },
    /// The task ran longer than the task timeout; its worker was killed.
    #[error("the task timed out after {after:?}")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The task was cancelled before it ran.
    #[error("the task was cancelled")]
    Cancelled,
    /// `try_call` found the queue full.
    #[error("the queue is full")]
    QueueFull,
    /// The pool is shutting down (or has shut down) and did not run the task.
    #[error("the pool is shutting down")]
    ShuttingDown,
    /// The handler returned an error.
    #[error("the task failed: {0}")]
    Task(String),
    /// The worker broke the protocol (garbage, wrong version, a reply for a task
    /// it did not have); it was killed and replaced.
    #[error("the worker broke the protocol: {0}")]
    Protocol(String),
    /// No worker can be started (the circuit breaker is open), so nothing can run.
    #[error("no worker is available: {0}")]
    Unavailable(String),
}

impl PoolError {
    /// The [`FailureKind`](crate::FailureKind) this error is counted under
    /// (`None` for `Cancelled` and `QueueFull`, which are not failures of a task that ran).
    pub fn kind(&self) -> Option<crate::FailureKind> {
        use crate::FailureKind as K;
        Some(match self {
            PoolError::WorkerCrashed { .. } => K::WorkerCrashed,
            PoolError::TimedOut { .. } => K::TimedOut,
            PoolError::ShuttingDown => K::ShuttingDown,
            PoolError::Task(_) => K::Task,
            PoolError::Protocol(_) => K::Protocol,
            PoolError::Unavailable(_) => K::Unavailable,
            PoolError::Cancelled | PoolError::QueueFull => return None,
        })
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No worker command was given.
    #[error("no worker command: call .command(..) or .self_exec(..)")]
    NoCommand,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// `build` was called outside a tokio runtime.
    #[error("build must be called within a tokio runtime")]
    NoRuntime,
    /// The current executable could not be found for `self_exec`.
    #[error("cannot find the current executable")]
    CurrentExe(#[source] std::io::Error),
    /// Not one worker became ready; the pool gave up (its circuit breaker opened).
    #[error("no worker could be started: {0}")]
    NoWorkers(String),
}
