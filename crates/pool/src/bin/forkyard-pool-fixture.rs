//! `forkyard-pool-fixture`: the worker processes forkyard-pool's tests run.
//!
//! A well-behaved worker serving `Job`s (tests/it/job.rs), or, with a
//! flag, one that misbehaves at the protocol level. Not part of the library.
//! (Workers that write garbage are made in the tests with `sh` and `python3`.)

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use forkyard_pool::TaskError;

#[path = "../../tests/it/job.rs"]
mod job;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match pool_worker(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("forkyard-pool-fixture: {message}");
            ExitCode::from(2)
        }
    }
}

fn arg<T: std::str::FromStr>(rest: &[String], idx: usize, name: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let raw = rest.get(idx).ok_or_else(|| format!("missing {name}"))?;
    raw.parse().map_err(|e| format!("bad {name} `{raw}`: {e}"))
}

/// A pool worker for forkyard-pool's tests, well-behaved or not.
fn pool_worker(rest: &[String]) -> Result<ExitCode, String> {
    use crate::job::Job;
    use forkyard_pool::protocol::{FromWorker, ToWorker};
    match rest.first().map(String::as_str) {
        None => forkyard_pool::worker::serve(run_job),
        Some("--exit-at-start") => Ok(ExitCode::from(arg::<u8>(rest, 1, "N")?)),
        Some("--wrong-types") => forkyard_pool::worker::serve(|job: Job| async move {
            Ok::<String, String>(format!("{job:?}"))
        }),
        Some(mode @ ("--no-ready" | "--unknown-id")) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let unknown = mode == "--unknown-id";
            rt.block_on(async move {
                let mut chan =
                    forkyard_ipc::Channel::<FromWorker<u64>, ToWorker<Job>>::from_parent()
                        .map_err(|e| e.to_string())?;
                if !unknown {
                    // Connected, but never ready.
                    std::future::pending::<()>().await;
                }
                chan.send(&FromWorker::Ready)
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(msg) = chan.recv().await.map_err(|e| e.to_string())? {
                    if let ToWorker::Task { id, .. } = msg {
                        chan.send(&FromWorker::Done {
                            id: id + 1_000_000,
                            result: Ok(0),
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    }
                }
                Ok::<(), String>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(format!("unknown pool-worker flag `{other}`")),
    }
}

async fn run_job(job: job::Job) -> Result<u64, TaskError> {
    use crate::job::Job;
    match job {
        Job::Echo(n) => Ok(n),
        Job::FailTyped {
            kind,
            message,
            detail_bytes,
        } => {
            let mut detail = String::new();
            let mut frame = 0;
            while (detail.len() as u64) < detail_bytes.saturating_sub(10) {
                detail.push_str(&format!("frame {frame}\n"));
                frame += 1;
            }
            detail.push_str("innermost");
            Err(TaskError::new(kind, message).with_detail(detail))
        }
        Job::Sleep { ms, value } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        }
        Job::Fail(message) => Err(TaskError::untyped(message)),
        Job::Panic => panic!("the job asked for a panic"),
        Job::Crash => std::process::abort(),
        Job::Exit0 => std::process::exit(0),
        Job::Hang => std::future::pending().await,
        Job::Alloc { mib } => {
            let mut block = vec![0u8; (mib as usize) << 20];
            for i in (0..block.len()).step_by(4096) {
                block[i] = 1;
            }
            block.leak();
            Ok(rss_bytes())
        }
        Job::Stderr { bytes } => {
            let chunk = vec![b'e'; 64 * 1024];
            let mut left = bytes;
            let mut err = io::stderr().lock();
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                err.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
                left -= n as u64;
            }
            Ok(bytes)
        }
        Job::Pid => Ok(u64::from(std::process::id())),
        Job::Block { ms, started } => {
            std::fs::write(&started, b"").map_err(|e| format!("{started}: {e}"))?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        }
        Job::Touch { path } => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map(|_| 1)
            .map_err(|e| TaskError::untyped(format!("{path}: {e}"))),
        Job::CrashOnce { marker } => {
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
            {
                std::process::abort();
            }
            Ok(2)
        }
        Job::WaitFile { path, value } => {
            // Polled: the worker has no file-watching machinery, and the
            // poll is the worker's own business, not the test's timing.
            while !std::path::Path::new(&path).exists() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(value)
        }
    }
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
