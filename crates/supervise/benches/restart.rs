//! Time from an unexpected child death (SIGKILL) to its replacement being ready, with no
//! backoff, for three ways of knowing "ready".
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
use restart::{Readiness, Rig};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("death_to_ready");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
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
