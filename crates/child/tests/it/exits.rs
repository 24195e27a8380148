//! The exit matrix: every way a child can end, and what `Exit` says about it.

use std::time::Duration;

use forkyard_child::{Child, Exit, Reason, Signal};
use serde_json::json;

use crate::support::{Baseline, fixture, spawn_ready};

/// An `Exit` as a snapshot-able value, with the machine-specific parts (pid,
/// times, rusage figures) reduced to what is stable.
fn summary(exit: &Exit) -> serde_json::Value {
    json!({
        "code": exit.code(),
        "signal": exit.signal().map(|s| s.to_string()),
        "success": exit.success(),
        "ended_by": exit.ended_by(),
        "display": exit.to_string(),
    })
}

#[tokio::test]
async fn exit_matrix() {
    let base = Baseline::take().await;
    let mut rows = Vec::new();

    // Exits on its own.
    for code in ["0", "3"] {
        let exit = Child::spawn(&mut fixture("exit-with", &[code]))
            .unwrap()
            .wait()
            .await
            .unwrap();
        rows.push((format!("exit {code}"), summary(&exit)));
    }

    // Dies of SIGSEGV.
    let exit = Child::spawn(&mut fixture("crash", &["segv"]))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(exit.ended_by().is_none(), "we did not end it");
    rows.push((
        "crash segv".into(),
        json!({"signal": exit.signal().map(|s| s.to_string()), "ended_by": exit.ended_by()}),
    ));

    // Killed from outside, by somebody else: not "ended by us".
    let (mut child, _) = spawn_ready(&mut fixture("hang", &[])).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    rows.push((
        "SIGKILL from outside".into(),
        summary(&child.wait().await.unwrap()),
    ));
    drop(child);

    // Stopped by us after a timeout; it honours SIGTERM.
    let mut cmd = fixture("hang", &[]);
    let mut child = Child::builder(&mut cmd)
        .timeout(Duration::from_millis(200))
        .grace(Duration::from_secs(10))
        .spawn()
        .unwrap();
    let exit = child.wait().await.unwrap();
    rows.push(("hang, timeout".into(), summary(&exit)));
    drop(child);

    // Ignores SIGTERM: killed at the grace deadline.
    let (mut child, _) = spawn_ready(&mut fixture("ignore-sigterm", &[])).await;
    let exit = child.stop(Duration::from_millis(300)).await.unwrap();
    rows.push(("ignore-sigterm, stop".into(), summary(&exit)));
    drop(child);

    // kill() at once.
    let (mut child, _) = spawn_ready(&mut fixture("ignore-sigterm", &[])).await;
    rows.push(("kill".into(), summary(&child.kill().await.unwrap())));
    drop(child);

    // A custom stop signal.
    let mut cmd = fixture("hang", &[]);
    let mut child = Child::builder(&mut cmd)
        .stop_signal(Signal::INT)
        .spawn()
        .unwrap();
    rows.push((
        "hang, stop with SIGINT".into(),
        summary(&child.stop(Duration::from_secs(10)).await.unwrap()),
    ));
    drop(child);

    // stop_because records the caller's reason.
    let (mut child, _) = spawn_ready(&mut fixture("hang", &[])).await;
    let exit = child
        .stop_because(Reason::Recycle, Duration::from_secs(10))
        .await
        .unwrap();
    rows.push(("hang, stop for recycle".into(), summary(&exit)));
    drop(child);

    insta::assert_json_snapshot!(rows);
    base.assert_clean().await;
}

#[tokio::test]
async fn wait_is_idempotent_and_try_wait_does_not_block() {
    let base = Baseline::take().await;
    let (mut child, _) = spawn_ready(&mut fixture("hang", &[])).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a hanging child has not exited"
    );
    let stopped = child.stop(Duration::from_secs(10)).await.unwrap();
    assert_eq!(child.wait().await.unwrap(), stopped);
    assert_eq!(child.try_wait().unwrap(), Some(stopped.clone()));
    assert_eq!(child.exit(), Some(&stopped));
    // Stopping or killing an exited child returns the same exit.
    assert_eq!(child.stop(Duration::from_secs(1)).await.unwrap(), stopped);
    assert_eq!(child.kill().await.unwrap(), stopped);
    drop(child);
    base.assert_clean().await;
}

#[tokio::test]
async fn rusage_reports_cpu_and_memory() {
    let base = Baseline::take().await;
    let exit = Child::spawn(&mut fixture("cpu-burn", &["0.3"]))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    let ru = exit.rusage();
    // The burner stops after 0.3 s of its *own* CPU time (not wall time, which a loaded
    // machine shares out), so whatever the load, rusage must report at least that much;
    // the margin is for accounting granularity, not for timing.
    assert!(
        ru.cpu() >= Duration::from_millis(100),
        "a burner of 0.3 s of CPU time reported {:?} of CPU",
        ru.cpu()
    );
    assert!(
        ru.max_rss_bytes > 100 * 1024,
        "max RSS {} bytes is implausibly small",
        ru.max_rss_bytes
    );
    // One thread cannot use CPU time faster than wall-clock time passes.
    assert!(
        exit.elapsed() >= Duration::from_millis(250),
        "elapsed {:?}",
        exit.elapsed()
    );
    base.assert_clean().await;
}

#[tokio::test]
async fn dropping_a_running_child_kills_and_reaps_it() {
    let base = Baseline::take().await;
    let (child, _) = spawn_ready(&mut fixture("ignore-sigterm", &[])).await;
    let pid = child.id();
    drop(child);
    forkyard_testkit::wait_all_dead(&[pid], crate::support::DEADLINE).unwrap();
    base.assert_clean().await;
}

#[tokio::test]
async fn timeout_applies_to_wait_with_output() {
    let base = Baseline::take().await;
    let mut cmd = fixture("ignore-sigterm", &[]);
    let child = Child::builder(&mut cmd)
        .stdout(forkyard_child::Output::capture(1024))
        .timeout(Duration::from_millis(200))
        .grace(Duration::from_millis(200))
        .spawn()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let t = out.exit.ended_by().expect("ended by us");
    assert_eq!(
        (t.reason, t.signal, t.escalated),
        (Reason::Timeout, Signal::KILL, true)
    );
    assert_eq!(out.stdout.text(), "ready\n");
    base.assert_clean().await;
}

/// Regression: `wait` then `wait_with_output` on a child with a timeout reaped
/// the child a second time and failed with ECHILD.
#[tokio::test]
async fn wait_then_wait_with_output_with_a_timeout() {
    let base = Baseline::take().await;
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo done"]);
    let mut child = Child::builder(&mut cmd)
        .stdout(forkyard_child::Output::capture(64))
        .timeout(Duration::from_secs(30))
        .spawn()
        .unwrap();
    let exit = child.wait().await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.exit, exit);
    assert_eq!(out.stdout.text(), "done\n");
    base.assert_clean().await;
}

#[tokio::test]
async fn new_session_makes_pid_pgid_and_sid_equal() {
    let base = Baseline::take().await;
    let mut cmd = fixture("hang", &[]);
    let mut child = Child::builder(&mut cmd)
        .new_session(true)
        .stdin(forkyard_child::Input::Null)
        .stdout(forkyard_child::Output::lines())
        .spawn()
        .unwrap();
    crate::support::read_until_ready(&mut child).await;
    let stat = forkyard_testkit::stat(child.id()).unwrap();
    assert_eq!((stat.pgrp, stat.session), (child.id(), child.id()));
    let exit = child.stop(Duration::from_secs(10)).await.unwrap();
    assert_eq!(exit.signal(), Some(Signal::TERM));
    drop(child);
    base.assert_clean().await;
}
