//! Per-call options (deadlines, cancel), resizing and the operator's
//! controls, over real workers.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::job::Job;
use crate::support::{Baseline, builder, wait_for_async, wait_full, wait_stats, worker_pids};
use forkyard_pool::{
    Autoscale, CallOptions, CancelToken, ControlError, ExitCause, FailureKind, Outcome, PoolError,
    PoolEvent, RecycleReason, ShutdownMode,
};

fn drain() -> ShutdownMode {
    ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_task_is_abandoned_by_its_worker_which_lives_on() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    let pids = worker_pids(&pool).await;
    let handle = pool.start(Job::Hang, CallOptions::default()).await.unwrap();
    wait_stats(&pool, "the task running", |s| s.running == 1).await;
    handle.cancel();
    assert!(matches!(handle.await, Err(PoolError::Cancelled)));
    // The worker dropped the handler when told: no kill, no replacement.
    assert_eq!(worker_pids(&pool).await, pids);
    assert_eq!(pool.call(Job::Echo(3)).await.unwrap(), 3);
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.crashes, stats.restarts), (1, 0, 0));
    pool.shutdown(drain()).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_stop_gets_its_worker_killed_after_the_grace_and_its_neighbour_reruns_uncharged()
 {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .max_in_flight_per_worker(2)
        .cancel_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let pids = worker_pids(&pool).await;
    let token = CancelToken::new();
    let options = CallOptions {
        cancel: Some(token.clone()),
        ..CallOptions::default()
    };
    // Blocks the worker's only thread: neither the cancel nor the neighbour
    // sent after it can be read.
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let job = Job::Block {
        ms: 60_000,
        started: started.to_string_lossy().into_owned(),
    };
    let blocked = pool.start(job, options).await.unwrap();
    crate::support::wait_for("the block begun", || {
        if started.exists() {
            Ok(())
        } else {
            Err("no marker yet".to_string())
        }
    })
    .await;
    let neighbour = pool
        .start(Job::Echo(7), CallOptions::default())
        .await
        .unwrap();
    wait_stats(&pool, "both on the worker", |s| s.running == 2).await;
    token.cancel();
    assert!(matches!(blocked.await, Err(PoolError::Cancelled)));
    assert_eq!(neighbour.await.unwrap(), 7, "re-ran on the replacement");
    wait_stats(&pool, "the worker replaced", |s| {
        s.workers.len() == 1
            && s.workers[0].state.is_ready()
            && s.workers[0].pid.is_some_and(|p| !pids.contains(&p))
    })
    .await;
    let stats = pool.stats();
    assert_eq!(stats.retried, 0, "a collateral re-run is not a retry");
    assert_eq!(stats.cancelled, 1);
    assert_eq!(stats.completed, 1);
    pool.shutdown(drain()).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_deadlines_fail_a_queued_task_unrun_and_a_running_one_with_its_worker() {
    let base = Baseline::take().await;
    let mut events = {
        let b = builder(&[]).workers(1);
        let events = b.subscribe();
        (b, events)
    };
    let pool = events.0.build().await.unwrap();
    // A queued deadline: the running hang has a deadline far away and ends
    // only when the test cancels it, after the queued call has failed, so
    // the queued call can never reach a worker, however late anything is.
    let token = CancelToken::new();
    let first = CallOptions {
        cancel: Some(token.clone()),
        ..CallOptions::within(Duration::from_secs(3600))
    };
    let first = pool.start(Job::Hang, first).await.unwrap();
    wait_stats(&pool, "the hang running", |s| s.running == 1).await;
    // Queued behind the hang, with a short deadline: it never runs.
    let queued = pool
        .call_with(Job::Echo(1), CallOptions::within(Duration::from_millis(50)))
        .await;
    assert!(
        matches!(queued, Err(PoolError::TimedOut { .. })),
        "{queued:?}"
    );
    token.cancel();
    assert!(matches!(first.await, Err(PoolError::Cancelled)));
    // A running deadline: the hang passes it, its worker is killed and
    // replaced. The worker is idle, so the hang is dispatched as it is
    // submitted (the Dispatched events below check it was).
    wait_stats(&pool, "the worker idle", |s| {
        s.running == 0 && s.workers.len() == 1 && s.workers[0].state.is_ready()
    })
    .await;
    let second = pool
        .call_with(Job::Hang, CallOptions::within(Duration::from_millis(300)))
        .await;
    assert!(
        matches!(second, Err(PoolError::TimedOut { .. })),
        "{second:?}"
    );
    wait_full(&pool, 1).await;
    assert_eq!(pool.call(Job::Echo(2)).await.unwrap(), 2);
    let stats = pool.stats();
    assert_eq!(stats.failed.get(&FailureKind::TimedOut), Some(&2));
    assert_eq!(stats.cancelled, 1);
    pool.shutdown(drain()).await;
    // The queued task was never dispatched; the killed worker's exit says why.
    let mut dispatched = BTreeSet::new();
    let mut timed_out_exits = 0;
    while let Some(event) = events.1.try_recv() {
        match event {
            PoolEvent::Dispatched { task, .. } => {
                dispatched.insert(task);
            }
            PoolEvent::WorkerExited {
                cause: ExitCause::TimedOut,
                ..
            } => timed_out_exits += 1,
            _ => {}
        }
    }
    assert_eq!(dispatched.len(), 3, "the two hangs and the last echo only");
    assert_eq!(timed_out_exits, 1);
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizing_up_and_down_under_load_loses_and_repeats_nothing() {
    let base = Baseline::take().await;
    let b = builder(&[]).workers(2).max_in_flight_per_worker(2);
    let mut events = b.subscribe();
    let pool = b.build().await.unwrap();
    let mut calls = Vec::new();
    for i in 0..300u64 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            pool.call(Job::Sleep { ms: 2, value: i }).await
        }));
    }
    assert_eq!(pool.resize(4).unwrap(), 2);
    wait_stats(&pool, "4 ready workers", |s| {
        s.workers.iter().filter(|w| w.state.is_ready()).count() == 4
    })
    .await;
    assert_eq!(pool.resize(1).unwrap(), 4);
    assert_eq!(pool.size(), 1);
    let mut values = BTreeSet::new();
    for call in calls {
        assert!(values.insert(call.await.unwrap().unwrap()));
    }
    assert_eq!(values, (0..300).collect());
    wait_full(&pool, 1).await;
    let stats = pool.stats();
    assert_eq!((stats.crashes, stats.retried), (0, 0));
    assert_eq!(stats.completed, 300);
    pool.shutdown(drain()).await;
    let (mut resized, mut drained) = (Vec::new(), 0);
    while let Some(event) = events.try_recv() {
        match event {
            PoolEvent::Resized { from, to } => resized.push((from, to)),
            PoolEvent::WorkerExited { cause, .. } => {
                assert_eq!(cause, ExitCause::Drained);
                drained += 1;
            }
            _ => {}
        }
    }
    assert_eq!(resized, vec![(2, 4), (4, 1)]);
    assert_eq!(drained, 4, "three removed by the resize, one at shutdown");
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_controls_recycle_a_worker_and_open_and_close_the_breaker() {
    let base = Baseline::take().await;
    let b = builder(&[]).workers(1);
    let mut events = b.subscribe();
    let pool = b.build().await.unwrap();
    // Bad requests change nothing.
    assert_eq!(pool.resize(0), Err(ControlError::ZeroSize(0)));
    assert_eq!(pool.recycle(999), Err(ControlError::NoSuchWorker(999)));
    // Recycle: a replacement first, then the old worker drains.
    let old = pool.stats().workers[0].worker;
    pool.recycle(old).unwrap();
    wait_stats(&pool, "the recycled worker replaced", |s| {
        s.workers.len() == 1 && s.workers[0].worker != old && s.workers[0].state.is_ready()
    })
    .await;
    // Open the breaker: nothing starts; once the last worker is gone, calls
    // fail fast.
    pool.open_breaker();
    let pid = worker_pids(&pool).await[0];
    crate::support::sigkill(pid);
    wait_stats(&pool, "no worker left", |s| s.workers.is_empty()).await;
    assert!(matches!(
        pool.call(Job::Echo(1)).await,
        Err(PoolError::Unavailable(_))
    ));
    assert!(pool.stats().degraded.unwrap().contains("operator"));
    pool.close_breaker();
    wait_full(&pool, 1).await;
    assert_eq!(pool.call(Job::Echo(4)).await.unwrap(), 4);
    let report = pool.drain(Duration::from_secs(10)).await;
    assert!(report.tasks.is_empty());
    let mut seen = Vec::new();
    while let Some(event) = events.try_recv() {
        match event {
            PoolEvent::WorkerRecycled { worker, reason } => {
                assert_eq!((worker, reason), (old, RecycleReason::Operator));
                seen.push("recycled");
            }
            PoolEvent::BreakerOpened { operator } => {
                assert!(operator);
                seen.push("opened");
            }
            PoolEvent::BreakerClosed { operator } => {
                assert!(operator);
                seen.push("closed");
            }
            PoolEvent::ShuttingDown { drain, .. } => {
                assert!(drain);
                seen.push("draining");
            }
            _ => {}
        }
    }
    assert_eq!(seen, vec!["recycled", "opened", "closed", "draining"]);
    // After shutdown, the controls say so.
    assert_eq!(pool.resize(2), Err(ControlError::ShuttingDown));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ids_from_start_are_the_ones_in_the_shutdown_report() {
    let base = Baseline::take().await;
    let pool = builder(&[]).workers(1).build().await.unwrap();
    let hang = pool.start(Job::Hang, CallOptions::default()).await.unwrap();
    let queued = pool
        .start(Job::Echo(1), CallOptions::default())
        .await
        .unwrap();
    let (hang_id, queued_id) = (hang.id(), queued.id());
    wait_for_async("the hang running", || async {
        if pool.stats().running == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", pool.stats()))
        }
    })
    .await;
    let (report, hang, queued) = tokio::join!(
        pool.shutdown(ShutdownMode::Cancel {
            grace: Duration::from_millis(100)
        }),
        hang,
        queued
    );
    assert!(matches!(hang, Err(PoolError::ShuttingDown)));
    assert!(matches!(queued, Err(PoolError::ShuttingDown)));
    let outcome = |id| {
        report
            .tasks
            .iter()
            .find(|t| t.task == id)
            .map(|t| t.outcome)
    };
    assert_eq!(
        outcome(hang_id),
        Some(Outcome::Failed(FailureKind::ShuttingDown))
    );
    assert_eq!(
        outcome(queued_id),
        Some(Outcome::Failed(FailureKind::ShuttingDown))
    );
    base.assert_clean().await;
}

/// The next `Resized` on `events` (waiting up to `DEADLINE`); the events
/// before it go to `seen`.
async fn next_resized(
    events: &mut forkyard_pool::Subscription,
    seen: &mut Vec<PoolEvent>,
) -> (usize, usize) {
    tokio::time::timeout(crate::support::DEADLINE, async {
        loop {
            match events.recv().await.expect("the pool is alive") {
                PoolEvent::Resized { from, to } => return (from, to),
                other => seen.push(other),
            }
        }
    })
    .await
    .expect("a Resized event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_grows_to_max_under_a_burst_and_shrinks_back_to_min_when_idle() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let b = builder(&[])
        .max_in_flight_per_worker(1)
        .autoscale(Autoscale {
            scale_up_after: Duration::from_millis(20),
            idle_timeout: Duration::from_millis(200),
            ..Autoscale::new(1, 3)
        });
    let mut events = b.subscribe();
    let pool = b.build().await.unwrap();
    assert_eq!(pool.size(), 1, "it starts at min");
    // A burst of tasks that all wait for the test's release: more than the
    // largest pool can run, so tasks stay queued whatever the timing, and
    // the pool grows one worker at a time up to max.
    let calls: Vec<_> = (0..6u64)
        .map(|value| {
            let pool = pool.clone();
            let path = release.to_string_lossy().into_owned();
            tokio::spawn(async move { pool.call(Job::WaitFile { path, value }).await })
        })
        .collect();
    let mut seen = Vec::new();
    assert_eq!(next_resized(&mut events, &mut seen).await, (1, 2));
    assert_eq!(next_resized(&mut events, &mut seen).await, (2, 3));
    let stats = wait_stats(&pool, "three workers running a task each", |s| {
        s.running == 3 && s.queued == 3
    })
    .await;
    assert_eq!(stats.workers.len(), 3, "never above max: {stats:?}");
    assert_eq!(pool.size(), 3);
    // Released: every task ends, then the idle workers are drained one by
    // one down to min.
    std::fs::write(&release, b"").unwrap();
    let mut values = BTreeSet::new();
    for call in calls {
        assert!(
            values.insert(call.await.unwrap().unwrap()),
            "one outcome per task"
        );
    }
    assert_eq!(values, (0..6).collect());
    assert_eq!(next_resized(&mut events, &mut seen).await, (3, 2));
    assert_eq!(next_resized(&mut events, &mut seen).await, (2, 1));
    wait_full(&pool, 1).await;
    assert_eq!(pool.size(), 1);
    assert_eq!(pool.call(Job::Echo(7)).await.unwrap(), 7);
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.crashes, stats.retried), (7, 0, 0));
    pool.shutdown(drain()).await;
    while let Some(event) = events.try_recv() {
        seen.push(event);
    }
    // The shrinking drained workers (none was killed), and nothing resized
    // after the pool reached min.
    let mut drained = 0;
    for event in &seen {
        match event {
            PoolEvent::WorkerExited { cause, .. } => {
                assert_eq!(*cause, ExitCause::Drained);
                drained += 1;
            }
            PoolEvent::Resized { from, to } => panic!("resized {from} -> {to} at min"),
            _ => {}
        }
    }
    assert_eq!(drained, 3, "two removed by the autoscaler, one at shutdown");
    base.assert_clean().await;
}
