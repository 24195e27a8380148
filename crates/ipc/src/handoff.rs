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
}
