//! `forkyard-monitor-fixture`: the pool worker forkyard-monitor's tests run.
//! Not part of the library.

use std::time::Duration;

/// What a test asks a worker to do (the tests declare the same enum).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Job {
    /// Answer `n` after `ms` milliseconds.
    Sleep { n: u64, ms: u64 },
    /// Fail with a task error.
    Fail,
    /// Die mid-task (SIGABRT).
    Crash,
}

async fn run(job: Job) -> Result<u64, String> {
    match job {
        Job::Sleep { n, ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(n)
        }
        Job::Fail => Err("failed on purpose".to_owned()),
        Job::Crash => std::process::abort(),
    }
}

fn main() {
    forkyard_pool::worker::serve(run);
}
