//! The pool's event stream: what it does, as typed events, for monitors,
//! dashboards and a user's own logging.
//!
//! [`Pool::subscribe`](crate::Pool::subscribe) returns a [`Subscription`].
//! Events go out on a bounded broadcast channel: a subscriber that falls
//! behind never slows the pool down; it loses the oldest events and is told
//! how many with [`PoolEvent::Lagged`]. With no subscriber the pool builds no
//! event at all (one relaxed atomic load per lock taken).
//!
//! Events are sent under the pool's lock, so every subscriber sees them in
//! the order the pool decided them: a task is `Submitted` before it is
//! `Dispatched`, `Dispatched` before `Finished`, a worker `Spawned` before it
//! is `Ready` and `Exited` last.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use forkyard_child::Exit;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::{FailureKind, RecycleReason};

/// One thing the pool did. Task and worker ids are the pool's own (task ids
/// are never reused; worker ids neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum PoolEvent {
    /// A task entered the queue.
    Submitted {
        /// The task.
        task: u64,
    },
    /// A task left the queue for a worker.
    Dispatched {
        /// The task.
        task: u64,
        /// The worker that runs it.
        worker: u64,
        /// How long it waited in the queue (since it was submitted, or re-queued).
        queue_wait: Duration,
        /// 1 for its first run, 2 for its first retry, ...
        attempt: u32,
    },
    /// A task got its one outcome.
    Finished {
        /// The task.
        task: u64,
        /// The worker it last ran on, if it ran.
        worker: Option<u64>,
        /// Time from its last dispatch to its outcome, if it ran.
        service: Option<Duration>,
        /// Time from its submission to its outcome.
        end_to_end: Duration,
        /// What the outcome was.
        outcome: Outcome,
    },
    /// A task whose worker died goes back to the queue to run again.
    Retried {
        /// The task.
        task: u64,
        /// The worker that died with it.
        worker: u64,
        /// The attempt that was lost.
        attempt: u32,
    },
    /// A worker process was started.
    WorkerSpawned {
        /// The worker.
        worker: u64,
        /// Its pid.
        pid: u32,
        /// Whether it replaces another (crashed, killed or recycled) worker.
        replacement: bool,
    },
    /// A worker said it is ready.
    WorkerReady {
        /// The worker.
        worker: u64,
        /// Time from its spawn to its `Ready`.
        spawn_to_ready: Duration,
    },
    /// A worker was sampled (resident memory and CPU time so far).
    WorkerSampled {
        /// The worker.
        worker: u64,
        /// Resident memory, in bytes.
        rss_bytes: u64,
        /// User plus system CPU time since it started.
        cpu: Duration,
    },
    /// A worker is due for recycling (it drains once its replacement is ready).
    WorkerRecycled {
        /// The worker.
        worker: u64,
        /// Which rule retired it.
        reason: RecycleReason,
    },
    /// A worker's process ended and was reaped.
    WorkerExited {
        /// The worker.
        worker: u64,
        /// How the pool sees the end.
        cause: ExitCause,
        /// The exit status, with its rusage.
        exit: Box<Exit>,
    },
    /// The pool's size was changed ([`Pool::resize`](crate::Pool::resize)).
    Resized {
        /// The size before.
        from: usize,
        /// The size now.
        to: usize,
    },
    /// The circuit breaker opened: no worker starts until it closes.
    BreakerOpened {
        /// Whether an operator opened it ([`Pool::open_breaker`](crate::Pool::open_breaker)),
        /// rather than failed starts.
        operator: bool,
    },
    /// The circuit breaker closed: workers start again.
    BreakerClosed {
        /// Whether an operator closed it ([`Pool::close_breaker`](crate::Pool::close_breaker)),
        /// rather than a successful trial start.
        operator: bool,
    },
    /// The pool began to shut down ([`Pool::shutdown`](crate::Pool::shutdown),
    /// [`Pool::drain`](crate::Pool::drain)).
    ShuttingDown {
        /// Whether queued tasks still run (`Drain`) or are cancelled.
        drain: bool,
        /// How long tasks get before workers are stopped.
        grace: Duration,
    },
    /// This subscriber fell behind and missed `missed` events. Produced by
    /// [`Subscription::recv`] only, never sent by the pool.
    Lagged {
        /// How many events were lost.
        missed: u64,
    },
}

/// A task's outcome, as a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It returned a result.
    Completed,
    /// It failed.
    Failed(FailureKind),
    /// Its caller stopped waiting.
    Cancelled,
}

impl Outcome {
    /// `completed`, `cancelled`, or the failure kind in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }
}

/// Why a worker's process ended, as the pool sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// It died unexpectedly while serving (counted in `Stats::crashes`).
    Crashed,
    /// It died or was killed before it was ready (counted in `Stats::start_failures`).
    StartFailed,
    /// It drained and exited: recycled, removed by a resize, or at shutdown.
    Drained,
    /// The pool killed it because a task on it ran past its deadline, or a
    /// task cancelled on it did not stop within the cancel grace.
    TimedOut,
    /// The pool killed it because it broke the protocol.
    Protocol,
    /// The pool stopped it at shutdown (or the last handle was dropped).
    Shutdown,
}

impl ExitCause {
    /// The cause in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::Crashed => "crashed",
            ExitCause::StartFailed => "start_failed",
            ExitCause::Drained => "drained",
            ExitCause::TimedOut => "timed_out",
            ExitCause::Protocol => "protocol",
            ExitCause::Shutdown => "shutdown",
        }
    }
}

/// The sending side, kept by the pool.
pub(crate) struct Emitter {
    tx: broadcast::Sender<PoolEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Emitter {
    pub(crate) fn new(capacity: usize) -> Emitter {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Emitter {
            tx,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether anyone listens (checked before building events).
    pub(crate) fn observed(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn send(&self, event: PoolEvent) {
        let _ = self.tx.send(event);
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            subscribers: self.subscribers.clone(),
        }
    }
}

/// A subscriber's end of the pool's event stream; made by
/// [`Pool::subscribe`](crate::Pool::subscribe). Sees the events sent after
/// it was made.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<PoolEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next event; [`PoolEvent::Lagged`] if this subscriber fell behind
    /// and events were lost; `None` once the pool is gone and every event
    /// was read.
    pub async fn recv(&mut self) -> Option<PoolEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(PoolEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<PoolEvent> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(PoolEvent::Lagged { missed })
            }
            Err(_) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
