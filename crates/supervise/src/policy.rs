//! Plain policy values: restart types, strategies, shutdown, and how an exit is classified.

use std::fmt;
use std::time::Duration;

use forkyard_child::Signal;

/// When a child that ended on its own is restarted (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Always restarted, even after a clean exit.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (see [`ChildSpec::clean_exit_codes`]).
    ///
    /// [`ChildSpec::clean_exit_codes`]: crate::ChildSpec::clean_exit_codes
    Transient,
    /// Never restarted, not even when a sibling's failure took it down under
    /// [`Strategy::OneForAll`] or [`Strategy::RestForOne`]; it is removed instead.
    Temporary,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        })
    }
}

/// What else is restarted when a child fails (OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child: all others are stopped in reverse start order, then all are started again
    /// in order.
    OneForAll,
    /// The failed child and every child started after it: those are stopped in reverse order,
    /// then started again in order.
    RestForOne,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        })
    }
}

/// How a child is stopped (OTP's `shutdown`, systemd's `TimeoutStopSec=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shutdown {
    /// SIGKILL to the whole process group at once.
    Brutal,
    /// The stop signal (SIGTERM unless the spec says otherwise) to the process group, then
    /// SIGKILL to the group if it has not exited after `grace`.
    Signal {
        /// How long the child may take to exit after the stop signal.
        grace: Duration,
    },
}

impl Default for Shutdown {
    /// SIGTERM, then SIGKILL after 5 s (OTP's default for workers).
    fn default() -> Self {
        Shutdown::Signal {
            grace: Duration::from_secs(5),
        }
    }
}

/// How a run of a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The process exited with this code.
    Code(i32),
    /// The process was ended by this signal.
    Signal {
        /// The signal.
        signal: Signal,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// A nested supervisor gave up (its restart budget ran out) and escalated.
    GaveUp {
        /// Why it gave up.
        reason: String,
    },
    /// A nested supervisor shut down cleanly.
    Shutdown,
    /// The exit status could not be collected (the child was killed to be sure).
    Lost {
        /// Why.
        error: String,
    },
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Code(code) => write!(f, "exit code {code}"),
            Ending::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "signal {}", signal_name(*signal))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            Ending::GaveUp { reason } => write!(f, "gave up: {reason}"),
            Ending::Shutdown => f.write_str("shut down"),
            Ending::Lost { error } => write!(f, "exit status lost: {error}"),
        }
    }
}

/// A finished run of a child, as reported in events and status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitReport {
    /// How it ended.
    pub ending: Ending,
    /// The supervisor had to SIGKILL it because it outlived its grace period.
    pub killed_after_grace: bool,
    /// Resource usage, when the run was a process (forkyard-child's, from `wait4`).
    pub usage: Option<forkyard_child::Rusage>,
}

impl ExitReport {
    /// A report with just an ending (no usage figures).
    pub fn new(ending: Ending) -> Self {
        ExitReport {
            ending,
            killed_after_grace: false,
            usage: None,
        }
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ending)?;
        if self.killed_after_grace {
            f.write_str(", killed after its grace period")?;
        }
        Ok(())
    }
}

/// Which endings count as clean for [`Restart::Transient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanExits {
    pub(crate) codes: Vec<i32>,
    pub(crate) signals: Vec<Signal>,
}

impl Default for CleanExits {
    /// systemd's default: exit code 0, or SIGHUP, SIGINT, SIGTERM, SIGPIPE.
    fn default() -> Self {
        CleanExits {
            codes: vec![0],
            signals: vec![Signal::HUP, Signal::INT, Signal::TERM, Signal::PIPE],
        }
    }
}

impl CleanExits {
    pub(crate) fn is_clean(&self, ending: &Ending) -> bool {
        match ending {
            Ending::Code(code) => self.codes.contains(code),
            Ending::Signal { signal, .. } => self.signals.contains(signal),
            Ending::GaveUp { .. } | Ending::Lost { .. } => false,
            Ending::Shutdown => true,
        }
    }
}

/// "SIGTERM" for 15, "77" for numbers without a name.
pub(crate) fn signal_name(signal: Signal) -> String {
    signal
        .name()
        .map_or_else(|| signal.as_raw().to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_exit_table() {
        let clean = CleanExits::default();
        let sig = |signal| Ending::Signal {
            signal: Signal::from_raw(signal),
            core_dumped: false,
        };
        let cases = [
            (Ending::Code(0), true),
            (Ending::Code(1), false),
            (Ending::Code(143), false),
            (sig(libc::SIGTERM), true),
            (sig(libc::SIGINT), true),
            (sig(libc::SIGHUP), true),
            (sig(libc::SIGPIPE), true),
            (sig(libc::SIGKILL), false),
            (sig(libc::SIGSEGV), false),
            (sig(libc::SIGABRT), false),
            (Ending::GaveUp { reason: "x".into() }, false),
            (Ending::Shutdown, true),
        ];
        for (ending, want) in cases {
            assert_eq!(clean.is_clean(&ending), want, "{ending}");
        }
    }

    #[test]
    fn endings_display() {
        let cases = [
            (Ending::Code(3), "exit code 3"),
            (
                Ending::Signal {
                    signal: Signal::SEGV,
                    core_dumped: true,
                },
                "signal SIGSEGV (core dumped)",
            ),
            (
                Ending::Signal {
                    signal: Signal::from_raw(77),
                    core_dumped: false,
                },
                "signal 77",
            ),
        ];
        for (ending, want) in cases {
            assert_eq!(ending.to_string(), want);
        }
    }
}
