//! [`sweep`]: a workload against pool sizes 1..N, with throughput, latency
//! and the knee.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forkyard_ipc::Message;
use forkyard_pool::{BuildError, Builder, ShutdownMode};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// How a [`sweep`] loads each pool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SweepConfig {
    /// Pool sizes to try.
    pub sizes: RangeInclusive<usize>,
    /// Calls measured per size (after a warm-up of one call per worker).
    pub calls: u64,
    /// Calls in flight at once (default: 4 times the largest size).
    pub concurrency: Option<usize>,
}

impl SweepConfig {
    /// Sizes `sizes`, `calls` calls each.
    pub fn new(sizes: RangeInclusive<usize>, calls: u64) -> SweepConfig {
        SweepConfig {
            sizes,
            calls,
            concurrency: None,
        }
    }
}

/// One pool size's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SweepRow {
    /// Workers.
    pub workers: usize,
    /// Calls completed per second.
    pub calls_per_sec: f64,
    /// Median call latency (end to end), in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// Calls that failed.
    pub errors: u64,
}

impl SweepRow {
    /// A row (for hand-made sweeps and tests).
    pub fn new(workers: usize, calls_per_sec: f64, p50_us: u64, p99_us: u64) -> SweepRow {
        SweepRow {
            workers,
            calls_per_sec,
            p50_us,
            p99_us,
            errors: 0,
        }
    }
}

/// What [`sweep`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Sweep {
    /// One row per size.
    pub rows: Vec<SweepRow>,
    /// The knee: the smallest size within 10% of the best throughput.
    pub knee: usize,
}

impl Sweep {
    /// The knee of a list of rows: the smallest size whose throughput is
    /// within 10% of the best one (more workers than that buy little).
    pub fn knee_of(rows: &[SweepRow]) -> usize {
        let best = rows.iter().map(|r| r.calls_per_sec).fold(0.0, f64::max);
        rows.iter()
            .find(|r| r.calls_per_sec >= 0.9 * best)
            .map_or(0, |r| r.workers)
    }
}

impl Sweep {
    /// The header line of the table [`Sweep`]'s `Display` prints, for printing rows
    /// one by one as they are measured ([`SweepRow::line`]).
    pub fn header() -> String {
        format!(
            "  {:>7}  {:>10}  {:>9}  {:>9}  {:>7}",
            "workers", "calls/s", "p50", "p99", "speedup"
        )
    }
}

impl SweepRow {
    /// The row as a line of the table, its speedup against `base` calls/s.
    pub fn line(&self, base: f64) -> String {
        format!(
            "  {:>7}  {:>10.0}  {:>7.2}ms  {:>7.2}ms  {:>6.2}x",
            self.workers,
            self.calls_per_sec,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.calls_per_sec / base.max(1e-9),
        )
    }
}

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.rows.first().map_or(1.0, |r| r.calls_per_sec);
        writeln!(f, "{}", Sweep::header())?;
        for r in &self.rows {
            let knee = if r.workers == self.knee {
                "  <- knee"
            } else {
                ""
            };
            writeln!(f, "{}{knee}", r.line(base))?;
        }
        write!(
            f,
            "  knee: {} workers (the smallest size within 10% of the best throughput)",
            self.knee
        )
    }
}

/// Runs `config.calls` calls of `request(i)` against a pool made by
/// `builder()` with each size in `config.sizes`, one size after another, and
/// reports throughput, p50/p99 latency per size and the knee.
///
/// On a CPU-bound task the knee sits at the number of CPUs.
pub async fn sweep<Req, Resp>(
    config: SweepConfig,
    builder: impl Fn() -> Builder<Req, Resp>,
    request: impl Fn(u64) -> Req,
) -> Result<Sweep, BuildError>
where
    Req: Message + Clone + Sync,
    Resp: Message,
{
    let concurrency = config.concurrency.unwrap_or(4 * *config.sizes.end()).max(1);
    let mut rows = Vec::new();
    for workers in config.sizes.clone() {
        let pool = builder().workers(workers).build().await?;
        for i in 0..workers as u64 {
            let _ = pool.call(request(i)).await;
        }
        let latencies = Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        );
        let errors = Mutex::new(0u64);
        let started = Instant::now();
        futures::stream::iter(0..config.calls)
            .for_each_concurrent(concurrency, |i| {
                let (pool, latencies, errors) = (&pool, &latencies, &errors);
                let req = request(i);
                async move {
                    let t = Instant::now();
                    let ok = pool.call(req).await.is_ok();
                    let us = (t.elapsed().as_micros() as u64).max(1);
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .saturating_record(us);
                    if !ok {
                        *errors.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    }
                }
            })
            .await;
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        pool.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(10),
        })
        .await;
        let h = latencies.into_inner().unwrap_or_else(|p| p.into_inner());
        rows.push(SweepRow {
            workers,
            calls_per_sec: config.calls as f64 / elapsed,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            errors: errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        });
    }
    let knee = Sweep::knee_of(&rows);
    Ok(Sweep { rows, knee })
}
