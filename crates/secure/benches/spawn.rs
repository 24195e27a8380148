//! Criterion benches: what each stage of a hardened run costs.
//!
//! `cargo bench -p forkyard-secure`; the side-by-side ratios against a plain spawn come from
//! `cargo run --release -p forkyard-secure --example compare` (xtask runs both).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use forkyard_secure::audit::AuditLog;
use forkyard_secure::{Layout, Limits, Operand, Policy, ProgramRule, Request, Sandbox, Value};

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkyard-secure-probe"))
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "input").unwrap();
    let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
    let policy = |sandbox: Sandbox| {
        Policy::builder()
            .program(
                "probe",
                ProgramRule::path(probe())
                    .operand(Value::one_of(["status"]))
                    .operand(Operand::path_beneath(dir.path()))
                    .layout(Layout::AsGiven),
            )
            .limits(Limits::default())
            .sandbox(sandbox)
            .audit(log.clone())
            .build()
            .unwrap()
    };
    let strict = policy(Sandbox::strict());
    let minimal = policy(Sandbox::minimal());
    let args = ["status", "in.txt"];

    let mut group = c.benchmark_group("secure");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("validate+audit", |b| {
        b.iter(|| strict.validate(&Request::new("probe").args(args)).unwrap());
    });
    group.bench_function("plain child spawn (baseline)", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut cmd = std::process::Command::new(probe());
            cmd.arg("status");
            let child = forkyard_child::Child::builder(&mut cmd)
                .stdin(forkyard_child::Input::Null)
                .stdout(forkyard_child::Output::capture(1 << 20))
                .stderr(forkyard_child::Output::capture(1 << 20))
                .spawn()
                .unwrap();
            child.wait_with_output().await.unwrap()
        });
    });
    group.bench_function("run minimal", |b| {
        b.to_async(&runtime)
            .iter(|| async { minimal.run("probe", args).await.unwrap() });
    });
    // The target: a hardened spawn under 2x a plain spawn of the same program.
    // bench target: `secure/run strict` at most 2x
    group.bench_function("run strict", |b| {
        b.to_async(&runtime)
            .iter(|| async { strict.run("probe", args).await.unwrap() });
    });
    group.finish();
}

criterion_group!(spawn, benches);
criterion_main!(spawn);
