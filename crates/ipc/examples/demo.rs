//! A narrated tour of forkyard-ipc: request-response, pub-sub, handle passing
//! with its distribution table, and one handoff under load.
//!
//! ```text
//! cargo xtask demo ipc            # or: cargo run --release -p forkyard-ipc --example demo
//! cargo run -p forkyard-ipc --example demo -- --quick
//! ```
//!
//! Every worker is this same executable, started again with a role flag.

#[path = "common/http.rs"]
mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use forkyard_child::Child;
use forkyard_ipc::balance::{ClusterStats, Mode};
use forkyard_ipc::pubsub::{Broker, BrokerConfig, Client, Overflow};
use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};
use forkyard_ipc::{Config, Error};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the parent asks the rpc worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Square(u64),
    /// Sleep, then answer.
    Slow {
        ms: u64,
    },
    /// Ask the parent for a number, and add one.
    AskParent,
    /// Exit at once.
    Crash,
}

/// What the rpc worker asks the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ask {
    Secret,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if http::is_worker() {
        return http::worker_main();
    }
    if args.iter().any(|a| a == "--rpc-worker") {
        return rpc_worker();
    }
    if let Some(i) = args.iter().position(|a| a == "--sub-worker") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        return sub_worker(&name);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        request_response(quick).await?;
        pub_sub(quick).await?;
        handle_passing(quick).await?;
        handoff(quick).await?;
        anyhow::Ok(())
    })?;
    drop(rt);
    println!(
        "\nAll done in {:.1} s; every worker has exited.",
        started.elapsed().as_secs_f64()
    );
    println!(
        "\n== What you saw\n\
         1. Typed request-response over one channel to a worker process: many calls in flight\n\
         \x20  at once, calls in both directions, deadlines and cancellation that reach the\n\
         \x20  worker, and a crashing worker failing its pending calls at once, not at their\n\
         \x20  deadlines.\n\
         2. Pub-sub with the parent as broker: publishing never waits for a slow subscriber;\n\
         \x20  its bounded buffer drops the oldest messages and says how many (the broker counts\n\
         \x20  the `done` message too, hence one more delivered than ticks).\n\
         3. One port served by three worker processes. Jain's index is 1.0 for a perfectly\n\
         \x20  even split and 1/3 when one worker gets everything: the parent passing each\n\
         \x20  connection's fd keeps it even; leaving the choice to the kernel may not.\n\
         4. A new generation of workers took over the port while clients kept sending: no\n\
         \x20  request failed, and the old workers finished what they had and exited with code 0."
    );
    Ok(())
}

fn exe() -> std::process::Command {
    std::process::Command::new(std::env::current_exe().expect("current exe"))
}

// ---------------------------------------------------------------------------

async fn request_response(quick: bool) -> anyhow::Result<()> {
    println!("== 1. Request-response");
    println!(
        "A worker process answers `Job`s; correlation ids let many calls share one channel.\n"
    );
    let mut cmd = exe();
    cmd.arg("--rpc-worker");
    let (mut child, chan): (Child, RpcChannel<Job, u64, Ask, u64>) = forkyard_ipc::spawn(&mut cmd)?;
    let rpc = Rpc::new(chan, RpcConfig::new(), |ask: Ask| async move {
        match ask {
            Ask::Secret => Ok::<_, String>(41),
        }
    });

    let n = if quick { 200 } else { 10_000 };
    let t = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let rpc = rpc.clone();
            tokio::spawn(async move { rpc.call(Job::Square(i)).await })
        })
        .collect();
    let mut ok = 0;
    for (i, c) in calls.into_iter().enumerate() {
        if c.await?? == (i as u64) * (i as u64) {
            ok += 1;
        }
    }
    println!(
        "  {n} calls in flight at once: {ok} correct answers in {:.0} ms ({:.0} calls/s)",
        t.elapsed().as_secs_f64() * 1e3,
        n as f64 / t.elapsed().as_secs_f64()
    );

    let answer = rpc.call(Job::AskParent).await?;
    println!(
        "  the worker called the parent back mid-request: parent said 41, worker answered {answer}"
    );

    match rpc
        .call_with_deadline(Job::Slow { ms: 10_000 }, Duration::from_millis(100))
        .await
    {
        Err(Error::DeadlineExceeded(d)) => println!(
            "  a 10 s job with a {d:?} deadline: DeadlineExceeded, and the worker was told to cancel it"
        ),
        other => bail!("expected a deadline error, got {other:?}"),
    }
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        rpc.call(Job::Slow { ms: 10_000 }),
    )
    .await;
    println!(
        "  a caller that gives up (drops the future{}) cancels the handler in the worker",
        if dropped.is_err() {
            ", here after 20 ms"
        } else {
            ""
        }
    );

    let slow: Vec<_> = (0..3)
        .map(|_| {
            let rpc = rpc.clone();
            tokio::spawn(async move { rpc.call(Job::Slow { ms: 60_000 }).await })
        })
        .collect();
    while rpc.in_flight() < 3 {
        tokio::task::yield_now().await;
    }
    let t = Instant::now();
    let crash = rpc.call(Job::Crash).await;
    let mut failed = 0;
    for s in slow {
        if matches!(s.await?, Err(Error::Closed)) {
            failed += 1;
        }
    }
    println!(
        "  the worker crashes with 4 calls in flight: {} ({failed} more failed the same way) {:.1} ms later, not at their 30 s deadline",
        crash
            .err()
            .map_or("no error?".to_owned(), |e| e.to_string()),
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("  worker {}", child.wait().await?);
    Ok(())
}

fn rpc_worker() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let chan: RpcChannel<Ask, u64, Job, u64> = forkyard_ipc::Channel::from_parent()?;
        let rpc = Rpc::new_with(
            chan,
            RpcConfig::new(),
            |job: Job, rpc: Rpc<Ask, u64>| async move {
                match job {
                    Job::Square(n) => Ok(n * n),
                    Job::Slow { ms } => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(ms)
                    }
                    Job::AskParent => rpc
                        .call(Ask::Secret)
                        .await
                        .map(|s| s + 1)
                        .map_err(|e| e.to_string()),
                    Job::Crash => std::process::exit(3),
                }
            },
        );
        rpc.closed().await;
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------

async fn pub_sub(quick: bool) -> anyhow::Result<()> {
    println!("\n== 2. Pub-sub, the parent as broker");
    println!("Two subscriber workers on topic `ticks`, one fast and one slow (2 ms per message).");
    println!(
        "Each subscriber has a buffer of 16 messages; when full, the oldest is dropped and counted.\n"
    );
    let broker = Broker::<String>::new(
        BrokerConfig::new()
            .buffer(16)
            .overflow(Overflow::DropOldest),
    );
    let mut tallies = broker.subscribe("tally");
    let mut children = Vec::new();
    for name in ["fast", "slow"] {
        let mut cmd = exe();
        cmd.args(["--sub-worker", name]);
        let (child, chan) = forkyard_ipc::spawn_with(Child::builder(&mut cmd), Config::new())?;
        broker.attach(chan);
        children.push(child);
    }
    // Wait until both are subscribed (their acknowledgement says so).
    while broker.subscribers("ticks") < 2 {
        tokio::task::yield_now().await;
    }
    let n = if quick { 1000 } else { 5000 };
    // 2 KiB each, so the slow worker's socket buffer fills after a hundred or so.
    let pad = "x".repeat(2048);
    for i in 0..n {
        broker.publish("ticks", &format!("tick {i} {pad}"));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    broker.publish("ticks", &"done".to_owned());
    println!("  published {n} ticks of 2 KiB and `done` (publishing never waited for anyone)");
    for _ in 0..2 {
        let t = tallies.recv().await.context("tally")?;
        println!("  a worker published on `tally`: {}", t.message);
    }
    for s in broker
        .stats()
        .iter()
        .filter(|s| s.topics.contains(&"ticks".to_owned()))
    {
        println!(
            "  broker's view of {}: delivered {}, dropped {}, at most 16 queued",
            s.id, s.delivered, s.dropped
        );
    }
    broker.close();
    for mut c in children {
        c.wait().await?;
    }
    Ok(())
}

fn sub_worker(name: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = Client::<String>::from_parent()?;
        client.subscribe("ticks").await?;
        let (mut received, mut dropped) = (0u64, 0u64);
        while let Some(d) = client.recv().await? {
            dropped += d.dropped;
            if d.message == "done" {
                break;
            }
            received += 1;
            if name == "slow" {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        client
            .publish(
                "tally",
                &format!("{name}: received {received}, told of {dropped} dropped"),
            )
            .await?;
        // Stay until the broker closes, so the tally is read.
        while client.recv().await?.is_some() {}
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 client connection.
struct HttpConn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl HttpConn {
    async fn connect(addr: std::net::SocketAddr) -> std::io::Result<HttpConn> {
        let (r, w) = TcpStream::connect(addr).await?.into_split();
        Ok(HttpConn {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// One GET; returns whether the server said `Connection: close`.
    async fn get(&mut self) -> std::io::Result<bool> {
        self.writer
            .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
            .await?;
        let mut len = 0usize;
        let mut close = false;
        let mut status = String::new();
        if self.reader.read_line(&mut status).await? == 0 || !status.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("bad status line {status:?}")));
        }
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("content-length:") {
                len = v.trim().parse().map_err(std::io::Error::other)?;
            }
            if line == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).await?;
        Ok(close)
    }
}

fn table(stats: &ClusterStats) {
    println!(
        "  {:<12} {:>7} {:>12} {:>9}",
        "mode", "worker", "connections", "requests"
    );
    for w in stats.current() {
        println!(
            "  {:<12} {:>7} {:>12} {:>9}",
            stats.mode.name(),
            w.index,
            w.connections,
            w.requests
        );
    }
    println!(
        "  {:<12} fairness (Jain's index over connections): {:.3}\n",
        "",
        stats.fairness()
    );
}

async fn handle_passing(quick: bool) -> anyhow::Result<()> {
    println!("\n== 3. Handle passing: three HTTP worker processes on one port");
    println!("shared: each worker accepts on a dup of the listening socket (the kernel picks);");
    println!("round-robin / least-conn: the parent accepts and passes each connection's fd,");
    println!("one in flight per worker until it acknowledges (Node cluster's scheme).\n");
    let (conns, per_conn) = if quick { (24, 5) } else { (90, 200) };
    for mode in [Mode::Shared, Mode::RoundRobin, Mode::LeastConnections] {
        let cluster = http::start(3, mode, 0).await?;
        let addr = cluster.local_addr();
        let clients: Vec<_> = (0..conns)
            .map(|_| {
                tokio::spawn(async move {
                    let mut c = HttpConn::connect(addr).await?;
                    for _ in 0..per_conn {
                        c.get().await?;
                    }
                    std::io::Result::Ok(())
                })
            })
            .collect();
        for c in clients {
            c.await??;
        }
        let report = cluster.shutdown().await?;
        table(&report);
    }
    println!(
        "  (shared mode leaves the split to the kernel: often lopsided under a burst of connects)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------

async fn handoff(quick: bool) -> anyhow::Result<()> {
    println!("\n== 4. Zero-downtime handoff under load");
    println!("Four clients send requests back to back while generation 2 replaces generation 1.\n");
    let cluster = http::start(2, Mode::Shared, 0).await?;
    let addr = cluster.local_addr();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut conn: Option<HttpConn> = None;
                while !stop.load(Ordering::Relaxed) {
                    let result = async {
                        if conn.is_none() {
                            conn = Some(HttpConn::connect(addr).await?);
                        }
                        conn.as_mut().expect("connected").get().await
                    }
                    .await;
                    match result {
                        Ok(close) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if close {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    let warm = if quick { 200 } else { 5_000 };
    while ok.load(Ordering::Relaxed) < warm {
        tokio::task::yield_now().await;
    }
    let before = ok.load(Ordering::Relaxed);
    let t = Instant::now();
    let generation = cluster.handoff().await?;
    println!(
        "  generation {generation} ready and generation 1 drained in {:.0} ms, {} requests served meanwhile",
        t.elapsed().as_secs_f64() * 1e3,
        ok.load(Ordering::Relaxed) - before
    );
    let after = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < after + warm {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    println!(
        "  requests: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    let report = cluster.shutdown().await?;
    for w in &report.workers {
        println!(
            "  generation {} worker {}: {} connections, {} requests, {}",
            w.generation,
            w.index,
            w.connections,
            w.requests,
            w.exit.as_ref().map_or("?".to_owned(), ToString::to_string)
        );
    }
    if failed.load(Ordering::Relaxed) != 0 {
        bail!("requests failed during the handoff");
    }
    Ok(())
}
