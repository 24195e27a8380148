//! Graceful shutdown in both modes, with tasks queued and running.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{FailureKind, Outcome, PoolError, ShutdownMode};

use crate::support::{Baseline, builder, worker_pids};

async fn loaded_pool() -> (
    crate::support::TestPool,
    Vec<tokio::task::JoinHandle<Result<u64, PoolError>>>,
) {
    let pool = builder(&[])
        .workers(2)
        .stop_grace(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|value| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Sleep { ms: 200, value }).await })
        })
        .collect();
    crate::support::wait_stats(&pool, "2 running and 4 queued", |s| {
        s.running == 2 && s.queued == 4
    })
    .await;
    (pool, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_runs_queued_and_running_tasks_then_stops_workers() {
    let base = Baseline::take().await;
    let (pool, calls) = loaded_pool().await;
    let pids = worker_pids(&pool).await;
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(20),
        })
        .await;
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(report.count(Outcome::Completed), 6, "{report:?}");
    assert_eq!(report.workers.len(), 2);
    assert!(
        report.workers.iter().all(|w| w.exit.success()),
        "drained workers exit 0: {report:?}"
    );
    assert!(matches!(
        pool.call(Job::Echo(1)).await,
        Err(PoolError::ShuttingDown)
    ));
    forkyard_testkit::wait_all_dead(&pids, crate::support::DEADLINE).unwrap();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_fails_the_queue_finishes_the_running() {
    let base = Baseline::take().await;
    let (pool, calls) = loaded_pool().await;
    let report = pool
        .shutdown(ShutdownMode::Cancel {
            grace: Duration::from_secs(20),
        })
        .await;
    let outcomes: Vec<Result<u64, PoolError>> = futures_join(calls).await;
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let shut = outcomes
        .iter()
        .filter(|o| matches!(o, Err(PoolError::ShuttingDown)))
        .count();
    assert_eq!((ok, shut), (2, 4), "{outcomes:?}");
    assert_eq!(
        (
            report.count(Outcome::Completed),
            report.count(Outcome::Failed(FailureKind::ShuttingDown))
        ),
        (2, 4)
    );
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_that_runs_out_stops_workers_and_fails_their_tasks() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .stop_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let pid = worker_pids(&pool).await[0];
    let hanging = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(Job::Hang).await }
    });
    crate::support::wait_stats(&pool, "the hang running", |s| s.running == 1).await;
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_millis(200),
        })
        .await;
    assert!(matches!(
        hanging.await.unwrap(),
        Err(PoolError::ShuttingDown)
    ));
    assert_eq!(report.count(Outcome::Failed(FailureKind::ShuttingDown)), 1);
    let exit = &report.workers[0].exit;
    assert_eq!(exit.pid(), pid);
    assert!(exit.ended_by().is_some(), "we stopped it: {exit}");
    base.assert_clean().await;
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
