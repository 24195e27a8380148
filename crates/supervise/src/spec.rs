//! What to supervise: [`ChildSpec`] and [`Launch`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use forkyard_child::Signal;

use crate::backoff::Backoff;
use crate::breaker::BreakerConfig;
use crate::decide::ChildPolicy;
use crate::error::Error;
use crate::event::ProbeRole;
use crate::policy::{CleanExits, Restart, Shutdown};
use crate::probe::Probe;
use crate::supervisor::SupervisorBuilder;

/// How to start one instance of a child process: forkyard-child's owned
/// [`Launch`](forkyard_child::Launch), re-exported, so one type describes a
/// start for a one-off spawn, a pool's workers and a supervisor's children.
///
/// A [`ChildSpec`]'s factory makes a fresh `Launch` for every start, so anything per-instance
/// (a socketpair for an ipc channel, a pipe to read heartbeats from) is created there. A plain
/// [`Command`](std::process::Command) converts into a `Launch` with the `Command`'s own
/// stdio settings. The spec's [`Shutdown`] and [`stop_signal`](ChildSpec::stop_signal) decide how an instance is
/// stopped, over what the `Launch` says.
///
/// ```
/// use std::process::Command;
/// use forkyard_child::Output;
/// use forkyard_supervise::{ChildSpec, Launch};
///
/// let spec = ChildSpec::new("worker", || {
///     let mut cmd = Command::new("sh");
///     cmd.args(["-c", "echo started; exec sleep 60"]);
///     Launch::new(cmd)
///         .stdout(Output::lines())
///         .on_spawn(|child| println!("worker is pid {}", child.id()))
/// });
/// # let _ = spec;
/// ```
pub use forkyard_child::Launch;

type Factory = Arc<dyn Fn() -> Launch + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Start {
    Process(Factory),
    Supervisor(Box<SupervisorBuilder>),
}

/// How to start, check and stop one supervised child, and what to do when it ends.
///
/// ```
/// use std::process::Command;
/// use std::time::Duration;
/// use forkyard_supervise::{Backoff, ChildSpec, Probe, Restart, Shutdown};
///
/// let web = ChildSpec::new("web", || Command::new("my-server"))
///     .restart(Restart::Permanent)
///     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)))
///     .readiness(Probe::tcp("127.0.0.1:8080"))
///     .liveness(Probe::http("http://127.0.0.1:8080/health").every(Duration::from_secs(1)))
///     .shutdown(Shutdown::Signal { grace: Duration::from_secs(5) });
/// # let _ = web;
/// ```
///
/// Defaults: [`Restart::Permanent`]; clean endings (for transient children) exit code 0 and
/// SIGHUP, SIGINT, SIGTERM, SIGPIPE (systemd's list); backoff exponential from 100 ms to 30 s
/// with 10 % jitter, forgotten after 30 s of uptime; no probes (ready as soon as spawned);
/// 30 s to become ready; SIGTERM with 5 s grace; critical, no breaker.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) start: Start,
    pub(crate) restart: Restart,
    pub(crate) clean: CleanExits,
    pub(crate) backoff: Backoff,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) optional: bool,
    pub(crate) readiness: Option<Probe>,
    pub(crate) liveness: Option<Probe>,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) shutdown: Shutdown,
    pub(crate) stop_signal: Signal,
    pub(crate) seed: Option<u64>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field(
                "start",
                &match &self.start {
                    Start::Process(_) => "process",
                    Start::Supervisor(_) => "supervisor",
                },
            )
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("breaker", &self.breaker)
            .field("optional", &self.optional)
            .field("readiness", &self.readiness)
            .field("liveness", &self.liveness)
            .field("start_timeout", &self.start_timeout)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// The breaker an optional child gets when none is given: open after 5 failures within a
/// minute, stay open 30 s, one trial.
fn default_optional_breaker() -> BreakerConfig {
    BreakerConfig::new(5, Duration::from_secs(60)).open_for(Duration::from_secs(30))
}

impl ChildSpec {
    fn with_start(name: impl Into<String>, start: Start) -> Self {
        let is_supervisor = matches!(start, Start::Supervisor(_));
        ChildSpec {
            name: name.into(),
            start,
            restart: Restart::Permanent,
            clean: CleanExits::default(),
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)),
            breaker: None,
            optional: false,
            readiness: None,
            liveness: None,
            start_timeout: (!is_supervisor).then_some(Duration::from_secs(30)),
            shutdown: Shutdown::default(),
            stop_signal: Signal::TERM,
            seed: None,
        }
    }

    /// A child process made by `launch`, which is called for every start and returns a
    /// [`Command`](std::process::Command) (or a [`Launch`] for more control).
    pub fn new<L: Into<Launch>>(
        name: impl Into<String>,
        launch: impl Fn() -> L + Send + Sync + 'static,
    ) -> Self {
        ChildSpec::with_start(name, Start::Process(Arc::new(move || launch().into())))
    }

    /// A nested supervisor: it is ready once all its children have started, is stopped by
    /// shutting it down (however long that takes, as OTP's `infinity`), and counts as having
    /// failed when it gives up, which is how a failure escalates up the tree.
    pub fn supervisor(name: impl Into<String>, supervisor: SupervisorBuilder) -> Self {
        ChildSpec::with_start(name, Start::Supervisor(Box::new(supervisor)))
    }

    /// When to restart it after it ends on its own.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Exit codes that count as clean for [`Restart::Transient`] (replaces the default `[0]`).
    pub fn clean_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.clean.codes = codes.into_iter().collect();
        self
    }

    /// Signals that count as clean for [`Restart::Transient`] (replaces the default SIGHUP,
    /// SIGINT, SIGTERM, SIGPIPE).
    pub fn clean_signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.clean.signals = signals.into_iter().collect();
        self
    }

    /// The delay before each restart.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A circuit breaker over its failures. When it opens, an optional child stays down until
    /// the half-open trial (and the group reports [`Health::Degraded`]); a critical child's
    /// opening breaker makes the supervisor give up.
    ///
    /// [`Health::Degraded`]: crate::Health::Degraded
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The group can serve without it: its restarts do not spend the group's restart budget,
    /// and when its breaker opens (default: 5 failures within a minute, open 30 s) it stays
    /// down while the group reports itself degraded, instead of escalating. Its own failures
    /// restart it alone whatever the group's strategy (a critical sibling's one_for_all or
    /// rest_for_one restart still includes it).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// The probe that gates "started": the child counts as ready once it passes.
    pub fn readiness(mut self, probe: Probe) -> Self {
        self.readiness = Some(probe);
        self
    }

    /// The probe that watches a ready child; failing it restarts the child as unhealthy.
    pub fn liveness(mut self, probe: Probe) -> Self {
        self.liveness = Some(probe);
        self
    }

    /// A child that is not ready this long after its spawn has failed to start (default 30 s;
    /// nested supervisors wait as long as their start takes).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// How it is stopped (ignored for nested supervisors, which always shut down fully).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The polite signal of [`Shutdown::Signal`] (default SIGTERM).
    pub fn stop_signal(mut self, signal: Signal) -> Self {
        self.stop_signal = signal;
        self
    }

    /// The seed of its backoff jitter (default: derived from the supervisor's seed and the
    /// child's name).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the spec and turns it into what the decision core needs.
    pub(crate) fn policy(&self, path: &str, group_seed: u64) -> Result<ChildPolicy, Error> {
        let invalid = |why: String| Error::InvalidSpec {
            what: format!("child {path}/{}", self.name),
            why,
        };
        if self.name.is_empty() || self.name.contains('/') {
            return Err(invalid(
                "a name must be non-empty and contain no '/'".into(),
            ));
        }
        let readiness = self
            .readiness
            .as_ref()
            .map(|p| p.timing(ProbeRole::Readiness))
            .transpose()
            .map_err(invalid)?;
        let liveness = self
            .liveness
            .as_ref()
            .map(|p| p.timing(ProbeRole::Liveness))
            .transpose()
            .map_err(invalid)?;
        if let Start::Supervisor(sub) = &self.start {
            if readiness.is_some() || liveness.is_some() {
                return Err(invalid(
                    "a nested supervisor has no probes: it is ready when its children are".into(),
                ));
            }
            sub.validate(&format!("{path}/{}", self.name))?;
        }
        let breaker = self
            .breaker
            .or_else(|| self.optional.then(default_optional_breaker));
        let seed = self
            .seed
            .unwrap_or_else(|| crate::backoff::splitmix64(group_seed ^ name_hash(&self.name)));
        Ok(ChildPolicy {
            name: self.name.clone(),
            restart: self.restart,
            clean: self.clean.clone(),
            backoff: self.backoff,
            breaker,
            optional: self.optional,
            readiness,
            liveness,
            notify_ready: matches!(self.start, Start::Supervisor(_)),
            start_timeout: self.start_timeout,
            seed,
        })
    }
}

/// FNV-1a: a stable hash of a name (std's hashers are randomly keyed per process).
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
