//! The fault suite's distributed part (run at the end of `examples/fault.rs`
//! when `nats-server` is on PATH): a word count on one server and three
//! node processes (`forkyard-mapreduce-node --serve`) while a chaos party
//! SIGKILLs nodes (starting a replacement each time), SIGSTOPs one and
//! later lifts it, and restarts the broker on the same store, all at
//! seeded random moments; the output must equal the single-threaded count,
//! byte for byte. Also holds [`Rig`], which the distributed demo shares.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use forkyard_mapreduce::dist::{DistOptions, NatsConfig};
use forkyard_mapreduce::jobs::WordCount;
use forkyard_mapreduce::{LineFiles, MapReduce};
use forkyard_testkit::nats::{NatsServer, nats_server_path};
use rustix::process::{Pid, Signal, kill_process};

/// The node program (`forkyard-mapreduce-node`, the crate's `[[bin]]`) next
/// to this example: `cargo xtask demo|fault|bench` build it with the
/// examples (and say so in `FORKYARD_PREBUILT`); under a plain `cargo run
/// --example`, which builds no `[[bin]]`, it is built here, in this
/// binary's profile.
pub(crate) fn node_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("no directory")?.to_path_buf();
    if dir.ends_with("examples") {
        dir.pop();
    }
    let bin = dir.join("forkyard-mapreduce-node");
    if std::env::var_os("FORKYARD_PREBUILT").is_some() && bin.is_file() {
        return Ok(bin);
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "-q",
        "-p",
        "forkyard-mapreduce",
        "--bin",
        "forkyard-mapreduce-node",
    ]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let built = cmd.status().is_ok_and(|s| s.success());
    if !built && !bin.is_file() {
        bail!("cannot build {}", bin.display());
    }
    Ok(bin)
}

/// A `nats-server` on a free loopback port and node processes.
pub(crate) struct Rig {
    pub(crate) server: NatsServer,
    pub(crate) nodes: Vec<Child>,
    bin: PathBuf,
    workers: usize,
    /// The nodes' TMPDIR: a SIGKILLed node cannot remove its scratch
    /// directory, so the rig does (after the nodes, on drop).
    tmp: tempfile::TempDir,
}

impl Rig {
    /// `None` when `nats-server` is not on PATH.
    pub(crate) fn start(nodes: usize, workers: usize) -> Result<Option<Rig>> {
        if nats_server_path().is_none() {
            return Ok(None);
        }
        let mut rig = Rig {
            server: NatsServer::start().context("cannot start nats-server")?,
            nodes: Vec::new(),
            bin: node_bin()?,
            workers,
            tmp: tempfile::tempdir()?,
        };
        for _ in 0..nodes {
            rig.add_node()?;
        }
        Ok(Some(rig))
    }

    pub(crate) fn add_node(&mut self) -> Result<()> {
        let child = Command::new(&self.bin)
            .args(["--serve", "--nats", &self.server.url(), "--workers"])
            .arg(self.workers.to_string())
            .env("TMPDIR", self.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a node")?;
        self.nodes.push(child);
        Ok(())
    }

    pub(crate) fn config(&self) -> NatsConfig {
        NatsConfig::new(self.server.url())
    }

    pub(crate) fn signal(&self, node: usize, sig: Signal) {
        if let Some(pid) = Pid::from_raw(self.nodes[node].id() as i32) {
            let _ = kill_process(pid, sig);
        }
    }

    /// SIGKILLs and reaps node `i` (its workers die with it).
    pub(crate) fn kill_node(&mut self, i: usize) {
        let mut child = self.nodes.remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

/// What the chaos party did.
#[derive(Debug, Default)]
struct Struck {
    kills: u32,
    stops: u32,
    conts: u32,
    restarts: u32,
}

/// [`run`] as the fault suite's exit code (a failure to even start prints
/// the same kind of line as a difference).
pub(crate) fn exit_code(seed: u64, quick: bool) -> std::process::ExitCode {
    match run(seed, quick) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            println!("fault mapreduce dist seed {seed}: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the distributed part; prints one line. Ok(false) on a difference
/// or a failed job; Ok(true) also when skipped (no nats-server).
pub(crate) fn run(seed: u64, quick: bool) -> Result<bool> {
    let Some(mut rig) = Rig::start(3, 2)? else {
        println!("fault mapreduce dist: skipped: nats-server not on PATH");
        return Ok(true);
    };
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    let (size, split) = if quick {
        (2u64 << 20, 128u64 << 10)
    } else {
        (16u64 << 20, 512u64 << 10)
    };
    crate::common::zipf_corpus(&corpus, size, 20_000, seed)?;
    let reference = crate::common::reference(&[corpus.as_path()], None)?;
    let out = dir.path().join("out");
    let reducers = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xd157);
    let mut struck = Struck::default();
    let result = rt.block_on(async {
        let cluster = rig.config().connect().await?;
        let job = MapReduce::new(WordCount::new())
            .input(LineFiles::new([&corpus]))
            .out_dir(&out)
            .reducers(reducers)
            .split_size(split)
            .backups(true, Duration::from_millis(300))
            .max_failures(8)
            .run_on_with(
                &cluster,
                DistOptions::new()
                    .ack_wait(Duration::from_secs(1))
                    .max_deliver(20),
            );
        tokio::pin!(job);
        let mut stopped: Option<(usize, Instant)> = None;
        let mut restarted = false;
        let mut first = true;
        loop {
            let delay = Duration::from_millis(rng.u64(100..400));
            tokio::select! {
                r = &mut job => break r.map_err(anyhow::Error::from),
                _ = tokio::time::sleep(delay) => {}
            }
            // Lift a stop after a while: the straggler wakes up and tries
            // to commit what others already committed.
            if let Some((i, when)) = stopped
                && when.elapsed() > Duration::from_millis(1500)
            {
                rig.signal(i, Signal::CONT);
                struck.conts += 1;
                stopped = None;
            }
            // The first strike always lands (a node killed), so no run goes unstruck.
            let roll = if first { 0 } else { rng.u8(0..10) };
            first = false;
            match roll {
                0..=3 if rig.nodes.len() > 1 => {
                    let i = rng.usize(0..rig.nodes.len());
                    if stopped.is_some_and(|(s, _)| s == i) {
                        stopped = None;
                    }
                    if let Some((s, w)) = stopped
                        && s > i
                    {
                        stopped = Some((s - 1, w));
                    }
                    rig.kill_node(i);
                    rig.add_node()?;
                    struck.kills += 1;
                }
                4..=5 if stopped.is_none() && !rig.nodes.is_empty() => {
                    let i = rng.usize(0..rig.nodes.len());
                    rig.signal(i, Signal::STOP);
                    stopped = Some((i, Instant::now()));
                    struck.stops += 1;
                }
                6 if !restarted => {
                    rig.server.restart().context("cannot restart nats-server")?;
                    restarted = true;
                    struck.restarts += 1;
                }
                _ => {}
            }
        }
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            println!("fault mapreduce dist seed {seed}: FAILED: the job failed: {e:#}");
            return Ok(false);
        }
    };
    let verdict = crate::common::check_output(&out, &reference, reducers);
    let line = format!(
        "{} node kills, {} stops ({} lifted), {} broker restart(s), {} redeliveries, {} backups, {:.1} MB through the broker, {:.1?}",
        struck.kills,
        struck.stops,
        struck.conts,
        struck.restarts,
        report.redeliveries,
        report.report.map.backups + report.report.reduce.backups,
        report.broker_bytes as f64 / 1e6,
        started.elapsed()
    );
    match verdict {
        Ok(()) => {
            println!(
                "fault mapreduce dist seed {seed}: ok: output identical to the single-threaded count; {line}"
            );
            Ok(true)
        }
        Err(e) => {
            println!("fault mapreduce dist seed {seed}: FAILED: {e}; {line}");
            Ok(false)
        }
    }
}
