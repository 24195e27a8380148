//! Errors of forkyard-pool.

use std::sync::Arc;
use std::time::Duration;

use forkyard_child::Exit;

/// The cause of a [`PoolError::Protocol`] or [`PoolError::Unavailable`] (and of a
/// [`BuildError::NoWorkers`]): an error with its own causes, shared by every caller it
/// fails, so `{:#}` and anyhow chains show each one (the ipc error, the spawn error, the
/// OS error).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

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
    /// The handler returned an error. (Its text crossed from the worker process, where
    /// its own causes stayed.)
    #[error("the task failed: {0}")]
    Task(String),
    /// The worker broke the protocol (garbage, wrong version, a reply for a task
    /// it did not have); it was killed and replaced.
    #[error("the worker broke the protocol")]
    Protocol(#[source] Cause),
    /// No worker can be started (the circuit breaker is open), so nothing can run.
    #[error("no worker is available")]
    Unavailable(#[source] Cause),
    /// The request could not be sent to a worker: its frame is larger than
    /// ipc's maximum, or it could not be encoded. The worker never saw it.
    /// ([`Pool::map`](crate::Pool::map) splits a chunk that is too large and
    /// gives this error only to a single item that is.)
    #[error("the request could not be sent to a worker")]
    Unsendable(#[source] Cause),
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
            PoolError::Unsendable(_) => K::Unsendable,
            PoolError::Cancelled | PoolError::QueueFull => return None,
        })
    }
}

/// Why an operator's request ([`Pool::resize`](crate::Pool::resize),
/// [`Pool::recycle`](crate::Pool::recycle)) was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A pool has at least one worker.
    #[error("a pool needs at least 1 worker, not {0}")]
    ZeroSize(usize),
    /// No ready worker has this id.
    #[error("no ready worker has id {0}")]
    NoSuchWorker(u64),
    /// The pool is shutting down.
    #[error("the pool is shutting down")]
    ShuttingDown,
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
    #[error("no worker could be started")]
    NoWorkers(#[source] Cause),
}

/// A reason the pool gives, with its causes; cheap to clone into every outcome it
/// decides. Compared by what it says, so the pure core's tests can compare outcomes.
#[derive(Clone)]
pub(crate) struct Why(Cause);

impl Why {
    /// A reason of the pool's own, with no deeper cause.
    pub(crate) fn new(message: impl Into<String>) -> Why {
        Why(Arc::new(Because {
            message: message.into(),
            source: None,
        }))
    }

    /// A reason of the pool's own, caused by `cause`.
    pub(crate) fn because(message: impl Into<String>, cause: &Why) -> Why {
        Why(Arc::new(Because {
            message: message.into(),
            source: Some(cause.0.clone()),
        }))
    }

    /// An error from below (ipc, spawning), kept whole.
    pub(crate) fn of(error: impl std::error::Error + Send + Sync + 'static) -> Why {
        Why(Arc::new(error))
    }

    pub(crate) fn cause(&self) -> Cause {
        self.0.clone()
    }
}

impl PartialEq for Why {
    fn eq(&self, other: &Why) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Why {}

impl std::fmt::Debug for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// A message with an optional cause.
#[derive(Debug)]
struct Because {
    message: String,
    source: Option<Cause>,
}

impl std::fmt::Display for Because {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Because {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
