//! Spawn + wait of `/bin/true`: forkyard-child against std and tokio, in one run.
//!
//! `cargo bench -p forkyard-child --bench spawn` (or `cargo xtask bench child`, which prints
//! each row as a ratio to the baseline, std's `Command`, and `docs/bench.md`).
//! Compare the ratios, not the absolute times: the machines are shared and noisy.
//! The hardened spawn (forkyard-secure's `Policy::run`) is measured against a plain
//! forkyard-child spawn in secure's `spawn` bench.

use std::time::Duration;

use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use forkyard_child::Child;

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("spawn_wait_true");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("std::process::Command (baseline)", |b| {
        b.iter(|| {
            let status = Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        })
    });
    // Not a peer but a reference point: any pre_exec closure makes std use fork
    // instead of posix_spawn (vfork), which is the bulk of forkyard's overhead.
    group.bench_function("std::process::Command + empty pre_exec", |b| {
        b.iter(|| {
            let mut cmd = Command::new("/bin/true");
            // SAFETY: the closure does nothing.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || Ok(()));
            }
            assert!(cmd.status().unwrap().success());
        })
    });
    group.bench_function("tokio::process::Command", |b| {
        b.to_async(&rt).iter(|| async {
            let status = tokio::process::Command::new("/bin/true")
                .status()
                .await
                .unwrap();
            assert!(status.success());
        })
    });
    // bench target: `spawn_wait_true/forkyard_child::Child` at most 1.3x (the fastest peer)
    group.bench_function("forkyard_child::Child", |b| {
        b.to_async(&rt).iter(|| async {
            let exit = Child::spawn(&mut Command::new("/bin/true"))
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert!(exit.success());
        })
    });
    group.bench_function("forkyard_child::Child (no watchdog)", |b| {
        b.to_async(&rt).iter(|| async {
            let mut cmd = Command::new("/bin/true");
            let exit = Child::builder(&mut cmd)
                .kill_on_owner_death(false)
                .spawn()
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert!(exit.success());
        })
    });
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
