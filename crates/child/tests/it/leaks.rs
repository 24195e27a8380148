//! No leaks: thousands of spawn/wait cycles leave fds and zombies where they were.

use std::process::Command;

use forkyard_child::{Child, Output};
use forkyard_testkit as tk;

use crate::support::Baseline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_spawn_wait_cycles_leak_nothing() {
    let base = Baseline::take().await;
    let me = std::process::id();
    let fds_before = tk::fd_count(me);
    for i in 0..2000 {
        let mut cmd = Command::new("/bin/true");
        // Every tenth child also has captured output, so the pipe paths are covered.
        let builder = Child::builder(&mut cmd);
        let builder = if i % 10 == 0 {
            builder.stdout(Output::capture(64)).stderr(Output::lines())
        } else {
            builder
        };
        let child = builder.spawn().unwrap();
        let exit = if i % 10 == 0 {
            child.wait_with_output().await.unwrap().exit
        } else {
            let mut child = child;
            child.wait().await.unwrap()
        };
        assert!(exit.success());
    }
    assert_eq!(
        tk::fd_count(me),
        fds_before,
        "fds after 2000 cycles: {:?}",
        tk::open_fds(me)
    );
    assert!(
        tk::zombie_children(me).is_empty(),
        "zombies: {:?}",
        tk::zombie_children(me)
    );
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_many_running_children_leaks_nothing() {
    let base = Baseline::take().await;
    let mut pids = Vec::new();
    for _ in 0..50 {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let child = Child::builder(&mut cmd)
            .stdout(Output::capture(16))
            .spawn()
            .unwrap();
        pids.push(child.id());
        drop(child);
    }
    tk::wait_all_dead(&pids, crate::support::DEADLINE).unwrap();
    base.assert_clean().await;
}
