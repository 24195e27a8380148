//! How a child ended: status, resource usage, and whether we ended it.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::Signal;

/// How a child process ended, collected by `wait4(2)` when it was reaped.
///
/// An `Exit` answers three questions at once: what the kernel says happened
/// ([`code`](Exit::code) or [`signal`](Exit::signal)), what the child cost
/// ([`rusage`](Exit::rusage)), and whether *we* ended it and why
/// ([`ended_by`](Exit::ended_by)). The last one is what lets a supervisor tell
/// "crashed" from "we stopped it for running too long".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exit {
    pub(crate) pid: u32,
    pub(crate) status: Status,
    pub(crate) rusage: Rusage,
    pub(crate) ended_by: Option<Termination>,
    pub(crate) elapsed: Duration,
}

/// The kernel's view of how the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// The process called `exit(code)` (or returned from `main`).
    Exited { code: i32 },
    /// A signal killed the process.
    Signaled { signal: Signal, core_dumped: bool },
}

impl Exit {
    pub(crate) fn from_wait_status(
        pid: u32,
        raw: i32,
        rusage: Rusage,
        ended_by: Option<Termination>,
        elapsed: Duration,
    ) -> Exit {
        let status = if libc::WIFSIGNALED(raw) {
            Status::Signaled {
                signal: Signal::from_raw(libc::WTERMSIG(raw)),
                core_dumped: libc::WCOREDUMP(raw),
            }
        } else {
            Status::Exited {
                code: libc::WEXITSTATUS(raw),
            }
        };
        Exit {
            pid,
            status,
            rusage,
            ended_by,
            elapsed,
        }
    }

    /// The process id the child had.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit code, when the process exited by itself rather than by a signal.
    pub fn code(&self) -> Option<i32> {
        match self.status {
            Status::Exited { code } => Some(code),
            Status::Signaled { .. } => None,
        }
    }

    /// The signal that killed the process, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self.status {
            Status::Signaled { signal, .. } => Some(signal),
            Status::Exited { .. } => None,
        }
    }

    /// Whether the kernel wrote a core dump (the signal's default action dumps core
    /// and `RLIMIT_CORE` allowed it).
    pub fn core_dumped(&self) -> bool {
        matches!(
            self.status,
            Status::Signaled {
                core_dumped: true,
                ..
            }
        )
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// CPU time, peak memory and context switches of the child (and of any of its
    /// own children that it waited for), from `wait4(2)`.
    pub fn rusage(&self) -> &Rusage {
        &self.rusage
    }

    /// `Some` when forkyard ended the process: why, with which signal, and whether
    /// the polite signal had to be escalated to SIGKILL. `None` when the process
    /// ended on its own (including by a signal somebody else sent).
    pub fn ended_by(&self) -> Option<&Termination> {
        self.ended_by.as_ref()
    }

    /// Wall-clock time from spawn to reaping.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Status::Exited { code } => write!(f, "exited with code {code}")?,
            Status::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {signal}")?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
            }
        }
        if let Some(t) = &self.ended_by {
            write!(f, "; {t}")?;
        }
        Ok(())
    }
}

/// Resource usage of a reaped child, from `wait4(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rusage {
    /// CPU time spent in user mode.
    pub user_cpu: Duration,
    /// CPU time spent in the kernel on the child's behalf.
    pub system_cpu: Duration,
    /// Peak resident set size, in bytes.
    pub max_rss_bytes: u64,
    /// Page faults served without I/O.
    pub minor_faults: u64,
    /// Page faults that needed I/O.
    pub major_faults: u64,
    /// Times the child gave up the CPU (waiting for I/O, a lock, a sleep).
    pub voluntary_ctx_switches: u64,
    /// Times the scheduler took the CPU away (time slice over, higher priority).
    pub involuntary_ctx_switches: u64,
}

impl Rusage {
    pub(crate) fn from_libc(ru: &libc::rusage) -> Rusage {
        let tv = |t: libc::timeval| {
            Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
        };
        let n = |v: libc::c_long| v.max(0) as u64;
        Rusage {
            user_cpu: tv(ru.ru_utime),
            system_cpu: tv(ru.ru_stime),
            // Linux reports ru_maxrss in kibibytes.
            max_rss_bytes: n(ru.ru_maxrss) * 1024,
            minor_faults: n(ru.ru_minflt),
            major_faults: n(ru.ru_majflt),
            voluntary_ctx_switches: n(ru.ru_nvcsw),
            involuntary_ctx_switches: n(ru.ru_nivcsw),
        }
    }

    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user_cpu + self.system_cpu
    }
}

/// What forkyard did to end a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Termination {
    /// Why we ended it.
    pub reason: Reason,
    /// The last signal we sent to its group before it died.
    pub signal: Signal,
    /// Whether the polite stop signal was not enough and we escalated to SIGKILL.
    pub escalated: bool,
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ended by us ({}) with {}", self.reason, self.signal)?;
        if self.escalated {
            f.write_str(" after the grace period")?;
        }
        Ok(())
    }
}

/// Why forkyard ended a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// [`Child::stop`](crate::Child::stop) was called.
    Stop,
    /// The child ran past its [`timeout`](crate::Builder::timeout).
    Timeout,
    /// [`Child::kill`](crate::Child::kill) was called.
    Kill,
    /// The [`Child`](crate::Child) was dropped while the process ran.
    Drop,
    /// The child wrote more output than its cap allowed, with kill-on-overflow set.
    OutputLimit,
    /// A pool retired the worker (task count, memory, age).
    Recycle,
    /// The owner is shutting down.
    Shutdown,
    /// A health check failed.
    Unhealthy,
    /// A resource limit other than output was exceeded.
    Limit,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Stop => "stop",
            Reason::Timeout => "timeout",
            Reason::Kill => "kill",
            Reason::Drop => "drop",
            Reason::OutputLimit => "output limit",
            Reason::Recycle => "recycle",
            Reason::Shutdown => "shutdown",
            Reason::Unhealthy => "unhealthy",
            Reason::Limit => "limit",
        })
    }
}
