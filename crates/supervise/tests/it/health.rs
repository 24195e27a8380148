//! Probes against real processes: hangs, livelocks, HTTP health, exec checks, failed starts.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use forkyard_child::{Input, Output};
use forkyard_supervise::{
    Backoff, ChildSpec, Error, EventKind, Heartbeat, Launch, Probe, Shutdown, Supervisor,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::{Watch, assert_all_dead, fixture, kill};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An `echo` child pinged over its stdin every 20 ms; every echoed ping is a heartbeat whose
/// progress is the ping number, or a constant when `livelock` is set (alive, not progressing).
fn pinged_echo(beats: Arc<watch::Sender<Heartbeat>>, livelock: Arc<AtomicBool>) -> Launch {
    Launch::new(fixture(&["echo", "hello"]))
        .stdin(Input::Piped)
        .stdout(Output::piped())
        .on_spawn(move |child| {
            let mut stdin = child.take_stdin().expect("stdin piped");
            let stdout = child.take_stdout().expect("stdout piped");
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                // The echo fixture first prints its argument line.
                let _ = lines.next_line().await;
                let mut tick = tokio::time::interval(ms(20));
                for n in 1u64.. {
                    tick.tick().await;
                    if stdin
                        .write_all(format!("ping {n}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    match lines.next_line().await {
                        Ok(Some(line)) if line == format!("ping {n}") => {
                            let progress = if livelock.load(Ordering::SeqCst) {
                                0
                            } else {
                                n
                            };
                            beats.send_replace(Heartbeat::new(progress));
                        }
                        _ => return,
                    }
                }
            });
        })
}

fn heartbeat_spec(livelock: Arc<AtomicBool>) -> ChildSpec {
    let (tx, rx) = watch::channel(Heartbeat::default());
    let tx = Arc::new(tx);
    ChildSpec::new("echo", move || pinged_echo(tx.clone(), livelock.clone()))
        .readiness(Probe::heartbeat(rx.clone()).timeout(ms(2_000)))
        .liveness(
            Probe::heartbeat(rx)
                .every(ms(100))
                .timeout(ms(100))
                .failures(3),
        )
        .backoff(Backoff::none())
        .shutdown(Shutdown::Signal { grace: ms(200) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_catches_a_hang() {
    let builder = Supervisor::builder().child(heartbeat_spec(Arc::default()));
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    let EventKind::Spawned { pid } = watch
        .child("echo", "spawn", |k| matches!(k, EventKind::Spawned { .. }))
        .await
        .kind
    else {
        unreachable!()
    };
    // Freeze it: it stops answering (and cannot act on SIGTERM either).
    kill(pid, rustix::process::Signal::STOP);
    let unhealthy = watch
        .child("echo", "unhealthy", |k| {
            matches!(k, EventKind::Unhealthy { .. })
        })
        .await;
    let EventKind::Unhealthy {
        detail, failures, ..
    } = &unhealthy.kind
    else {
        unreachable!()
    };
    assert_eq!(*failures, 3);
    assert!(detail.starts_with("no heartbeat within"), "{detail}");
    let exited = watch
        .child("echo", "exit", |k| matches!(k, EventKind::Exited { .. }))
        .await;
    let EventKind::Exited { exit, expected, .. } = &exited.kind else {
        unreachable!()
    };
    assert!(expected);
    assert!(
        exit.killed_after_grace,
        "a stopped process needs SIGKILL: {exit}"
    );
    // Restarted as unhealthy, and the new instance is beating again.
    watch
        .child(
            "echo",
            "restart",
            |k| matches!(k, EventKind::Restarting { reason, .. } if reason == "unhealthy"),
        )
        .await;
    watch
        .child("echo", "ready again", |k| {
            matches!(k, EventKind::Ready { .. })
        })
        .await;
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    assert_all_dead(&watch.pids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_catches_a_livelock() {
    let livelock = Arc::new(AtomicBool::new(false));
    let builder = Supervisor::builder().child(heartbeat_spec(livelock.clone()));
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    // Still beating, no longer progressing.
    livelock.store(true, Ordering::SeqCst);
    let unhealthy = watch
        .child("echo", "unhealthy", |k| {
            matches!(k, EventKind::Unhealthy { .. })
        })
        .await;
    let EventKind::Unhealthy { detail, .. } = &unhealthy.kind else {
        unreachable!()
    };
    assert_eq!(detail, "heartbeats but no progress (stuck at 0)");
    livelock.store(false, Ordering::SeqCst);
    watch
        .child("echo", "ready again", |k| {
            matches!(k, EventKind::Ready { .. })
        })
        .await;
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    assert_all_dead(&watch.pids());
}

/// A tiny HTTP server answering every request with `status` (0: never answers).
async fn health_server(status: Arc<AtomicU16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 256];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match status.load(Ordering::SeqCst) {
                    0 => {
                        // Hung: hold the connection, say nothing.
                        let _ = conn.read(&mut buf).await;
                    }
                    code => {
                        let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                        let _ = conn.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probes_gate_readiness_and_restart_on_failure() {
    let status = Arc::new(AtomicU16::new(503));
    let port = health_server(status.clone()).await;
    let url = format!("http://127.0.0.1:{port}/health");
    let spec = ChildSpec::new("web", || fixture(&["hang"]))
        .readiness(Probe::http(&url).every(ms(20)))
        .liveness(Probe::http(&url).every(ms(50)).timeout(ms(200)).failures(2))
        .backoff(Backoff::none())
        .shutdown(Shutdown::Signal { grace: ms(500) });
    let builder = Supervisor::builder().child(spec);
    let mut watch = Watch::new(builder.subscribe());
    let sup = builder.spawn().expect("spawn");
    // 503: not ready; nothing else starts.
    watch
        .child("web", "a spawn", |k| matches!(k, EventKind::Spawned { .. }))
        .await;
    status.store(200, Ordering::SeqCst);
    crate::bounded(sup.started())
        .await
        .expect("ready once the server says 200");
    // 500: unhealthy after two failures, restarted.
    status.store(500, Ordering::SeqCst);
    let unhealthy = watch
        .child("web", "unhealthy", |k| {
            matches!(k, EventKind::Unhealthy { .. })
        })
        .await;
    assert!(
        matches!(&unhealthy.kind, EventKind::Unhealthy { detail, failures: 2, .. } if detail == "HTTP 500"),
        "{unhealthy}"
    );
    // Hung server: the probe times out.
    status.store(0, Ordering::SeqCst);
    watch
        .child("web", "a spawn after the restart", |k| {
            matches!(k, EventKind::Spawned { .. })
        })
        .await;
    status.store(200, Ordering::SeqCst);
    watch
        .child("web", "ready again", |k| {
            matches!(k, EventKind::Ready { .. })
        })
        .await;
    status.store(0, Ordering::SeqCst);
    let hung = watch
        .child("web", "unhealthy (hung)", |k| {
            matches!(k, EventKind::Unhealthy { .. })
        })
        .await;
    assert!(
        matches!(&hung.kind, EventKind::Unhealthy { detail, .. } if detail == "timed out after 200ms"),
        "{hung}"
    );
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    assert_all_dead(&watch.pids());
}

/// Live processes whose environment holds `FORKYARD_TEST_MARK=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("FORKYARD_TEST_MARK={mark}");
    forkyard_testkit::all_processes()
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
        })
        .map(|p| p.pid)
        .collect()
}

fn marked_fixture(args: &[&str], mark: &str) -> Command {
    let mut cmd = fixture(args);
    cmd.env("FORKYARD_TEST_MARK", mark);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_pass_on_zero_and_are_killed_on_timeout() {
    // Passing exec readiness.
    let builder = Supervisor::builder().child(
        ChildSpec::new("ok", || fixture(&["hang"]))
            .readiness(Probe::exec(|| fixture(&["exit-with", "0"]))),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start())
        .await
        .expect("exec probe exit 0 makes it ready");
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());

    // A probe command that hangs is killed at its timeout, every time; two failures in a row
    // fail the start; intensity 0 gives up at once.
    let mark = format!("exec-probe-{}", std::process::id());
    let probe_mark = mark.clone();
    let builder = Supervisor::builder()
        .intensity(0, Duration::from_secs(10))
        .child(
            ChildSpec::new("never", || fixture(&["hang"])).readiness(
                Probe::exec(move || marked_fixture(&["hang"], &probe_mark))
                    .every(ms(10))
                    .timeout(ms(100))
                    .failures(2),
            ),
        );
    let mut watch = Watch::new(builder.subscribe());
    let err = crate::bounded(builder.start())
        .await
        .expect_err("never ready");
    assert!(matches!(err, Error::GaveUp { .. }), "{err}");
    let not_ready = watch
        .child("never", "not ready", |k| {
            matches!(k, EventKind::NotReady { .. })
        })
        .await;
    assert!(
        not_ready
            .kind
            .to_string()
            .contains("failed 2 times in a row: timed out after 100ms"),
        "{not_ready}"
    );
    watch.stopped().await;
    assert_all_dead(&watch.pids());
    forkyard_testkit::wait_until("exec probe processes to die", crate::DEADLINE, || {
        marked(&mark).is_empty().then_some(())
    })
    .expect("no exec probe left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_never_becomes_ready_is_a_failed_start() {
    // Nothing listens on the probed port: connection refused, every time.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let builder = Supervisor::builder()
        .intensity(1, Duration::from_secs(60))
        .child(
            ChildSpec::new("deaf", || fixture(&["hang"]))
                .readiness(Probe::tcp(addr).every(ms(10)))
                .start_timeout(ms(300))
                .backoff(Backoff::fixed(ms(10))),
        );
    let mut watch = Watch::new(builder.subscribe());
    let err = crate::bounded(builder.start()).await.expect_err("gives up");
    let Error::GaveUp { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("2 restarts within 1m"), "{reason}");
    watch.stopped().await;
    let not_ready: Vec<String> = watch
        .lines_of("deaf")
        .into_iter()
        .filter(|l| l.starts_with("not ready"))
        .collect();
    assert_eq!(not_ready.len(), 2, "{}", watch.dump());
    assert!(
        not_ready[0].ends_with("not ready within 300ms"),
        "{not_ready:?}"
    );
    assert_all_dead(&watch.pids());
}

/// Regression: a heartbeat sent while the child is being spawned (here by the `on_spawn` hook,
/// the earliest moment possible) counts for that child. Probe runners used to be created after
/// the spawn, so such a beat was taken for a stale one and the child never became ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_sent_during_spawn_counts() {
    let (tx, rx) = watch::channel(Heartbeat::default());
    let tx = Arc::new(tx);
    let builder = Supervisor::builder()
        .intensity(0, Duration::from_secs(10))
        .child(
            ChildSpec::new("fast", move || {
                let tx = tx.clone();
                Launch::new(fixture(&["hang"])).on_spawn(move |_child| {
                    tx.send_replace(Heartbeat::new(1));
                })
            })
            .readiness(Probe::heartbeat(rx).timeout(ms(200)))
            .start_timeout(ms(500)),
        );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start())
        .await
        .expect("ready from the first beat");
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;
    assert_all_dead(&watch.pids());
}
