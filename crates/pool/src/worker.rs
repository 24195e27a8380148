//! The worker side: [`serve`] turns a handler into a pool worker process.
//!
//! ```no_run
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { width: u32 }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Image { bytes: Vec<u8> }
//! # fn resize(r: Resize) -> Image { Image { bytes: vec![0; r.width as usize] } }
//! fn main() {
//!     forkyard_pool::worker::serve(|req: Resize| async move { Ok::<_, String>(resize(req)) })
//! }
//! ```
//!
//! The worker reads tasks from its parent over the inherited ipc channel, runs
//! them concurrently (so a pool that pipelines several tasks to a worker gets
//! them overlapped when the handler awaits I/O; CPU-bound handlers run one at
//! a time, as a worker process is one core's worth of work), and answers each
//! exactly once. A handler that panics answers with an error of kind `Panic`
//! naming the panic, and the worker keeps serving. A chunk of a batch
//! (`Pool::map`) runs its items one after the other; the results of items
//! that finish back to back go out together (every 20 ms or so while the
//! chunk runs, and at its end), and as soon as an item has to wait (its
//! handler's future is not ready), whatever finished before it goes out
//! first: a caller never waits on a slow item for results that are ready,
//! and a worker that dies mid-chunk loses only the items since. On `Cancel` the task's future (or the
//! chunk's) is dropped, which stops an async handler at its next `.await`; a
//! handler that never awaits cannot be stopped this way, and the pool kills
//! the worker once its cancel grace has passed. On `Drain` (recycling,
//! shutdown) it stops reading, finishes and answers what it has, and exits 0;
//! when the parent goes away it exits too. The messages are in
//! [`protocol`](crate::protocol).
//!
//! # Errors
//!
//! A handler's error reaches the caller as [`PoolError::Task`](crate::PoolError::Task)
//! with a [`TaskError`]. Return a `TaskError` to give it a kind the caller can
//! match on (and a detail, if you like); any other error type (a `String`, an
//! `io::Error`, your own) crosses as its `Display` text without kind, since
//! a type's Rust name (`alloc::string::String`) says nothing to the caller.
//! To keep your own error enum's variants apart, convert it:
//!
//! ```no_run
//! use forkyard_pool::TaskError;
//!
//! enum LookupError { NotFound(u64), Forbidden }
//!
//! impl From<LookupError> for TaskError {
//!     fn from(e: LookupError) -> TaskError {
//!         match e {
//!             LookupError::NotFound(id) => TaskError::new("NotFound", format!("no user {id}")),
//!             LookupError::Forbidden => TaskError::new("Forbidden", "not yours"),
//!         }
//!     }
//! }
//!
//! fn lookup(id: u64) -> Result<String, LookupError> {
//!     if id == 0 { Err(LookupError::NotFound(id)) } else { Ok(format!("user {id}")) }
//! }
//!
//! fn main() {
//!     forkyard_pool::worker::serve(|id: u64| async move { Ok::<_, TaskError>(lookup(id)?) })
//! }
//! ```
//!
//! The worker's own errors have kinds too: `Panic` (the handler panicked)
//! and `Unsendable` (the result does not fit in a frame or cannot be encoded).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use forkyard_ipc::{Channel, Message};
use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, Either};
use futures::stream::{FuturesUnordered, StreamExt};
use rustc_hash::FxHashMap;

use crate::error::TaskError;
use crate::protocol::{FromWorker, ToWorker};

/// The environment variable a pool sets in workers it starts with
/// [`Builder::self_exec`](crate::Builder::self_exec), so that one binary can be
/// both the parent and its own workers; see [`is_worker`].
pub const WORKER_ENV: &str = "FORKYARD_POOL_WORKER";

/// Whether this process was started as a pool worker by
/// [`Builder::self_exec`](crate::Builder::self_exec).
///
/// ```no_run
/// # async fn parent() {}
/// # fn handle(x: u64) -> u64 { x }
/// fn main() {
///     if forkyard_pool::worker::is_worker() {
///         forkyard_pool::worker::serve(|x: u64| async move { Ok::<_, String>(handle(x)) });
///     }
///     // ... the parent's main ...
/// }
/// ```
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Serves tasks from the parent pool until told to drain or the parent goes
/// away, then exits the process (status 0, or 1 if the channel to the parent
/// could not be set up or broke).
///
/// The handler's error is any `Display` type: a [`TaskError`] crosses with
/// its kind and detail, any other as its text without kind (see
/// [Errors](self#errors)).
///
/// Runs its own single-threaded tokio runtime: call it from a plain `main`,
/// not from inside another runtime.
pub fn serve<Req, Resp, E, F, Fut>(handler: F) -> !
where
    Req: Message,
    Resp: Message + Sync,
    E: Display + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
{
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(run(handler)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("forkyard-pool worker: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("forkyard-pool worker: cannot start a tokio runtime: {e}");
            1
        }
    };
    std::process::exit(code)
}

async fn run<Req, Resp, E, F, Fut>(handler: F) -> Result<(), forkyard_ipc::Error>
where
    Req: Message,
    Resp: Message + Sync,
    E: Display + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
{
    let channel = Channel::<FromWorker<Resp>, ToWorker<Req>>::from_parent()?;
    let (mut tx, mut rx) = channel.split();
    tx.send(&FromWorker::Ready).await?;
    let handler = Rc::new(handler);
    // Running tasks and chunks are polled right here, not spawned: no task
    // hop between reading a task, running it and writing its answer. A panic
    // is caught around each handler's future and becomes an error answer.
    // Each can be aborted through its handle when the pool says `Cancel`.
    let mut running = FuturesUnordered::new();
    let mut aborts: FxHashMap<u64, AbortHandle> = FxHashMap::default();
    let mut draining = false;
    let mut failed = None;
    loop {
        tokio::select! {
            // Answers first: they free the parent's pipeline.
            biased;
            Some(answer) = running.next(), if !running.is_empty() => {
                let mut next = Some(answer);
                // Batch every other answer already available before a write.
                while let Some(answer) = next.take() {
                    match answer {
                        Answer::Done(id, result) => {
                            aborts.remove(&id);
                            send_done(&mut tx, id, result).await?;
                        }
                        Answer::Part { id, results, rest } => {
                            send_items(&mut tx, id, results).await?;
                            match rest {
                                Some(rest) => {
                                    // Out now, before the rest runs (it might
                                    // be the rest that kills the worker, or an
                                    // item of it that waits long).
                                    tx.flush().await?;
                                    running.push(track(&mut aborts, id, Either::Right(rest)))
                                }
                                None => {
                                    aborts.remove(&id);
                                }
                            }
                        }
                        Answer::Cancelled(id) => {
                            tx.feed(&FromWorker::Cancelled { id }).await?;
                        }
                    }
                    next = running.next().now_or_never().flatten();
                }
                tx.flush().await?;
            }
            msg = rx.recv(), if !draining => {
                // Take the whole burst one read brought in before answering,
                // so the tasks of a pipelined batch that finish at once are
                // answered in one write, not one write per task.
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        Ok(Some(ToWorker::Task { id, req })) => {
                            running.push(track(&mut aborts, id, Either::Left(start(&*handler, id, req))));
                        }
                        Ok(Some(ToWorker::Chunk { id, items })) => {
                            let chunk = ChunkRun {
                                handler: handler.clone(),
                                id,
                                items: (0u32..).zip(items).collect(),
                                waiting: None,
                                resumed: false,
                                slot: Box::pin(None),
                            };
                            running.push(track(&mut aborts, id, Either::Right(Box::pin(chunk.run()))));
                        }
                        Ok(Some(ToWorker::Cancel { id })) => {
                            // Unknown, or already answered: nothing to do.
                            if let Some(handle) = aborts.remove(&id) {
                                handle.abort();
                            }
                        }
                        Ok(Some(ToWorker::Drain) | None) => draining = true,
                        // Answer what already runs, then report the error.
                        Err(e) => {
                            draining = true;
                            failed = Some(e);
                        }
                    }
                    if !draining {
                        next = rx.recv_buffered().map(|msg| msg.map(Some));
                    }
                }
            }
            else => break,
        }
        if draining && running.is_empty() {
            break;
        }
    }
    let closed = tx.close().await;
    match failed {
        Some(e) => Err(e),
        None => closed,
    }
}

/// How often, at most, the results of a chunk's items that finish back to
/// back are sent, so that a worker dying mid-chunk loses only the items since.
/// (An item that has to wait sends what finished before it at once.)
const PART_EVERY: Duration = Duration::from_millis(20);

/// Items between two looks at the clock while a chunk runs items that finish
/// at once (a look costs about as much as a tiny item).
const CLOCK_EVERY: u32 = 8;

/// What a running task or chunk yields.
enum Answer<Resp> {
    /// A task's result.
    Done(u64, Result<Resp, TaskError>),
    /// Some of a chunk's results, and the rest of the chunk, if any, to run
    /// once they are sent.
    Part {
        id: u64,
        results: Vec<(u32, Result<Resp, TaskError>)>,
        rest: Option<ChunkFuture<Resp>>,
    },
    /// Aborted on `Cancel`.
    Cancelled(u64),
}

type ChunkFuture<Resp> = Pin<Box<dyn Future<Output = Answer<Resp>>>>;

/// Registers an abort handle for `id`; aborting the work makes it answer
/// `Cancelled` (and drops it, with the handler's future).
fn track<Resp, T>(
    aborts: &mut FxHashMap<u64, AbortHandle>,
    id: u64,
    work: Either<T, ChunkFuture<Resp>>,
) -> impl Future<Output = Answer<Resp>> + use<Resp, T>
where
    T: Future<Output = Answer<Resp>>,
{
    let (handle, registration) = AbortHandle::new_pair();
    aborts.insert(id, handle);
    Abortable::new(work, registration).map(move |r| r.unwrap_or(Answer::Cancelled(id)))
}

/// A handler's future for one item, catching a panic as it runs.
type ItemFuture<Fut> = futures::future::CatchUnwind<AssertUnwindSafe<Fut>>;

/// What is left of a running chunk.
///
/// # Design note: sending what is done before waiting
///
/// Items that finish at once are answered together, in one message per
/// [`PART_EVERY`], which is what makes a batch of tiny items fast. But an item
/// whose future is not ready on its first poll may wait for anything (a
/// file, a peer, a timer), and the items finished before it must not wait
/// with it: their callers would see nothing, and a crash during the wait
/// would lose them. So the chunk yields them then, as an [`Answer::Part`]
/// whose rest goes on with the item that waits, the very future already
/// polled. That future cannot move once polled, so every item's future lives
/// in one heap slot per chunk (`slot`, replaced in place with `Pin::set`):
/// no allocation per item in the fast path, and the rest of the chunk takes
/// the slot along.
struct ChunkRun<Req, F, Fut> {
    handler: Rc<F>,
    id: u64,
    items: VecDeque<(u32, Req)>,
    /// The index of the item in `slot` that is still waiting, if any.
    waiting: Option<u32>,
    /// Whether a part has gone out already (this run goes on after it).
    resumed: bool,
    slot: Pin<Box<Option<ItemFuture<Fut>>>>,
}

impl<Req, Resp, E, F, Fut> ChunkRun<Req, F, Fut>
where
    Req: 'static,
    Resp: 'static,
    E: Display + 'static,
    F: Fn(Req) -> Fut + 'static,
    Fut: Future<Output = Result<Resp, E>> + 'static,
{
    /// Runs the items one after the other; yields what finished when an item
    /// has to wait, once [`PART_EVERY`] has passed (the rest goes on as a new
    /// future), or at the end.
    async fn run(mut self) -> Answer<Resp> {
        let began = Instant::now();
        // Room for every item on the first run, where a chunk of items that
        // never wait answers them all at once. A resumed run grows as it
        // goes: a chunk whose items each wait resumes once per item, and
        // sizing each run for all the items left would allocate O(N²).
        let mut results = if self.resumed {
            Vec::new()
        } else {
            self.resumed = true;
            Vec::with_capacity(self.items.len() + 1)
        };
        if let Some(index) = self.waiting.take() {
            let out = self.current().await;
            results.push((index, item_result(out)));
        }
        let mut since_look = 0;
        while let Some((index, req)) = self.items.pop_front() {
            // Making the future can panic too (a closure's body before its `async`).
            let made = std::panic::catch_unwind(AssertUnwindSafe(|| (self.handler)(req)));
            let mut waited = false;
            let result = match made {
                Ok(fut) => {
                    self.slot.set(Some(AssertUnwindSafe(fut).catch_unwind()));
                    match self.current().now_or_never() {
                        Some(out) => item_result(out),
                        None if !results.is_empty() => {
                            // It waits: what is done goes out first.
                            self.waiting = Some(index);
                            let id = self.id;
                            return Answer::Part {
                                id,
                                results,
                                rest: Some(Box::pin(self.run())),
                            };
                        }
                        None => {
                            waited = true;
                            item_result(self.current().await)
                        }
                    }
                }
                Err(payload) => Err(panic_error(payload)),
            };
            results.push((index, result));
            since_look += 1;
            if !self.items.is_empty() && (waited || since_look >= CLOCK_EVERY) {
                since_look = 0;
                if began.elapsed() >= PART_EVERY {
                    let id = self.id;
                    return Answer::Part {
                        id,
                        results,
                        rest: Some(Box::pin(self.run())),
                    };
                }
            }
        }
        Answer::Part {
            id: self.id,
            results,
            rest: None,
        }
    }

    /// The item future in the slot.
    fn current(&mut self) -> Pin<&mut ItemFuture<Fut>> {
        self.slot
            .as_mut()
            .as_pin_mut()
            .expect("an item is in the slot")
    }
}

/// A handler's outcome (or its panic) as it goes on the wire.
fn item_result<Resp, E: Display + 'static>(
    out: Result<Result<Resp, E>, Box<dyn Any + Send>>,
) -> Result<Resp, TaskError> {
    match out {
        Ok(result) => result.map_err(task_error),
        Err(payload) => Err(panic_error(payload)),
    }
}

/// A handler's error as it goes on the wire: a [`TaskError`] as it is (its
/// kind and detail kept), any other error as its text, without kind.
fn task_error<E: Display + 'static>(error: E) -> TaskError {
    let mut slot = Some(error);
    if let Some(typed) = (&mut slot as &mut dyn Any).downcast_mut::<Option<TaskError>>() {
        return typed.take().expect("just put there");
    }
    match slot {
        Some(error) => TaskError::untyped(error.to_string()),
        None => unreachable!("taken only when it is a TaskError"),
    }
}

/// Whether a send error refused only that message (the stream is in step).
fn refused(e: &forkyard_ipc::Error) -> bool {
    matches!(
        e,
        forkyard_ipc::Error::FrameTooLarge { .. } | forkyard_ipc::Error::Encode(_)
    )
}

/// Queues a task's answer; a result that cannot be sent (too large for a
/// frame, or one serde cannot encode) is answered with an error saying so.
async fn send_done<Resp: Message + Sync>(
    tx: &mut forkyard_ipc::Sender<FromWorker<Resp>>,
    id: u64,
    result: Result<Resp, TaskError>,
) -> Result<(), forkyard_ipc::Error> {
    match tx.feed(&FromWorker::Done { id, result }).await {
        Err(e) if refused(&e) => {
            let result = Err(unsendable(&e));
            tx.feed(&FromWorker::Done { id, result }).await
        }
        other => other,
    }
}

/// Queues a chunk's results, split into several `Items` if one would not fit
/// in a frame; a single result that cannot be sent is answered with an error.
async fn send_items<Resp: Message + Sync>(
    tx: &mut forkyard_ipc::Sender<FromWorker<Resp>>,
    id: u64,
    results: Vec<(u32, Result<Resp, TaskError>)>,
) -> Result<(), forkyard_ipc::Error> {
    let mut pending = vec![results];
    while let Some(results) = pending.pop() {
        let msg = FromWorker::Items { id, results };
        match tx.feed(&msg).await {
            Err(e) if refused(&e) => {
                let FromWorker::Items { mut results, .. } = msg else {
                    unreachable!("built above")
                };
                if results.len() == 1 {
                    let index = results[0].0;
                    let msg = FromWorker::Items {
                        id,
                        results: vec![(index, Err(unsendable(&e)))],
                    };
                    tx.feed(&msg).await?;
                } else {
                    let back = results.split_off(results.len() / 2);
                    pending.push(back);
                    pending.push(results);
                }
            }
            other => other?,
        }
    }
    Ok(())
}

/// The error a result that cannot be sent is answered with.
fn unsendable(e: &forkyard_ipc::Error) -> TaskError {
    TaskError::new(
        TaskError::UNSENDABLE,
        format!("the result cannot be sent: {e}"),
    )
}

/// Starts `handler` on one task; the future answers `Done` and never panics
/// (a panic, also one while making the future, becomes an error).
fn start<Req, Resp, E, F, Fut>(
    handler: &F,
    id: u64,
    req: Req,
) -> impl Future<Output = Answer<Resp>> + use<Req, Resp, E, F, Fut>
where
    E: Display + 'static,
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, E>>,
{
    // Making the future can panic too (a closure's body before its `async`).
    let made = std::panic::catch_unwind(AssertUnwindSafe(|| handler(req)));
    async move {
        let result = match made {
            Ok(fut) => item_result(AssertUnwindSafe(fut).catch_unwind().await),
            Err(payload) => Err(panic_error(payload)),
        };
        Answer::Done(id, result)
    }
}

fn panic_error(payload: Box<dyn Any + Send>) -> TaskError {
    TaskError::new(
        TaskError::PANIC,
        format!(
            "the handler panicked: {}",
            forkyard_child::panic_message(&*payload)
        ),
    )
}
