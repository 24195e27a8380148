//! What the monitor knows: watched pools and supervisors, their time series
//! (ring buffers), the event log, the alerts, and the snapshot built from them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use forkyard_perf::Snapshot as PerfSnapshot;
use forkyard_pool::{ExitCause, PoolEvent, Stats, Subscription};
use forkyard_supervise::{ChildState, EventKind, Health, Supervisor};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::actions::ActionLog;
use crate::alerts::{AlertRule, AlertState, Observation, Tracker, Transition};
use crate::auth::Access;
use crate::notify::{Notification, NotificationStatus, Notifier};

/// Locks a mutex, taking the data of a poisoned one (a panic elsewhere must
/// not stop the monitor from answering).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-12-07T12:40:00.123Z` from milliseconds since the Unix epoch.
pub(crate) fn unix_ms_to_rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---- the pieces of a snapshot ----------------------------------------------

/// How bad an event-log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Routine.
    Info,
    /// Worth a look.
    Warn,
    /// Something failed.
    Error,
}

/// What an event-log entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogKind {
    /// A process died unexpectedly (or failed to start).
    Crash,
    /// A process ended as planned.
    Exit,
    /// A process started.
    Spawn,
    /// A restart was scheduled or a replacement started.
    Restart,
    /// A worker was retired by a recycling rule or an operator.
    Recycle,
    /// A pool was resized.
    Resize,
    /// A circuit breaker opened (or a pool became degraded).
    BreakerOpen,
    /// A circuit breaker closed again (or a pool recovered).
    BreakerClose,
    /// A health probe failed.
    ProbeFailed,
    /// A supervisor's group is degraded or recovered, or it gave up.
    Health,
    /// An alert changed state.
    Alert,
    /// An operator acted.
    Action,
    /// A notification could not be delivered, or events were missed.
    Monitor,
    /// Anything else.
    Other,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// Its number (increasing from 1).
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `pool images`, `supervisor root`, or `monitor`.
    pub source: String,
    /// The worker or child it is about.
    pub subject: Option<String>,
    /// What kind of event.
    pub kind: LogKind,
    /// How bad.
    pub level: Level,
    /// In words.
    pub message: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Millis {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// One sample of a pool's time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PoolPoint {
    /// Seconds since the monitor started.
    pub t: f64,
    /// Tasks completed per second (the last complete second).
    pub tasks_per_sec: f64,
    /// Failed tasks per second, every kind.
    pub errors_per_sec: f64,
    /// Failed tasks per second, by kind.
    pub errors_by_kind: BTreeMap<String, f64>,
    /// Tasks waiting now.
    pub queue_depth: f64,
    /// Queue wait in the last complete second.
    pub queue_wait: Millis,
    /// Service time in the last complete second.
    pub service: Millis,
    /// Per live worker: its id, CPU in % of one CPU, resident memory in MiB.
    pub workers: Vec<WorkerPoint>,
    /// Replacement workers started since the pool started (cumulative).
    pub restarts: u64,
}

/// One worker in a [`PoolPoint`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WorkerPoint {
    /// The pool's id for it.
    pub worker: u64,
    /// CPU time per wall-clock time between its last two samples, in %.
    pub cpu_pct: Option<f64>,
    /// Resident memory, MiB.
    pub rss_mib: Option<f64>,
}

/// Whether a pool can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStatus {
    /// It has its workers (or is starting them).
    Ok,
    /// It cannot start workers: its breaker is open.
    Degraded,
}

/// Counts since the pool started (from `Pool::stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PoolTotals {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks that returned a result.
    pub completed: u64,
    /// Tasks that failed, every kind.
    pub failed: u64,
    /// Tasks that failed, by kind.
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Tasks whose caller stopped waiting.
    pub cancelled: u64,
    /// Re-runs after a worker died.
    pub retried: u64,
    /// Replacement workers started.
    pub restarts: u64,
    /// Workers that died unexpectedly.
    pub crashes: u64,
    /// Workers retired by a recycling rule.
    pub recycled: u64,
}

/// One worker of a pool, now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    /// The pool's id for it.
    pub worker: u64,
    /// Its pid.
    pub pid: Option<u32>,
    /// What it is doing.
    pub state: forkyard_pool::WorkerState,
    /// Tasks on it now.
    pub in_flight: usize,
    /// Tasks it completed.
    pub completed: u64,
    /// Resident memory at its last sample.
    pub rss_bytes: Option<u64>,
    /// CPU in % of one CPU between its last two samples.
    pub cpu_pct: Option<f64>,
}

/// One pool, now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolView {
    /// The name it is watched under.
    pub name: String,
    /// Whether it can serve.
    pub status: PoolStatus,
    /// Why it cannot start workers, when it cannot.
    pub degraded: Option<String>,
    /// The pool's size: the workers it keeps (see `Pool::resize`).
    pub size: usize,
    /// Ready workers (idle or busy).
    pub workers_ready: usize,
    /// Worker processes, in any state.
    pub workers: usize,
    /// Workers with a task.
    pub busy: usize,
    /// Tasks waiting.
    pub queue_depth: usize,
    /// Tasks running.
    pub running: usize,
    /// The last sample of its time series.
    pub last: PoolPoint,
    /// Counts since it started.
    pub totals: PoolTotals,
    /// Its workers.
    pub worker_list: Vec<WorkerView>,
    /// The cache in front of it, if one is watched.
    pub cache: Option<forkyard_perf::CacheStats>,
    /// forkyard-perf's verdicts: what limits it and what to do.
    pub verdicts: Vec<String>,
    /// The operator controls it offers (`resize`, `recycle_worker`,
    /// `breaker`, `drain`).
    pub actions: Vec<&'static str>,
}

/// One child of a supervisor tree, now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildView {
    /// Its path below the supervisor (`web`, or `db/primary` in a nested group).
    pub name: String,
    /// Nesting depth (0 for the supervisor's own children).
    pub depth: usize,
    /// Where it stands.
    pub state: ChildStateKind,
    /// The state in words (`backing off (restart in 400ms)`).
    pub state_text: String,
    /// The running instance's pid.
    pub pid: Option<u32>,
    /// How long the running instance has been up, in seconds.
    pub uptime_secs: Option<f64>,
    /// Restarts after its first start.
    pub restarts: u32,
    /// How its last run ended, in words.
    pub last_exit: Option<String>,
    /// Whether the group serves without it.
    pub optional: bool,
    /// Its last decision, from `Supervisor::explain`: what happened and
    /// what the supervisor did, with the rule.
    pub last_decision: Option<DecisionView>,
}

/// One decision of a supervisor about a child.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionView {
    /// When, seconds since the supervisor started.
    pub at_secs: f64,
    /// What happened.
    pub event: String,
    /// What it did, and why.
    pub decision: String,
}

/// A [`ChildState`] as a plain kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChildStateKind {
    /// Waiting for its turn.
    NotStarted,
    /// Spawned, not ready yet.
    Starting,
    /// Ready and running.
    Running,
    /// Asked to stop.
    Stopping,
    /// Waiting out its backoff.
    BackingOff,
    /// Its breaker is open.
    BreakerOpen,
    /// Stopped.
    Stopped,
    /// Ended, not restarted.
    Exited,
}

impl ChildStateKind {
    fn of(s: &ChildState) -> ChildStateKind {
        match s {
            ChildState::NotStarted => ChildStateKind::NotStarted,
            ChildState::Starting => ChildStateKind::Starting,
            ChildState::Running => ChildStateKind::Running,
            ChildState::Stopping => ChildStateKind::Stopping,
            ChildState::BackingOff { .. } => ChildStateKind::BackingOff,
            ChildState::BreakerOpen { .. } => ChildStateKind::BreakerOpen,
            ChildState::Stopped => ChildStateKind::Stopped,
            _ => ChildStateKind::Exited,
        }
    }
}

/// Whether a supervisor's group is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorHealth {
    /// Every child that should run is running or on its way back.
    Healthy,
    /// Optional children are down.
    Degraded,
    /// It has ended (shut down, or gave up).
    Ended,
}

/// One supervisor tree, now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorView {
    /// Its path (`root`).
    pub name: String,
    /// Whether its group is up.
    pub health: SupervisorHealth,
    /// Which optional children are down and why, or how it ended.
    pub detail: Option<String>,
    /// Its children, in start order, nested groups' children after their group.
    pub children: Vec<ChildView>,
}

/// Where an alert stands, on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Its condition holds, not yet for the rule's duration.
    Pending,
    /// Its condition has held for the rule's duration.
    Firing,
    /// It fired, and its condition no longer holds.
    Resolved,
}

/// One alert (a rule on one pool or supervisor).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// The rule's name.
    pub rule: String,
    /// The pool or supervisor.
    pub subject: String,
    /// Where it stands.
    pub status: AlertStatus,
    /// The rule's expression in words.
    pub condition: String,
    /// The figure at the last evaluation.
    pub value: f64,
    /// Since when the condition has held (ms since the epoch).
    pub active_since_ms: u64,
    /// When it fired.
    pub fired_at_ms: Option<u64>,
    /// When it resolved.
    pub resolved_at_ms: Option<u64>,
}

/// Everything the monitor shows, at one moment: what `/api/snapshot` serves
/// and what the page draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorSnapshot {
    /// Seconds since the monitor started.
    pub uptime_secs: f64,
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Seconds between samples.
    pub sample_secs: f64,
    /// The watched pools.
    pub pools: Vec<PoolView>,
    /// The watched supervisor trees.
    pub supervisors: Vec<SupervisorView>,
    /// Pending and firing alerts, then recently resolved ones.
    pub alerts: Vec<AlertView>,
    /// The alert rules.
    pub rules: Vec<AlertRule>,
    /// The newest event-log entries, newest last.
    pub events: Vec<LogEntry>,
}

// ---- the shared state -------------------------------------------------------

/// A watched pool, behind an object-safe face so pools of any types live
/// side by side.
pub(crate) trait PoolOps: Send + Sync {
    fn stats(&self) -> Stats;
    fn size(&self) -> usize;
    fn resize(&self, n: usize) -> Result<usize, forkyard_pool::ControlError>;
    fn recycle(&self, worker: u64) -> Result<(), forkyard_pool::ControlError>;
    fn set_breaker(&self, open: bool);
    fn drain(
        &self,
        grace: Duration,
    ) -> futures::future::BoxFuture<'static, forkyard_pool::ShutdownReport>;
}

impl<Req, Resp> PoolOps for forkyard_pool::Pool<Req, Resp>
where
    Req: forkyard_ipc::Message + Clone + Sync,
    Resp: forkyard_ipc::Message,
{
    fn stats(&self) -> Stats {
        forkyard_pool::Pool::stats(self)
    }

    fn size(&self) -> usize {
        forkyard_pool::Pool::size(self)
    }

    fn resize(&self, n: usize) -> Result<usize, forkyard_pool::ControlError> {
        forkyard_pool::Pool::resize(self, n)
    }

    fn recycle(&self, worker: u64) -> Result<(), forkyard_pool::ControlError> {
        forkyard_pool::Pool::recycle(self, worker)
    }

    fn set_breaker(&self, open: bool) {
        if open {
            self.open_breaker();
        } else {
            self.close_breaker();
        }
    }

    fn drain(
        &self,
        grace: Duration,
    ) -> futures::future::BoxFuture<'static, forkyard_pool::ShutdownReport> {
        let pool = self.clone();
        Box::pin(async move { forkyard_pool::Pool::drain(&pool, grace).await })
    }
}

/// The operator controls a pool offers, by name, for the page.
pub(crate) const POOL_ACTIONS: [&str; 4] = ["resize", "recycle_worker", "breaker", "drain"];

pub(crate) struct PoolEntry {
    pub(crate) name: String,
    pub(crate) ops: Arc<dyn PoolOps>,
    pub(crate) perf: forkyard_perf::Monitor,
    pub(crate) series: VecDeque<PoolPoint>,
    pub(crate) restarts_seen: VecDeque<(Instant, u64)>,
    pub(crate) forwarder: tokio::task::JoinHandle<()>,
}

pub(crate) struct SupEntry {
    pub(crate) name: String,
    pub(crate) sup: Supervisor,
    pub(crate) view: SupervisorView,
    pub(crate) restarts_seen: VecDeque<(Instant, u64)>,
    pub(crate) forwarder: tokio::task::JoinHandle<()>,
}

struct TrackedAlert {
    tracker: Tracker,
    view: AlertView,
}

#[derive(Default)]
pub(crate) struct Alerts {
    active: BTreeMap<(usize, String), TrackedAlert>,
    resolved: VecDeque<AlertView>,
}

pub(crate) struct EventLog {
    next: u64,
    entries: VecDeque<LogEntry>,
    cap: usize,
}

/// Settings fixed when the monitor is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) sample_every: Duration,
    pub(crate) retention: usize,
    pub(crate) max_body: usize,
    pub(crate) audit_log: Option<std::path::PathBuf>,
    pub(crate) snapshot_events: usize,
}

/// What the monitor's tasks and the HTTP server share.
pub(crate) struct Shared {
    pub(crate) started: Instant,
    pub(crate) settings: Settings,
    pub(crate) access: Access,
    pub(crate) rules: Vec<AlertRule>,
    pub(crate) notifiers: Vec<Notifier>,
    pub(crate) pools: Mutex<Vec<PoolEntry>>,
    pub(crate) sups: Mutex<Vec<SupEntry>>,
    pub(crate) log: Mutex<EventLog>,
    pub(crate) alerts: Mutex<Alerts>,
    pub(crate) actions: ActionLog,
    /// Server-sent events: the snapshot after every sample, as JSON.
    pub(crate) ticks: broadcast::Sender<Arc<str>>,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        access: Access,
        rules: Vec<AlertRule>,
        notifiers: Vec<Notifier>,
        actions: ActionLog,
        log_len: usize,
    ) -> Shared {
        Shared {
            started: Instant::now(),
            settings,
            access,
            rules,
            notifiers,
            pools: Mutex::new(Vec::new()),
            sups: Mutex::new(Vec::new()),
            log: Mutex::new(EventLog {
                next: 1,
                entries: VecDeque::new(),
                cap: log_len.max(1),
            }),
            alerts: Mutex::new(Alerts::default()),
            actions,
            ticks: broadcast::channel(16).0,
        }
    }

    pub(crate) fn log(
        &self,
        source: String,
        subject: Option<String>,
        kind: LogKind,
        level: Level,
        message: String,
    ) {
        let mut log = lock(&self.log);
        let seq = log.next;
        log.next += 1;
        if log.entries.len() == log.cap {
            log.entries.pop_front();
        }
        log.entries.push_back(LogEntry {
            seq,
            at_ms: unix_ms(),
            source,
            subject,
            kind,
            level,
            message,
        });
    }

    /// The whole event log kept (at most the configured length), oldest first.
    pub(crate) fn events(&self) -> Vec<LogEntry> {
        lock(&self.log).entries.iter().cloned().collect()
    }

    /// Each pool's time series, oldest first.
    pub(crate) fn series(&self) -> BTreeMap<String, Vec<PoolPoint>> {
        lock(&self.pools)
            .iter()
            .map(|p| (p.name.clone(), p.series.iter().cloned().collect()))
            .collect()
    }

    pub(crate) fn snapshot(&self) -> MonitorSnapshot {
        let pools = lock(&self.pools)
            .iter()
            .map(|p| pool_view(p, &p.perf.snapshot(), &p.ops.stats()))
            .collect();
        let supervisors = lock(&self.sups).iter().map(|s| s.view.clone()).collect();
        let alerts = {
            let a = lock(&self.alerts);
            a.active
                .values()
                .map(|t| t.view.clone())
                .chain(a.resolved.iter().rev().cloned())
                .collect()
        };
        let events = {
            let log = lock(&self.log);
            let n = log.entries.len();
            log.entries
                .iter()
                .skip(n.saturating_sub(self.settings.snapshot_events))
                .cloned()
                .collect()
        };
        MonitorSnapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            now_ms: unix_ms(),
            sample_secs: self.settings.sample_every.as_secs_f64(),
            pools,
            supervisors,
            alerts,
            rules: self.rules.clone(),
            events,
        }
    }

    /// One sample: supervisors' status, pools' points, alert evaluation,
    /// then the snapshot to every page that listens.
    pub(crate) async fn sample(
        self: &Arc<Self>,
        queues: &[tokio::sync::mpsc::Sender<Notification>],
    ) {
        let now = Instant::now();
        let sups: Vec<(String, Supervisor)> = lock(&self.sups)
            .iter()
            .map(|s| (s.name.clone(), s.sup.clone()))
            .collect();
        let mut observations: Vec<(String, Observation)> = Vec::new();
        for (name, sup) in sups {
            let view = supervisor_view(&name, &sup).await;
            let total: u64 = view.children.iter().map(|c| u64::from(c.restarts)).sum();
            let breaker_open = view
                .children
                .iter()
                .any(|c| c.state == ChildStateKind::BreakerOpen);
            let mut sups = lock(&self.sups);
            if let Some(entry) = sups.iter_mut().find(|s| s.name == name) {
                entry.view = view;
                let per_minute = per_minute(&mut entry.restarts_seen, now, total);
                observations.push((
                    name,
                    Observation {
                        restarts_last_minute: Some(per_minute),
                        breaker_open: Some(breaker_open),
                        ..Observation::default()
                    },
                ));
            }
        }
        let t = self.started.elapsed().as_secs_f64();
        {
            let mut pools = lock(&self.pools);
            for p in pools.iter_mut() {
                let snap = p.perf.snapshot();
                let stats = p.ops.stats();
                let point = pool_point(t, &snap, &stats);
                let degraded = stats.degraded.is_some();
                let per_min = per_minute(&mut p.restarts_seen, now, stats.restarts);
                observations.push((
                    p.name.clone(),
                    Observation {
                        error_rate: Some(point.errors_per_sec),
                        queue_wait_p99_ms: Some(point.queue_wait.p99_ms),
                        restarts_last_minute: Some(per_min),
                        breaker_open: Some(degraded),
                        max_worker_rss: Some(
                            stats
                                .workers
                                .iter()
                                .filter_map(|w| w.rss_bytes)
                                .max()
                                .unwrap_or(0),
                        ),
                    },
                ));
                if p.series.len() == self.settings.retention {
                    p.series.pop_front();
                }
                p.series.push_back(point);
            }
        }
        for n in self.evaluate(&observations, now) {
            for (queue, notifier) in queues.iter().zip(&self.notifiers) {
                if queue.try_send(n.clone()).is_err() {
                    self.log(
                        "monitor".to_owned(),
                        Some(format!("{} on {}", n.rule, n.subject)),
                        LogKind::Monitor,
                        Level::Warn,
                        format!(
                            "{} notification to {} dropped: {NOTIFY_QUEUE} are already waiting",
                            n.status,
                            notifier.describe()
                        ),
                    );
                }
            }
        }
        if self.ticks.receiver_count() > 0 {
            let json = serde_json::to_string(&self.snapshot()).unwrap_or_default();
            let _ = self.ticks.send(Arc::from(json));
        }
    }

    /// Runs every rule over every subject it applies to; logs transitions and
    /// returns the notifications to send.
    fn evaluate(&self, observations: &[(String, Observation)], now: Instant) -> Vec<Notification> {
        let now_ms = unix_ms();
        let mut out = Vec::new();
        let mut logs = Vec::new();
        {
            let mut alerts = lock(&self.alerts);
            for (idx, rule) in self.rules.iter().enumerate() {
                for (subject, obs) in observations {
                    if rule.only.as_ref().is_some_and(|o| o != subject) {
                        continue;
                    }
                    let Some((active, value)) = rule.condition.eval(obs) else {
                        continue;
                    };
                    let key = (idx, subject.clone());
                    let mut tracked = alerts.active.remove(&key).unwrap_or_else(|| TrackedAlert {
                        tracker: Tracker::new(),
                        view: AlertView {
                            rule: rule.name.clone(),
                            subject: subject.clone(),
                            status: AlertStatus::Pending,
                            condition: rule.condition.describe(),
                            value,
                            active_since_ms: now_ms,
                            fired_at_ms: None,
                            resolved_at_ms: None,
                        },
                    });
                    tracked.view.value = value;
                    let transition = tracked.tracker.step(active, now, rule.for_duration);
                    let summary = format!(
                        "{} on {subject}: {} (now {})",
                        rule.name,
                        rule.condition.describe(),
                        fmt_value(value)
                    );
                    match transition {
                        Some(Transition::Pending) => {
                            tracked.view.active_since_ms = now_ms;
                            tracked.view.status = AlertStatus::Pending;
                            logs.push((Level::Warn, format!("pending: {summary}")));
                        }
                        Some(Transition::Fired) => {
                            if tracked.view.status != AlertStatus::Pending {
                                tracked.view.active_since_ms = now_ms;
                            }
                            tracked.view.status = AlertStatus::Firing;
                            tracked.view.fired_at_ms = Some(now_ms);
                            logs.push((Level::Error, format!("firing: {summary}")));
                            out.push(Notification {
                                status: NotificationStatus::Firing,
                                rule: rule.name.clone(),
                                subject: subject.clone(),
                                summary: summary.clone(),
                                value,
                                starts_at_ms: now_ms,
                                ends_at_ms: None,
                            });
                        }
                        Some(Transition::Cancelled) => {
                            logs.push((Level::Info, format!("no longer pending: {summary}")));
                        }
                        Some(Transition::Resolved) => {
                            let mut view = tracked.view.clone();
                            view.status = AlertStatus::Resolved;
                            view.resolved_at_ms = Some(now_ms);
                            logs.push((Level::Info, format!("resolved: {summary}")));
                            out.push(Notification {
                                status: NotificationStatus::Resolved,
                                rule: rule.name.clone(),
                                subject: subject.clone(),
                                summary: summary.clone(),
                                value,
                                starts_at_ms: view.fired_at_ms.unwrap_or(now_ms),
                                ends_at_ms: Some(now_ms),
                            });
                            if alerts.resolved.len() == RESOLVED_KEPT {
                                alerts.resolved.pop_front();
                            }
                            alerts.resolved.push_back(view);
                        }
                        None => {}
                    }
                    if tracked.tracker.state != AlertState::Inactive {
                        alerts.active.insert(key, tracked);
                    }
                }
            }
        }
        for (level, message) in logs {
            self.log("monitor".to_owned(), None, LogKind::Alert, level, message);
        }
        out
    }
}

/// Notifications that may wait for one notifier (a receiver that is down
/// must not grow the monitor's memory); more are dropped, and logged.
pub(crate) const NOTIFY_QUEUE: usize = 64;

/// Delivers one notifier's notifications one at a time, in order (a
/// resolution never overtakes its firing), logging each that fails.
pub(crate) async fn deliver_in_order(
    notifier: Notifier,
    mut queue: tokio::sync::mpsc::Receiver<Notification>,
    shared: std::sync::Weak<Shared>,
) {
    while let Some(n) = queue.recv().await {
        let result = notifier.deliver(&n).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(why) = result {
            shared.log(
                "monitor".to_owned(),
                Some(format!("{} on {}", n.rule, n.subject)),
                LogKind::Monitor,
                Level::Warn,
                format!(
                    "{} notification to {} failed: {}",
                    n.status,
                    notifier.describe(),
                    why.chain()
                ),
            );
        }
    }
}

/// Resolved alerts kept for the page.
const RESOLVED_KEPT: usize = 20;

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Restarts within the last minute, from a cumulative count sampled now.
fn per_minute(seen: &mut VecDeque<(Instant, u64)>, now: Instant, total: u64) -> u64 {
    seen.push_back((now, total));
    while seen
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > Duration::from_secs(60))
    {
        seen.pop_front();
    }
    let oldest = seen.front().map_or(total, |(_, n)| *n);
    total.saturating_sub(oldest)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The last complete second of perf's per-second series.
fn last_second(snap: &PerfSnapshot) -> Option<&forkyard_perf::Point> {
    snap.seconds.iter().rev().find(|p| p.secs >= 0.999)
}

fn pool_point(t: f64, snap: &PerfSnapshot, stats: &Stats) -> PoolPoint {
    let second = last_second(snap);
    let errors_by_kind: BTreeMap<String, f64> =
        second.map(|s| s.errors_per_sec.clone()).unwrap_or_default();
    let cpu: HashMap<u64, Option<f64>> = snap
        .worker_figures
        .iter()
        .map(|w| (w.worker, w.cpu_ratio.map(|c| c * 100.0)))
        .collect();
    PoolPoint {
        t,
        tasks_per_sec: second.map_or(0.0, |s| s.tasks_per_sec),
        errors_per_sec: errors_by_kind.values().fold(0.0, |a, b| a + b),
        errors_by_kind,
        queue_depth: stats.queued as f64,
        queue_wait: second.map_or_else(Millis::default, |s| Millis {
            p50_ms: ms(s.queue_wait.p50_us),
            p99_ms: ms(s.queue_wait.p99_us),
        }),
        service: second.map_or_else(Millis::default, |s| Millis {
            p50_ms: ms(s.service.p50_us),
            p99_ms: ms(s.service.p99_us),
        }),
        workers: stats
            .workers
            .iter()
            .map(|w| WorkerPoint {
                worker: w.worker,
                cpu_pct: cpu.get(&w.worker).copied().flatten(),
                rss_mib: w.rss_bytes.map(|b| b as f64 / (1 << 20) as f64),
            })
            .collect(),
        restarts: stats.restarts,
    }
}

fn pool_view(p: &PoolEntry, snap: &PerfSnapshot, stats: &Stats) -> PoolView {
    let cpu: HashMap<u64, Option<f64>> = snap
        .worker_figures
        .iter()
        .map(|w| (w.worker, w.cpu_ratio.map(|c| c * 100.0)))
        .collect();
    PoolView {
        name: p.name.clone(),
        status: if stats.degraded.is_some() {
            PoolStatus::Degraded
        } else {
            PoolStatus::Ok
        },
        degraded: stats.degraded.clone(),
        size: p.ops.size(),
        workers_ready: stats.busy_workers + stats.idle_workers,
        workers: stats.workers.len(),
        busy: stats.busy_workers,
        queue_depth: stats.queued,
        running: stats.running,
        last: p.series.back().cloned().unwrap_or_default(),
        totals: PoolTotals {
            submitted: stats.submitted,
            completed: stats.completed,
            failed: stats.failed_total(),
            failed_by_kind: stats
                .failed
                .iter()
                .map(|(k, n)| (k.as_str().to_owned(), *n))
                .collect(),
            cancelled: stats.cancelled,
            retried: stats.retried,
            restarts: stats.restarts,
            crashes: stats.crashes,
            recycled: stats.recycled,
        },
        worker_list: stats
            .workers
            .iter()
            .map(|w| WorkerView {
                worker: w.worker,
                pid: w.pid,
                state: w.state,
                in_flight: w.in_flight,
                completed: w.completed,
                rss_bytes: w.rss_bytes,
                cpu_pct: cpu.get(&w.worker).copied().flatten(),
            })
            .collect(),
        cache: snap.cache.clone(),
        verdicts: forkyard_perf::verdicts(snap)
            .iter()
            .map(ToString::to_string)
            .collect(),
        actions: POOL_ACTIONS.to_vec(),
    }
}

/// Asks a supervisor for its tree, health and each child's last decision.
async fn supervisor_view(name: &str, sup: &Supervisor) -> SupervisorView {
    let status = match sup.status().await {
        Ok(s) => s,
        Err(e) => {
            return SupervisorView {
                name: name.to_owned(),
                health: SupervisorHealth::Ended,
                detail: Some(e.to_string()),
                children: Vec::new(),
            };
        }
    };
    // After the supervisor has ended, `status` still answers (its last
    // snapshot) and `health` says how it ended.
    let (health, detail) = match sup.health().await {
        Ok(Health::Degraded { which, why }) => (
            SupervisorHealth::Degraded,
            Some(format!("down: {} ({why})", which.join(", "))),
        ),
        Ok(_) => (SupervisorHealth::Healthy, None),
        Err(e) => (SupervisorHealth::Ended, Some(e.to_string())),
    };
    let mut children = Vec::with_capacity(status.len());
    for c in status {
        let last_decision = sup.explain(&c.name).await.ok().and_then(|e| {
            e.decisions.last().map(|d| DecisionView {
                at_secs: d.at.as_secs_f64(),
                event: d.event.clone(),
                decision: d.decision.clone(),
            })
        });
        children.push(ChildView {
            depth: c.name.matches('/').count(),
            state: ChildStateKind::of(&c.state),
            state_text: c.state.to_string(),
            pid: c.pid,
            uptime_secs: c.uptime.map(|u| u.as_secs_f64()),
            restarts: c.restarts,
            last_exit: c.last_exit.as_ref().map(ToString::to_string),
            optional: c.optional,
            last_decision,
            name: c.name,
        });
    }
    SupervisorView {
        name: name.to_owned(),
        health,
        detail,
        children,
    }
}

// ---- event forwarders ------------------------------------------------------

/// Copies the pool's notable events (crashes with their cause, restarts,
/// recycles, exits) into the event log.
pub(crate) async fn forward_pool(
    name: String,
    mut events: Subscription,
    shared: std::sync::Weak<Shared>,
) {
    let source = format!("pool {name}");
    let mut pids: HashMap<u64, u32> = HashMap::new();
    while let Some(event) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let entry = match event {
            PoolEvent::WorkerSpawned {
                worker,
                pid,
                replacement,
            } => {
                pids.insert(worker, pid);
                Some((
                    worker,
                    if replacement {
                        LogKind::Restart
                    } else {
                        LogKind::Spawn
                    },
                    Level::Info,
                    if replacement {
                        format!("worker {worker} (pid {pid}) started as a replacement")
                    } else {
                        format!("worker {worker} (pid {pid}) started")
                    },
                ))
            }
            PoolEvent::WorkerRecycled { worker, reason } => Some((
                worker,
                LogKind::Recycle,
                Level::Info,
                format!("worker {worker} recycled: {reason}"),
            )),
            PoolEvent::WorkerExited {
                worker,
                cause,
                exit,
            } => {
                let pid = pids
                    .remove(&worker)
                    .map_or(String::new(), |p| format!(" (pid {p})"));
                let (kind, level, what) = match cause {
                    ExitCause::Crashed => (LogKind::Crash, Level::Error, "crashed"),
                    ExitCause::StartFailed => (LogKind::Crash, Level::Error, "failed to start"),
                    ExitCause::TimedOut => {
                        (LogKind::Crash, Level::Error, "killed: a task timed out")
                    }
                    ExitCause::Protocol => (LogKind::Crash, Level::Error, "killed: protocol error"),
                    ExitCause::Drained => (LogKind::Exit, Level::Info, "drained"),
                    ExitCause::Shutdown => (LogKind::Exit, Level::Info, "stopped at shutdown"),
                };
                Some((
                    worker,
                    kind,
                    level,
                    format!("worker {worker}{pid} {what}: {exit}"),
                ))
            }
            PoolEvent::Resized { from, to } => Some((
                0,
                LogKind::Resize,
                Level::Info,
                format!("resized from {from} to {to} workers"),
            )),
            PoolEvent::BreakerOpened { operator } => Some((
                0,
                LogKind::BreakerOpen,
                if operator { Level::Warn } else { Level::Error },
                if operator {
                    "breaker opened by an operator: no worker starts until it is closed".to_owned()
                } else {
                    "breaker opened: workers fail to start; none starts until a trial succeeds"
                        .to_owned()
                },
            )),
            PoolEvent::BreakerClosed { operator } => Some((
                0,
                LogKind::BreakerClose,
                Level::Info,
                if operator {
                    "breaker closed by an operator: workers start again".to_owned()
                } else {
                    "breaker closed: a trial start succeeded".to_owned()
                },
            )),
            PoolEvent::ShuttingDown { drain, grace } => Some((
                0,
                LogKind::Exit,
                Level::Warn,
                if drain {
                    format!("draining: no new task is taken; queued and running ones get {grace:?}")
                } else {
                    format!("shutting down: queued tasks are cancelled; running ones get {grace:?}")
                },
            )),
            PoolEvent::Lagged { missed } => Some((
                0,
                LogKind::Monitor,
                Level::Warn,
                format!("the event log missed {missed} pool events (it fell behind)"),
            )),
            _ => None,
        };
        if let Some((worker, kind, level, message)) = entry {
            let subject =
                (worker != 0 || kind != LogKind::Monitor).then(|| format!("worker {worker}"));
            shared.log(source.clone(), subject, kind, level, message);
        }
    }
}

/// Copies a supervisor's events into the event log.
pub(crate) async fn forward_supervisor(
    name: String,
    mut events: forkyard_supervise::EventStream,
    shared: std::sync::Weak<Shared>,
) {
    while let Some(event) = events.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (kind, level) = match &event.kind {
            EventKind::Exited {
                expected: false, ..
            }
            | EventKind::SpawnFailed { .. } => (LogKind::Crash, Level::Error),
            EventKind::NotReady { .. } => (LogKind::Crash, Level::Error),
            EventKind::Exited { .. } => (LogKind::Exit, Level::Info),
            EventKind::Spawned { .. } | EventKind::Ready { .. } => (LogKind::Spawn, Level::Info),
            EventKind::Restarting { .. } | EventKind::Replaced { .. } => {
                (LogKind::Restart, Level::Warn)
            }
            EventKind::ProbeFailed { .. } | EventKind::Unhealthy { .. } => {
                (LogKind::ProbeFailed, Level::Warn)
            }
            EventKind::BreakerOpened { .. } => (LogKind::BreakerOpen, Level::Error),
            EventKind::BreakerClosed | EventKind::BreakerHalfOpen => {
                (LogKind::BreakerClose, Level::Info)
            }
            EventKind::Degraded { .. } => (LogKind::Health, Level::Warn),
            EventKind::GaveUp { .. } => (LogKind::Health, Level::Error),
            EventKind::Recovered | EventKind::Running | EventKind::Stopped => {
                (LogKind::Health, Level::Info)
            }
            EventKind::Lagged { .. } => (LogKind::Monitor, Level::Warn),
            _ => (LogKind::Other, Level::Info),
        };
        let source = if event.supervisor.is_empty() {
            format!("supervisor {name}")
        } else {
            format!("supervisor {}", event.supervisor)
        };
        shared.log(
            source,
            event.child.clone(),
            kind,
            level,
            event.kind.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_from_unix_ms() {
        assert_eq!(unix_ms_to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            unix_ms_to_rfc3339(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            unix_ms_to_rfc3339(1_796_648_400_000),
            "2026-12-07T13:00:00.000Z"
        );
    }

    #[test]
    fn restarts_per_minute_counts_the_last_60_seconds() {
        let t0 = Instant::now();
        let mut seen = VecDeque::new();
        let s = Duration::from_secs;
        assert_eq!(per_minute(&mut seen, t0, 3), 0);
        assert_eq!(per_minute(&mut seen, t0 + s(30), 5), 2);
        assert_eq!(per_minute(&mut seen, t0 + s(60), 9), 6);
        // The sample at t0 is now more than a minute old.
        assert_eq!(per_minute(&mut seen, t0 + s(61), 9), 4);
        assert_eq!(per_minute(&mut seen, t0 + s(200), 9), 0);
    }
}
