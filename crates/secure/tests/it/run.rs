//! Limits on real processes (testkit fixtures and the probe), each ending with the right
//! cause, and nothing left behind.

use std::time::Duration;

use forkyard_secure::{
    EndCause, Layer, LayerStatus, Layout, Limits, Operand, Policy, ProgramRule, RunOutput, Sandbox,
    Value,
};

use crate::support::{Uploads, probe};

/// A policy running the testkit fixture (subcommand and arguments as operands, in order).
pub(crate) fn fixture_policy(limits: Limits, sandbox: Sandbox) -> Policy {
    Policy::builder()
        .program(
            "fixture",
            ProgramRule::path(forkyard_testkit::fixture_path())
                .flags(["--setsid"])
                .flag_value("--children", Value::integer(1, 8))
                .operands(Value::text())
                .layout(Layout::AsGiven),
        )
        .limits(limits)
        .sandbox(sandbox)
        .build()
        .expect("fixture policy")
}

/// A policy running the probe, with text operands and one writable root.
pub(crate) fn probe_policy(limits: Limits, sandbox: Sandbox, root: &std::path::Path) -> Policy {
    Policy::builder()
        .program(
            "probe",
            ProgramRule::path(probe())
                .operands(Value::text())
                .flag_value("--out", Operand::path_beneath(root).write())
                .layout(Layout::AsGiven),
        )
        .limits(limits)
        .sandbox(sandbox)
        .build()
        .expect("probe policy")
}

/// No process of ours left: no live descendant but forkyard-child's watchdog, no zombie.
pub(crate) fn assert_nothing_left() {
    let me = std::process::id();
    let watchdog = forkyard_child::watchdog_pid();
    forkyard_testkit::wait_until("descendants gone", Duration::from_secs(10), || {
        let live: Vec<u32> = forkyard_testkit::live_descendants(me)
            .into_iter()
            .filter(|p| Some(*p) != watchdog)
            .collect();
        let zombies = forkyard_testkit::zombie_children(me);
        (live.is_empty() && zombies.is_empty()).then_some(())
    })
    .expect("a process was left behind");
}

/// All of `pids` dead (zombies of pid 1 count as dead).
pub(crate) fn assert_all_dead(pids: &[u32]) {
    forkyard_testkit::wait_all_dead(pids, Duration::from_secs(10))
        .expect("a process survived the run");
}

fn status(out: &RunOutput, layer: Layer) -> LayerStatus {
    out.layers
        .iter()
        .find(|r| r.layer == layer)
        .map(|r| r.status)
        .expect("every layer is reported")
}

fn limits() -> Limits {
    Limits {
        wall: Some(Duration::from_secs(30)),
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_cpu_burner_is_stopped_by_the_cpu_limit() {
    let policy = fixture_policy(
        Limits {
            cpu: Some(Duration::from_secs(1)),
            ..limits()
        },
        Sandbox::strict(),
    );
    let out = policy.run("fixture", ["cpu-burn"]).await.unwrap();
    // The behaviour, not an amount: the kernel ended it for its CPU time (SIGXCPU at the
    // soft limit, or SIGKILL at the hard one), and the cause the caller and the audit log
    // see names the limit. (How much CPU it had used is rounded to ticks and was once
    // measured at 898 ms on a busy machine, so it is no pass/fail criterion.)
    assert_eq!(out.cause, EndCause::CpuLimit, "{:?}", out.exit);
    assert_eq!(out.cause.to_string(), "cpu-limit");
    let signal = out.exit.signal().map(|s| s.as_raw());
    assert!(
        signal == Some(libc::SIGXCPU) || signal == Some(libc::SIGKILL),
        "ended by {signal:?}, not by the CPU limit: {:?}",
        out.exit
    );
    assert_nothing_left();
}

#[tokio::test]
async fn a_memory_balloon_is_stopped() {
    let policy = fixture_policy(
        Limits {
            memory: Some(64 << 20),
            ..limits()
        },
        Sandbox::strict(),
    );
    let out = policy
        .run("fixture", ["alloc-until-killed", "4"])
        .await
        .unwrap();
    if status(&out, Layer::Cgroup) == LayerStatus::Applied {
        // The memory cgroup's OOM killer ended it, and the counter says so.
        assert_eq!(out.cause, EndCause::Memory, "{:?}", out.exit);
        assert!(
            out.exit.rusage().max_rss_bytes <= 80 << 20,
            "rss {}",
            out.exit.rusage().max_rss_bytes
        );
    } else {
        // Without a memory cgroup the limit is RLIMIT_AS: the allocation fails and the
        // fixture aborts.
        assert!(
            !out.success() && out.cause != EndCause::Timeout,
            "{:?}",
            out.cause
        );
    }
    assert_nothing_left();
}

#[tokio::test]
async fn an_output_flood_is_capped_and_the_run_killed() {
    let policy = fixture_policy(
        Limits {
            output: Some(64 << 10),
            ..limits()
        },
        Sandbox::strict(),
    );
    let out = policy
        .run("fixture", ["flood", "50000000", "0"])
        .await
        .unwrap();
    assert_eq!(out.cause, EndCause::OutputLimit);
    assert!(out.stdout.truncated);
    assert!(out.stdout.bytes.len() <= 64 << 10);
    assert_nothing_left();
}

#[tokio::test]
async fn a_sleeper_is_killed_at_the_wall_limit() {
    let policy = fixture_policy(
        Limits {
            wall: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
        Sandbox::strict(),
    );
    let out = policy.run("fixture", ["hang"]).await.unwrap();
    assert_eq!(out.cause, EndCause::Timeout);
    assert!(out.exit.elapsed() >= Duration::from_millis(300));
    assert_nothing_left();
}

/// The grandchild fixture: a tree whose last member calls setsid to leave the process
/// group. The group kill at the timeout misses it; the run's cgroup does not.
#[tokio::test]
async fn a_setsid_grandchild_is_gone_after_the_timeout() {
    let policy = fixture_policy(
        Limits {
            wall: Some(Duration::from_millis(800)),
            ..Limits::default()
        },
        Sandbox::strict(),
    );
    let out = policy
        .run("fixture", ["grandchild", "--setsid", "--children", "2"])
        .await
        .unwrap();
    assert_eq!(out.cause, EndCause::Timeout);
    let pids = forkyard_testkit::parse_pids(&out.stdout.text());
    assert_eq!(
        pids.len(),
        4,
        "the whole tree reported before the timeout: {:?}",
        out.stdout.text()
    );
    if status(&out, Layer::Cgroup) == LayerStatus::Applied {
        assert!(
            out.stragglers_killed >= 1,
            "the escaped grandchild was found in the cgroup"
        );
    }
    assert_all_dead(&pids);
    assert_nothing_left();
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let uploads = Uploads::new();
    let policy = probe_policy(
        Limits {
            processes: Some(16),
            ..limits()
        },
        Sandbox::strict(),
        &uploads.root(),
    );
    let out = policy.run("probe", ["fork-bomb"]).await.unwrap();
    let text = out.stdout.text();
    let result = text
        .lines()
        .find(|l| l.starts_with("forks "))
        .expect("the probe reported");
    assert!(result.ends_with("err EAGAIN"), "{result}");
    let forks: u64 = result.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(forks < 16, "{forks} forks");
    let pids: Vec<u32> = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len() as u64, forks);
    // The paused children were orphaned when the probe exited; the run killed them.
    assert_eq!(out.stragglers_killed as u64, forks);
    assert_all_dead(&pids);
    assert_nothing_left();
}

#[tokio::test]
async fn a_big_write_is_stopped_by_the_file_size_limit() {
    let uploads = Uploads::new();
    let policy = probe_policy(
        Limits {
            file_size: Some(1 << 20),
            ..limits()
        },
        Sandbox::strict(),
        &uploads.root(),
    );
    let out = policy
        .run("probe", ["write-big", "--out", "big.bin", "10000000"])
        .await
        .unwrap();
    assert_eq!(
        out.cause,
        EndCause::FileSizeLimit,
        "{:?} {}",
        out.exit,
        out.stdout.text()
    );
    assert_eq!(
        std::fs::metadata(uploads.root().join("big.bin"))
            .unwrap()
            .len(),
        1 << 20
    );
    assert_nothing_left();
}

#[tokio::test]
async fn repeated_runs_leak_no_descriptor() {
    let policy = fixture_policy(limits(), Sandbox::strict());
    // The first run starts forkyard-child's watchdog (one socket, kept).
    assert!(
        policy
            .run("fixture", ["exit-with", "0"])
            .await
            .unwrap()
            .success()
    );
    let before = forkyard_testkit::fd_count(std::process::id());
    for code in 1..6 {
        let out = policy
            .run("fixture", ["exit-with", &code.to_string()])
            .await
            .unwrap();
        assert_eq!(out.cause, EndCause::Exited { code });
    }
    assert_eq!(forkyard_testkit::fd_count(std::process::id()), before);
    assert_nothing_left();
}

/// A policy reuses the cgroups of finished runs; a reused cgroup must not carry anything
/// over: not the OOM counter, not the pids charged by a previous fork bomb's orphans.
#[tokio::test]
async fn reused_cgroups_start_clean() {
    let uploads = Uploads::new();
    let policy = probe_policy(
        Limits {
            processes: Some(16),
            memory: Some(64 << 20),
            ..limits()
        },
        Sandbox::strict(),
        &uploads.root(),
    );
    for _ in 0..2 {
        let out = policy.run("probe", ["fork-bomb"]).await.unwrap();
        let text = out.stdout.text();
        let result = text
            .lines()
            .find(|l| l.starts_with("forks "))
            .unwrap()
            .to_string();
        assert!(result.ends_with("err EAGAIN"), "{result}");
        let forks: u64 = result.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            (10..16).contains(&forks),
            "a fresh pids budget each time: {forks}"
        );
    }
    let balloon = fixture_policy(
        Limits {
            memory: Some(64 << 20),
            ..limits()
        },
        Sandbox::strict(),
    );
    let memory_cgroup = {
        let out = balloon
            .run("fixture", ["alloc-until-killed", "4"])
            .await
            .unwrap();
        status(&out, Layer::Cgroup) == LayerStatus::Applied && out.cause == EndCause::Memory
    };
    // The next run of the same policy, in the same (reused) cgroup, ends on its own.
    let out = balloon.run("fixture", ["exit-with", "0"]).await.unwrap();
    assert_eq!(
        out.cause,
        EndCause::Exited { code: 0 },
        "memory cgroup in use: {memory_cgroup}"
    );
    assert_nothing_left();
}

/// Policies are shared between tasks, and runs are spawned onto multi-threaded runtimes.
#[test]
fn policies_and_runs_can_cross_threads() {
    fn shared<T: Send + Sync + Clone>(_: &T) {}
    fn sendable<F: Send>(_: &F) {}
    let uploads = Uploads::new();
    let policy = probe_policy(limits(), Sandbox::strict(), &uploads.root());
    shared(&policy);
    let run = policy.run("probe", ["status"]);
    sendable(&run);
    let command = policy.command("probe", ["status"]).unwrap();
    sendable(&command);
}

/// Concurrent runs of one policy on a multi-threaded runtime: each gets its own cgroups,
/// all succeed, the log stays one intact chain, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_share_a_policy_safely() {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let log = forkyard_secure::audit::AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
    let policy = Policy::builder()
        .program(
            "probe",
            ProgramRule::path(probe())
                .operands(Value::text())
                .layout(Layout::AsGiven),
        )
        .limits(limits())
        .audit(log.clone())
        .build()
        .unwrap();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.run("probe", ["status"]).await })
        })
        .collect();
    for run in runs {
        let out = run.await.unwrap().unwrap();
        assert_eq!(out.stdout.text().trim(), "no_new_privs 1 seccomp 2");
    }
    let verification = forkyard_secure::audit::verify(log.path()).unwrap();
    assert!(verification.is_intact(), "{:?}", verification.findings);
    assert_eq!(verification.lines, 16);
    drop(uploads);
    assert_nothing_left();
}
