//! `cargo xtask demo perf`: a pool too small and uncached; the monitor's live
//! table; the verdict; the fix applied and measured; then a cache, its hit
//! rate, the size advice, and the second improvement; and a pool-size sweep.
//!
//! `--quick` keeps it under 30 seconds.

use std::time::{Duration, Instant};

use forkyard_perf::{
    Cached, Monitor, MonitorConfig, Sweep, SweepConfig, SweepRow, VerdictKind, sweep,
};
use forkyard_pool::{Builder, Pool, ShutdownMode};
use futures::StreamExt;

/// The task: about `ms` milliseconds of CPU, answered with a small result.
async fn task(req: (u64, u64)) -> Result<u64, String> {
    let (key, ms) = req;
    let until = Instant::now() + Duration::from_millis(ms);
    let mut x = key;
    while Instant::now() < until {
        for _ in 0..1000 {
            x = std::hint::black_box(x.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15);
        }
    }
    Ok(x)
}

fn main() {
    if forkyard_pool::worker::is_worker() {
        forkyard_pool::worker::serve(task);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(quick)) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn builder() -> Builder<(u64, u64), u64> {
    Pool::<(u64, u64), u64>::builder()
        .self_exec(std::iter::empty::<&str>())
        .expect("own executable")
        .sample_every(Duration::from_millis(250))
}

/// Zipf(1.0)-ish keys over `n`, from a fixed seed (splitmix64, inversion).
fn keys(n: u64, count: usize, mut state: u64) -> Vec<u64> {
    let h: Vec<f64> = (1..=n)
        .scan(0.0, |acc, k| {
            *acc += 1.0 / k as f64;
            Some(*acc)
        })
        .collect();
    let total = *h.last().unwrap_or(&1.0);
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 * total;
            h.partition_point(|&c| c < u) as u64
        })
        .collect()
}

/// Runs `keys` through `call` with `callers` in flight for at most `limit`,
/// printing the monitor's table every second; returns calls per second.
async fn load<F, Fut>(
    monitor: &Monitor,
    keys: &[u64],
    callers: usize,
    limit: Duration,
    call: F,
) -> f64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    let work = futures::stream::iter(keys.iter().copied())
        .take_while(|_| std::future::ready(started.elapsed() < limit))
        .for_each_concurrent(callers, |k| {
            let (call, done) = (&call, &done);
            async move {
                if call(k).await {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    tokio::pin!(work);
    let mut table = tokio::time::interval(Duration::from_secs(1));
    table.tick().await;
    println!(
        "    {:>4}  {:>8}  {:>6}  {:>5}  {:>10}  {:>10}  {:>5}  {:>8}",
        "t", "tasks/s", "queue", "busy", "wait p50", "svc p50", "cpu", "hit rate"
    );
    loop {
        tokio::select! {
            () = &mut work => break,
            _ = table.tick() => {
                let s = monitor.snapshot();
                if let Some(p) = s.seconds.iter().rev().nth(1) {
                    println!(
                        "    {:>3}s  {:>8.0}  {:>6.1}  {:>5.1}  {:>8.1}ms  {:>8.1}ms  {:>4.0}%  {:>8}",
                        p.start_secs,
                        p.tasks_per_sec,
                        p.queue_depth,
                        p.busy_workers,
                        p.queue_wait.p50_us as f64 / 1000.0,
                        p.service.p50_us as f64 / 1000.0,
                        p.cpu_utilisation.unwrap_or(0.0) * 100.0,
                        p.cache_hit_rate.map(|h| format!("{h:.2}")).unwrap_or_else(|| "-".into()),
                    );
                }
            }
        }
    }
    let n = done.load(std::sync::atomic::Ordering::Relaxed);
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run(quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let secs = Duration::from_secs(if quick { 3 } else { 8 });
    let ms = 2;
    let callers = 8;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let trace = keys(500, 1_000_000, 7);
    println!("forkyard-perf demo: tasks of {ms} ms of CPU, {callers} callers, {cpus} CPUs\n");

    // 1. Too small, uncached.
    println!("1. one worker, no cache: the monitor's table, once a second");
    let b = builder().workers(1);
    let monitor = Monitor::start(b.subscribe(), MonitorConfig::default());
    let pool = b.build().await?;
    let before = load(&monitor, &trace, callers, secs, |k| {
        let pool = &pool;
        async move { pool.call((k, ms)).await.is_ok() }
    })
    .await;
    let verdicts = monitor.verdicts();
    println!("   {before:.0} calls/s; verdicts:");
    for v in &verdicts {
        println!("   - {v}");
    }
    let suggest = verdicts
        .iter()
        .find_map(|v| match v.kind {
            VerdictKind::AddWorkers { suggest } => Some(suggest),
            _ => None,
        })
        .unwrap_or(cpus.clamp(1, 4));
    drop(monitor);
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(5),
    })
    .await;

    // 2. The fix applied.
    println!("\n2. the fix applied: {suggest} workers");
    let b = builder().workers(suggest);
    let monitor = Monitor::start(b.subscribe(), MonitorConfig::default());
    let pool = b.build().await?;
    let fixed = load(&monitor, &trace, callers, secs, |k| {
        let pool = &pool;
        async move { pool.call((k, ms)).await.is_ok() }
    })
    .await;
    println!(
        "   {fixed:.0} calls/s ({:.2}x); verdicts:",
        fixed / before.max(1e-9)
    );
    for v in monitor.verdicts() {
        println!("   - {v}");
    }

    // 3. A cache in front, deliberately small, with a trace for advice.
    let cache_bytes = 2 * 1024;
    println!(
        "\n3. a {} KiB cache in front ({} keys, Zipf(1.0))",
        cache_bytes / 1024,
        500
    );
    let cached = Cached::builder(pool.clone())
        .max_bytes(cache_bytes)
        .record_trace(200_000, 1.0)
        .build();
    monitor.watch_cache(&cached);
    let with_cache = load(&monitor, &trace, callers, secs, |k| {
        let cached = &cached;
        async move { cached.call((k, ms)).await.is_ok() }
    })
    .await;
    let s = cached.stats();
    println!(
        "   {with_cache:.0} calls/s ({:.2}x the fixed pool); hit rate {:.2} (last minute {:.2}); hits {}, misses {}, coalesced {}",
        with_cache / fixed.max(1e-9),
        s.hit_rate,
        s.hit_rate_last_minute,
        s.hits,
        s.misses,
        s.coalesced
    );
    for v in monitor.verdicts() {
        println!("   - {v}");
    }
    if let Some(advice) = cached.advise(0.9) {
        for line in advice.to_string().lines() {
            println!("   {line}");
        }
    }
    drop(monitor);
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(5),
    })
    .await;

    // 4. Where the knee is.
    let max = (cpus + 2).min(4);
    println!("\n4. pool-size sweep, 1..={max} workers, tasks of {ms} ms of CPU");
    // One size at a time, so each row shows as soon as it is measured (the same load for
    // every size: as many calls in flight as the largest pool would get).
    println!("{}", Sweep::header());
    let mut rows = Vec::new();
    for workers in 1..=max {
        let mut config = SweepConfig::new(workers..=workers, if quick { 600 } else { 2000 });
        config.concurrency = Some(4 * max);
        // Two tasks in flight per worker, so a worker always has the next one at hand and
        // the sweep measures the CPUs, not the round trip between tasks.
        let measured = sweep(
            config,
            || builder().max_in_flight_per_worker(2),
            |i| (i, ms),
        )
        .await?;
        for r in measured.rows {
            let base = rows
                .first()
                .map_or(r.calls_per_sec, |b: &SweepRow| b.calls_per_sec);
            println!("{}", r.line(base));
            rows.push(r);
        }
    }
    let knee = Sweep::knee_of(&rows);
    println!("  knee: {knee} workers (the smallest size within 10% of the best throughput)");
    println!(
        "\nsummary: {before:.0} calls/s with 1 worker, {fixed:.0} with {suggest}, {with_cache:.0} with the cache; knee at {knee} workers on {cpus} CPUs"
    );
    Ok(())
}
