//! Pool-style calls across machines: `caller.call(req, deadline)` on one
//! machine, run by a node's worker processes on another.
//!
//! A call is a message on the stream `FORKYARD_CALLS` (work queue, subject
//! `fy.calls.<service>`) carrying its reply subject and its deadline; a node
//! pulls it, runs it on a worker of its call pool (if the deadline has not
//! passed), answers on the reply subject and acks. The caller waits until
//! its deadline, no longer.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use forkyard_pool::{Pool, PoolError, ShutdownMode};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::{Cluster, DistError};
use crate::engine::CommandFactory;

const CALL_STREAM: &str = "FORKYARD_CALLS";
const CALL_CONSUMER: &str = "nodes";
const REPLY_HEADER: &str = "Forkyard-Reply";
/// The milliseconds the caller has left (a duration, not an instant: the
/// machines' clocks need not agree).
const DEADLINE_HEADER: &str = "Forkyard-Time-Left-Ms";
/// Set in the call pool's workers, so that [`Services::serve_if_worker`]
/// knows it is one.
const CALL_WORKER_ENV: &str = "FORKYARD_DIST_CALL_WORKER";

/// A function a node serves to remote callers: a request type, a response
/// type and a name (unique within the binary).
pub trait Service: 'static {
    /// The request.
    type Req: Serialize + DeserializeOwned + Send + 'static;
    /// The response.
    type Resp: Serialize + DeserializeOwned + Send + 'static;
    /// The name callers address it by (letters, digits, `-`, `_`).
    const NAME: &'static str;
    /// Runs one call (in a worker process of a node).
    fn call(req: Self::Req) -> Result<Self::Resp, String>;
}

type Handler = fn(&[u8]) -> Result<Vec<u8>, String>;

fn run_service<S: Service>(payload: &[u8]) -> Result<Vec<u8>, String> {
    let req: S::Req =
        postcard::from_bytes(payload).map_err(|e| format!("cannot decode the request: {e}"))?;
    let resp = S::call(req)?;
    postcard::to_allocvec(&resp).map_err(|e| format!("cannot encode the response: {e}"))
}

/// The services a binary serves (see [`Node::calls`](super::Node::calls)).
#[derive(Debug, Default, Clone)]
pub struct Services {
    handlers: Vec<(&'static str, Handler)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CallReq {
    service: String,
    payload: Vec<u8>,
}

impl Services {
    /// No services yet.
    pub fn new() -> Self {
        Services::default()
    }

    /// Registers service `S`.
    pub fn service<S: Service>(mut self) -> Self {
        self.handlers.push((S::NAME, run_service::<S>));
        self
    }

    /// If this process was started as a call worker by a node, serves calls
    /// and exits; otherwise returns. Call it first thing in `main`, before
    /// [`serve_if_worker`](crate::serve_if_worker).
    pub fn serve_if_worker(self) {
        if std::env::var_os(CALL_WORKER_ENV).is_none() || !forkyard_pool::worker::is_worker() {
            return;
        }
        forkyard_pool::worker::serve(move |req: CallReq| {
            let result = match self.handlers.iter().find(|(n, _)| *n == req.service) {
                Some((_, h)) => h(&req.payload),
                None => Err(format!("this node does not serve {}", req.service)),
            };
            async move { result }
        })
    }
}

/// The node's pool of call workers.
#[derive(Clone)]
pub(crate) struct CallPool {
    pool: Pool<CallReq, Vec<u8>>,
    workers: usize,
}

impl CallPool {
    pub(crate) async fn start(
        _services: &Services,
        workers: usize,
        command: Option<CommandFactory>,
    ) -> Result<CallPool, DistError> {
        let exe = std::env::current_exe().map_err(|source| DistError::Io {
            what: "cannot find this binary".into(),
            source,
        })?;
        let pool = Pool::<CallReq, Vec<u8>>::builder()
            .workers(workers)
            .max_in_flight_per_worker(1)
            .queue_capacity(16 * workers + 16)
            .retries(0)
            .stop_grace(Duration::from_millis(200))
            .command(move || {
                let mut cmd = match &command {
                    Some(make) => make(),
                    None => std::process::Command::new(&exe),
                };
                cmd.env(forkyard_pool::worker::WORKER_ENV, "1")
                    .env(CALL_WORKER_ENV, "1");
                cmd
            })
            .build()
            .await
            .map_err(|e| DistError::Job(crate::Error::Pool(e)))?;
        Ok(CallPool { pool, workers })
    }

    pub(crate) async fn shutdown(self) {
        self.pool
            .shutdown(ShutdownMode::Cancel {
                grace: Duration::from_millis(200),
            })
            .await;
    }
}

async fn call_consumer(cluster: &Cluster) -> Result<PullConsumer, DistError> {
    let stream = cluster
        .js
        .get_or_create_stream(stream::Config {
            name: CALL_STREAM.into(),
            subjects: vec!["fy.calls.>".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| DistError::broker("cannot create the call stream", e))?;
    stream
        .get_or_create_consumer(
            CALL_CONSUMER,
            pull::Config {
                durable_name: Some(CALL_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(10),
                max_deliver: 3,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| DistError::broker("cannot create the call consumer", e))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The node side: pulls calls, as many at once as the call pool has
/// workers, until shutdown.
pub(crate) async fn serve(cluster: Cluster, pool: CallPool, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(pool.workers.max(1)));
    let mut running = tokio::task::JoinSet::new();
    'outer: loop {
        let consumer = tokio::select! {
            c = call_consumer(&cluster) => c,
            _ = super::stopped(&mut shutdown) => break,
        };
        let Ok(consumer) = consumer else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = super::stopped(&mut shutdown) => break,
            }
        };
        loop {
            let free = slots.available_permits().max(1);
            let batch = tokio::select! {
                b = consumer.fetch().max_messages(free).expires(Duration::from_secs(1)).messages() => b,
                _ = super::stopped(&mut shutdown) => break 'outer,
            };
            let Ok(mut batch) = batch else {
                continue 'outer;
            };
            while let Some(msg) = tokio::select! {
                m = batch.next() => m,
                _ = super::stopped(&mut shutdown) => break 'outer,
            } {
                let Ok(msg) = msg else { continue 'outer };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break 'outer;
                };
                let client = cluster.client.clone();
                let pool = pool.clone();
                running.spawn(async move {
                    let _permit = permit;
                    answer(client, pool, msg).await;
                });
            }
            while running.try_join_next().is_some() {}
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
}

async fn answer(client: async_nats::Client, pool: CallPool, msg: async_nats::jetstream::Message) {
    let headers = msg.headers.clone().unwrap_or_default();
    let reply = headers.get(REPLY_HEADER).map(|v| v.to_string());
    // The header carries the time left, not a wall-clock instant (clocks
    // differ between machines): the deadline counts from receipt here.
    let deadline: Option<u64> = headers
        .get(DEADLINE_HEADER)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .map(|left| now_ms().saturating_add(left));
    let (Some(reply), Some(deadline)) = (reply, deadline) else {
        let _ = msg.ack_with(AckKind::Term).await;
        tracing::warn!("forkyard node: rejected a call without reply subject or deadline");
        return;
    };
    let service = msg
        .subject
        .as_str()
        .strip_prefix("fy.calls.")
        .unwrap_or("")
        .to_string();
    let left = deadline.saturating_sub(now_ms());
    let result: Result<Vec<u8>, String> = if left == 0 {
        Err("the deadline passed before a node took the call".into())
    } else {
        let call = pool.pool.call(CallReq {
            service,
            payload: msg.payload.to_vec(),
        });
        match tokio::time::timeout(Duration::from_millis(left), call).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(PoolError::Task(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the deadline passed while the call ran".into()),
        }
    };
    if let Ok(bytes) = postcard::to_allocvec(&result) {
        let _ = client.publish(reply, bytes.into()).await;
    }
    let _ = msg.ack().await;
}

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer before the call's deadline.
    #[error("no answer within {after:?}")]
    Deadline {
        /// The deadline the call had.
        after: Duration,
    },
    /// The service (or the node running it) reported an error.
    #[error("the call failed on the node: {0}")]
    Remote(String),
    /// The caller's answer channel closed before an answer came (the
    /// [`Caller`]'s reply listener ended).
    #[error("the caller was disconnected before the answer came")]
    Disconnected,
    /// The broker could not take the call.
    #[error(transparent)]
    Broker(#[from] DistError),
    /// The answer did not decode as the service's response.
    #[error("cannot decode the answer")]
    Decode(#[source] postcard::Error),
}

/// Calls service `S` on whichever node takes the call first: the remote
/// counterpart of [`forkyard_pool::Pool::call`].
pub struct Caller<S: Service> {
    cluster: Cluster,
    inbox: String,
    next: AtomicU64,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    listener: tokio::task::JoinHandle<()>,
    _service: PhantomData<fn() -> S>,
}

impl<S: Service> std::fmt::Debug for Caller<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("service", &S::NAME)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Drop for Caller<S> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl<S: Service> Caller<S> {
    /// A caller on `cluster` (creates the call stream if needed).
    pub async fn new(cluster: &Cluster) -> Result<Self, DistError> {
        call_consumer(cluster).await?;
        let inbox = cluster.client.new_inbox();
        let mut sub = cluster
            .client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| DistError::broker("cannot subscribe to the reply inbox", e))?;
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let w = waiting.clone();
        let listener = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let id = m
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse().ok());
                if let Some(id) = id
                    && let Some(tx) = w.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
                {
                    let _ = tx.send(m.payload.to_vec());
                }
            }
        });
        Ok(Caller {
            cluster: cluster.clone(),
            inbox,
            next: AtomicU64::new(0),
            waiting,
            listener,
            _service: PhantomData,
        })
    }

    /// Calls the service with `req`; fails with [`CallError::Deadline`] if no
    /// answer comes within `deadline` (a node that takes the call after it
    /// does not run it).
    pub async fn call(&self, req: &S::Req, deadline: Duration) -> Result<S::Resp, CallError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let payload =
            postcard::to_allocvec(req).map_err(|e| DistError::broker("cannot encode", e))?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Removes the entry however the call ends, dropped mid-way included.
        struct Forget<'a> {
            waiting: &'a Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
            id: u64,
        }
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.id);
            }
        }
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        let mut headers = HeaderMap::new();
        headers.insert(REPLY_HEADER, format!("{}.{id}", self.inbox).as_str());
        headers.insert(
            DEADLINE_HEADER,
            (deadline.as_millis() as u64).to_string().as_str(),
        );
        let exchange = async {
            let ack = self
                .cluster
                .js
                .publish_with_headers(format!("fy.calls.{}", S::NAME), headers, payload.into())
                .await
                .map_err(|e| DistError::broker("cannot publish the call", e))?;
            ack.await
                .map_err(|e| DistError::broker("the broker did not store the call", e))?;
            rx.await.map_err(|_| CallError::Disconnected)
        };
        let answer = match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(CallError::Deadline { after: deadline }),
        };
        let result: Result<Vec<u8>, String> =
            postcard::from_bytes(&answer).map_err(CallError::Decode)?;
        let bytes = result.map_err(CallError::Remote)?;
        postcard::from_bytes(&bytes).map_err(CallError::Decode)
    }
}
