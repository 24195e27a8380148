//! forkyard-pool side by side with its baselines, in one run:
//! `cargo run --release -p forkyard-pool --example compare` (or `cargo xtask bench pool`).
//!
//! 1. Round trip of a tiny task through a 1-worker pool (p50, p99) against a raw
//!    blocking socketpair ping-pong between the same two kinds of process.
//! 2. Throughput of tiny tasks through a 2-worker pool with many in flight,
//!    against Node's `child_process.fork` (2 workers, 1,000 in flight; three
//!    alternating turns after a warm-up on each side, the median ratio) and
//!    Python's `multiprocessing.Pool(2).apply_async`, when `node` and `python3`
//!    are on the machine.
//! 3. Spawn-to-ready of a worker, and SIGKILL-to-replacement-ready.
//! 4. `map` of 200,000 tiny items on 2 workers (in order and unordered),
//!    against Python's `Pool(2).map(..., chunksize=1000)` and
//!    `imap_unordered(..., chunksize=1000)`.
//! 5. A crash storm: tiny tasks through a 4-worker pool with one worker
//!    SIGKILLed every 50 ms, against the same pool with no kills (six
//!    alternating turns, the median ratio); and the
//!    longest stretch the pool reported fewer than 3 ready workers, against
//!    the longest time a replacement took to start.
//!
//! Prints ratios; the machines are shared, so compare ratios, not absolute times.
//! `--only round-trip|throughput|start|map|storm` runs one section (for profiling),
//! `--quick` fewer rounds.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use forkyard_pool::{Pool, ShutdownMode, worker};
use forkyard_testkit::bench::{Figure, Recorder, Row, Target};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<()> {
    if worker::is_worker() {
        worker::serve(|n: u64| async move { Ok::<u64, String>(n + 1) });
    }
    if std::env::args().nth(1).as_deref() == Some("--raw-echo") {
        return raw_echo();
    }
    if std::env::args().nth(1).as_deref() == Some("--raw-echo-async") {
        return raw_echo_async();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // FY_CT=1: a current-thread runtime in the parent, to see the cost of cross-thread wakeups.
    let rt = if std::env::var_os("FY_CT").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .unwrap_or_default();
    // The measuring code runs as a task on the runtime's threads, as a
    // server's request handlers do, not on the thread that called `block_on`
    // (each wake-up of that one is a wake-up of another thread).
    rt.block_on(async move { tokio::spawn(async move { run(quick, &only).await }).await? })
}

/// The raw baseline's child: echo 8-byte messages on the socket it got as stdin.
fn raw_echo() -> Result<()> {
    let mut sock = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut buf = [0u8; 8];
    loop {
        if sock.read_exact(&mut buf).is_err() {
            return Ok(());
        }
        sock.write_all(&buf)?;
    }
}

/// The same echo on a current-thread tokio runtime, as a pool worker runs.
fn raw_echo_async() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let std_sock = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        std_sock.set_nonblocking(true)?;
        let mut sock = tokio::net::UnixStream::from_std(std_sock)?;
        let mut buf = [0u8; 8];
        loop {
            if sock.read_exact(&mut buf).await.is_err() {
                return Ok(());
            }
            sock.write_all(&buf).await?;
        }
    })
}

/// A raw echo child on one end of a socketpair; the other end is ours.
fn spawn_echo(exe: &std::path::Path, mode: &str) -> Result<(std::process::Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = Command::new(exe)
        .arg(mode)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .context("spawning a raw echo child")?;
    Ok((child, ours))
}

fn tokio_socket(sock: UnixStream) -> Result<tokio::net::UnixStream> {
    sock.set_nonblocking(true)?;
    Ok(tokio::net::UnixStream::from_std(sock)?)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn run(quick: bool, only: &str) -> Result<()> {
    let want = |section: &str| only.is_empty() || only == section;
    let rounds = if quick { 2_000 } else { 20_000 };
    let exe = std::env::current_exe()?;

    if want("round-trip") {
        // 1. Round trip. The contenders take turns in blocks, so that a
        //    quieter or busier moment of the (shared) machine falls on all of
        //    them alike.
        println!("== 1. Round trip of a tiny task, {rounds} rounds each, in 10 turns ==");
        let mut blocking = spawn_echo(&exe, "--raw-echo")?;
        let mut tokio_side = spawn_echo(&exe, "--raw-echo")?;
        let mut tokio_both = spawn_echo(&exe, "--raw-echo-async")?;
        let pool = Pool::<u64, u64>::builder()
            .self_exec(std::iter::empty::<&str>())?
            .workers(1)
            .build()
            .await?;
        let mut blocking_sock = Some(blocking.1.try_clone()?);
        let [mut raw, mut raw_side, mut raw_both, mut ours]: [Vec<Duration>; 4] =
            std::array::from_fn(|_| Vec::with_capacity(rounds));
        let mut side_sock = tokio_socket(tokio_side.1.try_clone()?)?;
        let mut both_sock = tokio_socket(tokio_both.1.try_clone()?)?;
        let block = rounds / 10;
        for turn in 0..10u64 {
            let base = turn * block as u64;
            // Blocking on both sides, on a thread of its own.
            let sock = blocking_sock.take().expect("returned after each turn");
            let (sock, samples) = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut sock = sock;
                let mut buf = [0u8; 8];
                let mut samples = Vec::with_capacity(block);
                for i in base..base + block as u64 {
                    let t = Instant::now();
                    sock.write_all(&i.to_le_bytes())?;
                    sock.read_exact(&mut buf)?;
                    samples.push(t.elapsed());
                }
                Ok((sock, samples))
            })
            .await??;
            blocking_sock = Some(sock);
            raw.extend(samples);
            // The parent's side on tokio (the floor for anything that waits
            // for its socket through epoll), then both sides on tokio, as a
            // pool worker is.
            for (sock, samples) in [
                (&mut side_sock, &mut raw_side),
                (&mut both_sock, &mut raw_both),
            ] {
                let mut buf = [0u8; 8];
                for i in base..base + block as u64 {
                    let t = Instant::now();
                    sock.write_all(&i.to_le_bytes()).await?;
                    sock.read_exact(&mut buf).await?;
                    samples.push(t.elapsed());
                }
            }
            for i in base..base + block as u64 {
                let t = Instant::now();
                let got = pool.call(i).await?;
                ours.push(t.elapsed());
                if got != i + 1 {
                    bail!("wrong answer");
                }
            }
        }
        pool.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(5),
        })
        .await;
        drop((blocking_sock, side_sock, both_sock));
        for (child, sock) in [&mut blocking, &mut tokio_side, &mut tokio_both] {
            sock.shutdown(std::net::Shutdown::Both)?;
            child.wait()?;
        }
        for samples in [&mut raw, &mut raw_side, &mut raw_both, &mut ours] {
            samples.sort();
        }
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            let o = percentile(&ours, q);
            println!("  {label}: forkyard-pool {o:>9.1?}");
            for (baseline, samples) in [
                ("raw socketpair, blocking", &raw),
                ("raw socketpair, tokio parent", &raw_side),
                ("raw socketpair, tokio both", &raw_both),
            ] {
                let r = percentile(samples, q);
                println!(
                    "       {baseline:<30} {r:>9.1?}   ratio {:.2}x",
                    o.as_secs_f64() / r.as_secs_f64()
                );
                // For docs/bench.md (cargo xtask bench --summary).
                let target = if baseline.ends_with("blocking") {
                    Target::RatioAtMost(1.5)
                } else {
                    Target::None
                };
                let (forkyard, baseline) =
                    (Figure::time("forkyard-pool", o), Figure::time(baseline, r));
                let measure = format!(
                    "round trip of a tiny task, 1 worker, {label}, vs {}",
                    baseline.label
                );
                Recorder::new("pool").record(&Row {
                    measure,
                    forkyard,
                    baseline,
                    target,
                })?;
            }
        }
    }

    if want("throughput") {
        // 2. Throughput, against Node in alternating turns (the machine is
        //    shared: a turn's two runs see about the same neighbours), each
        //    side warmed up first; the median of the per-turn ratios is the
        //    figure. Python runs once, after.
        let total = if quick { 20_000 } else { 200_000 };
        let turns = if quick { 1 } else { 3 };
        println!(
            "\n== 2. Throughput of tiny tasks, 2 workers, 1,000 callers, {total} tasks, {turns} turns against Node =="
        );
        let pool = Pool::<u64, u64>::builder()
            .self_exec(std::iter::empty::<&str>())?
            .workers(2)
            .max_in_flight_per_worker(256)
            .queue_capacity(2_000)
            .build()
            .await?;
        // Warm-up: a tenth of a run, not timed (Node's script does the same).
        throughput(&pool, total / 10).await?;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
        let node_script = format!("{dir}/node_fork.js");
        let (mut ours, mut node, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for turn in 0..turns {
            let (ours_rate, node_rate) = if turn % 2 == 0 {
                let o = throughput(&pool, total).await?;
                (o, peer_rate("node", &node_script, total))
            } else {
                let n = peer_rate("node", &node_script, total);
                (throughput(&pool, total).await?, n)
            };
            ours.push(ours_rate);
            match node_rate {
                Some(n) => {
                    println!(
                        "  turn {turn}: forkyard-pool {ours_rate:>10.0} tasks/s, node child_process.fork {n:>8.0} tasks/s: {:.2}x, load {}",
                        ours_rate / n,
                        load()
                    );
                    node.push(n);
                    ratios.push(ours_rate / n);
                }
                None => println!(
                    "  turn {turn}: forkyard-pool {ours_rate:>10.0} tasks/s (node not run: `node` is not available)"
                ),
            }
        }
        pool.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(5),
        })
        .await;
        let ours_rate = median(&mut ours);
        println!("  forkyard-pool, median              {ours_rate:>10.0} tasks/s");
        if !ratios.is_empty() {
            let (ratio, lowest) = (median(&mut ratios), ratios[0]);
            let label = "node child_process.fork";
            let node_rate = median(&mut node);
            println!(
                "  {label:<34} {node_rate:>10.0} tasks/s   forkyard-pool is {ratio:.2}x (median of the turns; lowest {lowest:.2}x; target >= 4x)"
            );
            Recorder::new("pool").record(&Row {
                measure: format!(
                    "tiny tasks, 2 workers, many in flight, median of {turns} alternating turns, vs {label}"
                ),
                forkyard: Figure::rate("forkyard-pool", ours_rate, "tasks/s"),
                baseline: Figure::rate(label, node_rate, "tasks/s"),
                target: Target::RatioAtLeast(4.0),
            })?;
        }
        let label = "python multiprocessing.Pool";
        match peer_rate("python3", &format!("{dir}/py_pool.py"), total / 10) {
            Some(rate) => {
                println!(
                    "  {label:<34} {rate:>10.0} tasks/s   forkyard-pool is {:.1}x",
                    ours_rate / rate
                );
                Recorder::new("pool").record(&Row {
                    measure: format!("tiny tasks, 2 workers, many in flight, vs {label}"),
                    forkyard: Figure::rate("forkyard-pool", ours_rate, "tasks/s"),
                    baseline: Figure::rate(label, rate, "tasks/s"),
                    target: Target::RatioAtLeast(20.0),
                })?;
            }
            None => println!("  {label:<34} (not run: `python3` is not available)"),
        }
    }

    if want("start") {
        // 3. Spawn-to-ready and SIGKILL-to-replacement-ready.
        let trials = if quick { 5 } else { 20 };
        println!("\n== 3. Worker start, {trials} trials ==");
        let mut spawn_ready = Vec::new();
        for _ in 0..trials {
            let t = Instant::now();
            let pool = Pool::<u64, u64>::builder()
                .self_exec(std::iter::empty::<&str>())?
                .workers(1)
                .build()
                .await?;
            spawn_ready.push(t.elapsed());
            pool.shutdown(ShutdownMode::Drain {
                grace: Duration::from_secs(5),
            })
            .await;
        }
        let pool = Pool::<u64, u64>::builder()
            .self_exec(std::iter::empty::<&str>())?
            .workers(1)
            .backoff(forkyard_supervise::Backoff::none())
            .build()
            .await?;
        // The two steps of a replacement, from the pool's events, received
        // as they come (nothing else runs here): the kill until the
        // replacement is spawned (the pidfd readable, wait4, the reader's end
        // of file, the core's decision, then fork and exec under the pool's
        // lock: `WorkerExited` and `WorkerSpawned` go out together once the
        // lock is let go), and the spawn until its `Ready` (the new process
        // loads, starts its runtime, says hello and Ready over the channel).
        let mut events = pool.subscribe();
        let [mut replace, mut respawned, mut readied]: [Vec<Duration>; 3] = Default::default();
        for _ in 0..trials {
            let old = pool.stats().workers[0].pid.context("a worker pid")?;
            let t = Instant::now();
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(old as i32).context("pid")?,
                rustix::process::Signal::KILL,
            )?;
            loop {
                match events.recv().await.context("the pool's events")? {
                    forkyard_pool::PoolEvent::WorkerSpawned { .. } => respawned.push(t.elapsed()),
                    forkyard_pool::PoolEvent::WorkerReady { spawn_to_ready, .. } => {
                        replace.push(t.elapsed());
                        readied.push(spawn_to_ready);
                        break;
                    }
                    _ => {}
                }
            }
        }
        pool.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(5),
        })
        .await;
        spawn_ready.sort();
        println!(
            "  spawn to ready (pool of 1)          median {:>9.2?}",
            percentile(&spawn_ready, 0.5)
        );
        for (label, samples) in [
            ("SIGKILL to replacement ready", &mut replace),
            ("  SIGKILL to replacement spawned", &mut respawned),
            ("  spawned to Ready", &mut readied),
        ] {
            samples.sort();
            println!(
                "  {label:<34} median {:>9.2?}, p90 {:>9.2?}, max {:>9.2?}",
                percentile(samples, 0.5),
                percentile(samples, 0.9),
                samples[samples.len() - 1]
            );
        }
        println!("  (load {})", load());
    }

    if want("map") {
        // 4. Batches.
        let total = if quick { 20_000 } else { 200_000 };
        println!("\n== 4. map of {total} tiny items, 2 workers ==");
        let pool = Pool::<u64, u64>::builder()
            .self_exec(std::iter::empty::<&str>())?
            .workers(2)
            .max_in_flight_per_worker(4)
            .build()
            .await?;
        let mut best: f64 = 0.0;
        for (label, chunk, ordered) in [
            ("map, automatic chunks", None, true),
            ("map, chunks of 1000", Some(1000), true),
            ("map_unordered, automatic chunks", None, false),
        ] {
            let options = forkyard_pool::MapOptions {
                chunk_size: chunk,
                ..Default::default()
            };
            let started = Instant::now();
            let n = if ordered {
                let mut stream = pool.map_with(0..total as u64, options);
                let mut n = 0u64;
                while let Some(r) = stream.next().await {
                    if r? != n + 1 {
                        bail!("wrong answer");
                    }
                    n += 1;
                }
                n
            } else {
                let mut stream = pool.map_unordered_with(0..total as u64, options);
                let mut n = 0u64;
                while let Some((i, r)) = stream.next().await {
                    if r? != i as u64 + 1 {
                        bail!("wrong answer");
                    }
                    n += 1;
                }
                n
            };
            let rate = n as f64 / started.elapsed().as_secs_f64();
            best = best.max(rate);
            println!("  forkyard-pool {label:<34} {rate:>10.0} items/s");
        }
        pool.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(5),
        })
        .await;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
        match peer_rates("python3", &format!("{dir}/py_map.py"), total) {
            Some(rates) => {
                let mut python_best: f64 = 0.0;
                for (name, rate) in &rates {
                    python_best = python_best.max(*rate);
                    println!("  python Pool(2).{name:<26} {rate:>10.0} items/s");
                }
                println!(
                    "  forkyard-pool's best / Python's best: {:.2}x (target >= 2x)",
                    best / python_best
                );
                Recorder::new("pool").record(&Row {
                    measure: format!("map of {total} tiny items, 2 workers, best of each"),
                    forkyard: Figure::rate("forkyard-pool map", best, "items/s"),
                    baseline: Figure::rate("python Pool(2)", python_best, "items/s"),
                    target: Target::RatioAtLeast(2.0),
                })?;
            }
            None => println!("  python (not run: `python3` is not available)"),
        }
    }

    if want("storm") {
        // 5. The crash storm, against calm runs of the same pool, in
        //    alternating turns: the machine is shared, and a neighbour's build
        //    starting in the middle of one long run decides the ratio more than
        //    the kills do. Each run is a fresh pool; a turn's two runs go in
        //    alternating order; the median of the per-turn ratios is the figure.
        let (turns, length) = if quick {
            (2, Duration::from_millis(500))
        } else {
            (6, Duration::from_secs(1))
        };
        println!(
            "\n== 5. Crash storm: 4 workers, tiny tasks, one worker SIGKILLed every 50 ms, \
             {turns} turns of {length:?} calm + {length:?} storm (alternating order) =="
        );
        let mut ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        let (mut calm_rates, mut storm_rates) = (Vec::new(), Vec::new());
        let (mut kills, mut failed) = (0, 0);
        let (mut longest_dip, mut longest_start) = (Duration::ZERO, Duration::ZERO);
        // A run thrown away first: the process's first pool ran markedly
        // faster than the later ones (a fresh heap and runtime), and it
        // always fell on turn 0's calm side.
        storm_run(false, length / 2).await?;
        for turn in 0..turns {
            let (calm, storm) = if turn % 2 == 0 {
                let calm = storm_run(false, length).await?;
                (calm, storm_run(true, length).await?)
            } else {
                let storm = storm_run(true, length).await?;
                (storm_run(false, length).await?, storm)
            };
            let ratio = storm.rate / calm.rate;
            // The parent's CPU time per task: what a kill costs the pool
            // itself, whatever the neighbours take of the machine.
            let cpu_ratio = calm.cpu_per_task / storm.cpu_per_task;
            println!(
                "  turn {turn}: calm {:>8.0}/s ({:>5.2} µs CPU/task), storm {:>8.0}/s ({:>5.2} µs CPU/task, {} kills, {} failed): {:>4.0}%, load {}",
                calm.rate,
                calm.cpu_per_task * 1e6,
                storm.rate,
                storm.cpu_per_task * 1e6,
                storm.kills,
                storm.failed,
                100.0 * ratio,
                load()
            );
            ratios.push(ratio);
            cpu_ratios.push(cpu_ratio);
            calm_rates.push(calm.rate);
            storm_rates.push(storm.rate);
            kills += storm.kills;
            failed += storm.failed + calm.failed;
            longest_dip = longest_dip.max(storm.longest_dip);
            longest_start = longest_start.max(storm.longest_start);
        }
        let (ratio, lowest) = (median(&mut ratios), ratios[0]);
        let cpu_ratio = median(&mut cpu_ratios);
        println!(
            "  storm / calm: median {:.0}% (lowest turn {:.0}%; target >= 50%); \
             by the parent's CPU per task {:.0}%; {kills} kills, {failed} failed",
            100.0 * ratio,
            100.0 * lowest,
            100.0 * cpu_ratio,
        );
        println!(
            "  longest stretch with < 3 ready workers {longest_dip:>8.2?}; \
             longest replacement start {longest_start:>8.2?} (target: no longer)"
        );
        Recorder::new("pool").record(&Row {
            measure: format!(
                "tiny tasks, 4 workers, one SIGKILLed every 50 ms, median of {turns} alternating turns, vs no kills"
            ),
            forkyard: Figure::rate("crash storm", median(&mut storm_rates), "tasks/s"),
            baseline: Figure::rate("no kills", median(&mut calm_rates), "tasks/s"),
            target: Target::RatioAtLeast(0.5),
        })?;
    }
    Ok(())
}

/// `total` tiny tasks through `pool` from 1,000 callers; tasks per second.
async fn throughput(pool: &Pool<u64, u64>, total: usize) -> Result<f64> {
    let started = Instant::now();
    let callers = 1_000;
    let mut handles = Vec::new();
    for c in 0..callers {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut n = c as u64;
            while n < total as u64 {
                if pool.call(n).await? != n + 1 {
                    bail!("wrong answer");
                }
                n += callers as u64;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The median of `values` (sorted in place, so `values[0]` is then the lowest).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The 1-minute load average, from `/proc/loadavg` ("?" if unreadable).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// This process's CPU time so far (user plus system, every thread), from
/// `/proc/self/stat` (in clock ticks of 10 ms: fine over a run of a second).
fn own_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// What one crash-storm run measured.
struct Storm {
    rate: f64,
    /// The parent's CPU time per completed task, in seconds.
    cpu_per_task: f64,
    kills: u64,
    failed: u64,
    /// The longest time the pool's statistics showed fewer than 3 ready workers.
    longest_dip: Duration,
    /// The longest time a worker was seen starting (spawned, not yet ready).
    longest_start: Duration,
}

/// Tiny tasks from 1,000 callers through a fresh 4-worker pool: a warm-up of
/// 200 ms, then `length` counted, with one worker SIGKILLed every 50 ms if
/// `kill`; the statistics sampled every ms.
async fn storm_run(kill: bool, length: Duration) -> Result<Storm> {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let pool = Pool::<u64, u64>::builder()
        .self_exec(std::iter::empty::<&str>())?
        .workers(4)
        .max_in_flight_per_worker(64)
        .queue_capacity(2_000)
        .retries(5)
        .build()
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for c in 0..1_000u64 {
        let (pool, stop, done, failed) = (pool.clone(), stop.clone(), done.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Relaxed) {
                match pool.call(n).await {
                    Ok(_) => done.fetch_add(1, Relaxed),
                    Err(_) => failed.fetch_add(1, Relaxed),
                };
                n += 1_000;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (done_before, cpu_before) = (done.load(Relaxed), own_cpu()?);
    let started = Instant::now();
    let mut kills = 0;
    let mut next_kill = started + Duration::from_millis(50);
    let mut rng = 0x5eed_u64;
    let mut dip_since: Option<Instant> = None;
    let mut longest_dip = Duration::ZERO;
    let mut starting_since: HashMap<u64, Instant> = HashMap::new();
    let mut longest_start = Duration::ZERO;
    // Killed, not yet reaped: the statistics still show them ready.
    let mut killed: HashSet<u32> = HashSet::new();
    let mut sampler = tokio::time::interval(Duration::from_millis(1));
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < length {
        sampler.tick().await;
        let now = Instant::now();
        let stats = pool.stats();
        let ready: Vec<_> = stats
            .workers
            .iter()
            .filter(|w| w.state.is_ready() && !w.pid.is_some_and(|p| killed.contains(&p)))
            .collect();
        match (ready.len() < 3, dip_since) {
            (true, None) => dip_since = Some(now),
            (false, Some(since)) => {
                longest_dip = longest_dip.max(now - since);
                dip_since = None;
            }
            _ => {}
        }
        for w in &stats.workers {
            if w.state == forkyard_pool::WorkerState::Starting {
                starting_since.entry(w.worker).or_insert(now);
            } else if let Some(since) = starting_since.remove(&w.worker) {
                longest_start = longest_start.max(now - since);
            }
        }
        if kill && now >= next_kill && !ready.is_empty() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let victim = ready[(rng >> 33) as usize % ready.len()];
            if let Some(pid) = victim.pid {
                let target = rustix::process::Pid::from_raw(pid as i32).context("pid")?;
                if rustix::process::kill_process(target, rustix::process::Signal::KILL).is_ok() {
                    kills += 1;
                    killed.insert(pid);
                }
            }
            next_kill += Duration::from_millis(50);
        }
    }
    let elapsed = started.elapsed();
    let completed = done.load(Relaxed) - done_before;
    let cpu = own_cpu()? - cpu_before;
    stop.store(true, Relaxed);
    for c in callers {
        c.await?;
    }
    if let Some(since) = dip_since {
        longest_dip = longest_dip.max(Instant::now() - since);
    }
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(5),
    })
    .await;
    Ok(Storm {
        rate: completed as f64 / elapsed.as_secs_f64(),
        cpu_per_task: cpu.as_secs_f64() / completed.max(1) as f64,
        kills,
        failed: failed.load(Relaxed),
        longest_dip,
        longest_start,
    })
}

/// Runs a peer's benchmark script that prints `<name>_per_sec N` lines;
/// `None` when its interpreter is missing.
fn peer_rates(program: &str, script: &str, n: usize) -> Option<Vec<(String, f64)>> {
    let out = Command::new(program)
        .arg(script)
        .arg(n.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  {program} {script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, rate) = l.split_once(' ')?;
                let name = name.strip_suffix("_items_per_sec")?;
                Some((format!("{name}(chunksize=1000)"), rate.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// Runs a peer's benchmark script; `None` when its interpreter is missing.
fn peer_rate(program: &str, script: &str, n: usize) -> Option<f64> {
    let out = Command::new(program)
        .arg(script)
        .arg(n.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "  {program} {script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("tasks_per_sec ")?.trim().parse().ok())
}
