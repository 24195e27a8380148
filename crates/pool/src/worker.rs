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
//! exactly once. A handler that panics answers with an error naming the
//! panic, and the worker keeps serving. On `Drain` (recycling, shutdown) it
//! stops reading, finishes and answers what it has, and exits 0; when the
//! parent goes away it exits too.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use forkyard_ipc::{Channel, Message};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

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
/// Runs its own single-threaded tokio runtime: call it from a plain `main`,
/// not from inside another runtime.
pub fn serve<Req, Resp, E, F, Fut>(handler: F) -> !
where
    Req: Message,
    Resp: Message + Sync,
    E: Display,
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
    E: Display,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
{
    let channel = Channel::<FromWorker<Resp>, ToWorker<Req>>::from_parent()?;
    let (mut tx, mut rx) = channel.split();
    tx.send(&FromWorker::Ready).await?;
    // Running handlers are polled right here, not spawned: no task hop between
    // reading a task, running it and writing its answer. A panic is caught
    // around each handler's future and becomes an error answer.
    let mut running = FuturesUnordered::new();
    let mut draining = false;
    let mut failed = None;
    loop {
        tokio::select! {
            // Answers first: they free the parent's pipeline.
            biased;
            Some((id, result)) = running.next(), if !running.is_empty() => {
                tx.feed(&FromWorker::Done { id, result }).await?;
                // Batch every other answer already available before a write.
                while let Some(Some((id, result))) = running.next().now_or_never() {
                    tx.feed(&FromWorker::Done { id, result }).await?;
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
                        Ok(Some(ToWorker::Task { id, req })) => running.push(start(&handler, id, req)),
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

/// Starts `handler` on one task; the future answers `(id, result)` and
/// never panics (a panic, also one while making the future, becomes an error).
fn start<Req, Resp, E, F, Fut>(
    handler: &F,
    id: u64,
    req: Req,
) -> impl Future<Output = (u64, Result<Resp, String>)> + use<Req, Resp, E, F, Fut>
where
    E: Display,
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, E>>,
{
    // Making the future can panic too (a closure's body before its `async`).
    let made = std::panic::catch_unwind(AssertUnwindSafe(|| handler(req)));
    async move {
        let result = match made {
            Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(payload) => Err(panic_message(payload)),
            },
            Err(payload) => Err(panic_message(payload)),
        };
        (id, result)
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    format!(
        "the handler panicked: {}",
        forkyard_child::panic_message(&*payload)
    )
}
