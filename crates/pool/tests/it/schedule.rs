//! A property over real processes: a random schedule of submissions,
//! cancellations, crashes, hangs and recycles. Every call ends (none hangs),
//! each with one outcome, and the statistics agree with what callers saw.
//!
//! The same law is checked over thousands of schedules, without processes, on
//! the pool's pure core (`src/core.rs`); this test checks that the shell keeps it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::Job;
use forkyard_pool::{FailureKind, ShutdownMode};
use proptest::prelude::*;

use crate::support::{Baseline, DEADLINE, builder, sigkill, worker_pids};

#[derive(Debug, Clone)]
enum Step {
    Call(Job),
    /// Abort the n-th call still running (the caller gives up).
    Cancel(usize),
    /// SIGKILL the n-th worker.
    Kill(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop_oneof![
            (0u64..100).prop_map(Job::Echo),
            (0u64..30, 0u64..100).prop_map(|(ms, value)| Job::Sleep { ms, value }),
            Just(Job::Fail("no".into())),
            Just(Job::Panic),
            Just(Job::Crash),
            Just(Job::Exit0),
            Just(Job::Hang),
        ].prop_map(Step::Call),
        1 => any::<usize>().prop_map(Step::Cancel),
        1 => any::<usize>().prop_map(Step::Kill),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn every_call_ends_and_the_counts_add_up(steps in proptest::collection::vec(step(), 1..40), recycle in 1u64..6) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let base = Baseline::take().await;
            let pool = builder(&[])
                .workers(2)
                .max_in_flight_per_worker(2)
                .retries(1)
                .task_timeout(Duration::from_millis(500))
                .recycle_after_tasks(recycle)
                .backoff(forkyard_supervise::Backoff::fixed(Duration::from_millis(5)))
                .build()
                .await
                .unwrap();
            let mut calls = Vec::new();
            for step in steps {
                match step {
                    Step::Call(job) => {
                        let pool = pool.clone();
                        calls.push(tokio::spawn(async move { pool.call(job).await }));
                    }
                    Step::Cancel(n) => {
                        let live: Vec<usize> = (0..calls.len()).filter(|&i| !calls[i].is_finished()).collect();
                        if !live.is_empty() {
                            calls[live[n % live.len()]].abort();
                        }
                    }
                    Step::Kill(n) => {
                        let pids = worker_pids(&pool).await;
                        if !pids.is_empty() {
                            sigkill(pids[n % pids.len()]);
                        }
                    }
                }
            }
            let mut ok = 0u64;
            let mut failed: BTreeMap<FailureKind, u64> = BTreeMap::new();
            let mut aborted = 0u64;
            for call in calls {
                match tokio::time::timeout(DEADLINE, call).await.expect("a call hung") {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(e)) => *failed.entry(e.kind().expect("a ran-and-failed kind")).or_default() += 1,
                    Err(join) if join.is_cancelled() => aborted += 1,
                    Err(join) => panic!("call task failed: {join}"),
                }
            }
            // Callers that were not aborted saw exactly what the statistics
            // count. An aborted caller may lose the race with its own outcome
            // (the reply arrived, the caller was gone), so each aborted call
            // lands in at most one bucket: completed or failed beyond what
            // callers saw, cancelled, still queued or running (its result to be
            // dropped), or nowhere if it was aborted before it was submitted.
            let stats = pool.stats();
            let seen = ok + failed.values().sum::<u64>();
            assert!(stats.completed >= ok, "{stats:?}");
            for (kind, n) in &failed {
                assert!(stats.failed.get(kind).copied().unwrap_or(0) >= *n, "{kind:?}: {stats:?}");
            }
            let unseen = stats.completed + stats.failed_total() - seen;
            let pending = (stats.queued + stats.running) as u64;
            assert!(unseen + stats.cancelled + pending <= aborted, "aborted {aborted}: {stats:?}");
            assert_eq!(stats.submitted, stats.completed + stats.failed_total() + stats.cancelled + pending);
            let report = pool.shutdown(ShutdownMode::Cancel { grace: Duration::from_secs(5) }).await;
            let after = report.stats.unwrap();
            assert_eq!((after.queued, after.running), (0, 0));
            assert_eq!(after.submitted, after.completed + after.failed_total() + after.cancelled);
            base.assert_clean().await;
        });
    }
}
