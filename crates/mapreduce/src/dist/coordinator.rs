//! The coordinator: publishes a job's tasks, follows the job's KV bucket,
//! decides retries, skips and backups as the local engine does, and writes
//! the output locally.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::jetstream::{kv, object_store, stream};
use futures::StreamExt;

use super::node::download;
use super::wire::{
    CONSUMER, Commit, Failure, InputObject, Rejection, TaskMsg, WireKind, stream_name,
    task_subject, task_subjects,
};
use super::{Cluster, DistError};
use crate::engine::{JobEvent, MapReduce, Phase, Plan, read_stats, sweep_tmp};
use crate::error::Error;
use crate::input::Split;
use crate::job::Job;
use crate::report::{PhaseReport, Report, SkippedRecord};
use crate::task::{STATS_FILE, TaskStats, map_task_name, part_name, reduce_marker};

/// The longest one broker operation that the client itself may not bound
/// (opening a watch, the clean-up) is waited for.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Backup attempts of one task at most: one for a task running long, and
/// more only for attempts a frozen node took and holds (see the backup
/// rule in `phase`).
const MAX_BACKUPS: u32 = 3;

/// How a job runs on the cluster: the broker's redelivery settings.
#[derive(Debug, Clone)]
pub struct DistOptions {
    ack_wait: Duration,
    max_deliver: i64,
    job_id: Option<String>,
    deadline: Option<Duration>,
    broker_failures: u32,
    upload_inputs: bool,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            ack_wait: Duration::from_secs(30),
            max_deliver: 4,
            job_id: None,
            deadline: None,
            broker_failures: 20,
            upload_inputs: false,
        }
    }
}

impl DistOptions {
    /// The defaults: 30 s ack wait, 4 deliveries, a random job id.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long the broker waits for a node's ack (or in-progress ack)
    /// before it hands the task to another node: what a dead or stopped
    /// node costs. Nodes send in-progress acks every third of it while a
    /// task runs, so it need not exceed the task time.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How many times the broker delivers one attempt of a task before the
    /// job fails with [`DistError::Undeliverable`] (default 4).
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = i64::from(n.max(1));
        self
    }

    /// Whether the coordinator uploads the input files to the job's object
    /// store (default no: nodes read them by path, from a shared
    /// filesystem). Each map task's share (the lines of its split, and the
    /// byte before them) is one object, so a node downloads only what it
    /// maps; the objects are deleted once the map phase is over. Inline
    /// [`Records`](crate::Records) travel in the task message either way.
    pub fn upload_inputs(mut self, on: bool) -> Self {
        self.upload_inputs = on;
        self
    }

    /// The job's id on the server (letters, digits, `-`): its stream, KV
    /// bucket and object store are `FY_<id>`, its subjects `fy.<id>.>`.
    /// By default, the id recorded in the output directory's job directory
    /// by an earlier run of the same job (so a job whose coordinator was
    /// killed is resumed by running it again), else a random one.
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }

    /// A bound on the whole job (default none): past it the job fails with
    /// [`DistError::Deadline`] (a job whose tasks no node takes would
    /// otherwise wait for nodes for ever).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How many consecutive failed attempts at one broker operation (to
    /// publish a task, to reopen the watch on the job's bucket) the
    /// coordinator makes, 50 to 550 ms apart, each bounded by the client's
    /// 5 s request timeout, before it gives up with [`DistError::Broker`]
    /// (default 20): a broker restart costs a few, a broker that never
    /// comes back ends the job.
    pub fn broker_failures(mut self, n: u32) -> Self {
        self.broker_failures = n.max(1);
        self
    }
}

/// A job's report, plus what the cluster did.
#[derive(Debug, Clone)]
pub struct DistReport {
    /// The same report as a local run's.
    pub report: Report,
    /// The job's id on the server.
    pub job_id: String,
    /// Bytes through the broker: task messages, map runs up and down,
    /// output parts up and down.
    pub broker_bytes: u64,
    /// Deliveries beyond the first (tasks handed to another node after a
    /// node died or stalled).
    pub redeliveries: u64,
    /// The nodes whose attempts committed.
    pub nodes: Vec<String>,
    /// Messages on the job's stream that were not tasks, as nodes reported them.
    pub rejected: Vec<Rejection>,
}

impl<J: Job> MapReduce<J> {
    /// Runs the job on the nodes of `cluster` (see [`Node`](super::Node)),
    /// writing the output here, as [`MapReduce::run`] would.
    pub async fn run_on(self, cluster: &Cluster) -> Result<DistReport, DistError> {
        self.run_on_with(cluster, DistOptions::default()).await
    }

    /// [`MapReduce::run_on`] with explicit broker settings.
    pub async fn run_on_with(
        self,
        cluster: &Cluster,
        options: DistOptions,
    ) -> Result<DistReport, DistError> {
        let started = Instant::now();
        let Plan {
            splits,
            params,
            out_dir,
            job_dir,
            lock: _lock,
        } = self.plan()?;
        let id = job_id(&options, &job_dir)?;
        // A job this directory already holds complete: nothing to run
        // (as the local engine, which finds every task committed).
        let markers: Vec<std::path::PathBuf> = (0..self.reducers)
            .map(|r| reduce_marker(&job_dir, r))
            .collect();
        if markers.iter().all(|m| m.exists()) {
            let map_stats: Vec<TaskStats> = (0..splits.len() as u32)
                .map(|m| {
                    read_stats(
                        &job_dir
                            .join("committed")
                            .join(map_task_name(m))
                            .join(STATS_FILE),
                    )
                })
                .collect();
            let reduce_stats: Vec<TaskStats> = markers.iter().map(|m| read_stats(m)).collect();
            let mut report = Report {
                job: J::name().to_string(),
                workers: self.workers,
                reducers: self.reducers,
                memory: self.memory,
                map: resumed_phase(&map_stats),
                reduce: resumed_phase(&reduce_stats),
                ..Report::default()
            };
            // A coordinator killed after writing the markers and before
            // deleting the job's infra left it on the server: nothing in it
            // is needed any more.
            if jobs_on(cluster).await?.contains(&id) {
                Infra::delete(cluster, &id).await;
            }
            report.wall = started.elapsed();
            return Ok(DistReport {
                report,
                job_id: id,
                broker_bytes: 0,
                redeliveries: 0,
                nodes: Vec::new(),
                rejected: Vec::new(),
            });
        }
        let identity = job_identity(J::name(), &params, &splits, self.reducers);
        let nonce = format!(
            "{:08x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        );
        let tasks = Tasks {
            maps: splits.len(),
            reducers: self.reducers as usize,
        };
        let (infra, resume) = Infra::open(cluster, &id, &identity, &nonce, &options, tasks).await?;
        // This run's lease, refreshed in the background until the run ends.
        let lease = Lease::hold(infra.kv.clone(), nonce.clone(), options.ack_wait);
        let mut run = Run {
            me: &self,
            cluster,
            infra: &infra,
            id: id.clone(),
            job_name: J::name().to_string(),
            params,
            broker_bytes: 0,
            redeliveries: 0,
            nodes: HashSet::new(),
            rejected: Vec::new(),
            seen_rejections: HashSet::new(),
            skipped: Vec::new(),
            options_broker_failures: options.broker_failures,
            upload_inputs: options.upload_inputs,
            nonce,
            resume,
        };
        let result = match options.deadline {
            None => run.job(&splits, &out_dir, &job_dir).await,
            Some(deadline) => {
                match tokio::time::timeout(deadline, run.job(&splits, &out_dir, &job_dir)).await {
                    Ok(r) => r,
                    Err(_) => Err(DistError::Deadline { deadline }),
                }
            }
        };
        drop(lease);
        Infra::delete(cluster, &id).await;
        let (map, reduce) = result?;
        let mut report = Report {
            job: J::name().to_string(),
            workers: self.workers,
            reducers: self.reducers,
            memory: self.memory,
            map,
            reduce,
            skipped: std::mem::take(&mut run.skipped),
            ..Report::default()
        };
        report.wall = started.elapsed();
        let _ = std::fs::write(job_dir.join("report.json"), report.to_json());
        let mut nodes: Vec<String> = run.nodes.into_iter().collect();
        nodes.sort();
        Ok(DistReport {
            report,
            job_id: id,
            broker_bytes: run.broker_bytes,
            redeliveries: run.redeliveries,
            nodes,
            rejected: run.rejected,
        })
    }

    /// [`MapReduce::run_on_with`] on a runtime of its own, connecting first.
    pub fn run_on_blocking(
        self,
        config: &super::NatsConfig,
        options: DistOptions,
    ) -> Result<DistReport, DistError> {
        super::runtime()?.block_on(async {
            let cluster = config.connect().await?;
            self.run_on_with(&cluster, options).await
        })
    }
}

/// The job's stream, bucket and object store.
struct Infra {
    kv: Store,
    os: ObjectStore,
    max_payload: usize,
}

impl Infra {
    /// Opens the job's stream, bucket and object store: creates them, or,
    /// when the stream is already there (a coordinator of this job was
    /// killed), takes them over and returns what the earlier run committed.
    /// A fresh job that cannot be set up is removed again.
    /// `identity` ([`job_identity`]) is recorded under the `job` key when the
    /// job is created; a job id already on the server for another identity
    /// is refused ([`DistError::OtherJob`]) before anything of it is touched.
    async fn open(
        cluster: &Cluster,
        id: &str,
        identity: &str,
        nonce: &str,
        options: &DistOptions,
        tasks: Tasks,
    ) -> Result<(Self, Option<Resume>), DistError> {
        // Only the server's "stream not found" means a fresh job: any other
        // error says nothing, and taking it for "absent" would skip the
        // take-over (reusing the stream unpurged) and, should setup then
        // fail, delete the killed run's committed work.
        let existed = match cluster.js.get_stream(stream_name(id)).await {
            Ok(_) => true,
            Err(e) if super::wire::stream_not_found(&e) => false,
            Err(e) => return Err(DistError::broker("cannot look up the job's stream", e)),
        };
        let opened = async {
            let infra = Self::create(cluster, id, options).await?;
            infra.claim(id, identity).await?;
            infra.lease(id, nonce, options.ack_wait).await?;
            let resume = match existed {
                true => Some(Resume::take_over(cluster, id, &infra, tasks).await?),
                false => None,
            };
            Ok((infra, resume))
        }
        .await;
        if opened.is_err() && !existed {
            Infra::delete(cluster, id).await;
        }
        opened
    }

    /// Records `identity` under the `job` key (create-if-absent), or checks
    /// it against the one recorded by the run that created the job.
    async fn claim(&self, id: &str, identity: &str) -> Result<(), DistError> {
        match self
            .kv
            .create(JOB_KEY, identity.as_bytes().to_vec().into())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let recorded = self
                    .kv
                    .get(JOB_KEY)
                    .await
                    .map_err(|e| DistError::broker("cannot read the job's identity", e))?;
                match recorded {
                    Some(r) if r.as_ref() == identity.as_bytes() => Ok(()),
                    _ => Err(DistError::OtherJob { id: id.to_string() }),
                }
            }
            Err(e) => Err(DistError::broker("cannot record the job's identity", e)),
        }
    }

    /// Takes the job's coordinator lease (the `coordinator` key, holding the
    /// run's nonce): refused with [`DistError::CoordinatorLive`] while
    /// another run's lease is younger than [`LEASE_AGES`] of its ack waits (that
    /// coordinator is alive, or died too recently to tell). The age is the
    /// local clock against the server's timestamp of the key's last write.
    async fn lease(&self, id: &str, nonce: &str, ack_wait: Duration) -> Result<(), DistError> {
        let entry = self
            .kv
            .entry(LEASE_KEY)
            .await
            .map_err(|e| DistError::broker("cannot read the job's coordinator lease", e))?;
        if let Some(e) = entry
            && e.operation == kv::Operation::Put
            && let Ok(held) = serde_json::from_slice::<LeaseRecord>(&e.value)
            && held.nonce != nonce
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            let age_nanos = (now - e.created.unix_timestamp_nanos()).max(0);
            let age = Duration::from_nanos(age_nanos.min(u64::MAX as i128) as u64);
            // The holder's ack wait: it refreshes every third of it.
            if age < Duration::from_millis(held.ack_wait_ms) * LEASE_AGES {
                return Err(DistError::CoordinatorLive {
                    id: id.to_string(),
                    age,
                });
            }
        }
        self.kv
            .put(LEASE_KEY, LeaseRecord::new(nonce, ack_wait).to_bytes())
            .await
            .map_err(|e| DistError::broker("cannot take the job's coordinator lease", e))?;
        Ok(())
    }

    /// Creates what is missing (every call is create-or-get, so a resumed
    /// job keeps its stream, commits and map output).
    async fn create(cluster: &Cluster, id: &str, options: &DistOptions) -> Result<Self, DistError> {
        let name = stream_name(id);
        let js = &cluster.js;
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![task_subjects(id)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| DistError::broker(format!("cannot create the stream {name}"), e))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver: options.max_deliver,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| DistError::broker("cannot create the job's consumer", e))?;
        // The bucket's stream, as `create_key_value` would make it: that
        // call first reads the account info, which async-nats 0.46 cannot
        // parse from a 2.9 server (no `reserved_memory`).
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| DistError::broker(format!("cannot create the KV bucket {name}"), e))?;
        let kv = js
            .get_key_value(&name)
            .await
            .map_err(|e| DistError::broker(format!("cannot open the KV bucket {name}"), e))?;
        let os = match js.get_object_store(&name).await {
            Ok(os) => os,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    DistError::broker(format!("cannot create the object store {name}"), e)
                })?,
        };
        let max_payload = cluster.client.server_info().max_payload;
        Ok(Infra {
            kv,
            os,
            max_payload,
        })
    }

    /// Removes everything the job put on the server (best effort).
    async fn delete(cluster: &Cluster, id: &str) {
        let name = stream_name(id);
        let js = &cluster.js;
        // Bounded: with the broker gone there is nothing to delete.
        let _ = tokio::time::timeout(BROKER_TIMEOUT, async {
            let _ = js.delete_stream(&name).await;
            let _ = js.delete_key_value(&name).await;
            let _ = js.delete_object_store(&name).await;
        })
        .await;
    }
}

/// How many tasks the job has in each phase.
#[derive(Debug, Clone, Copy)]
struct Tasks {
    maps: usize,
    reducers: usize,
}

/// What an earlier, killed coordinator of the same job left on the server.
struct Resume {
    /// The bucket's last revision when this run took over: records up to
    /// it (starts, failures) belong to the earlier run, except commits.
    revision: u64,
    /// Its commits, by phase letter and task.
    commits: HashMap<(char, usize), Commit>,
}

impl Resume {
    /// Takes over a job from a killed coordinator: drops the task messages
    /// still queued (this run publishes what is not committed, with its
    /// own attempt numbers; an attempt of the earlier run still running on
    /// a node may yet commit, which this run sees and counts), and reads
    /// the commits.
    async fn take_over(
        cluster: &Cluster,
        id: &str,
        infra: &Infra,
        tasks: Tasks,
    ) -> Result<Resume, DistError> {
        let name = stream_name(id);
        let stream = cluster
            .js
            .get_stream(&name)
            .await
            .map_err(|e| DistError::broker("cannot open the job's stream", e))?;
        stream
            .purge()
            .await
            .map_err(|e| DistError::broker("cannot drop the earlier run's task messages", e))?;
        let mut bucket = cluster
            .js
            .get_stream(format!("KV_{name}"))
            .await
            .map_err(|e| DistError::broker("cannot open the job's KV bucket", e))?;
        let revision = bucket
            .info()
            .await
            .map_err(|e| DistError::broker("cannot read the job's KV bucket", e))?
            .state
            .last_sequence;
        // Each task's commit key read directly, not the bucket listed:
        // listing (`keys()`, an ordered consumer that ends when the server
        // says nothing is pending) never ended now and then on the
        // nats-server 2.9 these tests run (nats-server#3481: a bucket whose
        // keys are overwritten, as the lease is), and a take-over then hung.
        // A get is one request, bounded by the client's request timeout.
        let keys: Vec<(char, usize)> = (0..tasks.maps)
            .map(|i| ('m', i))
            .chain((0..tasks.reducers).map(|r| ('r', r)))
            .collect();
        let mut reads = futures::stream::iter(keys)
            .map(|(p, i)| async move {
                let key = format!("commit.{p}.{i:05}");
                let bytes = infra
                    .kv
                    .get(key.as_str())
                    .await
                    .map_err(|e| DistError::broker(format!("cannot read {key}"), e))?;
                Ok::<_, DistError>(((p, i), bytes))
            })
            .buffer_unordered(64);
        let mut commits = HashMap::new();
        while let Some(read) = reads.next().await {
            let (task, bytes) = read?;
            if let Some(c) = bytes.and_then(|b| serde_json::from_slice::<Commit>(&b).ok()) {
                commits.insert(task, c);
            }
        }
        Ok(Resume { revision, commits })
    }
}

/// The job's id: the one asked for, else the one an earlier run of this
/// job recorded in its job directory, else a new random one (recorded, so
/// that running the job again after its coordinator was killed resumes it).
/// The KV key holding the running coordinator's nonce (its lease).
const LEASE_KEY: &str = "coordinator";
/// A lease younger than this many ack waits is a live coordinator's.
const LEASE_AGES: u32 = 3;

/// The `coordinator` key's value (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    /// The holding run's nonce.
    nonce: String,
    /// Its ack wait: it refreshes the lease every third of it.
    ack_wait_ms: u64,
}

impl LeaseRecord {
    fn new(nonce: &str, ack_wait: Duration) -> Self {
        LeaseRecord {
            nonce: nonce.to_string(),
            ack_wait_ms: ack_wait.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
}

/// Refreshes a run's lease every third of the ack wait until dropped.
struct Lease(tokio::task::JoinHandle<()>);

impl Lease {
    fn hold(kv: Store, nonce: String, ack_wait: Duration) -> Self {
        let record = LeaseRecord::new(&nonce, ack_wait);
        Lease(tokio::spawn(async move {
            let mut tick = tokio::time::interval((ack_wait / 3).max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Best effort: a broker that is gone takes the job with it.
                let _ = tokio::time::timeout(BROKER_TIMEOUT, kv.put(LEASE_KEY, record.to_bytes()))
                    .await;
            }
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The KV key holding the job's identity ([`job_identity`]).
const JOB_KEY: &str = "job";

/// What makes two runs the same job: the job's name, its parameters, the
/// reducer count and the splits (files and byte ranges), hashed (FNV-1a,
/// 64 bits, stable across builds) and written as hex.
fn job_identity(name: &str, params: &[u8], splits: &[Split], reducers: u32) -> String {
    let bytes = postcard::to_allocvec(&(name, params, splits, reducers)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn job_id(options: &DistOptions, job_dir: &Path) -> Result<String, DistError> {
    let record = job_dir.join(DIST_RECORD);
    let recorded = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<DistRecord>(&b).ok())
        .map(|r| r.job_id)
        .filter(|id| check_id(id).is_ok());
    let id = match (&options.job_id, recorded) {
        (Some(id), _) => {
            check_id(id)?;
            id.clone()
        }
        (None, Some(id)) => return Ok(id),
        (None, None) => format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        ),
    };
    let bytes = serde_json::to_vec(&DistRecord { job_id: id.clone() })
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let tmp = job_dir.join(format!("{DIST_RECORD}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &record))
        .map_err(|source| DistError::Io {
            what: format!("cannot record the job's id in {}", record.display()),
            source,
        })?;
    Ok(id)
}

/// `_forkyard/dist.json`: the id of the job on the server.
const DIST_RECORD: &str = "dist.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct DistRecord {
    job_id: String,
}

/// A phase all of whose tasks an earlier run committed.
fn resumed_phase(stats: &[TaskStats]) -> PhaseReport {
    let mut totals = TaskStats::default();
    for s in stats {
        totals.add(s);
    }
    PhaseReport {
        tasks: stats.len(),
        resumed: stats.len(),
        resumed_bytes_in: totals.bytes_in,
        records_in: totals.records_in,
        bytes_in: totals.bytes_in,
        records_out: totals.records_out,
        bytes_out: totals.bytes_out,
        spills: totals.spills,
        keys: totals.keys,
        peak_worker_rss: totals.peak_rss,
        ..PhaseReport::default()
    }
}

struct Run<'a, J: Job> {
    me: &'a MapReduce<J>,
    cluster: &'a Cluster,
    infra: &'a Infra,
    id: String,
    job_name: String,
    params: Vec<u8>,
    broker_bytes: u64,
    redeliveries: u64,
    nodes: HashSet<String>,
    rejected: Vec<Rejection>,
    seen_rejections: HashSet<String>,
    skipped: Vec<SkippedRecord>,
    options_broker_failures: u32,
    upload_inputs: bool,
    /// Unique to this run: in publish ids, so a resumed job's tasks are
    /// not taken for duplicates of the killed run's.
    nonce: String,
    resume: Option<Resume>,
}

#[derive(Default)]
struct TaskState {
    done: bool,
    attempts: u32,
    started: Option<Instant>,
    /// The first backup attempt (a later attempt that commits is a backup's win).
    backup: Option<u32>,
    /// Backup attempts published.
    backups: u32,
    /// Since when the last attempt published has not started (no start
    /// record of it, nor of a later one).
    unstarted_since: Option<Instant>,
    careful: bool,
    skip: Vec<u64>,
    seen: HashMap<u64, u32>,
    fruitless: u32,
    last_failure: String,
}

/// A KV key of this job, parsed.
#[derive(Debug, PartialEq)]
enum Key<'k> {
    Commit(char, usize),
    /// A start of this run: phase, task, attempt.
    Start(char, usize, u32),
    Fail(char, usize),
    Reject(&'k str),
}

/// Parses `key`; `None` for what this run does not act on. Commits
/// (`commit.m.00003`) count whichever run made them; starts and failures
/// (`start.m.00003.NONCE.a0.d1`) only when they carry this run's `nonce`: a
/// killed run's late records are not this run's attempts, and sharing keys
/// with them would drop this run's own record as a repeat.
fn parse_key<'k>(key: &'k str, nonce: &str) -> Option<Key<'k>> {
    let mut parts = key.split('.');
    let what = parts.next()?;
    if what == "reject" {
        return Some(Key::Reject(parts.next()?));
    }
    let phase = parts.next()?.chars().next()?;
    let task: usize = parts.next()?.parse().ok()?;
    match what {
        "commit" => Some(Key::Commit(phase, task)),
        "start" | "fail" if parts.next()? != nonce => None,
        "start" => {
            let attempt = parts.next()?.strip_prefix('a')?.parse().ok()?;
            Some(Key::Start(phase, task, attempt))
        }
        "fail" => Some(Key::Fail(phase, task)),
        _ => None,
    }
}

fn label(phase: Phase, i: usize) -> String {
    match phase {
        Phase::Map => format!("map task {i}"),
        Phase::Reduce => format!("reduce partition {i}"),
    }
}

impl<J: Job> Run<'_, J> {
    async fn job(
        &mut self,
        splits: &[crate::input::Split],
        out_dir: &Path,
        job_dir: &Path,
    ) -> Result<(PhaseReport, PhaseReport), DistError> {
        let me = self.me;
        let map_done: Vec<Option<Commit>> =
            (0..splits.len()).map(|i| self.resumed('m', i)).collect();
        // Uploaded inputs: each map task's share, one object each, before
        // any task is published (only for tasks still to run).
        let mut inputs: Vec<Option<InputObject>> = vec![None; splits.len()];
        if self.upload_inputs {
            for (i, split) in splits.iter().enumerate() {
                if let (None, Split::Lines { path, start, end }) = (&map_done[i], split) {
                    // Named by run: a killed run's node may still be reading
                    // its own copy.
                    let name = format!("in.{}.m.{i:05}", self.nonce);
                    let (offset, n) =
                        upload_share(&self.infra.os, &name, path, *start, *end).await?;
                    self.broker_bytes += n;
                    inputs[i] = Some(InputObject { name, offset });
                }
            }
        }
        let maps: Vec<WireKind> = splits
            .iter()
            .enumerate()
            .map(|(i, split)| WireKind::Map {
                task: i as u32,
                split: split.clone(),
                reducers: me.reducers,
                memory: me.memory,
                skip: Vec::new(),
                careful: false,
                input: inputs[i].clone(),
            })
            .collect();
        let (map_report, map_commits) = self.phase(Phase::Map, maps, map_done).await?;
        // The inputs are mapped: give the broker its disk back.
        let _ = tokio::time::timeout(BROKER_TIMEOUT, async {
            for input in inputs.iter().flatten() {
                let _ = self.infra.os.delete(&input.name).await;
            }
        })
        .await;
        let inputs: Vec<String> = map_commits.iter().map(|c| c.prefix.clone()).collect();
        let reduces: Vec<WireKind> = (0..me.reducers)
            .map(|r| WireKind::Reduce {
                partition: r,
                inputs: inputs.clone(),
                format: me.format,
            })
            .collect();
        let reduce_done: Vec<Option<Commit>> = (0..me.reducers as usize)
            .map(|r| self.resumed('r', r))
            .collect();
        let (mut reduce_report, reduce_commits) =
            self.phase(Phase::Reduce, reduces, reduce_done).await?;
        // The output: each part from the object store, renamed into place;
        // then the records a local run keeps, so the directory reads the same.
        let fetch_started = Instant::now();
        // The map stats first: a re-run that finds every reduce marker
        // reports from them, so they must be there before the last marker
        // (a coordinator killed in between would report 0 map records).
        for (m, c) in map_commits.iter().enumerate() {
            let dir = job_dir.join("committed").join(map_task_name(m as u32));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                dir.join(STATS_FILE),
                serde_json::to_vec(&c.stats).unwrap_or_default(),
            );
        }
        for (r, c) in reduce_commits.iter().enumerate() {
            let tmp = out_dir.join(format!(".{}.dist.tmp", part_name(r as u32)));
            let n = download(&self.infra.os, &c.prefix, &tmp)
                .await
                .map_err(|source| DistError::Io {
                    what: format!("cannot fetch {}", part_name(r as u32)),
                    source,
                })?;
            self.broker_bytes += n;
            std::fs::rename(&tmp, out_dir.join(part_name(r as u32))).map_err(|source| {
                DistError::Io {
                    what: format!("cannot write {}", part_name(r as u32)),
                    source,
                }
            })?;
            let marker = reduce_marker(job_dir, r as u32);
            let _ = std::fs::write(&marker, serde_json::to_vec(&c.stats).unwrap_or_default());
        }
        sweep_tmp(out_dir);
        reduce_report.wall += fetch_started.elapsed();
        Ok((map_report, reduce_report))
    }

    /// How many task messages the broker has not delivered to any node yet
    /// (the job consumer's `num_pending`); `None` when it cannot tell in
    /// [`BROKER_TIMEOUT`].
    async fn undelivered(&self) -> Option<u64> {
        let info = self
            .cluster
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(CONSUMER, stream_name(&self.id));
        match tokio::time::timeout(BROKER_TIMEOUT, info).await {
            Ok(Ok(consumer)) => Some(consumer.cached_info().num_pending),
            _ => None,
        }
    }

    async fn publish(
        &mut self,
        phase: Phase,
        kind: &WireKind,
        attempt: u32,
    ) -> Result<u64, DistError> {
        let (letter, task) = match kind {
            WireKind::Map { task, .. } => ("m", *task),
            WireKind::Reduce { partition, .. } => ("r", *partition),
        };
        let fault = if attempt == 0 {
            self.me.faults.get(&(phase, task)).copied()
        } else {
            None
        };
        let msg = TaskMsg {
            job_name: self.job_name.clone(),
            params: self.params.clone(),
            nonce: self.nonce.clone(),
            attempt,
            fault,
            kind: kind.clone(),
        };
        let payload = postcard::to_allocvec(&msg)
            .map_err(|e| DistError::broker("cannot encode a task", e))?;
        if payload.len() + 1024 > self.infra.max_payload {
            return Err(DistError::TooLarge {
                what: label(phase, task as usize),
                bytes: payload.len(),
                limit: self.infra.max_payload,
            });
        }
        self.broker_bytes += payload.len() as u64;
        let subject = task_subject(&self.id, letter, task, attempt);
        let msg_id = format!("{}/{}/{letter}/{task}/a{attempt}", self.id, self.nonce);
        // Through a broker restart: the message id makes a retried publish
        // that did land the first time a duplicate the server drops.
        let mut last = None;
        for i in 0..self.options_broker_failures {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            let sent = self
                .cluster
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(ack) => return Ok(ack.sequence),
                    Err(e) => last = Some(DistError::broker("the broker did not store a task", e)),
                },
                Err(e) => last = Some(DistError::broker("cannot publish a task", e)),
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(i.min(10)) + 50)).await;
        }
        Err(last.expect("at least one attempt"))
    }

    /// The earlier run's commit of task `i` of phase `letter`, if any.
    fn resumed(&self, letter: char, i: usize) -> Option<Commit> {
        self.resume
            .as_ref()
            .and_then(|r| r.commits.get(&(letter, i)).cloned())
    }

    fn notify(&self, event: JobEvent) {
        if let Some(observer) = &self.me.observer {
            observer(&event);
        }
    }

    async fn phase(
        &mut self,
        phase: Phase,
        tasks: Vec<WireKind>,
        done: Vec<Option<Commit>>,
    ) -> Result<(PhaseReport, Vec<Commit>), DistError> {
        let me = self.me;
        let started = Instant::now();
        let letter = match phase {
            Phase::Map => 'm',
            Phase::Reduce => 'r',
        };
        let mut report = PhaseReport {
            tasks: tasks.len(),
            ..PhaseReport::default()
        };
        let mut states: Vec<TaskState> = (0..tasks.len()).map(|_| TaskState::default()).collect();
        let mut commits: Vec<Option<Commit>> = vec![None; tasks.len()];
        let mut totals = TaskStats::default();
        let mut by_seq: HashMap<u64, usize> = HashMap::new();
        let mut durations: Vec<Duration> = Vec::new();
        let mut seen_keys: HashSet<String> = HashSet::new();
        let mut remaining = tasks.len();
        for (i, c) in done.into_iter().enumerate() {
            if let Some(c) = c {
                states[i].done = true;
                remaining -= 1;
                report.resumed += 1;
                report.resumed_bytes_in += c.stats.bytes_in;
                totals.add(&c.stats);
                commits[i] = Some(c);
            }
        }
        // Records of an earlier, killed run (its starts and failures) are
        // not this run's; its commits were read above.
        let earlier = self.resume.as_ref().map_or(0, |r| r.revision);

        let mut advisories = self
            .cluster
            .client
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{CONSUMER}",
                stream_name(&self.id)
            ))
            .await
            .map_err(|e| DistError::broker("cannot subscribe to advisories", e))?;
        // With history: the last record of every key, then what follows. A
        // plain `watch_all` starts at the next record, so a watch reopened
        // after a broker restart missed every commit made while it was
        // down (the job then waited for them for ever), and a resumed job
        // missed those made between its reading the bucket and watching it.
        let mut watch = Some(
            self.infra
                .kv
                .watch_with_history(">")
                .await
                .map_err(|e| DistError::broker("cannot watch the job's bucket", e))?,
        );
        self.notify(JobEvent::PhaseStarted {
            phase,
            tasks: tasks.len(),
            resumed: report.resumed,
        });
        for (i, kind) in tasks.iter().enumerate() {
            if states[i].done {
                continue;
            }
            let seq = self.publish(phase, kind, 0).await?;
            by_seq.insert(seq, i);
            states[i].attempts = 1;
            states[i].unstarted_since = Some(Instant::now());
        }
        let bar = progress_bar(me.progress, phase, tasks.len() as u64);
        bar.set_position(report.resumed as u64);
        let mut watch_failures = 0u32;
        let mut next_watch = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_delivery_check = Instant::now();

        while remaining > 0 {
            let entry = tokio::select! {
                e = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => e,
                Some(adv) = advisories.next() => {
                    #[derive(serde::Deserialize)]
                    struct MaxDeliveries { stream_seq: u64, deliveries: u64 }
                    if let Ok(a) = serde_json::from_slice::<MaxDeliveries>(&adv.payload)
                        && let Some(&i) = by_seq.get(&a.stream_seq)
                        && !states[i].done
                    {
                        return Err(DistError::Undeliverable { phase, index: i as u32, deliveries: a.deliveries });
                    }
                    continue;
                }
                _ = tick.tick() => {
                    if watch.is_some()
                        && self.cluster.client.connection_state()
                            != async_nats::connection::State::Connected
                    {
                        // The broker is gone: a watch may not notice, so
                        // drop it and open another once it is back.
                        watch = None;
                    }
                    if watch.is_none() && Instant::now() >= next_watch {
                        // The watch ended (a broker restart): start another;
                        // it replays every key, and seen_keys drops repeats.
                        // Bounded here too: opening a watch while the
                        // client is disconnected may wait for a reconnect.
                        let opened = match tokio::time::timeout(BROKER_TIMEOUT, self.infra.kv.watch_with_history(">")).await {
                            Ok(Ok(w)) => Ok(w),
                            Ok(Err(e)) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                            Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                        };
                        match opened {
                            Ok(w) => {
                                watch = Some(w);
                                watch_failures = 0;
                            }
                            Err(e) => {
                                watch_failures += 1;
                                // Spaced as publish retries are.
                                next_watch = Instant::now()
                                    + Duration::from_millis(50 * u64::from(watch_failures.min(10)) + 50);
                                tracing::warn!(attempt = watch_failures, error = %e, "cannot watch the job's bucket");
                                if watch_failures >= self.options_broker_failures {
                                    return Err(DistError::broker(
                                        format!("cannot watch the job's bucket ({watch_failures} attempts in a row failed: the broker is gone)"),
                                        e,
                                    ));
                                }
                            }
                        }
                    }
                    if me.backups {
                        let all_started = states.iter().all(|s| s.done || s.started.is_some());
                        let mut sorted = durations.clone();
                        sorted.sort();
                        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
                        let threshold = me.backup_after.max(median * 2);
                        let held = |s: &TaskState| {
                            !s.done && s.unstarted_since.is_some_and(|t| t.elapsed() > threshold)
                        };
                        // An attempt not started long after it was
                        // published: queued behind busy workers, or taken
                        // by a node that froze (SIGSTOP, a paused VM) with a
                        // pull request out, which holds it until the ack
                        // wait ends. Only the broker tells the two apart:
                        // when it has nothing left to deliver, the attempt is
                        // held. Asked at most once a second, and only while
                        // such an attempt is seen.
                        let all_delivered = if states.iter().any(held) && Instant::now() >= next_delivery_check {
                            next_delivery_check = Instant::now() + Duration::from_secs(1);
                            self.undelivered().await == Some(0)
                        } else {
                            false
                        };
                        if all_started || all_delivered {
                            for i in 0..states.len() {
                                let s = &states[i];
                                if s.done || s.backups >= MAX_BACKUPS {
                                    continue;
                                }
                                let slow = s.backup.is_none() && s.started.is_some_and(|t| t.elapsed() > threshold);
                                if slow || (all_delivered && held(s)) {
                                    let attempt = s.attempts;
                                    let kind = self.with_state(&tasks[i], &states[i]);
                                    let seq = self.publish(phase, &kind, attempt).await?;
                                    by_seq.insert(seq, i);
                                    let s = &mut states[i];
                                    s.attempts += 1;
                                    s.backups += 1;
                                    s.backup.get_or_insert(attempt);
                                    s.unstarted_since = Some(Instant::now());
                                    report.backups += 1;
                                }
                            }
                        }
                    }
                    continue;
                }
            };
            let entry = match entry {
                Some(Ok(e)) => e,
                Some(Err(_)) | None => {
                    watch = None;
                    continue;
                }
            };
            if entry.operation != kv::Operation::Put
                || entry.revision <= earlier
                || !seen_keys.insert(entry.key.clone())
            {
                continue;
            }
            match parse_key(&entry.key, &self.nonce) {
                Some(Key::Reject(seq)) => {
                    if self.seen_rejections.insert(seq.to_string())
                        && let Ok(r) = serde_json::from_slice::<Rejection>(&entry.value)
                    {
                        tracing::warn!("{r}");
                        if me.progress {
                            bar.println(format!("warning: {r}"));
                        }
                        self.rejected.push(r);
                    }
                }
                Some(Key::Start(p, i, attempt)) if p == letter && i < states.len() => {
                    report.attempts += 1;
                    let s = &mut states[i];
                    if s.started.is_none() {
                        s.started = Some(Instant::now());
                    }
                    if attempt + 1 >= s.attempts {
                        s.unstarted_since = None;
                    }
                }
                Some(Key::Commit(p, i)) if p == letter && i < states.len() => {
                    let Ok(c) = serde_json::from_slice::<Commit>(&entry.value) else {
                        continue;
                    };
                    let s = &mut states[i];
                    if s.done {
                        continue;
                    }
                    s.done = true;
                    remaining -= 1;
                    if let Some(t) = s.started {
                        durations.push(t.elapsed());
                    }
                    if let Some(b) = s.backup {
                        if c.attempt >= b {
                            report.backup_wins += 1
                        } else {
                            report.original_wins += 1
                        }
                    }
                    let redelivered = c.delivery.saturating_sub(1);
                    self.redeliveries += redelivered;
                    report.retries += redelivered;
                    if redelivered > 0 && report.failures.len() < 20 {
                        report.failures.push(format!(
                            "{}: redelivered {redelivered} time(s) (a node died or stalled holding it)",
                            label(phase, i)
                        ));
                    }
                    self.broker_bytes += c.uploaded + c.downloaded;
                    self.nodes.insert(c.node.clone());
                    totals.add(&c.stats);
                    bar.inc(1);
                    bar.set_message(format!(
                        "{:.1} MB in, {} node(s)",
                        totals.bytes_in as f64 / 1e6,
                        self.nodes.len()
                    ));
                    commits[i] = Some(c);
                }
                Some(Key::Fail(p, i)) if p == letter && i < states.len() => {
                    let Ok(f) = serde_json::from_slice::<Failure>(&entry.value) else {
                        continue;
                    };
                    if states[i].done {
                        continue;
                    }
                    report.retries += 1;
                    let message = format!("{} (on node {})", f.message, f.node);
                    if report.failures.len() < 20 {
                        report
                            .failures
                            .push(format!("{}: {message}", label(phase, i)));
                    }
                    let s = &mut states[i];
                    s.last_failure = message.clone();
                    let learned = match f.position {
                        Some(pos) => {
                            let seen = s.seen.entry(pos).or_insert(0);
                            *seen += 1;
                            if *seen == 2 {
                                s.skip.push(pos);
                                let source = match &tasks[i] {
                                    WireKind::Map { split, .. } => split.source(),
                                    WireKind::Reduce { partition, .. } => part_name(*partition),
                                };
                                self.skipped.push(SkippedRecord {
                                    task: i as u32,
                                    source,
                                    position: pos,
                                    message: f.message.clone(),
                                });
                                if self.skipped.len() > me.max_skipped {
                                    return Err(Error::TooManyBadRecords {
                                        count: self.skipped.len(),
                                        limit: me.max_skipped,
                                        records: self
                                            .skipped
                                            .iter()
                                            .map(|s| s.to_string())
                                            .collect::<Vec<_>>()
                                            .join("; "),
                                    }
                                    .into());
                                }
                            }
                            true
                        }
                        None => false,
                    };
                    if !learned {
                        s.fruitless += 1;
                    }
                    if phase == Phase::Map {
                        s.careful = true;
                    }
                    if s.fruitless >= me.max_failures {
                        return Err(Error::TaskFailed {
                            task: label(phase, i),
                            attempts: s.attempts,
                            last: s.last_failure.clone(),
                        }
                        .into());
                    }
                    let attempt = s.attempts;
                    let kind = self.with_state(&tasks[i], &states[i]);
                    let seq = self.publish(phase, &kind, attempt).await?;
                    by_seq.insert(seq, i);
                    states[i].attempts += 1;
                    states[i].unstarted_since = Some(Instant::now());
                }
                _ => {}
            }
        }
        bar.finish_and_clear();
        self.notify(JobEvent::PhaseFinished { phase });
        report.records_in = totals.records_in;
        report.bytes_in = totals.bytes_in;
        report.records_out = totals.records_out;
        report.bytes_out = totals.bytes_out;
        report.spills = totals.spills;
        report.keys = totals.keys;
        report.peak_worker_rss = totals.peak_rss;
        report.wall = started.elapsed();
        let commits = commits.into_iter().flatten().collect();
        Ok((report, commits))
    }

    /// Task `kind` with what the coordinator learned: records to skip, and
    /// whether to run carefully (say which record is being mapped).
    fn with_state(&self, kind: &WireKind, state: &TaskState) -> WireKind {
        match kind.clone() {
            WireKind::Map {
                task,
                split,
                reducers,
                memory,
                input,
                ..
            } => WireKind::Map {
                task,
                split,
                reducers,
                memory,
                skip: state.skip.clone(),
                careful: state.careful,
                input,
            },
            reduce => reduce,
        }
    }
}

fn progress_bar(on: bool, phase: Phase, len: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !on {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} tasks {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(match phase {
        Phase::Map => "map",
        Phase::Reduce => "reduce",
    });
    bar
}

/// The ids of the jobs whose stream, KV bucket or object store is on the
/// server: running jobs, and what a coordinator killed mid-job left (run
/// the same job again to resume it, or [`remove_job`]).
pub async fn jobs_on(cluster: &Cluster) -> Result<Vec<String>, DistError> {
    let mut names = cluster.js.stream_names();
    let mut ids = std::collections::BTreeSet::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| DistError::broker("cannot list the server's streams", e))?;
        let rest = name
            .strip_prefix("KV_")
            .or_else(|| name.strip_prefix("OBJ_"))
            .unwrap_or(&name);
        if let Some(id) = rest.strip_prefix(super::wire::STREAM_PREFIX) {
            ids.insert(id.to_string());
        }
    }
    Ok(ids.into_iter().collect())
}

/// Deletes job `id`'s stream, KV bucket and object store from the server
/// (nodes stop serving it); `Ok(false)` when none of them was there. For a
/// job nobody will resume: its committed work is lost with them.
pub async fn remove_job(cluster: &Cluster, id: &str) -> Result<bool, DistError> {
    check_id(id)?;
    let before = jobs_on(cluster).await?;
    if !before.iter().any(|j| j == id) {
        return Ok(false);
    }
    Infra::delete(cluster, id).await;
    if jobs_on(cluster).await?.iter().any(|j| j == id) {
        return Err(DistError::broker(
            format!("job {id} is still on the server"),
            "the broker did not delete all of its stream, bucket and object store",
        ));
    }
    Ok(true)
}

/// A job id: letters, digits and `-` (it becomes part of stream and subject
/// names, where `.`, `*`, `>` and spaces mean something else).
fn check_id(id: &str) -> Result<(), DistError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::Invalid(format!("job id {id:?}: use letters, digits and '-'")).into());
    }
    Ok(())
}

/// Uploads the share of `path` that map task `name`'s split reads: from the
/// byte before `start` (which tells whether a line starts at `start`) to
/// the end of the last line that starts before `end`. Returns the share's
/// offset in the file and its size.
///
/// The object store has no ranged reads (async-nats 0.46 gets whole
/// objects), so each split is its own object: a node downloads only what
/// it maps, and the coordinator reads each input byte once.
async fn upload_share(
    os: &ObjectStore,
    name: &str,
    path: &Path,
    start: u64,
    end: u64,
) -> Result<(u64, u64), DistError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source| DistError::Io {
        what: format!("cannot read input {}", path.display()),
        source,
    };
    let owned = path.to_path_buf();
    let (offset, stop) = tokio::task::spawn_blocking(move || share_of(&owned, start, end))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let mut share = file.take(stop - offset);
    let info = os
        .put(name, &mut share)
        .await
        .map_err(|e| DistError::broker(format!("cannot upload {name}"), e))?;
    // Shorter than the share: the file shrank while it was read.
    if info.size as u64 != stop - offset {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "uploaded {} bytes of {} (it changed since the job was planned)",
                info.size,
                stop - offset
            ),
        )));
    }
    Ok((offset, info.size as u64))
}

/// The byte range of `path` that the split `start..end` reads (see
/// [`upload_share`]).
fn share_of(path: &Path, start: u64, end: u64) -> std::io::Result<(u64, u64)> {
    use std::io::{BufRead, Seek};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if end > len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("it is {len} bytes, shorter than planned (a split ends at {end})"),
        ));
    }
    let offset = start.saturating_sub(1).min(len);
    if end >= len {
        return Ok((offset, len));
    }
    // The last line that starts before `end` ends at the first newline at
    // or after `end - 1`.
    let from = end.saturating_sub(1).max(offset);
    file.seek(std::io::SeekFrom::Start(from))?;
    let through = std::io::BufReader::new(file).skip_until(b'\n')? as u64;
    Ok((offset, (from + through).min(len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_input_that_shrank_since_planning_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"a b\nc d\n").unwrap();
        assert_eq!(share_of(&path, 0, 8).unwrap(), (0, 8));
        let err = share_of(&path, 4, 12).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("shorter than planned"), "{err}");
    }

    fn records(split: &Split) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        split
            .read(|pos, line| {
                out.push((pos, line.to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The law uploads rest on: a split read from a sparse copy holding
        /// only its share (at the share's offset) yields the same records,
        /// at the same positions, as the split read from the file.
        #[test]
        fn a_split_reads_the_same_records_from_its_share(
            text in "[ab\n]{0,120}",
            cuts in proptest::collection::vec(0u64..130, 0..5),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in");
            std::fs::write(&path, &text).unwrap();
            let len = text.len() as u64;
            let mut bounds: Vec<u64> = cuts.into_iter().map(|c| c.min(len)).collect();
            bounds.extend([0, len]);
            bounds.sort();
            bounds.dedup();
            for w in bounds.windows(2) {
                let (start, end) = (w[0], w[1]);
                let (offset, stop) = share_of(&path, start, end).unwrap();
                prop_assert!(offset <= start && stop <= len && offset <= stop);
                let copy = dir.path().join("copy");
                let mut f = std::fs::File::create(&copy).unwrap();
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
                std::io::Write::write_all(&mut f, &text.as_bytes()[offset as usize..stop as usize]).unwrap();
                drop(f);
                let original = Split::Lines { path: path.clone(), start, end };
                let shared = Split::Lines { path: copy, start, end };
                prop_assert_eq!(records(&original), records(&shared));
            }
        }
    }
}

#[cfg(test)]
mod key_tests {
    use super::{Key, parse_key};

    #[test]
    fn starts_and_failures_count_only_with_this_runs_nonce() {
        let me = "0badc0de";
        assert_eq!(
            parse_key("start.m.00003.0badc0de.a0.d1", me),
            Some(Key::Start('m', 3, 0))
        );
        assert_eq!(
            parse_key("fail.r.00001.0badc0de.a2.d1", me),
            Some(Key::Fail('r', 1))
        );
        // A killed run's late records.
        assert_eq!(parse_key("start.m.00003.12345678.a0.d1", me), None);
        assert_eq!(parse_key("fail.m.00003.12345678.a0.d1", me), None);
        assert_eq!(parse_key("fail.m.00003", me), None);
        // Commits are the job's, whichever run made them.
        assert_eq!(parse_key("commit.m.00003", me), Some(Key::Commit('m', 3)));
        assert_eq!(parse_key("reject.7", me), Some(Key::Reject("7")));
    }
}
