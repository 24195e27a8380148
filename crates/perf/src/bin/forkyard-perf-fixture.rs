//! `forkyard-perf-fixture`: the pool worker forkyard-perf's tests run. It
//! counts the tasks it executes and says so in every answer. Not part of the
//! library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "../../tests/it/job.rs"]
mod job;

use job::{Answer, Job};

static EXECUTED: AtomicU64 = AtomicU64::new(0);

fn main() {
    forkyard_pool::worker::serve(|job: Job| async move {
        let executed = EXECUTED.fetch_add(1, Ordering::Relaxed) + 1;
        match job {
            Job::Slow { key, ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Answer {
                    key,
                    pid: std::process::id(),
                    executed,
                })
            }
            Job::Echo { key } => Ok(Answer {
                key,
                pid: std::process::id(),
                executed,
            }),
            Job::Crash => std::process::abort(),
            Job::Fail { key } => Err(format!("key {key} fails")),
        }
    })
}
