//! Hardening applied at spawn: the layers, what the kernel offers, and the report of what
//! actually applied.
//!
//! Everything is prepared in the parent (Landlock ruleset, seccomp programs, cgroup
//! directories, rlimit values, namespace map contents); the pre-exec hook in the child only
//! makes system calls, in a fixed order (see [`exec`]).

pub(crate) mod caps;
pub(crate) mod cgroup;
pub(crate) mod exec;
pub(crate) mod landlock;
pub(crate) mod netns;
pub(crate) mod probe;
pub(crate) mod seccomp;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One hardening layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Layer {
    /// `setsid()`: no controlling terminal, so no `TIOCSTI` keystroke injection into it.
    Session,
    /// `PR_SET_PDEATHSIG(SIGKILL)`.
    ParentDeathSignal,
    /// `setrlimit` for CPU, address space, file size, open files, processes, core = 0.
    Rlimits,
    /// A per-run cgroup (pids and memory controllers).
    Cgroup,
    /// `PR_SET_NO_NEW_PRIVS`: set-uid binaries and file capabilities no longer elevate.
    NoNewPrivs,
    /// Every capability dropped: bounding, ambient, effective, permitted and inheritable
    /// sets emptied, and securebits that keep uid 0 from regaining any at `exec`.
    Capabilities,
    /// Landlock: file system (and TCP) access limited to the allowed paths.
    Landlock,
    /// seccomp-bpf filters.
    Seccomp,
    /// A new, empty network namespace.
    NetworkNamespace,
    /// A new pid namespace.
    PidNamespace,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Layer::Session => "session",
            Layer::ParentDeathSignal => "parent-death-signal",
            Layer::Rlimits => "rlimits",
            Layer::Cgroup => "cgroup",
            Layer::NoNewPrivs => "no-new-privs",
            Layer::Capabilities => "capabilities",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::NetworkNamespace => "network-namespace",
            Layer::PidNamespace => "pid-namespace",
        };
        f.write_str(name)
    }
}

/// What to do when the running kernel (or our privileges) cannot provide a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Refuse to run ([`Error::LayerUnavailable`](crate::Error::LayerUnavailable)).
    Required,
    /// Run without it, and say so in the report (and at `warn` level in tracing).
    BestEffort,
}

/// Whether the program may use the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Network {
    /// The host's network, as the parent has it.
    Host,
    /// No network: `socket(2)` fails with `EAFNOSUPPORT` (seccomp), TCP bind/connect are
    /// denied (Landlock ABI 4+), and the program runs in an empty network namespace where
    /// one can be created (which also hides the host's abstract Unix sockets).
    Off,
}

/// The sandbox of a policy: which layers to apply and what the program may touch.
///
/// ```
/// use forkyard_secure::{Enforcement, Network, Sandbox};
/// let sandbox = Sandbox::strict()
///     .capabilities(Some(Enforcement::Required))
///     .read_only("/usr/share/fonts")
///     .network(Network::Off)
///     .pid_namespace(Some(Enforcement::BestEffort));
/// ```
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) session: bool,
    pub(crate) parent_death_signal: bool,
    pub(crate) no_new_privs: bool,
    pub(crate) capabilities: Option<Enforcement>,
    pub(crate) landlock: Option<Enforcement>,
    pub(crate) seccomp: Option<Enforcement>,
    pub(crate) network: Network,
    pub(crate) network_namespace: Option<Enforcement>,
    pub(crate) pid_namespace: Option<Enforcement>,
    pub(crate) cgroup: Option<Enforcement>,
    pub(crate) read_only: Vec<PathBuf>,
    pub(crate) read_write: Vec<PathBuf>,
    pub(crate) system_paths: bool,
    pub(crate) socket_pairs: bool,
}

impl Sandbox {
    /// Every layer: new session, parent-death signal, no_new_privs, every capability dropped
    /// (best effort: an unprivileged parent cannot empty the bounding set), Landlock and
    /// seccomp (both required: a run is refused on a kernel without them), no network
    /// (network namespace best effort), per-run cgroup best effort. The pid namespace is
    /// opt-in ([`pid_namespace`](Sandbox::pid_namespace)).
    ///
    /// Landlock allows reading and executing the usual system directories (`/usr`, `/lib*`,
    /// `/bin`, `/sbin`, the loader cache, `/etc/localtime`, `/etc/passwd`, `/etc/group`),
    /// reading `/dev/null`, `/dev/zero`, `/dev/urandom` and writing `/dev/null`, the program
    /// itself, and the roots of its path operands (read-only for read operands, read-write
    /// for output operands). Nothing else, not even `/proc` or `/tmp`.
    pub fn strict() -> Sandbox {
        Sandbox {
            session: true,
            parent_death_signal: true,
            no_new_privs: true,
            capabilities: Some(Enforcement::BestEffort),
            landlock: Some(Enforcement::Required),
            seccomp: Some(Enforcement::Required),
            network: Network::Off,
            network_namespace: Some(Enforcement::BestEffort),
            pid_namespace: None,
            cgroup: Some(Enforcement::BestEffort),
            read_only: Vec::new(),
            read_write: Vec::new(),
            system_paths: true,
            socket_pairs: false,
        }
    }

    /// Only what every spawn of untrusted input should have and costs next to nothing: new
    /// session, parent-death signal, no_new_privs, rlimits and no capabilities (a few dozen
    /// `prctl`s). No Landlock, seccomp, namespaces or cgroups; host network.
    pub fn minimal() -> Sandbox {
        Sandbox {
            landlock: None,
            seccomp: None,
            network: Network::Host,
            network_namespace: None,
            cgroup: None,
            ..Sandbox::strict()
        }
    }

    /// Also allows reading (and executing) beneath `path`.
    pub fn read_only(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read_only.push(path.into());
        self
    }

    /// Also allows reading and writing beneath `path`.
    pub fn read_write(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read_write.push(path.into());
        self
    }

    /// Whether the program may make socket pairs (`socketpair(2)`) while the network is off
    /// (default: no, `EAFNOSUPPORT`, as for `socket(2)`).
    ///
    /// A socket pair the program makes itself is how it could hold file descriptors in
    /// flight in bulk; strict has no use for one. Some runtimes make one for their own
    /// wake-ups, though: tokio's signal handling does, so a tokio program that listens for
    /// signals, such as a forkyard-pool worker or a supervised service, needs this on.
    /// (Fds in flight no longer stop other spawns either way; see the crate README's
    /// threat model.)
    pub fn socket_pairs(mut self, allow: bool) -> Sandbox {
        self.socket_pairs = allow;
        self
    }

    /// Whether the usual system directories are readable under Landlock (default: yes).
    pub fn system_paths(mut self, allow: bool) -> Sandbox {
        self.system_paths = allow;
        self
    }

    /// Sets the capabilities layer (`None` lets the program keep the parent's capabilities,
    /// all of root's when the parent is root). [`Enforcement::Required`] refuses a run whose
    /// bounding set cannot be emptied (a parent without `CAP_SETPCAP` and no user namespace
    /// for the run).
    pub fn capabilities(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.capabilities = enforcement;
        self
    }

    /// Sets the Landlock layer (`None` turns it off).
    pub fn landlock(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.landlock = enforcement;
        self
    }

    /// Sets the seccomp layer (`None` turns it off).
    pub fn seccomp(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.seccomp = enforcement;
        self
    }

    /// Network access. [`Network::Off`] also asks for a network namespace (best effort)
    /// unless [`network_namespace`](Sandbox::network_namespace) says otherwise.
    pub fn network(mut self, network: Network) -> Sandbox {
        self.network = network;
        self.network_namespace = match network {
            Network::Off => self.network_namespace.or(Some(Enforcement::BestEffort)),
            Network::Host => None,
        };
        self
    }

    /// Sets the network-namespace layer (only meaningful with [`Network::Off`]).
    pub fn network_namespace(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.network_namespace = enforcement;
        self
    }

    /// Runs the program as pid 1 of a new pid namespace: it cannot see or signal any process
    /// outside, and when it exits the kernel kills everything it started, even descendants
    /// that left its process group. Costs one extra fork per spawn: the spawned process stays
    /// outside as a relay that waits for pid 1 and exits the same way.
    pub fn pid_namespace(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.pid_namespace = enforcement;
        self
    }

    /// Sets the per-run cgroup layer, used for the `memory` and `processes` limits.
    pub fn cgroup(mut self, enforcement: Option<Enforcement>) -> Sandbox {
        self.cgroup = enforcement;
        self
    }

    /// Sets whether to start a new session (`setsid`).
    pub fn new_session(mut self, on: bool) -> Sandbox {
        self.session = on;
        self
    }

    /// Sets whether to ask for `SIGKILL` when the parent dies.
    pub fn parent_death_signal(mut self, on: bool) -> Sandbox {
        self.parent_death_signal = on;
        self
    }

    /// Sets `no_new_privs` (Landlock and seccomp need it when unprivileged, and turn it on
    /// regardless).
    pub fn no_new_privs(mut self, on: bool) -> Sandbox {
        self.no_new_privs = on;
        self
    }

    pub(crate) fn describe(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "session={} pdeathsig={} nnp={} caps={:?} landlock={:?} seccomp={:?} network={:?} netns={:?} pidns={:?} cgroup={:?} ro={:?} rw={:?} system={}",
            self.session,
            self.parent_death_signal,
            self.no_new_privs,
            self.capabilities,
            self.landlock,
            self.seccomp,
            self.network,
            self.network_namespace,
            self.pid_namespace,
            self.cgroup,
            self.read_only,
            self.read_write,
            self.system_paths
        );
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::strict()
    }
}

/// Whether a layer applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LayerStatus {
    /// Applied in full, confirmed by the child before `exec`.
    Applied,
    /// Applied with less than was asked (an older Landlock ABI, say); the detail says what.
    Partial,
    /// Asked for but not available here; the run went ahead because it was best effort.
    Unavailable,
    /// Not asked for by the policy.
    Off,
}

/// One line of the enforcement report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerReport {
    /// The layer.
    pub layer: Layer,
    /// Whether it applied.
    pub status: LayerStatus,
    /// What it did here (ABI levels, filter counts, limits) or why it could not.
    pub detail: String,
}

impl fmt::Display for LayerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            LayerStatus::Applied => "applied",
            LayerStatus::Partial => "partial",
            LayerStatus::Unavailable => "UNAVAILABLE",
            LayerStatus::Off => "off",
        };
        write!(
            f,
            "{:<20} {:<12} {}",
            self.layer.to_string(),
            status,
            self.detail
        )
    }
}
