//! Batches: `map` and `map_unordered` over real workers: order, per-item
//! outcomes, a worker dying mid-chunk, chunks too large for a frame.

use futures::StreamExt;

use crate::job::Job;
use crate::support::{Fixture, worker_pids};
use forkyard_pool::{FailureKind, MapOptions, PoolError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_gives_every_result_in_order_and_a_failed_item_does_not_fail_the_stream() {
    let f = Fixture::start(|b| b.workers(2).max_in_flight_per_worker(2)).await;
    let pool = &f.pool;
    let items = (0..500u64).map(|i| {
        if i % 97 == 0 {
            Job::Fail(format!("item {i}"))
        } else {
            Job::Echo(i)
        }
    });
    let options = MapOptions {
        chunk_size: Some(16),
        max_in_flight: Some(64),
        ..MapOptions::default()
    };
    let results: Vec<_> = pool.map_with(items, options).collect().await;
    assert_eq!(results.len(), 500);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u64),
            Err(PoolError::Task(m)) => {
                assert_eq!(i % 97, 0);
                assert_eq!(m.to_string(), format!("item {i}"));
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.submitted, 500, "items are counted one by one");
    assert_eq!(stats.completed, 500 - 6);
    assert_eq!(stats.failed.get(&FailureKind::Task), Some(&6));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_unordered_gives_each_index_exactly_once() {
    let f = Fixture::start(|b| b.workers(2).max_in_flight_per_worker(4)).await;
    let pool = &f.pool;
    // Uneven items, so chunks finish out of order; an iterator with no
    // length hint gets the automatic chunk for unknown lengths.
    let items = (0..300u64).filter(|_| true).map(|i| Job::Sleep {
        ms: i % 3,
        value: i,
    });
    let mut seen = vec![false; 300];
    let mut stream = pool.map_unordered(items);
    while let Some((index, result)) = stream.next().await {
        assert_eq!(result.unwrap(), index as u64);
        assert!(
            !std::mem::replace(&mut seen[index], true),
            "index {index} twice"
        );
    }
    assert!(seen.iter().all(|&s| s));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_answers_part_of_a_chunk_then_dies_loses_no_item_and_runs_none_twice() {
    let f = Fixture::start(|b| b.workers(2).retries(1)).await;
    let path = |name: &str| f.dir.path().join(name).to_string_lossy().into_owned();
    let pool = &f.pool;
    // A worker sends a chunk's finished items as soon as one has to wait:
    // a, b and the sleep go out when the WaitFile starts waiting. The test
    // waits for those three results before it releases the WaitFile, so the
    // crash right after it cannot come before the parent has them, however
    // slow anything is. The WaitFile itself may or may not have been sent
    // before the crash: it answers at once when re-run (its file is there),
    // and the Touch items fail if they run twice.
    let release = path("release");
    let items = vec![
        Job::Touch { path: path("a") },
        Job::Touch { path: path("b") },
        Job::Sleep { ms: 1, value: 9 },
        Job::WaitFile {
            path: release.clone(),
            value: 3,
        },
        Job::CrashOnce {
            marker: path("crashed"),
        },
        Job::Touch { path: path("c") },
    ];
    let options = MapOptions {
        chunk_size: Some(6),
        ..MapOptions::default()
    };
    let mut stream = pool.map_with(items, options);
    let mut results = Vec::new();
    while results.len() < 3 {
        let next = tokio::time::timeout(crate::support::DEADLINE, stream.next())
            .await
            .expect("the items before the WaitFile are sent while it waits")
            .expect("the stream goes on");
        results.push(next.expect("a, b and the sleep succeed"));
    }
    assert!(
        !f.dir.path().join("crashed").exists(),
        "nothing crashed before the release"
    );
    std::fs::write(&release, b"").unwrap();
    while let Some(next) = stream.next().await {
        results.push(next.expect("every item succeeds, none runs twice"));
    }
    // A Touch that ran twice would have failed: its file existed.
    assert_eq!(results, vec![1, 1, 9, 3, 2, 1]);
    let stats = pool.stats();
    assert_eq!(stats.crashes, 1);
    assert_eq!(stats.retried, 1, "the chunk's rest re-ran once");
    f.finish().await;
}

/// A chunk's items that are done go out as soon as a later item has to
/// wait, not when it ends: the first item's result reaches the caller while
/// the second waits for a file the test creates only after it has that
/// result (a deadline against a stuck worker, no timing). Then the rest, in
/// order, from the same chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_streams_its_finished_items_while_a_later_one_waits() {
    let f = Fixture::start(|b| b.workers(1)).await;
    let release = f.dir.path().join("release");
    let pool = &f.pool;
    let wait = |value| Job::WaitFile {
        path: release.to_string_lossy().into_owned(),
        value,
    };
    let items = vec![Job::Echo(1), Job::Echo(2), wait(3), Job::Echo(4), wait(5)];
    let options = MapOptions {
        chunk_size: Some(5),
        ..MapOptions::default()
    };
    let mut stream = pool.map_with(items, options);
    for expected in [1, 2] {
        let next = tokio::time::timeout(crate::support::DEADLINE, stream.next())
            .await
            .expect("items 1 and 2 arrive while item 3 waits")
            .expect("the stream goes on");
        assert_eq!(next.unwrap(), expected);
    }
    assert!(!release.exists(), "released only now");
    std::fs::write(&release, b"").unwrap();
    let rest: Vec<u64> = stream.map(Result::unwrap).collect().await;
    assert_eq!(rest, [3, 4, 5]);
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.completed), (5, 5));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_too_large_for_a_frame_is_split_and_a_single_item_that_cannot_fit_fails_alone() {
    let f = Fixture::start(|b| b.workers(1)).await;
    let pool = &f.pool;
    let pid = worker_pids(pool).await;
    // ipc's frame limit is 16 MiB: four items of 6 MiB do not fit in one
    // chunk, two do; one of 17 MiB fits nowhere.
    let big = |c: char, mib: usize| Job::Fail(c.to_string().repeat(mib << 20));
    let items = vec![
        big('a', 6),
        big('b', 6),
        big('c', 6),
        big('d', 6),
        big('e', 17),
    ];
    let options = MapOptions {
        chunk_size: Some(8),
        ..MapOptions::default()
    };
    let results: Vec<_> = pool.map_with(items, options).collect().await;
    assert_eq!(results.len(), 5);
    for (r, c) in results[..4].iter().zip(['a', 'b', 'c', 'd']) {
        match r {
            Err(PoolError::Task(m)) => {
                assert!(m.message().len() == 6 << 20 && m.message().starts_with(c))
            }
            other => panic!("expected the item's own error, got {other:?}"),
        }
    }
    match &results[4] {
        Err(PoolError::Unsendable(cause)) => {
            assert!(cause.to_string().contains("exceeds the maximum"), "{cause}")
        }
        other => panic!("expected Unsendable, got {other:?}"),
    }
    // A single call too large fails alone too, and the worker lives on.
    match pool.call(big('f', 17)).await {
        Err(PoolError::Unsendable(_)) => {}
        other => panic!("expected Unsendable, got {other:?}"),
    }
    assert_eq!(pool.call(Job::Echo(5)).await.unwrap(), 5);
    assert_eq!(worker_pids(pool).await, pid, "no worker was lost");
    assert_eq!(pool.stats().crashes, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_cancels_the_rest_of_its_batch() {
    let f = Fixture::start(|b| b.workers(1).max_in_flight_per_worker(2)).await;
    let pool = &f.pool;
    let items = (0..10_000u64).map(|i| Job::Sleep { ms: 1, value: i });
    let options = MapOptions {
        chunk_size: Some(4),
        max_in_flight: Some(16),
        ..MapOptions::default()
    };
    let mut stream = pool.map_with(items, options);
    for i in 0..8u64 {
        assert_eq!(stream.next().await.unwrap().unwrap(), i);
    }
    drop(stream);
    // The window held the batch back: far fewer than 10,000 items ever
    // entered the pool (at most those taken, the stream's buffer of 4 runs,
    // and the window), and what was in flight ends.
    let stats = crate::support::wait_stats(pool, "the batch's rest cancelled", |s| {
        s.queued == 0 && s.running == 0
    })
    .await;
    assert!(stats.submitted <= 8 + 4 * 4 + 16, "{stats:?}");
    assert_eq!(
        stats.completed + stats.cancelled + stats.failed_total(),
        stats.submitted
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_token_ends_a_batch_with_cancelled_items_and_nothing_lost() {
    let f = Fixture::start(|b| b.workers(2).max_in_flight_per_worker(2)).await;
    let pool = &f.pool;
    let token = forkyard_pool::CancelToken::new();
    let options = MapOptions {
        chunk_size: Some(4),
        max_in_flight: Some(32),
        call: forkyard_pool::CallOptions {
            cancel: Some(token.clone()),
            ..Default::default()
        },
    };
    let items = (0..1_000u64).map(|i| Job::Sleep { ms: 1, value: i });
    let mut stream = pool.map_with(items, options);
    let mut next = 0u64;
    while next < 10 {
        assert_eq!(stream.next().await.unwrap().unwrap(), next);
        next += 1;
    }
    token.cancel();
    // What was taken from the iterator still gets one outcome each, in
    // order; then the stream ends.
    let (mut ok, mut cancelled) = (0, 0);
    while let Some(r) = stream.next().await {
        match r {
            Ok(v) => {
                assert_eq!(v, next);
                ok += 1;
            }
            Err(PoolError::Cancelled) => cancelled += 1,
            Err(e) => panic!("{e}"),
        }
        next += 1;
    }
    assert!(next < 1_000, "the batch stopped early");
    assert!(cancelled > 0 || ok > 0);
    let stats = crate::support::wait_stats(pool, "nothing in flight", |s| {
        s.queued == 0 && s.running == 0
    })
    .await;
    assert_eq!(stats.submitted, next, "each item taken has its outcome");
    assert_eq!(
        stats.completed + stats.cancelled + stats.failed_total(),
        stats.submitted
    );
    f.finish().await;
}
