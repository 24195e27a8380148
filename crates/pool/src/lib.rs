//! A pool of worker processes with a task queue, recycling, restarts,
//! statistics and graceful shutdown.
//!
//! # The problem
//!
//! Work that must not share a process with its caller (a leaky C library, an
//! image decoder fed untrusted files, CPU-heavy code in another language) goes
//! to worker processes. The hard part is not starting them; it is everything
//! that goes wrong afterwards, and the tools people reach for handle it badly:
//!
//! - Python's `multiprocessing.Pool` **hangs** when a worker is killed (by the
//!   OOM killer, say); `ProcessPoolExecutor` and loky **break the whole pool**.
//! - A worker that calls `exit(0)` mid-task strands the task and shrinks the
//!   pool (piscina before its fix); recycling can run a task twice (Celery)
//!   or deadlock (CPython).
//! - Queues are unbounded; nobody says *why* a worker died; a worker that
//!   cannot start is restarted in a tight loop forever.
//!
//! # The approach
//!
//! - **Exactly one outcome per task**: its result, or a typed [`PoolError`]:
//!   `WorkerCrashed { exit }` (with the exit status, the rusage and the last
//!   lines of stderr), `TimedOut`, `Cancelled`, `QueueFull`, `ShuttingDown`,
//!   `Task(message)`, `Protocol(..)` or `Unavailable(..)`.
//! - **A crash fails only the tasks on that worker**, and a task with retries
//!   left re-runs on another worker. A task past its deadline gets its
//!   worker's whole process group killed and the worker replaced; whatever
//!   else that worker was running re-runs elsewhere without being charged.
//! - **Recycling never runs a task twice**: a worker due for recycling (task
//!   count, memory, age) keeps serving until its replacement is ready, then is
//!   told to *drain*: it gets no new tasks, answers the ones it has, and exits.
//! - **Backpressure**: the queue is bounded; [`Pool::call`] waits for room,
//!   [`Pool::try_call`] returns `QueueFull`. Several tasks may be in flight per
//!   worker (pipelining); each goes to the least-loaded worker.
//! - **Restarts that keep capacity**, with backoff and a circuit breaker
//!   (from `forkyard-supervise`), **per worker slot**: a worker that served
//!   (completed a task, or stayed up a second) is replaced at once when it
//!   dies, as OTP and Node's cluster do; only a slot whose workers die at once
//!   (a crash loop) or fail to start backs off, and the others are not held
//!   back. A start killed from outside (the OOM killer during a slow start)
//!   counts against its slot only; when starts in a slot keep failing (twice
//!   in a row), each further failure also counts for the pool-wide breaker,
//!   which opens when workers cannot start at all: the pool reports itself
//!   degraded and calls fail fast with `Unavailable` instead of waiting forever.
//! - **Bursts, not messages**: tasks waiting for a worker go out in one write;
//!   the worker takes every task one read brought before it answers, and
//!   answers what finishes together in one write; the parent feeds a burst of
//!   answers to the core under one lock. Tiny tasks run at about 400,000 a
//!   second on two workers (the crate README has the figures and the command).
//! - **Events for whoever watches**: [`Pool::subscribe`] (or
//!   [`Builder::subscribe`], to see the first workers start) gives a typed
//!   stream of [`PoolEvent`]s: tasks submitted, dispatched, finished, retried;
//!   workers spawned, ready, sampled, recycled, exited (with their `Exit`). A
//!   subscriber that falls behind loses the oldest events and is told how
//!   many; it never slows the pool, and with no subscriber no event is built.
//!   `forkyard-perf` builds its monitor and verdicts on it.
//! - **One brain**: every decision is made by a pure state machine (`core.rs`)
//!   that a property test drives through thousands of random schedules; an
//!   async shell carries its decisions out with `forkyard-child` processes and
//!   `forkyard-ipc` channels.
//!
//! # Example
//!
//! A worker is any program that answers the pool's protocol. In Rust,
//! [`worker::serve`] makes one out of an async function; with
//! [`Builder::self_exec`] the same binary is parent and worker:
//!
//! ```no_run
//! use std::time::Duration;
//! use forkyard_pool::{Outcome, Pool, ShutdownMode};
//!
//! fn main() {
//!     if forkyard_pool::worker::is_worker() {
//!         // In a worker: answer tasks until told to drain.
//!         forkyard_pool::worker::serve(|n: u64| async move { Ok::<u64, String>(n * n) });
//!     }
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let pool = Pool::<u64, u64>::builder()
//!             .self_exec(std::iter::empty::<&str>()).unwrap()
//!             .workers(4)
//!             .max_in_flight_per_worker(8)
//!             .task_timeout(Duration::from_secs(30))
//!             .retries(2)
//!             .recycle_after_tasks(1_000)
//!             .recycle_above_rss(512 << 20)
//!             .build()
//!             .await
//!             .unwrap();
//!         assert_eq!(pool.call(12).await.unwrap(), 144);
//!         println!("{:?}", pool.stats());
//!         let report = pool.shutdown(ShutdownMode::Drain { grace: Duration::from_secs(10) }).await;
//!         println!("{} tasks completed during shutdown", report.count(Outcome::Completed));
//!     });
//! }
//! ```
//!
//! Workers in other languages speak the same protocol over the JSON-lines
//! codec ([`Builder::codec`] with `forkyard_ipc::Codec::JsonLines`); the crate ships
//! a Python worker (`python/pool_worker.py`). The messages are in [`protocol`].
//!
//! # Caveats
//!
//! - Dropping the last [`Pool`] handle kills every worker at once (SIGKILL to
//!   their process groups); callers still waiting get `ShuttingDown`. Call
//!   [`Pool::shutdown`] for a graceful end.
//! - Cancelling a call (dropping its future) stops a queued task from ever
//!   running; a task already running finishes on its worker and its result is
//!   dropped (and counted as cancelled).
//! - A task is retried only when its worker *died* (and it has retries left):
//!   handler errors, timeouts and protocol errors are final. Retried tasks may
//!   therefore run more than once if a worker dies after doing the work but
//!   before answering; make retried tasks idempotent.
//! - Task-count recycling is soft by up to the time a replacement takes to
//!   start: the old worker keeps serving until then, so capacity never dips.
//! - Memory is sampled (every 500 ms by default), so an RSS limit is noticed
//!   between tasks, not mid-allocation; a hard ceiling is `forkyard-secure`'s job.
//!
//! # See also
//!
//! `forkyard-child` (each worker is a `Child`: its group, its exit, its
//! rusage), `forkyard-ipc` (the channel and its handshake),
//! `forkyard-supervise` (the backoff and circuit breaker used here), and
//! `forkyard-perf` (caching and bottleneck verdicts in front of a pool).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod core;
mod error;
pub mod events;
mod pool;
pub mod protocol;
mod stats;
pub mod worker;

pub use crate::core::{RecycleReason, ShutdownMode};
pub use error::{BuildError, Cause, PoolError};
pub use events::{ExitCause, Outcome, PoolEvent, Subscription};
pub use pool::{Builder, Pool, ShutdownReport, TaskOutcome, WorkerEnd};
pub use stats::{FailureKind, Percentiles, Stats, WorkerState, WorkerStats};
