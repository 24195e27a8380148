//! A worker in Python, over the JSON-lines codec: same pool, same guarantees.

use std::time::Duration;

use forkyard_ipc::Codec;
use forkyard_pool::{Pool, PoolError, ShutdownMode};

use crate::job::Job;
use crate::support::Baseline;

fn python_pool() -> forkyard_pool::Builder<Job, u64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pool_worker.py");
    Pool::<Job, u64>::builder()
        .command(move || {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg(script);
            cmd
        })
        .codec(Codec::JsonLines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_answers_fails_and_crashes_like_any_other() {
    let base = Baseline::take().await;
    let pool = python_pool().workers(2).build().await.unwrap();
    assert_eq!(pool.call(Job::Echo(42)).await.unwrap(), 42);
    assert_eq!(pool.call(Job::Sleep { ms: 5, value: 7 }).await.unwrap(), 7);
    match pool.call(Job::Fail("bad input".into())).await {
        Err(PoolError::Task(message)) => assert_eq!(message, "ValueError: bad input"),
        other => panic!("expected a task error, got {other:?}"),
    }
    assert!(pool.call(Job::Pid).await.unwrap() > 1);
    match pool.call(Job::Crash).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => {
            assert_eq!(exit.signal(), Some(forkyard_child::Signal::ABRT))
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    // Many in flight: every answer comes back to its caller.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    // The crashed worker's replacement must be up before the drain, or the
    // shutdown kills it while it is still starting.
    crate::support::wait_full(&pool, 2).await;
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(10),
        })
        .await;
    assert!(
        report.workers.iter().all(|w| w.exit.success()),
        "drained python workers exit 0"
    );
    base.assert_clean().await;
}
