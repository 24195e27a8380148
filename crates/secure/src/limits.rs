//! Resource limits of one run.

use std::time::Duration;

use serde::Serialize;

use crate::error::PolicyError;

/// What one run may consume. `None` means "no limit of this kind".
///
/// ```
/// use std::time::Duration;
/// use forkyard_secure::Limits;
/// let limits = Limits {
///     cpu: Some(Duration::from_secs(5)),
///     wall: Some(Duration::from_secs(10)),
///     memory: Some(512 << 20),
///     ..Limits::default()
/// };
/// ```
///
/// | field | enforced by | seen as |
/// |---|---|---|
/// | `cpu` | `RLIMIT_CPU` (soft = limit, hard = limit + 1 s) | [`EndCause::CpuLimit`](crate::EndCause) |
/// | `wall` | the parent's timer, then a kill of the whole group (and cgroup) | `Timeout` |
/// | `memory` | a memory cgroup where one can be created, otherwise `RLIMIT_AS` | `Memory` |
/// | `address_space` | `RLIMIT_AS` | allocation failures inside the program |
/// | `file_size` | `RLIMIT_FSIZE` | `FileSizeLimit` (SIGXFSZ) |
/// | `open_files` | `RLIMIT_NOFILE` | `EMFILE` inside the program |
/// | `processes` | a pids cgroup where one can be created, plus `RLIMIT_NPROC` | `EAGAIN` from fork |
/// | `output` | the parent stops reading at the cap and kills the group | `OutputLimit` |
///
/// Core dumps are always off (`RLIMIT_CORE = 0`): a core of a converter holds the data it was
/// converting. `RLIMIT_NPROC` counts every process of the *user*, and root ignores it; that is
/// why `processes` prefers a pids cgroup (and the run's report says which one applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// CPU time (user + system).
    pub cpu: Option<Duration>,
    /// Wall-clock time from spawn to exit.
    pub wall: Option<Duration>,
    /// Resident memory of the run (all its processes when a cgroup is available).
    pub memory: Option<u64>,
    /// Virtual address space per process.
    pub address_space: Option<u64>,
    /// Largest file the program may write, in bytes.
    pub file_size: Option<u64>,
    /// Open file descriptors per process.
    pub open_files: Option<u64>,
    /// Processes (and threads) in the run.
    pub processes: Option<u64>,
    /// Bytes captured from stdout, and separately from stderr.
    pub output: Option<u64>,
}

impl Default for Limits {
    /// Conservative defaults for a converter-style tool: 10 s CPU, 30 s wall, 512 MiB memory,
    /// 64 MiB files, 64 open files, 64 processes, 1 MiB of output per stream.
    fn default() -> Self {
        Limits {
            cpu: Some(Duration::from_secs(10)),
            wall: Some(Duration::from_secs(30)),
            memory: Some(512 << 20),
            address_space: None,
            file_size: Some(64 << 20),
            open_files: Some(64),
            processes: Some(64),
            output: Some(1 << 20),
        }
    }
}

impl Limits {
    /// No limits at all (core dumps still off). Mostly for benchmarks and tests.
    pub fn none() -> Limits {
        Limits {
            cpu: None,
            wall: None,
            memory: None,
            address_space: None,
            file_size: None,
            open_files: None,
            processes: None,
            output: None,
        }
    }

    pub(crate) fn check(&self) -> Result<(), PolicyError> {
        let bad = |name, reason| Err(PolicyError::BadLimit { name, reason });
        if self.cpu.is_some_and(|d| d.as_secs() == 0) {
            return bad(
                "cpu",
                "must be at least one second (RLIMIT_CPU counts whole seconds)",
            );
        }
        if self.wall.is_some_and(|d| d.is_zero()) {
            return bad("wall", "must be positive");
        }
        if self.memory.is_some_and(|m| m < 1 << 20)
            || self.address_space.is_some_and(|m| m < 1 << 20)
        {
            return bad("memory", "must be at least 1 MiB");
        }
        if self.open_files.is_some_and(|n| n < 4) {
            return bad(
                "open_files",
                "must leave room for stdin, stdout, stderr and one more",
            );
        }
        if self.processes == Some(0) {
            return bad("processes", "must allow the program itself");
        }
        if self.output == Some(0) {
            return bad("output", "must be positive; use no capture instead");
        }
        Ok(())
    }
}
