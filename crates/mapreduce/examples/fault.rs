//! The fault suite: word counts while an outside party SIGKILLs and SIGSTOPs
//! worker processes at random moments of both phases, over an input with
//! poison records; every run's output must be byte-identical to a clean run's.
//!
//! ```sh
//! cargo xtask fault mapreduce --seed 7          # or: cargo run --example fault -p forkyard-mapreduce -- --seed 7 [--quick]
//! ```
//!
//! The faults come from outside the workers, as an operator's `kill -9` or
//! the OOM killer would: the engine's event stream ([`MapReduce::on_event`])
//! names each worker's pid as it becomes ready, and a chaos party holding a
//! pidfd for each one strikes a random worker at random moments after
//! attempts start, in the map and in the reduce phase. A strike is a SIGKILL,
//! or a SIGSTOP (one stopped worker at a time) that is sometimes lifted with
//! a SIGCONT later, so that a straggler that was overtaken by its backup
//! wakes up and tries to commit too. The seed fixes the corpus, the poison
//! records and every decision of the chaos party; when a strike lands depends
//! on the machine.
//!
//! Prints one summary line; exits non-zero on any difference, on a failed
//! job, or if a phase got no strike at all.

#[path = "common/mod.rs"]
mod common;
#[path = "common/fault_dist.rs"]
mod fault_dist;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use forkyard_mapreduce::jobs::WordCount;
use forkyard_mapreduce::{JobEvent, LineFiles, MapReduce, Phase};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

#[derive(Debug, Parser)]
struct Args {
    /// Seed for the corpus, the poison records and the chaos party's decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A run of seconds (as CI runs it).
    #[arg(long)]
    quick: bool,
}

const REDUCERS: u32 = 3;

fn job(inputs: &[std::path::PathBuf], out: &std::path::Path, split: u64) -> MapReduce<WordCount> {
    MapReduce::new(WordCount::poisoned_by("POISON"))
        .input(LineFiles::new(inputs))
        .out_dir(out)
        .workers(2)
        .reducers(REDUCERS)
        .split_size(split)
        .max_skipped(50)
        .max_failures(8)
        .backups(true, Duration::from_millis(200))
        // A stopped worker whose task has no backup yet (the phase still has
        // pending tasks) is killed after this.
        .task_timeout(Duration::from_secs(5))
}

fn main() -> ExitCode {
    forkyard_mapreduce::serve_if_worker::<WordCount>();
    let args = Args::parse();
    match run(&args) {
        // Then the distributed engine, when nats-server is on PATH.
        Ok(true) => fault_dist::exit_code(args.seed, args.quick),
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("fault mapreduce seed {}: FAILED: {e:#}", args.seed);
            ExitCode::FAILURE
        }
    }
}

/// Signals sent, by phase.
#[derive(Debug, Default, Clone, Copy)]
struct Struck {
    kills: u32,
    stops: u32,
    conts: u32,
}

/// A worker as the chaos party knows it: a pidfd taken when it became
/// ready, so a signal can never reach a recycled pid.
#[derive(Debug)]
struct Victim {
    pidfd: OwnedFd,
    /// When a SIGSTOP was sent, and when (if ever) it is to be lifted.
    stopped: Option<Option<Instant>>,
}

/// The chaos party's state, shared by the engine's observer (which learns
/// workers and phases and schedules strikes) and its own thread (which
/// fires the strikes that are due).
#[derive(Debug)]
struct Chaos {
    rng: fastrand::Rng,
    phase: Option<Phase>,
    workers: BTreeMap<u32, Victim>,
    /// Strikes to fire: when, and in which phase (dropped if it has ended).
    due: Vec<(Instant, Phase)>,
    /// A typical task's duration per phase (from the clean run): the range of
    /// a strike's delay after the attempt that triggers it.
    typical: [Duration; 2],
    first_attempt_seen: [bool; 2],
    struck: [Struck; 2],
    done: bool,
}

fn idx(phase: Phase) -> usize {
    match phase {
        Phase::Map => 0,
        Phase::Reduce => 1,
    }
}

impl Chaos {
    fn observe(&mut self, event: &JobEvent) {
        match *event {
            JobEvent::PhaseStarted { phase, .. } => self.phase = Some(phase),
            JobEvent::PhaseFinished { .. } => {
                self.phase = None;
                self.due.clear();
            }
            JobEvent::WorkerReady { pid } => {
                // A worker that died before we look has no pidfd to take.
                if let Some(pidfd) =
                    Pid::from_raw(pid as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
                {
                    self.workers.insert(
                        pid,
                        Victim {
                            pidfd,
                            stopped: None,
                        },
                    );
                }
            }
            JobEvent::WorkerExited { pid } => {
                self.workers.remove(&pid);
            }
            JobEvent::AttemptStarted { phase, .. } => {
                let i = idx(phase);
                if !self.first_attempt_seen[i] {
                    // Every phase gets a strike: at once, on the phase's first attempt.
                    self.first_attempt_seen[i] = true;
                    if self.strike(phase) {
                        return;
                    }
                    self.due.push((Instant::now(), phase));
                    return;
                }
                let p = match phase {
                    Phase::Map => 0.35,
                    Phase::Reduce => 0.5,
                };
                if self.rng.f64() < p {
                    let delay = self.typical[i].mul_f64(self.rng.f64());
                    self.due.push((Instant::now() + delay, phase));
                }
            }
            _ => {}
        }
    }

    /// Signals a random live worker; false if there was none to signal.
    fn strike(&mut self, phase: Phase) -> bool {
        if self.workers.is_empty() {
            return false;
        }
        let n = self.rng.usize(0..self.workers.len());
        let one_stopped = self.workers.values().any(|v| v.stopped.is_some());
        let stop = !one_stopped && self.rng.u32(0..10) < 3;
        let lift = self.rng.bool();
        let resume_in = Duration::from_millis(self.rng.u64(50..600));
        let Some((_, victim)) = self.workers.iter_mut().nth(n) else {
            return false;
        };
        let signal = if stop { Signal::STOP } else { Signal::KILL };
        if pidfd_send_signal(&victim.pidfd, signal).is_err() {
            // It exited a moment ago (its WorkerExited is on its way).
            return false;
        }
        let struck = &mut self.struck[idx(phase)];
        if stop {
            struck.stops += 1;
            victim.stopped = Some(lift.then(|| Instant::now() + resume_in));
        } else {
            struck.kills += 1;
        }
        true
    }

    /// Fires the strikes and lifts the stops that are due; returns when the
    /// next one is.
    fn fire(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut later = Vec::new();
        for (at, phase) in std::mem::take(&mut self.due) {
            if at > now {
                later.push((at, phase));
            } else if self.phase == Some(phase) && !self.strike(phase) {
                // No worker to strike yet (a new pool is starting): soon again.
                later.push((now + Duration::from_millis(2), phase));
            }
        }
        self.due = later;
        let phase = self.phase;
        for victim in self.workers.values_mut() {
            if let Some(Some(at)) = victim.stopped
                && at <= now
            {
                if pidfd_send_signal(&victim.pidfd, Signal::CONT).is_ok()
                    && let Some(p) = phase
                {
                    self.struck[idx(p)].conts += 1;
                }
                victim.stopped = None;
            }
        }
        let lifts = self.workers.values().filter_map(|v| v.stopped.flatten());
        self.due.iter().map(|d| d.0).chain(lifts).min()
    }
}

/// Runs the chaos party's thread for the length of `f`.
fn with_chaos<T>(chaos: &Arc<(Mutex<Chaos>, Condvar)>, f: impl FnOnce() -> T) -> T {
    let party = {
        let chaos = chaos.clone();
        std::thread::spawn(move || {
            let (state, wake) = &*chaos;
            let mut st = state.lock().expect("chaos state");
            while !st.done {
                let next = st.fire();
                // A timer, not a synchronisation: strikes are due at moments
                // the chaos party chose.
                let wait = next.map_or(Duration::from_millis(100), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                st = wake.wait_timeout(st, wait).expect("chaos state").0;
            }
        })
    };
    let out = f();
    chaos.0.lock().expect("chaos state").done = true;
    chaos.1.notify_all();
    let _ = party.join();
    out
}

fn run(args: &Args) -> Result<bool> {
    let (size, runs, split) = if args.quick {
        (1u64 << 20, 2, 96u64 << 10)
    } else {
        (16u64 << 20, 8, 1u64 << 20)
    };
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    common::zipf_corpus(&corpus, size, 20_000, args.seed)?;
    // Poison records spread over the corpus: each line gets the marker
    // with a small probability.
    let text = std::fs::read(&corpus)?;
    let mut poisoned = Vec::with_capacity(text.len() + 1024);
    let mut n_poison = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if n_poison < 5 && rng.u32(0..2000) == 0 {
            poisoned.extend_from_slice(b"POISON ");
            n_poison += 1;
        }
        poisoned.extend_from_slice(line);
    }
    std::fs::write(&corpus, &poisoned)?;
    let inputs = vec![corpus.clone()];

    let clean_out = dir.path().join("clean");
    let clean = job(&inputs, &clean_out, split)
        .run_blocking()
        .context("the clean run")?;
    let reference = common::reference(&[corpus.as_path()], Some("POISON"))?;
    common::check_output(&clean_out, &reference, REDUCERS).map_err(anyhow::Error::msg)?;
    let typical = |wall: Duration, tasks: usize| {
        // Two workers: each runs about half the tasks one after the other.
        wall.mul_f64(2.0 / tasks.max(1) as f64)
            .max(Duration::from_millis(1))
    };

    let mut struck = [Struck::default(); 2];
    let (mut identical, mut retries, mut backups, mut backup_wins) = (0, 0, 0, 0);
    let mut differences = Vec::new();
    for run in 0..runs {
        let chaos = Arc::new((
            Mutex::new(Chaos {
                rng: fastrand::Rng::with_seed(rng.u64(..)),
                phase: None,
                workers: BTreeMap::new(),
                due: Vec::new(),
                typical: [
                    typical(clean.map.wall, clean.map.tasks),
                    typical(clean.reduce.wall, clean.reduce.tasks),
                ],
                first_attempt_seen: [false; 2],
                struck: [Struck::default(); 2],
                done: false,
            }),
            Condvar::new(),
        ));
        let out = dir.path().join(format!("run-{run}"));
        let observer = chaos.clone();
        let mr = job(&inputs, &out, split).on_event(move |event| {
            let (state, wake) = &*observer;
            if let Ok(mut st) = state.lock() {
                st.observe(event);
            }
            wake.notify_all();
        });
        let result = with_chaos(&chaos, || mr.run_blocking());
        let st = chaos.0.lock().expect("chaos state");
        for (total, this) in struck.iter_mut().zip(st.struck) {
            total.kills += this.kills;
            total.stops += this.stops;
            total.conts += this.conts;
        }
        match result {
            Ok(report) => {
                retries += report.map.retries + report.reduce.retries;
                backups += report.map.backups + report.reduce.backups;
                backup_wins += report.map.backup_wins + report.reduce.backup_wins;
                match common::same_parts(&clean_out, &out, REDUCERS) {
                    Ok(()) => identical += 1,
                    Err(e) => differences.push(format!("run {run}: {e}")),
                }
                if report.skipped.len() != clean.skipped.len() {
                    differences.push(format!(
                        "run {run}: {} records skipped, the clean run skipped {}",
                        report.skipped.len(),
                        clean.skipped.len()
                    ));
                }
            }
            Err(e) => differences.push(format!("run {run}: the job failed: {e}")),
        }
    }
    for (phase, s) in ["map", "reduce"].iter().zip(struck) {
        if s.kills + s.stops == 0 {
            differences.push(format!("no worker was struck in the {phase} phase"));
        }
    }
    let ok = differences.is_empty();
    let [m, r] = struck;
    println!(
        "fault mapreduce seed {}: {identical}/{runs} outputs byte-identical to the clean run; from outside, map: {} SIGKILL {} SIGSTOP {} SIGCONT, reduce: {} SIGKILL {} SIGSTOP {} SIGCONT; {retries} retries, {backups} backups ({backup_wins} won), {} poison records skipped per run{}{}",
        args.seed,
        m.kills,
        m.stops,
        m.conts,
        r.kills,
        r.stops,
        r.conts,
        clean.skipped.len(),
        if ok { "" } else { "; " },
        differences.join("; ")
    );
    Ok(ok)
}
