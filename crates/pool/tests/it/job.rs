//! The task type of `forkyard-pool-fixture`, shared by the fixture binary and
//! the tests (the ipc handshake checks that both sides agree on its structure).
//! Included with `#[path]` by `src/bin/forkyard-pool-fixture.rs`.
use serde::{Deserialize, Serialize};

/// What a `pool-worker` fixture task does. Every job answers with a `u64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Answers `n`.
    Echo(u64),
    /// Sleeps `ms` milliseconds, then answers `value`.
    Sleep {
        /// How long to sleep.
        ms: u64,
        /// What to answer.
        value: u64,
    },
    /// The handler returns this error message (a `String`: no kind).
    Fail(String),
    /// The handler returns a `TaskError` of this kind, with this message and
    /// a detail of `detail_bytes` bytes (lines of `frame N`, the last one
    /// `innermost`).
    FailTyped {
        /// The error's kind.
        kind: String,
        /// The error's message.
        message: String,
        /// How long a detail to attach.
        detail_bytes: u64,
    },
    /// The handler panics.
    Panic,
    /// The worker process aborts (SIGABRT) mid-task.
    Crash,
    /// The worker process calls `exit(0)` mid-task.
    Exit0,
    /// The handler never returns.
    Hang,
    /// Allocates and leaks this many MiB (touched), then answers its RSS in bytes.
    Alloc {
        /// How much to leak.
        mib: u64,
    },
    /// Writes this many bytes to stderr, then answers the count.
    Stderr {
        /// How much to write.
        bytes: u64,
    },
    /// Answers the worker's pid.
    Pid,
    /// Creates the file `started`, then blocks the worker's thread for `ms`
    /// (a handler that never awaits, so a cancel cannot stop it), then
    /// answers `ms`.
    Block {
        /// How long to block.
        ms: u64,
        /// Created when the block begins.
        started: String,
    },
    /// Creates the file `path` (failing if it exists: the job ran before),
    /// then answers 1.
    Touch {
        /// The file to create.
        path: String,
    },
    /// The first time (no file at `marker` yet): creates it and aborts the
    /// worker. After that: answers 2.
    CrashOnce {
        /// The marker file.
        marker: String,
    },
    /// Waits (asynchronously, so a cancel stops it) until the file `path`
    /// exists, then answers `value`. The test creates the file when it has
    /// seen what it was waiting for: an event, not a pause.
    WaitFile {
        /// The file to wait for.
        path: String,
        /// What to answer.
        value: u64,
    },
}
