//! The task type of `forkyard-perf-fixture`, shared by the fixture binary and
//! the tests. Included with `#[path]` by `src/bin/forkyard-perf-fixture.rs`.
use serde::{Deserialize, Serialize};

/// What a fixture task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Waits `ms` milliseconds, then answers `key`.
    Slow {
        /// The key.
        key: u64,
        /// How long to take.
        ms: u64,
    },
    /// Answers `key` at once.
    Echo {
        /// The key.
        key: u64,
    },
    /// The worker process aborts mid-task.
    Crash,
    /// Fails with an error naming `key`.
    Fail {
        /// The key.
        key: u64,
    },
}

/// What a fixture answers: the key, and the worker's own count of the
/// tasks it executed so far (so executions are counted by the workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Answer {
    /// The key asked for.
    pub(crate) key: u64,
    /// The worker's pid.
    pub(crate) pid: u32,
    /// Tasks this worker executed, this one included.
    pub(crate) executed: u64,
}
