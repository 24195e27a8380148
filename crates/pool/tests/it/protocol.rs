//! Workers that break the protocol are killed and replaced; their tasks get `Protocol`.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{BuildError, PoolError, ShutdownMode};

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
            assert!(message.contains("was not running"), "{message}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    let stats = pool.stats().await;
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
    for args in [&["--garbage"][..], &["--wrong-types"][..]] {
        let err = builder(args)
            .workers(1)
            .breaker(breaker())
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::NoWorkers(_)), "{args:?}: {err:?}");
    }
    base.assert_clean().await;
}
