//! Request-response: many calls in flight on one channel, each with its own
//! deadline, cancelled when the caller gives up, in both directions.
//!
//! # The problem
//!
//! A [`Channel`] moves messages; a caller wants *answers*. Doing one request at
//! a time (send, then wait for the next message) wastes the channel while the
//! peer works, and breaks as soon as the peer may also send requests of its own.
//!
//! # The approach
//!
//! Every message is an [`Envelope`]: a `Request` carries a correlation id the
//! sender picked, and the `Response` (or `Failed`) to it carries the same id, so
//! answers can come back in any order. An [`Rpc`] endpoint owns the channel:
//!
//! - a **reader task** routes each `Response` to the caller waiting on its id and
//!   runs each incoming `Request` through your handler, concurrently (at most
//!   [`RpcConfig::max_concurrent`] at once: past that it stops reading, which
//!   pushes back on the peer);
//! - a **writer task** batches outgoing envelopes into few system calls.
//!
//! [`Rpc::call`] waits for the answer up to a deadline. When the deadline passes
//! or the caller drops the future, the endpoint forgets the id (a late answer is
//! discarded) and sends `Cancel`, which aborts the handler on the other side.
//! The deadline also travels with the request, so the peer gives up on its own
//! even if the `Cancel` is lost. Both ends are the same type, so the worker can
//! call the parent exactly as the parent calls the worker.
//!
//! If the peer dies, every call in flight fails at once with [`Error::Closed`];
//! nothing waits for a deadline to notice.
//!
//! ```
//! use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), forkyard_ipc::Error> {
//! // In one process for the example; normally one end comes from `spawn` and
//! // the other from `Channel::from_parent` in the worker.
//! let (parent, worker): (RpcChannel<u64, u64, String, usize>, RpcChannel<String, usize, u64, u64>) =
//!     forkyard_ipc::Channel::pair()?;
//! // The parent answers the worker's `String` requests with their length...
//! let parent = Rpc::new(parent, RpcConfig::default(), |s: String| async move { Ok::<_, String>(s.len()) });
//! // ...and the worker squares numbers, asking the parent something on the way.
//! let worker = Rpc::new_with(worker, RpcConfig::default(), |n: u64, rpc: Rpc<String, usize>| async move {
//!     let len = rpc.call("hello".to_owned()).await.map_err(|e| e.to_string())?;
//!     Ok::<_, String>(n * n + len as u64)
//! });
//! let (a, b) = tokio::join!(parent.call(3), parent.call(4));
//! assert_eq!((a?, b?), (14, 21));
//! # drop(worker);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::Message;
use crate::channel::{Channel, Receiver, Sender};
use crate::error::{Earlier, Error, Result};

/// One message of a request-response conversation, as it travels.
///
/// `Req` is what this side asks, `Resp` what it answers to the peer's
/// requests. The JSON-lines form (for workers in other languages) is
/// `{"Request":{"id":1,"deadline_ms":5000,"body":…}}`, `{"Response":{"id":1,"body":…}}`,
/// `{"Failed":{"id":1,"message":"…"}}` and `{"Cancel":{"id":1}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Envelope<Req, Resp> {
    /// A request; answer with `Response` or `Failed` carrying the same `id`.
    Request {
        /// Correlation id, chosen by the requester, unique among its requests in flight.
        id: u64,
        /// How long the requester will wait, in milliseconds, if it set a deadline.
        deadline_ms: Option<u64>,
        /// The request.
        body: Req,
    },
    /// The answer to the peer's request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: Resp,
    },
    /// The handler of the peer's request `id` failed.
    Failed {
        /// The request's id.
        id: u64,
        /// What went wrong.
        message: String,
    },
    /// The requester no longer wants the answer to its request `id`.
    Cancel {
        /// The request's id.
        id: u64,
    },
}

/// The channel an [`Rpc`] endpoint runs on: it calls with `Call` and gets
/// `Reply`, and answers the peer's `Incoming` requests with `Answer`.
///
/// The peer's channel is `RpcChannel<Incoming, Answer, Call, Reply>`. Use `()` for
/// a direction that carries no requests (the default handler refuses them).
pub type RpcChannel<Call, Reply, Incoming = (), Answer = ()> =
    Channel<Envelope<Call, Answer>, Envelope<Incoming, Reply>>;

/// Settings of an [`Rpc`] endpoint.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_concurrent: usize,
    pub(crate) queue: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            deadline: Some(Duration::from_secs(30)),
            max_concurrent: 1024,
            queue: 1024,
        }
    }
}

impl RpcConfig {
    /// The defaults: 30 s deadline per call, 1024 incoming requests handled at
    /// once, 1024 outgoing envelopes queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deadline of [`Rpc::call`] (default 30 s); `None` waits for ever (or until
    /// the peer goes away).
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Most incoming requests handled at once (default 1024). At the limit the
    /// endpoint stops reading, so a flooding peer waits instead of filling memory.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Outgoing envelopes queued for the writer (default 1024); callers wait
    /// for room beyond that.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

/// A request-response endpoint. Cheap to clone; every clone calls over the same
/// channel.
///
/// Dropping the last clone closes the endpoint: what is queued is written, then
/// the channel is shut, and requests still being handled are abandoned. A
/// worker that only serves keeps its endpoint alive with
/// `rpc.closed().await`.
pub struct Rpc<Call, Reply> {
    inner: Arc<Inner<Call, Reply>>,
}

impl<Call, Reply> Clone for Rpc<Call, Reply> {
    fn clone(&self) -> Self {
        Rpc {
            inner: self.inner.clone(),
        }
    }
}

impl<Call, Reply> fmt::Debug for Rpc<Call, Reply> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field("in_flight", &self.in_flight())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// What the writer task sends: our requests and cancels (typed `Call`) and our
/// answers (typed `Answer`) share one envelope type.
type Outgoing<Call, Answer> = Envelope<Call, Answer>;

/// Type-erased queue into the writer: the `Answer` type is known only to the
/// reader, so callers hold a closure-free sender of already-built requests.
struct Inner<Call, Reply> {
    next_id: AtomicU64,
    state: Mutex<State<Reply>>,
    /// Requests and cancels to the writer.
    requests: mpsc::Sender<Outgoing<Call, Never>>,
    config: RpcConfig,
    closed: watch::Receiver<bool>,
}

/// Stands for "no answer type here": the call side never builds answers.
#[derive(Debug)]
enum Never {}

struct State<Reply> {
    pending: HashMap<u64, oneshot::Sender<Result<Reply>>>,
    /// Why the endpoint stopped, once it has.
    closed: Option<Ending>,
}

impl<Call: Message, Reply: Message> Rpc<Call, Reply> {
    /// Starts an endpoint on `chan`; incoming requests go to `handler`, which
    /// answers `Ok(answer)` or `Err(message)` (sent as `Failed`).
    ///
    /// Spawns the reader and writer tasks, so it must be called inside a tokio
    /// runtime.
    pub fn new<Incoming, Answer, E, H, Fut>(
        chan: Channel<Envelope<Call, Answer>, Envelope<Incoming, Reply>>,
        config: RpcConfig,
        handler: H,
    ) -> Rpc<Call, Reply>
    where
        Incoming: Message,
        Answer: Message,
        E: fmt::Display + Send + 'static,
        H: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Answer, E>> + Send + 'static,
    {
        Self::new_with(chan, config, move |req, _rpc| handler(req))
    }

    /// Like [`Rpc::new`], but the handler also gets this endpoint, to call the
    /// peer back while it handles a request.
    pub fn new_with<Incoming, Answer, E, H, Fut>(
        chan: Channel<Envelope<Call, Answer>, Envelope<Incoming, Reply>>,
        config: RpcConfig,
        handler: H,
    ) -> Rpc<Call, Reply>
    where
        Incoming: Message,
        Answer: Message,
        E: fmt::Display + Send + 'static,
        H: Fn(Incoming, Rpc<Call, Reply>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Answer, E>> + Send + 'static,
    {
        let (tx, rx) = chan.split();
        let (requests_tx, requests_rx) = mpsc::channel(config.queue);
        let (answers_tx, answers_rx) = mpsc::channel(config.queue);
        let (closed_tx, closed_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
            }),
            requests: requests_tx,
            config,
            closed: closed_rx,
        });
        let closed_tx = Arc::new(closed_tx);
        tokio::spawn(write_loop(
            tx,
            requests_rx,
            answers_rx,
            Arc::downgrade(&inner),
            closed_tx.clone(),
        ));
        // The reader holds only a weak reference to the endpoint for routing
        // replies; handlers get a strong clone only while they run.
        tokio::spawn(read_loop(
            rx,
            Arc::downgrade(&inner),
            answers_tx,
            handler,
            closed_tx,
        ));
        Rpc { inner }
    }

    /// Calls the peer and waits for its answer, up to the configured deadline.
    ///
    /// Dropping the future cancels the call: the peer is told, and its handler
    /// is aborted.
    pub async fn call(&self, request: Call) -> Result<Reply> {
        self.call_inner(request, self.inner.config.deadline).await
    }

    /// [`Rpc::call`] with its own deadline.
    pub async fn call_with_deadline(&self, request: Call, deadline: Duration) -> Result<Reply> {
        self.call_inner(request, Some(deadline)).await
    }

    async fn call_inner(&self, request: Call, deadline: Option<Duration>) -> Result<Reply> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.inner.state);
            if let Some(ending) = &state.closed {
                return Err(ending.error());
            }
            state.pending.insert(id, tx);
        }
        // From here on, leaving early (error, deadline, or the caller dropping
        // this future) must forget the id and tell the peer.
        let mut guard = PendingGuard {
            inner: &self.inner,
            id,
            armed: true,
        };
        let envelope = Envelope::Request {
            id,
            deadline_ms: deadline.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
            body: request,
        };
        let answer = async {
            if self.inner.requests.send(envelope).await.is_err() {
                return Err(self.close_reason());
            }
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(self.close_reason()),
            }
        };
        let result = match deadline {
            Some(d) => match tokio::time::timeout(d, answer).await {
                Ok(result) => result,
                Err(_) => Err(Error::DeadlineExceeded(d)),
            },
            None => answer.await,
        };
        if !matches!(result, Err(Error::DeadlineExceeded(_))) {
            // Answered (or the endpoint is closed): nothing to cancel.
            guard.armed = false;
        }
        result
    }

    fn close_reason(&self) -> Error {
        match &lock(&self.inner.state).closed {
            Some(ending) => ending.error(),
            None => Error::Closed,
        }
    }
}

impl<Call, Reply> Rpc<Call, Reply> {
    /// Calls in flight (sent and not yet answered).
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).pending.len()
    }

    /// True once the channel is closed (the peer went away or broke the protocol).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Waits until the channel is closed: the peer went away, or a stream
    /// error ended the conversation. A worker typically serves until then.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.clone();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Reports a reader/writer failure to pending and future callers.
    fn shut(inner: &Inner<Call, Reply>, why: Option<&Error>) {
        let mut state = lock(&inner.state);
        if state.closed.is_none() {
            state.closed = Some(Ending::of(why));
        }
        // Dropping the senders wakes every caller, which reads `closed`.
        state.pending.clear();
    }
}

/// How the conversation ended, as every caller after it is told.
///
/// The reader and the writer each see the end, in either order: a peer that
/// died is end-of-stream to the reader and `EPIPE` (read as [`Error::Closed`])
/// to the writer. Both mean the same event, so both are [`Ending::PeerGone`],
/// and every call fails with the same [`Error::Closed`] whichever half saw it
/// first.
#[derive(Debug, Clone)]
enum Ending {
    PeerGone,
    Broken(Earlier),
}

impl Ending {
    fn of(why: Option<&Error>) -> Ending {
        match why {
            None | Some(Error::Closed) => Ending::PeerGone,
            Some(e) => Ending::Broken(Earlier::of(e)),
        }
    }

    fn error(&self) -> Error {
        match self {
            Ending::PeerGone => Error::Closed,
            Ending::Broken(earlier) => Error::Broken(earlier.clone()),
        }
    }
}

/// Forgets a call that was given up on, and tells the peer.
struct PendingGuard<'a, Call, Reply> {
    inner: &'a Inner<Call, Reply>,
    id: u64,
    armed: bool,
}

impl<Call, Reply> Drop for PendingGuard<'_, Call, Reply> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let was_pending = lock(&self.inner.state).pending.remove(&self.id).is_some();
        if was_pending {
            // Advisory: if the queue is full the peer's own deadline ends the work.
            let _ = self
                .inner
                .requests
                .try_send(Envelope::Cancel { id: self.id });
        }
    }
}

/// Writes requests, cancels and answers, batching what is queued into one flush.
async fn write_loop<Call: Message, Reply, Answer: Message>(
    mut tx: Sender<Envelope<Call, Answer>>,
    mut requests: mpsc::Receiver<Outgoing<Call, Never>>,
    mut answers: mpsc::Receiver<Envelope<Call, Answer>>,
    inner: std::sync::Weak<Inner<Call, Reply>>,
    closed: Arc<watch::Sender<bool>>,
) {
    let result: Result<()> = async {
        loop {
            let first = tokio::select! {
                biased;
                m = answers.recv() => match m {
                    Some(m) => m,
                    // The reader is gone: the conversation is over.
                    None => return Ok(()),
                },
                m = requests.recv() => match m {
                    Some(m) => widen(m),
                    // Every `Rpc` handle is gone: the endpoint closes. Closing
                    // our write side ends the peer's reader, whose end then
                    // ends ours.
                    None => return Ok(()),
                },
            };
            tx.feed(&first).await?;
            // Whatever else is already queued goes out in the same write.
            loop {
                let next = match answers.try_recv() {
                    Ok(m) => m,
                    Err(_) => match requests.try_recv() {
                        Ok(m) => widen(m),
                        Err(_) => break,
                    },
                };
                tx.feed(&next).await?;
            }
            tx.flush().await?;
        }
    }
    .await;
    if let Err(e) = &result {
        tracing::debug!(error = %e, "rpc writer stopped");
        if let Some(inner) = inner.upgrade() {
            Rpc::shut(&inner, Some(e));
        }
        closed.send_replace(true);
    }
    // Dropping `tx` shuts the socket for writing: the peer sees the end.
}

/// A request or cancel built by a caller, as the envelope the writer sends.
fn widen<Call, Answer>(m: Envelope<Call, Never>) -> Envelope<Call, Answer> {
    match m {
        Envelope::Request {
            id,
            deadline_ms,
            body,
        } => Envelope::Request {
            id,
            deadline_ms,
            body,
        },
        Envelope::Cancel { id } => Envelope::Cancel { id },
        Envelope::Failed { id, message } => Envelope::Failed { id, message },
        Envelope::Response { body, .. } => match body {},
    }
}

/// Routes replies to callers and runs incoming requests through the handler.
async fn read_loop<Call, Reply, Incoming, Answer, E, H, Fut>(
    mut rx: Receiver<Envelope<Incoming, Reply>>,
    inner: std::sync::Weak<Inner<Call, Reply>>,
    answers: mpsc::Sender<Envelope<Call, Answer>>,
    handler: H,
    closed: Arc<watch::Sender<bool>>,
) where
    Call: Message,
    Reply: Message,
    Incoming: Message,
    Answer: Message,
    E: fmt::Display + Send + 'static,
    H: Fn(Incoming, Rpc<Call, Reply>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Answer, E>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(
        inner.upgrade().map_or(1, |i| i.config.max_concurrent),
    ));
    let running: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    let outcome: Result<()> = loop {
        let msg = match rx.recv().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) if !e.is_fatal() => {
                // One undecodable envelope: its id is unknown, so nobody can be
                // told; skip it and go on.
                tracing::warn!(error = %e, "rpc: skipped an undecodable message");
                continue;
            }
            Err(e) => break Err(e),
        };
        match msg {
            Envelope::Response { id, body } => deliver(&inner, id, Ok(body)),
            Envelope::Failed { id, message } => deliver(&inner, id, Err(Error::Remote(message))),
            Envelope::Cancel { id } => {
                if let Some(task) = lock(&running).remove(&id) {
                    task.abort();
                }
            }
            Envelope::Request {
                id,
                deadline_ms,
                body,
            } => {
                let Some(rpc) = inner.upgrade().map(|inner| Rpc { inner }) else {
                    // Every handle was dropped: nobody will call any more, but
                    // the peer may still be waiting for answers.
                    let _ = answers
                        .send(Envelope::Failed {
                            id,
                            message: "the endpoint is shutting down".into(),
                        })
                        .await;
                    continue;
                };
                // Backpressure: at the limit, stop reading until a handler ends.
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break Ok(());
                };
                if lock(&running).contains_key(&id) {
                    let _ = answers
                        .send(Envelope::Failed {
                            id,
                            message: format!("request id {id} is already in flight"),
                        })
                        .await;
                    continue;
                }
                let fut = handler(body, rpc);
                let answers = answers.clone();
                let running2 = running.clone();
                // Hold the map's lock across the spawn, so the task cannot
                // finish and unregister before it is registered.
                let mut map = lock(&running);
                let task = tokio::spawn(async move {
                    let answer = match deadline_ms {
                        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), fut)
                            .await
                            .ok(),
                        None => Some(fut.await),
                    };
                    lock(&running2).remove(&id);
                    let envelope = match answer {
                        Some(Ok(body)) => Envelope::Response { id, body },
                        Some(Err(e)) => Envelope::Failed {
                            id,
                            message: e.to_string(),
                        },
                        // Past the requester's deadline: it has stopped waiting.
                        None => return,
                    };
                    let _ = answers.send(envelope).await;
                    drop(permit);
                });
                map.insert(id, task.abort_handle());
            }
        }
    };
    if let Err(e) = &outcome {
        tracing::debug!(error = %e, "rpc reader stopped");
    }
    for (_, task) in lock(&running).drain() {
        task.abort();
    }
    if let Some(inner) = inner.upgrade() {
        Rpc::shut(&inner, outcome.as_ref().err());
    }
    closed.send_replace(true);
    // Dropping `answers` ends the writer once its queue is written.
}

fn deliver<Call, Reply>(
    inner: &std::sync::Weak<Inner<Call, Reply>>,
    id: u64,
    result: Result<Reply>,
) {
    if let Some(inner) = inner.upgrade() {
        // An unknown id is a late answer to a call given up on: dropped.
        if let Some(tx) = lock(&inner.state).pending.remove(&id) {
            let _ = tx.send(result);
        }
    }
}

/// The handler for an endpoint that takes no requests: refuses each one.
pub async fn refuse<T>(_request: T) -> std::result::Result<(), String> {
    Err("this side takes no requests".to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
