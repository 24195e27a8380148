//! A bounded queue: `call` waits for room, `try_call` says `QueueFull`.

use crate::job::Job;
use forkyard_pool::PoolError;

use crate::support::{Fixture, wait_stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_call_says_queue_full_and_call_waits_for_room() {
    let f = Fixture::start(|b| b.workers(1).queue_capacity(2)).await;
    let pool = &f.pool;
    // One running, two queued, all held: the queue is full.
    let mut calls = Vec::new();
    for value in 0..3 {
        let caller = pool.clone();
        let job = f.held(value);
        calls.push(tokio::spawn(async move { caller.call(job).await }));
        wait_stats(pool, "the call to be submitted", |s| {
            s.running + s.queued == value as usize + 1
        })
        .await;
    }
    assert!(matches!(
        pool.try_call(Job::Echo(9)).await,
        Err(PoolError::QueueFull)
    ));
    // `call` waits for room instead (it is pending while the queue is
    // full), and gets its answer once the held tasks end.
    {
        let mut call = std::pin::pin!(pool.call(Job::Echo(9)));
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(pool.stats().submitted, 3, "not in the queue yet");
        f.release();
        assert_eq!(call.await.unwrap(), 9);
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    let stats = pool.stats();
    assert_eq!(
        stats.submitted, 4,
        "the refused try_call was never submitted"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_sends_several_tasks_to_a_worker_and_picks_the_least_loaded() {
    let f = Fixture::start(|b| b.workers(2).max_in_flight_per_worker(4)).await;
    let pool = &f.pool;
    let calls: Vec<_> = (0..8)
        .map(|value| {
            let pool = pool.clone();
            let job = f.held(value);
            tokio::spawn(async move { pool.call(job).await })
        })
        .collect();
    let s = wait_stats(pool, "all eight running", |s| s.running == 8).await;
    let loads: Vec<usize> = s.workers.iter().map(|w| w.in_flight).collect();
    assert_eq!(
        loads,
        vec![4, 4],
        "least-loaded dispatch balances the two workers"
    );
    f.release();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    f.finish().await;
}
