//! Health probes: what they check, and how one probe run is carried out.
//!
//! The *schedule* of probes (initial delay, period, thresholds) is decided by the pure core;
//! this module only performs one run with its timeout and says pass or fail.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use forkyard_child::{Child, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::decide::ProbeTiming;
use crate::event::{ProbeRole, fmt_duration};

/// One heartbeat from a child: it is alive, and has made this much progress.
///
/// `progress` is any counter the child increases while it does useful work (requests served,
/// loop iterations, bytes processed). A child that keeps sending heartbeats with the same
/// progress is alive but stuck (a livelock), and fails a liveness probe just like a child that
/// stopped sending them (a deadlock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The child's progress counter.
    pub progress: u64,
}

impl Heartbeat {
    /// A heartbeat carrying `progress`.
    pub fn new(progress: u64) -> Self {
        Heartbeat { progress }
    }
}

type CommandFactory = Arc<dyn Fn() -> Command + Send + Sync>;

#[derive(Clone)]
enum Check {
    Tcp(String),
    Http(HttpTarget),
    Exec(CommandFactory),
    Heartbeat(watch::Receiver<Heartbeat>),
    File(PathBuf),
    Invalid(String),
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp(addr) => write!(f, "tcp {addr}"),
            Check::Http(t) => write!(f, "http GET {}:{}{}", t.host, t.port, t.path),
            Check::Exec(_) => f.write_str("exec"),
            Check::Heartbeat(_) => f.write_str("heartbeat"),
            Check::File(path) => write!(f, "file {}", path.display()),
            Check::Invalid(why) => write!(f, "invalid ({why})"),
        }
    }
}

/// A health check with Kubernetes timing: initial delay, period, timeout, and failure and
/// success thresholds.
///
/// Used as a readiness probe ([`ChildSpec::readiness`]) it gates "started": the child is ready
/// after `successes` consecutive passes, and has failed to start after `failures` consecutive
/// failures (by default a readiness probe has no failure threshold: a server that is not
/// listening yet is normal while it starts, and the start timeout bounds the wait). Used as a
/// liveness probe ([`ChildSpec::liveness`]) it watches a ready child: `failures` consecutive
/// failures (default 3) restart the child as unhealthy.
///
/// Defaults: no initial delay; a period of 50 ms for readiness and 1 s for liveness; a timeout
/// of 1 s. A run may take up to its timeout even when that is longer than the period; the
/// next run then starts right after it.
///
/// ```
/// use std::time::Duration;
/// use forkyard_supervise::Probe;
///
/// let probe = Probe::http("http://127.0.0.1:8080/health")
///     .initial_delay(Duration::from_secs(1))
///     .every(Duration::from_millis(500))
///     .timeout(Duration::from_millis(200))
///     .failures(3);
/// # let _ = probe;
/// ```
///
/// [`ChildSpec::readiness`]: crate::ChildSpec::readiness
/// [`ChildSpec::liveness`]: crate::ChildSpec::liveness
#[derive(Debug, Clone)]
pub struct Probe {
    check: Check,
    initial_delay: Duration,
    period: Option<Duration>,
    timeout: Duration,
    failures: Option<u32>,
    successes: u32,
}

impl Probe {
    fn with(check: Check) -> Self {
        Probe {
            check,
            initial_delay: Duration::ZERO,
            period: None,
            timeout: Duration::from_secs(1),
            failures: None,
            successes: 1,
        }
    }

    /// Passes when a TCP connection to `addr` (`host:port`) succeeds.
    ///
    /// Note that the kernel completes connections to a listening socket by itself, so this
    /// tells "listening" from "not listening", not "answering" from "hung": use an HTTP or
    /// heartbeat probe for liveness.
    pub fn tcp(addr: impl Into<String>) -> Self {
        Probe::with(Check::Tcp(addr.into()))
    }

    /// Passes when `GET url` answers with a status from 200 to 399 (Kubernetes' rule).
    ///
    /// Only `http://host:port/path` URLs: this is a health check on a local or cluster-internal
    /// port, done with a minimal HTTP/1.1 request (`Connection: close`) rather than a full
    /// client. An invalid URL is reported when the supervisor starts.
    pub fn http(url: impl AsRef<str>) -> Self {
        match HttpTarget::parse(url.as_ref()) {
            Ok(target) => Probe::with(Check::Http(target)),
            Err(why) => Probe::with(Check::Invalid(why)),
        }
    }

    /// Runs a command; passes when it exits with code 0 within the timeout (it is killed, with
    /// its whole process group, when it takes longer).
    pub fn exec(command: impl Fn() -> Command + Send + Sync + 'static) -> Self {
        Probe::with(Check::Exec(Arc::new(command)))
    }

    /// Watches heartbeats that you feed into a [`tokio::sync::watch`] channel.
    ///
    /// As readiness: passes at the first heartbeat of the new instance (a "ready" message).
    /// As liveness: each run passes only if a heartbeat arrived since the previous run (waiting
    /// up to the timeout for one) *and* its progress differs from the last passing one, so a
    /// child that is stuck but still beats (livelock) fails like one that stopped (deadlock).
    ///
    /// Send heartbeats with [`watch::Sender::send_replace`] (or `send`): every send counts as a
    /// beat, even with an unchanged value. Heartbeats from before an instance started are
    /// ignored.
    ///
    /// # Wiring it to an ipc channel
    ///
    /// The child sends a message with its progress counter every so often over its ipc channel
    /// (`forkyard-ipc`); a task in the parent forwards them:
    ///
    /// ```text
    /// let (beats, rx) = tokio::sync::watch::channel(Heartbeat::default());
    /// let spec = ChildSpec::new("worker", move || {
    ///     let (parent_end, child_end) = /* socketpair */;
    ///     let beats = beats.clone();
    ///     tokio::spawn(async move {
    ///         let mut channel = Channel::from_fd(parent_end);
    ///         while let Ok(Msg::Beat { progress }) = channel.recv().await {
    ///             beats.send_replace(Heartbeat::new(progress));
    ///         }
    ///     });
    ///     Launch::new(command).pass_fd(child_end, 3)
    /// })
    /// .liveness(Probe::heartbeat(rx).every(Duration::from_secs(1)));
    /// ```
    pub fn heartbeat(beats: watch::Receiver<Heartbeat>) -> Self {
        Probe::with(Check::Heartbeat(beats))
    }

    /// Passes when `path` exists (a child that touches a file when ready).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Probe::with(Check::File(path.into()))
    }

    /// Wait this long after start (readiness) or after ready (liveness) before the first run.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Time from the start of one run to the start of the next (Kubernetes `periodSeconds`).
    pub fn every(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// A run that takes longer fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures that count: a failed start (readiness) or unhealthy (liveness).
    pub fn failures(mut self, n: u32) -> Self {
        self.failures = Some(n);
        self
    }

    /// Consecutive passes needed to become ready. Liveness probes must keep the default of 1
    /// (as in Kubernetes); anything else is refused when the supervisor starts.
    pub fn successes(mut self, n: u32) -> Self {
        self.successes = n;
        self
    }

    /// Checks the settings for a role and resolves its defaults.
    pub(crate) fn timing(&self, role: ProbeRole) -> Result<ProbeTiming, String> {
        if let Check::Invalid(why) = &self.check {
            return Err(why.clone());
        }
        if let Check::Tcp(addr) = &self.check
            && !addr.contains(':')
        {
            return Err(format!("tcp probe address {addr:?} has no port"));
        }
        let period = self.period.unwrap_or(match role {
            ProbeRole::Readiness => Duration::from_millis(50),
            ProbeRole::Liveness => Duration::from_secs(1),
        });
        if period.is_zero() {
            return Err(format!("{role} probe period must be more than zero"));
        }
        if self.timeout.is_zero() {
            return Err(format!("{role} probe timeout must be more than zero"));
        }
        if self.successes == 0 {
            return Err(format!("{role} probe success threshold must be at least 1"));
        }
        if role == ProbeRole::Liveness && self.successes != 1 {
            return Err("a liveness probe's success threshold must be 1".into());
        }
        if self.failures == Some(0) {
            return Err(format!("{role} probe failure threshold must be at least 1"));
        }
        Ok(ProbeTiming {
            initial_delay: self.initial_delay,
            period,
            timeout: self.timeout,
            failure_threshold: match role {
                ProbeRole::Readiness => self.failures,
                ProbeRole::Liveness => Some(self.failures.unwrap_or(3)),
            },
            success_threshold: self.successes,
        })
    }

    /// A runner for one instance of a child.
    pub(crate) fn runner(&self, role: ProbeRole) -> ProbeRunner {
        let check = match &self.check {
            Check::Heartbeat(rx) => {
                let mut rx = rx.clone();
                // Beats sent before this instance existed do not count for it.
                rx.mark_unchanged();
                Check::Heartbeat(rx)
            }
            other => other.clone(),
        };
        ProbeRunner {
            check,
            role,
            timeout: self.timeout,
            last_progress: None,
        }
    }
}

/// Runs one kind of probe for one instance; keeps what a heartbeat probe must remember.
#[derive(Debug)]
pub(crate) struct ProbeRunner {
    check: Check,
    role: ProbeRole,
    timeout: Duration,
    last_progress: Option<u64>,
}

impl ProbeRunner {
    /// One run, bounded by the probe's timeout.
    pub(crate) async fn run(&mut self) -> Result<(), String> {
        let timeout = self.timeout;
        if let Check::Heartbeat(rx) = &mut self.check {
            // Bounded by its own wait, which says what was missing.
            return heartbeat(rx, self.role, timeout, &mut self.last_progress).await;
        }
        let run = async {
            match &mut self.check {
                Check::Tcp(addr) => TcpStream::connect(addr.as_str())
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect {addr}: {e}")),
                Check::Http(target) => http_get(target).await,
                Check::Exec(factory) => exec(factory).await,
                Check::File(path) => match tokio::fs::try_exists(&*path).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!("{} does not exist", path.display())),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                },
                Check::Heartbeat(_) => Ok(()),
                Check::Invalid(why) => Err(why.clone()),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}", fmt_duration(timeout))),
        }
    }
}

/// One heartbeat probe run: waits up to `timeout` for a beat, then checks its progress.
async fn heartbeat(
    rx: &mut watch::Receiver<Heartbeat>,
    role: ProbeRole,
    timeout: Duration,
    last_progress: &mut Option<u64>,
) -> Result<(), String> {
    let beat = match rx.has_changed() {
        Ok(true) => *rx.borrow_and_update(),
        Ok(false) => match tokio::time::timeout(timeout, rx.changed()).await {
            Ok(Ok(())) => *rx.borrow_and_update(),
            Ok(Err(_)) => return Err("heartbeat channel closed".into()),
            Err(_) => {
                return Err(format!("no heartbeat within {}", fmt_duration(timeout)));
            }
        },
        Err(_) => return Err("heartbeat channel closed".into()),
    };
    if role == ProbeRole::Liveness
        && let Some(last) = *last_progress
        && last == beat.progress
    {
        return Err(format!(
            "heartbeats but no progress (stuck at {})",
            beat.progress
        ));
    }
    *last_progress = Some(beat.progress);
    Ok(())
}

async fn exec(factory: &CommandFactory) -> Result<(), String> {
    let mut cmd = factory();
    cmd.stdin(Stdio::null());
    let mut child = Child::builder(&mut cmd)
        .stdout(Output::null())
        .stderr(Output::null())
        .spawn()
        .map_err(|e| format!("exec probe: {e}"))?;
    // Dropped on timeout: the `Child` then SIGKILLs the probe's whole group.
    let exit = child.wait().await.map_err(|e| format!("exec probe: {e}"))?;
    if exit.success() {
        Ok(())
    } else {
        Err(format!("exec probe {exit}"))
    }
}

/// Where an HTTP probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    pub(crate) fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("http probe URL {url:?} must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "http probe URL {url:?}: credentials are not supported"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("http probe URL {url:?}: bad port {port:?}"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("http probe URL {url:?} has no host"));
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "http probe URL {url:?}: bad characters in the path"
            ));
        }
        Ok(HttpTarget {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// The most a probe reads of a response before giving up on finding the status line.
const MAX_HEAD: usize = 8 * 1024;

/// `GET path` over HTTP/1.1; passes on 200..=399. Reads only the status line.
async fn http_get(target: &HttpTarget) -> Result<(), String> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = TcpStream::connect((host, target.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", target.host, target.port))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: forkyard-supervise\r\nConnection: close\r\n\r\n",
        target.path, target.host, target.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let line_end = loop {
        if let Some(i) = head.windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if head.len() > MAX_HEAD {
            return Err("no status line in the first 8 KiB of the response".into());
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            if head.is_empty() {
                return Err("connection closed without a response".into());
            }
            break head.len();
        }
        head.extend_from_slice(&buf[..n]);
    };
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {line:?}"));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let ok = |url: &str, host: &str, port: u16, path: &str| {
            assert_eq!(
                HttpTarget::parse(url),
                Ok(HttpTarget {
                    host: host.into(),
                    port,
                    path: path.into()
                }),
                "{url}"
            );
        };
        ok("http://127.0.0.1:8080/health", "127.0.0.1", 8080, "/health");
        ok("http://localhost/", "localhost", 80, "/");
        ok("http://localhost", "localhost", 80, "/");
        ok("http://[::1]:9000/x?y=1", "[::1]", 9000, "/x?y=1");
        for bad in [
            "https://x/",
            "127.0.0.1:80/",
            "http://:80/",
            "http://h:port/",
            "http://u:p@h/",
            "http://h/a b",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timing_defaults_and_validation() {
        let p = Probe::tcp("127.0.0.1:1");
        let r = p.timing(ProbeRole::Readiness).unwrap();
        assert_eq!(r.period, Duration::from_millis(50));
        assert_eq!(r.failure_threshold, None);
        let l = p.timing(ProbeRole::Liveness).unwrap();
        assert_eq!(l.period, Duration::from_secs(1));
        assert_eq!(l.failure_threshold, Some(3));
        let errors = [
            (Probe::tcp("nohost"), ProbeRole::Readiness),
            (Probe::http("ftp://x"), ProbeRole::Readiness),
            (Probe::tcp("h:1").every(Duration::ZERO), ProbeRole::Liveness),
            (
                Probe::tcp("h:1").timeout(Duration::ZERO),
                ProbeRole::Liveness,
            ),
            (Probe::tcp("h:1").successes(2), ProbeRole::Liveness),
            (Probe::tcp("h:1").successes(0), ProbeRole::Readiness),
            (Probe::tcp("h:1").failures(0), ProbeRole::Readiness),
        ];
        for (probe, role) in errors {
            assert!(probe.timing(role).is_err(), "{probe:?} as {role}");
        }
        assert_eq!(
            Probe::tcp("h:1")
                .successes(2)
                .timing(ProbeRole::Readiness)
                .unwrap()
                .success_threshold,
            2
        );
    }

    #[tokio::test]
    async fn heartbeat_catches_deadlock_and_livelock() {
        let (tx, rx) = watch::channel(Heartbeat::default());
        tx.send_replace(Heartbeat::new(5)); // before the instance: ignored
        let probe = Probe::heartbeat(rx).timeout(Duration::from_millis(20));
        let mut live = probe.runner(ProbeRole::Liveness);
        // No beat since the instance started: deadlock.
        let err = live.run().await.unwrap_err();
        assert!(err.starts_with("no heartbeat within"), "{err}");
        tx.send_replace(Heartbeat::new(6));
        assert_eq!(live.run().await, Ok(()));
        tx.send_replace(Heartbeat::new(7));
        assert_eq!(live.run().await, Ok(()));
        // Beating, but stuck at 7: livelock.
        tx.send_replace(Heartbeat::new(7));
        assert_eq!(
            live.run().await,
            Err("heartbeats but no progress (stuck at 7)".into())
        );
        tx.send_replace(Heartbeat::new(8));
        assert_eq!(live.run().await, Ok(()));
        // A beat that arrives while the probe waits counts.
        let sender = tx.clone();
        let wait = tokio::spawn(async move {
            let mut r = Probe::heartbeat(sender.subscribe())
                .timeout(Duration::from_secs(30))
                .runner(ProbeRole::Readiness);
            r.run().await
        });
        tokio::task::yield_now().await;
        while !wait.is_finished() {
            tx.send_replace(Heartbeat::new(9));
            tokio::task::yield_now().await;
        }
        assert_eq!(wait.await.unwrap(), Ok(()));
        drop(tx);
        let err = live.run().await.unwrap_err();
        assert_eq!(err, "heartbeat channel closed");
    }
}
