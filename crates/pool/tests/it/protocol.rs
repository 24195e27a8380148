//! Workers that break the protocol are killed and replaced; their tasks get `Protocol`.

use std::time::Duration;

use futures::StreamExt;

use crate::job::Job;
use forkyard_pool::protocol::FromWorker;
use forkyard_pool::{BuildError, Pool, PoolError, ShutdownMode, TaskError};

use crate::support::{Baseline, builder};

fn breaker() -> forkyard_supervise::BreakerConfig {
    forkyard_supervise::BreakerConfig::new(2, Duration::from_secs(10))
        .open_for(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_for_an_unknown_task_is_a_protocol_error() {
    let base = Baseline::take().await;
    let pool = builder(&["--unknown-id"]).workers(1).build().await.unwrap();
    match pool.call(Job::Echo(1)).await {
        Err(PoolError::Protocol(message)) => {
            let message = crate::support::chain(&*message);
            assert!(message.contains("was not running"), "{message}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!(
        stats.failed.get(&forkyard_pool::FailureKind::Protocol),
        Some(&1)
    );
    pool.shutdown(ShutdownMode::Cancel {
        grace: Duration::from_secs(5),
    })
    .await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_mismatched_types_never_make_a_pool() {
    let base = Baseline::take().await;
    // Bytes that are no hello at all, where the channel should be.
    let garbage = Pool::<Job, u64>::builder()
        .command(|| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args([
                "-c",
                r#"printf '\377\377\377\377not a frame' >&3; exec sleep 1000"#,
            ]);
            cmd
        })
        .workers(1)
        .breaker(breaker())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(garbage, BuildError::NoWorkers(_)), "{garbage:?}");
    // A worker built from other types: the handshake tells them apart.
    let err = builder(&["--wrong-types"])
        .workers(1)
        .breaker(breaker())
        .build()
        .await
        .unwrap_err();
    match err {
        BuildError::NoWorkers(reason) => {
            let reason = crate::support::chain(&*reason);
            assert!(reason.contains("type mismatch"), "{reason}")
        }
        other => panic!("expected NoWorkers, got {other:?}"),
    }
    base.assert_clean().await;
}

/// A worker that shakes hands properly, then answers a task with garbage:
/// the task fails with `Protocol`, the worker is killed and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_fails_the_task_with_protocol() {
    let base = Baseline::take().await;
    const SCRIPT: &str = r#"
import json, os, socket
sock = socket.socket(fileno=int(os.environ["FORKYARD_IPC_FD"]))
r, w = sock.makefile("rb"), sock.makefile("wb", buffering=0)
hello = json.loads(r.readline())
hello["sends"], hello["receives"] = hello["receives"], hello["sends"]
w.write(json.dumps(hello).encode() + b"\n")
w.write(b'"Ready"\n')
for line in r:
    w.write(b"}{ this is not json\n")
"#;
    let pool = Pool::<Job, u64>::builder()
        .command(|| {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", SCRIPT]);
            cmd
        })
        .codec(forkyard_ipc::Codec::JsonLines)
        .workers(1)
        .build()
        .await
        .unwrap();
    let first_pid = pool.stats().workers[0].pid;
    match pool.call(Job::Echo(1)).await {
        Err(PoolError::Protocol(message)) => {
            let message = crate::support::chain(&*message);
            assert!(message.contains("undecodable"), "{message}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    crate::support::wait_full(&pool, 1).await;
    assert_ne!(pool.stats().workers[0].pid, first_pid, "replaced");
    pool.shutdown(ShutdownMode::Cancel {
        grace: Duration::from_secs(5),
    })
    .await;
    base.assert_clean().await;
}

/// A Rust handler's `TaskError` reaches the caller with its kind, message
/// and detail, per call and per item of a batch; a plain error crosses
/// without kind, a panic as kind `Panic`; a detail far longer than
/// `TaskError::DETAIL_MAX` arrives cut to it (its head and its end), not as
/// a frame too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_handlers_typed_error_crosses_with_its_kind() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    let typed = |kind: &str, detail_bytes| Job::FailTyped {
        kind: kind.into(),
        message: "no such user".into(),
        detail_bytes,
    };
    let error = |r: Result<u64, PoolError>| match r {
        Err(PoolError::Task(e)) => e,
        other => panic!("expected a task error, got {other:?}"),
    };
    let e = error(pool.call(typed("NotFound", 30)).await);
    assert_eq!(e.kind(), Some("NotFound"));
    assert_eq!(e.message(), "no such user");
    assert_eq!(e.detail(), Some("frame 0\nframe 1\nframe 2\ninnermost"));
    assert_eq!(
        PoolError::Task(e).to_string(),
        "the task failed: NotFound: no such user"
    );
    // 8 MiB of detail: cut by the worker, and the result still fits a frame.
    let e = error(pool.call(typed("Deep", 8 << 20)).await);
    let detail = e.detail().unwrap();
    assert!(detail.len() <= TaskError::DETAIL_MAX, "{}", detail.len());
    assert!(detail.starts_with("frame 0\n") && detail.ends_with("innermost"));
    assert!(detail.contains(" bytes cut ...]"), "a note of the cut");
    let e = error(pool.call(Job::Fail("plain".into())).await);
    assert_eq!((e.kind(), e.message(), e.detail()), (None, "plain", None));
    let e = error(pool.call(Job::Panic).await);
    assert!(e.is_panic(), "{e:?}");
    assert_eq!(e.kind(), Some(TaskError::PANIC));
    assert!(e.message().contains("the job asked for a panic"), "{e}");
    // Per item of a batch: each failed item with its own kind.
    let items = vec![Job::Echo(1), typed("A", 0), Job::Echo(3), typed("B", 0)];
    let results: Vec<_> = pool.map(items).collect().await;
    let kinds: Vec<Result<u64, Option<String>>> = results
        .into_iter()
        .map(|r| r.map_err(|e| error(Err(e)).kind().map(str::to_owned)))
        .collect();
    assert_eq!(
        kinds,
        [Ok(1), Err(Some("A".into())), Ok(3), Err(Some("B".into()))]
    );
    assert_eq!(pool.stats().crashes, 0);
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    })
    .await;
    base.assert_clean().await;
}

/// Between Rust processes (postcard, the default codec) an error keeps its
/// kind, message and detail, and one without kind or detail stays so.
#[tokio::test]
async fn task_errors_round_trip_over_postcard() {
    let (a, b) = forkyard_ipc::Channel::<FromWorker<u64>, FromWorker<u64>>::pair().unwrap();
    let (mut tx, _) = a.split();
    let (_, mut rx) = b.split();
    let sent = [
        FromWorker::Done {
            id: 1,
            result: Err(TaskError::new("NotFound", "no such user").with_detail("at lookup")),
        },
        FromWorker::Items {
            id: 2,
            results: vec![
                (0, Ok(7)),
                (1, Err(TaskError::untyped("plain"))),
                (2, Err(TaskError::new("", ""))),
            ],
        },
    ];
    for message in &sent {
        tx.send(message).await.unwrap();
    }
    for message in sent {
        assert_eq!(rx.recv().await.unwrap(), Some(message));
    }
}

/// How task errors read: `Display` (`kind: message`, as errors read before
/// they had kinds), `Debug` (every part), and inside `PoolError`.
#[test]
fn task_error_messages() {
    let errors = [
        TaskError::new("ValueError", "bad input")
            .with_detail("Traceback ...\nValueError: bad input"),
        TaskError::new("ValueError", ""),
        TaskError::untyped("13 is unlucky"),
    ];
    let shown: Vec<(String, String, String)> = errors
        .into_iter()
        .map(|e| {
            (
                e.to_string(),
                format!("{e:?}"),
                PoolError::Task(e).to_string(),
            )
        })
        .collect();
    insta::assert_debug_snapshot!(shown);
}
