//! The engine's results against a single-threaded reference.

use crate::jobs::{Collect, Count};
use crate::support::*;
use forkyard_mapreduce::{OutputFormat, partition};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_matches_a_single_threaded_count() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let a = text(1, 3000, 400);
    let b = text(2, 1000, 50);
    let inputs = [
        write(dir.path(), "a.txt", &a),
        write(dir.path(), "b.txt", &b),
    ];
    let out = dir.path().join("out");
    let report = job(Count::default(), &inputs, &out).run().await.unwrap();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let counts = reference_count(&all, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    assert_eq!(report.records(), 4000);
    assert_eq!(report.distinct_keys(), counts.len() as u64);
    assert!(report.map.tasks > 2, "several splits: {}", report.map.tasks);
    assert_eq!(report.map.retries + report.reduce.retries, 0);
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_memory_bound_spills_and_gives_the_same_output() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(3, 3000, 2000);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let report = job(Count::default(), &inputs, &out)
        .memory(2 << 10)
        .split_size(32 << 10)
        .run()
        .await
        .unwrap();
    assert!(
        report.map.spills > report.map.tasks as u64,
        "spills: {}",
        report.map.spills
    );
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_sees_each_key_once_with_all_its_values() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(4, 2000, 300);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    // No combiner, and spills: every value must travel on its own.
    job(Collect, &inputs, &out)
        .memory(4 << 10)
        .run()
        .await
        .unwrap();
    let mut lens: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for line in data.split(|&b| b == b'\n') {
        for w in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            lens.entry(w.to_vec()).or_default().push(line.len() as u64);
        }
    }
    let rows = lens
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let v: Vec<String> = v.iter().map(u64::to_string).collect();
            (k, v.join(","))
        })
        .collect();
    assert_output(&out, &expected_parts(&rows, 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_output() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [write(dir.path(), "in.txt", b"b a\na\n")];
    let out = dir.path().join("out");
    job(Count::default(), &inputs, &out)
        .reducers(1)
        .format(OutputFormat::JsonLines)
        .run()
        .await
        .unwrap();
    let got = std::fs::read_to_string(out.join("part-00000")).unwrap();
    assert_eq!(
        got,
        "{\"key\":[97],\"value\":2}\n{\"key\":[98],\"value\":1}\n"
    );
}

#[test]
fn partitioning_is_stable_across_processes() {
    for key in ["", "a", "hello", "w123", "\u{e9}t\u{e9}"] {
        for r in [1u32, 3, 4, 64] {
            let out = std::process::Command::new(fixture())
                .args(["partition", key, &r.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success());
            let theirs: u32 = String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(
                theirs,
                partition(&key.as_bytes().to_vec(), r),
                "{key:?} mod {r}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_run_again_runs_nothing_and_keeps_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = text(5, 500, 100);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let first = job(Count::default(), &inputs, &out).run().await.unwrap();
    let again = job(Count::default(), &inputs, &out).run().await.unwrap();
    assert_eq!(again.map.attempts + again.reduce.attempts, 0);
    assert_eq!(again.map.resumed, first.map.tasks);
    assert_eq!(again.reduce.resumed, 3);
    assert_eq!(again.records(), first.records());
    assert_eq!(again.distinct_keys(), first.distinct_keys());
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_another_source_go_through_the_same_engine() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(6, 400, 60);
    let records: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let out = dir.path().join("out");
    let exe = fixture();
    let report = forkyard_mapreduce::MapReduce::new(Count::default())
        .input(forkyard_mapreduce::Records::new("generated", records))
        .out_dir(&out)
        .workers(2)
        .reducers(3)
        .split_size(1024)
        .worker_command(move || std::process::Command::new(&exe))
        .run()
        .await
        .unwrap();
    assert!(report.map.tasks > 3);
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    // The report is JSON too, and the job directory keeps it.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["reduce"]["keys"], counts.len() as u64);
    let kept = std::fs::read_to_string(out.join("_forkyard/report.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&kept).unwrap()["map"]["tasks"],
        json["map"]["tasks"]
    );
    base.assert_clean().await;
}
