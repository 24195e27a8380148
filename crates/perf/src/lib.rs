//! Result caching, live metrics, resource tracking and bottleneck verdicts
//! for forkyard pools.
//!
//! # The problem
//!
//! Whoever runs a pool of worker processes ends up asking two questions, and
//! wants numbers, not guesses, for the answers:
//!
//! - *Is my pool the right size, and where does the time go?* A pool whose
//!   callers wait in the queue needs more workers, unless the machine's CPUs
//!   are already saturated (then more workers only compete for them), or the
//!   workers are "busy" waiting on the round trip rather than working (then
//!   pipelining or batching helps, not workers). A worker whose memory grows
//!   with every task needs recycling; one much slower than its peers needs
//!   replacing.
//! - *Would a cache help, and how big?* A cache in front of a pool saves
//!   whole round trips, but only for keys that come back, and only if it is
//!   big enough to keep them until they do.
//!
//! The usual tools give half answers. moka (the cache) keeps no hit or
//! miss counts; piscina's stats and PM2's `monit` show utilisation, queue
//! length, CPU and memory, but leave the diagnosis, and the cache size, to the
//! reader.
//!
//! # The approach
//!
//! - **Events, not probes.** `forkyard-pool` publishes a typed event stream
//!   ([`forkyard_pool::PoolEvent`]): task submitted, dispatched (with its queue
//!   wait), finished (service time, end-to-end time, outcome), retried; worker
//!   spawned, ready, sampled (RSS, CPU), recycled, exited (cause and `Exit`
//!   with rusage). It costs nothing without a subscriber, and a subscriber
//!   that falls behind loses events (and is told how many) instead of slowing
//!   the pool.
//! - **[`Monitor`]** reads the stream and keeps per-second figures for the
//!   last minute and per-minute ones for longer (latency in HDR histograms per
//!   window, merged for longer windows): tasks/s, errors/s by kind, queue
//!   depth, busy workers, tasks in the system, queue-wait / service /
//!   end-to-end percentiles, each worker's CPU share and RSS, restarts, the
//!   machine's CPU use, the cache's hit rate. It hands out a serde
//!   [`Snapshot`], the OpenMetrics text for Prometheus, and (feature `http`,
//!   on by default) serves both on `/metrics` and `/api/snapshot`.
//! - **[`verdicts`]** is a pure function over a snapshot that names what limits
//!   throughput and what to do, with the numbers behind it (the USE method per
//!   resource, Little's law `L = λW` for the pool size).
//! - **[`Cached`]** puts a moka cache (byte-weighted, TTL, time-to-idle,
//!   TinyLFU admission) in front of a pool: one run per missing key however
//!   many callers ask at once (single flight), errors cached only with an
//!   opt-in negative TTL, and the counters moka does not keep.
//!   [`Cached::advise`] replays a recorded key trace against simulated LRU and
//!   TinyLFU caches of 1/16 to 4 times the size (a miss-ratio curve; the trace
//!   may be SHARDS-sampled) and names the smallest size that reaches a target
//!   hit rate.
//! - **[`sweep`]** runs a workload against pool sizes 1..N and finds the knee.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use forkyard_perf::{Cached, Monitor, MonitorConfig};
//! use forkyard_pool::{Pool, ShutdownMode};
//!
//! fn main() {
//!     if forkyard_pool::worker::is_worker() {
//!         forkyard_pool::worker::serve(|n: u64| async move { Ok::<u64, String>(n * n) });
//!     }
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let builder = Pool::<u64, u64>::builder()
//!             .self_exec(std::iter::empty::<&str>())
//!             .unwrap()
//!             .workers(2);
//!         // Subscribe before building, to see the first workers start too.
//!         let monitor = Monitor::start(builder.subscribe(), MonitorConfig::default());
//!         let pool = builder.build().await.unwrap();
//!         let cached = Cached::builder(pool.clone())
//!             .max_bytes(64 << 20)
//!             .ttl(Duration::from_secs(300))
//!             .record_trace(100_000, 1.0)
//!             .build();
//!         monitor.watch_cache(&cached);
//!         let server = monitor.serve("127.0.0.1:9187".parse().unwrap()).await.unwrap();
//!         for i in 0..10_000u64 {
//!             assert_eq!(cached.call(i % 100).await.unwrap(), (i % 100) * (i % 100));
//!         }
//!         println!("{:?}", cached.stats());
//!         for verdict in monitor.verdicts() {
//!             println!("{verdict}");
//!         }
//!         if let Some(advice) = cached.advise(0.9) {
//!             println!("{advice}");
//!         }
//!         server.shutdown().await;
//!         pool.shutdown(ShutdownMode::Drain { grace: Duration::from_secs(5) }).await;
//!     });
//! }
//! ```
//!
//! `examples/zipf.rs` runs this under a Zipf(1.0) key distribution and
//! `examples/demo.rs` walks through a diagnosis (`cargo xtask demo perf`).
//!
//! # Caveats
//!
//! - **Verdicts are only as good as the window they read** (the last 10 s by
//!   default): a run shorter than a second, or a load that changes within the
//!   window, gives averages of different regimes. The CPU rule reads the whole
//!   machine (`/proc/stat`): a machine busy with other work reads as saturated.
//! - **Single flight holds within one process**: two processes with their own
//!   caches run a missing key once each. A caller that drops its call while it
//!   runs the key hands the run to a waiting caller, which runs it again
//!   (counted as another execution).
//! - **Size advice is a simulation**: the LRU and TinyLFU models approximate
//!   moka (which also has a frequency sketch, but its own details), and a
//!   sampled trace trades accuracy for memory. First lookups of a key always
//!   miss: the table's "best possible" column says how high any cache can go.
//! - **Byte weights are estimates**: an entry weighs its key plus the postcard
//!   encoding of its result, not its in-memory size.
//! - **Events sent under the pool's lock** keep their order for every
//!   subscriber; that costs a little time per task while someone subscribes
//!   (the crate README measures it), and nothing when nobody does.
//! - **A lagging monitor** loses events: it counts them (`totals.lagged`) and
//!   starts its queue and busy levels afresh; totals are then short by what
//!   was lost. Give it a larger [`forkyard_pool::Builder::event_capacity`].
//! - The HTTP endpoint has no authentication: bind it to loopback.
//!
//! # Compared with
//!
//! - **moka** itself: the cache is moka's; what this crate adds is the count of
//!   hits, misses, coalesced waits and evictions by cause (moka's own stats are
//!   an open roadmap item), the negative TTL, and the size advice.
//! - **piscina's stats** (`utilization`, `waitTime` and `runTime` histograms,
//!   `queueSize`): the same measurements for a thread pool; no verdict, no cache.
//! - **PM2 `monit`**: live CPU and memory per process, restarts; no queue, no
//!   latency percentiles, no verdict.
//!
//! # See also
//!
//! `forkyard-pool` (the pool, its [`Stats`](forkyard_pool::Stats) and its
//! event stream), `forkyard-child` (the sampling and rusage behind the worker
//! figures), and the crate README for measured figures.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod advice;
mod cache;
#[cfg(feature = "http")]
mod http;
mod monitor;
mod sweep;
pub mod verdict;

pub use advice::{Advice, Trace};
pub use cache::{Backend, CacheBuilder, CacheStats, Cached, FnBackend};
#[cfg(feature = "http")]
pub use http::MetricsServer;
pub use monitor::{Latency, Monitor, MonitorConfig, Point, Snapshot, Totals, WorkerFigures};
pub use sweep::{Sweep, SweepConfig, SweepRow, sweep};
pub use verdict::{Verdict, VerdictKind, verdicts};
