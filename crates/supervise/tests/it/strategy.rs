//! Strategies with real processes: who is stopped, in which order, and who starts again.

use std::time::Duration;

use forkyard_supervise::{Backoff, ChildSpec, EventKind, Strategy, Supervisor};

use crate::{Watch, assert_all_dead, fixture, kill};

/// Kills "b" of a, b, c, d and returns the stops and starts that follow, in order.
async fn after_b_dies(strategy: Strategy) -> Vec<String> {
    let mut builder = Supervisor::builder()
        .strategy(strategy)
        .intensity(5, Duration::from_secs(10));
    for name in ["a", "b", "c", "d"] {
        builder =
            builder.child(ChildSpec::new(name, || fixture(&["hang"])).backoff(Backoff::none()));
    }
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.unwrap();
    watch
        .until("the start to complete", |e| e.kind == EventKind::Running)
        .await;
    let before = sup.status().await.unwrap();
    let mark = watch.seen.len();
    kill(before[1].pid.unwrap(), rustix::process::Signal::KILL);
    // The group is back when the last child of the restart scope is ready again.
    let (last, old) = match strategy {
        Strategy::OneForOne => ("b", before[1].pid.unwrap()),
        _ => ("d", before[3].pid.unwrap()),
    };
    watch
        .child(
            last,
            "ready again",
            |k| matches!(k, EventKind::Ready { pid, .. } if *pid != old),
        )
        .await;
    let order = watch.seen[mark..]
        .iter()
        .filter_map(|e| {
            let who = e.child.as_deref()?;
            match e.kind {
                EventKind::Stopping { .. } => Some(format!("stop {who}")),
                EventKind::Spawned { .. } => Some(format!("start {who}")),
                _ => None,
            }
        })
        .collect();
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_order_stops_and_starts() {
    assert_eq!(after_b_dies(Strategy::OneForOne).await, ["start b"]);
    assert_eq!(
        after_b_dies(Strategy::OneForAll).await,
        [
            "stop d", "stop c", "stop a", "start a", "start b", "start c", "start d"
        ]
    );
    assert_eq!(
        after_b_dies(Strategy::RestForOne).await,
        ["stop d", "stop c", "start b", "start c", "start d"]
    );
}
