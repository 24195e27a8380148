//! Real-process tests of the supervisor, with `forkyard-fixture` children.
//!
//! Every test waits on supervisor events with a deadline (never a sleep), and ends by checking
//! that every process it saw (children and, where there are any, grandchildren) is dead.

mod exits;
mod health;
mod many;
mod sandboxed;
mod stops;
mod strategy;
mod transcript;
mod tree;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkyard_child::{Input, Output};
use forkyard_supervise::{Event, EventKind, EventStream, Heartbeat, Launch};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

/// A failure bound for anything a test waits for (generous for a loaded 2-core machine).
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub(crate) async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?}"))
}

/// A fixture command with stdin closed (so it never reads the test's terminal).
pub(crate) fn fixture(args: &[&str]) -> Command {
    let (sub, rest) = args.split_first().expect("a subcommand");
    let mut cmd = forkyard_testkit::fixture(sub);
    cmd.args(rest).stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// Reads a supervisor's events, keeping all of them and every pid spawned.
pub(crate) struct Watch {
    events: EventStream,
    pub(crate) seen: Vec<Event>,
    pids: BTreeSet<u32>,
}

impl Watch {
    pub(crate) fn new(events: EventStream) -> Self {
        Watch {
            events,
            seen: Vec::new(),
            pids: BTreeSet::new(),
        }
    }

    /// Waits (up to [`DEADLINE`]) for the next event that satisfies `pred`.
    pub(crate) async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => panic!("event stream ended waiting for {what}\n{}", self.dump()),
                Err(_) => panic!("timed out waiting for {what}\n{}", self.dump()),
            };
            if let EventKind::Spawned { pid } = event.kind
                && pid != 0
            {
                self.pids.insert(pid);
            }
            assert!(
                !matches!(event.kind, EventKind::Lagged { .. }),
                "test fell behind the event stream"
            );
            self.seen.push(event.clone());
            if pred(&event) {
                return event;
            }
        }
    }

    /// Waits for an event of `child` whose kind satisfies `pred`.
    pub(crate) async fn child(
        &mut self,
        child: &str,
        what: &str,
        pred: impl Fn(&EventKind) -> bool,
    ) -> Event {
        let label = format!("{child}: {what}");
        self.until(&label, |e| {
            e.child.as_deref() == Some(child) && pred(&e.kind)
        })
        .await
    }

    /// Waits until the root supervisor reports it has stopped.
    pub(crate) async fn stopped(&mut self) {
        self.until("the supervisor to stop", |e| {
            e.child.is_none() && e.supervisor == "root" && e.kind == EventKind::Stopped
        })
        .await;
    }

    /// Waits for an event of `child` like [`child`](Self::child), unless one was seen already.
    pub(crate) async fn seen_or_wait(
        &mut self,
        child: &str,
        what: &str,
        pred: impl Fn(&EventKind) -> bool,
    ) {
        let seen = self
            .seen
            .iter()
            .any(|e| e.child.as_deref() == Some(child) && pred(&e.kind));
        if !seen {
            self.child(child, what, pred).await;
        }
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.pids.iter().copied().collect()
    }

    /// Events of one child, as `kind` lines.
    pub(crate) fn lines_of(&self, child: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|e| e.child.as_deref() == Some(child))
            .map(|e| e.kind.to_string())
            .collect()
    }

    pub(crate) fn dump(&self) -> String {
        self.seen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Asserts that every pid is dead (gone or a zombie of somebody else) and that none is an
/// unreaped child of ours.
pub(crate) fn assert_all_dead(pids: &[u32]) {
    forkyard_testkit::wait_all_dead(pids, DEADLINE).expect("every process dead");
    let zombies = forkyard_testkit::zombie_children(std::process::id());
    let ours: Vec<u32> = zombies.into_iter().filter(|z| pids.contains(z)).collect();
    assert!(ours.is_empty(), "unreaped children: {ours:?}");
}

/// Lines a fixture prints on stdout: `ready` lines become heartbeats (a readiness probe), and
/// `pid N` lines are collected.
#[derive(Clone)]
pub(crate) struct StdoutWatch {
    pub(crate) beats: Arc<watch::Sender<Heartbeat>>,
    pub(crate) pids: Arc<Mutex<Vec<u32>>>,
}

impl StdoutWatch {
    pub(crate) fn new() -> (Self, watch::Receiver<Heartbeat>) {
        let (tx, rx) = watch::channel(Heartbeat::default());
        (
            StdoutWatch {
                beats: Arc::new(tx),
                pids: Arc::default(),
            },
            rx,
        )
    }

    /// A launch of `cmd` whose stdout is read by this watch.
    pub(crate) fn launch(&self, cmd: Command) -> Launch {
        let watch = self.clone();
        Launch::new(cmd)
            .stdin(Input::Null)
            .stdout(Output::piped())
            .on_spawn(move |child| {
                let pipe = child.take_stdout().expect("stdout is piped");
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(pipe).lines();
                    let mut n = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.starts_with("ready") {
                            n += 1;
                            watch.beats.send_replace(Heartbeat::new(n));
                        } else if let Some(pid) = line.strip_prefix("pid ")
                            && let Ok(pid) = pid.trim().parse()
                        {
                            watch.pids.lock().unwrap().push(pid);
                        }
                    }
                });
            })
    }
}

/// Sends `signal` to a process (as an outside actor would).
pub(crate) fn kill(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("positive pid");
    rustix::process::kill_process(pid, signal).expect("kill");
}
