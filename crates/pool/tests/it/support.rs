//! Helpers: a pool of fixture workers, and the leak check every test ends with.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{Builder, Pool, ShutdownMode};
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

pub(crate) use forkyard_testkit::{Baseline, wait_for, wait_for_async};

/// A test's pool of fixture workers, with the leak baseline taken before it
/// started and a temporary directory for the files its jobs touch (among
/// them the file that lets [`Fixture::held`] tasks answer).
pub(crate) struct Fixture {
    pub(crate) base: Baseline,
    pub(crate) pool: TestPool,
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    /// Takes the baseline, then builds a pool of `pool-worker` fixtures as
    /// `setup` configures it.
    pub(crate) async fn start(
        setup: impl FnOnce(Builder<Job, u64>) -> Builder<Job, u64>,
    ) -> Fixture {
        let base = Baseline::take().await;
        let dir = tempfile::tempdir().unwrap();
        let pool = setup(builder(&[])).build().await.unwrap();
        Fixture { base, pool, dir }
    }

    /// A task that answers `value` once [`Fixture::release`] has been called
    /// (however long that takes: an event, not a pause).
    pub(crate) fn held(&self, value: u64) -> Job {
        Job::WaitFile {
            path: self
                .dir
                .path()
                .join("release")
                .to_string_lossy()
                .into_owned(),
            value,
        }
    }

    /// Lets every held task answer.
    pub(crate) fn release(&self) {
        std::fs::write(self.dir.path().join("release"), b"").unwrap();
    }

    /// Drains the pool (every task answered), removes the directory, and
    /// checks that nothing was left behind (no process, zombie or fd).
    pub(crate) async fn finish(self) {
        self.pool
            .shutdown(ShutdownMode::Drain {
                grace: Duration::from_secs(10),
            })
            .await;
        drop(self.dir);
        self.base.assert_clean().await;
    }
}

/// An error and every cause under it, as `{:#}` would show them: `a: b: c`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Polls the pool's statistics (testkit's [`wait_for`]) until `cond` holds,
/// and returns them; panics with `what` and the last statistics after [`DEADLINE`].
pub(crate) async fn wait_stats(
    pool: &TestPool,
    what: &str,
    cond: impl Fn(&forkyard_pool::Stats) -> bool,
) -> forkyard_pool::Stats {
    wait_for(what, || {
        let stats = pool.stats();
        if cond(&stats) {
            Ok(stats)
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await
}

/// Waits until the pool has `n` ready workers (idle or busy) and nothing else.
pub(crate) async fn wait_full(pool: &TestPool, n: usize) {
    wait_stats(
        pool,
        &format!("the pool back to {n} ready workers"),
        |stats| {
            let ready = stats.workers.iter().filter(|w| w.state.is_ready()).count();
            ready == n && stats.workers.len() == n
        },
    )
    .await;
}

/// The pids of the pool's workers.
pub(crate) async fn worker_pids(pool: &TestPool) -> Vec<u32> {
    pool.stats().workers.iter().filter_map(|w| w.pid).collect()
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
