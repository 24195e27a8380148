//! Supervisor trees: a nested supervisor's give-up escalates to its parent.

use std::time::Duration;

use forkyard_supervise::{Backoff, ChildSpec, ChildState, Error, EventKind, Restart, Supervisor};

use crate::{Watch, assert_all_dead, fixture, kill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_travels_up_the_tree() {
    // root (intensity 1) -> db (intensity 0) -> primary, replica
    let db = Supervisor::builder()
        .intensity(0, Duration::from_secs(60))
        .child(ChildSpec::new("primary", || fixture(&["hang"])).backoff(Backoff::none()))
        .child(ChildSpec::new("replica", || fixture(&["hang"])).backoff(Backoff::none()));
    let builder = Supervisor::builder()
        .intensity(1, Duration::from_secs(60))
        .child(ChildSpec::new("web", || fixture(&["hang"])))
        .child(ChildSpec::supervisor("db", db).backoff(Backoff::none()))
        .child(ChildSpec::new("after", || fixture(&["hang"])).restart(Restart::Permanent));
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start())
        .await
        .expect("the whole tree starts in order");

    watch
        .until("root running", |e| {
            e.supervisor == "root" && e.child.is_none() && e.kind == EventKind::Running
        })
        .await;
    let names: Vec<String> = sup
        .status()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["web", "db", "db/primary", "db/replica", "after"]);
    // Start order: the nested group is complete before "after" starts.
    let spawns: Vec<String> = watch
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Spawned { .. }))
        .map(|e| format!("{}/{}", e.supervisor, e.child.as_deref().unwrap()))
        .collect();
    // Root and db emit their events from their own tasks, so how root's
    // "db spawned" interleaves with db's own spawns is not defined; the order
    // within each supervisor, and "after" following the whole nested group, are.
    let position = |name: &str| {
        spawns
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("{name} not spawned: {spawns:?}"))
    };
    assert_eq!(spawns.len(), 5, "{spawns:?}");
    assert!(position("root/web") < position("root/db"), "{spawns:?}");
    assert!(
        position("root/db/primary") < position("root/db/replica"),
        "{spawns:?}"
    );
    assert!(
        position("root/web") < position("root/db/primary"),
        "{spawns:?}"
    );
    for before in ["root/db", "root/db/primary", "root/db/replica"] {
        assert!(position(before) < position("root/after"), "{spawns:?}");
    }

    // The replica dies: db has no budget, gives up, and root restarts db once.
    let replica = |sup: Supervisor| async move {
        let status = sup.status().await.unwrap();
        status
            .iter()
            .find(|s| s.name == "db/replica")
            .unwrap()
            .pid
            .unwrap()
    };
    kill(replica(sup.clone()).await, rustix::process::Signal::KILL);
    watch
        .until("db gives up", |e| {
            e.supervisor == "root/db" && matches!(e.kind, EventKind::GaveUp { .. })
        })
        .await;
    watch
        .child("db", "db restarted by root", |k| {
            matches!(k, EventKind::Ready { .. })
        })
        .await;
    let explanation = sup.explain("db/replica").await.unwrap().to_string();
    assert!(
        explanation.starts_with("replica: running, 0 restarts"),
        "{explanation}"
    );
    let root_view = sup.explain("db").await.unwrap().to_string();
    assert!(
        root_view.contains("exited: gave up: restart intensity exceeded"),
        "{root_view}"
    );

    // Again: root's own budget (1) is exceeded, and it gives up too.
    let mark = watch.seen.len();
    kill(replica(sup.clone()).await, rustix::process::Signal::KILL);
    let err = crate::bounded(sup.wait()).await.expect_err("root gives up");
    let Error::GaveUp { supervisor, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(supervisor, "root");
    assert!(reason.contains("last: db gave up"), "{reason}");
    watch.stopped().await;
    // db gave up first and stopped what it had left; then root stopped the rest, newest first.
    let stops: Vec<String> = watch.seen[mark..]
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Stopping { .. } => Some(format!(
                "stop {}/{}",
                e.supervisor,
                e.child.as_deref().unwrap()
            )),
            EventKind::GaveUp { .. } => Some(format!("{} gave up", e.supervisor)),
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        [
            "root/db gave up",
            "stop root/db/primary",
            "root gave up",
            "stop root/after",
            "stop root/web"
        ]
    );
    // After the end, the last snapshot and the decisions are still there.
    assert!(sup.status().await.unwrap().iter().all(|s| s.pid.is_none()));
    let why = sup.explain("db").await.unwrap().to_string();
    assert!(
        why.contains("give up and escalate: restart intensity exceeded"),
        "{why}"
    );
    assert!(matches!(
        sup.start_child("web").await,
        Err(Error::GaveUp { .. })
    ));
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_child_degrades_instead_of_escalating() {
    let builder = Supervisor::builder()
        .intensity(0, Duration::from_secs(60))
        .child(ChildSpec::new("web", || fixture(&["hang"])))
        .child(
            ChildSpec::new("cache", || fixture(&["exit-with", "1"]))
                .optional()
                .breaker(
                    forkyard_supervise::BreakerConfig::new(3, Duration::from_secs(60))
                        .open_for(Duration::from_secs(3_600)),
                )
                .backoff(Backoff::none()),
        );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start())
        .await
        .expect("a broken optional child does not block the start");
    watch
        .until("degraded", |e| matches!(e.kind, EventKind::Degraded { .. }))
        .await;
    let health = sup.health().await.unwrap();
    assert!(
        matches!(&health, forkyard_supervise::Health::Degraded { which, .. } if which == &["cache"]),
        "{health:?}"
    );
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].state, ChildState::Running);
    assert!(matches!(status[1].state, ChildState::BreakerOpen { .. }));
    crate::bounded(sup.shutdown())
        .await
        .expect("clean shutdown: nothing escalated");
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}
