//! A bounded queue: `call` waits for room, `try_call` says `QueueFull`.

use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{PoolError, ShutdownMode};

use crate::support::{Baseline, builder, wait_stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_call_says_queue_full_and_call_waits_for_room() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .queue_capacity(2)
        .build()
        .await
        .unwrap();
    // One running, two queued: the queue is full.
    let mut calls = Vec::new();
    for value in 0..3 {
        let caller = pool.clone();
        calls.push(tokio::spawn(async move {
            caller.call(Job::Sleep { ms: 200, value }).await
        }));
        wait_stats(&pool, "the call to be submitted", |s| {
            s.running + s.queued == value as usize + 1
        })
        .await;
    }
    assert!(matches!(
        pool.try_call(Job::Echo(9)).await,
        Err(PoolError::QueueFull)
    ));
    // `call` waits for room instead, and gets its answer.
    assert_eq!(pool.call(Job::Echo(9)).await.unwrap(), 9);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    let stats = pool.stats();
    assert_eq!(
        stats.submitted, 4,
        "the refused try_call was never submitted"
    );
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    })
    .await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_sends_several_tasks_to_a_worker_and_picks_the_least_loaded() {
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(2)
        .max_in_flight_per_worker(4)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..8)
        .map(|value| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Sleep { ms: 500, value }).await })
        })
        .collect();
    let s = wait_stats(&pool, "all eight running", |s| s.running == 8).await;
    let loads: Vec<usize> = s.workers.iter().map(|w| w.in_flight).collect();
    assert_eq!(
        loads,
        vec![4, 4],
        "least-loaded dispatch balances the two workers"
    );
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    })
    .await;
    base.assert_clean().await;
}
