//! Errors of forkyard-child.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong when spawning, waiting for, signalling or
/// sampling a child.
///
/// Spawn errors name the program (and the working directory when that is what
/// failed), so the message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program does not exist (or, for a bare name, is not on `PATH`).
    #[error("cannot spawn `{program}`: program not found")]
    ProgramNotFound {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program exists but may not be executed (no execute permission,
    /// a directory, or a file system mounted `noexec`).
    #[error("cannot spawn `{program}`: permission denied")]
    PermissionDenied {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program is not in a format the kernel can execute (no `#!` line, wrong architecture).
    #[error("cannot spawn `{program}`: not an executable the kernel can run")]
    NotExecutable {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory set on the `Command` does not exist, is not a
    /// directory, or may not be entered.
    #[error("cannot spawn `{program}`: bad working directory `{}`", cwd.display())]
    BadCwd {
        /// The program as given to the `Command`.
        program: String,
        /// The working directory that failed.
        cwd: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Out of processes, fds or memory.
    #[error("cannot spawn `{program}`: out of resources")]
    Resources {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other spawn failure.
    #[error("cannot spawn `{program}`")]
    Spawn {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A [`Launch::on_spawn`](crate::Launch::on_spawn) hook panicked; the child
    /// it was given has been killed.
    #[error("an on_spawn hook of `{program}` panicked: {message}")]
    Hook {
        /// The program as given to the `Command`.
        program: String,
        /// The panic's message.
        message: String,
    },
    /// The owner-death watchdog could not be started or reached, so the child
    /// could not be protected against orphaning; it was not started.
    #[error("cannot spawn `{program}`: the owner-death watchdog is unavailable")]
    Watchdog {
        /// The program as given to the `Command`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The child's cgroup could not be created or joined.
    #[error("cannot spawn `{program}`: cannot set up cgroup `{}`", path.display())]
    Cgroup {
        /// The program as given to the `Command`.
        program: String,
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `spawn` was called outside a tokio runtime, which exit notification needs.
    #[error("cannot spawn `{program}`: no tokio runtime (spawn must be called from within one)")]
    NoRuntime {
        /// The program as given to the `Command`.
        program: String,
    },
    /// `wait4` or polling the pidfd failed.
    #[error("waiting for pid {pid} failed")]
    Wait {
        /// The child's pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Sending a signal failed for a reason other than the process being gone.
    #[error("sending {signal} to the group of pid {pid} failed")]
    Signal {
        /// The child's pid.
        pid: u32,
        /// The signal.
        signal: crate::Signal,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The child has already exited and been reaped, so it cannot be sampled.
    #[error("pid {pid} has already exited")]
    NotRunning {
        /// The child's pid.
        pid: u32,
    },
    /// Reading `/proc` for a sample failed.
    #[error("sampling pid {pid} from /proc failed")]
    Sample {
        /// The child's pid.
        pid: u32,
        /// The procfs error.
        #[source]
        source: procfs::ProcError,
    },
    /// An output reader task failed (it panicked or the runtime shut down).
    #[error("reading the output of pid {pid} failed")]
    Output {
        /// The child's pid.
        pid: u32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
