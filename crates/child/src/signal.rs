//! Signals as a small value type, so the public API does not expose `libc` or `rustix`.

use std::fmt;

/// A Unix signal number, such as [`Signal::TERM`].
///
/// A plain value type (not an enum) because any number from 1 to 64 is a valid
/// signal on Linux, real-time signals included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

impl Signal {
    /// SIGHUP: hang-up; by convention "reload your configuration".
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// SIGINT: interrupt from the keyboard.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// SIGQUIT: quit, with a core dump.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// SIGILL: illegal instruction.
    pub const ILL: Signal = Signal(libc::SIGILL);
    /// SIGABRT: `abort()`.
    pub const ABRT: Signal = Signal(libc::SIGABRT);
    /// SIGBUS: bus error.
    pub const BUS: Signal = Signal(libc::SIGBUS);
    /// SIGFPE: arithmetic error.
    pub const FPE: Signal = Signal(libc::SIGFPE);
    /// SIGKILL: cannot be caught or ignored.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// SIGUSR1: user-defined.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// SIGSEGV: invalid memory access.
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    /// SIGUSR2: user-defined.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// SIGPIPE: write to a pipe with no reader.
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// SIGALRM: timer.
    pub const ALRM: Signal = Signal(libc::SIGALRM);
    /// SIGTERM: polite request to terminate; the default stop signal.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// SIGCHLD: a child changed state.
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    /// SIGCONT: continue a stopped process.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// SIGSTOP: stop; cannot be caught or ignored.
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// SIGXCPU: CPU time limit (`RLIMIT_CPU`) exceeded.
    pub const XCPU: Signal = Signal(libc::SIGXCPU);
    /// SIGXFSZ: file size limit (`RLIMIT_FSIZE`) exceeded.
    pub const XFSZ: Signal = Signal(libc::SIGXFSZ);
    /// SIGSYS: bad system call, also what a seccomp filter kills with.
    pub const SYS: Signal = Signal(libc::SIGSYS);

    /// The signal with this number. Numbers outside 1..=64 are not signals;
    /// sending one fails with an error from the kernel.
    pub const fn from_raw(signo: i32) -> Signal {
        Signal(signo)
    }

    /// The signal number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// The conventional name, such as `"SIGTERM"`, for the standard signals.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGSTKFLT => "SIGSTKFLT",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGTTIN => "SIGTTIN",
            libc::SIGTTOU => "SIGTTOU",
            libc::SIGURG => "SIGURG",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            libc::SIGVTALRM => "SIGVTALRM",
            libc::SIGPROF => "SIGPROF",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGIO => "SIGIO",
            libc::SIGPWR => "SIGPWR",
            libc::SIGSYS => "SIGSYS",
            _ => return None,
        })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
