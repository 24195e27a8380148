//! forkyard-ipc measured side by side with its baselines, in one run:
//!
//! 1. round trip of a small message between the same two processes: a
//!    `Channel` (and an `Rpc` call) against a raw blocking socketpair ping-pong;
//! 2. one-way streaming of 64-byte messages: `Channel::feed` against one
//!    `write(2)` per message on a raw socketpair;
//! 3. HTTP requests/s with 2 workers under `wrk`: forkyard's cluster against a
//!    Node `cluster` server (when `wrk` and `node` are installed).
//!
//! ```text
//! cargo run --release -p forkyard-ipc --example compare [-- --quick]
//! ```
//!
//! Each ratio it prints is also recorded in `target/bench/ipc.jsonl`
//! (`forkyard_testkit::bench`), from which `cargo xtask bench --summary` writes
//! `docs/bench.md`.

#[path = "common/http.rs"]
mod http;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use forkyard_child::{Child, Output};
use forkyard_ipc::Channel;
use forkyard_ipc::balance::Mode;
use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};
use forkyard_testkit::bench::{Figure, Recorder, Row, Target};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum ToBench {
    Ping(u64),
    /// 64 bytes of payload (two arrays: serde stops at 32).
    Msg64([u8; 32], [u8; 32]),
    /// How many `Msg64` arrived since the last `Count`?
    Count,
    /// Ping-pong 8 bytes on this socket (blocking, in a thread) until EOF.
    RawPing(#[serde(with = "forkyard_ipc::fd")] OwnedFd),
    /// Read `bytes` bytes from this socket, then write 8 bytes back.
    RawSink(#[serde(with = "forkyard_ipc::fd")] OwnedFd, u64),
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if http::is_worker() {
        return http::worker_main();
    }
    if args.iter().any(|a| a == "--bench-worker") {
        return bench_worker();
    }
    if args.iter().any(|a| a == "--rpc-worker") {
        return rpc_worker();
    }
    let quick = args.iter().any(|a| a == "--quick");
    println!(
        "forkyard-ipc compare{} on {} cores\n",
        if quick { " (quick)" } else { "" },
        cores()
    );
    // `--only round-trip|streaming|http` runs one section.
    let only = args
        .iter()
        .skip_while(|a| *a != "--only")
        .nth(1)
        .map_or("", String::as_str);
    let want = |section: &str| only.is_empty() || only == section;
    if want("round-trip") {
        round_trip(quick)?;
    }
    if want("streaming") {
        streaming(quick)?;
    }
    if want("http") {
        http_bench(quick)?;
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn exe(arg: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg(arg);
    cmd
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A quantile of a histogram of nanoseconds, as a duration.
fn at(h: &Histogram<u64>, q: f64) -> Duration {
    Duration::from_nanos(h.value_at_quantile(q))
}

/// Records a row of the comparison for `docs/bench.md`.
fn record(measure: &str, forkyard: Figure, baseline: Figure, target: Target) -> anyhow::Result<()> {
    Recorder::new("ipc").record(&Row {
        measure: measure.into(),
        forkyard,
        baseline,
        target,
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------

fn round_trip(quick: bool) -> anyhow::Result<()> {
    let rounds: u64 = if quick { 20_000 } else { 200_000 };
    let blocks = 10;
    println!(
        "== Round trip of a small message between the same two processes ({rounds} each, interleaved in {blocks} blocks)"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut chan_h = Histogram::<u64>::new(3)?;
    let mut raw_h = Histogram::<u64>::new(3)?;
    rt.block_on(async {
        let (mut child, mut chan): (Child, Channel<ToBench, u64>) =
            forkyard_ipc::spawn(&mut exe("--bench-worker"))?;
        let (mine, theirs) = UnixStream::pair()?;
        chan.send(&ToBench::RawPing(theirs.into())).await?;
        let mut raw = mine;
        // Warm up both.
        for i in 0..2_000 {
            chan.send(&ToBench::Ping(i)).await?;
            chan.recv().await?;
            raw_ping(&mut raw, i)?;
        }
        for _ in 0..blocks {
            for i in 0..rounds / blocks {
                let t = Instant::now();
                chan.send(&ToBench::Ping(i)).await?;
                let got = chan.recv().await?;
                chan_h.record(t.elapsed().as_nanos() as u64)?;
                debug_assert_eq!(got, Some(i));
            }
            for i in 0..rounds / blocks {
                let t = Instant::now();
                raw_ping(&mut raw, i)?;
                raw_h.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        drop((raw, chan));
        child.wait().await?;
        anyhow::Ok(())
    })?;

    // The Rpc layer on top (for information): envelopes, ids, two tasks per side.
    let mut rpc_h = Histogram::<u64>::new(3)?;
    rt.block_on(async {
        let (mut child, chan): (Child, RpcChannel<u64, u64>) =
            forkyard_ipc::spawn(&mut exe("--rpc-worker"))?;
        let rpc = Rpc::new(chan, RpcConfig::new(), forkyard_ipc::rpc::refuse);
        for i in 0..2_000 {
            rpc.call(i).await?;
        }
        for i in 0..rounds / 2 {
            let t = Instant::now();
            rpc.call(i).await?;
            rpc_h.record(t.elapsed().as_nanos() as u64)?;
        }
        drop(rpc);
        child.wait().await?;
        anyhow::Ok(())
    })?;

    println!("  {:<40} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    println!(
        "  {:<40} {:>9.2} {:>9.2}",
        "raw blocking socketpair ping-pong",
        us(&raw_h, 0.5),
        us(&raw_h, 0.99)
    );
    println!(
        "  {:<40} {:>9.2} {:>9.2}",
        "Channel send + recv (tokio, 1 thread)",
        us(&chan_h, 0.5),
        us(&chan_h, 0.99)
    );
    println!(
        "  {:<40} {:>9.2} {:>9.2}",
        "Rpc::call (for information)",
        us(&rpc_h, 0.5),
        us(&rpc_h, 0.99)
    );
    println!(
        "  Channel / raw: p50 {:.2}x, p99 {:.2}x (target: within 1.3x)\n",
        us(&chan_h, 0.5) / us(&raw_h, 0.5),
        us(&chan_h, 0.99) / us(&raw_h, 0.99)
    );
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let raw = Figure::time("raw blocking socketpair ping-pong", at(&raw_h, q));
        record(
            &format!("round trip, small message, same two processes, {name}"),
            Figure::time("Channel send + recv", at(&chan_h, q)),
            raw.clone(),
            Target::RatioAtMost(1.3),
        )?;
        record(
            &format!("round trip, Rpc::call (information), {name}"),
            Figure::time("Rpc::call", at(&rpc_h, q)),
            raw,
            Target::None,
        )?;
    }
    Ok(())
}

fn raw_ping(raw: &mut UnixStream, i: u64) -> std::io::Result<()> {
    raw.write_all(&i.to_le_bytes())?;
    let mut back = [0u8; 8];
    raw.read_exact(&mut back)?;
    debug_assert_eq!(u64::from_le_bytes(back), i);
    Ok(())
}

// ---------------------------------------------------------------------------

fn streaming(quick: bool) -> anyhow::Result<()> {
    let n: u64 = if quick { 200_000 } else { 2_000_000 };
    println!("== One-way streaming of 64-byte messages ({n} messages, best of 3)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut chan_best, mut raw_best) = (0f64, 0f64);
    rt.block_on(async {
        let (mut child, mut chan): (Child, Channel<ToBench, u64>) =
            forkyard_ipc::spawn(&mut exe("--bench-worker"))?;
        let payload = ToBench::Msg64([7; 32], [9; 32]);
        let raw_msg = [7u8; 64];
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                chan.feed(&payload).await?;
            }
            chan.send(&ToBench::Count).await?;
            let got = chan.recv().await?.context("worker gone")?;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            if got != n {
                bail!("the worker counted {got} messages, not {n}");
            }
            chan_best = chan_best.max(rate);

            let (mut mine, theirs) = UnixStream::pair()?;
            chan.send(&ToBench::RawSink(theirs.into(), n * 64)).await?;
            let t = Instant::now();
            for _ in 0..n {
                mine.write_all(&raw_msg)?;
            }
            let mut back = [0u8; 8];
            mine.read_exact(&mut back)?;
            raw_best = raw_best.max(n as f64 / t.elapsed().as_secs_f64());
        }
        drop(chan);
        child.wait().await?;
        anyhow::Ok(())
    })?;
    println!(
        "  {:<40} {:>12.0} msg/s",
        "raw: one write(2) per message", raw_best
    );
    println!(
        "  {:<40} {:>12.0} msg/s",
        "Channel::feed (+ one flush)", chan_best
    );
    println!(
        "  Channel / raw: {:.1}x (target: at least 1x)\n",
        chan_best / raw_best
    );
    record(
        "one-way 64-byte messages",
        Figure::rate("Channel::feed (+ one flush)", chan_best, "msg/s"),
        Figure::rate("one write(2) per message", raw_best, "msg/s"),
        Target::RatioAtLeast(1.0),
    )?;
    Ok(())
}

fn bench_worker() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut chan: Channel<u64, ToBench> = Channel::from_parent()?;
        let mut count = 0u64;
        while let Some(msg) = chan.recv().await? {
            match msg {
                ToBench::Ping(n) => chan.send(&n).await?,
                ToBench::Msg64(..) => count += 1,
                ToBench::Count => {
                    chan.send(&count).await?;
                    count = 0;
                }
                ToBench::RawPing(fd) => {
                    std::thread::spawn(move || {
                        let mut s = UnixStream::from(fd);
                        let mut buf = [0u8; 8];
                        while s.read_exact(&mut buf).is_ok() {
                            if s.write_all(&buf).is_err() {
                                break;
                            }
                        }
                    });
                }
                ToBench::RawSink(fd, bytes) => {
                    std::thread::spawn(move || {
                        let mut s = UnixStream::from(fd);
                        let mut buf = vec![0u8; 256 << 10];
                        let mut left = bytes;
                        while left > 0 {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => left = left.saturating_sub(k as u64),
                            }
                        }
                        let _ = s.write_all(&bytes.to_le_bytes());
                    });
                }
            }
        }
        anyhow::Ok(())
    })
}

fn rpc_worker() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let chan: RpcChannel<(), (), u64, u64> = Channel::from_parent()?;
        let rpc = Rpc::new(chan, RpcConfig::new(), |n: u64| async move {
            Ok::<_, String>(n)
        });
        rpc.closed().await;
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------

const NODE_CLUSTER: &str = r#"
const cluster = require('node:cluster');
const http = require('node:http');
const [port, workers] = [Number(process.argv[2]), Number(process.argv[3])];
if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on('listening', () => { if (++ready === workers) console.log('listening'); });
  }
  process.on('SIGTERM', () => { for (const id in cluster.workers) cluster.workers[id].kill(); process.exit(0); });
} else {
  const body = `hello from worker ${cluster.worker.id} (pid ${process.pid})\n`;
  http.createServer((req, res) => res.end(body)).listen(port, '127.0.0.1');
}
"#;

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs wrk against `port`; returns requests/s and the error line, if any.
async fn wrk(port: u16, seconds: u64) -> anyhow::Result<(f64, Option<String>)> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t1",
        "-c64",
        &format!("-d{seconds}s"),
        &format!("http://127.0.0.1:{port}/"),
    ]);
    let out = Child::builder(&mut cmd)
        .stdout(Output::capture(1 << 20))
        .spawn()?
        .wait_with_output()
        .await?;
    let text = out.stdout.text().into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(str::to_owned);
    Ok((rps, errors))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_bench(quick: bool) -> anyhow::Result<()> {
    let seconds = if quick { 3 } else { 10 };
    println!(
        "== HTTP/1.1 keep-alive, 2 workers, wrk -t1 -c64 -d{seconds}s (wrk shares the {} cores)",
        cores()
    );
    if !which("wrk") {
        println!("  wrk not found (apt-get install wrk): skipped\n");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut ours = Vec::new();
        for mode in [Mode::RoundRobin, Mode::Shared] {
            let cluster = http::start(2, mode, 0).await?;
            let (rps, errors) = wrk(cluster.local_addr().port(), seconds).await?;
            let report = cluster.shutdown().await?;
            let conns: Vec<u64> = report.current().map(|w| w.connections).collect();
            println!(
                "  {:<34} {:>9.0} req/s  connections {:?}  fairness {:.3}{}",
                format!("forkyard-ipc, {}", mode.name()),
                rps,
                conns,
                report.fairness(),
                errors
                    .map(|e| format!("  ({})", e.trim()))
                    .unwrap_or_default()
            );
            ours.push(rps);
        }
        if !which("node") {
            println!("  node not found: the Node cluster comparison is skipped\n");
            return anyhow::Ok(());
        }
        let script =
            std::env::temp_dir().join(format!("forkyard-node-cluster-{}.js", std::process::id()));
        std::fs::write(&script, NODE_CLUSTER)?;
        let port = free_port()?;
        let mut cmd = std::process::Command::new("node");
        cmd.arg(&script).arg(port.to_string()).arg("2");
        let mut node = Child::builder(&mut cmd).stdout(Output::lines()).spawn()?;
        let ready = tokio::time::timeout(Duration::from_secs(20), node.next_line()).await;
        let _ = std::fs::remove_file(&script);
        if !matches!(ready, Ok(Some(ref l)) if l.text() == "listening") {
            bail!("the node cluster did not start: {ready:?}");
        }
        let (node_rps, errors) = wrk(port, seconds).await?;
        node.stop(Duration::from_secs(2)).await?;
        println!(
            "  {:<34} {:>9.0} req/s{}",
            "node cluster (SCHED_RR)",
            node_rps,
            errors
                .map(|e| format!("  ({})", e.trim()))
                .unwrap_or_default()
        );
        println!(
            "  forkyard round-robin / node: {:.2}x, shared / node: {:.2}x (target: at least 2x)\n",
            ours[0] / node_rps,
            ours[1] / node_rps
        );
        let node = Figure::rate("node cluster (SCHED_RR)", node_rps, "req/s");
        let measure = format!("HTTP/1.1 keep-alive, 2 workers, wrk -t1 -c64 -d{seconds}s");
        record(
            &measure,
            Figure::rate("forkyard-ipc, round-robin", ours[0], "req/s"),
            node.clone(),
            Target::RatioAtLeast(2.0),
        )?;
        record(
            &format!("{measure}, shared listener"),
            Figure::rate("forkyard-ipc, shared listener", ours[1], "req/s"),
            node,
            Target::None,
        )?;
        anyhow::Ok(())
    })
}
