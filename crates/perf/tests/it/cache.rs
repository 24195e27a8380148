//! The cache: single flight, errors, and counters that add up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use forkyard_perf::{Cached, FnBackend};
use forkyard_pool::{PoolError, ShutdownMode};
use proptest::prelude::*;

use crate::job::Job;
use crate::support::{Baseline, builder};
use forkyard_testkit::wait_for;

const GRACE: ShutdownMode = ShutdownMode::Drain {
    grace: Duration::from_secs(10),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_of_one_missing_key_run_it_once() {
    let base = Baseline::take().await;
    let pool = builder().workers(2).build().await.unwrap();
    let cached = Cached::builder(pool.clone()).max_bytes(1 << 20).build();
    // The task takes a while, so that most callers arrive while it runs.
    let calls: Vec<_> = (0..1_000)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { cached.call(Job::Slow { key: 7, ms: 200 }).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    // Every caller got the one execution's answer, counted by the worker.
    assert!(answers.iter().all(|a| a == &answers[0]), "one answer");
    assert_eq!(answers[0].key, 7);
    assert_eq!(answers[0].executed, 1, "the worker ran it once");
    let s = cached.stats();
    assert_eq!(s.misses, 1);
    assert_eq!(s.executions, 1);
    assert_eq!(s.hits + s.coalesced, 999);
    assert_eq!(s.calls, 1_000);
    assert_eq!(pool.stats().completed, 1, "one task reached the pool");
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_not_cached_unless_a_negative_ttl_is_set() {
    let base = Baseline::take().await;
    let pool = builder().workers(1).build().await.unwrap();
    let plain = Cached::builder(pool.clone()).build();
    for _ in 0..3 {
        let e = plain.call(Job::Fail { key: 1 }).await.unwrap_err();
        assert!(matches!(&*e, PoolError::Task(m) if m.message() == "key 1 fails"));
    }
    assert_eq!(plain.stats().executions, 3, "each failing call runs again");
    let negative = Cached::builder(pool.clone())
        .negative_ttl(Duration::from_secs(3600))
        .build();
    for _ in 0..3 {
        negative.call(Job::Fail { key: 1 }).await.unwrap_err();
    }
    let s = negative.stats();
    assert_eq!((s.executions, s.hits, s.negative_inserts), (1, 2, 1));
    assert_eq!(pool.stats().failed_total(), 4);
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_requests_always_reach_the_pool() {
    let base = Baseline::take().await;
    let pool = builder().workers(1).build().await.unwrap();
    let cached = Cached::builder(pool.clone())
        .cacheable(|job: &Job| !matches!(job, Job::Slow { key: 0, .. }))
        .build();
    for _ in 0..3 {
        cached.call(Job::Slow { key: 0, ms: 0 }).await.unwrap();
        cached.call(Job::Slow { key: 1, ms: 0 }).await.unwrap();
    }
    let s = cached.stats();
    assert_eq!((s.bypassed, s.misses, s.hits, s.executions), (3, 1, 2, 4));
    pool.shutdown(GRACE).await;
    base.assert_clean().await;
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` concurrent calls of one key (failing keys fail).
    Call { key: u8, n: u8 },
    /// Invalidate one key.
    Evict(u8),
    /// Invalidate everything.
    EvictAll,
    /// Let entries of the short-lived cache expire.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, 1u8..6).prop_map(|(key, n)| Op::Call { key, n }),
        1 => (0u8..24).prop_map(Op::Evict),
        1 => Just(Op::EvictAll),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under any schedule of calls, evictions and expirations, the counters
    /// add up: every call is a hit, a miss or a coalesced wait; every miss is
    /// one execution; every insert is held or was removed for a cause.
    #[test]
    fn counters_add_up_under_any_schedule(
        ops in proptest::collection::vec(op(), 1..40),
        negative in any::<bool>(),
        small in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let runs = Arc::new(AtomicU64::new(0));
            let counted = runs.clone();
            let backend = FnBackend(move |key: u8| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                    if key.is_multiple_of(5) {
                        Err(PoolError::Task(format!("key {key}").into()))
                    } else {
                        Ok(vec![key; 100])
                    }
                }
            });
            let mut b = Cached::with_backend(backend)
                .max_bytes(if small { 600 } else { 1 << 20 })
                .ttl(Duration::from_millis(20));
            if negative {
                b = b.negative_ttl(Duration::from_millis(5));
            }
            let cached = b.build();
            let mut calls = 0u64;
            for op in ops {
                match op {
                    Op::Call { key, n } => {
                        let all: Vec<_> = (0..n).map(|_| { let c = cached.clone(); tokio::spawn(async move { c.call(key).await }) }).collect();
                        for call in all {
                            let r = call.await.unwrap();
                            prop_assert_eq!(r.is_err(), key.is_multiple_of(5));
                        }
                        calls += u64::from(n);
                    }
                    Op::Evict(key) => cached.invalidate(&key).await,
                    Op::EvictAll => cached.invalidate_all(),
                    Op::Expire => {
                        wait_for("every entry to expire", || {
                            match (0..24u8).find(|k| cached.contains(k)) {
                                Some(k) => Err(format!("key {k} still cached")),
                                None => Ok(()),
                            }
                        })
                        .await
                    }
                }
            }
            cached.run_pending_tasks().await;
            let s = cached.stats();
            prop_assert_eq!(s.calls, calls);
            prop_assert_eq!(s.hits + s.misses + s.coalesced + s.bypassed, calls);
            prop_assert_eq!(s.executions, s.misses + s.bypassed);
            prop_assert_eq!(s.executions, runs.load(Ordering::Relaxed));
            prop_assert_eq!(
                s.inserts,
                s.entries + s.evicted_size + s.evicted_expired + s.evicted_explicit + s.replaced,
                "{:?}", s
            );
            prop_assert!(s.bytes <= s.max_bytes);
            Ok(())
        })?;
    }
}
