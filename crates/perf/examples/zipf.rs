//! A cached pool under a Zipf(1.0) key distribution.
//!
//! ```text
//! cargo run --release -p forkyard-perf --example zipf -- --workers 2 --calls 200000 \
//!     --keys 10000 --cache-mb 4 --seed 7 [--metrics-addr 127.0.0.1:PORT] [--hold]
//! ```
//!
//! Sends `--calls` requests whose keys follow Zipf(1.0) over `--keys` keys
//! through a `Cached` pool of `--workers` workers (this binary, self-exec'd).
//! Each task burns a little CPU, answers about 1 KiB, and says how many tasks
//! its worker has executed, so executions are counted by the workers, not by
//! the cache. Prints the verdicts, the cache-size advice table, and last:
//!
//! `calls N, hits H, misses M, coalesced C, executions E, hit rate 0.RR`
//!
//! With `--metrics-addr`, `/metrics` and `/api/snapshot` are served during
//! the run; with `--hold` also after it, until SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use forkyard_perf::{Cached, Monitor, MonitorConfig};
use forkyard_pool::{Pool, ShutdownMode};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "A cached pool under a Zipf(1.0) key distribution")]
struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Requests to send.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Cache capacity in MiB.
    #[arg(long, default_value_t = 4)]
    cache_mb: u64,
    /// Seed for the key sequence.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Serve /metrics and /api/snapshot here (a loopback address).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Keep serving after the run, until SIGINT.
    #[arg(long)]
    hold: bool,
}

/// What a worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    key: u64,
    /// The worker that ran it.
    pid: u32,
    /// Tasks that worker has executed, this one included.
    executed: u64,
    /// The "result": about a kilobyte.
    payload: Vec<u8>,
}

static EXECUTED: AtomicU64 = AtomicU64::new(0);

/// The task: a little CPU (about 50 µs), then about a kilobyte of answer.
async fn task(key: u64) -> Result<Answer, String> {
    let executed = EXECUTED.fetch_add(1, Ordering::Relaxed) + 1;
    let mut x = key ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..40_000 {
        x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
    }
    Ok(Answer {
        key,
        pid: std::process::id(),
        executed,
        payload: x.to_le_bytes().repeat(125),
    })
}

/// Zipf(s) over 0..n by inversion of the CDF, with splitmix64.
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: u64, s: f64, seed: u64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf, state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

fn main() {
    if forkyard_pool::worker::is_worker() {
        forkyard_pool::worker::serve(task);
    }
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("zipf: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let builder = Pool::<u64, Answer>::builder()
        .self_exec(std::iter::empty::<&str>())?
        .workers(args.workers)
        .max_in_flight_per_worker(4)
        .sample_every(Duration::from_millis(250));
    let monitor = Monitor::start(builder.subscribe(), MonitorConfig::default());
    let pool = builder.build().await?;
    let cached = Cached::builder(pool.clone())
        .max_bytes(args.cache_mb << 20)
        .record_trace(args.calls as usize, 1.0)
        .build();
    monitor.watch_cache(&cached);
    let server = match args.metrics_addr {
        Some(addr) => {
            let server = monitor.serve(addr).await?;
            eprintln!(
                "serving http://{}/metrics and /api/snapshot",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };

    let mut zipf = Zipf::new(args.keys, 1.0, args.seed);
    let keys: Vec<u64> = (0..args.calls).map(|_| zipf.next()).collect();
    let started = Instant::now();
    // The workers' own counts: the highest `executed` seen per worker.
    let seen = std::sync::Mutex::new(BTreeMap::<u32, u64>::new());
    let failed = AtomicU64::new(0);
    futures::stream::iter(keys)
        .for_each_concurrent(args.concurrency, |key| {
            let (cached, seen, failed) = (&cached, &seen, &failed);
            async move {
                match cached.call(key).await {
                    Ok(a) => {
                        assert_eq!(a.key, key, "the answer for the key asked");
                        let mut seen = seen.lock().unwrap();
                        let max = seen.entry(a.pid).or_default();
                        *max = (*max).max(a.executed);
                    }
                    Err(e) => {
                        eprintln!("call for key {key} failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let elapsed = started.elapsed();
    cached.run_pending_tasks().await;
    let executions: u64 = seen.lock().unwrap().values().sum();
    let s = cached.stats();

    println!(
        "{} calls in {:.2} s ({:.0} calls/s) through {} workers; cache {} MiB holds {} entries ({} bytes); evicted for size {}",
        args.calls,
        elapsed.as_secs_f64(),
        args.calls as f64 / elapsed.as_secs_f64(),
        args.workers,
        args.cache_mb,
        s.entries,
        s.bytes,
        s.evicted_size
    );
    println!("verdicts:");
    for v in monitor.verdicts() {
        println!("  - {v}");
    }
    if let Some(advice) = cached.advise(0.9) {
        println!("{advice}");
    }
    println!(
        "calls {}, hits {}, misses {}, coalesced {}, executions {}, hit rate {:.2}",
        s.calls,
        s.hits,
        s.misses,
        s.coalesced,
        executions,
        s.hits as f64 / s.calls.max(1) as f64
    );

    if args.hold {
        eprintln!("holding; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    if let Some(server) = server {
        server.shutdown().await;
    }
    drop(monitor);
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(5),
    })
    .await;
    if failed.load(Ordering::Relaxed) > 0 {
        return Err("some calls failed".into());
    }
    Ok(())
}
