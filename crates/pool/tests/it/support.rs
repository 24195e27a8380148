//! Helpers: a pool of fixture workers, and the leak check every test ends with.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{Builder, Pool};
use forkyard_testkit as tk;

pub(crate) const DEADLINE: Duration = tk::DEADLINE;

pub(crate) type TestPool = Pool<Job, u64>;

/// A builder for a pool of `pool-worker` fixtures started with `args`.
pub(crate) fn builder(args: &'static [&'static str]) -> Builder<Job, u64> {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_forkyard-pool-fixture"));
    Pool::<Job, u64>::builder()
        .command(move || {
            let mut cmd = std::process::Command::new(&path);
            cmd.args(args);
            cmd
        })
        .sample_every(Duration::from_millis(50))
}

pub(crate) use forkyard_testkit::{Baseline, wait_for};

/// Polls the pool's statistics until `cond` holds (1 ms doubling to 50 ms),
/// and returns them; panics with `what` after [`DEADLINE`].
pub(crate) async fn wait_stats(
    pool: &TestPool,
    what: &str,
    cond: impl Fn(&forkyard_pool::Stats) -> bool,
) -> forkyard_pool::Stats {
    let start = std::time::Instant::now();
    let mut interval = Duration::from_millis(1);
    loop {
        let stats = pool.stats().await;
        if cond(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Waits until the pool has `n` ready workers (idle or busy) and nothing else.
pub(crate) async fn wait_full(pool: &TestPool, n: usize) {
    let start = std::time::Instant::now();
    loop {
        let stats = pool.stats().await;
        let ready = stats
            .workers
            .iter()
            .filter(|w| w.state == "idle" || w.state == "busy")
            .count();
        if ready == n && stats.workers.len() == n {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "pool never returned to {n} workers: {:?}",
            stats.workers
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The pids of the pool's workers.
pub(crate) async fn worker_pids(pool: &TestPool) -> Vec<u32> {
    pool.stats()
        .await
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect()
}

/// Kills `pid` (a worker we started) with SIGKILL; a worker that is already
/// gone is fine.
pub(crate) fn sigkill(pid: u32) {
    match rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    ) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => panic!("kill {pid}: {e}"),
    }
}
