//! Death-to-replacement-ready, side by side with Node cluster's re-fork.
//!
//! `cargo run --release -p forkyard-supervise --example compare -- [--rounds N]`
//!
//! Each round SIGKILLs the serving process and measures the time until its replacement is
//! ready to serve, with no backoff:
//!
//! - forkyard-supervise restarting a native server, three ways of knowing "ready": none
//!   (spawned), a TCP probe every 1 ms, and a `ready` line on stdout read by a heartbeat probe;
//! - forkyard-supervise restarting the very Node HTTP server a cluster worker runs (ready line),
//!   which separates the supervisor's cost from Node's start-up cost;
//! - Node's `cluster` (when `node` is on the PATH): the primary's `exit` handler calls
//!   `cluster.fork()`, and the round ends at the new worker's `listening` event, which is what
//!   PM2's cluster mode does on a crash.
//!
//! With Node present, each row's median is also recorded against Node cluster's in
//! `target/bench/supervise.jsonl` (`forkyard_testkit::bench`), from which
//! `cargo xtask bench --summary` writes `docs/bench.md`.

#[path = "common/roles.rs"]
mod roles;

#[path = "common/restart.rs"]
mod restart;

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use forkyard_child::{Child, Output};
use forkyard_testkit::bench::{Figure, Recorder, Row as BenchRow, Target};
use restart::{Readiness, Rig, Server};

const NODE_SCRIPT: &str = r#"
const cluster = require('cluster');
const http = require('http');
const rounds = Number(process.env.ROUNDS);
const warmup = Number(process.env.WARMUP);
if (cluster.isPrimary) {
  const samples = [];
  let t0 = null;
  let seen = 0;
  cluster.on('exit', () => { if (samples.length < rounds) cluster.fork(); });
  cluster.on('listening', (worker) => {
    if (t0 !== null) {
      seen += 1;
      if (seen > warmup) samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    if (samples.length >= rounds) {
      console.log(JSON.stringify(samples));
      worker.process.kill('SIGKILL');
      process.exit(0);
    }
    setImmediate(() => { t0 = process.hrtime.bigint(); worker.process.kill('SIGKILL'); });
  });
  cluster.fork();
} else {
  http.createServer((req, res) => res.end('ok')).listen(Number(process.env.PORT), '127.0.0.1');
}
"#;

const WARMUP: usize = 5;

fn main() -> anyhow::Result<ExitCode> {
    if let Some(code) = roles::run_role_if_asked() {
        return Ok(code);
    }
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()
        .context("--rounds N")?
        .unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(compare(rounds))
}

struct Row {
    name: String,
    samples: Vec<Duration>,
}

async fn compare(rounds: usize) -> anyhow::Result<ExitCode> {
    println!("death (SIGKILL) -> replacement ready, no backoff, {rounds} rounds each\n");
    let mut rows = Vec::new();
    for readiness in Readiness::ALL {
        let rig = Rig::start(readiness).await;
        for _ in 0..WARMUP {
            rig.restart_once().await;
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            samples.push(rig.restart_once().await);
        }
        rig.stop().await;
        rows.push(Row {
            name: format!("forkyard-supervise, {}", readiness.name()),
            samples,
        });
    }
    if node_found() {
        let rig = Rig::start_server(Server::Node, Readiness::Notify).await;
        for _ in 0..WARMUP {
            rig.restart_once().await;
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            samples.push(rig.restart_once().await);
        }
        rig.stop().await;
        rows.push(Row {
            name: "forkyard-supervise, the node server, ready line".into(),
            samples,
        });
    }
    match node(rounds).await {
        Ok(Some(samples)) => rows.push(Row {
            name: "node cluster re-fork (listening)".into(),
            samples,
        }),
        Ok(None) => println!("(node not found: no Node cluster figures)\n"),
        Err(e) => println!("(node cluster run failed: {e:#})\n"),
    }

    let node_median = rows
        .iter()
        .find(|r| r.name.starts_with("node"))
        .map(|r| percentile(&r.samples, 50));
    println!(
        "  {:<50} {:>9} {:>9} {:>9}  vs node cluster (median)",
        "", "median", "p90", "max"
    );
    for row in &rows {
        let median = percentile(&row.samples, 50);
        let ratio = node_median.map_or("-".to_string(), |n| {
            format!("{:.2}x", median.as_secs_f64() / n.as_secs_f64())
        });
        println!(
            "  {:<50} {:>9} {:>9} {:>9}  {ratio}",
            row.name,
            ms(median),
            ms(percentile(&row.samples, 90)),
            ms(percentile(&row.samples, 100)),
        );
    }
    if let Some(node) = node_median {
        let recorder = Recorder::new("supervise");
        for row in rows.iter().filter(|r| !r.name.starts_with("node")) {
            recorder.record(&BenchRow {
                measure: format!("death (SIGKILL) to replacement ready, median of {rounds}"),
                forkyard: Figure::time(&row.name, percentile(&row.samples, 50)),
                baseline: Figure::time("node cluster re-fork (listening)", node),
                // The issue's target: under 10 ms plus the backoff (none here), for a
                // native server; the Node server's start-up is Node's.
                target: if row.name.contains("node") {
                    Target::None
                } else {
                    Target::AtMost(0.010)
                },
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) * p).div_ceil(100);
    sorted[idx.min(sorted.len() - 1)]
}

fn node_found() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the Node cluster script; `None` when there is no `node`.
async fn node(rounds: usize) -> anyhow::Result<Option<Vec<Duration>>> {
    if !node_found() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("forkyard-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("cluster.js");
    std::fs::write(&script, NODE_SCRIPT)?;
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .env("ROUNDS", rounds.to_string())
        .env("WARMUP", WARMUP.to_string())
        .env("PORT", roles::free_port().to_string())
        .stdin(std::process::Stdio::null());
    let child = Child::builder(&mut cmd)
        .stdout(Output::capture(1 << 20))
        .stderr(Output::capture(1 << 16))
        .timeout(Duration::from_secs(120))
        .spawn()?;
    let out = child.wait_with_output().await?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.exit.success() {
        bail!("{}: {}", out.exit, out.stderr.text());
    }
    let values: Vec<f64> = serde_json::from_str(out.stdout.text().trim())
        .with_context(|| format!("parse node output {:?}", out.stdout.text()))?;
    Ok(Some(
        values
            .into_iter()
            .map(|v| Duration::from_secs_f64(v / 1e3))
            .collect(),
    ))
}
