//! The cluster's actor: the listener, the workers, and every connection not yet
//! acknowledged, in one task. Generations (start, switch, abort) are in
//! [`handoff`](super::handoff).

use std::collections::{HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::time::Duration;

use forkyard_child::{Child, Exit};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{
    ClusterConfig, ClusterStats, Cmd, CommandFactory, Counts, FromWorker, GENERATION_ENV, Mode,
    ToWorker, WORKER_INDEX_ENV, WorkerSlot, WorkerState, WorkerStats,
};
use crate::channel::Channel;
use crate::error::{Error, Result};

/// An accepted connection the parent holds until a worker acknowledges it.
#[derive(Debug)]
pub(super) struct PendingConn {
    pub(super) id: u64,
    pub(super) socket: OwnedFd,
    /// When it was last handed to a worker.
    pub(super) handed_at: Instant,
}

/// How long round-robin waits for the worker whose turn it is to acknowledge
/// its previous connection before handing the next one to another worker.
pub(super) const ACK_PATIENCE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(super) struct WorkerEntry {
    pub(super) slot: WorkerSlot,
    pub(super) pid: u32,
    pub(super) state: WorkerState,
    pub(super) to_worker: mpsc::UnboundedSender<ToWorker>,
    /// Dropping it (or sending a grace) stops the process.
    pub(super) stop: Option<oneshot::Sender<Duration>>,
    pub(super) in_flight: Option<PendingConn>,
    pub(super) handed: u64,
    pub(super) open: u64,
    pub(super) reported: Counts,
    pub(super) channel_closed: bool,
    /// Set once the process is gone: how it ended, in words.
    pub(super) exit: Option<String>,
    pub(super) status: Option<Exit>,
    /// When a draining worker gets stopped.
    pub(super) drain_deadline: Option<Instant>,
}

impl WorkerEntry {
    pub(super) fn alive(&self) -> bool {
        self.exit.is_none() && !self.channel_closed
    }

    /// Gone for good, with every message it sent processed (its final counts
    /// included): the process was reaped and its channel read to the end.
    pub(super) fn finished(&self) -> bool {
        self.exit.is_some() && self.channel_closed
    }

    pub(super) fn free(&self) -> bool {
        self.state == WorkerState::Ready && self.in_flight.is_none() && self.alive()
    }

    pub(super) fn stats(&self, mode: Mode) -> WorkerStats {
        WorkerStats {
            index: self.slot.index,
            generation: self.slot.generation,
            pid: self.pid,
            state: self.state,
            connections: if mode.parent_accepts() {
                self.handed
            } else {
                self.reported.connections
            },
            open: self.open,
            requests: self.reported.requests,
            in_flight: self.in_flight.is_some(),
            exit: self.status.clone(),
        }
    }
}

pub(crate) enum Event {
    Message(usize, FromWorker),
    ChannelClosed(usize, Option<String>),
    Exited(usize, std::result::Result<Exit, String>),
}

/// A generation on its way in: waiting for its workers to be ready, then
/// (in a handoff) for the one before it to drain.
pub(crate) struct Transition {
    pub(crate) generation: u64,
    pub(crate) previous: Option<u64>,
    pub(crate) ready_deadline: Instant,
    pub(crate) switched: bool,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

pub(super) struct StatsWaiter {
    pub(super) waiting: HashSet<usize>,
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<ClusterStats>,
}

/// The cluster's actor: owns the listener, the workers and every connection
/// not yet acknowledged. Everything happens in its one task, so no state is
/// shared and no lock is held.
pub(crate) struct Engine {
    pub(crate) config: ClusterConfig,
    pub(super) command: CommandFactory,
    pub(super) listener: std::net::TcpListener,
    pub(super) accept: Option<tokio::net::TcpListener>,
    pub(super) accepting: bool,
    pub(super) workers: Vec<WorkerEntry>,
    /// The generation connections go to.
    pub(crate) serving: u64,
    /// The newest generation spawned.
    pub(crate) generation: u64,
    pub(super) pending: VecDeque<PendingConn>,
    pub(super) next_conn: u64,
    pub(super) rr_cursor: usize,
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    pub(crate) transition: Option<Transition>,
    pub(super) stats_waiters: Vec<StatsWaiter>,
    pub(super) shutdown: Option<oneshot::Sender<ClusterStats>>,
    pub(super) redispatched: u64,
    pub(super) closed_undelivered: u64,
}

impl Engine {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut cmds_open = true;
        loop {
            if self.shutdown.is_some() && self.workers.iter().all(WorkerEntry::finished) {
                let stats = self.snapshot();
                if let Some(reply) = self.shutdown.take() {
                    let _ = reply.send(stats);
                }
                return;
            }
            if !cmds_open && self.shutdown.is_none() {
                // Every handle is gone without a shutdown: kill everything now
                // (dropping the stop senders SIGKILLs each group).
                tracing::debug!("cluster: handle dropped, killing workers");
                return;
            }
            let can_accept = self.accepting && self.pending.len() < self.config.max_pending;
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => cmds_open = false,
                },
                Some(event) = events.recv() => self.on_event(event),
                accepted = accept(self.accept.as_ref()), if can_accept => match accepted {
                    Ok(stream) => self.on_accept(stream),
                    Err(e) => {
                        // EMFILE and friends: do not spin on a listener that
                        // keeps failing; the connection stays in the backlog.
                        tracing::warn!(error = %e, "cluster: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = forkyard_child::sleep_until(deadline) => self.on_deadline(),
            }
        }
    }

    pub(super) fn on_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Stats(reply) => {
                let waiting: HashSet<usize> = (0..self.workers.len())
                    .filter(|&w| {
                        self.workers[w].alive() && self.workers[w].state != WorkerState::Starting
                    })
                    .collect();
                for &w in &waiting {
                    let _ = self.workers[w].to_worker.send(ToWorker::Report);
                }
                let waiter = StatsWaiter {
                    waiting,
                    deadline: Instant::now() + Duration::from_secs(1),
                    reply,
                };
                self.stats_waiters.push(waiter);
                self.settle_stats_waiters();
            }
            Cmd::Handoff(reply) => self.begin_handoff(reply),
            Cmd::Shutdown(reply) => {
                self.accepting = false;
                self.accept = None;
                for conn in self.pending.drain(..) {
                    drop(conn);
                    self.closed_undelivered += 1;
                }
                if let Some(t) = self.transition.take() {
                    let _ = t.reply.send(Err(Error::NotReady {
                        generation: t.generation,
                        reason: "the cluster is shutting down".into(),
                    }));
                }
                for w in 0..self.workers.len() {
                    self.drain_worker(w);
                }
                self.shutdown = Some(reply);
            }
        }
    }

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(w, msg) => self.on_message(w, msg),
            Event::ChannelClosed(w, why) => {
                let grace = self.config.stop_grace;
                let entry = &mut self.workers[w];
                entry.channel_closed = true;
                if let Some(why) = why {
                    tracing::debug!(worker = entry.slot.index, generation = entry.slot.generation, error = %why, "cluster: worker channel failed");
                }
                // A worker that hangs up without being asked to drain can no
                // longer be managed: stop it. (A draining one closes its channel
                // on its way out; its drain deadline covers it.)
                if entry.state != WorkerState::Draining
                    && entry.exit.is_none()
                    && let Some(stop) = entry.stop.take()
                {
                    let _ = stop.send(grace);
                }
                self.worker_lost(w);
            }
            Event::Exited(w, exit) => {
                let entry = &mut self.workers[w];
                let text = match exit {
                    Ok(exit) => {
                        let text = exit.to_string();
                        entry.status = Some(exit);
                        text
                    }
                    Err(e) => e,
                };
                tracing::debug!(worker = entry.slot.index, generation = entry.slot.generation, pid = entry.pid, exit = %text, "cluster: worker exited");
                entry.exit = Some(text);
                entry.state = WorkerState::Gone;
                entry.stop = None;
                self.worker_lost(w);
            }
        }
        self.dispatch();
    }

    pub(super) fn on_message(&mut self, w: usize, msg: FromWorker) {
        let entry = &mut self.workers[w];
        match msg {
            FromWorker::Ready => {
                if entry.state == WorkerState::Starting {
                    entry.state = WorkerState::Ready;
                    tracing::debug!(
                        worker = entry.slot.index,
                        generation = entry.slot.generation,
                        pid = entry.pid,
                        "cluster: worker ready"
                    );
                    self.check_transition();
                }
            }
            FromWorker::Accepted { id } => {
                if entry.in_flight.as_ref().is_some_and(|c| c.id == id) {
                    // The worker has its own copy now: close ours.
                    entry.in_flight = None;
                    entry.handed += 1;
                    entry.open += 1;
                }
            }
            FromWorker::Rejected { id } => {
                if entry.in_flight.as_ref().is_some_and(|c| c.id == id)
                    && let Some(conn) = entry.in_flight.take()
                {
                    self.redispatched += 1;
                    self.pending.push_front(conn);
                }
            }
            FromWorker::Closed { .. } => entry.open = entry.open.saturating_sub(1),
            FromWorker::Report(counts) => {
                entry.reported = counts;
                for waiter in &mut self.stats_waiters {
                    waiter.waiting.remove(&w);
                }
                self.settle_stats_waiters();
            }
            FromWorker::Done(counts) => {
                entry.reported = counts;
                for waiter in &mut self.stats_waiters {
                    waiter.waiting.remove(&w);
                }
                self.settle_stats_waiters();
            }
        }
    }

    /// A worker's channel closed or its process exited: take back what it held.
    pub(super) fn worker_lost(&mut self, w: usize) {
        let entry = &mut self.workers[w];
        if let Some(conn) = entry.in_flight.take() {
            tracing::debug!(
                worker = entry.slot.index,
                generation = entry.slot.generation,
                conn = conn.id,
                "cluster: worker lost with a connection in flight; handing it on"
            );
            self.redispatched += 1;
            self.pending.push_front(conn);
        }
        for waiter in &mut self.stats_waiters {
            waiter.waiting.remove(&w);
        }
        self.settle_stats_waiters();
        self.check_transition();
    }

    pub(super) fn on_accept(&mut self, stream: std::net::TcpStream) {
        let id = self.next_conn;
        self.next_conn += 1;
        self.pending.push_back(PendingConn {
            id,
            socket: OwnedFd::from(stream),
            handed_at: Instant::now(),
        });
        self.dispatch();
    }

    /// Hands pending connections to free workers of the serving generation.
    pub(super) fn dispatch(&mut self) {
        if !self.config.mode.parent_accepts() {
            return;
        }
        while !self.pending.is_empty() {
            let Some(w) = self.pick() else { break };
            let conn = self.pending.pop_front().expect("checked non-empty");
            let socket = match conn.socket.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot duplicate a connection; closing it");
                    self.closed_undelivered += 1;
                    continue;
                }
            };
            let entry = &mut self.workers[w];
            if entry
                .to_worker
                .send(ToWorker::Connection {
                    id: conn.id,
                    socket,
                })
                .is_err()
            {
                // Its writer is gone; the loss event will follow. Try another.
                entry.channel_closed = true;
                self.pending.push_front(conn);
                continue;
            }
            entry.in_flight = Some(PendingConn {
                handed_at: Instant::now(),
                ..conn
            });
        }
        // Nobody can ever take them: close rather than keep clients waiting.
        let hope = self.transition.is_some()
            || self.workers.iter().any(|e| {
                e.slot.generation == self.serving && e.alive() && e.state != WorkerState::Draining
            });
        if !hope && !self.pending.is_empty() {
            tracing::warn!(
                n = self.pending.len(),
                "cluster: no worker left; closing pending connections"
            );
            self.closed_undelivered += self.pending.len() as u64;
            self.pending.clear();
        }
    }

    pub(super) fn pick(&mut self) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&w| self.workers[w].slot.generation == self.serving && self.workers[w].free())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match self.config.mode {
            Mode::LeastConnections => {
                let least = candidates
                    .iter()
                    .map(|&w| self.workers[w].open)
                    .min()
                    .expect("non-empty");
                // Among the least loaded, take turns.
                let tied: Vec<usize> = candidates
                    .into_iter()
                    .filter(|&w| self.workers[w].open == least)
                    .collect();
                tied.iter()
                    .copied()
                    .find(|&w| w >= self.rr_cursor)
                    .unwrap_or(tied[0])
            }
            _ => {
                // Round-robin by turns taken, not by who is free first. With
                // "next free worker", whichever acknowledges faster takes more
                // of a burst (wrk's 32 simultaneous connections split 10/24).
                // So a connection waits for the worker whose turn it is (the
                // one that has taken the fewest, counting the one in flight),
                // unless that worker has sat on its in-flight connection past
                // ACK_PATIENCE: a stuck worker is routed around, not waited for.
                let now = Instant::now();
                let turns = |w: &WorkerEntry| w.handed + u64::from(w.in_flight.is_some());
                let floor = self
                    .workers
                    .iter()
                    .filter(|w| {
                        w.slot.generation == self.serving
                            && w.state == WorkerState::Ready
                            && w.alive()
                    })
                    .filter(|w| {
                        w.in_flight
                            .as_ref()
                            .is_none_or(|c| now < c.handed_at + ACK_PATIENCE)
                    })
                    .map(turns)
                    .min()?;
                let due: Vec<usize> = candidates
                    .into_iter()
                    .filter(|&w| turns(&self.workers[w]) <= floor)
                    .collect();
                due.iter()
                    .copied()
                    .find(|&w| w >= self.rr_cursor)
                    .or(due.first().copied())?
            }
        };
        self.rr_cursor = chosen + 1;
        Some(chosen)
    }

    /// Spawns one worker of `slot`'s generation.
    pub(super) fn spawn_worker(&mut self, slot: WorkerSlot) -> Result<()> {
        let mut cmd = (self.command)(slot);
        cmd.env(WORKER_INDEX_ENV, slot.index.to_string())
            .env(GENERATION_ENV, slot.generation.to_string());
        let builder = Child::builder(&mut cmd);
        let (child, chan): (Child, Channel<ToWorker, FromWorker>) =
            crate::spawn::spawn_with(builder, self.config.channel.clone())?;
        let pid = child.id();
        let w = self.workers.len();
        let (to_worker, mut outbox) = mpsc::unbounded_channel::<ToWorker>();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (mut tx, mut rx) = chan.split();
        let events = self.events_tx.clone();
        // Writer: the parent's messages to this worker, in order.
        tokio::spawn(async move {
            while let Some(msg) = outbox.recv().await {
                if tx.send(&msg).await.is_err() {
                    // The reader reports the loss; what is queued here (fds
                    // included) is dropped, and the parent still holds its
                    // own copy of any connection in flight.
                    break;
                }
            }
        });
        // Reader: this worker's messages, as events.
        tokio::spawn(async move {
            let why = loop {
                match rx.recv().await {
                    Ok(Some(msg)) => {
                        if events.send(Event::Message(w, msg)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "cluster: skipped an undecodable message from a worker");
                    }
                    Err(e) => break Some(e.to_string()),
                }
            };
            let _ = events.send(Event::ChannelClosed(w, why));
        });
        // Keeper: owns the process; reports its exit, stops it on request,
        // kills it if the engine goes away.
        let events = self.events_tx.clone();
        tokio::spawn(keep(w, child, stop_rx, events));
        // In shared mode the worker gets its dup of the listener when its
        // whole generation is ready (`switch_to`), not now: a worker of a
        // generation that then fails to start would otherwise accept
        // connections and take them down with it.
        tracing::debug!(
            worker = slot.index,
            generation = slot.generation,
            pid,
            "cluster: worker spawned"
        );
        self.workers.push(WorkerEntry {
            slot,
            pid,
            state: WorkerState::Starting,
            to_worker,
            stop: Some(stop_tx),
            in_flight: None,
            handed: 0,
            open: 0,
            reported: Counts::default(),
            channel_closed: false,
            exit: None,
            status: None,
            drain_deadline: None,
        });
        Ok(())
    }

    pub(super) fn drain_worker(&mut self, w: usize) {
        let entry = &mut self.workers[w];
        if entry.exit.is_some() || entry.state == WorkerState::Draining {
            return;
        }
        entry.state = WorkerState::Draining;
        entry.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        if entry.to_worker.send(ToWorker::Drain).is_err() {
            // No channel: nothing to drain through, stop it.
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(self.config.stop_grace);
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let transition = self
            .transition
            .as_ref()
            .filter(|t| !t.switched)
            .map(|t| t.ready_deadline);
        let drains = self
            .workers
            .iter()
            .filter(|w| w.exit.is_none() && w.stop.is_some())
            .filter_map(|w| w.drain_deadline);
        let stats = self.stats_waiters.iter().map(|s| s.deadline);
        // Round-robin waiting on a slow acknowledgement: look again when
        // patience runs out.
        let patience = self
            .workers
            .iter()
            .filter(|_| !self.pending.is_empty())
            .filter_map(|w| w.in_flight.as_ref())
            .map(|c| c.handed_at + ACK_PATIENCE)
            .filter(|&t| t > Instant::now());
        transition
            .into_iter()
            .chain(drains)
            .chain(stats)
            .chain(patience)
            .min()
    }

    pub(super) fn on_deadline(&mut self) {
        let now = Instant::now();
        if self
            .transition
            .as_ref()
            .is_some_and(|t| !t.switched && t.ready_deadline <= now)
        {
            let generation = self.transition.as_ref().map_or(0, |t| t.generation);
            let unready: Vec<String> = self
                .workers
                .iter()
                .filter(|w| w.slot.generation == generation && w.state != WorkerState::Ready)
                .map(|w| w.slot.index.to_string())
                .collect();
            let reason = format!(
                "worker(s) {} not ready within {:?}",
                unready.join(", "),
                self.config.ready_timeout
            );
            self.fail_transition(reason);
        }
        let grace = self.config.stop_grace;
        for entry in &mut self.workers {
            if entry.exit.is_none() && entry.drain_deadline.is_some_and(|d| d <= now) {
                tracing::warn!(
                    worker = entry.slot.index,
                    generation = entry.slot.generation,
                    pid = entry.pid,
                    "cluster: drain timed out; stopping the worker"
                );
                entry.drain_deadline = None;
                if let Some(stop) = entry.stop.take() {
                    let _ = stop.send(grace);
                }
            }
        }
        for waiter in &mut self.stats_waiters {
            if waiter.deadline <= now {
                waiter.waiting.clear();
            }
        }
        self.settle_stats_waiters();
        self.dispatch();
    }

    pub(super) fn settle_stats_waiters(&mut self) {
        if self.stats_waiters.iter().all(|s| !s.waiting.is_empty()) {
            return;
        }
        let snapshot = self.snapshot();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .stats_waiters
            .drain(..)
            .partition(|s| s.waiting.is_empty());
        self.stats_waiters = waiting;
        for waiter in done {
            let _ = waiter.reply.send(snapshot.clone());
        }
    }

    pub(super) fn snapshot(&self) -> ClusterStats {
        ClusterStats {
            mode: self.config.mode,
            generation: self.serving,
            workers: self
                .workers
                .iter()
                .map(|w| w.stats(self.config.mode))
                .collect(),
            pending: self.pending.len(),
            redispatched: self.redispatched,
            closed_undelivered: self.closed_undelivered,
        }
    }
}

pub(super) async fn accept(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<std::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await?.0.into_std(),
        None => std::future::pending().await,
    }
}

/// Owns one worker process: reports its exit; on a grace, stops it (SIGTERM,
/// grace, SIGKILL); if the engine drops the stop sender, kills it at once.
pub(super) async fn keep(
    w: usize,
    mut child: Child,
    stop: oneshot::Receiver<Duration>,
    events: mpsc::UnboundedSender<Event>,
) {
    let exit = tokio::select! {
        exit = child.wait() => exit,
        grace = stop => match grace {
            Ok(grace) => child.stop(grace).await,
            Err(_) => child.kill().await,
        },
    };
    let _ = events.send(Event::Exited(w, exit.map_err(|e| e.to_string())));
}
