//! The broker's cost, side by side in one run: the word count on one
//! `nats-server` and two node processes (2 pool workers each) against the
//! local engine with 2 workers, on this machine; then pool-style calls
//! through the broker against calls to a local pool.
//!
//! ```sh
//! cargo run --release -p forkyard-mapreduce --example compare_dist [-- --mb 200 --calls 2000]
//! ```
//!
//! Both engines run the library's `jobs::WordCount` (the node program,
//! `forkyard-mapreduce-node`, is the local engine's worker and the nodes), over the same generated Zipf corpus;
//! their outputs are compared byte for byte. Needs `nats-server` on PATH.

#[path = "common/mod.rs"]
mod common;
#[path = "common/fault_dist.rs"]
mod fault_dist;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use fault_dist::{Rig, node_bin};
use forkyard_mapreduce::dist::Caller;
use forkyard_mapreduce::jobs::{CountWords, WordCount};
use forkyard_mapreduce::{LineFiles, MapReduce};
use forkyard_pool::Pool;

#[derive(Debug, Parser)]
struct Args {
    /// Corpus size in MB.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Calls for the round-trip and throughput figures.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Calls in flight for the throughput figure.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    // As a local pool's worker (the call baseline): count words.
    if forkyard_pool::worker::is_worker() {
        forkyard_pool::worker::serve(|line: String| async move {
            Ok::<u64, String>(line.split_ascii_whitespace().count() as u64)
        });
    }
    let args = Args::parse();
    let Some(rig) = Rig::start(2, 2)? else {
        bail!("nats-server is not on PATH");
    };
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    common::zipf_corpus(&corpus, args.mb << 20, 100_000, 7)?;
    let bytes = std::fs::metadata(&corpus)?.len();
    println!(
        "corpus: {:.0} MB, Zipf over 100000 words; load before: {}",
        bytes as f64 / 1e6,
        load()
    );
    let exe = node_bin()?;
    let job = |out: &std::path::Path| {
        MapReduce::new(WordCount::new())
            .input(LineFiles::new([&corpus]))
            .out_dir(out)
            .reducers(4)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Local first, then the cluster, on the same warm page cache.
    let local_out = dir.path().join("local");
    let started = Instant::now();
    let exe2 = exe.clone();
    let local = job(&local_out)
        .workers(2)
        .worker_command(move || Command::new(&exe2))
        .run_blocking()?;
    let local_wall = started.elapsed();
    let load_local = load();
    let dist_out = dir.path().join("dist");
    let started = Instant::now();
    let dist = rt.block_on(async {
        let cluster = rig.config().connect().await?;
        job(&dist_out)
            .run_on(&cluster)
            .await
            .map_err(anyhow::Error::from)
    })?;
    let dist_wall = started.elapsed();
    let load_dist = load();
    common::same_parts(&local_out, &dist_out, 4).map_err(anyhow::Error::msg)?;
    println!(
        "word count, {} map tasks, 4 reducers (outputs identical):",
        local.map.tasks
    );
    println!(
        "  local engine, 2 workers:           {:>7.2?}  ({:.1} MB/s)  load {load_local}",
        local_wall,
        bytes as f64 / 1e6 / local_wall.as_secs_f64()
    );
    println!(
        "  1 server + 2 nodes x 2 workers:    {:>7.2?}  ({:.1} MB/s)  load {load_dist}",
        dist_wall,
        bytes as f64 / 1e6 / dist_wall.as_secs_f64()
    );
    println!(
        "  ratio {:.2}x; {:.1} MB through the broker ({:.2}x the input)",
        dist_wall.as_secs_f64() / local_wall.as_secs_f64(),
        dist.broker_bytes as f64 / 1e6,
        dist.broker_bytes as f64 / bytes as f64
    );

    // Calls: the same function on a local pool (2 workers, this binary) and
    // through the broker (the nodes' call pools).
    let line = "the quick brown fox jumps over the lazy dog".to_string();
    let (local_p50, local_tput) = rt.block_on(async {
        let pool = Pool::<String, u64>::builder()
            .workers(2)
            .self_exec(std::iter::empty::<&str>())?
            .build()
            .await?;
        let p50 = round_trips(args.calls, || {
            let pool = pool.clone();
            let line = line.clone();
            async move { pool.call(line).await.map_err(anyhow::Error::from) }
        })
        .await?;
        let tput = throughput(args.calls, args.concurrency, || {
            let pool = pool.clone();
            let line = line.clone();
            async move { pool.call(line).await.map_err(anyhow::Error::from) }
        })
        .await?;
        pool.shutdown(forkyard_pool::ShutdownMode::Drain {
            grace: Duration::from_secs(1),
        })
        .await;
        Ok::<_, anyhow::Error>((p50, tput))
    })?;
    let (remote_p50, remote_tput) = rt.block_on(async {
        let cluster = rig.config().connect().await?;
        let caller = std::sync::Arc::new(Caller::<CountWords>::new(&cluster).await?);
        let p50 = round_trips(args.calls, || {
            let caller = caller.clone();
            let line = line.clone();
            async move {
                caller
                    .call(&line, Duration::from_secs(10))
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .await?;
        let tput = throughput(args.calls, args.concurrency, || {
            let caller = caller.clone();
            let line = line.clone();
            async move {
                caller
                    .call(&line, Duration::from_secs(10))
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .await?;
        Ok::<_, anyhow::Error>((p50, tput))
    })?;
    println!(
        "calls ({} sequential for p50, {} with {} in flight for throughput); load {}:",
        args.calls,
        args.calls,
        args.concurrency,
        load()
    );
    println!(
        "  local pool, 2 workers:             p50 {:>8.1?}  {:>8.0} calls/s",
        local_p50, local_tput
    );
    println!(
        "  through the broker (2 nodes):      p50 {:>8.1?}  {:>8.0} calls/s",
        remote_p50, remote_tput
    );
    drop(rig);
    Ok(())
}

async fn round_trips<F, Fut>(n: usize, mut call: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let got = call().await.context("a call failed")?;
        times.push(t.elapsed());
        if got != 9 {
            bail!("wrong answer {got}");
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

async fn throughput<F, Fut>(n: usize, concurrency: usize, mut call: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    use futures::StreamExt;
    let started = Instant::now();
    let mut calls = futures::stream::iter((0..n).map(|_| call())).buffer_unordered(concurrency);
    while let Some(r) = calls.next().await {
        r.context("a call failed")?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
