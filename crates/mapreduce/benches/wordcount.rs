//! Criterion: word count over 8 MB of Zipf text, the engine (2 workers)
//! against a single-threaded `HashMap`, and the stable partition function.
//! Side-by-side figures with Python and `sort | uniq -c` are in
//! `examples/compare.rs`; `cargo xtask bench mapreduce` runs both.

#[path = "../examples/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use forkyard_mapreduce::jobs::WordCount;
use forkyard_mapreduce::{LineFiles, MapReduce};
use rustc_hash::FxHashMap;

fn main() {
    forkyard_mapreduce::serve_if_worker::<WordCount>();
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus.txt");
    let bytes = 8_000_000;
    common::zipf_corpus(&corpus, bytes, 50_000, 1).expect("corpus");

    let mut group = c.benchmark_group("wordcount 8 MB");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("single-threaded HashMap (baseline)", |b| {
        b.iter(|| {
            let data = std::fs::read(&corpus).expect("read");
            let mut counts: FxHashMap<&[u8], u64> = FxHashMap::default();
            for w in data
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
            {
                *counts.entry(w).or_insert(0) += 1;
            }
            black_box(counts.len())
        })
    });
    let mut n = 0;
    // No target here: at 8 MB the job is mostly fixed costs (two worker
    // processes started, and each of the 8 splits' ~40,000 distinct keys
    // inserted, sorted and written per split, where the single thread
    // inserts each key once). The target, 1.7x the single thread,
    // is for 200 MB: `examples/compare.rs` measures it.
    group.bench_function("forkyard-mapreduce, 2 workers", |b| {
        b.iter(|| {
            n += 1;
            let out = dir.path().join(format!("out-{n}"));
            let report = MapReduce::new(WordCount::default())
                .input(LineFiles::new([&corpus]))
                .out_dir(&out)
                .workers(2)
                .reducers(4)
                .split_size(1 << 20)
                .run_blocking()
                .expect("job");
            std::fs::remove_dir_all(&out).expect("cleanup");
            black_box(report.distinct_keys())
        })
    });
    group.finish();

    let keys: Vec<Vec<u8>> = (0..1000).map(|i| common::word(i).into_bytes()).collect();
    c.bench_function("partition of 1000 keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| forkyard_mapreduce::partition(k, 64))
                .sum::<u32>()
        })
    });
    c.final_summary();
}
