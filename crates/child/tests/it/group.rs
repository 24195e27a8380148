//! Stopping reaches the whole process group; `setsid` escapes it; a cgroup does not.

use std::time::Duration;

use forkyard_child::{Child, Input, Output, Reason, Signal};
use forkyard_testkit as tk;

use crate::support::{Baseline, DEADLINE, cgroup_parent, fixture, read_until_ready, spawn_ready};

#[tokio::test]
async fn stop_ends_children_and_grandchildren() {
    let base = Baseline::take().await;
    let (mut child, lines) = spawn_ready(&mut fixture(
        "grandchild",
        &["--children", "3", "--depth", "2"],
    ))
    .await;
    let descendants = tk::parse_pids(&lines.join("\n"));
    assert_eq!(descendants.len(), 6, "{lines:?}");
    assert!(descendants.iter().all(|&p| tk::is_alive(p)));
    // Every descendant ignores SIGTERM, so the group needs the SIGKILL after the grace.
    let exit = child.stop(Duration::from_millis(300)).await.unwrap();
    let t = exit.ended_by().unwrap();
    assert_eq!(
        (t.reason, t.signal, t.escalated),
        (Reason::Stop, Signal::KILL, true)
    );
    tk::wait_all_dead(&descendants, DEADLINE).unwrap();
    drop(child);
    base.assert_clean().await;
}

#[tokio::test]
async fn stragglers_get_the_rest_of_the_grace_then_sigkill() {
    let base = Baseline::take().await;
    // The shell exits on SIGTERM at once; its background child ignores SIGTERM and
    // stays in the group after the leader is gone.
    let mut cmd = std::process::Command::new("sh");
    let fixture_path = tk::fixture_path().display().to_string();
    cmd.args(["-c", &format!("{fixture_path} ignore-sigterm & wait")]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .unwrap();
    read_until_ready(&mut child).await;
    let pgid = child.id();
    let members = tk::live_group_members(pgid);
    assert_eq!(
        members.len(),
        2,
        "shell and its background job: {members:?}"
    );
    let exit = child.stop(Duration::from_millis(300)).await.unwrap();
    // The shell died of SIGTERM within the grace: not escalated for the leader ...
    assert_eq!(exit.signal(), Some(Signal::TERM), "{exit}");
    assert!(!exit.ended_by().unwrap().escalated);
    // ... and the straggler was SIGKILLed once the grace ran out.
    tk::wait_all_dead(&members, DEADLINE).unwrap();
    drop(child);
    base.assert_clean().await;
}

#[tokio::test]
async fn a_setsid_grandchild_escapes_the_group_the_documented_limit() {
    let base = Baseline::take().await;
    let (mut child, lines) =
        spawn_ready(&mut fixture("grandchild", &["--children", "2", "--setsid"])).await;
    let descendants = tk::parse_pids(&lines.join("\n"));
    let escaped: Vec<u32> = descendants
        .iter()
        .copied()
        .filter(|&p| tk::stat(p).is_some_and(|s| s.pgrp != child.id()))
        .collect();
    assert_eq!(
        escaped.len(),
        1,
        "exactly one descendant left the group: {descendants:?}"
    );
    child.stop(Duration::from_millis(200)).await.unwrap();
    let stayed: Vec<u32> = descendants
        .iter()
        .copied()
        .filter(|p| !escaped.contains(p))
        .collect();
    tk::wait_all_dead(&stayed, DEADLINE).unwrap();
    assert!(
        tk::is_alive(escaped[0]),
        "the setsid escapee is out of reach of group signals"
    );
    // Clean up the escapee ourselves (we started it, we end it, by pid).
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(escaped[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    tk::wait_all_dead(&escaped, DEADLINE).unwrap();
    drop(child);
    base.assert_clean().await;
}

#[tokio::test]
async fn a_cgroup_catches_the_setsid_grandchild() {
    let base = Baseline::take().await;
    let parent = cgroup_parent().expect("this machine kind has a writable cgroup v2 mount");
    let mut cmd = fixture("grandchild", &["--children", "2", "--setsid"]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .cgroup(&parent)
        .spawn()
        .unwrap();
    let lines = read_until_ready(&mut child).await;
    let cgroup = child.cgroup_path().unwrap().to_path_buf();
    let descendants = tk::parse_pids(&lines.join("\n"));
    assert_eq!(descendants.len(), 4);
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    for pid in &descendants {
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {cgroup:?}: {procs}"
        );
    }
    child.stop(Duration::from_millis(200)).await.unwrap();
    tk::wait_all_dead(&descendants, DEADLINE).unwrap();
    drop(child);
    crate::support::wait_for("cgroup removed", || {
        if cgroup.exists() {
            Err(format!("{cgroup:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    base.assert_clean().await;
}

#[tokio::test]
async fn signal_leader_spares_the_group_and_signal_reaches_it_after_reaping() {
    let base = Baseline::take().await;
    let mut cmd = std::process::Command::new("sh");
    let fixture_path = tk::fixture_path().display().to_string();
    cmd.args(["-c", &format!("{fixture_path} hang & wait")]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .unwrap();
    read_until_ready(&mut child).await;
    let members = tk::live_group_members(child.id());
    assert_eq!(members.len(), 2, "{members:?}");
    let member = *members.iter().find(|&&p| p != child.id()).unwrap();
    // SIGHUP to the leader only: the shell dies of it ...
    child.signal_leader(Signal::HUP).unwrap();
    let exit = child.wait().await.unwrap();
    assert_eq!(exit.signal(), Some(Signal::HUP));
    assert!(
        exit.ended_by().is_none(),
        "a plain signal is not a termination by us"
    );
    // ... and its group member did not get it.
    assert!(tk::is_alive(member), "signal_leader reached a group member");
    // The leader is reaped, yet the group is still reachable through the pidfd.
    child.signal(Signal::HUP).unwrap();
    tk::wait_all_dead(&[member], DEADLINE).unwrap();
    drop(child);
    base.assert_clean().await;
}
