//! Time from an unexpected child death (SIGKILL) to its replacement being ready, with no
//! backoff, for three ways of knowing "ready", next to the baseline: a hand-written loop
//! that owns the same server as a `forkyard_child::Child`, waits for its exit, spawns the
//! next one and reads its `ready` line, with no supervisor in between. The ratio of the
//! "ready line on stdout" row to the baseline is what supervising costs.
//!
//! `cargo bench -p forkyard-supervise --bench restart` (see also `examples/compare.rs`, which
//! puts the same figures next to Node cluster's re-fork).

#[path = "../examples/common/roles.rs"]
mod roles;

#[path = "../examples/common/restart.rs"]
mod restart;

use std::process::ExitCode;
use std::time::Duration;

use criterion::Criterion;
use forkyard_child::{Child, Output, Signal};
use restart::{Readiness, Rig};

/// The baseline: the same server restarted by hand, without a supervisor.
struct ByHand {
    port: u16,
    child: Child,
}

impl ByHand {
    async fn start() -> ByHand {
        let port = roles::free_port();
        ByHand {
            port,
            child: ByHand::spawn_ready(port).await,
        }
    }

    async fn spawn_ready(port: u16) -> Child {
        let mut cmd = roles::role_command("listen", &["--port".into(), port.to_string()]);
        let mut child = Child::builder(&mut cmd)
            .stdout(Output::lines())
            .spawn()
            .expect("spawn the server");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), child.next_line())
                .await
                .expect("ready within 10 s")
                .expect("the server printed `ready` before closing stdout");
            if line.text() == "ready" {
                return child;
            }
        }
    }

    /// SIGKILL, wait for the exit (pidfd), spawn the next one, read its `ready` line.
    async fn restart_once(&mut self) -> Duration {
        let t0 = std::time::Instant::now();
        self.child.signal(Signal::KILL).expect("kill");
        self.child.wait().await.expect("exit");
        self.child = ByHand::spawn_ready(self.port).await;
        t0.elapsed()
    }

    async fn stop(mut self) {
        self.child.stop(Duration::from_secs(2)).await.expect("stop");
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("death_to_ready");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    let by_hand = tokio::sync::Mutex::new(runtime.block_on(ByHand::start()));
    group.bench_function("by hand: wait, respawn, ready line (baseline)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let by_hand = &by_hand;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += by_hand.lock().await.restart_once().await;
                }
                total
            }
        })
    });
    runtime.block_on(by_hand.into_inner().stop());
    for readiness in Readiness::ALL {
        let rig = runtime.block_on(Rig::start(readiness));
        group.bench_function(readiness.name(), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let rig = &rig;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += rig.restart_once().await;
                    }
                    total
                }
            })
        });
        runtime.block_on(rig.stop());
    }
    group.finish();
}

fn main() -> ExitCode {
    // The bench binary is also the supervised server.
    if let Some(code) = roles::run_role_if_asked() {
        return code;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    ExitCode::SUCCESS
}
