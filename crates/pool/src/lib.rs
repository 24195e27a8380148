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
//! - Everyday jobs are batches (`pool.map(f, items, chunksize)`), calls that
//!   must give up by a deadline or be cancelled while they run, and pools that
//!   must grow and shrink with the load; a pool that only knows one call at a
//!   time, one fixed size and one pool-wide timeout makes each of them a
//!   project.
//!
//! # The approach
//!
//! - **Exactly one outcome per task**: its result, or a typed [`PoolError`]:
//!   `WorkerCrashed { exit }` (with the exit status, the rusage and the last
//!   lines of stderr), `TimedOut`, `Cancelled`, `QueueFull`, `ShuttingDown`,
//!   `Task(..)`, `Protocol(..)` or `Unavailable(..)`.
//! - **Typed handler errors, in any language**: a handler's error arrives as
//!   `PoolError::Task` with a [`TaskError`]: a `kind()` to match on (the
//!   exception's class in Python, the error's code or name in Node, what a
//!   Rust handler gave [`TaskError::new`]), a `message()`, and a `detail()`
//!   for humans (the traceback or stack, kept to 16 KiB: its head and its
//!   end, so a deep stack never makes an answer too large to send). Across
//!   languages there is no exception object to rebuild, so the kind is a
//!   name; a plain Rust error (`String`, `io::Error`) crosses as text
//!   without kind.
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
//! - **Batches**: [`Pool::map`] (in order) and [`Pool::map_unordered`] (as
//!   they complete) stream one result per item. Items travel in chunks (one
//!   message per chunk each way, sized automatically or by [`MapOptions`]),
//!   the handler runs per item, a failed item is an `Err` in its place, and
//!   at most a window of items is in flight, so a slow consumer or an endless
//!   iterator is fine. A worker sends a chunk's results as it goes, so tiny
//!   items cost no message each and a slow item never holds back finished
//!   ones: whatever is done goes out as soon as an item has to wait, and
//!   items that finish back to back go out together, every 20 ms or so from
//!   a Rust worker or a Python one on threads, only at the chunk's end from
//!   async Python and Node (no timer there). If the worker dies mid-chunk,
//!   only the items without a result run again.
//! - **Per-call options**: [`Pool::call_with`] takes [`CallOptions`]: a
//!   deadline (queued or running), a run timeout, retries, and a
//!   [`CancelToken`]. [`Pool::start`] returns a [`TaskHandle`] with the
//!   task's id (the one in events and the shutdown report) and a `cancel`.
//!   Cancelling a running task tells its worker to abandon it (a new protocol
//!   message); a worker that has not within the cancel grace has its process
//!   group killed and is replaced, and its other tasks re-run uncharged.
//! - **Resizing and operator controls**: [`Pool::resize`] grows the pool at
//!   once and shrinks it by draining the least busy workers (no task lost or
//!   run twice); [`Pool::recycle`] replaces one worker, [`Pool::open_breaker`]
//!   and [`Pool::close_breaker`] stop and resume worker starts, and
//!   [`Pool::drain`] winds the pool down; each emits a [`PoolEvent`].
//! - **Autoscaling**, optional: [`Builder::autoscale`] with an [`Autoscale`]
//!   (`min`, `max`, `scale_up_after`, `idle_timeout`) starts the pool at
//!   `min`, grows it by one worker when the oldest queued task has waited
//!   `scale_up_after` (again once that worker is up, if tasks still wait),
//!   and shrinks it by one when a worker has been idle for `idle_timeout`
//!   with nothing queued, by draining that worker, never by killing one
//!   mid-task; always within `min..=max`, each step a
//!   [`PoolEvent::Resized`]. It uses the same slots as [`Pool::resize`], so
//!   growing and shrinking keep the resize guarantees.
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
//!   answers to the core under one lock; a worker's driver that has tasks in
//!   flight lets the callers its answers woke submit before it writes, so one
//!   write carries many tasks. Tiny-task throughput on two workers is measured
//!   against Node's `child_process.fork` in the crate README (figures and the
//!   command there).
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
//! [`Builder::self_exec`] the same binary is parent and worker. This one
//! squares numbers (and refuses 13), then shows a call, a batch, a deadline,
//! a cancel and a resize:
//!
//! ```rust,standalone_crate
//! use std::time::Duration;
//! use futures::StreamExt;
//! use forkyard_pool::{CallOptions, Outcome, Pool, PoolError, ShutdownMode, TaskError};
//!
//! fn main() {
//!     if forkyard_pool::worker::is_worker() {
//!         // In a worker: answer tasks until told to drain.
//!         forkyard_pool::worker::serve(|n: u64| async move {
//!             match n {
//!                 13 => Err(TaskError::new("Unlucky", "13 is unlucky")),
//!                 1_000_000 => std::future::pending().await, // never ends
//!                 n => Ok(n * n),
//!             }
//!         });
//!     }
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let pool = Pool::<u64, u64>::builder()
//!             .self_exec(std::iter::empty::<&str>()).unwrap()
//!             .workers(2)
//!             .max_in_flight_per_worker(4)
//!             .task_timeout(Duration::from_secs(30))
//!             .retries(2)
//!             .recycle_after_tasks(10_000)
//!             .build()
//!             .await
//!             .unwrap();
//!         // One call.
//!         assert_eq!(pool.call(12).await.unwrap(), 144);
//!
//!         // A batch, in order: one result per item, a failed item in its
//!         // place, with the kind of error its handler gave.
//!         let squares: Vec<Result<u64, PoolError>> = pool.map(10..16).collect().await;
//!         assert_eq!(squares[0].as_ref().unwrap(), &100);
//!         match &squares[3] {
//!             Err(PoolError::Task(e)) => assert_eq!(e.kind(), Some("Unlucky")),
//!             other => panic!("{other:?}"),
//!         }
//!
//!         // A deadline: the task is abandoned and fails with TimedOut.
//!         let late = pool.call_with(1_000_000, CallOptions::within(Duration::from_millis(100)));
//!         assert!(matches!(late.await, Err(PoolError::TimedOut { .. })));
//!
//!         // A cancel: the worker drops the task when told (no kill needed).
//!         let task = pool.start(1_000_000, CallOptions::default()).await.unwrap();
//!         println!("running task {}", task.id());
//!         task.cancel();
//!         assert!(matches!(task.await, Err(PoolError::Cancelled)));
//!
//!         // Resize: grows at once; shrinking drains the least busy workers.
//!         pool.resize(3).unwrap();
//!         pool.resize(1).unwrap();
//!         assert_eq!(pool.call(3).await.unwrap(), 9);
//!
//!         println!("{:?}", pool.stats());
//!         let report = pool.shutdown(ShutdownMode::Drain { grace: Duration::from_secs(10) }).await;
//!         println!("{} tasks completed during shutdown", report.count(Outcome::Completed));
//!     });
//! }
//! ```
//!
//! Workers in other languages speak the same protocol over the JSON-lines
//! codec ([`Builder::codec`] with `forkyard_ipc::Codec::JsonLines`). Two
//! ship with the crate: the Python package in `crates/pool/python`
//! (`pip install ./crates/pool/python`, standard library only; a worker is
//! `forkyard_pool.serve(handler)`, async handlers concurrently, sync ones on
//! threads) and the Node module in `crates/pool/node` (no npm dependency;
//! `require('forkyard-pool').serve(handler)`, the handler gets an
//! `AbortSignal` for cancels). Both send typed errors: a Python handler that
//! raises `QuotaExceeded("over")` fails its call with a `TaskError` whose
//! `kind()` is `Some("QuotaExceeded")`, `message()` is `"over"` and
//! `detail()` is the traceback. The README has a short example of each; the
//! messages, with their exact JSON shapes, are in [`protocol`].
//!
//! # Compared with its peers
//!
//! | | Python `multiprocessing.Pool` | piscina (Node, threads) | PM2 (Node, processes) | forkyard-pool |
//! |---|---|---|---|---|
//! | batches | `map`/`imap`/`imap_unordered`, `chunksize` | one task per `run` | none (a process manager) | `map`, `map_unordered`; chunks automatic or set; per-item outcomes; a bounded window |
//! | a worker killed | `Pool` hangs | task rejects, worker replaced | process restarted (with `exp_backoff_restart_delay`) | its tasks retried or failed with the exit; replaced at once if it had served, per-slot backoff if it crash-loops |
//! | cancel a running task | no (only before dispatch) | `AbortSignal`: the worker thread is terminated | no | the worker is told to abandon it, killed after a grace if it does not |
//! | per-call deadline | `AsyncResult.get(timeout)` only stops waiting | no (pool-wide `idleTimeout` only) | no | `CallOptions::deadline`: queued or running |
//! | size | fixed | `minThreads`/`maxThreads`, `idleTimeout` | `pm2 scale`, cluster mode | `resize(n)` up and down with no task lost; [`Autoscale`] between `min` and `max` on queue wait, shrinking after `idle_timeout` |
//! | operator | none | none | CLI: restart, reload, scale, stop | `resize`, `recycle`, `open/close_breaker`, `drain`, each an event |
//! | a handler's error | the exception, pickled, with the remote traceback as text (one that does not pickle fails otherwise) | the thrown `Error`, structured-cloned (its class and own fields lost) | logged | [`TaskError`]: kind, message, traceback or stack; from Python, Node and Rust alike |
//!
//! Python's batch API and its speed are the bar here: `map` of 200,000 tiny
//! items on 2 workers measures against `Pool(2).map(..., chunksize=1000)` in
//! `examples/compare.rs` (the README has the figures).
//!
//! # Caveats
//!
//! - Dropping the last [`Pool`] handle kills every worker at once (SIGKILL to
//!   their process groups); callers still waiting get `ShuttingDown`. Call
//!   [`Pool::shutdown`] for a graceful end.
//! - Cancelling a call (its token, [`TaskHandle::cancel`], or dropping its
//!   future) stops a queued task from ever running. A running task is
//!   abandoned by its worker if the handler is async and reaches an `.await`;
//!   a handler that never awaits (CPU-bound, blocking) cannot be stopped
//!   from inside: on an explicit cancel its worker is killed after the
//!   cancel grace (1 s by default) and its other tasks re-run; when the
//!   future was only dropped, it runs to its end and its result is dropped.
//! - A batch's chunk is one task for the queue, the in-flight limit and the
//!   task timeout (which a chunk gets once per item); statistics count items.
//!   An item whose worker died after it ran but before its result went out
//!   runs again, like a retried call. How much that is depends on the
//!   worker: Rust workers and Python on threads send finished items every
//!   20 ms or so; async Python and Node send them only when an item waits or
//!   the chunk ends, so a crash in a chunk of items that never wait re-runs
//!   every item of it that ran (a smaller `chunk_size` bounds that).
//! - A [`CallOptions::deadline`] is a `std::time::Instant`: under tokio's
//!   paused test clock it does not move with the paused time.
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

mod call;
mod core;
mod error;
pub mod events;
mod map;
mod pool;
pub mod protocol;
mod stats;
pub mod worker;

pub use crate::core::{Autoscale, RecycleReason, ShutdownMode};
pub use call::{CallOptions, CancelToken, TaskHandle};
pub use error::{BuildError, Cause, ControlError, PoolError, TaskError};
pub use events::{ExitCause, Outcome, PoolEvent, Subscription};
pub use map::{MapOptions, MapStream, MapUnordered};
pub use pool::{Builder, Pool, ShutdownReport, TaskOutcome, WorkerEnd};
pub use stats::{FailureKind, Percentiles, Stats, WorkerState, WorkerStats};
