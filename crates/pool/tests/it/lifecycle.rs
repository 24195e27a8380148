//! Recycling, restarts, the circuit breaker, and dropping a pool.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{BuildError, Pool, ShutdownMode};

use crate::support::{Baseline, builder, wait_full, worker_pids};

const GRACE: ShutdownMode = ShutdownMode::Drain {
    grace: Duration::from_secs(10),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_retiring_at_once_with_tasks_queued_loses_nothing() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(3)
        .recycle_after_tasks(1)
        .queue_capacity(100)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    let stats = pool.stats();
    assert_eq!(stats.completed, 30);
    assert_eq!(stats.failed_total(), 0);
    assert!(
        stats.recycled >= 3,
        "every worker was recycled at least once: {}",
        stats.recycled
    );
    assert_eq!(stats.crashes, 0);
    wait_full(&pool, 3).await;
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_workers_never_run_a_task_twice() {
    let base = Baseline::take().await;
    // Tasks slow enough to be in flight while their worker hits its quota.
    let pool = builder(&[])
        .workers(2)
        .max_in_flight_per_worker(4)
        .recycle_after_tasks(3)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Sleep { ms: 5, value: i }).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    let stats = pool.stats();
    // Each task answered exactly once: completed equals submitted, nothing retried.
    assert_eq!(
        (stats.submitted, stats.completed, stats.retried),
        (40, 40, 0)
    );
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_by_age_replaces_workers_on_the_fly() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .recycle_after_age(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let first = pool.call(Job::Pid).await.unwrap();
    // Keep calling (testkit's wait_for_async paces the calls); once the first worker
    // has aged out, a younger one answers.
    let calls = &pool;
    crate::support::wait_for_async("a recycled worker to answer", || async move {
        let pid = calls.call(Job::Pid).await.unwrap();
        if pid != first {
            Ok(())
        } else {
            Err(format!("still worker {pid}"))
        }
    })
    .await;
    assert!(pool.stats().recycled >= 1);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_start_fails_the_build_instead_of_spinning() {
    let base = Baseline::take().await;
    let err = builder(&["--exit-at-start", "3"])
        .workers(2)
        .backoff(forkyard_supervise::Backoff::fixed(Duration::from_millis(
            10,
        )))
        .breaker(
            forkyard_supervise::BreakerConfig::new(3, Duration::from_secs(10))
                .open_for(Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap_err();
    match &err {
        // Depending on how far it got: it exited before saying ready, or before its hello.
        BuildError::NoWorkers(reason) => {
            let reason = crate::support::chain(&**reason);
            assert!(
                reason.contains("exited before it was ready")
                    || reason.contains("closed the channel before its hello"),
                "{reason}"
            )
        }
        other => panic!("expected NoWorkers, got {other:?}"),
    }
    let missing = Pool::<Job, u64>::builder()
        .command(|| std::process::Command::new("/nonexistent/forkyard-worker"))
        .workers(1)
        .breaker(
            forkyard_supervise::BreakerConfig::new(1, Duration::from_secs(10))
                .open_for(Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap_err();
    // The cause is kept whole: the spawn error under it names the program.
    let missing = crate::support::chain(&missing);
    assert!(missing.contains("program not found"), "{missing}");
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_says_ready_is_killed_at_the_start_timeout() {
    let base = Baseline::take().await;
    let err = builder(&["--no-ready"])
        .workers(1)
        .start_timeout(Duration::from_millis(200))
        .backoff(forkyard_supervise::Backoff::fixed(Duration::from_millis(
            10,
        )))
        .breaker(
            forkyard_supervise::BreakerConfig::new(2, Duration::from_secs(10))
                .open_for(Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap_err();
    let err = crate::support::chain(&err);
    assert!(err.contains("not ready within"), "{err}");
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_kills_its_workers() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(2).build().await.unwrap();
    let pids = worker_pids(&pool).await;
    let hanging = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(Job::Hang).await }
    });
    crate::support::wait_stats(&pool, "a task running", |s| s.running == 1).await;
    hanging.abort();
    let _ = hanging.await;
    drop(pool);
    forkyard_testkit::wait_all_dead(&pids, crate::support::DEADLINE).unwrap();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_task_never_starts() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    let blocker = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(Job::Sleep { ms: 300, value: 1 }).await }
    });
    // Spawned tasks run in any order: wait until the blocker holds the worker.
    crate::support::wait_stats(&pool, "a task running", |s| s.running == 1).await;
    // Queued behind the blocker: would crash the worker if it ever ran.
    let doomed = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call(Job::Crash).await }
    });
    crate::support::wait_stats(&pool, "the crash task queued", |s| s.queued == 1).await;
    doomed.abort();
    assert!(doomed.await.unwrap_err().is_cancelled());
    assert_eq!(blocker.await.unwrap().unwrap(), 1);
    assert_eq!(pool.call(Job::Echo(2)).await.unwrap(), 2);
    let stats = pool.stats();
    assert_eq!(
        (stats.cancelled, stats.crashes),
        (1, 0),
        "the crash task never ran"
    );
    let err = pool.shutdown(GRACE).await;
    assert_eq!(err.stats.unwrap().crashes, 0);
    base.assert_clean().await;
}
