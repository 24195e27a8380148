//! Live sampling of a running child and its group from /proc.

use std::time::Duration;

use forkyard_child::{Child, Error, Input, Output};
use forkyard_testkit as tk;

use crate::support::{Baseline, DEADLINE, fixture, read_until_ready};

#[tokio::test]
async fn sample_sees_memory_growth_and_the_group() {
    let base = Baseline::take().await;
    let mut cmd = fixture("alloc-until-killed", &["4"]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .unwrap();
    // Wait until it reports at least 64 MiB resident, then sample.
    let wait = async {
        while let Some(line) = child.next_line().await {
            let rss: u64 = line.text().strip_prefix("rss ").unwrap().parse().unwrap();
            if rss >= 64 << 20 {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.unwrap();
    let s = child.sample().unwrap();
    assert_eq!(s.pid, child.id());
    assert!(s.rss_bytes >= 64 << 20, "rss {}", s.rss_bytes);
    assert_eq!(s.group.processes, 1);
    assert!(s.group.rss_bytes >= s.rss_bytes);
    assert!(s.user_cpu + s.system_cpu > Duration::ZERO);
    child.kill().await.unwrap();
    assert!(matches!(child.sample(), Err(Error::NotRunning { .. })));
    drop(child);
    base.assert_clean().await;
}

#[tokio::test]
async fn sample_counts_every_live_group_member() {
    let base = Baseline::take().await;
    let mut cmd = fixture("grandchild", &["--children", "2", "--depth", "2"]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .unwrap();
    let pids = tk::parse_pids(&read_until_ready(&mut child).await.join("\n"));
    let s = child.sample().unwrap();
    assert_eq!(
        s.group.processes,
        1 + pids.len(),
        "root + {} descendants",
        pids.len()
    );
    child.kill().await.unwrap();
    tk::wait_all_dead(&pids, DEADLINE).unwrap();
    drop(child);
    base.assert_clean().await;
}
