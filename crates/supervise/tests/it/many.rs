//! Fifty children dying at once: every death is seen and every child comes back.

use std::collections::BTreeSet;
use std::time::Duration;

use forkyard_supervise::{Backoff, ChildSpec, ChildState, EventKind, Supervisor};

use crate::{Watch, assert_all_dead, fixture, kill};

const N: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_children_dying_at_once_are_all_restarted() {
    let mut builder = Supervisor::builder().intensity(N as u32, Duration::from_secs(10));
    for i in 0..N {
        builder = builder
            .child(ChildSpec::new(format!("w{i}"), || fixture(&["hang"])).backoff(Backoff::none()));
    }
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.unwrap();
    let before = sup.status().await.unwrap();
    let pids: Vec<u32> = before.iter().map(|s| s.pid.unwrap()).collect();
    for &pid in &pids {
        kill(pid, rustix::process::Signal::KILL);
    }
    let mut back = BTreeSet::new();
    while back.len() < N {
        let ready = watch
            .until(
                "every child ready again",
                |e| matches!(e.kind, EventKind::Ready { pid, .. } if !pids.contains(&pid)),
            )
            .await;
        back.insert(ready.child.unwrap());
    }
    let exits = watch
        .seen
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Exited {
                    expected: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(exits, N, "every death seen exactly once");
    let after = sup.status().await.unwrap();
    assert!(
        after
            .iter()
            .all(|s| s.state == ChildState::Running && s.restarts == 1)
    );
    assert_all_dead(&pids);
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}
