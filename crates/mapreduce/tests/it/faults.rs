//! Crashes, hangs, poison records, stragglers, a killed coordinator: each
//! with real worker processes, each ending with the reference output.
//!
//! Crashes and stragglers come from outside, as `kill -9` or `kill -STOP`
//! would: the test job parks one attempt mid-task and says which worker runs
//! it, and the test signals that pid (one the engine reported as a worker).
//! Bad records are faults in the data, so the job itself panics, aborts or
//! hangs on them.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::jobs::{Count, Hold};
use crate::support::*;
use forkyard_mapreduce::{Error, JOB_DIR, JobEvent};
use forkyard_testkit::wait_for;
use rustix::process::Signal;

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
async fn workers_killed_from_outside_mid_map_and_mid_reduce_are_replaced_and_their_tasks_rerun() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = marked(10, &[(1200, "holdmap"), (40, "holdreduce")]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let workers = Workers::default();
    let mr = job(held(dir.path()), &inputs, &out)
        // No backup may overtake the parked attempts: each task's one
        // failure must be the kill.
        .backups(false, Duration::ZERO)
        .on_event(workers.observer());
    let strike = async {
        let mut killed = Vec::new();
        for phase in ["map", "reduce"] {
            let pid = parked(dir.path(), phase).await;
            workers.wait_for(pid).await;
            signal(pid, Signal::KILL);
            killed.push(pid);
        }
        killed
    };
    let (report, killed) = tokio::join!(mr.run(), strike);
    let report = report.unwrap();
    assert_eq!(report.map.retries, 1, "{report}");
    assert_eq!(report.reduce.retries, 1, "{report}");
    assert!(report.skipped.is_empty(), "{report}");
    assert!(killed.iter().all(|&pid| !forkyard_testkit::is_alive(pid)));
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
async fn a_worker_stopped_from_outside_is_overtaken_by_a_backup_in_both_phases() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = marked(15, &[(300, "holdmap"), (7, "holdreduce")]);
    let inputs = [write(dir.path(), "in.txt", &data)];
    let out = dir.path().join("out");
    let workers = Workers::default();
    // The parked attempt's worker is SIGSTOPped for good: only a backup can
    // finish the phase before the (long) task timeout.
    let mr = job(held(dir.path()), &inputs, &out)
        .backups(true, Duration::from_millis(100))
        .task_timeout(Duration::from_secs(600))
        .on_event(workers.observer());
    let strike = async {
        for phase in ["map", "reduce"] {
            let pid = parked(dir.path(), phase).await;
            workers.wait_for(pid).await;
            signal(pid, Signal::STOP);
            wait_for(
                "the worker to be stopped",
                || match forkyard_testkit::stat(pid).map(|s| s.state) {
                    Some('T') => Ok(()),
                    other => Err(format!("state {other:?}")),
                },
            )
            .await;
        }
    };
    let (report, ()) = tokio::join!(mr.run(), strike);
    let report = report.unwrap();
    assert!(report.map.backup_wins >= 1, "{report}");
    assert!(report.reduce.backup_wins >= 1, "{report}");
    assert_eq!(report.map.retries + report.reduce.retries, 0, "{report}");
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_after_its_coordinator_is_killed() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let data = marked(16, &[(2500, "holdmap")]);
    let input = write(dir.path(), "in.txt", &data);
    let out = dir.path().join("out");
    // A coordinator in a process of its own (the fixture), whose map phase
    // cannot end: one attempt is parked. Once it has committed 3 map tasks,
    // it is SIGKILLed from here; its workers die with it.
    let mut coordinator = std::process::Command::new(fixture())
        .arg("coordinate")
        .arg(&input)
        .arg(&out)
        .args(["4096", "0"])
        .arg(dir.path())
        .spawn()
        .unwrap();
    let parked_pid = parked(dir.path(), "map").await;
    let committed = out.join(JOB_DIR).join("committed");
    wait_for("3 committed map tasks", || {
        let n = std::fs::read_dir(&committed).map_or(0, |d| d.count());
        if n >= 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    coordinator.kill().unwrap();
    let status = coordinator.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    wait_for("the parked worker to die with its coordinator", || {
        if forkyard_testkit::is_alive(parked_pid) {
            Err(format!("{parked_pid} alive"))
        } else {
            Ok(())
        }
    })
    .await;
    assert!(!out.join("part-00000").exists());
    // The same job (the same parameters, so the same identity): the parked
    // record's marker is there now, so no attempt parks again.
    let count = Count {
        hold: Some(Hold {
            dir: dir.path().to_path_buf(),
            map_on: Some("holdmap".into()),
            reduce_on: None,
        }),
        ..Count::default()
    };
    let report = job(count, std::slice::from_ref(&input), &out)
        .split_size(4096)
        .run()
        .await
        .unwrap();
    assert!(report.map.resumed >= 3, "{report}");
    assert!(report.map.resumed < report.map.tasks, "{report}");
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

/// A text with `word` appended to line `line`, for each pair.
fn marked(seed: u64, marks: &[(usize, &str)]) -> Vec<u8> {
    let data = text(seed, 3000, 300);
    let mut out = Vec::new();
    for (i, l) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        out.extend_from_slice(l.strip_suffix(b"\n").unwrap_or(l));
        for (_, word) in marks.iter().filter(|(at, _)| *at == i) {
            out.extend_from_slice(format!(" {word}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Word count parking the first attempt to map a `holdmap` record and the
/// first to reduce the key `holdreduce`.
fn held(dir: &Path) -> Count {
    Count {
        hold: Some(Hold {
            dir: dir.to_path_buf(),
            map_on: Some("holdmap".into()),
            reduce_on: Some("holdreduce".into()),
        }),
        ..Count::default()
    }
}

/// Waits for an attempt of `phase` to park, and returns its worker's pid.
async fn parked(dir: &Path, phase: &str) -> u32 {
    let path = dir.join(format!("held-{phase}"));
    wait_for(&format!("an attempt parked in {phase}"), || {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let pid = text.strip_suffix('\n').ok_or("not written yet")?;
        pid.parse::<u32>().map_err(|e| e.to_string())
    })
    .await
}

/// Sends `signal` to `pid`: one of this process's workers, which cannot have
/// been reaped (and its pid reused) before the pool saw it exit.
fn signal(pid: u32, signal: Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// The pids of the workers the engine reported ready.
#[derive(Debug, Clone, Default)]
struct Workers(Arc<Mutex<Vec<u32>>>);

impl Workers {
    fn observer(&self) -> impl Fn(&JobEvent) + Send + Sync + 'static {
        let pids = self.0.clone();
        move |event| {
            if let JobEvent::WorkerReady { pid } = event {
                pids.lock().unwrap().push(*pid);
            }
        }
    }

    /// Waits until the engine has reported `pid` as one of its workers.
    async fn wait_for(&self, pid: u32) {
        wait_for(&format!("{pid} among the workers"), || {
            let pids = self.0.lock().unwrap();
            if pids.contains(&pid) {
                Ok(())
            } else {
                Err(format!("{pids:?}"))
            }
        })
        .await;
    }
}
