//! Zero-downtime handoff: a new generation of workers takes over the port
//! while the old one finishes what it started.
//!
//! # The problem
//!
//! Deploying new code to a server with worker processes means replacing them.
//! Stop the old ones first and clients are refused until the new ones are up;
//! start the new ones on a fresh socket and the port is briefly unbound;
//! kill the old ones while they hold keep-alive connections and their clients
//! see resets. pm2's reload drops about 2% of requests this way (pm2#2729).
//! And a new version that crashes at start must not take the service down.
//!
//! # The approach
//!
//! The parent owns the listening socket for the life of the service, so the
//! port is never unbound and the kernel's accept queue is never lost.
//! [`Cluster::handoff`] then runs, one at a time:
//!
//! 1. spawn generation `G+1`; each worker gets the same listening socket (a
//!    duplicate, or connections handed by the parent in the parent-accepts
//!    modes) and says it is ready;
//! 2. once **every** new worker is ready, connections go to generation `G+1`
//!    and generation `G` is told to drain: it stops accepting, finishes the
//!    connections it has (an HTTP worker answers the next request on each with
//!    `Connection: close`, so no client loses a request mid-flight), reports
//!    and exits; one that takes longer than the drain timeout is stopped;
//! 3. the handoff returns `Ok(G+1)` once generation `G` is gone.
//!
//! If a new worker exits, hangs up, or is not ready within the ready timeout,
//! the whole new generation is killed, `G` keeps serving untouched, and the
//! handoff fails with [`Error::NotReady`]. A handoff
//! asked for while another runs fails at once with
//! [`Error::HandoffInProgress`] (tableflip's
//! rule: never two upgrades at once, which is how recluster piled up processes).
//!
//! ```no_run
//! # async fn demo(cluster: forkyard_ipc::balance::Cluster) -> Result<(), forkyard_ipc::Error> {
//! match cluster.handoff().await {
//!     Ok(generation) => println!("generation {generation} ready"),
//!     Err(forkyard_ipc::Error::NotReady { generation, reason }) => {
//!         eprintln!("generation {generation} failed ({reason}); the old one keeps serving")
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! The workers need nothing special: [`Worker::accept`](crate::balance::Worker::accept)
//! returns `None` when draining starts, and
//! [`Worker::finish`](crate::balance::Worker::finish) waits for the open
//! connections before the worker exits.

use tokio::sync::oneshot;

use crate::balance::{Cluster, Cmd, Engine};
use crate::error::{Error, Result};
use std::os::fd::OwnedFd;

use tokio::time::Instant;

use super::engine::{Transition, WorkerEntry};
use super::{ToWorker, WorkerSlot, WorkerState};

impl Cluster {
    /// Replaces the serving generation with a new one, without refusing or
    /// dropping a connection; see the [module docs](crate::handoff).
    ///
    /// Returns the new generation's number once the old generation has exited.
    pub async fn handoff(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Handoff(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

impl Engine {
    pub(crate) fn begin_handoff(&mut self, reply: oneshot::Sender<Result<u64>>) {
        if self.is_shutting_down() {
            let _ = reply.send(Err(Error::Closed));
            return;
        }
        if self.transition.is_some() {
            let _ = reply.send(Err(Error::HandoffInProgress));
            return;
        }
        self.begin_generation(reply);
    }

    /// Spawns the next generation; `reply` learns whether it became ready.
    pub(crate) fn begin_generation(&mut self, reply: oneshot::Sender<Result<u64>>) {
        self.generation += 1;
        let generation = self.generation;
        let previous = (self.serving != 0).then_some(self.serving);
        tracing::info!(generation, "cluster: starting a generation");
        for index in 0..self.config.workers {
            if let Err(e) = self.spawn_worker(WorkerSlot { index, generation }) {
                self.abort_generation(generation);
                let _ = reply.send(Err(Error::NotReady {
                    generation,
                    reason: format!("worker {index} could not be spawned: {e}"),
                }));
                return;
            }
        }
        self.transition = Some(Transition {
            generation,
            previous,
            ready_deadline: Instant::now() + self.config.ready_timeout,
            switched: false,
            reply,
        });
        self.check_transition();
    }

    /// Moves a transition on: switch when the new generation is all ready,
    /// finish when the previous one is all gone, abort if the new one fails.
    pub(super) fn check_transition(&mut self) {
        let Some(t) = &self.transition else { return };
        let generation = t.generation;
        if !t.switched {
            let lost = self
                .workers
                .iter()
                // A worker whose channel closed is stopped, and counts as lost
                // once it has exited, so the reason can say how it ended.
                .find(|w| w.slot.generation == generation && w.exit.is_some())
                .map(|lost| {
                    format!(
                        "worker {} (pid {}) {} before it was ready",
                        lost.slot.index,
                        lost.pid,
                        lost.exit
                            .as_deref()
                            .map_or(String::new(), |e| format!("exited ({e})"))
                    )
                });
            if let Some(reason) = lost {
                self.fail_transition(reason);
                return;
            }
            if self
                .workers
                .iter()
                .filter(|w| w.slot.generation == generation)
                .all(|w| w.state == WorkerState::Ready)
            {
                self.switch_to(generation);
            }
        }
        let Some(t) = &self.transition else { return };
        if t.switched {
            let old_gone = t.previous.is_none_or(|p| {
                self.workers
                    .iter()
                    .filter(|w| w.slot.generation == p)
                    .all(WorkerEntry::finished)
            });
            if old_gone {
                let t = self.transition.take().expect("checked above");
                tracing::info!(
                    generation = t.generation,
                    "cluster: generation serving alone"
                );
                let _ = t.reply.send(Ok(t.generation));
            }
        }
    }

    pub(super) fn switch_to(&mut self, generation: u64) {
        let previous = self.serving;
        self.serving = generation;
        if let Some(t) = &mut self.transition {
            t.switched = true;
        }
        tracing::info!(generation, "cluster: generation ready");
        if !self.config.mode.parent_accepts() {
            // Shared listener: the new generation starts accepting before the
            // old one stops, so there is no gap.
            for w in 0..self.workers.len() {
                if self.workers[w].slot.generation == generation && self.workers[w].alive() {
                    self.hand_listener(w);
                }
            }
        }
        if previous != 0 {
            for w in 0..self.workers.len() {
                if self.workers[w].slot.generation == previous {
                    self.drain_worker(w);
                }
            }
        }
        self.dispatch();
    }

    /// Gives worker `w` its own dup of the listening socket (shared mode).
    pub(super) fn hand_listener(&mut self, w: usize) {
        match self.listener.try_clone() {
            Ok(dup) => {
                let _ = self.workers[w].to_worker.send(ToWorker::Listen {
                    listener: OwnedFd::from(dup),
                });
            }
            // Out of fds: this worker serves nothing; its peers still do,
            // and the next handoff tries again.
            Err(e) => tracing::warn!(
                worker = self.workers[w].slot.index,
                error = %e,
                "cluster: cannot duplicate the listener"
            ),
        }
    }

    pub(super) fn fail_transition(&mut self, reason: String) {
        let Some(t) = self.transition.take() else {
            return;
        };
        tracing::warn!(generation = t.generation, %reason, "cluster: generation failed to start; the previous one keeps serving");
        self.abort_generation(t.generation);
        let _ = t.reply.send(Err(Error::NotReady {
            generation: t.generation,
            reason,
        }));
    }

    /// Kills every worker of `generation` (one that never became ready).
    pub(super) fn abort_generation(&mut self, generation: u64) {
        for entry in self
            .workers
            .iter_mut()
            .filter(|w| w.slot.generation == generation)
        {
            if let Some(conn) = entry.in_flight.take() {
                self.pending.push_front(conn);
            }
            // Dropping the stop sender makes the keeper SIGKILL the group.
            entry.stop = None;
            if entry.exit.is_none() {
                entry.state = WorkerState::Draining;
            }
        }
    }
}
