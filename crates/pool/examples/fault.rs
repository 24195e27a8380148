//! Fault injection: `cargo xtask fault pool --seed N` (10 s of faults), or
//! `cargo xtask fault pool --quick` (3 s, as CI runs it; `--secs N` for any other length).
//!
//! Keeps a pool busy with tasks that each carry a unique id, SIGKILLs
//! workers at random (seeded) moments, and resizes the pool between 2 and 6
//! workers (shrinking drains workers that may be running tasks) for a fixed
//! time. Then checks the pool's
//! promise: every submitted task got exactly one outcome (none lost, none
//! answered twice, every answer for the right task), the statistics add up,
//! and no process is left. Prints
//! `submitted S, succeeded X, failed F, lost 0, duplicated 0` and exits
//! non-zero on any violation. Re-run with the printed seed to replay.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use forkyard_pool::{Pool, ShutdownMode, worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    id: u64,
    spin: u64,
}

fn main() -> Result<()> {
    if worker::is_worker() {
        worker::serve(|task: Task| async move {
            let mut x = task.id;
            for _ in 0..task.spin {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let _ = x;
            Ok::<u64, String>(task.id)
        });
    }
    let mut seed = 1u64;
    let mut duration = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            "--quick" => duration = Duration::from_secs(3),
            "--secs" => {
                duration =
                    Duration::from_secs(args.next().and_then(|s| s.parse().ok()).unwrap_or(10))
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(seed, duration))
}

/// A small deterministic generator (splitmix64), so a seed replays a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn run(seed: u64, duration: Duration) -> Result<()> {
    println!("fault pool: seed {seed}, {duration:?} of SIGKILLs under load");
    let pool = Pool::<Task, u64>::builder()
        .self_exec(std::iter::empty::<&str>())?
        .workers(4)
        .max_in_flight_per_worker(4)
        .queue_capacity(256)
        .retries(3)
        .backoff(forkyard_supervise::Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(200),
        ))
        .seed(seed)
        .build()
        .await?;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut next_id = 0u64;
    let mut kills = 0u64;
    let mut next_kill = started + Duration::from_millis(rng.below(200));
    let mut resizes = 0u64;
    let mut next_resize = started + Duration::from_millis(100 + rng.below(400));
    while started.elapsed() < duration {
        // Keep the queue topped up.
        for _ in 0..32 {
            let pool = pool.clone();
            let task = Task {
                id: next_id,
                spin: 10_000 + rng.below(200_000),
            };
            next_id += 1;
            calls.push(tokio::spawn(
                async move { (task.id, pool.call(task).await) },
            ));
        }
        if Instant::now() >= next_kill {
            let stats = pool.stats();
            let pids: Vec<u32> = stats.workers.iter().filter_map(|w| w.pid).collect();
            if !pids.is_empty() {
                let pid = pids[rng.below(pids.len() as u64) as usize];
                match rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).expect("pid"),
                    rustix::process::Signal::KILL,
                ) {
                    Ok(()) => kills += 1,
                    Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => bail!("kill {pid}: {e}"),
                }
            }
            next_kill = Instant::now() + Duration::from_millis(20 + rng.below(300));
        }
        if Instant::now() >= next_resize {
            pool.resize(2 + rng.below(5) as usize)?;
            resizes += 1;
            next_resize = Instant::now() + Duration::from_millis(100 + rng.below(400));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every call must end; count what came back.
    let mut answered: HashMap<u64, u32> = HashMap::new();
    let (mut succeeded, mut failed, mut wrong, mut lost) = (0u64, 0u64, 0u64, 0u64);
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(60), call).await {
            Ok(Ok((id, outcome))) => {
                *answered.entry(id).or_default() += 1;
                match outcome {
                    Ok(got) if got == id => succeeded += 1,
                    Ok(_) => wrong += 1,
                    Err(_) => failed += 1,
                }
            }
            Ok(Err(join)) => bail!("a caller task failed: {join}"),
            Err(_) => lost += 1,
        }
    }
    let duplicated = answered.values().filter(|&&n| n > 1).count() as u64;
    let submitted = next_id;
    let stats = pool.stats();
    let grace = Duration::from_secs(10);
    let shutdown_started = Instant::now();
    let report = pool.shutdown(ShutdownMode::Drain { grace }).await;
    let shutdown_took = shutdown_started.elapsed();
    println!(
        "{kills} workers killed, {resizes} resizes; restarts {}, retried {}",
        stats.restarts, stats.retried
    );
    println!(
        "submitted {submitted}, succeeded {succeeded}, failed {failed}, lost {lost}, duplicated {duplicated}"
    );
    let mut violations = Vec::new();
    if lost > 0 {
        violations.push(format!("{lost} tasks lost"));
    }
    if duplicated > 0 || wrong > 0 {
        violations.push(format!("{duplicated} duplicated, {wrong} wrong answers"));
    }
    if succeeded + failed != submitted
        || stats.completed != succeeded
        || stats.failed_total() != failed
    {
        violations.push(format!("counts do not add up: {stats:?}"));
    }
    // At shutdown every worker drains and exits 0, or is ended by the pool
    // with reason `shutdown`: one still starting (a replacement for the last
    // kill) has nothing to drain and is ended at once, and a worker that does
    // not drain within the grace is ended then (which the check on the
    // shutdown's duration below catches). A crash is a fault.
    let unclean: Vec<String> = report
        .workers
        .iter()
        .filter(|w| {
            !w.exit.success()
                && w.exit.ended_by().map(|t| t.reason) != Some(forkyard_child::Reason::Shutdown)
        })
        .map(|w| format!("worker {}: {}", w.worker, w.exit))
        .collect();
    if shutdown_took >= grace {
        violations.push(format!(
            "shutdown took {shutdown_took:?}: a worker did not drain within the grace"
        ));
    }
    if !unclean.is_empty() {
        violations.push(format!(
            "workers did not drain cleanly at shutdown: {}",
            unclean.join(", ")
        ));
    }
    println!(
        "invariants: one outcome per task, answers match their tasks, counts add up, clean shutdown"
    );
    if violations.is_empty() {
        println!("PASS (seed {seed})");
        Ok(())
    } else {
        bail!("FAIL (seed {seed}): {}", violations.join("; "))
    }
}
