//! [`Monitor`]: what is watched, the sampler, and how to build one.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkyard_pool::Pool;
use forkyard_supervise::Supervisor;

use crate::actions::ActionLog;
use crate::alerts::AlertRule;
use crate::auth::Access;
use crate::error::MonitorError;
use crate::notify::Notifier;
use crate::state::{
    self, MonitorSnapshot, PoolEntry, PoolPoint, Settings, Shared, SupEntry, SupervisorHealth,
    SupervisorView, lock,
};

/// Settings for a [`Monitor`]; made by [`Monitor::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct MonitorBuilder {
    access: Access,
    rules: Vec<AlertRule>,
    notifiers: Vec<Notifier>,
    sample_every: Duration,
    retention: Duration,
    log_len: usize,
    snapshot_events: usize,
    max_body: usize,
    action_log: Option<PathBuf>,
    audit_log: Option<PathBuf>,
}

impl Default for MonitorBuilder {
    fn default() -> Self {
        MonitorBuilder {
            access: Access::new(),
            rules: Vec::new(),
            notifiers: Vec::new(),
            sample_every: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            log_len: 1000,
            snapshot_events: 200,
            max_body: 64 * 1024,
            action_log: None,
            audit_log: None,
        }
    }
}

impl MonitorBuilder {
    /// Who may read and act (default: nobody; every request gets 401).
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Adds an alert rule.
    pub fn alert(mut self, rule: AlertRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sends every alert that fires or resolves to `notifier` too.
    pub fn notify(mut self, notifier: Notifier) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// How often the monitor samples its pools and supervisors, evaluates
    /// the alert rules and pushes the page an update (default 1 s).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(10));
        self
    }

    /// How much history each pool's time series keeps (default 10 minutes):
    /// a ring buffer of `retention / sample_every` points.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How many event-log entries are kept (default 1000; the snapshot
    /// carries the newest 200).
    pub fn event_log_len(mut self, n: usize) -> Self {
        self.log_len = n.max(1);
        self
    }

    /// The largest request body accepted (default 64 KiB); larger ones get 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Appends every action attempt to this file as JSON lines (it is only
    /// ever appended to). Without it, actions are kept in memory only.
    pub fn action_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.action_log = Some(path.into());
        self
    }

    /// forkyard-secure's audit log, which the `auditor` role may read at
    /// `/api/audit` (with the result of verifying its hash chain).
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// Starts the monitor (its sampler runs on the current tokio runtime).
    pub fn build(self) -> Result<Monitor, MonitorError> {
        for rule in &self.rules {
            if rule.name.is_empty()
                || !rule
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(MonitorError::InvalidRule {
                    name: rule.name.clone(),
                    why: "a name is letters, digits and '_' (as Prometheus's alertname)".into(),
                });
            }
        }
        let actions = ActionLog::open(self.action_log.as_deref())?;
        let retention = (self.retention.as_secs_f64() / self.sample_every.as_secs_f64())
            .ceil()
            .max(2.0) as usize;
        let shared = Arc::new(Shared::new(
            Settings {
                sample_every: self.sample_every,
                retention,
                max_body: self.max_body,
                audit_log: self.audit_log,
                snapshot_events: self.snapshot_events.min(self.log_len),
            },
            self.access,
            self.rules,
            self.notifiers,
            actions,
            self.log_len,
        ));
        let sampler = tokio::spawn(sample_loop(Arc::downgrade(&shared)));
        Ok(Monitor {
            shared,
            sampler: Mutex::new(Some(sampler)),
        })
    }
}

/// Samples until the monitor is dropped; notifications in flight end with it.
async fn sample_loop(shared: std::sync::Weak<Shared>) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let every = strong.settings.sample_every;
    // One delivery task per notifier, fed through a bounded queue.
    let mut deliveries = tokio::task::JoinSet::new();
    let queues: Vec<_> = strong
        .notifiers
        .iter()
        .map(|n| {
            let (tx, rx) = tokio::sync::mpsc::channel(state::NOTIFY_QUEUE);
            deliveries.spawn(state::deliver_in_order(n.clone(), rx, shared.clone()));
            tx
        })
        .collect();
    drop(strong);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sample(&queues).await;
    }
}

/// Watches pools and supervisor trees, keeps their time series, an event
/// log and alerts, and serves them ([`serve`](Self::serve)). See the
/// [crate docs](crate).
///
/// Dropping it stops the sampler, the event forwarders and any notification
/// in flight, and lets go of the watched pools and supervisors (it holds a
/// handle on each while it watches: a pool it watches does not end before
/// it is unwatched or the monitor is dropped, unless shut down explicitly).
pub struct Monitor {
    pub(crate) shared: Arc<Shared>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.sampler).take() {
            task.abort();
        }
        for p in lock(&self.shared.pools).drain(..) {
            p.forwarder.abort();
        }
        for s in lock(&self.shared.sups).drain(..) {
            s.forwarder.abort();
        }
    }
}

fn check_name(name: &str) -> Result<(), MonitorError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(MonitorError::InvalidName(name.to_owned()));
    }
    Ok(())
}

impl Monitor {
    /// Settings for a monitor.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    /// Watches `pool` under `name` (letters, digits, `-`, `_`, `.`): its
    /// figures (through forkyard-perf's monitor, on the pool's event stream),
    /// its statistics, and its notable events (crashes with their cause,
    /// restarts, recycles) into the event log. Call it inside the tokio
    /// runtime. Figures start from now.
    pub fn watch_pool<Req, Resp>(
        &self,
        name: &str,
        pool: &Pool<Req, Resp>,
    ) -> Result<(), MonitorError>
    where
        Req: forkyard_ipc::Message + Clone + Sync,
        Resp: forkyard_ipc::Message,
    {
        check_name(name)?;
        let mut pools = lock(&self.shared.pools);
        if pools.iter().any(|p| p.name == name) {
            return Err(MonitorError::DuplicateName {
                kind: "pool",
                name: name.to_owned(),
            });
        }
        let perf = forkyard_perf::Monitor::start(
            pool.subscribe(),
            forkyard_perf::MonitorConfig::default(),
        );
        let forwarder = tokio::spawn(state::forward_pool(
            name.to_owned(),
            pool.subscribe(),
            Arc::downgrade(&self.shared),
        ));
        pools.push(PoolEntry {
            name: name.to_owned(),
            ops: Arc::new(pool.clone()),
            perf,
            series: VecDeque::new(),
            restarts_seen: VecDeque::new(),
            forwarder,
        });
        Ok(())
    }

    /// Also shows the cache in front of the pool watched as `pool`: its
    /// hits, misses, evictions and size advice.
    pub fn watch_cache<Req, Resp, B>(
        &self,
        pool: &str,
        cached: &forkyard_perf::Cached<Req, Resp, B>,
    ) -> Result<(), MonitorError>
    where
        Req: serde::Serialize + Send + Sync + 'static,
        Resp: serde::Serialize + Clone + Send + Sync + 'static,
        B: forkyard_perf::Backend<Req, Resp>,
    {
        let pools = lock(&self.shared.pools);
        let entry = pools
            .iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| MonitorError::NoSuchPool(pool.to_owned()))?;
        entry.perf.watch_cache(cached);
        Ok(())
    }

    /// Stops watching the pool `name` and lets go of its handle.
    pub fn unwatch_pool(&self, name: &str) -> Result<(), MonitorError> {
        let mut pools = lock(&self.shared.pools);
        let idx = pools
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| MonitorError::NoSuchPool(name.to_owned()))?;
        pools.remove(idx).forwarder.abort();
        Ok(())
    }

    /// Watches a supervisor tree under its path (`root`): each child's
    /// state, restarts and last decision (`explain`), its health, and its
    /// events into the event log. Call it inside the tokio runtime.
    pub fn watch_supervisor(&self, sup: &Supervisor) -> Result<(), MonitorError> {
        let name = sup.path().to_owned();
        check_name(&name)?;
        let mut sups = lock(&self.shared.sups);
        if sups.iter().any(|s| s.name == name) {
            return Err(MonitorError::DuplicateName {
                kind: "supervisor",
                name,
            });
        }
        let forwarder = tokio::spawn(state::forward_supervisor(
            name.clone(),
            sup.events(),
            Arc::downgrade(&self.shared),
        ));
        sups.push(SupEntry {
            view: SupervisorView {
                name: name.clone(),
                health: SupervisorHealth::Healthy,
                detail: None,
                children: Vec::new(),
            },
            name,
            sup: sup.clone(),
            restarts_seen: VecDeque::new(),
            forwarder,
        });
        Ok(())
    }

    /// Everything the page shows, now (what `/api/snapshot` serves).
    /// Supervisor trees are as of the last sample.
    pub fn snapshot(&self) -> MonitorSnapshot {
        self.shared.snapshot()
    }

    /// Each pool's time series (what `/api/series` serves), oldest first.
    pub fn series(&self) -> std::collections::BTreeMap<String, Vec<PoolPoint>> {
        self.shared.series()
    }

    /// The Prometheus (OpenMetrics) text `/metrics` serves.
    pub fn prometheus(&self) -> String {
        crate::metrics::render(&self.shared)
    }

    /// Serves the page, the API and `/metrics` over HTTP/1 on `addr` until
    /// the returned [`Server`](crate::Server) is shut down or dropped. Use a
    /// loopback address unless you mean to expose it (tokens travel in
    /// clear text over plain HTTP).
    pub async fn serve(&self, addr: std::net::SocketAddr) -> Result<crate::Server, MonitorError> {
        crate::http::serve_tcp(self.shared.clone(), addr).await
    }

    /// Serves the same on a Unix socket at `path` (created; removed when
    /// the server ends). Peers are identified by their uid
    /// ([`Access::uid`]), read from the socket with `SO_PEERCRED`; a peer
    /// whose uid has no role may still send a bearer token.
    pub async fn serve_unix(
        &self,
        path: impl Into<PathBuf>,
    ) -> Result<crate::Server, MonitorError> {
        crate::http::serve_unix(self.shared.clone(), path.into()).await
    }
}
