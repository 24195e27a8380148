//! [`Monitor`]: per-second time series of a pool (and its cache) from the
//! pool's event stream, a serde [`Snapshot`], and the Prometheus exposition.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkyard_pool::{ExitCause, Outcome, PoolEvent, Subscription};
use hdrhistogram::Histogram;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram as PromHistogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::advice::Advice;
use crate::cache::CacheStats;
use crate::verdict::{Verdict, verdicts};

/// Settings for a [`Monitor`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// How many minutes of per-minute history to keep (default 10). Per-second
    /// series cover the last minute.
    pub minutes: usize,
    /// The window the snapshot's "recent" figures and the verdicts look at
    /// (default 10 s).
    pub recent: Duration,
    /// The CPUs the machine has (default: what the OS says).
    pub cpus: usize,
    /// The hit rate the cache-size advice aims at (default 0.9).
    pub target_hit_rate: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            minutes: 10,
            recent: Duration::from_secs(10),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            target_hit_rate: 0.9,
        }
    }
}

type StatsFn = Box<dyn Fn() -> CacheStats + Send + Sync>;
type AdviceFn = Box<dyn Fn(f64) -> Option<Advice> + Send + Sync>;

/// Watches a pool through its event stream (and a cache, if told of one),
/// keeping per-second figures for the last minute and per-minute figures for
/// the last [`MonitorConfig::minutes`]. Made by [`Monitor::start`]; stops
/// when dropped or when the pool is gone.
pub struct Monitor {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) struct Inner {
    config: MonitorConfig,
    state: Mutex<State>,
    cache: Mutex<Option<(StatsFn, AdviceFn)>>,
    metrics: Metrics,
}

impl Monitor {
    /// Starts watching the pool whose events `events` brings (from
    /// [`Pool::subscribe`](forkyard_pool::Pool::subscribe), or from
    /// [`Builder::subscribe`](forkyard_pool::Builder::subscribe) to see the
    /// first workers start too). Needs a tokio runtime.
    pub fn start(events: Subscription, config: MonitorConfig) -> Monitor {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&config)),
            config,
            cache: Mutex::new(None),
            metrics: Metrics::new(),
        });
        let started = inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started;
        let task = tokio::spawn(run(events, Arc::downgrade(&inner), started));
        Monitor { inner, task }
    }

    /// Also watch this cache: its counters, hit rate and size advice go into
    /// the snapshots and the exposition.
    pub fn watch_cache<Req, Resp, B>(&self, cached: &crate::Cached<Req, Resp, B>)
    where
        Req: serde::Serialize + Send + Sync + 'static,
        Resp: serde::Serialize + Clone + Send + Sync + 'static,
        B: crate::Backend<Req, Resp>,
    {
        let (a, b) = (cached.clone(), cached.clone());
        *self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Box::new(move || a.stats()), Box::new(move |t| b.advise(t))));
    }

    /// Everything the monitor knows now.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// What limits throughput now, and what to do: [`verdicts`] over a
    /// [`snapshot`](Self::snapshot).
    pub fn verdicts(&self) -> Vec<Verdict> {
        verdicts(&self.snapshot())
    }

    /// The Prometheus (OpenMetrics) text exposition of the current figures.
    pub fn prometheus(&self) -> String {
        self.inner.prometheus()
    }

    /// Serves `/metrics` (the exposition), `/api/snapshot` (the snapshot as
    /// JSON) and `/api/verdicts` (the verdicts as JSON) over HTTP/1 on `addr` until the returned server is shut down
    /// or dropped. Use a loopback address unless the figures may be public.
    #[cfg(feature = "http")]
    pub async fn serve(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<crate::http::MetricsServer> {
        crate::http::serve(self.inner.clone(), addr).await
    }
}

impl Inner {
    pub(crate) fn snapshot(&self) -> Snapshot {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (stats, advice) = match &*cache {
            Some((stats, advise)) => (Some(stats()), advise(self.config.target_hit_rate)),
            None => (None, None),
        };
        drop(cache);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.advance(Instant::now());
        st.snapshot(&self.config, stats, advice)
    }

    pub(crate) fn prometheus(&self) -> String {
        let snap = self.snapshot();
        self.metrics.render(&snap)
    }
}

/// Reads events until the pool is gone or the monitor is dropped; rolls the
/// seconds over once a second.
async fn run(mut events: Subscription, inner: std::sync::Weak<Inner>, started: Instant) {
    // Ticks on the seconds' boundaries, so that each sample lands in the
    // second that just ended.
    let first = tokio::time::Instant::from_std(started + Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = CpuTimes::read();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let Some(inner) = inner.upgrade() else { return };
                inner.metrics.record(&event);
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                st.event(event, Instant::now());
                // Take what else is waiting under the same lock (a bounded
                // batch, so that snapshots are not kept waiting).
                for _ in 0..1024 {
                    let Some(event) = events.try_recv() else { break };
                    inner.metrics.record(&event);
                    st.event(event, Instant::now());
                }
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let now_cpu = CpuTimes::read();
                let util = match (&cpu, &now_cpu) {
                    (Some(a), Some(b)) => b.utilisation_since(a),
                    _ => None,
                };
                cpu = now_cpu;
                let hits = inner
                    .cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|(stats, _)| stats());
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                st.advance(Instant::now());
                st.sample(util, hits.as_ref());
            }
        }
    }
}

// ---- the state ------------------------------------------------------------

const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("valid bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).clamp(1, MAX_US));
}

/// One window's figures (a second, or a minute once merged).
#[derive(Clone)]
struct Window {
    /// Seconds since the monitor started, of the window's start.
    start: u64,
    /// Its length in seconds.
    secs: u64,
    submitted: u64,
    completed: u64,
    failed: BTreeMap<Outcome, u64>,
    restarts: u64,
    crashes: u64,
    /// Integrals over time (in worker-seconds, task-seconds).
    busy: f64,
    queued: f64,
    in_system: f64,
    workers: f64,
    queue_wait: Histogram<u64>,
    service: Histogram<u64>,
    end_to_end: Histogram<u64>,
    cpu_util: Option<f64>,
    cache_hits: u64,
    cache_lookups: u64,
}

impl Window {
    fn new(start: u64, secs: u64) -> Window {
        Window {
            start,
            secs,
            submitted: 0,
            completed: 0,
            failed: BTreeMap::new(),
            restarts: 0,
            crashes: 0,
            busy: 0.0,
            queued: 0.0,
            in_system: 0.0,
            workers: 0.0,
            queue_wait: histogram(),
            service: histogram(),
            end_to_end: histogram(),
            cpu_util: None,
            cache_hits: 0,
            cache_lookups: 0,
        }
    }

    fn merge(&mut self, o: &Window) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        for (k, v) in &o.failed {
            *self.failed.entry(*k).or_default() += v;
        }
        self.restarts += o.restarts;
        self.crashes += o.crashes;
        self.busy += o.busy;
        self.queued += o.queued;
        self.in_system += o.in_system;
        self.workers += o.workers;
        let _ = self.queue_wait.add(&o.queue_wait);
        let _ = self.service.add(&o.service);
        let _ = self.end_to_end.add(&o.end_to_end);
        self.cpu_util = match (self.cpu_util, o.cpu_util) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.cache_hits += o.cache_hits;
        self.cache_lookups += o.cache_lookups;
    }

    fn point(&self, elapsed: f64) -> Point {
        let secs = elapsed.max(1e-3);
        Point {
            start_secs: self.start,
            secs: elapsed,
            tasks_per_sec: self.completed as f64 / secs,
            submitted_per_sec: self.submitted as f64 / secs,
            errors_per_sec: self
                .failed
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v as f64 / secs))
                .collect(),
            busy_workers: self.busy / secs,
            workers: self.workers / secs,
            queue_depth: self.queued / secs,
            in_system: self.in_system / secs,
            queue_wait: Latency::of(&self.queue_wait),
            service: Latency::of(&self.service),
            end_to_end: Latency::of(&self.end_to_end),
            restarts: self.restarts,
            crashes: self.crashes,
            cpu_utilisation: self.cpu_util,
            cache_hit_rate: (self.cache_lookups > 0)
                .then(|| crate::cache::ratio(self.cache_hits, self.cache_lookups)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Queued,
    Running(u64),
}

#[derive(Default)]
struct WorkerState {
    pid: Option<u32>,
    ready: bool,
    running: usize,
    completed: u64,
    service: Option<Histogram<u64>>,
    first_rss: Option<(u64, u64)>,
    rss: Option<u64>,
    last_cpu: Option<(Instant, Duration)>,
    cpu_ratio: Option<f64>,
}

struct State {
    started: Instant,
    last: Instant,
    seconds: VecDeque<Window>,
    minutes: VecDeque<Window>,
    max_minutes: usize,
    tasks: FxHashMap<u64, TaskState>,
    queued: usize,
    running: usize,
    workers: BTreeMap<u64, WorkerState>,
    totals: Totals,
    last_cache: Option<(u64, u64)>,
}

impl State {
    fn new(config: &MonitorConfig) -> State {
        let now = Instant::now();
        State {
            started: now,
            last: now,
            seconds: VecDeque::from([Window::new(0, 1)]),
            minutes: VecDeque::new(),
            max_minutes: config.minutes.max(1),
            tasks: FxHashMap::default(),
            queued: 0,
            running: 0,
            workers: BTreeMap::new(),
            totals: Totals::default(),
            last_cache: None,
        }
    }

    fn busy_workers(&self) -> usize {
        self.workers.values().filter(|w| w.running > 0).count()
    }

    fn ready_workers(&self) -> usize {
        self.workers.values().filter(|w| w.ready).count()
    }

    /// Accounts the time since the last change to the current levels, and
    /// opens new seconds as time passes.
    fn advance(&mut self, now: Instant) {
        let (busy, queued, running, workers) = (
            self.busy_workers() as f64,
            self.queued as f64,
            self.running as f64,
            self.ready_workers() as f64,
        );
        let mut from = self.last;
        while from < now {
            let cur = self.seconds.back().expect("one second at least");
            let end = self.started + Duration::from_secs(cur.start + 1);
            let until = end.min(now);
            let dt = until.saturating_duration_since(from).as_secs_f64();
            let cur = self.seconds.back_mut().expect("one second at least");
            cur.busy += busy * dt;
            cur.queued += queued * dt;
            cur.in_system += (queued + running) * dt;
            cur.workers += workers * dt;
            from = until;
            if until == end {
                let next = cur.start + 1;
                self.roll(next);
            }
        }
        self.last = now;
    }

    fn roll(&mut self, next: u64) {
        self.seconds.push_back(Window::new(next, 1));
        while self.seconds.len() > 60 {
            let old = self.seconds.pop_front().expect("not empty");
            let minute = old.start / 60;
            match self.minutes.back_mut() {
                Some(m) if m.start / 60 == minute => {
                    m.merge(&old);
                    m.secs += 1;
                }
                _ => {
                    let mut m = Window::new(minute * 60, 1);
                    m.merge(&old);
                    self.minutes.push_back(m);
                    while self.minutes.len() > self.max_minutes {
                        self.minutes.pop_front();
                    }
                }
            }
        }
    }

    fn cur(&mut self) -> &mut Window {
        self.seconds.back_mut().expect("one second at least")
    }

    fn sample(&mut self, cpu_util: Option<f64>, cache: Option<&CacheStats>) {
        // The tick lands just after a second rolled over: the figures belong
        // to the second that just ended.
        let n = self.seconds.len();
        let target = if n >= 2 { n - 2 } else { n - 1 };
        if let Some(c) = cache {
            let lookups = c.hits + c.misses + c.coalesced;
            let (h0, l0) = self.last_cache.unwrap_or((0, 0));
            self.last_cache = Some((c.hits, lookups));
            let w = &mut self.seconds[target];
            w.cache_hits += c.hits.saturating_sub(h0);
            w.cache_lookups += lookups.saturating_sub(l0);
        }
        self.seconds[target].cpu_util = cpu_util;
    }

    fn event(&mut self, event: PoolEvent, now: Instant) {
        self.advance(now);
        match event {
            PoolEvent::Submitted { task } => {
                self.totals.submitted += 1;
                self.cur().submitted += 1;
                self.tasks.insert(task, TaskState::Queued);
                self.queued += 1;
            }
            PoolEvent::Dispatched {
                task,
                worker,
                queue_wait,
                ..
            } => {
                record(&mut self.cur().queue_wait, queue_wait);
                if let Some(s) = self.tasks.get_mut(&task) {
                    if *s == TaskState::Queued {
                        self.queued -= 1;
                    }
                    *s = TaskState::Running(worker);
                    self.running += 1;
                    self.workers.entry(worker).or_default().running += 1;
                }
            }
            PoolEvent::Retried { task, .. } => {
                self.totals.retried += 1;
                self.leave(task);
                self.tasks.insert(task, TaskState::Queued);
                self.queued += 1;
            }
            PoolEvent::Finished {
                task,
                worker,
                service,
                end_to_end,
                outcome,
            } => {
                self.leave(task);
                let cur = self.cur();
                record(&mut cur.end_to_end, end_to_end);
                if let Some(s) = service {
                    record(&mut cur.service, s);
                }
                match outcome {
                    Outcome::Completed => {
                        cur.completed += 1;
                        self.totals.completed += 1;
                    }
                    Outcome::Cancelled => self.totals.cancelled += 1,
                    Outcome::Failed(kind) => {
                        *cur.failed.entry(outcome).or_default() += 1;
                        *self
                            .totals
                            .failed
                            .entry(kind.as_str().to_owned())
                            .or_default() += 1;
                    }
                }
                if let (Some(w), Some(s)) = (worker.and_then(|w| self.workers.get_mut(&w)), service)
                {
                    if outcome == Outcome::Completed {
                        w.completed += 1;
                    }
                    record(w.service.get_or_insert_with(histogram), s);
                }
            }
            PoolEvent::WorkerSpawned {
                worker,
                pid,
                replacement,
            } => {
                self.workers.entry(worker).or_default().pid = Some(pid);
                if replacement {
                    self.totals.restarts += 1;
                    self.cur().restarts += 1;
                }
            }
            PoolEvent::WorkerReady { worker, .. } => {
                self.workers.entry(worker).or_default().ready = true;
            }
            PoolEvent::WorkerSampled {
                worker,
                rss_bytes,
                cpu,
            } => {
                let w = self.workers.entry(worker).or_default();
                w.rss = Some(rss_bytes);
                w.first_rss.get_or_insert((rss_bytes, w.completed));
                if let Some((t0, c0)) = w.last_cpu {
                    let wall = now.saturating_duration_since(t0).as_secs_f64();
                    if wall > 0.05 {
                        w.cpu_ratio = Some(cpu.saturating_sub(c0).as_secs_f64() / wall);
                        w.last_cpu = Some((now, cpu));
                    }
                } else {
                    w.last_cpu = Some((now, cpu));
                }
            }
            PoolEvent::WorkerRecycled { .. } => self.totals.recycled += 1,
            PoolEvent::WorkerExited { worker, cause, .. } => {
                if let Some(w) = self.workers.remove(&worker) {
                    self.running -= w.running.min(self.running);
                    self.tasks.retain(|_, s| *s != TaskState::Running(worker));
                }
                if cause == ExitCause::Crashed {
                    self.totals.crashes += 1;
                    self.cur().crashes += 1;
                }
                *self
                    .totals
                    .exits
                    .entry(cause.as_str().to_owned())
                    .or_default() += 1;
            }
            PoolEvent::Lagged { missed } => {
                // Levels are unknown now: start them afresh.
                self.totals.lagged += missed;
                self.tasks.clear();
                self.queued = 0;
                self.running = 0;
                for w in self.workers.values_mut() {
                    w.running = 0;
                }
            }
            _ => {}
        }
    }

    fn leave(&mut self, task: u64) {
        match self.tasks.remove(&task) {
            Some(TaskState::Queued) => self.queued -= 1,
            Some(TaskState::Running(w)) => {
                self.running -= 1;
                if let Some(w) = self.workers.get_mut(&w) {
                    w.running = w.running.saturating_sub(1);
                }
            }
            None => {}
        }
    }

    fn snapshot(
        &self,
        config: &MonitorConfig,
        cache: Option<CacheStats>,
        advice: Option<Advice>,
    ) -> Snapshot {
        let uptime = self
            .last
            .saturating_duration_since(self.started)
            .as_secs_f64();
        let elapsed_of = |w: &Window| {
            let end = (w.start + w.secs) as f64;
            (uptime.min(end) - w.start as f64).max(0.0)
        };
        // The recent window: the last `recent` seconds, the current partial one included.
        let want = config.recent.as_secs().max(1) as usize;
        let mut recent = Window::new(0, 0);
        let mut recent_secs = 0.0;
        for w in self.seconds.iter().rev().take(want + 1) {
            let e = elapsed_of(w);
            if recent_secs + e > want as f64 + 1e-9 && recent_secs > 0.0 {
                break;
            }
            recent.merge(w);
            recent.start = w.start;
            recent_secs += e;
        }
        // The current second's cache figures are not sampled yet; take the totals'.
        if recent.cache_lookups == 0
            && let Some(c) = &cache
        {
            recent.cache_hits = c.hits;
            recent.cache_lookups = c.hits + c.misses + c.coalesced;
        }
        let recent = recent.point(recent_secs);
        Snapshot {
            uptime_secs: uptime,
            cpus: config.cpus,
            workers: self.ready_workers(),
            busy_workers: self.busy_workers(),
            queue_depth: self.queued,
            running: self.running,
            totals: self.totals.clone(),
            recent,
            seconds: self
                .seconds
                .iter()
                .filter(|w| elapsed_of(w) > 0.0)
                .map(|w| w.point(elapsed_of(w)))
                .collect(),
            minutes: self
                .minutes
                .iter()
                .map(|w| w.point(w.secs as f64))
                .collect(),
            worker_figures: self
                .workers
                .iter()
                .map(|(&id, w)| WorkerFigures {
                    worker: id,
                    pid: w.pid,
                    running: w.running,
                    completed: w.completed,
                    rss_bytes: w.rss,
                    first_rss: w.first_rss.map(|(rss, _)| rss),
                    completed_at_first_rss: w.first_rss.map(|(_, n)| n),
                    cpu_ratio: w.cpu_ratio,
                    service: w.service.as_ref().map(Latency::of).unwrap_or_default(),
                })
                .collect(),
            cache,
            advice,
        }
    }
}

/// Counts since the monitor started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Totals {
    /// Tasks submitted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed, by kind.
    pub failed: BTreeMap<String, u64>,
    /// Tasks whose caller stopped waiting.
    pub cancelled: u64,
    /// Re-runs after a crash.
    pub retried: u64,
    /// Replacement workers started.
    pub restarts: u64,
    /// Workers that crashed.
    pub crashes: u64,
    /// Workers recycled.
    pub recycled: u64,
    /// Worker exits, by cause.
    pub exits: BTreeMap<String, u64>,
    /// Events the monitor missed because it fell behind.
    pub lagged: u64,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    /// Percentiles from microsecond figures (for tests and hand-made snapshots).
    pub fn from_us(count: u64, p50_us: u64, p99_us: u64) -> Latency {
        Latency {
            count,
            p50_us,
            p90_us: p99_us,
            p99_us,
            max_us: p99_us,
            mean_us: p50_us as f64,
        }
    }
}

/// One window of the time series (a second, a minute, or the recent window).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Point {
    /// Its start, in seconds since the monitor started.
    pub start_secs: u64,
    /// Its length in seconds (the current one may be partial).
    pub secs: f64,
    /// Tasks completed per second.
    pub tasks_per_sec: f64,
    /// Tasks submitted per second (the arrival rate).
    pub submitted_per_sec: f64,
    /// Failed tasks per second, by kind.
    pub errors_per_sec: BTreeMap<String, f64>,
    /// Workers with a task in flight, on average.
    pub busy_workers: f64,
    /// Ready workers, on average.
    pub workers: f64,
    /// Tasks waiting in the queue, on average.
    pub queue_depth: f64,
    /// Tasks queued or running, on average (Little's L).
    pub in_system: f64,
    /// Time from submission (or re-queueing) to dispatch.
    pub queue_wait: Latency,
    /// Time from dispatch to outcome (the round trip to the worker included).
    pub service: Latency,
    /// Time from submission to outcome.
    pub end_to_end: Latency,
    /// Replacement workers started.
    pub restarts: u64,
    /// Workers that crashed.
    pub crashes: u64,
    /// Share of the machine's CPU time busy (from `/proc/stat`), if known.
    pub cpu_utilisation: Option<f64>,
    /// The cache's hit rate in the window, if a cache is watched.
    pub cache_hit_rate: Option<f64>,
}

/// One live worker's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WorkerFigures {
    /// The pool's id for it.
    pub worker: u64,
    /// Its pid.
    pub pid: Option<u32>,
    /// Tasks on it now.
    pub running: usize,
    /// Tasks it completed.
    pub completed: u64,
    /// Resident memory at the last sample.
    pub rss_bytes: Option<u64>,
    /// Resident memory at the first sample.
    pub first_rss: Option<u64>,
    /// Tasks it had completed at the first sample.
    pub completed_at_first_rss: Option<u64>,
    /// CPU time per wall-clock time between its last two samples (1.0 = one CPU).
    pub cpu_ratio: Option<f64>,
    /// Its service times.
    pub service: Latency,
}

/// What a [`Monitor`] knows at one moment; serializes to JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Seconds since the monitor started.
    pub uptime_secs: f64,
    /// CPUs on the machine.
    pub cpus: usize,
    /// Ready workers now.
    pub workers: usize,
    /// Workers with a task in flight now.
    pub busy_workers: usize,
    /// Tasks waiting now.
    pub queue_depth: usize,
    /// Tasks running now.
    pub running: usize,
    /// Counts since the start.
    pub totals: Totals,
    /// The recent window (see [`MonitorConfig::recent`]): what verdicts read.
    pub recent: Point,
    /// Per second, the last minute.
    pub seconds: Vec<Point>,
    /// Per minute, older history.
    pub minutes: Vec<Point>,
    /// Live workers.
    pub worker_figures: Vec<WorkerFigures>,
    /// The cache's counters, if a cache is watched.
    pub cache: Option<CacheStats>,
    /// The cache-size advice, if the cache records a trace.
    pub advice: Option<Advice>,
}

impl Snapshot {
    /// The snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

// ---- machine CPU ----------------------------------------------------------

struct CpuTimes {
    idle: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 5 {
            return None;
        }
        Some(CpuTimes {
            idle: v[3] + v[4],
            total: v.iter().take(8).sum(),
        })
    }

    fn utilisation_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        (total > 0).then(|| 1.0 - idle as f64 / total as f64)
    }
}

// ---- Prometheus -----------------------------------------------------------

type Labels = Vec<(&'static str, String)>;

/// The live metrics, updated on each event; rendered with the levels of a
/// snapshot.
struct Metrics {
    tasks: Family<Labels, Counter>,
    submitted: Counter,
    retried: Counter,
    exits: Family<Labels, Counter>,
    restarts: Counter,
    queue_wait: PromHistogram,
    service: PromHistogram,
    end_to_end: PromHistogram,
}

fn seconds_histogram() -> PromHistogram {
    // 10 µs to about 84 s.
    PromHistogram::new(exponential_buckets(1e-5, 2.0, 24))
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            tasks: Family::default(),
            submitted: Counter::default(),
            retried: Counter::default(),
            exits: Family::default(),
            restarts: Counter::default(),
            queue_wait: seconds_histogram(),
            service: seconds_histogram(),
            end_to_end: seconds_histogram(),
        }
    }

    fn record(&self, event: &PoolEvent) {
        match event {
            PoolEvent::Submitted { .. } => {
                self.submitted.inc();
            }
            PoolEvent::Dispatched { queue_wait, .. } => {
                self.queue_wait.observe(queue_wait.as_secs_f64());
            }
            PoolEvent::Finished {
                service,
                end_to_end,
                outcome,
                ..
            } => {
                self.tasks
                    .get_or_create(&vec![("outcome", outcome.as_str().to_owned())])
                    .inc();
                if let Some(s) = service {
                    self.service.observe(s.as_secs_f64());
                }
                self.end_to_end.observe(end_to_end.as_secs_f64());
            }
            PoolEvent::Retried { .. } => {
                self.retried.inc();
            }
            PoolEvent::WorkerSpawned {
                replacement: true, ..
            } => {
                self.restarts.inc();
            }
            PoolEvent::WorkerExited { cause, .. } => {
                self.exits
                    .get_or_create(&vec![("cause", cause.as_str().to_owned())])
                    .inc();
            }
            _ => {}
        }
    }

    fn render(&self, snap: &Snapshot) -> String {
        let mut r = Registry::default();
        r.register(
            "forkyard_pool_tasks",
            "Tasks that got their outcome, by outcome",
            self.tasks.clone(),
        );
        r.register(
            "forkyard_pool_submitted",
            "Tasks submitted to the pool",
            self.submitted.clone(),
        );
        r.register(
            "forkyard_pool_retries",
            "Tasks re-run after their worker died",
            self.retried.clone(),
        );
        r.register(
            "forkyard_pool_worker_restarts",
            "Replacement workers started",
            self.restarts.clone(),
        );
        r.register(
            "forkyard_pool_worker_exits",
            "Worker processes that ended, by cause",
            self.exits.clone(),
        );
        r.register_with_unit(
            "forkyard_pool_queue_wait",
            "Time from submission to dispatch",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "forkyard_pool_service",
            "Time from dispatch to outcome",
            Unit::Seconds,
            self.service.clone(),
        );
        r.register_with_unit(
            "forkyard_pool_end_to_end",
            "Time from submission to outcome",
            Unit::Seconds,
            self.end_to_end.clone(),
        );
        r.register(
            "forkyard_pool_workers",
            "Ready workers",
            ConstGauge::new(snap.workers as i64),
        );
        r.register(
            "forkyard_pool_busy_workers",
            "Workers with a task in flight",
            ConstGauge::new(snap.busy_workers as i64),
        );
        r.register(
            "forkyard_pool_queue_depth",
            "Tasks waiting for a worker",
            ConstGauge::new(snap.queue_depth as i64),
        );
        let rss = Family::<Labels, Gauge>::default();
        let cpu = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for w in &snap.worker_figures {
            let labels = vec![("worker", w.worker.to_string())];
            if let Some(b) = w.rss_bytes {
                rss.get_or_create(&labels).set(b as i64);
            }
            if let Some(c) = w.cpu_ratio {
                cpu.get_or_create(&labels).set(c);
            }
        }
        r.register_with_unit(
            "forkyard_pool_worker_resident_memory",
            "Resident memory of each worker at its last sample",
            Unit::Bytes,
            rss,
        );
        r.register(
            "forkyard_pool_worker_cpu_ratio",
            "CPU time per wall-clock time of each worker between its last two samples",
            cpu,
        );
        if let Some(c) = &snap.cache {
            let lookups = Family::<Labels, Counter>::default();
            for (result, n) in [
                ("hit", c.hits),
                ("miss", c.misses),
                ("coalesced", c.coalesced),
                ("bypassed", c.bypassed),
            ] {
                lookups
                    .get_or_create(&vec![("result", result.to_owned())])
                    .inc_by(n);
            }
            r.register(
                "forkyard_cache_lookups",
                "Cache lookups, by result",
                lookups,
            );
            r.register(
                "forkyard_cache_inserts",
                "Entries put in the cache",
                ConstCounter::new(c.inserts),
            );
            let evictions = Family::<Labels, Counter>::default();
            for (cause, n) in [
                ("size", c.evicted_size),
                ("expired", c.evicted_expired),
                ("explicit", c.evicted_explicit),
                ("replaced", c.replaced),
            ] {
                evictions
                    .get_or_create(&vec![("cause", cause.to_owned())])
                    .inc_by(n);
            }
            r.register(
                "forkyard_cache_evictions",
                "Entries removed from the cache, by cause",
                evictions,
            );
            r.register_with_unit(
                "forkyard_cache_size",
                "Bytes held by the cache",
                Unit::Bytes,
                ConstGauge::new(c.bytes as i64),
            );
            r.register(
                "forkyard_cache_entries",
                "Entries held by the cache",
                ConstGauge::new(c.entries as i64),
            );
            r.register(
                "forkyard_cache_hit_ratio",
                "Hits per lookup since the start",
                ConstGauge::new(c.hit_rate),
            );
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}
