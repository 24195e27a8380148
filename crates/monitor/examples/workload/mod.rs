//! The workload the `live` and `demo` examples run: a pool whose tasks burn a
//! little CPU and now and then crash their worker or fail, and a supervisor
//! tree with a steady web service and a flaky indexer. The same binary is
//! the parent, the pool workers (forkyard's self-exec) and the services
//! (`--service steady|flaky`).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use forkyard_pool::{Pool, ShutdownMode};
use forkyard_supervise::{Backoff, ChildSpec, Supervisor};
use serde::{Deserialize, Serialize};

/// One task: burn `ms` of CPU, or crash the worker, or fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) ms: u32,
    pub(crate) kind: TaskKind,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum TaskKind {
    Work,
    Crash,
    Fail,
}

async fn run_task(task: Task) -> Result<u64, String> {
    match task.kind {
        // A crash the pool sees as the worker dying mid-task (SIGABRT).
        TaskKind::Crash => std::process::abort(),
        TaskKind::Fail => Err("bad input".to_owned()),
        TaskKind::Work => {
            let until = Instant::now() + Duration::from_millis(u64::from(task.ms));
            let mut x = u64::from(task.ms);
            while Instant::now() < until {
                for _ in 0..500 {
                    x = std::hint::black_box(x.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15);
                }
            }
            Ok(x)
        }
    }
}

/// Runs the worker or service side if this process is one; returns otherwise.
pub(crate) fn enter_child_roles() {
    if forkyard_pool::worker::is_worker() {
        forkyard_pool::worker::serve(run_task);
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--service") {
        let flaky = args.get(2).map(String::as_str) == Some("flaky");
        // A seed from the pid: each instance lives a different while.
        let life = 4_000 + u64::from(std::process::id()) * 7_919 % 8_000;
        if flaky {
            std::thread::sleep(Duration::from_millis(life));
            std::process::exit(1);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// What the driver does, changeable while it runs.
#[derive(Debug)]
pub(crate) struct Knobs {
    /// Tasks started per second.
    pub(crate) rate: AtomicU32,
    /// Mean CPU per task, ms.
    pub(crate) ms: AtomicU32,
    /// Tasks per 10,000 that crash their worker.
    pub crash_per_10k: AtomicU32,
    /// Tasks per 10,000 that fail.
    pub fail_per_10k: AtomicU32,
}

pub(crate) struct Workload {
    pub(crate) pool: Pool<Task, u64>,
    pub(crate) sup: Supervisor,
    pub(crate) knobs: Arc<Knobs>,
    driver: tokio::task::JoinHandle<()>,
}

fn service(kind: &'static str) -> impl Fn() -> Command + Send + Sync + 'static {
    move || {
        let mut cmd = Command::new(std::env::current_exe().expect("own executable"));
        cmd.args(["--service", kind]);
        cmd
    }
}

impl Workload {
    pub(crate) async fn start(workers: usize, knobs: Knobs) -> anyhow::Result<Workload> {
        let pool = Pool::<Task, u64>::builder()
            .self_exec(std::iter::empty::<&str>())?
            .workers(workers)
            .retries(1)
            .queue_capacity(4096)
            .sample_every(Duration::from_millis(500))
            .build()
            .await?;
        let ms = Duration::from_millis;
        let sup = Supervisor::builder()
            .intensity(30, Duration::from_secs(60))
            .child(ChildSpec::new("web", service("steady")))
            .child(ChildSpec::supervisor(
                "jobs",
                Supervisor::builder()
                    .intensity(30, Duration::from_secs(60))
                    .child(
                        ChildSpec::new("indexer", service("flaky"))
                            .backoff(Backoff::exponential(ms(500), ms(4_000))),
                    )
                    .child(ChildSpec::new("mailer", service("steady"))),
            ))
            .start()
            .await?;
        let knobs = Arc::new(knobs);
        let driver = tokio::spawn(drive(pool.clone(), knobs.clone()));
        Ok(Workload {
            pool,
            sup,
            knobs,
            driver,
        })
    }

    /// Stops the driver, then the pool (draining) and the supervisor.
    pub(crate) async fn stop(self) {
        self.driver.abort();
        let _ = self.driver.await;
        self.pool
            .shutdown(ShutdownMode::Cancel {
                grace: Duration::from_secs(2),
            })
            .await;
        let _ = self.sup.shutdown().await;
    }
}

/// Starts tasks at the knobs' rate, each with its own small chance to crash
/// or fail; at most 2,000 in flight.
async fn drive(pool: Pool<Task, u64>, knobs: Arc<Knobs>) {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        let per_tick = knobs.rate.load(Ordering::Relaxed) as f64 / 50.0;
        let n =
            per_tick.floor() as u64 + u64::from((next() % 1000) as f64 / 1000.0 < per_tick.fract());
        for _ in 0..n {
            if in_flight.len() >= 2_000 {
                break;
            }
            let roll = (next() % 10_000) as u32;
            let crash = knobs.crash_per_10k.load(Ordering::Relaxed);
            let fail = knobs.fail_per_10k.load(Ordering::Relaxed);
            let kind = if roll < crash {
                TaskKind::Crash
            } else if roll < crash + fail {
                TaskKind::Fail
            } else {
                TaskKind::Work
            };
            let mean = knobs.ms.load(Ordering::Relaxed).max(1);
            let ms = mean / 2 + (next() % u64::from(mean)) as u32;
            let pool = pool.clone();
            in_flight.spawn(async move {
                let _ = pool.call(Task { ms, kind }).await;
            });
        }
    }
}
