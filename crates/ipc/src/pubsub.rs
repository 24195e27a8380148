//! Publish-subscribe with the parent as broker: topics, subscribe and
//! unsubscribe, publishers anywhere, and a bounded buffer per subscriber.
//!
//! # The problem
//!
//! Workers want to broadcast ("config changed", "cache key 42 is stale") to
//! whoever cares, without knowing who that is. A broker in the parent can
//! route, but one slow subscriber must not make it hold every message for ever
//! (memory) or make publishers wait (one stuck worker stalls everybody).
//!
//! # The approach
//!
//! The [`Broker`] lives in the parent. Each worker's channel is
//! [`attached`](Broker::attach) to it; a worker uses a [`Client`] on its end to
//! subscribe to topics (exact names), unsubscribe, publish, and receive. The
//! parent publishes with [`Broker::publish`] and can subscribe itself with
//! [`Broker::subscribe`].
//!
//! Publishing never waits. Each subscriber has a buffer of at most
//! [`BrokerConfig::buffer`] messages, drained by its own writer task; when it
//! is full the [`Overflow`] policy decides:
//!
//! - [`Overflow::DropOldest`]: the oldest queued message is dropped and
//!   counted; the next [`Delivery`] says how many were lost just before it
//!   (`dropped`), so a subscriber knows it missed something.
//! - [`Overflow::Disconnect`]: the subscriber is cut off (its channel closed),
//!   for consumers that must see everything or nothing.
//!
//! Acknowledgements of subscribe and unsubscribe travel on a separate queue
//! that is never dropped from, so [`Client::subscribe`] returning means the
//! broker routes that topic to you.
//!
//! ```
//! use forkyard_ipc::pubsub::{Broker, BrokerConfig, Client, Overflow};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), forkyard_ipc::Error> {
//! let broker = Broker::<String>::new(BrokerConfig::new().buffer(64).overflow(Overflow::DropOldest));
//! // A worker's channel; in one process here, normally from `spawn` and `from_parent`.
//! let (parent_end, worker_end) = forkyard_ipc::Channel::pair()?;
//! broker.attach(parent_end);
//! let mut client = Client::new(worker_end);
//! client.subscribe("news").await?;
//! broker.publish("news", &"hello".to_owned());
//! let delivery = client.recv().await?.expect("a delivery");
//! assert_eq!((delivery.topic.as_str(), delivery.message.as_str(), delivery.dropped), ("news", "hello", 0));
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::Message;
use crate::channel::{Channel, Receiver, Sender};
use crate::error::{Error, Result};

/// What a client sends the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToBroker<T> {
    /// Route `topic` to me; answered by [`FromBroker::Subscribed`].
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Stop routing `topic` to me; answered by [`FromBroker::Unsubscribed`].
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// Publish `message` to every subscriber of `topic`.
    Publish {
        /// The topic.
        topic: String,
        /// The message.
        message: T,
    },
}

/// What the broker sends a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromBroker<T> {
    /// A message published on a topic this client subscribed to.
    Delivery {
        /// The topic.
        topic: String,
        /// The message.
        message: T,
        /// Messages dropped for this client (buffer full) since the previous delivery.
        dropped: u64,
    },
    /// The subscription to `topic` is in place.
    Subscribed {
        /// The topic.
        topic: String,
    },
    /// The subscription to `topic` is gone.
    Unsubscribed {
        /// The topic.
        topic: String,
    },
}

/// What happens when a subscriber's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the oldest queued message and count it (the default).
    #[default]
    DropOldest,
    /// Close the subscriber's channel.
    Disconnect,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub(crate) buffer: usize,
    pub(crate) overflow: Overflow,
    pub(crate) max_control: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            buffer: 1024,
            overflow: Overflow::DropOldest,
            max_control: 1024,
        }
    }
}

impl BrokerConfig {
    /// The defaults: 1024 messages per subscriber, drop oldest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Most messages queued for one subscriber (default 1024, at least 1).
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// What to do when a subscriber's buffer is full (default drop oldest).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

/// Identifies a subscriber (an attached client or a local subscription).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber {}", self.0)
    }
}

/// One subscriber's figures, from [`Broker::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Which subscriber.
    pub id: SubscriberId,
    /// Its topics now.
    pub topics: Vec<String>,
    /// Messages handed to its channel (or local receiver).
    pub delivered: u64,
    /// Messages dropped because its buffer was full.
    pub dropped: u64,
    /// Messages waiting in its buffer.
    pub queued: usize,
    /// Messages it published.
    pub published: u64,
    /// True once it is gone: it closed, died, or was disconnected.
    pub gone: bool,
    /// True if the broker cut it off for overflowing.
    pub disconnected_for_overflow: bool,
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<T> {
    /// The topic it was published on.
    pub topic: String,
    /// The message.
    pub message: T,
    /// Messages this subscriber lost (buffer full) just before this one.
    pub dropped: u64,
}

/// The parent's broker. Cheap to clone.
pub struct Broker<T> {
    inner: Arc<BrokerInner<T>>,
}

impl<T> Clone for Broker<T> {
    fn clone(&self) -> Self {
        Broker {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Broker<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("Broker")
            .field("subscribers", &state.subs.len())
            .field("topics", &state.topics.len())
            .finish_non_exhaustive()
    }
}

struct BrokerInner<T> {
    config: BrokerConfig,
    next_id: AtomicU64,
    state: Mutex<BrokerState<T>>,
}

struct BrokerState<T> {
    subs: HashMap<SubscriberId, Arc<Subscriber<T>>>,
    topics: HashMap<String, BTreeSet<SubscriberId>>,
    /// Subscribers that are gone, kept for [`Broker::stats`].
    gone: Vec<SubscriberStats>,
}

/// One subscriber's queue, shared by the broker (which pushes) and the
/// subscriber's writer task or local receiver (which pops).
struct Subscriber<T> {
    id: SubscriberId,
    queue: Mutex<Queue<T>>,
    /// Wakes the one consumer (writer task or local receiver).
    wake: Notify,
    /// Turns true when the subscriber is cut off; the reader task watches it.
    cut_signal: watch::Sender<bool>,
}

struct Queue<T> {
    messages: VecDeque<(Arc<str>, T)>,
    /// Acknowledgements; never dropped from.
    control: VecDeque<FromBroker<T>>,
    /// Dropped since the last delivery.
    dropped_since: u64,
    dropped: u64,
    delivered: u64,
    published: u64,
    topics: BTreeSet<String>,
    /// Set when the subscriber must stop (overflow disconnect, broker closed).
    cut: bool,
    disconnected_for_overflow: bool,
}

impl<T> Subscriber<T> {
    fn new(id: SubscriberId) -> Self {
        Subscriber {
            id,
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                control: VecDeque::new(),
                dropped_since: 0,
                dropped: 0,
                delivered: 0,
                published: 0,
                topics: BTreeSet::new(),
                cut: false,
                disconnected_for_overflow: false,
            }),
            wake: Notify::new(),
            cut_signal: watch::Sender::new(false),
        }
    }

    /// Marks the subscriber cut off and wakes whoever waits on it.
    fn cut(&self) {
        lock(&self.queue).cut = true;
        self.cut_signal.send_replace(true);
        self.wake.notify_one();
    }

    fn stats(&self, gone: bool) -> SubscriberStats {
        let q = lock(&self.queue);
        SubscriberStats {
            id: self.id,
            topics: q.topics.iter().cloned().collect(),
            delivered: q.delivered,
            dropped: q.dropped,
            queued: q.messages.len(),
            published: q.published,
            gone: gone || q.cut,
            disconnected_for_overflow: q.disconnected_for_overflow,
        }
    }
}

impl<T: Message + Clone> Broker<T> {
    /// A broker with no subscribers.
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            inner: Arc::new(BrokerInner {
                config,
                next_id: AtomicU64::new(1),
                state: Mutex::new(BrokerState {
                    subs: HashMap::new(),
                    topics: HashMap::new(),
                    gone: Vec::new(),
                }),
            }),
        }
    }

    /// Attaches a worker's channel: it can now subscribe, unsubscribe and
    /// publish. Spawns its reader and writer tasks (call inside a tokio
    /// runtime). The subscriber is removed when the channel closes.
    pub fn attach(&self, chan: Channel<FromBroker<T>, ToBroker<T>>) -> SubscriberId {
        let sub = self.add_subscriber();
        let (tx, rx) = chan.split();
        tokio::spawn(write_loop(sub.clone(), tx, self.clone()));
        tokio::spawn(read_loop(sub.clone(), rx, self.clone()));
        sub.id
    }

    /// Subscribes the parent itself to `topic`.
    pub fn subscribe(&self, topic: &str) -> Subscription<T> {
        let sub = self.add_subscriber();
        self.route(&sub, topic, true);
        // A local subscriber needs no acknowledgement.
        lock(&sub.queue).control.clear();
        Subscription {
            sub,
            broker: self.clone(),
        }
    }

    /// Publishes `message` on `topic`; returns how many subscribers it was
    /// queued for. Never waits: a full buffer is handled by the [`Overflow`] policy.
    pub fn publish(&self, topic: &str, message: &T) -> usize {
        let subs: Vec<Arc<Subscriber<T>>> = {
            let state = lock(&self.inner.state);
            match state.topics.get(topic) {
                Some(ids) => ids
                    .iter()
                    .filter_map(|id| state.subs.get(id).cloned())
                    .collect(),
                None => return 0,
            }
        };
        let topic: Arc<str> = Arc::from(topic);
        let mut queued = 0;
        for sub in subs {
            let cut_now = {
                let mut q = lock(&sub.queue);
                if q.cut {
                    continue;
                }
                let mut cut_now = false;
                if q.messages.len() >= self.inner.config.buffer {
                    match self.inner.config.overflow {
                        Overflow::DropOldest => {
                            q.messages.pop_front();
                            q.dropped += 1;
                            q.dropped_since += 1;
                        }
                        Overflow::Disconnect => {
                            q.disconnected_for_overflow = true;
                            q.messages.clear();
                            cut_now = true;
                        }
                    }
                }
                if !cut_now {
                    q.messages.push_back((topic.clone(), message.clone()));
                    queued += 1;
                }
                cut_now
            };
            if cut_now {
                tracing::debug!(subscriber = sub.id.0, "pubsub: buffer full, disconnecting");
                self.remove(&sub);
            }
            sub.wake.notify_one();
        }
        queued
    }

    /// Figures for every subscriber, present and gone, ordered by id.
    pub fn stats(&self) -> Vec<SubscriberStats> {
        let (live, mut all) = {
            let state = lock(&self.inner.state);
            (
                state.subs.values().cloned().collect::<Vec<_>>(),
                state.gone.clone(),
            )
        };
        all.extend(live.iter().map(|s| s.stats(false)));
        all.sort_by_key(|s| s.id);
        all
    }

    /// Subscribers of `topic` now.
    pub fn subscribers(&self, topic: &str) -> usize {
        lock(&self.inner.state)
            .topics
            .get(topic)
            .map_or(0, BTreeSet::len)
    }

    fn add_subscriber(&self) -> Arc<Subscriber<T>> {
        let id = SubscriberId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let sub = Arc::new(Subscriber::new(id));
        lock(&self.inner.state).subs.insert(id, sub.clone());
        sub
    }

    /// Adds or removes `topic` for `sub` and queues the acknowledgement.
    /// Returns false if the client misbehaves (too many unread acknowledgements).
    fn route(&self, sub: &Arc<Subscriber<T>>, topic: &str, on: bool) -> bool {
        {
            let mut state = lock(&self.inner.state);
            if !state.subs.contains_key(&sub.id) {
                return false;
            }
            if on {
                state
                    .topics
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(sub.id);
            } else if let Some(ids) = state.topics.get_mut(topic) {
                ids.remove(&sub.id);
                if ids.is_empty() {
                    state.topics.remove(topic);
                }
            }
        }
        let mut q = lock(&sub.queue);
        if on {
            q.topics.insert(topic.to_owned());
        } else {
            q.topics.remove(topic);
        }
        if q.control.len() >= self.inner.config.max_control {
            return false;
        }
        let topic = topic.to_owned();
        q.control.push_back(if on {
            FromBroker::Subscribed { topic }
        } else {
            FromBroker::Unsubscribed { topic }
        });
        drop(q);
        sub.wake.notify_one();
        true
    }

    /// Takes `sub` out of every topic and keeps its final figures.
    fn remove(&self, sub: &Arc<Subscriber<T>>) {
        sub.cut();
        let mut state = lock(&self.inner.state);
        if state.subs.remove(&sub.id).is_none() {
            return;
        }
        state.topics.retain(|_, ids| {
            ids.remove(&sub.id);
            !ids.is_empty()
        });
        let stats = sub.stats(true);
        state.gone.push(stats);
    }

    /// Cuts every subscriber off: attached clients see their channel close,
    /// local subscriptions end. The broker stays usable for new ones.
    pub fn close(&self) {
        let subs: Vec<_> = lock(&self.inner.state).subs.values().cloned().collect();
        for sub in subs {
            self.remove(&sub);
        }
    }
}

/// Takes what is queued for `sub`: acknowledgements first, then messages.
/// `None` once the subscriber is cut off and drained of acknowledgements.
fn take_batch<T>(sub: &Subscriber<T>) -> Option<Vec<FromBroker<T>>> {
    let mut q = lock(&sub.queue);
    if q.cut && q.control.is_empty() {
        return None;
    }
    let mut batch: Vec<FromBroker<T>> = q.control.drain(..).collect();
    if !q.cut {
        let mut dropped = std::mem::take(&mut q.dropped_since);
        let n = q.messages.len();
        q.delivered += n as u64;
        for (topic, message) in q.messages.drain(..) {
            batch.push(FromBroker::Delivery {
                topic: topic.to_string(),
                message,
                dropped: std::mem::take(&mut dropped),
            });
        }
        // Nothing to attach the count to yet: keep it for the next delivery.
        q.dropped_since += dropped;
    }
    Some(batch)
}

async fn write_loop<T: Message + Clone>(
    sub: Arc<Subscriber<T>>,
    mut tx: Sender<FromBroker<T>>,
    broker: Broker<T>,
) {
    let result: Result<()> = async {
        loop {
            let notified = sub.wake.notified();
            let Some(batch) = take_batch(&sub) else {
                return Ok(());
            };
            if batch.is_empty() {
                notified.await;
                continue;
            }
            for m in batch {
                tx.feed(&m).await?;
            }
            tx.flush().await?;
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(subscriber = sub.id.0, error = %e, "pubsub: writer stopped");
    }
    broker.remove(&sub);
    // Dropping `tx` (and the reader ending on its own) closes the channel.
}

async fn read_loop<T: Message + Clone>(
    sub: Arc<Subscriber<T>>,
    mut rx: Receiver<ToBroker<T>>,
    broker: Broker<T>,
) {
    let mut cut_rx = sub.cut_signal.subscribe();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            // Cut off (overflow, close): stop reading too, so the channel closes.
            _ = cut_rx.wait_for(|cut| *cut) => break,
        };
        match msg {
            Ok(Some(ToBroker::Subscribe { topic })) => {
                if !broker.route(&sub, &topic, true) {
                    break;
                }
            }
            Ok(Some(ToBroker::Unsubscribe { topic })) => {
                if !broker.route(&sub, &topic, false) {
                    break;
                }
            }
            Ok(Some(ToBroker::Publish { topic, message })) => {
                lock(&sub.queue).published += 1;
                broker.publish(&topic, &message);
            }
            Ok(None) => break,
            Err(e) if !e.is_fatal() => {
                tracing::warn!(subscriber = sub.id.0, error = %e, "pubsub: skipped an undecodable message");
            }
            Err(e) => {
                tracing::debug!(subscriber = sub.id.0, error = %e, "pubsub: reader stopped");
                break;
            }
        }
    }
    broker.remove(&sub);
}

/// The parent's own subscription to one topic (see [`Broker::subscribe`]).
/// Dropping it unsubscribes.
pub struct Subscription<T> {
    sub: Arc<Subscriber<T>>,
    broker: Broker<T>,
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.sub.id)
            .finish_non_exhaustive()
    }
}

impl<T: Message + Clone> Subscription<T> {
    /// Its subscriber id, as in [`Broker::stats`].
    pub fn id(&self) -> SubscriberId {
        self.sub.id
    }

    /// The next message; `None` if the broker cut this subscription off.
    pub async fn recv(&mut self) -> Option<Delivery<T>> {
        loop {
            let notified = self.sub.wake.notified();
            {
                let mut q = lock(&self.sub.queue);
                if q.cut {
                    return None;
                }
                if let Some((topic, message)) = q.messages.pop_front() {
                    q.delivered += 1;
                    let dropped = std::mem::take(&mut q.dropped_since);
                    return Some(Delivery {
                        topic: topic.to_string(),
                        message,
                        dropped,
                    });
                }
            }
            notified.await;
        }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.sub.cut();
        let mut state = lock(&self.broker.inner.state);
        if state.subs.remove(&self.sub.id).is_some() {
            state.topics.retain(|_, ids| {
                ids.remove(&self.sub.id);
                !ids.is_empty()
            });
            let stats = self.sub.stats(true);
            state.gone.push(stats);
        }
    }
}

/// A worker's end: subscribe, unsubscribe, publish, receive.
pub struct Client<T> {
    chan: Channel<ToBroker<T>, FromBroker<T>>,
    /// Deliveries that arrived while waiting for an acknowledgement.
    early: VecDeque<Delivery<T>>,
}

impl<T> fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("chan", &self.chan)
            .finish_non_exhaustive()
    }
}

impl<T: Message> Client<T> {
    /// A client over a channel the broker has attached at the other end.
    pub fn new(chan: Channel<ToBroker<T>, FromBroker<T>>) -> Self {
        Client {
            chan,
            early: VecDeque::new(),
        }
    }

    /// The client on the channel from the parent ([`Channel::from_parent`]).
    pub fn from_parent() -> Result<Self> {
        Ok(Self::new(Channel::from_parent()?))
    }

    /// Subscribes to `topic`; returns once the broker routes it here.
    pub async fn subscribe(&mut self, topic: &str) -> Result<()> {
        self.chan
            .send(&ToBroker::Subscribe {
                topic: topic.to_owned(),
            })
            .await?;
        self.await_ack(topic, true).await
    }

    /// Unsubscribes from `topic`; returns once the broker no longer routes it
    /// here (messages already queued for this client still arrive).
    pub async fn unsubscribe(&mut self, topic: &str) -> Result<()> {
        self.chan
            .send(&ToBroker::Unsubscribe {
                topic: topic.to_owned(),
            })
            .await?;
        self.await_ack(topic, false).await
    }

    /// Publishes `message` on `topic` (this client receives it too if subscribed).
    pub async fn publish(&mut self, topic: &str, message: &T) -> Result<()>
    where
        T: Clone,
    {
        self.chan
            .send(&ToBroker::Publish {
                topic: topic.to_owned(),
                message: message.clone(),
            })
            .await
    }

    /// The next delivery; `Ok(None)` once the broker closed the channel (the
    /// parent went away, or cut this client off under [`Overflow::Disconnect`]).
    pub async fn recv(&mut self) -> Result<Option<Delivery<T>>> {
        if let Some(d) = self.early.pop_front() {
            return Ok(Some(d));
        }
        loop {
            match self.chan.recv().await? {
                None => return Ok(None),
                Some(FromBroker::Delivery {
                    topic,
                    message,
                    dropped,
                }) => {
                    return Ok(Some(Delivery {
                        topic,
                        message,
                        dropped,
                    }));
                }
                // A stray acknowledgement (its waiter gave up): ignore.
                Some(_) => {}
            }
        }
    }

    async fn await_ack(&mut self, topic: &str, on: bool) -> Result<()> {
        loop {
            match self.chan.recv().await? {
                None => return Err(Error::Closed),
                Some(FromBroker::Delivery {
                    topic,
                    message,
                    dropped,
                }) => self.early.push_back(Delivery {
                    topic,
                    message,
                    dropped,
                }),
                Some(FromBroker::Subscribed { topic: t }) if on && t == topic => return Ok(()),
                Some(FromBroker::Unsubscribed { topic: t }) if !on && t == topic => return Ok(()),
                Some(_) => {}
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
