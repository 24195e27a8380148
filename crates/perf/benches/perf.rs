//! What watching and caching cost: pool throughput of tiny tasks with and
//! without a subscribed `Monitor`, and a cached call on a hit against a bare
//! moka `get` of the same key.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forkyard_perf::{Cached, FnBackend, Monitor, MonitorConfig};
use forkyard_pool::{Pool, PoolError, ShutdownMode};

#[path = "../tests/it/job.rs"]
#[allow(dead_code)]
mod job;

use job::{Answer, Job};

const BATCH: u64 = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn pool() -> Pool<Job, Answer> {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_forkyard-perf-fixture"));
    Pool::<Job, Answer>::builder()
        .command(move || std::process::Command::new(&path))
        .workers(2)
        .max_in_flight_per_worker(16)
        .build()
        .await
        .unwrap()
}

async fn batch(pool: &Pool<Job, Answer>) {
    let calls = (0..BATCH).map(|key| pool.call(Job::Echo { key }));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
}

fn monitor_overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("monitor_overhead");
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH));
    // The two pools alternate within one run, so that the machine's load
    // weighs on both alike.
    let bare = rt.block_on(pool());
    let watched = rt.block_on(pool());
    let monitor = {
        let _guard = rt.enter();
        Monitor::start(watched.subscribe(), MonitorConfig::default())
    };
    group.bench_function("pool_without_monitor (baseline)", |b| {
        b.to_async(&rt).iter(|| batch(&bare))
    });
    // bench target: `monitor_overhead/pool_with_monitor` at most 1.05x
    group.bench_function("pool_with_monitor", |b| {
        b.to_async(&rt).iter(|| batch(&watched))
    });
    group.finish();
    assert!(monitor.snapshot().totals.completed > 0);
    drop(monitor);
    for p in [bare, watched] {
        rt.block_on(p.shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(5),
        }));
    }
}

fn cache_hit(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("cache_hit");
    group.measurement_time(Duration::from_secs(3));
    // A backend that must never run once the key is in.
    let cached = Cached::with_backend(FnBackend(|key: u64| async move {
        Ok::<_, PoolError>(vec![key as u8; 1000])
    }))
    .build();
    rt.block_on(cached.call(42)).unwrap();
    let bare: moka::future::Cache<Vec<u8>, Arc<Vec<u8>>> = moka::future::Cache::new(10_000);
    let key = postcard::to_allocvec(&42u64).unwrap();
    rt.block_on(bare.insert(key.clone(), Arc::new(vec![42; 1000])));
    // bench target: `cache_hit/cached_call_hit` at most 3x
    group.bench_function("cached_call_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.call(42).await.unwrap() })
    });
    group.bench_function("bare_moka_get (baseline)", |b| {
        b.to_async(&rt)
            .iter(|| async { bare.get(&key).await.unwrap() })
    });
    group.finish();
    let s = cached.stats();
    assert_eq!(s.executions, 1, "a hit never reaches the backend");
}

criterion_group!(benches, monitor_overhead, cache_hit);
criterion_main!(benches);
