//! Workers under forkyard-secure: a pool whose every worker is a sandboxed,
//! audited start of one policy's program, through `SecureCommand::into_launch`.

use std::path::Path;
use std::time::Duration;

use forkyard_pool::{Pool, ShutdownMode};
use forkyard_secure::audit::{self, AuditLog};
use forkyard_secure::{Limits, Policy, ProgramRule, Sandbox};

use crate::job::Job;
use crate::support::{Baseline, wait_full};

fn policy(log: &Path, memory: u64) -> Policy {
    Policy::builder()
        .program(
            "worker",
            ProgramRule::path(env!("CARGO_BIN_EXE_forkyard-pool-fixture")),
        )
        .limits(Limits {
            memory: Some(memory),
            wall: None,
            cpu: None,
            ..Limits::default()
        })
        // The worker's tokio runtime makes a socket pair for its signal handling.
        .sandbox(Sandbox::strict().socket_pairs(true))
        .audit(AuditLog::open(log).unwrap())
        .build()
        .unwrap()
}

/// `name:\tvalue` from `/proc/<pid>/status`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_sandboxed_workers_serves_tasks_over_its_channel_and_audits_every_run() {
    let dir = tempfile::tempdir().unwrap();
    // forkyard-secure keeps one empty network namespace per process, made at the first
    // sandboxed run: make it before the baseline is taken.
    let warm_up = policy(&dir.path().join("warm-up.jsonl"), 64 << 20);
    warm_up.run("worker", [] as [&str; 0]).await.unwrap();
    let base = Baseline::take().await;
    let log = dir.path().join("audit.jsonl");
    let policy = policy(&log, 64 << 20);
    let pool = Pool::<Job, u64>::builder()
        .command(move || {
            policy
                .command("worker", [] as [&str; 0])
                .expect("the policy allows its worker")
                .into_launch()
        })
        .workers(2)
        .retries(0)
        .sample_every(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    // The channel (fd 3) works through seccomp and Landlock.
    for i in 0..50 {
        assert_eq!(pool.call(Job::Echo(i)).await.unwrap(), i);
    }
    // The worker runs sandboxed: seccomp filter, no_new_privs, no capability.
    let pid = pool.call(Job::Pid).await.unwrap() as u32;
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    // A task that blows the memory limit ends its worker; the pool starts another.
    let blown = pool.call(Job::Alloc { mib: 256 }).await;
    assert!(blown.is_err(), "{blown:?}");
    wait_full(&pool, 2).await;
    assert_eq!(pool.call(Job::Echo(7)).await.unwrap(), 7);
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(20),
    })
    .await;
    drop(pool);
    base.assert_clean().await;

    // Every start and every exit is in the log, which verifies.
    let verification = audit::verify(&log).unwrap();
    assert!(verification.is_intact(), "{:?}", verification.findings);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| r["kind"] == kind).collect()
    };
    let exits = of_kind("exit");
    // Two first workers and one replacement, each started once and ended once.
    assert_eq!(of_kind("decision").len(), 3, "{records:#?}");
    assert_eq!(exits.len(), 3, "{records:#?}");
    let causes: Vec<&str> = exits.iter().map(|r| r["cause"].as_str().unwrap()).collect();
    assert!(
        causes.contains(&"memory"),
        "the blown worker names its limit: {causes:?}"
    );
    for exit in &exits {
        let seccomp = exit["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == "seccomp")
            .unwrap_or_else(|| panic!("no seccomp layer in {exit}"));
        assert_eq!(seccomp["status"], "applied", "{exit}");
    }
}
