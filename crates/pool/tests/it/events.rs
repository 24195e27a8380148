//! The event stream: every task and worker step once, in order; crashes
//! reported exactly once; a subscriber that never reads never stalls the pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use forkyard_pool::{ExitCause, FailureKind, Outcome, PoolError, PoolEvent, ShutdownMode};

use crate::job::Job;
use crate::support::{Baseline, builder};

const GRACE: ShutdownMode = ShutdownMode::Drain {
    grace: Duration::from_secs(10),
};

/// Everything the subscription holds now (the pool sends under its lock, so
/// whatever happened before a call returned is already there).
fn drain(sub: &mut forkyard_pool::Subscription) -> Vec<PoolEvent> {
    std::iter::from_fn(|| sub.try_recv()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_is_reported_exactly_once_with_its_exit() {
    let base = Baseline::take().await;
    let b = builder(&[])
        .workers(2)
        .retries(1)
        .backoff(forkyard_supervise::Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(20),
        ))
        .breaker(forkyard_supervise::BreakerConfig::new(
            100,
            Duration::from_secs(30),
        ));
    let mut sub = b.subscribe();
    let pool = b.build().await.unwrap();
    // Crashing tasks (each crashes twice: its run and its retry) among good ones.
    let calls: Vec<_> = (0..12u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let job = if i % 3 == 0 { Job::Crash } else { Job::Echo(i) };
                pool.call(job).await
            })
        })
        .collect();
    let mut crashed_calls = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(PoolError::WorkerCrashed { .. }) => crashed_calls += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let report = pool.shutdown(GRACE).await;
    let stats = report.stats.unwrap();
    base.assert_clean().await;

    let events = drain(&mut sub);
    assert!(
        !events.iter().any(|e| matches!(e, PoolEvent::Lagged { .. })),
        "nothing lost"
    );
    let mut exits: BTreeMap<u64, usize> = BTreeMap::new();
    let mut crashes = 0;
    for e in &events {
        if let PoolEvent::WorkerExited {
            worker,
            cause,
            exit,
        } = e
        {
            *exits.entry(*worker).or_default() += 1;
            if *cause == ExitCause::Crashed {
                crashes += 1;
                assert!(!exit.success(), "a crash is a failed exit: {exit}");
                assert!(exit.ended_by().is_none(), "not ended by the pool: {exit}");
            }
        }
    }
    assert_eq!(crashed_calls, 4);
    assert_eq!(crashes, 8, "two runs of each of the 4 crashing tasks");
    assert_eq!(crashes, stats.crashes);
    assert!(
        exits.values().all(|&n| n == 1),
        "every worker exits once: {exits:?}"
    );
    let spawned: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            PoolEvent::WorkerSpawned { worker, .. } => Some(*worker),
            _ => None,
        })
        .collect();
    let exited: BTreeSet<u64> = exits.keys().copied().collect();
    assert_eq!(spawned, exited, "every worker spawned is reported ended");
    let retried = events
        .iter()
        .filter(|e| matches!(e, PoolEvent::Retried { .. }))
        .count();
    assert_eq!(retried as u64, stats.retried);
    assert_eq!(retried, 4);
    let crashed_outcomes = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PoolEvent::Finished {
                    outcome: Outcome::Failed(FailureKind::WorkerCrashed),
                    ..
                }
            )
        })
        .count();
    assert_eq!(crashed_outcomes, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_is_submitted_dispatched_and_finished_once_in_that_order() {
    let base = Baseline::take().await;
    let b = builder(&[]).workers(2).max_in_flight_per_worker(4);
    let mut sub = b.subscribe();
    let pool = b.build().await.unwrap();
    let calls: Vec<_> = (0..200u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    pool.shutdown(GRACE).await;
    base.assert_clean().await;

    let events = drain(&mut sub);
    // Per task, the steps in order; per worker, spawned before ready before exited.
    let mut tasks: BTreeMap<u64, Vec<&'static str>> = BTreeMap::new();
    let mut workers: BTreeMap<u64, Vec<&'static str>> = BTreeMap::new();
    for e in &events {
        match e {
            PoolEvent::Submitted { task } => tasks.entry(*task).or_default().push("submitted"),
            PoolEvent::Dispatched {
                task,
                attempt,
                queue_wait,
                ..
            } => {
                assert_eq!(*attempt, 1);
                assert!(*queue_wait < Duration::from_secs(3600));
                tasks.entry(*task).or_default().push("dispatched");
            }
            PoolEvent::Finished {
                task,
                outcome,
                worker,
                service,
                end_to_end,
            } => {
                assert_eq!(*outcome, Outcome::Completed);
                assert!(worker.is_some());
                assert!(service.unwrap() <= *end_to_end);
                tasks.entry(*task).or_default().push("finished");
            }
            PoolEvent::WorkerSpawned { worker, .. } => {
                workers.entry(*worker).or_default().push("spawned")
            }
            PoolEvent::WorkerReady { worker, .. } => {
                workers.entry(*worker).or_default().push("ready")
            }
            PoolEvent::WorkerExited { worker, cause, .. } => {
                assert_eq!(*cause, ExitCause::Drained);
                workers.entry(*worker).or_default().push("exited")
            }
            PoolEvent::WorkerSampled { .. } => {}
            // The drain at the end.
            PoolEvent::ShuttingDown { drain, .. } => assert!(*drain),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(tasks.len(), 200);
    for (task, steps) in &tasks {
        assert_eq!(
            steps,
            &["submitted", "dispatched", "finished"],
            "task {task}"
        );
    }
    assert_eq!(workers.len(), 2);
    for (worker, steps) in &workers {
        assert_eq!(steps, &["spawned", "ready", "exited"], "worker {worker}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_never_stalls_the_pool() {
    let base = Baseline::take().await;
    let b = builder(&[]).workers(2).event_capacity(16);
    let mut sub = b.subscribe();
    let pool = b.build().await.unwrap();
    // Far more events than the subscriber can hold, and nobody reading.
    let calls: Vec<_> = (0..2_000u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(pool.stats().completed, 2_000);
    // The subscriber learns how much it missed, then reads the newest events.
    match sub.try_recv() {
        Some(PoolEvent::Lagged { missed }) => assert!(missed >= 2_000, "missed {missed}"),
        other => panic!("expected a lag marker, got {other:?}"),
    }
    let rest = drain(&mut sub);
    assert!(
        !rest.is_empty() && rest.len() <= 16,
        "{} events",
        rest.len()
    );
    pool.shutdown(GRACE).await;
    drop(sub);
    base.assert_clean().await;
}
