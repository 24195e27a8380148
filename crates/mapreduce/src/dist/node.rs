//! The node: a long-running process that pulls tasks of any job from the
//! broker and runs them on its own forkyard-pool workers.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv::{CreateErrorKind, Store};
use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::{AckKind, Message};
use forkyard_pool::{Pool, PoolError, ShutdownMode};
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};

use super::call::{CallPool, Services};
use super::wire::{
    CONSUMER, Commit, Failure, FailureKind, RejectReason, Rejection, STREAM_PREFIX, Start, TaskMsg,
    WireKind, stream_name,
};
use super::{Cluster, DistError};
use crate::engine::CommandFactory;
use crate::task::{
    Outcome, TaskKind, TaskRequest, TaskResponse, cursor_path, map_task_name, part_name,
};

/// How often a node looks for new jobs on the server.
const DISCOVER_EVERY: Duration = Duration::from_millis(250);

/// A node: pulls the tasks of every job on the server and runs them on a
/// pool of local worker processes; also serves remote calls
/// ([`Node::calls`]). Made with [`Node::new`], run with [`Node::run_until`].
///
/// The workers are this binary started again (as with
/// [`MapReduce`](crate::MapReduce)), so `main` must first call
/// [`serve_if_worker`](crate::serve_if_worker) (and
/// [`Services::serve_if_worker`] when it serves calls).
pub struct Node {
    cluster: Cluster,
    workers: usize,
    name: String,
    command: Option<CommandFactory>,
    task_timeout: Duration,
    services: Option<Services>,
    verbose: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

struct Shared {
    cluster: Cluster,
    name: String,
    pool: Pool<TaskRequest, TaskResponse>,
    slots: Arc<Semaphore>,
    scratch: PathBuf,
    verbose: bool,
    shutdown: watch::Receiver<bool>,
}

impl Node {
    /// A node on `cluster` with 2 workers, named `HOST-PID`.
    pub fn new(cluster: Cluster) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        Node {
            cluster,
            workers: 2,
            name: format!("{host}-{}", std::process::id()),
            command: None,
            task_timeout: Duration::from_secs(600),
            services: None,
            verbose: false,
        }
    }

    /// Worker processes (and so tasks run at once) on this node.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The node's name in commit records and logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How one attempt may run on a worker before the worker is killed and
    /// the attempt reported failed (default 10 minutes).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// How to start a worker instead of this very binary (see
    /// [`MapReduce::worker_command`](crate::MapReduce::worker_command)).
    pub fn worker_command(mut self, make: impl Fn() -> Command + Send + Sync + 'static) -> Self {
        self.command = Some(Arc::new(make));
        self
    }

    /// Also serves remote calls to these services (see [`Caller`](super::Caller)).
    pub fn calls(mut self, services: Services) -> Self {
        self.services = Some(services);
        self
    }

    /// Prints one line per task attempt to stderr.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// Runs until `shutdown` completes: then stops taking tasks, hands the
    /// running ones back to the broker (nak, so another node takes them at
    /// once), stops the workers and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), DistError> {
        let builder =
            crate::engine::task_pool(self.workers, self.task_timeout, self.command.as_ref())
                .map_err(|e| DistError::Job(crate::Error::Pool(e)))?;
        let pool = builder
            .build()
            .await
            .map_err(|e| DistError::Job(crate::Error::Pool(e)))?;
        let scratch = tempfile::Builder::new()
            .prefix("forkyard-node-")
            .tempdir()
            .map_err(|source| DistError::Io {
                what: "cannot create the node's scratch directory".into(),
                source,
            })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            pool: pool.clone(),
            slots: Arc::new(Semaphore::new(self.workers)),
            scratch: scratch.path().to_path_buf(),
            verbose: self.verbose,
            shutdown: stop_rx.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        let call_pool = match self.services {
            Some(services) => {
                let cp = CallPool::start(&services, self.workers, self.command.clone()).await?;
                tasks.spawn(super::call::serve(
                    self.cluster.clone(),
                    cp.clone(),
                    stop_rx.clone(),
                ));
                Some(cp)
            }
            None => None,
        };
        tasks.spawn(discover(shared.clone()));
        shutdown.await;
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        pool.shutdown(ShutdownMode::Cancel {
            grace: Duration::from_millis(200),
        })
        .await;
        if let Some(cp) = call_pool {
            cp.shutdown().await;
        }
        drop(scratch);
        Ok(())
    }

    /// [`Node::run_until`] SIGINT or SIGTERM.
    pub async fn run_until_signal(self) -> Result<(), DistError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|source| DistError::Io {
            what: "cannot handle SIGTERM".into(),
            source,
        })?;
        let mut int = signal(SignalKind::interrupt()).map_err(|source| DistError::Io {
            what: "cannot handle SIGINT".into(),
            source,
        })?;
        self.run_until(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
    }
}

/// A node for the library's jobs and calls ([`crate::jobs`]), until SIGINT
/// or SIGTERM, on a tokio runtime of its own: connects to `config`'s server,
/// prints `{program}: serving {url} with {workers} workers` on stderr, then
/// runs a [`Node`] with `workers` worker processes (`verbose`: a line per
/// task attempt, [`Node::verbose`]) and the calls of
/// [`jobs::services`](crate::jobs::services). Returns once it is stopped,
/// its workers gone ([`Node::run_until_signal`]).
///
/// What `forkyard-mapreduce-node --serve` and `wordcount --serve` (the
/// example) run. As for any node, `main` must first call
/// [`jobs::services`](crate::jobs::services)`().serve_if_worker()` and
/// [`jobs::workers`](crate::jobs::workers)`().serve_if_worker()`: the
/// workers are this binary started again.
///
/// ```no_run
/// use forkyard_mapreduce::dist::{self, NatsConfig};
/// use forkyard_mapreduce::jobs;
///
/// fn main() -> std::process::ExitCode {
///     jobs::services().serve_if_worker();
///     jobs::workers().serve_if_worker();
///     let config = NatsConfig::new("nats://127.0.0.1:4222").credentials_from_env();
///     match dist::serve_jobs_blocking(&config, 2, false, "my-node") {
///         Ok(()) => std::process::ExitCode::SUCCESS,
///         Err(e) => dist::report_error("my-node", &e),
///     }
/// }
/// ```
pub fn serve_jobs_blocking(
    config: &super::NatsConfig,
    workers: usize,
    verbose: bool,
    program: &str,
) -> Result<(), DistError> {
    super::runtime()?.block_on(async {
        let cluster = config.connect().await?;
        eprintln!("{program}: serving {} with {workers} workers", config.url);
        Node::new(cluster)
            .workers(workers)
            .calls(crate::jobs::services())
            .verbose(verbose)
            .run_until_signal()
            .await
    })
}

/// Looks for job streams and runs a puller for each new one.
async fn discover(shared: Arc<Shared>) {
    let mut known: HashSet<String> = HashSet::new();
    let mut pullers = tokio::task::JoinSet::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        let mut names = shared.cluster.js.stream_names();
        let mut live = HashSet::new();
        while let Some(Ok(name)) = names.next().await {
            if let Some(id) = name.strip_prefix(STREAM_PREFIX) {
                live.insert(id.to_string());
            }
        }
        for id in &live {
            if known.insert(id.clone()) {
                pullers.spawn(pull_job(shared.clone(), id.clone()));
            }
        }
        while pullers.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(DISCOVER_EVERY) => {}
            _ = super::stopped(&mut shutdown) => break,
        }
    }
    while pullers.join_next().await.is_some() {}
}

struct JobHandles {
    /// The job's stream (`FY_<id>`).
    stream: String,
    consumer: PullConsumer,
    kv: Store,
    os: ObjectStore,
    ack_wait: Duration,
}

async fn open_job(shared: &Shared, id: &str) -> Result<Option<JobHandles>, DistError> {
    let name = stream_name(id);
    let js = &shared.cluster.js;
    let stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e) if super::wire::stream_not_found(&e) => {
            return Ok(None);
        }
        Err(e) => return Err(DistError::broker("cannot open the job's stream", e)),
    };
    let mut consumer: PullConsumer = stream
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| DistError::broker("cannot open the job's consumer", e))?;
    let ack_wait = consumer
        .info()
        .await
        .map(|i| i.config.ack_wait)
        .unwrap_or(Duration::from_secs(30));
    let kv = js
        .get_key_value(&name)
        .await
        .map_err(|e| DistError::broker("cannot open the job's KV bucket", e))?;
    let os = js
        .get_object_store(&name)
        .await
        .map_err(|e| DistError::broker("cannot open the job's object store", e))?;
    Ok(Some(JobHandles {
        stream: name,
        consumer,
        kv,
        os,
        ack_wait,
    }))
}

/// Pulls job `id`'s tasks, one per free worker, until the job's stream is
/// gone or the node shuts down.
async fn pull_job(shared: Arc<Shared>, id: String) {
    let mut shutdown = shared.shutdown.clone();
    let mut running = tokio::task::JoinSet::new();
    'outer: loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let handles = match open_job(&shared, &id).await {
            Ok(Some(h)) => Arc::new(h),
            Ok(None) => break,
            Err(e) => {
                // The consumer may not exist yet, or the broker is restarting.
                if shared.verbose {
                    eprintln!("node {}: job {id}: {e}", shared.name);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = super::stopped(&mut shutdown) => break,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                p = shared.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'outer },
                _ = super::stopped(&mut shutdown) => break 'outer,
            };
            let fetched = tokio::select! {
                f = fetch_one(&handles.consumer) => f,
                _ = super::stopped(&mut shutdown) => break 'outer,
            };
            match fetched {
                Ok(Some(msg)) => {
                    running.spawn(handle(
                        shared.clone(),
                        handles.clone(),
                        id.clone(),
                        msg,
                        permit,
                    ));
                }
                Ok(None) => drop(permit),
                Err(_) => {
                    drop(permit);
                    // The stream was deleted (the job is over) or the broker
                    // went away: reopen, or stop when the stream is gone.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue 'outer,
                        _ = super::stopped(&mut shutdown) => break 'outer,
                    }
                }
            }
            while running.try_join_next().is_some() {}
        }
    }
    while running.join_next().await.is_some() {}
}

async fn fetch_one(consumer: &PullConsumer) -> Result<Option<Message>, DistError> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| DistError::broker("cannot fetch a task", e))?;
    match batch.next().await {
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) => Err(DistError::broker("cannot fetch a task", e)),
        None => Ok(None),
    }
}

/// What became of one delivery.
enum Done {
    Committed,
    Lost,
    Failed(Failure),
}

async fn handle(
    shared: Arc<Shared>,
    job: Arc<JobHandles>,
    id: String,
    msg: Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (delivery, seq) = match msg.info() {
        Ok(i) => (i.delivered.max(1) as u64, i.stream_sequence),
        Err(_) => (1, 0),
    };
    let task: TaskMsg = match postcard::from_bytes(&msg.payload) {
        Ok(t) => t,
        Err(e) => {
            // Not a task: never redeliver it, and say so where the
            // coordinator (and whoever watches the bucket) will see it.
            let _ = msg.ack_with(AckKind::Term).await;
            let rejection = Rejection {
                sequence: seq,
                subject: msg.subject.to_string(),
                node: shared.name.clone(),
                reason: RejectReason::NotATask {
                    bytes: msg.payload.len(),
                    detail: e.to_string(),
                },
            };
            tracing::warn!(job = %id, "{rejection}");
            let _ = put_json(&job.kv, &format!("reject.{seq}"), &rejection).await;
            return;
        }
    };
    let key = task.kind.key();
    // A duplicate of a task that has committed (a redelivery after a late
    // commit, a backup): nothing to do.
    if let Ok(Some(_)) = job.kv.get(format!("commit.{key}")).await {
        let _ = msg.double_ack().await;
        return;
    }
    // The run's nonce: a resumed job's run must not take a killed run's
    // records for its own (nor lose its own to a key the killed run used).
    let tag = format!("{key}.{}.a{}.d{delivery}", task.nonce, task.attempt);
    let _ = put_json(
        &job.kv,
        &format!("start.{tag}"),
        &Start {
            node: shared.name.clone(),
        },
    )
    .await;
    if shared.verbose {
        eprintln!("node {}: job {id}: {tag} started", shared.name);
    }
    let work = run(&shared, &job, &task, delivery);
    tokio::pin!(work);
    let mut tick = tokio::time::interval((job.ack_wait / 3).max(Duration::from_millis(100)));
    tick.tick().await;
    let mut shutdown = shared.shutdown.clone();
    let done = loop {
        tokio::select! {
            d = &mut work => break d,
            _ = tick.tick() => {
                // In progress: resets the server's ack wait, so a long task
                // is not redelivered while it runs.
                let _ = msg.ack_with(AckKind::Progress).await;
            }
            _ = super::stopped(&mut shutdown) => {
                // Hand it back now rather than after the ack wait.
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return;
            }
        }
    };
    let what = match done {
        Done::Committed => "committed",
        Done::Lost => "lost to an earlier commit",
        Done::Failed(f) => {
            if let Ok(bytes) = serde_json::to_vec(&f) {
                let _ = put_retrying(&shared.cluster, &job, &format!("fail.{tag}"), bytes).await;
            }
            match f.kind {
                FailureKind::BadRecord => "failed: bad record",
                FailureKind::WorkerLost => "failed: worker lost",
                FailureKind::Error => "failed",
            }
        }
    };
    if shared.verbose {
        eprintln!("node {}: job {id}: {tag} {what}", shared.name);
    }
    let _ = msg.double_ack().await;
}

async fn put_json<T: serde::Serialize>(kv: &Store, key: &str, value: &T) -> Result<(), DistError> {
    let bytes = serde_json::to_vec(value).map_err(|e| DistError::broker("cannot encode", e))?;
    kv.put(key, bytes.into())
        .await
        .map_err(|e| DistError::broker(format!("cannot put {key}"), e))?;
    Ok(())
}

/// Puts through a broker restart (a few seconds of retries).
async fn put_retrying(
    cluster: &Cluster,
    job: &JobHandles,
    key: &str,
    bytes: Vec<u8>,
) -> Result<(), DistError> {
    let mut last = None;
    for i in 0..40u32 {
        match job.kv.put(key, bytes.clone().into()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        if job_gone(cluster, job).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50 * u64::from(i.min(10)) + 50)).await;
    }
    Err(DistError::broker(
        format!("cannot put {key}"),
        last.expect("at least one attempt"),
    ))
}

/// Whether the job's stream is gone: the job ended (done or failed) and
/// its coordinator deleted it, so a record for it has nowhere to go.
/// Retrying then would only hold this node's worker slot: a failed job
/// whose nodes were still busy once kept them from the next job for the
/// ~20 s of retries. Only the server's "stream not found" code counts: a
/// broker that is restarting answers nothing (a request error), so it still
/// gets the retries.
async fn job_gone(cluster: &Cluster, job: &JobHandles) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), cluster.js.get_stream(&job.stream)).await,
        Ok(Err(e)) if super::wire::stream_not_found(&e)
    )
}

/// Runs one delivery of a task: inputs from the object store into a scratch
/// directory, the engine's own task on a local worker, outputs back to the
/// object store, then the commit (create-if-absent).
async fn run(shared: &Shared, job: &JobHandles, task: &TaskMsg, delivery: u64) -> Done {
    let failed = |kind, position, message: String| {
        Done::Failed(Failure {
            node: shared.name.clone(),
            kind,
            position,
            message,
        })
    };
    let dir = match tempfile::Builder::new()
        .prefix("task-")
        .tempdir_in(&shared.scratch)
    {
        Ok(d) => d,
        Err(e) => return failed(FailureKind::Error, None, format!("scratch dir: {e}")),
    };
    let job_dir = dir.path().join("job");
    let out_dir = dir.path().join("out");
    for d in [
        &job_dir.join("committed"),
        &job_dir.join("reduce"),
        &out_dir,
    ] {
        if let Err(e) = std::fs::create_dir_all(d) {
            return failed(FailureKind::Error, None, format!("scratch dir: {e}"));
        }
    }
    let fault = if delivery == 1 { task.fault } else { None };
    // Unique to this execution: a broker that lost its consumer state may
    // hand the same attempt and delivery number to this node again, and the
    // loser of a commit deletes its objects, which must never be the winner's.
    static EXECUTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = format!(
        "{}.a{}.d{delivery}.{}.x{}",
        task.kind.key(),
        task.attempt,
        shared.name,
        EXECUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut downloaded = 0u64;
    let (kind, careful, map_task) = match &task.kind {
        WireKind::Map {
            task: t,
            split,
            reducers,
            memory,
            skip,
            careful,
            input,
        } => (
            TaskKind::Map {
                task: *t,
                split: match (input, split) {
                    (Some(object), crate::Split::Lines { start, end, .. }) => {
                        // The coordinator's file is not ours to read: its
                        // share, from the object store, at its offset.
                        let local = dir.path().join("input");
                        match download_at(&job.os, &object.name, &local, object.offset).await {
                            Ok(n) => downloaded += n,
                            Err(e) => {
                                return failed(
                                    FailureKind::Error,
                                    None,
                                    format!("cannot fetch the input of map task {t}: {e}"),
                                );
                            }
                        }
                        crate::Split::Lines {
                            path: local,
                            start: *start,
                            end: *end,
                        }
                    }
                    _ => split.clone(),
                },
                reducers: *reducers,
                memory: *memory,
                skip: skip.clone(),
                careful: *careful,
            },
            *careful,
            Some(*t),
        ),
        WireKind::Reduce {
            partition,
            inputs,
            format,
        } => {
            for (m, input) in inputs.iter().enumerate() {
                let dest = job_dir
                    .join("committed")
                    .join(map_task_name(m as u32))
                    .join(part_name(*partition));
                match download(
                    &job.os,
                    &format!("{input}/{}", part_name(*partition)),
                    &dest,
                )
                .await
                {
                    Ok(n) => downloaded += n,
                    Err(e) => {
                        return failed(
                            FailureKind::Error,
                            None,
                            format!("cannot fetch the output of map task {m}: {e}"),
                        );
                    }
                }
            }
            (
                TaskKind::Reduce {
                    partition: *partition,
                    maps: inputs.len() as u32,
                    out_dir: out_dir.clone(),
                    format: *format,
                },
                false,
                None,
            )
        }
    };
    let req = TaskRequest {
        job_name: task.job_name.clone(),
        job: task.params.clone(),
        job_dir: job_dir.clone(),
        attempt: task.attempt,
        fault,
        kind,
    };
    let stats = match shared.pool.call(req).await {
        Ok(TaskResponse {
            outcome: Outcome::Committed | Outcome::Lost,
            stats,
        }) => stats,
        Ok(TaskResponse {
            outcome: Outcome::BadRecord { position, message },
            ..
        }) => {
            return failed(
                FailureKind::BadRecord,
                Some(position),
                format!("the map function panicked: {message}"),
            );
        }
        Err(e @ (PoolError::WorkerCrashed { .. } | PoolError::TimedOut { .. })) => {
            let position = match map_task {
                Some(t) if careful => read_cursor(&cursor_path(&job_dir, t, task.attempt)),
                _ => None,
            };
            let message = match &e {
                PoolError::TimedOut { after } => {
                    format!("the map function hung (timed out after {after:?})")
                }
                other => other.to_string(),
            };
            return failed(FailureKind::WorkerLost, position, message);
        }
        Err(e) => return failed(FailureKind::Error, None, e.to_string()),
    };
    // Upload what the attempt committed locally.
    let mut uploaded = 0u64;
    let mut objects = Vec::new();
    let files: Vec<(PathBuf, String)> = match map_task {
        Some(t) => {
            let committed = job_dir.join("committed").join(map_task_name(t));
            match std::fs::read_dir(&committed) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (e.path(), format!("{prefix}/{name}"))
                    })
                    .collect(),
                Err(e) => return failed(FailureKind::Error, None, format!("map output: {e}")),
            }
        }
        None => {
            let partition = match &task.kind {
                WireKind::Reduce { partition, .. } => *partition,
                WireKind::Map { .. } => 0,
            };
            vec![(out_dir.join(part_name(partition)), prefix.clone())]
        }
    };
    for (path, name) in &files {
        match upload(&job.os, name, path).await {
            Ok(n) => {
                uploaded += n;
                objects.push(name.clone());
            }
            Err(e) => {
                for o in &objects {
                    let _ = job.os.delete(o).await;
                }
                return failed(
                    FailureKind::Error,
                    None,
                    format!("cannot upload {name}: {e}"),
                );
            }
        }
    }
    let commit = Commit {
        node: shared.name.clone(),
        attempt: task.attempt,
        delivery,
        prefix,
        stats,
        uploaded,
        downloaded,
    };
    let bytes = match serde_json::to_vec(&commit) {
        Ok(b) => b,
        Err(e) => return failed(FailureKind::Error, None, e.to_string()),
    };
    let key = format!("commit.{}", task.kind.key());
    // The commit: the first attempt to create the key wins. Retried through
    // a broker restart; a retry that finds the key may be our own earlier
    // try whose answer was lost, so compare.
    for i in 0..40u32 {
        match job.kv.create(&key, bytes.clone().into()).await {
            Ok(_) => return Done::Committed,
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Our own earlier try, whose answer the restart lost?
                let ours = matches!(job.kv.get(&key).await, Ok(Some(v))
                    if serde_json::from_slice::<Commit>(&v).is_ok_and(|c| c.prefix == commit.prefix));
                if ours {
                    return Done::Committed;
                }
                for o in &objects {
                    let _ = job.os.delete(o).await;
                }
                return Done::Lost;
            }
            Err(_) => {
                if job_gone(&shared.cluster, job).await {
                    for o in &objects {
                        let _ = job.os.delete(o).await;
                    }
                    return failed(
                        FailureKind::Error,
                        None,
                        "the job is over: its stream is gone".into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(50 * u64::from(i.min(10)) + 50)).await;
            }
        }
    }
    failed(
        FailureKind::Error,
        None,
        "cannot record the commit: the broker did not answer".into(),
    )
}

fn read_cursor(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let bytes: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Puts file `path` into the object store as `name`; its size.
pub(crate) async fn upload(os: &ObjectStore, name: &str, path: &Path) -> std::io::Result<u64> {
    let mut f = tokio::fs::File::open(path).await?;
    let info = os.put(name, &mut f).await.map_err(std::io::Error::other)?;
    Ok(info.size as u64)
}

/// Writes object `name` into a new file `dest`; its size. Errors of the
/// object store come as `io::Error`s holding them (`ErrorKind::Other`).
pub(crate) async fn download(os: &ObjectStore, name: &str, dest: &Path) -> std::io::Result<u64> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut obj = os.get(name).await.map_err(std::io::Error::other)?;
    let mut f = tokio::fs::File::create(dest).await?;
    let n = tokio::io::copy(&mut obj, &mut f).await?;
    use tokio::io::AsyncWriteExt;
    f.flush().await?;
    Ok(n)
}

/// Writes object `name` into a new file `dest` from byte `offset` on (the
/// bytes before it are a hole, never read). Errors of the object store come
/// as `io::Error`s holding them (`ErrorKind::Other`).
pub(crate) async fn download_at(
    os: &ObjectStore,
    name: &str,
    dest: &Path,
    offset: u64,
) -> std::io::Result<u64> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let mut obj = os.get(name).await.map_err(std::io::Error::other)?;
    let mut f = tokio::fs::File::create(dest).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let n = tokio::io::copy(&mut obj, &mut f).await?;
    f.flush().await?;
    Ok(n)
}
