//! Stopping: grace periods, whole process groups, stops during start-up and backoff, manual
//! stops that never restart, rolling restarts.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

use forkyard_child::Signal;
use forkyard_supervise::{
    Backoff, ChildSpec, ChildState, Ending, Error, EventKind, NotUp, Probe, Shutdown, StopReason,
    Supervisor,
};

use crate::{StdoutWatch, Watch, assert_all_dead, fixture, kill};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ignoring_sigterm_is_killed_at_its_grace() {
    let (out, ready) = StdoutWatch::new();
    let builder = Supervisor::builder().child(
        ChildSpec::new("stubborn", move || out.launch(fixture(&["ignore-sigterm"])))
            .readiness(Probe::heartbeat(ready))
            .shutdown(Shutdown::Signal { grace: ms(300) }),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    crate::bounded(sup.stop_child("stubborn"))
        .await
        .expect("stop returns");
    let exited = watch
        .child("stubborn", "exit", |k| {
            matches!(k, EventKind::Exited { .. })
        })
        .await;
    let EventKind::Exited { exit, expected, .. } = &exited.kind else {
        unreachable!()
    };
    assert!(expected);
    assert!(exit.killed_after_grace, "{exit}");
    assert_eq!(
        exit.ending,
        Ending::Signal {
            signal: Signal::KILL,
            core_dumped: false
        }
    );
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].state, ChildState::Stopped);
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    let restarts = watch
        .lines_of("stubborn")
        .iter()
        .filter(|l| l.starts_with("spawned"))
        .count();
    assert_eq!(
        restarts,
        1,
        "a manual stop never restarts: {}",
        watch.dump()
    );
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_holding_a_port_are_gone_at_stop() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (out, ready) = StdoutWatch::new();
    let grandchildren = out.pids.clone();
    // Handed over once: afterwards nothing in this process keeps the port open.
    let shared = Mutex::new(Some(listener.try_clone().unwrap()));
    let builder = Supervisor::builder().child(
        ChildSpec::new("forker", move || {
            // A tree of descendants that ignore SIGTERM, all inheriting the listening socket.
            let launch = out.launch(fixture(&["grandchild", "--children", "2", "--depth", "2"]));
            match shared.lock().unwrap().take() {
                Some(socket) => launch.pass_fd(OwnedFd::from(socket), 3),
                None => launch,
            }
        })
        .readiness(Probe::heartbeat(ready))
        .shutdown(Shutdown::Signal { grace: ms(300) }),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    drop(listener);
    let tree = grandchildren.lock().unwrap().clone();
    assert!(tree.len() >= 2, "descendants: {tree:?}");
    // Only the process tree holds the port now.
    let in_use = std::net::TcpListener::bind(addr);
    assert!(in_use.is_err(), "the tree should hold {addr}");
    crate::bounded(sup.stop_child("forker"))
        .await
        .expect("stop");
    assert_all_dead(&tree);
    let free = std::net::TcpListener::bind(addr);
    assert!(free.is_ok(), "{addr} still held after stop: {free:?}");
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}

/// A descendant that calls `setsid` leaves the process group a stop signals; a
/// child launched in its own cgroup takes it down anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_in_a_cgroup_takes_a_setsid_escapee_down_at_stop() {
    let parent = forkyard_testkit::cgroup_parent()
        .expect("this machine kind has a writable cgroup v2 mount");
    let (out, ready) = StdoutWatch::new();
    let tree = out.pids.clone();
    let builder = Supervisor::builder().child(
        ChildSpec::new("escaper", move || {
            out.launch(fixture(&["grandchild", "--setsid"]))
                .cgroup(parent.clone())
        })
        .readiness(Probe::heartbeat(ready))
        .shutdown(Shutdown::Signal { grace: ms(300) }),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    let tree = tree.lock().unwrap().clone();
    let sessions: std::collections::BTreeSet<u32> = tree
        .iter()
        .filter_map(|&pid| forkyard_testkit::stat(pid).map(|s| s.session))
        .collect();
    assert!(
        sessions.len() >= 2,
        "one descendant should have its own session: {tree:?}"
    );
    crate::bounded(sup.stop_child("escaper"))
        .await
        .expect("stop");
    assert_all_dead(&tree);
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_start_up_or_backoff_returns_and_never_restarts() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deaf = unused.local_addr().unwrap().to_string();
    drop(unused);
    let builder = Supervisor::builder()
        .child(
            ChildSpec::new("crashy", || fixture(&["exit-with", "1"]))
                .backoff(Backoff::fixed(Duration::from_secs(3_600))),
        )
        .child(
            ChildSpec::new("starting", || fixture(&["hang"]))
                .readiness(Probe::tcp(deaf).every(ms(10))),
        );
    let mut watch = Watch::new(builder.subscribe());
    let sup = builder.spawn().expect("spawn");
    // "crashy" exits at once and waits an hour to restart ...
    watch
        .child("crashy", "restart scheduled", |k| {
            matches!(k, EventKind::Restarting { .. })
        })
        .await;
    crate::bounded(sup.stop_child("crashy"))
        .await
        .expect("stop during backoff");
    // ... and "starting" (spawned once "crashy" was up) never becomes ready: stop it while it
    // is still starting.
    watch
        .seen_or_wait("crashy", "down", |k| matches!(k, EventKind::Down { .. }))
        .await;
    watch
        .seen_or_wait("starting", "spawn", |k| {
            matches!(k, EventKind::Spawned { .. })
        })
        .await;
    crate::bounded(sup.stop_child("starting"))
        .await
        .expect("stop during start-up");
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].state, ChildState::Stopped);
    assert_eq!(status[1].state, ChildState::Stopped);
    assert!(matches!(crate::bounded(sup.started()).await, Ok(())));
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    watch.stopped().await;
    let spawns = watch
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Spawned { .. }))
        .count();
    assert_eq!(spawns, 2, "{}", watch.dump());
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_start_up_never_hangs() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deaf = unused.local_addr().unwrap().to_string();
    drop(unused);
    let builder = Supervisor::builder().child(
        ChildSpec::new("starting", || fixture(&["hang"])).readiness(Probe::tcp(deaf).every(ms(10))),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = builder.spawn().expect("spawn");
    watch
        .child("starting", "spawn", |k| {
            matches!(k, EventKind::Spawned { .. })
        })
        .await;
    let waiter = sup.clone();
    let started = tokio::spawn(async move { crate::bounded(waiter.started()).await });
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    assert!(matches!(started.await.unwrap(), Err(Error::Ended(_))));
    // The last snapshot is still there: stopped.
    let last = sup.status().await.expect("final status");
    assert_eq!(last[0].state, ChildState::Stopped);
    assert!(matches!(
        sup.stop_child("starting").await,
        Err(Error::Ended(path)) if path == "root"
    ));
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_stop_then_start() {
    let builder = Supervisor::builder()
        .child(ChildSpec::new("w", || fixture(&["hang"])).backoff(Backoff::none()));
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.unwrap();
    crate::bounded(sup.stop_child("w")).await.unwrap();
    // Stopped by hand and killed by someone else afterwards: nothing to restart.
    assert_eq!(sup.status().await.unwrap()[0].state, ChildState::Stopped);
    crate::bounded(sup.start_child("w")).await.unwrap();
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].state, ChildState::Running);
    assert_eq!(status[0].restarts, 1);
    // An outside SIGKILL now is a crash and is restarted.
    kill(status[0].pid.unwrap(), rustix::process::Signal::KILL);
    watch
        .child("w", "restart", |k| {
            matches!(k, EventKind::Restarting { .. })
        })
        .await;
    assert!(matches!(
        crate::bounded(sup.stop_child("nope")).await,
        Err(Error::NoSuchChild(name)) if name == "root/nope"
    ));
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_has_the_new_instance_ready_before_the_old_stops() {
    let (out, ready) = StdoutWatch::new();
    let builder = Supervisor::builder().child(
        ChildSpec::new("web", move || out.launch(fixture(&["hang"])))
            .readiness(Probe::heartbeat(ready)),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.unwrap();
    let old = sup.status().await.unwrap()[0].pid.unwrap();
    crate::bounded(sup.restart_child("web"))
        .await
        .expect("rolling restart");
    let new = sup.status().await.unwrap()[0].pid.unwrap();
    assert_ne!(old, new);
    watch
        .child("web", "replaced", |k| {
            matches!(k, EventKind::Replaced { .. })
        })
        .await;
    let order: Vec<String> = watch
        .seen
        .iter()
        .filter(|e| e.child.as_deref() == Some("web"))
        .skip_while(|e| !matches!(e.kind, EventKind::Ready { pid, .. } if pid == old))
        .skip(1)
        .map(|e| match &e.kind {
            EventKind::Spawned { pid } => {
                format!("spawned {}", if *pid == new { "new" } else { "?" })
            }
            EventKind::Ready { pid, .. } => {
                format!("ready {}", if *pid == new { "new" } else { "?" })
            }
            EventKind::Stopping { pid, reason } => {
                assert_eq!(*reason, StopReason::Recycle);
                format!("stopping {}", if *pid == old { "old" } else { "?" })
            }
            EventKind::Exited { pid, .. } => {
                format!("exited {}", if *pid == old { "old" } else { "?" })
            }
            EventKind::Replaced { .. } => "replaced".to_string(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "spawned new",
            "ready new",
            "stopping old",
            "exited old",
            "replaced"
        ]
    );
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replacement_keeps_the_old_instance_and_says_so() {
    use forkyard_supervise::{Heartbeat, Launch};
    use std::sync::atomic::{AtomicUsize, Ordering};

    // Only the first instance announces itself ready; a replacement never does.
    let (tx, rx) = tokio::sync::watch::channel(Heartbeat::default());
    let tx = std::sync::Arc::new(tx);
    let starts = AtomicUsize::new(0);
    let builder = Supervisor::builder().child(
        ChildSpec::new("web", move || {
            let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
            let tx = tx.clone();
            Launch::new(fixture(&["hang"])).on_spawn(move |_| {
                if first {
                    tx.send_replace(Heartbeat::new(1));
                }
            })
        })
        .readiness(Probe::heartbeat(rx).timeout(ms(100)))
        .start_timeout(ms(300)),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.unwrap();
    let old = sup.status().await.unwrap()[0].pid.unwrap();
    let err = crate::bounded(sup.restart_child("web")).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotStarted { child, why: NotUp::ReplacementFailed { .. } }
            if child == "web"),
        "{err}"
    );
    let status = sup.status().await.unwrap();
    assert_eq!(
        (status[0].state, status[0].pid),
        (ChildState::Running, Some(old))
    );
    // A stopped child is started by a restart (and here, never gets ready).
    crate::bounded(sup.stop_child("web")).await.unwrap();
    let err = crate::bounded(sup.restart_child("web")).await.unwrap_err();
    assert!(matches!(err, Error::NotStarted { .. }), "{err}");
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}
