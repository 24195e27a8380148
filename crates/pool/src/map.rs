//! Batches: [`Pool::map`] and [`Pool::map_unordered`].
//!
//! A batch is cut into chunks; a chunk is one task in the pool's queue and
//! one message to a worker, which runs the handler per item and sends the
//! items' results as they come (see [`protocol`](crate::protocol)). A driver
//! task feeds chunks to the pool while fewer than the window's items are
//! unanswered or waiting for the consumer, and turns the chunks' results
//! into the stream, in order or as they complete.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use forkyard_ipc::Message;
use futures::Stream;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::call::CallOptions;
use crate::core::TaskId;
use crate::error::PoolError;
use crate::pool::{Canceller, ChunkMsg, Pool};

/// How a batch runs, for [`Pool::map_with`] and [`Pool::map_unordered_with`].
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// Items per chunk (one message to a worker). Default: automatic, from
    /// the batch's length if its iterator knows it (about a sixteenth of the
    /// items per worker, between 1 and 2,048), else 64.
    pub chunk_size: Option<usize>,
    /// Items at most in flight: sent and not yet answered, or answered and
    /// not yet taken by the consumer (backpressure; default four chunks per
    /// worker). At least one chunk.
    pub max_in_flight: Option<usize>,
    /// Per item: its timeout and retries; for the whole batch: its deadline
    /// and cancel token.
    pub call: CallOptions,
}

/// Largest automatic chunk.
const MAX_AUTO_CHUNK: usize = 2048;
/// Automatic chunk when the batch's length is unknown.
const UNKNOWN_LENGTH_CHUNK: usize = 64;

/// The automatic chunk size for `len` items (0: unknown) on `workers` workers.
fn auto_chunk(len: usize, workers: usize) -> usize {
    if len == 0 {
        UNKNOWN_LENGTH_CHUNK
    } else {
        len.div_ceil(workers.max(1) * 16).clamp(1, MAX_AUTO_CHUNK)
    }
}

/// The results of [`Pool::map`], in the items' order: one per item, a failed
/// item's error in its place (the stream goes on).
pub struct MapStream<Resp> {
    inner: Batches<Result<Resp, PoolError>>,
}

/// The results of [`Pool::map_unordered`] as they complete: `(index, result)`,
/// `index` being the item's position in the input.
pub struct MapUnordered<Resp> {
    inner: Batches<(usize, Result<Resp, PoolError>)>,
}

impl<Resp> std::fmt::Debug for MapStream<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream").finish_non_exhaustive()
    }
}

impl<Resp> std::fmt::Debug for MapUnordered<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapUnordered").finish_non_exhaustive()
    }
}

/// Results arrive from the driver in runs (one channel operation per run,
/// not per item) and are handed out one by one.
struct Batches<T> {
    rx: mpsc::Receiver<Vec<T>>,
    current: std::vec::IntoIter<T>,
}

impl<T> Batches<T> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(run)) => self.current = run.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// Nothing in a batch's stream is pinned: the results are moved out.
impl<Resp> Unpin for MapStream<Resp> {}
impl<Resp> Unpin for MapUnordered<Resp> {}

impl<Resp> Stream for MapStream<Resp> {
    type Item = Result<Resp, PoolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next(cx)
    }
}

impl<Resp> Stream for MapUnordered<Resp> {
    type Item = (usize, Result<Resp, PoolError>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next(cx)
    }
}

impl<Req: Message + Clone + Sync, Resp: Message> Pool<Req, Resp> {
    /// Runs every item of `items` on the pool and streams the results in the
    /// items' order, like Python's `Pool.imap` (Python's `map` is
    /// `.collect::<Vec<_>>()` on it).
    ///
    /// Items travel in chunks (one message each way per chunk, not per item;
    /// size automatic, see [`MapOptions`]), and the handler runs once per item
    /// on the worker. Each item has its own outcome: a failed item is an
    /// `Err` in its place and the stream goes on; items whose worker died are
    /// retried as calls are, and an item that was answered is never run
    /// again. At most [`MapOptions::max_in_flight`] items are in flight, so a
    /// slow consumer holds the batch back (and an endless iterator is fine).
    /// A chunk too large for a frame is split in two until it fits; a single
    /// item that does not fit fails with [`PoolError::Unsendable`].
    ///
    /// Runs on a tokio task of its own; dropping the stream cancels what is
    /// left. Give the pool [`max_in_flight_per_worker`](crate::Builder::max_in_flight_per_worker)
    /// of 2 or more, so that a worker has its next chunk when it finishes one.
    pub fn map<I>(&self, items: I) -> MapStream<Resp>
    where
        I: IntoIterator<Item = Req>,
        I::IntoIter: Send + 'static,
    {
        self.map_with(items, MapOptions::default())
    }

    /// [`map`](Pool::map) with options.
    pub fn map_with<I>(&self, items: I, options: MapOptions) -> MapStream<Resp>
    where
        I: IntoIterator<Item = Req>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(drive(
            self.clone(),
            items.into_iter(),
            options,
            Out::Ordered(tx),
        ));
        MapStream {
            inner: Batches {
                rx,
                current: Vec::new().into_iter(),
            },
        }
    }

    /// Like [`map`](Pool::map), but streams `(index, result)` pairs as items
    /// complete, like Python's `Pool.imap_unordered`.
    pub fn map_unordered<I>(&self, items: I) -> MapUnordered<Resp>
    where
        I: IntoIterator<Item = Req>,
        I::IntoIter: Send + 'static,
    {
        self.map_unordered_with(items, MapOptions::default())
    }

    /// [`map_unordered`](Pool::map_unordered) with options.
    pub fn map_unordered_with<I>(&self, items: I, options: MapOptions) -> MapUnordered<Resp>
    where
        I: IntoIterator<Item = Req>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(drive(
            self.clone(),
            items.into_iter(),
            options,
            Out::Unordered(tx),
        ));
        MapUnordered {
            inner: Batches {
                rx,
                current: Vec::new().into_iter(),
            },
        }
    }
}

type Item<Resp> = Result<Resp, PoolError>;

/// Where the driver sends results.
enum Out<Resp> {
    Ordered(mpsc::Sender<Vec<Item<Resp>>>),
    Unordered(mpsc::Sender<Vec<(usize, Item<Resp>)>>),
}

/// One chunk on its way.
struct Chunk<Req> {
    /// The index of its first item in the batch.
    base: usize,
    /// Its items, kept to split it if it is too large to send.
    items: Vec<Req>,
    answered: Vec<bool>,
    any_answered: bool,
}

/// Cancels the chunks still on their way when the driver ends early (the
/// consumer dropped the stream).
struct Outstanding {
    ids: FxHashMap<TaskId, ()>,
    cancel: Canceller,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        for &id in self.ids.keys() {
            (self.cancel)(id, false);
        }
    }
}

/// The consumer went away.
struct Gone;

/// Results waiting to go out, and the in-flight count.
struct Emitter<Resp> {
    out: Out<Resp>,
    /// Ordered: results from index `next` on, `None` where not yet in.
    pending: VecDeque<Option<Item<Resp>>>,
    next: usize,
    /// Unordered: results ready to go.
    ready: Vec<(usize, Item<Resp>)>,
    /// Items submitted and not yet handed to the consumer.
    in_flight: usize,
}

impl<Resp> Emitter<Resp> {
    fn put(&mut self, index: usize, result: Item<Resp>) {
        match self.out {
            Out::Ordered(_) => {
                let at = index - self.next;
                if self.pending.len() <= at {
                    self.pending.resize_with(at + 1, || None);
                }
                self.pending[at] = Some(result);
            }
            Out::Unordered(_) => self.ready.push((index, result)),
        }
    }

    /// Hands everything that can go out to the consumer, in one send.
    async fn flush(&mut self) -> Result<(), Gone> {
        match &self.out {
            Out::Ordered(tx) => {
                let mut run = Vec::new();
                while let Some(Some(_)) = self.pending.front() {
                    run.push(self.pending.pop_front().flatten().expect("checked"));
                }
                if run.is_empty() {
                    return Ok(());
                }
                self.next += run.len();
                self.in_flight -= run.len();
                tx.send(run).await.map_err(|_| Gone)
            }
            Out::Unordered(tx) => {
                if self.ready.is_empty() {
                    return Ok(());
                }
                let run = std::mem::take(&mut self.ready);
                self.in_flight -= run.len();
                tx.send(run).await.map_err(|_| Gone)
            }
        }
    }
}

/// The next chunk to submit: a half of a split chunk first, else new items
/// while the window has room.
fn next_batch<Req, Resp>(
    split: &mut VecDeque<(usize, Vec<Req>)>,
    items: &mut impl Iterator<Item = Req>,
    exhausted: &mut bool,
    emit: &mut Emitter<Resp>,
    next_index: &mut usize,
    window: usize,
    chunk_size: usize,
) -> Option<(usize, Vec<Req>)> {
    if let Some(half) = split.pop_front() {
        return Some(half);
    }
    if *exhausted || emit.in_flight >= window {
        return None;
    }
    let room = (window - emit.in_flight).min(chunk_size);
    let batch: Vec<Req> = items.by_ref().take(room).collect();
    if batch.len() < room {
        *exhausted = true;
    }
    if batch.is_empty() {
        return None;
    }
    let base = *next_index;
    *next_index += batch.len();
    emit.in_flight += batch.len();
    Some((base, batch))
}

/// Feeds the batch's chunks to the pool and its results to the stream.
async fn drive<Req, Resp, I>(
    pool: Pool<Req, Resp>,
    mut items: I,
    options: MapOptions,
    out: Out<Resp>,
) where
    Req: Message + Clone + Sync,
    Resp: Message,
    I: Iterator<Item = Req>,
{
    let workers = pool.size();
    let chunk_size = options
        .chunk_size
        .unwrap_or_else(|| auto_chunk(items.size_hint().0, workers))
        .max(1);
    let window = options
        .max_in_flight
        .unwrap_or(chunk_size * workers * 4)
        .max(chunk_size);
    let rules = options.call.task_rules();
    let mut cancel = options.call.cancel.as_ref().map(|t| t.cancelled_owned());
    let (tx, mut rx) = mpsc::unbounded_channel::<ChunkMsg<Resp>>();
    let mut chunks: FxHashMap<TaskId, Chunk<Req>> = FxHashMap::default();
    let mut outstanding = Outstanding {
        ids: FxHashMap::default(),
        cancel: pool.canceller(),
    };
    let mut emit = Emitter {
        out,
        pending: VecDeque::new(),
        next: 0,
        ready: Vec::new(),
        in_flight: 0,
    };
    // Halves of chunks too large to send, to submit before new items.
    let mut split: VecDeque<(usize, Vec<Req>)> = VecDeque::new();
    let mut next_index = 0;
    let mut exhausted = false;
    let mut cancelled = false;
    loop {
        // Fill the window (nothing more once cancelled).
        while !cancelled
            && let Some((base, batch)) = next_batch(
                &mut split,
                &mut items,
                &mut exhausted,
                &mut emit,
                &mut next_index,
                window,
                chunk_size,
            )
        {
            let permit = match pool.room().await {
                Ok(permit) => permit,
                Err(e) => {
                    // Shutting down: nothing more will run.
                    exhausted = true;
                    for i in 0..batch.len() {
                        emit.put(base + i, Err(e.clone()));
                    }
                    continue;
                }
            };
            let n = batch.len();
            let id = pool.submit_chunk(batch.clone(), rules, tx.clone(), permit);
            outstanding.ids.insert(id, ());
            chunks.insert(
                id,
                Chunk {
                    base,
                    items: batch,
                    answered: vec![false; n],
                    any_answered: false,
                },
            );
        }
        if emit.flush().await.is_err() {
            return; // `outstanding` cancels the rest
        }
        if chunks.is_empty() && split.is_empty() && (exhausted || cancelled) {
            break;
        }
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = async { cancel.as_mut().expect("guarded").await }, if cancel.is_some() => {
                cancel = None;
                cancelled = true;
                // Cancel every chunk; their ends bring `Cancelled` for their items.
                for &id in outstanding.ids.keys() {
                    (outstanding.cancel)(id, true);
                }
                for (base, batch) in split.drain(..) {
                    for i in 0..batch.len() {
                        emit.put(base + i, Err(PoolError::Cancelled));
                    }
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            ChunkMsg::Items(id, results) => {
                if let Some(chunk) = chunks.get_mut(&id) {
                    chunk.any_answered = true;
                    for (i, result) in results {
                        chunk.answered[i as usize] = true;
                        emit.put(chunk.base + i as usize, result);
                    }
                }
            }
            ChunkMsg::End(id, failure) => {
                outstanding.ids.remove(&id);
                let Some(chunk) = chunks.remove(&id) else {
                    continue;
                };
                let Some(error) = failure else { continue };
                if matches!(error, PoolError::Unsendable(_))
                    && !chunk.any_answered
                    && chunk.items.len() > 1
                    && !cancelled
                {
                    // Too large to send: try it in halves.
                    let mut first = chunk.items;
                    let second = first.split_off(first.len() / 2);
                    let middle = chunk.base + first.len();
                    split.push_back((chunk.base, first));
                    split.push_back((middle, second));
                    continue;
                }
                for (i, answered) in chunk.answered.iter().enumerate() {
                    if !answered {
                        emit.put(chunk.base + i, Err(error.clone()));
                    }
                }
            }
        }
    }
    let _ = emit.flush().await;
}

#[cfg(test)]
mod tests {
    use super::auto_chunk;

    #[test]
    fn automatic_chunks_cut_a_known_length_in_sixteen_per_worker_within_bounds() {
        assert_eq!(auto_chunk(200_000, 2), 2048);
        assert_eq!(auto_chunk(3_200, 2), 100);
        assert_eq!(auto_chunk(5, 4), 1);
        assert_eq!(auto_chunk(0, 2), 64, "unknown length");
    }
}
