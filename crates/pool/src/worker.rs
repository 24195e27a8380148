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
//! each one as its own tokio task (so a pool that pipelines several tasks to a
//! worker gets them run concurrently when the handler awaits I/O), and answers
//! each exactly once. A handler that panics answers with an error naming the
//! panic, and the worker keeps serving. On `Drain` (recycling, shutdown) it
//! stops reading, finishes and answers what it has, and exits 0; when the
//! parent goes away it exits too.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use forkyard_ipc::{Channel, Message};
use tokio::sync::mpsc;

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
    // One writer task owns the sender; handlers hand it their answers.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<FromWorker<Resp>>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = done_rx.recv().await {
            tx.feed(&msg).await?;
            // Batch whatever else is ready before paying for a write.
            while let Ok(more) = done_rx.try_recv() {
                tx.feed(&more).await?;
            }
            tx.flush().await?;
        }
        tx.close().await
    });
    let handler = Arc::new(handler);
    loop {
        match rx.recv().await? {
            Some(ToWorker::Task { id, req }) => {
                let handler = handler.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    // The handler runs in a task of its own so that a panic is
                    // caught by tokio and becomes an error answer.
                    let outcome =
                        tokio::spawn(async move { handler(req).await.map_err(|e| e.to_string()) })
                            .await;
                    let result = outcome.unwrap_or_else(|join| Err(panic_message(join)));
                    let _ = done.send(FromWorker::Done { id, result });
                });
            }
            Some(ToWorker::Drain) | None => break,
        }
    }
    // Every in-flight handler holds a clone of `done_tx`; the writer ends when
    // the last one has answered.
    drop(done_tx);
    match writer.await {
        Ok(written) => written,
        // The writer task only ends abnormally if it panicked: report, exit 1.
        Err(join) => Err(forkyard_ipc::Error::Broken(format!(
            "the answer writer failed: {join}"
        ))),
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            format!("the handler panicked: {what}")
        }
        Err(join) => format!("the handler was cancelled: {join}"),
    }
}
