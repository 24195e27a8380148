//! Workers that break the protocol are killed and replaced; their tasks get `Protocol`.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{BuildError, Pool, PoolError, ShutdownMode};

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
