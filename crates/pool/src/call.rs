//! Per-call options, cancel tokens and task handles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::core::{TaskId, TaskRules};
use crate::error::PoolError;
use crate::pool::Canceller;

/// One call's own settings, for [`Pool::call_with`](crate::Pool::call_with),
/// [`Pool::start`](crate::Pool::start) and, per item, [`Pool::map_with`](crate::Pool::map_with).
/// `None` (the default) takes the pool's.
///
/// ```
/// # use std::time::Duration;
/// use forkyard_pool::{CallOptions, CancelToken};
/// let cancel = CancelToken::new();
/// let options = CallOptions {
///     retries: Some(3),
///     cancel: Some(cancel.clone()),
///     ..CallOptions::within(Duration::from_secs(2))
/// };
/// # drop(options);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// When the call must have its outcome, queued or running: a task still
    /// queued then fails without running, a running one fails and its
    /// worker's process group is killed (its other tasks re-run uncharged);
    /// either way with [`PoolError::TimedOut`]. For a batch, the whole batch's deadline.
    pub deadline: Option<Instant>,
    /// The longest one run may take (the pool's
    /// [`task_timeout`](crate::Builder::task_timeout) otherwise); for a batch, per item.
    pub timeout: Option<Duration>,
    /// How many times it re-runs when its worker dies (the pool's
    /// [`retries`](crate::Builder::retries) otherwise).
    pub retries: Option<u32>,
    /// Cancels the call when cancelled (see [`Pool::call_with`](crate::Pool::call_with)).
    pub cancel: Option<CancelToken>,
}

impl CallOptions {
    /// Options with a deadline `budget` from now.
    pub fn within(budget: Duration) -> CallOptions {
        CallOptions {
            deadline: Some(Instant::now() + budget),
            ..CallOptions::default()
        }
    }

    pub(crate) fn task_rules(&self) -> TaskRules {
        TaskRules {
            retries: self.retries,
            timeout: self.timeout,
            deadline: self.deadline,
        }
    }
}

/// Cancels the calls and batches it was given to (in [`CallOptions::cancel`]).
/// Clones share the state: cancelling one cancels them all.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<TokenState>);

#[derive(Debug, Default)]
struct TokenState {
    cancelled: AtomicBool,
    notify: Notify,
}

/// Resolves once its token is cancelled.
pub(crate) type Cancelled = Pin<Box<dyn Future<Output = ()> + Send>>;

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every call and batch this token was given to, now and later.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`cancel`](CancelToken::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// A future that resolves once the token is cancelled.
    pub(crate) fn cancelled_owned(&self) -> Cancelled {
        let state = self.0.clone();
        Box::pin(async move {
            loop {
                // Registered before the check, so a cancel in between is not missed.
                let notified = state.notify.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if state.cancelled.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        })
    }
}

/// A queued or running task, from [`Pool::start`](crate::Pool::start):
/// await it for its outcome. Dropping it cancels the task as dropping a
/// [`call`](crate::Pool::call) does (its worker is told; no kill).
#[must_use = "dropping a TaskHandle cancels its task"]
pub struct TaskHandle<Resp> {
    id: TaskId,
    rx: oneshot::Receiver<Result<Resp, PoolError>>,
    token: Option<Cancelled>,
    cancel: Canceller,
    finished: bool,
}

impl<Resp> std::fmt::Debug for TaskHandle<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<Resp> TaskHandle<Resp> {
    pub(crate) fn new(
        id: TaskId,
        rx: oneshot::Receiver<Result<Resp, PoolError>>,
        token: Option<CancelToken>,
        cancel: Canceller,
    ) -> Self {
        TaskHandle {
            id,
            rx,
            token: token.map(|t| t.cancelled_owned()),
            cancel,
            finished: false,
        }
    }

    /// The task's id: the one in [`PoolEvent`](crate::PoolEvent)s and in the
    /// [`ShutdownReport`](crate::ShutdownReport).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancels the task, killing its worker after the cancel grace if it
    /// cannot stop it (see [`Pool::call_with`](crate::Pool::call_with));
    /// awaiting the handle then gives its outcome, [`PoolError::Cancelled`]
    /// unless it had already ended.
    pub fn cancel(&self) {
        (self.cancel)(self.id, true);
    }
}

impl<Resp> Future for TaskHandle<Resp> {
    type Output = Result<Resp, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(token) = &mut this.token
            && token.as_mut().poll(cx).is_ready()
        {
            this.token = None;
            (this.cancel)(this.id, true);
        }
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(outcome) => {
                this.finished = true;
                Poll::Ready(outcome.unwrap_or(Err(PoolError::ShuttingDown)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Resp> Drop for TaskHandle<Resp> {
    fn drop(&mut self) {
        if !self.finished {
            (self.cancel)(self.id, false);
        }
    }
}
