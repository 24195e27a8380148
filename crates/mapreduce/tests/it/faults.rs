//! Crashes, hangs, poison records, stragglers, a killed coordinator: each
//! with real worker processes, each ending with the reference output.

use std::time::Duration;

use crate::jobs::Count;
use crate::support::*;
use forkyard_mapreduce::{Error, Fault, Phase};

fn poisoned(seed: u64, poison: &str, at: &[usize]) -> Vec<u8> {
    let data = text(seed, 1500, 200);
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    lines.pop();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        out.extend_from_slice(l);
        if at.contains(&i) {
            out.extend_from_slice(format!(" {poison}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_map_and_mid_reduce_are_replaced_and_their_tasks_rerun() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(10, 2000, 300);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let report = job(Count::default(), &inputs, &out)
        .inject(Phase::Map, 1, Fault::Kill { at: 10 })
        .inject(Phase::Map, 3, Fault::Kill { at: 0 })
        .inject(Phase::Reduce, 2, Fault::Kill { at: 5 })
        .run()
        .await
        .unwrap();
    assert_eq!(report.map.retries, 2, "{report}");
    assert_eq!(report.reduce.retries, 1, "{report}");
    assert!(report.skipped.is_empty());
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_panics_the_map_function_twice_is_skipped_and_reported() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = poisoned(11, "POISON", &[700]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let poison = Count {
        panic_on: Some("POISON".into()),
        ..Count::default()
    };
    let report = job(poison, &inputs, &out).run().await.unwrap();
    assert_eq!(report.skipped.len(), 1, "{report}");
    let s = &report.skipped[0];
    assert!(s.source.ends_with("in.txt"));
    let line_start = data[..s.position as usize]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    assert_eq!(line_start, 700, "the skipped record is the poisoned line");
    assert!(s.message.contains("a poison record"), "{}", s.message);
    let counts = reference_count(&data, Some("POISON"));
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_crashes_the_worker_is_found_and_skipped() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = poisoned(12, "ABORT", &[100]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let poison = Count {
        abort_on: Some("ABORT".into()),
        ..Count::default()
    };
    let report = job(poison, &inputs, &out).run().await.unwrap();
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(
        report.skipped[0].message.contains("died"),
        "{}",
        report.skipped[0].message
    );
    let counts = reference_count(&data, Some("ABORT"));
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_hangs_the_map_function_is_skipped_after_timeouts() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = poisoned(13, "HANG", &[20]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let poison = Count {
        hang_on: Some("HANG".into()),
        ..Count::default()
    };
    let report = job(poison, &inputs, &out)
        .task_timeout(Duration::from_secs(1))
        .backups(false, Duration::ZERO)
        .run()
        .await
        .unwrap();
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(
        report.skipped[0].message.contains("hung"),
        "{}",
        report.skipped[0].message
    );
    let counts = reference_count(&data, Some("HANG"));
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_skip_limit_the_job_fails_naming_the_records() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = poisoned(14, "POISON", &[5, 900]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let poison = Count {
        panic_on: Some("POISON".into()),
        ..Count::default()
    };
    let err = job(poison, &inputs, &out)
        .max_skipped(1)
        .run()
        .await
        .unwrap_err();
    let Error::TooManyBadRecords {
        count,
        limit,
        records,
    } = &err
    else {
        panic!("wrong error: {err}");
    };
    assert_eq!((*count, *limit), (2, 1));
    assert_eq!(records.matches("in.txt@").count(), 2, "{records}");
    assert!(err.to_string().contains("too many bad records"));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_is_overtaken_by_its_backup() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(15, 2000, 300);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    // The worker of map task 0 stops itself for good: only a backup can
    // finish the phase before the (long) task timeout.
    let report = job(Count::default(), &inputs, &out)
        .inject(Phase::Map, 0, Fault::Stop { at: 3 })
        .inject(Phase::Reduce, 1, Fault::Stop { at: 0 })
        .backups(true, Duration::from_millis(100))
        .task_timeout(Duration::from_secs(600))
        .run()
        .await
        .unwrap();
    assert!(report.map.backup_wins >= 1, "{report}");
    assert!(report.reduce.backup_wins >= 1, "{report}");
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_after_its_coordinator_is_killed() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = text(16, 3000, 300);
    let input = write(dir.path(), "in.txt", &data);
    let out = dir.path().join("out");
    // The fixture coordinator SIGKILLs itself after 3 map commits.
    let status = std::process::Command::new(fixture())
        .arg("coordinate")
        .arg(&input)
        .arg(&out)
        .args(["4096", "3"])
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(!out.join("part-00000").exists());
    let report = job(Count::default(), std::slice::from_ref(&input), &out)
        .split_size(4096)
        .run()
        .await
        .unwrap();
    assert!(report.map.resumed >= 3, "{report}");
    assert_eq!(
        report.map.attempts as usize,
        report.map.tasks - report.map.resumed,
        "{report}"
    );
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    assert_eq!(report.records(), 3000);
    base.assert_clean().await;
}
