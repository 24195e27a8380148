//! No orphans: when the owner is SIGKILLed, everything it spawned dies too.

use forkyard_testkit as tk;

use crate::support::{Baseline, DEADLINE, cgroup_parent, fixture, spawn_ready};

/// Runs the `own-tree` fixture (an owner spawning trees through forkyard-child),
/// SIGKILLs it, and returns (the pids of everything it started, whether each is
/// dead within the deadline).
async fn kill_owner(args: &[&str]) -> (u32, Vec<u32>) {
    let (mut owner, lines) = spawn_ready(&mut fixture("own-tree", args)).await;
    let owner_pid = owner.id();
    let descendants = tk::parse_pids(&lines.join("\n"));
    assert!(
        descendants.iter().all(|&p| tk::is_alive(p)),
        "{descendants:?}"
    );
    // The owner's watchdog is a child of the owner, so it is among its descendants.
    let watchdog: Vec<u32> = tk::live_descendants(owner.id())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "fy-watchdog")
        })
        .collect();
    assert_eq!(watchdog.len(), 1, "one watchdog per owner");
    // SIGKILL: the owner runs no code at all, no Drop, no handler.
    owner.kill().await.unwrap();
    let mut all = descendants.clone();
    all.extend(watchdog);
    tk::wait_all_dead(&all, DEADLINE).unwrap_or_else(|e| {
        let alive: Vec<u32> = all.iter().copied().filter(|&p| tk::is_alive(p)).collect();
        panic!("{e}: still alive {alive:?}")
    });
    (owner_pid, descendants)
}

#[tokio::test]
async fn sigkilled_owner_leaves_no_descendant() {
    let base = Baseline::take().await;
    let (_, descendants) = kill_owner(&["--trees", "2"]).await;
    // 2 trees of (root + 2 children x 2 levels).
    assert_eq!(descendants.len(), 2 * 5);
    base.assert_clean().await;
}

#[tokio::test]
async fn sigkilled_owner_with_cgroups_leaves_not_even_setsid_escapees() {
    let base = Baseline::take().await;
    let parent = cgroup_parent().expect("this machine kind has a writable cgroup v2 mount");
    let (owner, descendants) = kill_owner(&[
        "--trees",
        "2",
        "--setsid",
        "--cgroup",
        &parent.display().to_string(),
    ])
    .await;
    assert_eq!(descendants.len(), 2 * 5);
    // The dead owner could not remove its (now empty) cgroups; we do.
    let prefix = format!("forkyard-{owner}-");
    let mut removed = 0;
    for entry in std::fs::read_dir(&parent).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // Its processes are dead, but the kernel empties a cgroup a moment after
            // they die: wait for `populated 0` (rmdir says EBUSY until then).
            let events = entry.path().join("cgroup.events");
            tk::wait_until("the cgroup to empty", DEADLINE, || {
                std::fs::read_to_string(&events)
                    .ok()
                    .filter(|e| e.lines().any(|l| l.trim() == "populated 0"))
            })
            .unwrap();
            std::fs::remove_dir(entry.path()).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 2, "one cgroup per tree");
    base.assert_clean().await;
}
