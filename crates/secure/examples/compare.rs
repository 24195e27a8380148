//! Hardened spawn against plain spawns of the same program, in one run, printed as ratios.
//!
//! `cargo run --release -p forkyard-secure --example compare [-- --runs N]`
//!
//! Each variant spawns `/usr/bin/true`-like work (the probe's `status` subcommand, which
//! prints one line and exits) N times, sequentially, and reports the median and p90 wall
//! time per spawn-and-wait. Variants:
//!
//! * `std`: `std::process::Command::output()`;
//! * `child`: `forkyard_child::Child` with captured output (the baseline the issue means);
//! * `validate`: validation only (grammar, openat2 of one operand, env, audit record);
//! * `minimal`: `Policy::run` with `Sandbox::minimal()` (session, pdeathsig, rlimits, nnp);
//! * `strict`: `Policy::run` with `Sandbox::strict()` (every layer) and an audit log;
//! * `strict+pidns`: the same in a pid namespace.
//!
//! Each variant's median is also recorded against the baseline in
//! `target/bench/secure.jsonl` (`forkyard_testkit::bench`), from which
//! `cargo xtask bench --summary` writes `docs/bench.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use forkyard_secure::audit::AuditLog;
use forkyard_secure::{
    Enforcement, Layout, Limits, Operand, Policy, ProgramRule, Request, Sandbox, Value,
};
use forkyard_testkit::bench::{Figure, Recorder, Row, Target};

/// This crate's probe binary, next to the example (built if `cargo run --example` did not).
fn probe() -> Result<PathBuf> {
    let mut dir = std::env::current_exe()?;
    dir.pop();
    if dir.ends_with("examples") {
        dir.pop();
    }
    let path = dir.join("forkyard-secure-probe");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "forkyard-secure",
        "--bin",
        "forkyard-secure-probe",
    ]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    // A failed build (the shared workspace mid-edit, say) is fine if a binary is there.
    let built = build.status().is_ok_and(|s| s.success());
    if !built && path.exists() {
        eprintln!(
            "(could not rebuild {}; using the existing binary)",
            path.display()
        );
    }
    anyhow::ensure!(path.exists(), "could not build {}", path.display());
    Ok(path)
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(300);
    let probe = probe()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "input")?;
    let rule = || {
        ProgramRule::path(&probe)
            .operand(Value::one_of(["status"]))
            .operand(Operand::path_beneath(dir.path()))
            .layout(Layout::AsGiven)
    };
    let policy = |sandbox: Sandbox, audit: Option<AuditLog>| -> Result<Policy> {
        let mut b = Policy::builder()
            .program("probe", rule())
            .limits(Limits::default())
            .sandbox(sandbox);
        if let Some(log) = audit {
            b = b.audit(log);
        }
        Ok(b.build()?)
    };
    let log = AuditLog::open(dir.path().join("audit.jsonl"))?;
    let minimal = policy(Sandbox::minimal(), None)?;
    let strict = policy(Sandbox::strict(), Some(log.clone()))?;
    let pidns = policy(
        Sandbox::strict().pid_namespace(Some(Enforcement::Required)),
        Some(log),
    )?;
    let args = ["status", "in.txt"];

    // Variants take turns, one spawn each per round, so that load from elsewhere on the
    // machine (this is a shared box) hits them all alike and the ratios stay meaningful.
    const NAMES: [&str; 6] = [
        "std",
        "child",
        "validate",
        "minimal",
        "strict",
        "strict+pidns",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); NAMES.len()];
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(&probe)
            .args(["status"])
            .output()?;
        anyhow::ensure!(out.status.success());
        samples[0].push(t.elapsed());

        let t = Instant::now();
        let mut cmd = std::process::Command::new(&probe);
        cmd.arg("status");
        let child = forkyard_child::Child::builder(&mut cmd)
            .stdin(forkyard_child::Input::Null)
            .stdout(forkyard_child::Output::capture(1 << 20))
            .stderr(forkyard_child::Output::capture(1 << 20))
            .spawn()?;
        let out = child.wait_with_output().await?;
        anyhow::ensure!(out.exit.success());
        samples[1].push(t.elapsed());

        let t = Instant::now();
        let v = strict.validate(&Request::new("probe").args(args))?;
        samples[2].push(t.elapsed());
        drop(v);

        for (i, p) in [(3, &minimal), (4, &strict), (5, &pidns)] {
            let t = Instant::now();
            let out = p.run("probe", args).await?;
            anyhow::ensure!(out.success(), "{}: {:?}", NAMES[i], out.cause);
            samples[i].push(t.elapsed());
        }
    }
    let results: Vec<(&str, (Duration, Duration))> = NAMES
        .iter()
        .copied()
        .zip(samples.into_iter().map(stats))
        .collect();

    let base = results
        .iter()
        .find(|(n, _)| *n == "child")
        .map(|(_, s)| s.0)
        .unwrap();
    println!(
        "{runs} rounds, one spawn-and-wait per variant each; ratio of medians against forkyard-child's plain spawn"
    );
    println!(
        "{:<14} {:>10} {:>10} {:>8}",
        "variant", "median", "p90", "ratio"
    );
    let recorder = Recorder::new("secure");
    for (name, (median, p90)) in &results {
        println!(
            "{name:<14} {:>8.0}us {:>8.0}us {:>7.2}x",
            median.as_secs_f64() * 1e6,
            p90.as_secs_f64() * 1e6,
            median.as_secs_f64() / base.as_secs_f64()
        );
        if *name != "child" {
            recorder.record(&Row {
                measure: format!("spawn + wait of the probe, median of {runs} runs"),
                forkyard: Figure::time(*name, *median),
                baseline: Figure::time("child (plain forkyard-child spawn)", base),
                // The target: hardened under 2x a plain spawn.
                target: if *name == "strict" {
                    Target::RatioAtMost(2.0)
                } else {
                    Target::None
                },
            })?;
        }
    }
    Ok(())
}
