//! Workers that crash, exit, hang, flood and leak: only their own tasks suffer.

use std::time::Duration;

use crate::job::Job;
use forkyard_child::Signal;
use forkyard_pool::{PoolError, ShutdownMode};

use crate::support::{Baseline, builder, sigkill, wait_for, wait_full, worker_pids};

const GRACE: ShutdownMode = ShutdownMode::Drain {
    grace: Duration::from_secs(10),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_mid_task_fails_only_its_task_and_is_replaced() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(2).retries(0).build().await.unwrap();
    let victim_call = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call(Job::Sleep {
                ms: 60_000,
                value: 1,
            })
            .await
        }
    });
    // The worker running it is the only busy one.
    let stats =
        crate::support::wait_stats(&pool, "the long task running", |s| s.running == 1).await;
    let victim = stats
        .workers
        .iter()
        .find(|w| w.in_flight == 1)
        .unwrap()
        .pid
        .unwrap();
    // A queue behind it, served by the other worker.
    let queued: Vec<_> = (0..20)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    sigkill(victim);
    match victim_call.await.unwrap() {
        Err(PoolError::WorkerCrashed { exit, .. }) => {
            assert_eq!(exit.signal(), Some(Signal::KILL));
            assert_eq!(exit.pid(), victim);
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    for (i, call) in queued.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap(),
            i as u64,
            "queued task {i} unaffected"
        );
    }
    wait_full(&pool, 2).await;
    assert!(!worker_pids(&pool).await.contains(&victim));
    let stats = pool.stats();
    assert_eq!((stats.crashes, stats.restarts), (1, 1));
    assert_eq!(stats.failed_total(), 1);
    assert_eq!(stats.completed, 20);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_task_is_retried_on_another_worker_up_to_its_limit() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(2).retries(2).build().await.unwrap();
    // Crash kills whichever worker runs it, every time: 1 run + 2 retries, then the crash.
    match pool.call(Job::Crash).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => assert_eq!(exit.signal(), Some(Signal::ABRT)),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!((stats.retried, stats.crashes), (2, 3), "{stats:?}");
    assert_eq!(
        pool.call(Job::Echo(5)).await.unwrap(),
        5,
        "the pool still serves"
    );
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_calling_exit_0_mid_task_is_a_crash_not_a_silent_loss() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(2).build().await.unwrap();
    match pool.call(Job::Exit0).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => assert_eq!(exit.code(), Some(0)),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    wait_full(&pool, 2).await;
    assert_eq!(pool.call(Job::Echo(9)).await.unwrap(), 9);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_task_times_out_and_its_worker_group_is_killed() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let pid = worker_pids(&pool).await[0];
    match pool.call(Job::Hang).await {
        Err(PoolError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    forkyard_testkit::wait_all_dead(&[pid], crate::support::DEADLINE).unwrap();
    wait_full(&pool, 1).await;
    assert_ne!(worker_pids(&pool).await, vec![pid], "replaced");
    assert_eq!(pool.call(Job::Echo(3)).await.unwrap(), 3);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_is_a_task_error_and_the_worker_keeps_serving() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    let pid = pool.call(Job::Pid).await.unwrap();
    match pool.call(Job::Panic).await {
        Err(PoolError::Task(error)) => {
            assert!(
                error.is_panic() && error.message().contains("panicked"),
                "{error:?}"
            )
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    assert_eq!(
        pool.call(Job::Fail("bad input".into()))
            .await
            .unwrap_err()
            .to_string(),
        "the task failed: bad input"
    );
    assert_eq!(
        pool.call(Job::Pid).await.unwrap(),
        pid,
        "same worker process"
    );
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_flooding_stderr_does_not_block_and_its_tail_is_kept_for_crashes() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    // 32 MiB through stderr: the pool drains it; the task completes.
    assert_eq!(
        pool.call(Job::Stderr { bytes: 32 << 20 }).await.unwrap(),
        32 << 20
    );
    match pool.call(Job::Crash).await {
        Err(PoolError::WorkerCrashed { stderr_tail, .. }) => {
            assert!(
                !stderr_tail.is_empty() && stderr_tail.len() <= 20,
                "{} lines",
                stderr_tail.len()
            );
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_worker_is_recycled_by_rss_without_losing_a_task() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .recycle_above_rss(64 << 20)
        .build()
        .await
        .unwrap();
    let first = pool.call(Job::Pid).await.unwrap();
    let rss = pool.call(Job::Alloc { mib: 96 }).await.unwrap();
    assert!(rss > 64 << 20, "the leak is resident: {rss}");
    // The sampler notices, a replacement starts, the leaker drains and exits.
    wait_for("the leaking worker retired", || {
        (!forkyard_testkit::is_alive(first as u32))
            .then_some(())
            .ok_or("still alive".into())
    })
    .await;
    let second = pool.call(Job::Pid).await.unwrap();
    assert_ne!(first, second);
    let stats = pool.stats();
    assert_eq!(stats.recycled, 1);
    assert_eq!(stats.crashes, 0, "recycling is not a crash");
    assert_eq!(stats.failed_total(), 0);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}
