//! Virtual-time tests of the decision core.
//!
//! [`Sim`] plays the runtime: it answers `Spawn` with `Spawned` at once (or `SpawnFailed` for a
//! child told to fail), `Stop` with an exit by SIGTERM at once (unless the child is told to
//! ignore it), `Probe` with the scripted result, and keeps timers in a virtual clock that only
//! moves when a test says so. Everything the core emits is kept as a transcript.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::{Just, ProptestConfig, prop_assert, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

use super::*;
use crate::backoff::Backoff;
use crate::breaker::BreakerConfig;
use crate::policy::Ending;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn code(n: i32) -> Ending {
    Ending::Code(n)
}

fn sig(signal: i32) -> Ending {
    Ending::Signal {
        signal: forkyard_child::Signal::from_raw(signal),
        core_dumped: false,
    }
}

/// A child policy with fixed 100 ms restarts and no jitter, no probes.
fn child(name: &str) -> ChildPolicy {
    ChildPolicy {
        name: name.to_string(),
        restart: Restart::Permanent,
        clean: CleanExits::default(),
        backoff: Backoff::fixed(ms(100)),
        breaker: None,
        optional: false,
        readiness: None,
        liveness: None,
        notify_ready: false,
        start_timeout: Some(Duration::from_secs(30)),
        seed: 7,
    }
}

fn probe(period: u64, failures: Option<u32>) -> ProbeTiming {
    ProbeTiming {
        initial_delay: Duration::ZERO,
        period: ms(period),
        timeout: ms(period),
        failure_threshold: failures,
        success_threshold: 1,
    }
}

fn group(
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    children: Vec<ChildPolicy>,
) -> GroupPolicy {
    GroupPolicy {
        name: "root".to_string(),
        strategy,
        intensity,
        period,
        children,
    }
}

type ProbeScript = Box<dyn FnMut(u64, Duration) -> Result<(), String>>;

struct Sim {
    core: Core,
    t0: Instant,
    now: Instant,
    timers: BTreeMap<(Instant, u64), ()>,
    timer_at: HashMap<u64, Instant>,
    next_pid: u32,
    /// (child, instance) -> pid, for live instances.
    live: BTreeMap<(usize, u64), u32>,
    /// Stop requests not answered (children that ignore SIGTERM).
    pending_stops: Vec<(usize, u64)>,
    ignore_stop: BTreeSet<usize>,
    fail_spawn: BTreeSet<usize>,
    probes: HashMap<(usize, ProbeRole), ProbeScript>,
    names: Vec<String>,
    /// Everything the core asked for, in order (actions other than timers).
    log: Vec<String>,
    events: Vec<Event>,
    outcome: Option<Outcome>,
}

impl Sim {
    fn new(policy: GroupPolicy) -> Self {
        let t0 = Instant::now();
        let names = policy.children.iter().map(|c| c.name.clone()).collect();
        Sim {
            core: Core::new(policy, t0),
            t0,
            now: t0,
            timers: BTreeMap::new(),
            timer_at: HashMap::new(),
            next_pid: 100,
            live: BTreeMap::new(),
            pending_stops: Vec::new(),
            ignore_stop: BTreeSet::new(),
            fail_spawn: BTreeSet::new(),
            probes: HashMap::new(),
            names,
            log: Vec::new(),
            events: Vec::new(),
            outcome: None,
        }
    }

    fn idx(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("no such child")
    }

    /// Script a probe: `f(instance, time since start) -> result`.
    fn probe(
        &mut self,
        name: &str,
        role: ProbeRole,
        f: impl FnMut(u64, Duration) -> Result<(), String> + 'static,
    ) {
        let i = self.idx(name);
        self.probes.insert((i, role), Box::new(f));
    }

    fn input(&mut self, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for action in self.core.step(input, self.now) {
                match action {
                    Action::Spawn { child, instance } => {
                        if self.fail_spawn.contains(&child) {
                            self.log
                                .push(format!("spawn {} (fails)", self.names[child]));
                            queue.push_back(Input::SpawnFailed {
                                child,
                                instance,
                                error: "no such file or directory".into(),
                            });
                        } else {
                            let pid = self.next_pid;
                            self.next_pid += 1;
                            self.live.insert((child, instance), pid);
                            self.log.push(format!("spawn {}", self.names[child]));
                            queue.push_back(Input::Spawned {
                                child,
                                instance,
                                pid,
                            });
                        }
                    }
                    Action::Stop {
                        child,
                        instance,
                        reason,
                    } => {
                        self.log
                            .push(format!("stop {} ({reason})", self.names[child]));
                        if self.ignore_stop.contains(&child) {
                            self.pending_stops.push((child, instance));
                        } else if self.live.remove(&(child, instance)).is_some() {
                            queue.push_back(Input::Exited {
                                child,
                                instance,
                                exit: ExitReport::new(sig(libc::SIGTERM)),
                            });
                        }
                    }
                    Action::Probe {
                        child,
                        instance,
                        role,
                    } => {
                        let elapsed = self.now - self.t0;
                        let result = match self.probes.get_mut(&(child, role)) {
                            Some(f) => f(instance, elapsed),
                            None => Ok(()),
                        };
                        queue.push_back(Input::Probed {
                            child,
                            instance,
                            role,
                            result,
                        });
                    }
                    Action::SetTimer { token, at } => {
                        self.timers.insert((at, token), ());
                        self.timer_at.insert(token, at);
                    }
                    Action::CancelTimer { token } => {
                        if let Some(at) = self.timer_at.remove(&token) {
                            self.timers.remove(&(at, token));
                        }
                    }
                    Action::Emit(event) => self.events.push(event),
                    Action::Done(outcome) => {
                        assert!(self.outcome.is_none(), "Done twice");
                        self.log.push(format!("done {outcome:?}"));
                        self.outcome = Some(outcome);
                    }
                }
            }
        }
    }

    fn start(&mut self) -> &mut Self {
        self.input(Input::Start);
        self
    }

    /// Move the virtual clock forward, firing due timers in order.
    fn advance(&mut self, d: Duration) -> &mut Self {
        let end = self.now + d;
        while let Some((&(at, token), _)) = self.timers.iter().next() {
            if at > end {
                break;
            }
            self.timers.remove(&(at, token));
            self.timer_at.remove(&token);
            self.now = self.now.max(at);
            self.input(Input::Timer { token });
        }
        self.now = end;
        self
    }

    /// The current instance of a child exits on its own.
    fn exit(&mut self, name: &str, ending: Ending) -> &mut Self {
        let i = self.idx(name);
        let instance = self
            .live
            .keys()
            .filter(|(c, _)| *c == i)
            .map(|(_, inst)| *inst)
            .min()
            .unwrap_or_else(|| panic!("{name} is not running"));
        self.live.remove(&(i, instance));
        self.pending_stops.retain(|&p| p != (i, instance));
        self.input(Input::Exited {
            child: i,
            instance,
            exit: ExitReport::new(ending),
        });
        self
    }

    /// A child that ignored SIGTERM is finally killed (the runtime's grace ran out).
    fn kill_pending(&mut self) -> &mut Self {
        for (child, instance) in std::mem::take(&mut self.pending_stops) {
            if self.live.remove(&(child, instance)).is_some() {
                let mut exit = ExitReport::new(sig(libc::SIGKILL));
                exit.killed_after_grace = true;
                self.input(Input::Exited {
                    child,
                    instance,
                    exit,
                });
            }
        }
        self
    }

    fn running(&self, name: &str) -> bool {
        let i = self.idx(name);
        self.live.keys().any(|(c, _)| *c == i)
    }

    fn spawns(&self, name: &str) -> usize {
        self.log
            .iter()
            .filter(|l| *l == &format!("spawn {name}"))
            .count()
    }

    /// The log of spawns and stops since `from`.
    fn log_since(&self, from: usize) -> Vec<String> {
        self.log[from..].to_vec()
    }

    fn kinds(&self) -> Vec<String> {
        self.events.iter().map(describe).collect()
    }

    fn transcript(&self) -> String {
        self.events
            .iter()
            .map(|e| format!("{:>7}  {}", format!("{}ms", e.at.as_millis()), describe(e)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A one-line description of an event, for assertions and snapshots.
fn describe(e: &Event) -> String {
    format!("{}: {}", e.child.as_deref().unwrap_or("*"), e.kind)
}

// ---- restart types ------------------------------------------------------------------------

#[test]
fn exit_matrix_by_restart_type() {
    // (ending, permanent restarts?, transient restarts?, temporary restarts?)
    let cases = [
        (code(0), true, false, false),
        (code(1), true, true, false),
        (code(3), true, false, false), // listed as clean below
        (sig(libc::SIGTERM), true, false, false),
        (sig(libc::SIGSEGV), true, true, false),
        (sig(libc::SIGKILL), true, true, false),
    ];
    for (ending, permanent, transient, temporary) in cases {
        for (restart, want) in [
            (Restart::Permanent, permanent),
            (Restart::Transient, transient),
            (Restart::Temporary, temporary),
        ] {
            let mut c = child("w");
            c.restart = restart;
            c.clean.codes.push(3);
            let mut sim = Sim::new(group(Strategy::OneForOne, 5, ms(1_000), vec![c]));
            sim.start().exit("w", ending.clone()).advance(ms(100));
            assert_eq!(
                sim.running("w"),
                want,
                "{restart} after {ending}: {:#?}",
                sim.kinds()
            );
            // And nothing changes later: no late restart of a child left down.
            sim.advance(ms(10_000));
            assert_eq!(
                sim.spawns("w"),
                1 + usize::from(want),
                "{restart} after {ending}"
            );
        }
    }
}

#[test]
fn temporary_child_is_removed_when_taken_down_by_a_sibling() {
    let mut t = child("temp");
    t.restart = Restart::Temporary;
    let mut sim = Sim::new(group(
        Strategy::OneForAll,
        5,
        ms(1_000),
        vec![child("a"), t, child("b")],
    ));
    sim.start().exit("b", code(1)).advance(ms(200));
    assert!(sim.running("a") && sim.running("b"));
    assert!(!sim.running("temp"));
    assert_eq!(sim.spawns("temp"), 1);
    let status = sim.core.status(sim.now);
    assert_eq!(status[1].state, ChildState::Exited);
}

// ---- intensity ----------------------------------------------------------------------------

#[test]
fn exactly_intensity_restarts_are_allowed_one_more_gives_up() {
    let mut c = child("w");
    c.backoff = Backoff::none();
    let mut sim = Sim::new(group(Strategy::OneForOne, 3, ms(1_000), vec![c]));
    sim.start();
    for _ in 0..3 {
        sim.advance(ms(10)).exit("w", code(1));
    }
    sim.advance(ms(1));
    assert!(
        sim.running("w"),
        "3 restarts within 1s are within intensity 3"
    );
    assert!(sim.outcome.is_none());
    sim.exit("w", code(1));
    assert!(!sim.running("w"));
    let Some(Outcome::GaveUp(reason)) = &sim.outcome else {
        panic!("expected to give up: {:#?}", sim.kinds());
    };
    assert!(reason.contains("4 restarts within 1s"), "{reason}");
}

#[test]
fn restarts_leave_the_period_window() {
    let mut c = child("w");
    c.backoff = Backoff::none();
    let mut sim = Sim::new(group(Strategy::OneForOne, 2, ms(1_000), vec![c]));
    sim.start();
    // Two crashes at 0 ms and 500 ms; the third at 1001 ms sees only one of them.
    sim.exit("w", code(1)).advance(ms(500)).exit("w", code(1));
    sim.advance(ms(501)).exit("w", code(1)).advance(ms(1));
    assert!(sim.running("w"));
    assert!(sim.outcome.is_none());
}

#[test]
fn slow_crash_loop_is_bounded_too() {
    // The child stays up longer than its stability window before every crash (so its backoff
    // keeps resetting, and PM2 would not even count it), yet 4 restarts within 10 s exceed an
    // intensity of 3.
    let mut c = child("w");
    c.backoff = Backoff::exponential(ms(100), ms(5_000))
        .jitter(0.0)
        .stable_after(ms(1_000));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        3,
        Duration::from_secs(10),
        vec![c],
    ));
    sim.start();
    let mut crashes = 0;
    while sim.outcome.is_none() && crashes < 20 {
        sim.advance(ms(2_000)).exit("w", code(1));
        crashes += 1;
    }
    assert_eq!(crashes, 4, "{:#?}", sim.kinds());
    assert!(matches!(sim.outcome, Some(Outcome::GaveUp(_))));
    // Every delay was the first one: the backoff did reset each time.
    let delays: Vec<String> = sim
        .kinds()
        .into_iter()
        .filter(|k| k.contains("restarting"))
        .collect();
    assert!(
        delays.iter().all(|d| d.contains("in 100ms (attempt 1)")),
        "{delays:#?}"
    );
}

#[test]
fn spawn_failures_count_and_back_off() {
    let mut c = child("w");
    c.backoff = Backoff::exponential(ms(100), ms(800)).jitter(0.0);
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        3,
        Duration::from_secs(60),
        vec![c],
    ));
    sim.fail_spawn.insert(0);
    sim.start();
    sim.advance(ms(100_000));
    // 1 initial try + 3 restarts, then the 4th restart exceeds the intensity.
    assert_eq!(sim.log.iter().filter(|l| l.starts_with("spawn")).count(), 4);
    assert!(matches!(sim.outcome, Some(Outcome::GaveUp(_))));
    let restarts: Vec<String> = sim
        .kinds()
        .into_iter()
        .filter(|k| k.contains("restarting"))
        .collect();
    assert_eq!(restarts.len(), 3);
    assert!(restarts[2].contains("in 400ms"), "{restarts:#?}");
}

// ---- backoff ------------------------------------------------------------------------------

#[test]
fn backoff_grows_and_resets_after_stability_window() {
    let mut c = child("w");
    c.backoff = Backoff::exponential(ms(100), ms(400))
        .jitter(0.0)
        .stable_after(ms(5_000));
    let mut sim = Sim::new(group(Strategy::OneForOne, 100, ms(1_000), vec![c]));
    sim.start();
    let mut delays = Vec::new();
    for uptime in [10, 10, 10, 10, 6_000, 10] {
        sim.advance(ms(uptime)).exit("w", code(1));
        let Some(EventKind::Restarting { after, .. }) = sim.events.last().map(|e| e.kind.clone())
        else {
            panic!("{:#?}", sim.kinds());
        };
        delays.push(after.as_millis());
        sim.advance(after);
    }
    assert_eq!(delays, [100, 200, 400, 400, 100, 200]);
}

// ---- breaker and degradation --------------------------------------------------------------

fn optional_cache() -> ChildPolicy {
    let mut c = child("cache");
    c.optional = true;
    c.breaker =
        Some(BreakerConfig::new(3, Duration::from_secs(10)).open_for(Duration::from_secs(5)));
    c
}

#[test]
fn optional_child_breaker_opens_degrades_and_recovers() {
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        1,
        Duration::from_secs(60),
        vec![child("web"), optional_cache()],
    ));
    sim.start();
    for _ in 0..3 {
        sim.advance(ms(100)).exit("cache", code(1));
    }
    // Optional children do not spend the group's budget (intensity 1 would have given up).
    assert!(sim.outcome.is_none());
    assert!(!sim.running("cache"));
    assert!(sim.running("web"));
    assert!(matches!(
        sim.core.health(),
        Health::Degraded { ref which, .. } if which == &["cache".to_string()]
    ));
    // Nothing happens while the breaker is open ...
    sim.advance(ms(4_999));
    assert!(!sim.running("cache"));
    // ... then one trial start; it comes up, the breaker closes, the group recovers.
    sim.advance(ms(1));
    assert!(sim.running("cache"));
    assert_eq!(sim.core.health(), Health::Healthy);
    let kinds = sim.kinds();
    let tail = &kinds[kinds.len() - 5..];
    assert_eq!(
        tail,
        [
            "cache: breaker half-open: trial start",
            "cache: spawned pid 104",
            "cache: ready pid 104 after 0ms",
            "cache: breaker closed",
            "*: recovered: no optional child is down",
        ]
    );
}

#[test]
fn failed_trial_reopens_the_breaker() {
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        1,
        Duration::from_secs(60),
        vec![child("web"), optional_cache()],
    ));
    sim.start();
    for _ in 0..3 {
        sim.advance(ms(100)).exit("cache", code(1));
    }
    // The trial start fails: the breaker opens again at once.
    sim.fail_spawn.insert(1);
    sim.advance(ms(5_000));
    assert!(!sim.running("cache"));
    assert!(matches!(sim.core.health(), Health::Degraded { .. }));
    sim.fail_spawn.clear();
    let opened = sim
        .kinds()
        .iter()
        .filter(|k| k.contains("breaker opened"))
        .count();
    assert_eq!(opened, 2);
    sim.advance(ms(4_999));
    assert!(!sim.running("cache"));
    sim.advance(ms(1));
    assert!(sim.running("cache"));
    assert_eq!(sim.core.health(), Health::Healthy);
}

#[test]
fn critical_child_breaker_opening_gives_up() {
    let mut c = child("db");
    c.breaker = Some(BreakerConfig::new(2, Duration::from_secs(10)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        100,
        Duration::from_secs(10),
        vec![c],
    ));
    sim.start();
    sim.exit("db", code(1)).advance(ms(100)).exit("db", code(1));
    let Some(Outcome::GaveUp(reason)) = &sim.outcome else {
        panic!("{:#?}", sim.kinds());
    };
    assert!(
        reason.contains("critical child db: breaker open after 2 failures"),
        "{reason}"
    );
}

#[test]
fn optional_child_does_not_hold_up_the_start_order() {
    let mut cache = optional_cache();
    cache.breaker = Some(BreakerConfig::new(1, Duration::from_secs(10)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![cache, child("web")],
    ));
    sim.fail_spawn.insert(0);
    sim.start();
    assert!(sim.running("web"));
    assert!(sim.core.is_started());
    assert!(matches!(sim.core.health(), Health::Degraded { .. }));
}

// ---- strategies ---------------------------------------------------------------------------

#[test]
fn strategies_stop_in_reverse_and_start_in_order() {
    // (strategy, expected log after "c" crashes)
    let cases = [
        (Strategy::OneForOne, vec!["spawn c"]),
        (
            Strategy::OneForAll,
            vec![
                "stop e (sibling failed)",
                "stop d (sibling failed)",
                "stop b (sibling failed)",
                "stop a (sibling failed)",
                "spawn a",
                "spawn b",
                "spawn c",
                "spawn d",
                "spawn e",
            ],
        ),
        (
            Strategy::RestForOne,
            vec![
                "stop e (sibling failed)",
                "stop d (sibling failed)",
                "spawn c",
                "spawn d",
                "spawn e",
            ],
        ),
    ];
    for (strategy, want) in cases {
        let children = ["a", "b", "c", "d", "e"].map(child).to_vec();
        let mut sim = Sim::new(group(strategy, 5, Duration::from_secs(10), children));
        sim.start();
        assert_eq!(
            sim.log,
            ["spawn a", "spawn b", "spawn c", "spawn d", "spawn e"]
        );
        let from = sim.log.len();
        sim.exit("c", code(1)).advance(ms(100));
        assert_eq!(sim.log_since(from), want, "{strategy}");
        // A group restart counts once against the intensity.
        assert!(sim.core.budget.used() == 1, "{strategy}");
    }
}

#[test]
fn group_restart_waits_for_each_stop_before_the_next() {
    let children = ["a", "b", "c"].map(child).to_vec();
    let mut sim = Sim::new(group(
        Strategy::OneForAll,
        5,
        Duration::from_secs(10),
        children,
    ));
    sim.ignore_stop.insert(2);
    sim.start();
    let from = sim.log.len();
    sim.exit("a", code(1)).advance(ms(1_000));
    // "c" ignores SIGTERM: "b" is not asked to stop before "c" is gone.
    assert_eq!(sim.log_since(from), ["stop c (sibling failed)"]);
    sim.ignore_stop.clear();
    sim.kill_pending().advance(ms(100));
    assert_eq!(
        sim.log_since(from),
        [
            "stop c (sibling failed)",
            "stop b (sibling failed)",
            "spawn a",
            "spawn b",
            "spawn c",
        ]
    );
}

#[test]
fn ordered_start_waits_for_readiness() {
    let mut a = child("a");
    a.readiness = Some(probe(50, None));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a, child("b")],
    ));
    // "a" becomes ready only from 200 ms on.
    sim.probe("a", ProbeRole::Readiness, |_, t| {
        if t >= ms(200) {
            Ok(())
        } else {
            Err("connection refused".into())
        }
    });
    sim.start().advance(ms(150));
    assert_eq!(sim.log, ["spawn a"]);
    assert!(!sim.core.is_started());
    sim.advance(ms(50));
    assert_eq!(sim.log, ["spawn a", "spawn b"]);
    assert!(sim.core.is_started());
    assert_eq!(
        sim.kinds().last().unwrap(),
        "*: running: all children started"
    );
}

// ---- probes -------------------------------------------------------------------------------

#[test]
fn readiness_failure_threshold_is_a_failed_start() {
    let mut a = child("a");
    a.readiness = Some(probe(100, Some(3)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    sim.probe("a", ProbeRole::Readiness, |instance, _| {
        if instance == 1 {
            Err("refused".into())
        } else {
            Ok(())
        }
    });
    sim.start().advance(ms(1_000));
    let kinds = sim.kinds();
    assert!(
        kinds.contains(
            &"a: not ready pid 100: readiness probe failed 3 times in a row: refused".to_string()
        ),
        "{kinds:#?}"
    );
    assert!(kinds.contains(&"a: stopping pid 100: not ready in time".to_string()));
    // Failed at 200 ms (probes at 0, 100, 200), restarted 100 ms later, ready at once.
    assert!(
        kinds.contains(&"a: ready pid 101 after 0ms".to_string()),
        "{kinds:#?}"
    );
    assert_eq!(sim.core.budget.used(), 1);
}

#[test]
fn start_timeout_is_a_failed_start() {
    let mut a = child("a");
    a.readiness = Some(probe(100, None));
    a.start_timeout = Some(ms(350));
    a.restart = Restart::Transient;
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        0,
        Duration::from_secs(10),
        vec![a],
    ));
    sim.probe("a", ProbeRole::Readiness, |_, _| Err("refused".into()));
    sim.start().advance(ms(349));
    assert!(sim.running("a"));
    sim.advance(ms(1));
    assert!(!sim.running("a"));
    // Intensity 0: the failed start gives up at once, even for a transient child.
    assert!(
        matches!(sim.outcome, Some(Outcome::GaveUp(_))),
        "{:#?}",
        sim.kinds()
    );
}

#[test]
fn success_threshold_needs_consecutive_passes() {
    let mut a = child("a");
    a.readiness = Some(ProbeTiming {
        success_threshold: 3,
        ..probe(10, None)
    });
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    // pass, pass, fail, pass, pass, pass: ready at the sixth probe (50 ms).
    let mut n = 0;
    sim.probe("a", ProbeRole::Readiness, move |_, _| {
        n += 1;
        if n == 3 { Err("blip".into()) } else { Ok(()) }
    });
    sim.start().advance(ms(49));
    assert!(!sim.core.is_ready(0));
    sim.advance(ms(1));
    assert!(sim.core.is_ready(0));
}

#[test]
fn liveness_initial_delay_period_and_threshold() {
    let mut a = child("a");
    a.liveness = Some(ProbeTiming {
        initial_delay: ms(1_000),
        ..probe(100, Some(3))
    });
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    // Healthy until 1.5 s, one blip at 1.2 s (reset by the next pass), hung from 2 s on.
    sim.probe("a", ProbeRole::Liveness, |instance, t| {
        let hung = instance == 1 && t >= ms(2_000);
        if hung || t == ms(1_200) {
            Err("timed out".into())
        } else {
            Ok(())
        }
    });
    sim.start();
    sim.advance(ms(2_199));
    assert!(sim.running("a"), "{:#?}", sim.kinds());
    sim.advance(ms(1));
    // Failures at 2.0, 2.1, 2.2 s: unhealthy at the third, stopped, restarted after 100 ms.
    let kinds = sim.kinds();
    let unhealthy = sim
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Unhealthy { .. }))
        .expect("unhealthy");
    assert_eq!(unhealthy.at, ms(2_200));
    assert!(kinds.contains(&"a: liveness probe failed (1 in a row): timed out".to_string()));
    assert!(kinds.contains(&"a: stopping pid 100: unhealthy".to_string()));
    assert!(
        kinds
            .iter()
            .any(|k| k.starts_with("a: restarting in 100ms (attempt 1): unhealthy")),
        "{kinds:#?}"
    );
    sim.advance(ms(100));
    assert!(sim.running("a"));
    // The probe counts only 6 calls before 1.5 s: 1.0 .. 1.5 (none during the initial delay).
    let failures_before_2s = sim
        .events
        .iter()
        .filter(|e| e.at < ms(2_000) && matches!(e.kind, EventKind::ProbeFailed { .. }))
        .count();
    assert_eq!(failures_before_2s, 1);
}

#[test]
fn transient_child_is_restarted_after_unhealthy() {
    let mut a = child("a");
    a.restart = Restart::Transient;
    a.liveness = Some(probe(100, Some(1)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    sim.probe("a", ProbeRole::Liveness, |instance, _| {
        if instance == 1 {
            Err("no progress".into())
        } else {
            Ok(())
        }
    });
    sim.start().advance(ms(200));
    // Killed by our SIGTERM (a clean signal), but the reason was "unhealthy": abnormal.
    assert_eq!(sim.spawns("a"), 2);
    assert!(sim.running("a"));
}

// ---- stops --------------------------------------------------------------------------------

#[test]
fn manual_stop_never_restarts_in_any_phase() {
    // (phase to stop in, setup)
    type Setup = fn(&mut Sim);
    let phases: [(&str, Setup); 4] = [
        ("running", |_| {}),
        ("backing off", |sim| {
            sim.exit("a", code(1));
        }),
        ("starting", |sim| {
            sim.probe("a", ProbeRole::Readiness, |_, _| Err("not yet".into()));
            sim.exit("a", code(1)).advance(ms(100));
        }),
        ("being stopped as unhealthy", |sim| {
            sim.ignore_stop.insert(0);
            sim.probe("a", ProbeRole::Liveness, |_, _| Err("hung".into()));
            sim.advance(ms(200));
        }),
    ];
    for (phase, setup) in phases {
        let mut a = child("a");
        a.readiness = Some(probe(50, None));
        a.liveness = Some(probe(100, Some(1)));
        let mut sim = Sim::new(group(
            Strategy::OneForOne,
            5,
            Duration::from_secs(10),
            vec![a],
        ));
        sim.start();
        setup(&mut sim);
        let spawns = sim.spawns("a");
        sim.input(Input::StopChild(0));
        sim.kill_pending();
        sim.advance(Duration::from_secs(60));
        assert!(!sim.running("a"), "{phase}");
        assert_eq!(
            sim.spawns("a"),
            spawns,
            "{phase}: restarted after a manual stop"
        );
        assert!(sim.core.is_down(0), "{phase}");
        assert_eq!(
            sim.core.status(sim.now)[0].state,
            ChildState::Stopped,
            "{phase}"
        );
    }
}

#[test]
fn start_after_manual_stop_forgets_backoff() {
    let mut a = child("a");
    a.backoff = Backoff::exponential(ms(100), ms(10_000)).jitter(0.0);
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        50,
        Duration::from_secs(100),
        vec![a],
    ));
    sim.start();
    for _ in 0..5 {
        sim.exit("a", code(1)).advance(ms(5_000));
    }
    sim.input(Input::StopChild(0));
    sim.input(Input::StartChild(0));
    assert!(sim.running("a"));
    sim.exit("a", code(1));
    assert!(
        sim.kinds()
            .last()
            .unwrap()
            .contains("restarting in 100ms (attempt 1)")
    );
}

#[test]
fn shutdown_in_every_phase_ends_without_restarting() {
    type Setup = fn(&mut Sim);
    let phases: [(&str, Setup); 4] = [
        ("running", |_| {}),
        ("backoff", |sim| {
            sim.exit("b", code(1));
        }),
        ("readiness pending", |sim| {
            sim.probe("b", ProbeRole::Readiness, |_, _| Err("not yet".into()));
            sim.exit("b", code(1)).advance(ms(100));
        }),
        ("stop ignored until killed", |sim| {
            sim.ignore_stop.insert(1);
        }),
    ];
    for (phase, setup) in phases {
        let mut b = child("b");
        b.readiness = Some(probe(50, None));
        let mut sim = Sim::new(group(
            Strategy::OneForOne,
            5,
            Duration::from_secs(10),
            vec![child("a"), b, child("c")],
        ));
        sim.start();
        setup(&mut sim);
        let from = sim.log.len();
        sim.input(Input::Shutdown);
        sim.kill_pending();
        sim.advance(Duration::from_secs(60));
        let log = sim.log_since(from);
        assert!(
            log.iter().all(|l| !l.starts_with("spawn")),
            "{phase}: {log:?}"
        );
        assert_eq!(sim.outcome, Some(Outcome::Shutdown), "{phase}");
        assert!(sim.core.is_done());
        assert!(sim.live.is_empty(), "{phase}");
        // Reverse order.
        let stops: Vec<&String> = log.iter().filter(|l| l.starts_with("stop")).collect();
        let order: Vec<char> = stops.iter().map(|l| l.chars().nth(5).unwrap()).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(order, sorted, "{phase}");
        assert_eq!(sim.kinds().last().unwrap(), "*: stopped");
    }
}

#[test]
fn stop_while_spawning_stops_once_spawned() {
    let mut core = Core::new(
        group(
            Strategy::OneForOne,
            5,
            Duration::from_secs(10),
            vec![child("a")],
        ),
        Instant::now(),
    );
    let now = Instant::now();
    let actions = core.step(Input::Start, now);
    assert!(actions.contains(&Action::Spawn {
        child: 0,
        instance: 1
    }));
    // Shutdown arrives before the runtime reported the spawn.
    let actions = core.step(Input::Shutdown, now);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Stop { .. } | Action::Done(_)))
    );
    let actions = core.step(
        Input::Spawned {
            child: 0,
            instance: 1,
            pid: 9,
        },
        now,
    );
    assert!(actions.contains(&Action::Stop {
        child: 0,
        instance: 1,
        reason: StopReason::Shutdown
    }));
    let actions = core.step(
        Input::Exited {
            child: 0,
            instance: 1,
            exit: ExitReport::new(sig(libc::SIGTERM)),
        },
        now,
    );
    assert!(actions.contains(&Action::Done(Outcome::Shutdown)));
    // Late inputs after the end are ignored.
    assert!(core.step(Input::Timer { token: 1 }, now).is_empty());
    assert!(core.step(Input::StartChild(0), now).is_empty());
}

// ---- rolling restart ----------------------------------------------------------------------

#[test]
fn rolling_restart_starts_new_before_stopping_old() {
    let mut a = child("a");
    a.readiness = Some(probe(50, None));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a, child("b")],
    ));
    // Each new instance needs 100 ms to become ready.
    let started: std::rc::Rc<std::cell::RefCell<HashMap<u64, Duration>>> = Default::default();
    let seen = started.clone();
    sim.probe("a", ProbeRole::Readiness, move |instance, t| {
        let first = *seen.borrow_mut().entry(instance).or_insert(t);
        if t >= first + ms(100) {
            Ok(())
        } else {
            Err("warming up".into())
        }
    });
    sim.start().advance(ms(500));
    let from = sim.log.len();
    let events_from = sim.events.len();
    sim.input(Input::Roll(None));
    sim.advance(ms(99));
    // New "a" spawned; old "a" still running because the new one is not ready.
    assert_eq!(sim.log_since(from), ["spawn a"]);
    sim.advance(ms(1));
    sim.advance(ms(0));
    assert_eq!(
        sim.log_since(from),
        [
            "spawn a",
            "stop a (replaced)",
            "spawn b",
            "stop b (replaced)"
        ]
    );
    let replaced: Vec<String> = sim.events[events_from..]
        .iter()
        .map(describe)
        .filter(|k| k.contains("replaced pid"))
        .collect();
    assert_eq!(
        replaced,
        [
            "a: replaced pid 100 by ready pid 102",
            "b: replaced pid 101 by ready pid 103"
        ]
    );
    assert!(!sim.core.is_rolling(None));
    assert_eq!(
        sim.core.budget.used(),
        0,
        "a rolling restart is not a failure"
    );
}

#[test]
fn failed_replacement_keeps_the_old_instance() {
    let mut a = child("a");
    a.readiness = Some(probe(50, Some(2)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    sim.probe("a", ProbeRole::Readiness, |instance, _| {
        if instance == 1 {
            Ok(())
        } else {
            Err("bad build".into())
        }
    });
    sim.start();
    let from = sim.log.len();
    sim.input(Input::Roll(Some(0)));
    sim.advance(ms(500));
    assert_eq!(
        sim.log_since(from),
        ["spawn a", "stop a (not ready in time)"]
    );
    assert!(
        sim.kinds()
            .iter()
            .any(|k| k.starts_with("a: replacement failed"))
    );
    assert_eq!(
        sim.core.roll_failure(0),
        Some("replacement ended: signal SIGTERM")
    );
    assert!(sim.core.is_ready(0));
    assert_eq!(sim.core.status(sim.now)[0].pid, Some(100));
    assert!(!sim.core.is_rolling(Some(0)));
}

#[test]
fn crash_during_rolling_restart_adopts_the_replacement() {
    let mut a = child("a");
    a.readiness = Some(probe(50, None));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![a],
    ));
    sim.probe("a", ProbeRole::Readiness, |instance, t| {
        if instance == 1 || t >= ms(300) {
            Ok(())
        } else {
            Err("warming".into())
        }
    });
    sim.start();
    sim.input(Input::Roll(Some(0)));
    sim.advance(ms(100)).exit("a", code(1));
    sim.advance(ms(300));
    assert_eq!(sim.spawns("a"), 2, "{:#?}", sim.kinds());
    assert!(sim.core.is_ready(0));
    assert_eq!(sim.core.status(sim.now)[0].pid, Some(101));
}

// ---- explain ------------------------------------------------------------------------------

#[test]
fn explain_says_why() {
    let mut c = child("w");
    c.backoff = Backoff::exponential(ms(100), ms(800)).jitter(0.0);
    c.restart = Restart::Transient;
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        2,
        Duration::from_secs(10),
        vec![c],
    ));
    sim.start().advance(ms(250)).exit("w", code(2));
    sim.advance(ms(100)).exit("w", sig(libc::SIGSEGV));
    sim.advance(ms(200)).exit("w", code(2));
    let text = sim.core.explain(0, sim.now).to_string();
    insta::assert_snapshot!(text);
}

// ---- the crash-loop transcript --------------------------------------------------------------

#[test]
fn crash_loop_transcript() {
    let mut web = child("web");
    web.readiness = Some(probe(20, None));
    web.liveness = Some(probe(100, Some(2)));
    let mut worker = child("worker");
    worker.backoff = Backoff::exponential(ms(100), ms(1_600)).jitter(0.0);
    let mut cache = optional_cache();
    cache.breaker = Some(BreakerConfig::new(2, Duration::from_secs(5)).open_for(ms(1_000)));
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        4,
        Duration::from_secs(3),
        vec![web, worker, cache],
    ));
    sim.probe("web", ProbeRole::Readiness, |_, t| {
        if t >= ms(40) {
            Ok(())
        } else {
            Err("connection refused".into())
        }
    });
    sim.start().advance(ms(100));
    // The worker crash-loops with a growing backoff ...
    for _ in 0..4 {
        sim.exit("worker", code(1));
        let Some(EventKind::Restarting { after, .. }) = sim.events.last().map(|e| e.kind.clone())
        else {
            panic!("{}", sim.transcript());
        };
        sim.advance(after + ms(10));
    }
    // ... the cache trips its breaker and the group degrades ...
    sim.exit("cache", sig(libc::SIGSEGV))
        .advance(ms(100))
        .exit("cache", sig(libc::SIGSEGV));
    sim.advance(ms(1_000));
    // ... and the worker's fifth crash within 3 s exceeds the intensity of 4.
    sim.exit("worker", code(1));
    sim.advance(ms(1_000));
    insta::assert_snapshot!(sim.transcript());
}

// ---- laws ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Crash(usize, i32),
    Stop(usize),
    Start(usize),
    Roll,
    ProbeFlip(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..400).prop_map(Op::Advance),
        4 => (0usize..3, 0i32..3).prop_map(|(c, e)| Op::Crash(c, e)),
        1 => (0usize..3).prop_map(Op::Stop),
        1 => (0usize..3).prop_map(Op::Start),
        1 => Just(Op::Roll),
        1 => (0usize..3).prop_map(Op::ProbeFlip),
    ]
}

fn strategy() -> impl proptest::strategy::Strategy<Value = crate::policy::Strategy> {
    prop_oneof![
        Just(crate::policy::Strategy::OneForOne),
        Just(crate::policy::Strategy::OneForAll),
        Just(crate::policy::Strategy::RestForOne),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Laws over random histories: the restart budget is never exceeded (no more than
    /// `intensity` restarts of critical children after failures within any `period`), a
    /// manually stopped child is never spawned again until started, nothing is spawned after a
    /// shutdown, and a shutdown always ends with every instance gone.
    #[test]
    fn laws_hold_over_random_histories(
        strat in strategy(),
        intensity in 0u32..5,
        period in 100u64..3_000,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut children: Vec<ChildPolicy> = ["a", "b", "c"].map(child).to_vec();
        children[1].readiness = Some(probe(30, Some(3)));
        children[1].liveness = Some(probe(50, Some(2)));
        children[2].optional = true;
        children[2].breaker = Some(BreakerConfig::new(2, ms(1_000)).open_for(ms(500)));
        children[0].backoff = Backoff::exponential(ms(10), ms(300)).jitter(0.5);
        let mut sim = Sim::new(group(strat, intensity, ms(period), children));
        let healthy = std::rc::Rc::new(std::cell::Cell::new([true; 3]));
        for i in 0..3 {
            let h = healthy.clone();
            sim.probes.insert((i, ProbeRole::Readiness), Box::new(move |_, _| if h.get()[i] { Ok(()) } else { Err("x".into()) }));
            let h = healthy.clone();
            sim.probes.insert((i, ProbeRole::Liveness), Box::new(move |_, _| if h.get()[i] { Ok(()) } else { Err("x".into()) }));
        }
        sim.start();
        let mut manually_stopped = [false; 3];
        for op in ops {
            if sim.outcome.is_some() { break; }
            let before = sim.log.len();
            match op {
                Op::Advance(n) => { sim.advance(ms(n)); }
                Op::Crash(c, e) => {
                    if sim.running(sim.names[c].clone().as_str()) {
                        let ending = [code(0), code(1), sig(libc::SIGKILL)][e as usize].clone();
                        let name = sim.names[c].clone();
                        sim.exit(&name, ending);
                    }
                }
                Op::Stop(c) => { manually_stopped[c] = true; sim.input(Input::StopChild(c)); }
                Op::Start(c) => { manually_stopped[c] = false; sim.input(Input::StartChild(c)); }
                Op::Roll => sim.input(Input::Roll(None)),
                Op::ProbeFlip(c) => { let mut h = healthy.get(); h[c] = !h[c]; healthy.set(h); }
            }
            for (c, stopped) in manually_stopped.iter().enumerate() {
                if *stopped {
                    let name = format!("spawn {}", sim.names[c]);
                    prop_assert!(!sim.log[before..].contains(&name), "{} spawned after a manual stop", sim.names[c]);
                }
            }
            // At most two instances of a child at once (old + replacement), never more.
            for c in 0..3 {
                prop_assert!(sim.live.keys().filter(|(i, _)| *i == c).count() <= 2);
            }
        }
        // Budget law: count the group's failure-driven restart decisions (critical children).
        let restarts: Vec<Duration> = sim.events.iter()
            .filter(|e| matches!(e.kind, EventKind::Restarting { .. }) && e.child.as_deref() != Some("c"))
            .map(|e| e.at)
            .collect();
        for (i, &t) in restarts.iter().enumerate() {
            let in_window = restarts[..=i].iter().filter(|&&s| t - s <= ms(period)).count();
            prop_assert!(in_window as u32 <= intensity, "{} restarts within {period}ms at {t:?}", in_window);
        }
        // Shutdown always ends, with nothing left and nothing spawned after it.
        sim.ignore_stop.clear();
        sim.kill_pending();
        let before = sim.log.len();
        sim.input(Input::Shutdown);
        sim.advance(Duration::from_secs(100));
        prop_assert!(sim.core.is_done());
        prop_assert!(sim.live.is_empty(), "left running: {:?}", sim.live);
        prop_assert!(!sim.log[before..].iter().any(|l| l.starts_with("spawn")));
        prop_assert!(sim.timers.is_empty(), "timers left: {}", sim.timers.len());
    }
}

#[test]
fn notified_readiness_gates_the_start_order() {
    let mut sub = child("sub");
    sub.notify_ready = true;
    sub.start_timeout = None;
    let mut sim = Sim::new(group(
        Strategy::OneForOne,
        5,
        Duration::from_secs(10),
        vec![sub, child("b")],
    ));
    sim.start().advance(Duration::from_secs(3_600));
    assert_eq!(
        sim.log,
        ["spawn sub"],
        "no start timeout: waits as long as it takes"
    );
    // A stale or foreign notification changes nothing.
    sim.input(Input::Ready {
        child: 0,
        instance: 99,
    });
    assert_eq!(sim.log, ["spawn sub"]);
    sim.input(Input::Ready {
        child: 0,
        instance: 1,
    });
    assert_eq!(sim.log, ["spawn sub", "spawn b"]);
    assert!(sim.core.is_started());
}
