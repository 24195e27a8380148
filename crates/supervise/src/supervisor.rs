//! The async runtime: one task per supervisor runs the decision core and carries out its
//! actions with real processes, probes and timers.
//!
//! Design note: the event loop owns the core and never awaits anything but its own inbox, the
//! API inbox, the stop flag and the next timer. Everything slow happens in tasks that report
//! back as [`Input`]s: one task per running instance (it owns the `forkyard_child::Child`,
//! waits for its exit and performs the stop protocol when told), one task per probe run, one
//! task per nested supervisor. Spawning is the exception: `Child::spawn` returns at once (it
//! forks and execs), so a `Spawn` action is answered with `Spawned` or `SpawnFailed` before the
//! loop looks at anything else, and the core never sees an exit for an instance it has not
//! seen spawned.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkyard_child::{Child, Reason};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::decide::{Action, Core, GroupPolicy, Input, Outcome};
use crate::error::{Error, NotUp};
use crate::event::{ChildState, ChildStatus, Event, EventKind, Health, ProbeRole, StopReason};
use crate::explain::Explanation;
use crate::policy::{Ending, ExitReport, Shutdown, Strategy};
use crate::probe::ProbeRunner;
use crate::spec::{ChildSpec, Launch, Start};

/// How many events the stream buffers for a slow reader before it starts dropping the oldest
/// (the reader then gets one [`EventKind::Lagged`] saying how many it missed).
const EVENT_CAPACITY: usize = 4096;

/// Builds a [`Supervisor`]: its strategy, restart intensity and children.
///
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// use forkyard_supervise::{Backoff, ChildSpec, Probe, Restart, Strategy, Supervisor};
///
/// # async fn run() -> Result<(), forkyard_supervise::Error> {
/// let sup = Supervisor::builder()
///     .strategy(Strategy::OneForOne)
///     .intensity(5, Duration::from_secs(10))
///     .child(
///         ChildSpec::new("web", || Command::new("my-server"))
///             .restart(Restart::Permanent)
///             .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)))
///             .readiness(Probe::tcp("127.0.0.1:8080"))
///             .liveness(Probe::http("http://127.0.0.1:8080/health").every(Duration::from_secs(1))),
///     )
///     .start()
///     .await?;
/// sup.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    children: Vec<ChildSpec>,
    seed: Option<u64>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("period", &self.period)
            .field("children", &self.children)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for SupervisorBuilder {
    fn default() -> Self {
        SupervisorBuilder {
            name: "root".to_string(),
            strategy: Strategy::OneForOne,
            intensity: 5,
            period: Duration::from_secs(10),
            children: Vec::new(),
            seed: None,
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl SupervisorBuilder {
    /// Its name in event paths (default `"root"`; a nested supervisor is named by its
    /// [`ChildSpec::supervisor`] name instead).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// What else restarts when a child fails (default [`Strategy::OneForOne`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Give up (stop everything and escalate) when critical children need more than
    /// `intensity` restarts within `period` (default 5 within 10 s). Zero means the first
    /// failure gives up.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> Self {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// Add a child; children start in the order they are added and stop in reverse.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Seed for the backoff jitter of every child (default: random), so that a run can be
    /// repeated exactly.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A stream of the events of this supervisor and the ones nested in it, from the very
    /// first (subscribe before [`start`](Self::start) to see the start).
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.events.subscribe(),
        }
    }

    /// Checks the whole tree without starting anything.
    pub(crate) fn validate(&self, path: &str) -> Result<(), Error> {
        self.group_policy(path, 0).map(drop)
    }

    fn group_policy(&self, path: &str, seed: u64) -> Result<GroupPolicy, Error> {
        let mut names = BTreeSet::new();
        let mut children = Vec::with_capacity(self.children.len());
        for spec in &self.children {
            if !names.insert(spec.name.as_str()) {
                return Err(Error::InvalidSpec {
                    what: format!("supervisor {path}"),
                    why: format!("two children are named {:?}", spec.name),
                });
            }
            children.push(spec.policy(path, seed)?);
        }
        Ok(GroupPolicy {
            name: path.to_string(),
            strategy: self.strategy,
            intensity: self.intensity,
            period: self.period,
            children,
        })
    }

    /// Starts the supervisor and returns at once; children start in the background (see
    /// [`Supervisor::started`]). Must be called inside a tokio runtime.
    pub fn spawn(self) -> Result<Supervisor, Error> {
        if self.name.is_empty() || self.name.contains('/') {
            return Err(Error::InvalidSpec {
                what: format!("supervisor {:?}", self.name),
                why: "a name must be non-empty and contain no '/'".into(),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidSpec {
                what: format!("supervisor {}", self.name),
                why: "must be started inside a tokio runtime".into(),
            });
        }
        let seed = self
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(std::process::id()));
        let path = self.name.clone();
        let epoch = tokio::time::Instant::now().into_std();
        self.launch(path, epoch, seed, None)
    }

    /// Starts the supervisor and waits until every child has started in order (each one ready
    /// before the next starts). Fails if the supervisor gives up during the start.
    pub async fn start(self) -> Result<Supervisor, Error> {
        let sup = self.spawn()?;
        sup.started().await?;
        Ok(sup)
    }

    fn launch(
        self,
        path: String,
        epoch: Instant,
        seed: u64,
        parent: Option<ParentLink>,
    ) -> Result<Supervisor, Error> {
        let policy = self.group_policy(&path, seed)?;
        let (api_tx, api_rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(None);
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Supervisor {
            inner: Arc::new(Handle {
                path: path.clone(),
                api: api_tx,
                stop: stop_tx,
                done: done_rx,
                events: self.events.subscribe(),
            }),
        };
        let runtime = Runtime {
            core: Core::new(policy, epoch),
            path,
            epoch,
            seed,
            specs: self.children,
            instances: HashMap::new(),
            runners: HashMap::new(),
            timers: BTreeSet::new(),
            timer_at: HashMap::new(),
            tx,
            rx,
            api: api_rx,
            api_open: true,
            stop: stop_rx,
            stop_seen: false,
            events: self.events,
            waiters: Vec::new(),
            done: done_tx,
            parent,
            told_parent: false,
            outcome: None,
        };
        tokio::spawn(runtime.run());
        Ok(handle)
    }
}

/// A running supervisor (a cheap, cloneable handle).
///
/// When the last handle is dropped, the supervisor shuts down in the background (children are
/// stopped in reverse order with their shutdown policy). Children are `forkyard_child::Child`
/// values, so even if the tokio runtime itself goes away, every child's process group is
/// killed.
#[derive(Clone, Debug)]
pub struct Supervisor {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    path: String,
    api: mpsc::Sender<Api>,
    stop: watch::Sender<bool>,
    done: watch::Receiver<Option<Arc<Final>>>,
    events: broadcast::Receiver<Event>,
}

/// What is left of a supervisor once it has ended: how, and its last status and decisions, so
/// that `status` and `explain` still answer (why did it give up?).
#[derive(Debug)]
struct Final {
    result: Result<(), Error>,
    status: Vec<ChildStatus>,
    explanations: Vec<Explanation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildOp {
    Stop,
    Start,
    Restart,
}

/// This level's status, and handles of the nested supervisors that are running.
type StatusReply = (Vec<ChildStatus>, Vec<(String, Supervisor)>);

#[derive(Debug)]
enum Api {
    Status(oneshot::Sender<StatusReply>),
    Health(oneshot::Sender<Health>),
    Explain(String, oneshot::Sender<Result<Explanation, Error>>),
    Child(String, ChildOp, oneshot::Sender<Result<(), Error>>),
    RestartAll(oneshot::Sender<Result<(), Error>>),
    Nested(String, oneshot::Sender<Option<Supervisor>>),
    Started(oneshot::Sender<Result<(), Error>>),
}

impl Supervisor {
    /// A builder with the defaults: one_for_one, intensity 5 within 10 s, no children.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }

    /// Its path (`"root"`, or `"root/db"` for a nested supervisor).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Events from now on (this supervisor's and its nested supervisors').
    pub fn events(&self) -> EventStream {
        EventStream {
            rx: self.inner.events.resubscribe(),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Api) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .api
            .send(make(tx))
            .await
            .map_err(|_| self.ended())?;
        rx.await.map_err(|_| self.ended())
    }

    fn ended(&self) -> Error {
        match self.final_state() {
            Some(f) => f
                .result
                .clone()
                .err()
                .unwrap_or(Error::Ended(self.inner.path.clone())),
            None => Error::Ended(self.inner.path.clone()),
        }
    }

    fn final_state(&self) -> Option<Arc<Final>> {
        self.inner.done.borrow().clone()
    }

    /// Waits until the initial start is complete: every child started in order.
    pub async fn started(&self) -> Result<(), Error> {
        self.ask(Api::Started).await?
    }

    /// A snapshot of every child, nested supervisors' children included (named
    /// `sub/child`, right after their supervisor). After the supervisor has ended: its last
    /// snapshot (its own children only).
    pub async fn status(&self) -> Result<Vec<ChildStatus>, Error> {
        let (statuses, nested) = match self.ask(Api::Status).await {
            Ok(answer) => answer,
            Err(e) => return self.final_state().map(|f| f.status.clone()).ok_or(e),
        };
        let mut out = Vec::with_capacity(statuses.len());
        for status in statuses {
            let name = status.name.clone();
            out.push(status);
            let Some((_, sub)) = nested.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            // A nested supervisor that ends meanwhile simply has nothing to add.
            if let Ok(inner) = Box::pin(sub.status()).await {
                out.extend(inner.into_iter().map(|mut s| {
                    s.name = format!("{name}/{}", s.name);
                    s
                }));
            }
        }
        Ok(out)
    }

    /// Whether the group and every nested group is fully up, or which optional children are
    /// down (named `sub/child` in nested groups).
    pub async fn health(&self) -> Result<Health, Error> {
        let mut which = Vec::new();
        let mut why = Vec::new();
        if let Health::Degraded { which: w, why: y } = self.ask(Api::Health).await? {
            which.extend(w);
            why.push(y);
        }
        let (_, nested) = self.ask(Api::Status).await?;
        for (name, sub) in nested {
            if let Ok(Health::Degraded { which: w, why: y }) = Box::pin(sub.health()).await {
                which.extend(w.into_iter().map(|c| format!("{name}/{c}")));
                why.push(format!("{name}: {y}"));
            }
        }
        Ok(if which.is_empty() {
            Health::Healthy
        } else {
            Health::Degraded {
                which,
                why: why.join("; "),
            }
        })
    }

    /// Why a child (`name`, or `sub/child` in a nested supervisor) was restarted, left down,
    /// or given up on: its recent decisions with the rule behind each. Still answers for this
    /// supervisor's own children after it has ended.
    pub async fn explain(&self, name: &str) -> Result<Explanation, Error> {
        if let Some(f) = self.final_state()
            && !name.contains('/')
        {
            return f
                .explanations
                .iter()
                .find(|e| e.child == name)
                .cloned()
                .ok_or_else(|| Error::NoSuchChild(format!("{}/{name}", self.inner.path)));
        }
        let (sup, leaf) = self.route(name).await?;
        sup.ask(|tx| Api::Explain(leaf, tx)).await?
    }

    /// Stops a child and keeps it down (a manual stop never triggers a restart); returns once
    /// it has exited. Stopping a child during its start-up or its backoff works the same way.
    pub async fn stop_child(&self, name: &str) -> Result<(), Error> {
        let (sup, leaf) = self.route(name).await?;
        sup.ask(|tx| Api::Child(leaf, ChildOp::Stop, tx)).await?
    }

    /// Starts a stopped child again, forgetting its backoff and resetting its breaker (as an
    /// operator's `systemctl start` does); returns once it is ready.
    pub async fn start_child(&self, name: &str) -> Result<(), Error> {
        let (sup, leaf) = self.route(name).await?;
        sup.ask(|tx| Api::Child(leaf, ChildOp::Start, tx)).await?
    }

    /// Rolling restart of one child: a new instance is started and must be ready before the
    /// old one is stopped (so two instances run side by side for a moment: the child must be
    /// able to share its port, with `SO_REUSEPORT` or an inherited listening socket). If the
    /// new instance fails to start, the old one keeps running and this returns
    /// [`Error::NotStarted`]. A child that is not running (stopped, or waiting out a backoff) is
    /// simply started, as [`start_child`](Self::start_child) does.
    pub async fn restart_child(&self, name: &str) -> Result<(), Error> {
        let (sup, leaf) = self.route(name).await?;
        sup.ask(|tx| Api::Child(leaf, ChildOp::Restart, tx)).await?
    }

    /// Rolling restart of every running child, one at a time in start order; an error names
    /// the first child whose replacement failed (the others were still replaced).
    pub async fn restart_all(&self) -> Result<(), Error> {
        self.ask(Api::RestartAll).await?
    }

    /// Stops every child in reverse start order and ends. Returns how the supervisor ended:
    /// `Ok` for a shutdown, or the [`Error::GaveUp`] if it had given up before.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.stop.send_replace(true);
        self.wait().await
    }

    /// Waits until the supervisor ends: `Ok` after a shutdown, [`Error::GaveUp`] if it gave up.
    pub async fn wait(&self) -> Result<(), Error> {
        let mut done = self.inner.done.clone();
        let result = done.wait_for(Option::is_some).await.map(|r| r.clone());
        match result {
            Ok(Some(last)) => last.result.clone(),
            _ => Err(Error::Ended(self.inner.path.clone())),
        }
    }

    /// Asks the supervisor to shut down without waiting.
    fn request_stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// The supervisor owning `path`'s last segment, and that segment.
    async fn route(&self, path: &str) -> Result<(Supervisor, String), Error> {
        let mut sup = self.clone();
        let mut segments: Vec<&str> = path.split('/').collect();
        let leaf = segments.pop().unwrap_or_default().to_string();
        for (i, segment) in segments.iter().enumerate() {
            let name = segment.to_string();
            sup = sup
                .ask(|tx| Api::Nested(name, tx))
                .await?
                .ok_or_else(|| Error::NoSuchChild(segments[..=i].join("/")))?;
        }
        Ok((sup, leaf))
    }
}

/// A stream of [`Event`]s. Bounded: a reader that falls more than 4096 events behind loses
/// the oldest and is told how many with one [`EventKind::Lagged`].
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
}

impl EventStream {
    /// The next event; `None` once every supervisor that could send one has ended.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event {
                at: Duration::ZERO,
                supervisor: String::new(),
                child: None,
                kind: EventKind::Lagged { missed },
            }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(Event {
                at: Duration::ZERO,
                supervisor: String::new(),
                child: None,
                kind: EventKind::Lagged { missed },
            }),
            Err(_) => None,
        }
    }
}

/// How a nested supervisor reaches its parent.
#[derive(Debug, Clone)]
struct ParentLink {
    tx: mpsc::UnboundedSender<Input>,
    child: usize,
    instance: u64,
}

enum Running {
    Process {
        stop: Option<oneshot::Sender<StopReason>>,
        _task: JoinHandle<()>,
    },
    Nested {
        handle: Supervisor,
        _task: JoinHandle<()>,
    },
}

enum Waiter {
    Started(oneshot::Sender<Result<(), Error>>),
    Down(usize, oneshot::Sender<Result<(), Error>>),
    Up(usize, oneshot::Sender<Result<(), Error>>),
    Rolled(Option<usize>, oneshot::Sender<Result<(), Error>>),
}

struct Runtime {
    core: Core,
    path: String,
    epoch: Instant,
    seed: u64,
    specs: Vec<ChildSpec>,
    instances: HashMap<(usize, u64), Running>,
    runners: HashMap<(usize, u64, ProbeRole), Arc<tokio::sync::Mutex<ProbeRunner>>>,
    timers: BTreeSet<(Instant, u64)>,
    timer_at: HashMap<u64, Instant>,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    api: mpsc::Receiver<Api>,
    api_open: bool,
    stop: watch::Receiver<bool>,
    stop_seen: bool,
    events: broadcast::Sender<Event>,
    waiters: Vec<Waiter>,
    done: watch::Sender<Option<Arc<Final>>>,
    parent: Option<ParentLink>,
    told_parent: bool,
    outcome: Option<Outcome>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Runtime {
    async fn run(mut self) {
        self.feed(Input::Start);
        while !self.core.is_done() {
            let next_timer = self.timers.first().map(|&(at, _)| at);
            tokio::select! {
                biased;
                Some(input) = self.rx.recv() => {
                    self.forget(&input);
                    self.feed(input);
                }
                changed = self.stop.changed(), if !self.stop_seen => {
                    if changed.is_err() || *self.stop.borrow() {
                        self.stop_seen = true;
                        self.feed(Input::Shutdown);
                    }
                }
                api = self.api.recv(), if self.api_open => match api {
                    Some(api) => self.on_api(api),
                    None => {
                        // Every handle is gone: nobody can stop us any more, so stop now.
                        self.api_open = false;
                        self.feed(Input::Shutdown);
                    }
                },
                () = forkyard_child::sleep_until(next_timer), if next_timer.is_some() => self.fire_due_timers(),
            }
        }
        let result = match self.outcome.take() {
            Some(Outcome::GaveUp(reason)) => Err(Error::GaveUp {
                supervisor: self.path.clone(),
                reason,
            }),
            _ => Ok(()),
        };
        for waiter in std::mem::take(&mut self.waiters) {
            let ended = || {
                Err(result
                    .clone()
                    .err()
                    .unwrap_or(Error::Ended(self.path.clone())))
            };
            match waiter {
                Waiter::Down(_, tx) => drop(tx.send(Ok(()))),
                Waiter::Started(tx) | Waiter::Up(_, tx) | Waiter::Rolled(_, tx) => {
                    drop(tx.send(ended()))
                }
            }
        }
        // Late API calls get "ended" rather than hanging.
        self.api.close();
        while let Ok(api) = self.api.try_recv() {
            self.on_api(api);
        }
        let now = now();
        let status = self.core.status(now);
        let explanations = (0..status.len())
            .map(|i| self.core.explain(i, now))
            .collect();
        self.done.send_replace(Some(Arc::new(Final {
            result,
            status,
            explanations,
        })));
    }

    /// Drop the bookkeeping of an instance that has exited.
    fn forget(&mut self, input: &Input) {
        if let Input::Exited {
            child, instance, ..
        } = input
        {
            self.instances.remove(&(*child, *instance));
            for role in [ProbeRole::Readiness, ProbeRole::Liveness] {
                self.runners.remove(&(*child, *instance, role));
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = now();
        while let Some(&(at, token)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.timer_at.remove(&token);
            self.feed(Input::Timer { token });
        }
    }

    /// Feed one input, carry out the actions, and feed back the immediate answers.
    fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let actions = self.core.step(input, now());
            for action in actions {
                if let Some(answer) = self.act(action) {
                    queue.push_back(answer);
                }
            }
        }
        self.check_waiters();
        if !self.told_parent
            && self.core.is_running()
            && let Some(parent) = &self.parent
        {
            self.told_parent = true;
            let _ = parent.tx.send(Input::Ready {
                child: parent.child,
                instance: parent.instance,
            });
        }
    }

    fn act(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Spawn { child, instance } => Some(self.spawn(child, instance)),
            Action::Stop {
                child,
                instance,
                reason,
            } => {
                match self.instances.get_mut(&(child, instance)) {
                    Some(Running::Process { stop, .. }) => {
                        if let Some(stop) = stop.take() {
                            let _ = stop.send(reason);
                        }
                    }
                    Some(Running::Nested { handle, .. }) => handle.request_stop(),
                    None => {}
                }
                None
            }
            Action::Probe {
                child,
                instance,
                role,
            } => {
                if let Some(runner) = self.runners.get(&(child, instance, role)).cloned() {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let result = runner.lock().await.run().await;
                        let _ = tx.send(Input::Probed {
                            child,
                            instance,
                            role,
                            result,
                        });
                    });
                }
                None
            }
            Action::SetTimer { token, at } => {
                self.timers.insert((at, token));
                self.timer_at.insert(token, at);
                None
            }
            Action::CancelTimer { token } => {
                if let Some(at) = self.timer_at.remove(&token) {
                    self.timers.remove(&(at, token));
                }
                None
            }
            Action::Emit(event) => {
                log_event(&event);
                let _ = self.events.send(event);
                None
            }
            Action::Done(outcome) => {
                self.outcome = Some(outcome);
                None
            }
        }
    }

    fn spawn(&mut self, child: usize, instance: u64) -> Input {
        let spec = &self.specs[child];
        match &spec.start {
            Start::Process(factory) => {
                // The factory is the user's code: a panic there is a failed start, not a dead
                // supervisor.
                let launch = match std::panic::catch_unwind(AssertUnwindSafe(|| factory())) {
                    Ok(launch) => launch,
                    Err(panic) => {
                        return Input::SpawnFailed {
                            child,
                            instance,
                            error: format!(
                                "the launch function panicked: {}",
                                forkyard_child::panic_message(&*panic)
                            ),
                        };
                    }
                };
                // Runners first: a heartbeat runner ignores beats from before its creation,
                // and a fast child may announce itself before `spawn_process` returns.
                self.add_runners(child, instance);
                let spec = &self.specs[child];
                match spawn_process(launch, spec) {
                    Ok(mut process) => {
                        let pid = process.id();
                        let (stop_tx, stop_rx) = oneshot::channel();
                        let shutdown = spec.shutdown;
                        let tx = self.tx.clone();
                        let task = tokio::spawn(async move {
                            let exit = watch_process(&mut process, stop_rx, shutdown).await;
                            let _ = tx.send(Input::Exited {
                                child,
                                instance,
                                exit,
                            });
                        });
                        self.instances.insert(
                            (child, instance),
                            Running::Process {
                                stop: Some(stop_tx),
                                _task: task,
                            },
                        );
                        Input::Spawned {
                            child,
                            instance,
                            pid,
                        }
                    }
                    Err(error) => {
                        for role in [ProbeRole::Readiness, ProbeRole::Liveness] {
                            self.runners.remove(&(child, instance, role));
                        }
                        Input::SpawnFailed {
                            child,
                            instance,
                            error,
                        }
                    }
                }
            }
            Start::Supervisor(builder) => {
                let mut builder = (**builder).clone();
                builder.events = self.events.clone();
                let path = format!("{}/{}", self.path, spec.name);
                let seed = crate::backoff::splitmix64(self.seed ^ instance);
                let link = ParentLink {
                    tx: self.tx.clone(),
                    child,
                    instance,
                };
                match builder.launch(path, self.epoch, seed, Some(link)) {
                    Ok(handle) => {
                        let tx = self.tx.clone();
                        let watched = handle.clone();
                        let task = tokio::spawn(async move {
                            let ending = match watched.wait().await {
                                Ok(()) => Ending::Shutdown,
                                Err(Error::GaveUp { reason, .. }) => Ending::GaveUp { reason },
                                Err(other) => Ending::GaveUp {
                                    reason: other.to_string(),
                                },
                            };
                            let _ = tx.send(Input::Exited {
                                child,
                                instance,
                                exit: ExitReport::new(ending),
                            });
                        });
                        self.instances.insert(
                            (child, instance),
                            Running::Nested {
                                handle,
                                _task: task,
                            },
                        );
                        Input::Spawned {
                            child,
                            instance,
                            pid: 0,
                        }
                    }
                    Err(e) => Input::SpawnFailed {
                        child,
                        instance,
                        error: e.to_string(),
                    },
                }
            }
        }
    }

    fn add_runners(&mut self, child: usize, instance: u64) {
        let spec = &self.specs[child];
        for (role, probe) in [
            (ProbeRole::Readiness, &spec.readiness),
            (ProbeRole::Liveness, &spec.liveness),
        ] {
            if let Some(probe) = probe {
                self.runners.insert(
                    (child, instance, role),
                    Arc::new(tokio::sync::Mutex::new(probe.runner(role))),
                );
            }
        }
    }

    fn child_index(&self, name: &str) -> Result<usize, Error> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::NoSuchChild(format!("{}/{name}", self.path)))
    }

    fn on_api(&mut self, api: Api) {
        match api {
            Api::Status(tx) => {
                let nested = self
                    .instances
                    .iter()
                    .filter_map(|(&(child, _), running)| match running {
                        Running::Nested { handle, .. } => {
                            Some((self.specs[child].name.clone(), handle.clone()))
                        }
                        Running::Process { .. } => None,
                    })
                    .collect();
                let _ = tx.send((self.core.status(now()), nested));
            }
            Api::Health(tx) => {
                let _ = tx.send(self.core.health());
            }
            Api::Explain(name, tx) => {
                let result = self.child_index(&name).map(|i| self.core.explain(i, now()));
                let _ = tx.send(result);
            }
            Api::Nested(name, tx) => {
                let handle = self.child_index(&name).ok().and_then(|i| {
                    self.instances
                        .iter()
                        .find_map(|(&(child, _), running)| match running {
                            Running::Nested { handle, .. } if child == i => Some(handle.clone()),
                            _ => None,
                        })
                });
                let _ = tx.send(handle);
            }
            Api::Started(tx) => self.wait_for(Waiter::Started(tx)),
            Api::RestartAll(tx) => {
                if self.core.is_done() {
                    let _ = tx.send(Err(Error::Ended(self.path.clone())));
                    return;
                }
                self.feed(Input::Roll(None));
                self.wait_for(Waiter::Rolled(None, tx));
            }
            Api::Child(name, op, tx) => {
                let child = match self.child_index(&name) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                if self.core.is_done() {
                    let _ = tx.send(Err(Error::Ended(self.path.clone())));
                    return;
                }
                match op {
                    ChildOp::Stop => {
                        self.feed(Input::StopChild(child));
                        self.wait_for(Waiter::Down(child, tx));
                    }
                    ChildOp::Start => {
                        self.feed(Input::StartChild(child));
                        self.wait_for(Waiter::Up(child, tx));
                    }
                    ChildOp::Restart => {
                        let state = self.core.status(now())[child].state;
                        if matches!(state, ChildState::Running | ChildState::Starting) {
                            self.feed(Input::Roll(Some(child)));
                            self.wait_for(Waiter::Rolled(Some(child), tx));
                        } else {
                            // Not running: a restart is a start (as `systemctl restart`).
                            self.feed(Input::StartChild(child));
                            self.wait_for(Waiter::Up(child, tx));
                        }
                    }
                }
            }
        }
    }

    fn wait_for(&mut self, waiter: Waiter) {
        self.waiters.push(waiter);
        self.check_waiters();
    }

    fn check_waiters(&mut self) {
        let now = now();
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            match waiter {
                Waiter::Started(tx) if self.core.is_started() => {
                    let result = match self.core.outcome() {
                        Some(Outcome::GaveUp(reason)) => Err(Error::GaveUp {
                            supervisor: self.path.clone(),
                            reason: reason.clone(),
                        }),
                        Some(Outcome::Shutdown) => Err(Error::Ended(self.path.clone())),
                        None => Ok(()),
                    };
                    let _ = tx.send(result);
                }
                Waiter::Down(child, tx) if self.core.is_down(child) => {
                    let _ = tx.send(Ok(()));
                }
                Waiter::Up(child, tx) => {
                    if self.core.is_ready(child) {
                        let _ = tx.send(Ok(()));
                        continue;
                    }
                    let status = &self.core.status(now)[child];
                    let failed = match status.state {
                        ChildState::NotStarted
                        | ChildState::Starting
                        | ChildState::Running
                        | ChildState::Stopping => None,
                        state @ (ChildState::BackingOff { .. }
                        | ChildState::BreakerOpen { .. }
                        | ChildState::Stopped
                        | ChildState::Exited) => Some(state),
                    };
                    match failed {
                        Some(state) => {
                            let _ = tx.send(Err(Error::NotStarted {
                                child: status.name.clone(),
                                why: NotUp::In(state),
                            }));
                        }
                        None => self.waiters.push(Waiter::Up(child, tx)),
                    }
                }
                Waiter::Rolled(child, tx) if !self.core.is_rolling(child) => {
                    let children = match child {
                        Some(c) => vec![c],
                        None => (0..self.specs.len()).collect(),
                    };
                    let failed = children.into_iter().find_map(|c| {
                        self.core.roll_failure(c).map(|why| Error::NotStarted {
                            child: self.specs[c].name.clone(),
                            why: NotUp::ReplacementFailed {
                                reason: why.to_owned(),
                            },
                        })
                    });
                    let _ = tx.send(failed.map_or(Ok(()), Err));
                }
                other => self.waiters.push(other),
            }
        }
    }
}

fn spawn_process(launch: Launch, spec: &ChildSpec) -> Result<Child, String> {
    let grace = match spec.shutdown {
        Shutdown::Signal { grace } => grace,
        Shutdown::Brutal => Duration::ZERO,
    };
    // A panicking on_spawn hook fails the start (the child it was given is killed).
    launch
        .stop_signal(spec.stop_signal)
        .grace(grace)
        .spawn()
        .map_err(|e| e.to_string())
}

/// Waits for the child's exit, or stops it when told to; returns how it ended.
async fn watch_process(
    child: &mut Child,
    mut stop: oneshot::Receiver<StopReason>,
    shutdown: Shutdown,
) -> ExitReport {
    let result = tokio::select! {
        biased;
        order = &mut stop => {
            // A dropped sender means the supervisor is gone: stop anyway.
            let reason = order.unwrap_or(StopReason::Shutdown);
            match shutdown {
                Shutdown::Brutal => {
                    let _ = child.start_kill(child_reason(reason));
                    child.wait().await
                }
                Shutdown::Signal { grace } => child.stop_because(child_reason(reason), grace).await,
            }
        }
        exit = child.wait() => exit,
    };
    match result {
        Ok(exit) => {
            let ending = match (exit.code(), exit.signal()) {
                (Some(code), _) => Ending::Code(code),
                (None, Some(signal)) => Ending::Signal {
                    signal,
                    core_dumped: exit.core_dumped(),
                },
                (None, None) => Ending::Lost {
                    error: "no exit code and no signal".into(),
                },
            };
            ExitReport {
                ending,
                killed_after_grace: exit.ended_by().is_some_and(|t| t.escalated),
                usage: Some(*exit.rusage()),
            }
        }
        Err(e) => {
            // We cannot tell how it ended; make sure it has.
            let _ = child.start_kill(Reason::Kill);
            ExitReport::new(Ending::Lost {
                error: e.to_string(),
            })
        }
    }
}

fn child_reason(reason: StopReason) -> Reason {
    match reason {
        StopReason::Manual | StopReason::Sibling => Reason::Stop,
        StopReason::Shutdown | StopReason::GiveUp => Reason::Shutdown,
        StopReason::Unhealthy | StopReason::NotReady => Reason::Unhealthy,
        StopReason::Recycle => Reason::Recycle,
    }
}

fn log_event(event: &Event) {
    let child = event.child.as_deref().unwrap_or("");
    match &event.kind {
        EventKind::Exited {
            expected: false, ..
        }
        | EventKind::Unhealthy { .. }
        | EventKind::NotReady { .. }
        | EventKind::SpawnFailed { .. }
        | EventKind::BreakerOpened { .. }
        | EventKind::Degraded { .. }
        | EventKind::ReplaceFailed { .. } => {
            tracing::warn!(supervisor = %event.supervisor, child, "{}", event.kind);
        }
        EventKind::GaveUp { .. } => {
            tracing::error!(supervisor = %event.supervisor, child, "{}", event.kind);
        }
        _ => tracing::info!(supervisor = %event.supervisor, child, "{}", event.kind),
    }
}
