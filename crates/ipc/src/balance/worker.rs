//! The worker's side of a [`Cluster`](super::Cluster): yields connections, counts them, drains.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::channel::Channel;
use crate::error::Result;

use super::engine::accept;
use super::{Counts, FromWorker, GENERATION_ENV, ToWorker, WORKER_INDEX_ENV, WorkerSlot};

/// A worker's end of a [`Cluster`](super::Cluster): yields connections, counts them, drains.
pub struct Worker {
    slot: WorkerSlot,
    shared: Arc<WorkerShared>,
    work: mpsc::Receiver<Work>,
    listener: Option<tokio::net::TcpListener>,
    out: mpsc::UnboundedSender<FromWorker>,
    drain: watch::Receiver<bool>,
    ready_sent: bool,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("slot", &self.slot)
            .field("open", &self.shared.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

enum Work {
    Listen(OwnedFd),
    Connection { id: u64, socket: OwnedFd },
}

#[derive(Debug, Default)]
struct WorkerShared {
    connections: AtomicU64,
    requests: AtomicU64,
    open: AtomicU64,
    all_closed: Notify,
}

impl WorkerShared {
    fn counts(&self) -> Counts {
        Counts {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

impl Worker {
    /// Connects to the parent's [`Cluster`](super::Cluster) over the channel it made
    /// (`FORKYARD_IPC_FD`). Must be called inside a tokio runtime.
    pub fn from_parent() -> Result<Worker> {
        let chan = Channel::<FromWorker, ToWorker>::from_parent()?;
        let slot = WorkerSlot {
            index: env_number(WORKER_INDEX_ENV).unwrap_or(0) as usize,
            generation: env_number(GENERATION_ENV).unwrap_or(1),
        };
        Ok(Self::over(chan, slot))
    }

    fn over(chan: Channel<FromWorker, ToWorker>, slot: WorkerSlot) -> Worker {
        let shared = Arc::new(WorkerShared::default());
        let (mut tx, mut rx) = chan.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<FromWorker>();
        let (work_tx, work) = mpsc::channel(4);
        let (drain_tx, drain) = watch::channel(false);
        let writer = tokio::spawn(async move {
            // `Done` is the last word: written, then the channel is closed.
            let mut done = false;
            while let Some(msg) = out_rx.recv().await {
                done |= matches!(msg, FromWorker::Done(_));
                if tx.feed(&msg).await.is_err() {
                    return;
                }
                while !done && let Ok(msg) = out_rx.try_recv() {
                    done |= matches!(msg, FromWorker::Done(_));
                    if tx.feed(&msg).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() || done {
                    break;
                }
            }
            let _ = tx.close().await;
        });
        let reports = out.clone();
        let counts = shared.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Some(ToWorker::Listen { listener })) => {
                        if work_tx.send(Work::Listen(listener)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(ToWorker::Connection { id, socket })) => {
                        if let Err(mpsc::error::SendError(Work::Connection { id, .. })) =
                            work_tx.send(Work::Connection { id, socket }).await
                        {
                            let _ = reports.send(FromWorker::Rejected { id });
                            break;
                        }
                    }
                    Ok(Some(ToWorker::Report)) => {
                        let _ = reports.send(FromWorker::Report(counts.counts()));
                    }
                    Ok(Some(ToWorker::Drain)) => {
                        drain_tx.send_replace(true);
                    }
                    Ok(None) => break,
                    Err(e) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "worker: skipped an undecodable message");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "worker: channel to the parent failed");
                        break;
                    }
                }
            }
            // The parent is gone (or broke the channel): drain.
            drain_tx.send_replace(true);
        });
        Worker {
            slot,
            shared,
            work,
            listener: None,
            out,
            drain,
            ready_sent: false,
            writer: Some(writer),
        }
    }

    /// This worker's index and generation (from `FORKYARD_WORKER` and
    /// `FORKYARD_GENERATION`).
    pub fn slot(&self) -> WorkerSlot {
        self.slot
    }

    /// Tells the parent this worker is ready. [`Worker::accept`] does it on
    /// its first call; call it yourself to say so earlier.
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = self.out.send(FromWorker::Ready);
        }
    }

    /// The next connection, from the shared listener or from the parent;
    /// `None` once the parent asked this worker to drain (or went away).
    /// Cancel-safe.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.ready();
        loop {
            if *self.drain.borrow() {
                self.listener = None;
                return None;
            }
            tokio::select! {
                biased;
                _ = self.drain.changed() => {}
                work = self.work.recv() => match work? {
                    Work::Listen(fd) => {
                        let std = std::net::TcpListener::from(fd);
                        match std.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(std)) {
                            Ok(l) => self.listener = Some(l),
                            Err(e) => tracing::warn!(error = %e, "worker: unusable listener from the parent"),
                        }
                    }
                    Work::Connection { id, socket } => {
                        if *self.drain.borrow() {
                            let _ = self.out.send(FromWorker::Rejected { id });
                            continue;
                        }
                        let _ = self.out.send(FromWorker::Accepted { id });
                        return Some(self.lease(std::net::TcpStream::from(socket), Some(id)));
                    }
                },
                accepted = accept(self.listener.as_ref()), if self.listener.is_some() => match accepted {
                    Ok(stream) => return Some(self.lease(stream, None)),
                    Err(e) => {
                        tracing::warn!(error = %e, "worker: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    fn lease(&self, stream: std::net::TcpStream, id: Option<u64>) -> Connection {
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        Connection {
            stream,
            lease: Lease {
                id,
                shared: self.shared.clone(),
                out: self.out.clone(),
            },
        }
    }

    /// Counters the worker's connection tasks bump ([`Counters::request`]).
    pub fn counters(&self) -> Counters {
        Counters(self.shared.clone())
    }

    /// Resolves once the parent asks this worker to drain (or goes away);
    /// connection tasks use it to finish up (say, answer with
    /// `Connection: close`).
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal(self.drain.clone())
    }

    /// Stops accepting, hands back connections not yet taken, waits until
    /// every [`Lease`] is dropped, sends the final counters and closes the
    /// channel. Call it after [`Worker::accept`] returned `None`, then exit.
    pub async fn finish(mut self) -> Result<()> {
        self.listener = None;
        self.work.close();
        while let Ok(work) = self.work.try_recv() {
            if let Work::Connection { id, .. } = work {
                let _ = self.out.send(FromWorker::Rejected { id });
            }
        }
        loop {
            let notified = self.shared.all_closed.notified();
            if self.shared.open.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        let _ = self.out.send(FromWorker::Done(self.shared.counts()));
        let writer = self.writer.take();
        drop(self);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(())
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// A connection handed to a worker, with the [`Lease`] that reports its end.
#[derive(Debug)]
pub struct Connection {
    stream: std::net::TcpStream,
    lease: Lease,
}

impl Connection {
    /// The socket (in non-blocking mode: call `set_nonblocking(false)` for
    /// blocking I/O) and its lease.
    pub fn into_parts(self) -> (std::net::TcpStream, Lease) {
        (self.stream, self.lease)
    }

    /// The socket registered with tokio, and its lease.
    pub fn into_tokio(self) -> std::io::Result<(tokio::net::TcpStream, Lease)> {
        self.stream.set_nonblocking(true)?;
        Ok((tokio::net::TcpStream::from_std(self.stream)?, self.lease))
    }
}

/// Proof that a connection is open: drop it when the connection ends.
pub struct Lease {
    id: Option<u64>,
    shared: Arc<WorkerShared>,
    out: mpsc::UnboundedSender<FromWorker>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.out.send(FromWorker::Closed { id });
        }
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// A worker's counters, for its connection tasks.
#[derive(Debug, Clone)]
pub struct Counters(Arc<WorkerShared>);

impl Counters {
    /// Counts one request served.
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Connections taken so far.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }
}

/// Tells connection tasks the worker is draining.
#[derive(Debug, Clone)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// True once draining.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}
