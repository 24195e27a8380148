//! The coordinator: splits, the job directory, the two phases over a pool,
//! retries, backups, skipped records, resuming.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkyard_pool::{Pool, PoolError, ShutdownMode};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::input::{Input, Split};
use crate::job::Job;
use crate::report::{PhaseReport, Report, SkippedRecord};
use crate::storage::{LocalStorage, Storage};
use crate::task::{
    Fault, Outcome, OutputFormat, STATS_FILE, TaskKind, TaskRequest, TaskResponse, TaskStats,
    cursor_path, map_attempt_name, map_task_name, part_name, reduce_marker, reduce_tmp,
};

/// The name of the job directory inside the output directory.
pub const JOB_DIR: &str = "_forkyard";

pub(crate) const MIN_AUTO_SPLIT: u64 = 4 << 20;
pub(crate) const MAX_AUTO_SPLIT: u64 = 32 << 20;
pub(crate) const AUTO_SPLITS: u64 = 8;

/// A phase of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Map tasks, one per split.
    Map,
    /// Reduce tasks, one per partition.
    Reduce,
}

/// What the engine is doing, as it does it: for an observer set with
/// [`MapReduce::on_event`] (a fault injector, a monitor, a log).
///
/// Worker pids come from the pool's own event stream, so an observer can
/// signal a worker from outside, as an operator (or the OOM killer) would:
/// the fault suite SIGKILLs and SIGSTOPs workers picked this way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobEvent {
    /// A phase begins: `tasks` tasks, of which `resumed` were committed by
    /// an earlier run and will not run again.
    PhaseStarted {
        /// The phase.
        phase: Phase,
        /// Its tasks.
        tasks: usize,
        /// Those already committed.
        resumed: usize,
    },
    /// A worker process is ready for tasks.
    WorkerReady {
        /// Its pid.
        pid: u32,
    },
    /// A worker process ended and was reaped: its pid is no longer its own.
    WorkerExited {
        /// Its pid.
        pid: u32,
    },
    /// An attempt of a task was handed to the pool.
    AttemptStarted {
        /// The phase.
        phase: Phase,
        /// The map task or reduce partition.
        task: u32,
        /// 0 for the first attempt.
        attempt: u32,
        /// Whether it is a backup of a straggler.
        backup: bool,
    },
    /// Every task of the phase has committed.
    PhaseFinished {
        /// The phase.
        phase: Phase,
    },
}

pub(crate) type CommandFactory = Arc<dyn Fn() -> Command + Send + Sync>;
pub(crate) type Observer = Arc<dyn Fn(&JobEvent) + Send + Sync>;

/// A job ready to run: the job, its input, where its output goes, and the
/// engine's settings. Made by [`MapReduce::new`].
#[must_use = "a MapReduce does nothing until .run() is awaited"]
pub struct MapReduce<J: Job> {
    pub(crate) job: J,
    pub(crate) input: Option<Box<dyn Input + Send + Sync>>,
    pub(crate) out_dir: Option<PathBuf>,
    pub(crate) workers: usize,
    pub(crate) reducers: u32,
    pub(crate) memory: u64,
    pub(crate) split_size: Option<u64>,
    pub(crate) task_timeout: Duration,
    pub(crate) max_failures: u32,
    pub(crate) max_skipped: usize,
    pub(crate) backups: bool,
    pub(crate) backup_after: Duration,
    pub(crate) format: OutputFormat,
    pub(crate) progress: bool,
    pub(crate) command: Option<CommandFactory>,
    pub(crate) faults: HashMap<(Phase, u32), Fault>,
    pub(crate) exit_after_map_commits: Option<usize>,
    pub(crate) observer: Option<Observer>,
}

impl<J: Job> std::fmt::Debug for MapReduce<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapReduce")
            .field("job", &J::name())
            .field("out_dir", &self.out_dir)
            .field("workers", &self.workers)
            .field("reducers", &self.reducers)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) job: String,
    pub(crate) params: Vec<u8>,
    pub(crate) reducers: u32,
    pub(crate) format: OutputFormat,
    pub(crate) splits: Vec<Split>,
    /// (path, length, modification time in ns) of every input file.
    pub(crate) files: Vec<(PathBuf, u64, i128)>,
}

impl<J: Job> MapReduce<J> {
    /// A job with default settings: as many workers as cores, 4 reducers,
    /// 64 MiB per map task's buffer, splits sized to the input (see
    /// [`MapReduce::split_size`]), workers self-exec'd.
    pub fn new(job: J) -> Self {
        MapReduce {
            job,
            input: None,
            out_dir: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            reducers: 4,
            memory: 64 << 20,
            split_size: None,
            task_timeout: Duration::from_secs(600),
            max_failures: 4,
            max_skipped: 10,
            backups: true,
            backup_after: Duration::from_millis(500),
            format: OutputFormat::Tsv,
            progress: false,
            command: None,
            faults: HashMap::new(),
            exit_after_map_commits: None,
            observer: None,
        }
    }

    /// Where the records come from.
    pub fn input(mut self, input: impl Input + Send + Sync + 'static) -> Self {
        self.input = Some(Box::new(input));
        self
    }

    /// The output directory: `part-00000`... and the job directory `_forkyard`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Worker processes.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Reduce partitions (output files).
    pub fn reducers(mut self, n: u32) -> Self {
        self.reducers = n;
        self
    }

    /// The memory bound of a map task's buffer, in bytes: over it, the buffer
    /// is sorted and spilled to disk.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// About how many input bytes one map task reads. By default, an
    /// input of known size is cut into about 8 splits (enough for dynamic
    /// distribution to balance a few workers), each between 4 and 32 MiB;
    /// otherwise splits are 32 MiB. Every split costs a sort of its distinct
    /// keys and one more run for each reducer to merge, so smaller is not
    /// cheaper.
    pub fn split_size(mut self, bytes: u64) -> Self {
        self.split_size = Some(bytes);
        self
    }

    /// How long one attempt of a task may run before its worker is killed
    /// and the task re-run (default 10 minutes).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// Failed attempts of one task that taught nothing about a bad record,
    /// after which the job fails (default 4).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// How many bad records a job may skip before it fails (default 10).
    pub fn max_skipped(mut self, n: usize) -> Self {
        self.max_skipped = n;
        self
    }

    /// Whether stragglers get backup attempts near the end of a phase
    /// (default yes), and after how long a task counts as one at the earliest
    /// (default 500 ms; it is also at least twice the phase's median task).
    pub fn backups(mut self, on: bool, after: Duration) -> Self {
        self.backups = on;
        self.backup_after = after;
        self
    }

    /// The output format (default `key<TAB>value`).
    pub fn format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }

    /// Whether to draw progress bars on stderr (only when it is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// How to start a worker, instead of this very binary: for test binaries
    /// whose `main` is not theirs. The command must end up in
    /// [`Workers::serve`](crate::Workers::serve) for this job.
    pub fn worker_command(mut self, make: impl Fn() -> Command + Send + Sync + 'static) -> Self {
        self.command = Some(Arc::new(make));
        self
    }

    /// Injects `fault` into the first attempt of task `task` of `phase`: the
    /// worker strikes itself at a chosen record or key, for a narrated demo
    /// with a fixed story. The fault suite and the crash tests strike from
    /// outside instead (see [`MapReduce::on_event`]).
    pub fn inject(mut self, phase: Phase, task: u32, fault: Fault) -> Self {
        self.faults.insert((phase, task), fault);
        self
    }

    /// Calls `observer` with each [`JobEvent`]: phases, attempts, and the
    /// pids of worker processes as they become ready and exit. It runs on
    /// the coordinator's runtime: it must return quickly and never block.
    pub fn on_event(mut self, observer: impl Fn(&JobEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The coordinator SIGKILLs itself once this many map tasks have
    /// committed: for testing resumption.
    #[doc(hidden)]
    pub fn exit_after_map_commits(mut self, n: usize) -> Self {
        self.exit_after_map_commits = Some(n);
        self
    }

    /// Runs the job to the end (or resumes it, if its output directory holds
    /// an unfinished run of the same job) and returns its report.
    pub async fn run(self) -> Result<Report, Error> {
        let started = Instant::now();
        if self.workers == 0 {
            return Err(Error::Invalid("workers must be at least 1".into()));
        }
        let Plan {
            splits,
            params,
            out_dir,
            job_dir,
            lock: _lock,
        } = self.plan()?;
        let storage = LocalStorage::new(&job_dir);

        let mut report = Report {
            job: J::name().to_string(),
            workers: self.workers,
            reducers: self.reducers,
            memory: self.memory,
            ..Report::default()
        };
        let mut pool: Option<Pool<TaskRequest, TaskResponse>> = None;
        let ctx = Ctx {
            me: &self,
            job_name: J::name().to_string(),
            params,
            job_dir: job_dir.clone(),
            out_dir: out_dir.clone(),
            forwarders: std::sync::Mutex::new(Vec::new()),
        };

        let all_reduced = (0..self.reducers).all(|r| reduce_marker(&job_dir, r).exists());
        let result = async {
            // Map.
            let map_tasks: Vec<TaskKind> = splits
                .iter()
                .enumerate()
                .map(|(i, split)| TaskKind::Map {
                    task: i as u32,
                    split: split.clone(),
                    reducers: self.reducers,
                    memory: self.memory,
                    skip: Vec::new(),
                    careful: false,
                })
                .collect();
            let map_done: Vec<Option<TaskStats>> = (0..splits.len() as u32)
                .map(|i| {
                    if all_reduced || storage.is_committed(&map_task_name(i)).unwrap_or(false) {
                        Some(read_stats(
                            &job_dir
                                .join("committed")
                                .join(map_task_name(i))
                                .join(STATS_FILE),
                        ))
                    } else {
                        None
                    }
                })
                .collect();
            report.map = ctx
                .phase(
                    Phase::Map,
                    map_tasks,
                    map_done,
                    &mut pool,
                    &mut report.skipped,
                )
                .await?;
            // Reduce.
            let reduce_tasks: Vec<TaskKind> = (0..self.reducers)
                .map(|r| TaskKind::Reduce {
                    partition: r,
                    maps: splits.len() as u32,
                    out_dir: out_dir.clone(),
                    format: self.format,
                })
                .collect();
            let reduce_done: Vec<Option<TaskStats>> = (0..self.reducers)
                .map(|r| {
                    let m = reduce_marker(&job_dir, r);
                    m.exists().then(|| read_stats(&m))
                })
                .collect();
            report.reduce = ctx
                .phase(
                    Phase::Reduce,
                    reduce_tasks,
                    reduce_done,
                    &mut pool,
                    &mut report.skipped,
                )
                .await?;
            Ok::<(), Error>(())
        }
        .await;
        if let Some(pool) = pool.take() {
            pool.shutdown(ShutdownMode::Cancel {
                grace: Duration::from_millis(200),
            })
            .await;
        }
        ctx.drain_forwarders().await;
        result?;
        // The output is complete: the runs are no longer needed. Keep the
        // small commit records, so a re-run finds the job done.
        let _ = storage.prune(STATS_FILE);
        for dir in ["staging", "scratch", "cursors"] {
            let _ = std::fs::remove_dir_all(job_dir.join(dir));
        }
        report.wall = started.elapsed();
        let _ = std::fs::write(job_dir.join("report.json"), report.to_json());
        Ok(report)
    }

    /// [`MapReduce::run`] on a runtime of its own.
    pub fn run_blocking(self) -> Result<Report, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start a tokio runtime", e))?;
        rt.block_on(self.run())
    }
}

/// What both engines derive from a job before they run it: the splits, the
/// job's encoded parameters, and the output and job directories (created,
/// checked against the job's identity, and locked).
pub(crate) struct Plan {
    pub(crate) splits: Vec<Split>,
    pub(crate) params: Vec<u8>,
    /// Absolute.
    pub(crate) out_dir: PathBuf,
    /// `out_dir/_forkyard`.
    pub(crate) job_dir: PathBuf,
    /// Held while the job runs: a second coordinator on the same output
    /// directory is refused ([`Error::Busy`]).
    pub(crate) lock: File,
}

impl<J: Job> MapReduce<J> {
    /// The one planning path of the local engine ([`MapReduce::run`]) and
    /// the distributed one (`run_on`), so that they cannot drift: the same
    /// job over the same input is cut into the same splits, has the same
    /// identity, and is refused or resumed in the same cases.
    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        if self.reducers == 0 {
            return Err(Error::Invalid("reducers must be at least 1".into()));
        }
        let input = self.input.as_ref().ok_or(Error::NoInput)?;
        let out_dir = self
            .out_dir
            .clone()
            .ok_or_else(|| Error::Invalid("no output directory".into()))?;
        let split_size = self.split_size.unwrap_or_else(|| {
            // Not from the worker count: the splits are part of the job's
            // identity, and a job resumed with more workers is the same job.
            input.size_hint().map_or(MAX_AUTO_SPLIT, |total| {
                (total / AUTO_SPLITS).clamp(MIN_AUTO_SPLIT, MAX_AUTO_SPLIT)
            })
        });
        let splits = input.splits(split_size)?;
        let params = postcard::to_allocvec(&self.job)
            .map_err(|e| Error::Invalid(format!("cannot encode the job: {e}")))?;
        let identity = Identity {
            job: J::name().to_string(),
            params: params.clone(),
            reducers: self.reducers,
            format: self.format,
            files: file_facts(&splits),
            splits: splits.clone(),
        };
        let (out_dir, job_dir, lock) = prepare_dirs(&out_dir, &identity)?;
        Ok(Plan {
            splits,
            params,
            out_dir,
            job_dir,
            lock,
        })
    }
}

/// The pool both engines run tasks on (the local coordinator's, and each
/// node's): `workers` processes, one task each at a time, no retries of
/// its own (the engine must see every failure to count it, switch to
/// careful mode and find bad records), started with `command` or as this
/// very binary.
pub(crate) fn task_pool(
    workers: usize,
    task_timeout: Duration,
    command: Option<&CommandFactory>,
) -> Result<forkyard_pool::Builder<TaskRequest, TaskResponse>, forkyard_pool::BuildError> {
    let builder = Pool::<TaskRequest, TaskResponse>::builder()
        .workers(workers)
        .max_in_flight_per_worker(1)
        .queue_capacity(4 * workers + 16)
        .task_timeout(task_timeout)
        .retries(0)
        .stop_grace(Duration::from_millis(200));
    match command {
        Some(make) => {
            let make = make.clone();
            Ok(builder.command(move || {
                let mut cmd = make();
                cmd.env(forkyard_pool::worker::WORKER_ENV, "1");
                cmd
            }))
        }
        None => builder.self_exec(std::iter::empty::<&str>()),
    }
}

pub(crate) fn read_stats(path: &Path) -> TaskStats {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(crate) fn file_facts(splits: &[Split]) -> Vec<(PathBuf, u64, i128)> {
    let mut facts: Vec<(PathBuf, u64, i128)> = Vec::new();
    for s in splits {
        if let Split::Lines { path, .. } = s
            && !facts.iter().any(|f| &f.0 == path)
        {
            let meta = std::fs::metadata(path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            facts.push((path.clone(), len, mtime));
        }
    }
    facts
}

/// Creates (or reopens) the output and job directories, locks the job
/// directory, and checks it belongs to this job.
pub(crate) fn prepare_dirs(
    out_dir: &Path,
    identity: &Identity,
) -> Result<(PathBuf, PathBuf, File), Error> {
    let out_err = |source| Error::OutputDir {
        path: out_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out_dir).map_err(out_err)?;
    let out_dir = std::path::absolute(out_dir).map_err(out_err)?;
    let job_dir = out_dir.join(JOB_DIR);
    let record = job_dir.join("job.json");
    if !record.exists() {
        let has_parts = std::fs::read_dir(&out_dir)
            .map_err(out_err)?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("part-"));
        if has_parts {
            return Err(Error::ForeignOutput {
                path: out_dir,
                why: "it has part files but no forkyard job record".into(),
            });
        }
    }
    std::fs::create_dir_all(&job_dir).map_err(out_err)?;
    for dir in ["reduce", "committed"] {
        std::fs::create_dir_all(job_dir.join(dir)).map_err(out_err)?;
    }
    let lock = File::create(job_dir.join("lock")).map_err(out_err)?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(Error::Busy { path: out_dir });
    }
    match std::fs::read(&record) {
        Ok(bytes) => {
            let theirs: Option<Identity> = serde_json::from_slice(&bytes).ok();
            if theirs.as_ref() != Some(identity) {
                let why = match theirs {
                    None => "its job record is unreadable".to_string(),
                    Some(t) if t.job != identity.job => format!("job {}", t.job),
                    Some(t) if t.files != identity.files => {
                        "the same job over other or changed inputs".into()
                    }
                    Some(_) => "the same job with other settings".into(),
                };
                return Err(Error::ForeignOutput { path: out_dir, why });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = job_dir.join("job.json.tmp");
            let bytes =
                serde_json::to_vec_pretty(identity).map_err(|e| Error::Invalid(e.to_string()))?;
            std::fs::write(&tmp, bytes).map_err(out_err)?;
            std::fs::rename(&tmp, &record).map_err(out_err)?;
        }
        Err(e) => return Err(out_err(e)),
    }
    // What a killed run left half-written.
    for dir in ["staging", "scratch", "cursors"] {
        let _ = std::fs::remove_dir_all(job_dir.join(dir));
    }
    sweep_tmp(&out_dir);
    sweep_tmp(&job_dir.join("reduce"));
    Ok((out_dir, job_dir, lock))
}

/// Removes the temporary files attempts left in `dir`.
pub(crate) fn sweep_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

struct Ctx<'a, J: Job> {
    me: &'a MapReduce<J>,
    job_name: String,
    params: Vec<u8>,
    job_dir: PathBuf,
    out_dir: PathBuf,
    /// Tasks passing the pools' worker events on to the observer.
    forwarders: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct TaskState {
    done: bool,
    attempts: u32,
    running: u32,
    started: Option<Instant>,
    backup: bool,
    careful: bool,
    skip: Vec<u64>,
    seen: HashMap<u64, u32>,
    fruitless: u32,
    last_failure: String,
}

type AttemptResult = (usize, u32, bool, bool, Result<TaskResponse, PoolError>);

impl<J: Job> Ctx<'_, J> {
    fn notify(&self, event: JobEvent) {
        if let Some(observer) = &self.me.observer {
            observer(&event);
        }
    }

    /// Passes a pool's worker events to the observer, from before its first
    /// worker spawns until the pool is gone.
    fn forward_worker_events(&self, mut events: forkyard_pool::events::Subscription) {
        let Some(observer) = self.me.observer.clone() else {
            return;
        };
        let task = tokio::spawn(async move {
            use forkyard_pool::events::PoolEvent;
            let mut pids: HashMap<u64, u32> = HashMap::new();
            while let Some(event) = events.recv().await {
                match event {
                    PoolEvent::WorkerSpawned { worker, pid, .. } => {
                        pids.insert(worker, pid);
                    }
                    PoolEvent::WorkerReady { worker, .. } => {
                        if let Some(&pid) = pids.get(&worker) {
                            observer(&JobEvent::WorkerReady { pid });
                        }
                    }
                    PoolEvent::WorkerExited { worker, .. } => {
                        if let Some(pid) = pids.remove(&worker) {
                            observer(&JobEvent::WorkerExited { pid });
                        }
                    }
                    _ => {}
                }
            }
        });
        if let Ok(mut tasks) = self.forwarders.lock() {
            tasks.push(task);
        }
    }

    /// Waits for the forwarders of pools that are shut down to pass on their
    /// last events (a worker's exit), briefly; then drops them.
    async fn drain_forwarders(&self) {
        let tasks = match self.forwarders.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => return,
        };
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    async fn pool(
        &self,
        pool: &mut Option<Pool<TaskRequest, TaskResponse>>,
    ) -> Result<Pool<TaskRequest, TaskResponse>, Error> {
        if let Some(p) = pool {
            return Ok(p.clone());
        }
        let me = self.me;
        let builder =
            task_pool(me.workers, me.task_timeout, me.command.as_ref()).map_err(Error::Pool)?;
        if me.observer.is_some() {
            self.forward_worker_events(builder.subscribe());
        }
        let p = builder.build().await.map_err(Error::Pool)?;
        *pool = Some(p.clone());
        Ok(p)
    }

    fn request(
        &self,
        kind: &TaskKind,
        state: &TaskState,
        attempt: u32,
        fault: Option<Fault>,
    ) -> TaskRequest {
        let kind = match kind.clone() {
            TaskKind::Map {
                task,
                split,
                reducers,
                memory,
                ..
            } => TaskKind::Map {
                task,
                split,
                reducers,
                memory,
                skip: state.skip.clone(),
                careful: state.careful,
            },
            reduce => reduce,
        };
        TaskRequest {
            job_name: self.job_name.clone(),
            job: self.params.clone(),
            job_dir: self.job_dir.clone(),
            attempt,
            fault,
            kind,
        }
    }

    async fn phase(
        &self,
        phase: Phase,
        tasks: Vec<TaskKind>,
        done: Vec<Option<TaskStats>>,
        pool_slot: &mut Option<Pool<TaskRequest, TaskResponse>>,
        skipped: &mut Vec<SkippedRecord>,
    ) -> Result<PhaseReport, Error> {
        let started = Instant::now();
        let me = self.me;
        let mut report = PhaseReport {
            tasks: tasks.len(),
            ..PhaseReport::default()
        };
        let mut totals = TaskStats::default();
        let mut states: Vec<TaskState> = (0..tasks.len()).map(|_| TaskState::default()).collect();
        let mut pending = VecDeque::new();
        for (i, d) in done.iter().enumerate() {
            match d {
                Some(stats) => {
                    states[i].done = true;
                    report.resumed += 1;
                    totals.add(stats);
                    report.resumed_bytes_in += stats.bytes_in;
                }
                None => pending.push_back(i),
            }
        }
        let mut remaining = pending.len();
        self.notify(JobEvent::PhaseStarted {
            phase,
            tasks: tasks.len(),
            resumed: report.resumed,
        });
        let bar = progress_bar(
            me.progress,
            phase,
            tasks.len() as u64,
            report.resumed as u64,
        );
        let mut durations: Vec<Duration> = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut in_flight = 0usize;
        let mut map_commits = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pool = if remaining > 0 {
            Some(self.pool(pool_slot).await?)
        } else {
            None
        };

        let launch = |i: usize,
                      backup: bool,
                      state: &mut TaskState,
                      running: &mut FuturesUnordered<_>,
                      report: &mut PhaseReport| {
            let attempt = state.attempts;
            state.attempts += 1;
            state.running += 1;
            if state.running == 1 {
                state.started = Some(Instant::now());
            }
            report.attempts += 1;
            let fault = if attempt == 0 {
                me.faults.get(&(phase, i as u32)).copied()
            } else {
                None
            };
            let req = self.request(&tasks[i], state, attempt, fault);
            self.notify(JobEvent::AttemptStarted {
                phase,
                task: i as u32,
                attempt,
                backup,
            });
            let careful = state.careful;
            let pool = pool.clone();
            running.push(async move {
                let result = match pool {
                    Some(p) => p.call(req).await,
                    None => Err(PoolError::ShuttingDown),
                };
                (i, attempt, backup, careful, result) as AttemptResult
            });
        };

        while remaining > 0 {
            while in_flight < me.workers
                && let Some(i) = pending.pop_front()
            {
                if states[i].done {
                    continue;
                }
                launch(i, false, &mut states[i], &mut running, &mut report);
                in_flight += 1;
            }
            tokio::select! {
                Some((i, attempt, backup, careful, result)) = running.next() => {
                    in_flight -= 1;
                    let state = &mut states[i];
                    state.running -= 1;
                    let failure = match result {
                        Ok(TaskResponse { outcome: Outcome::Committed | Outcome::Lost, stats }) => {
                            if !state.done {
                                state.done = true;
                                remaining -= 1;
                                if let Some(t) = state.started {
                                    durations.push(t.elapsed());
                                }
                                // The committed record is the truth (a Lost
                                // attempt's own counters are as good: outputs are deterministic).
                                totals.add(&stats);
                                if state.backup {
                                    if backup { report.backup_wins += 1 } else { report.original_wins += 1 }
                                }
                                bar.inc(1);
                                bar.set_message(format!(
                                    "{:.1} MB in, {:.1} MB/s",
                                    totals.bytes_in as f64 / 1e6,
                                    totals.bytes_in as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3)
                                ));
                                if phase == Phase::Map {
                                    map_commits += 1;
                                    if me.exit_after_map_commits == Some(map_commits) {
                                        use rustix::process::{Signal, getpid, kill_process};
                                        let _ = kill_process(getpid(), Signal::KILL);
                                    }
                                }
                            }
                            None
                        }
                        Ok(TaskResponse { outcome: Outcome::BadRecord { position, message }, .. }) => {
                            Some((Some(position), format!("the map function panicked: {message}")))
                        }
                        Err(e @ (PoolError::WorkerCrashed { .. } | PoolError::TimedOut { .. })) => {
                            let position = if careful && phase == Phase::Map {
                                read_cursor(&cursor_path(&self.job_dir, i as u32, attempt))
                            } else {
                                None
                            };
                            let msg = match &e {
                                PoolError::TimedOut { after } => format!("the map function hung (timed out after {after:?})"),
                                other => other.to_string(),
                            };
                            Some((position, msg))
                        }
                        Err(e @ (PoolError::ShuttingDown | PoolError::Unavailable(_))) => {
                            return Err(Error::TaskFailed {
                                task: task_label(phase, i),
                                attempts: state.attempts,
                                last: e.to_string(),
                            });
                        }
                        Err(e) => Some((None, e.to_string())),
                    };
                    if let Some((position, message)) = failure {
                        match phase {
                            Phase::Map => {
                                let _ = LocalStorage::new(&self.job_dir).discard(&map_attempt_name(i as u32, attempt));
                            }
                            Phase::Reduce => {
                                let _ = std::fs::remove_file(reduce_tmp(&self.out_dir, i as u32, attempt));
                            }
                        }
                        if state.done {
                            continue;
                        }
                        report.retries += 1;
                        if report.failures.len() < 20 {
                            report.failures.push(format!("{} attempt {attempt}: {message}", task_label(phase, i)));
                        }
                        state.last_failure = message.clone();
                        let learned = match position {
                            Some(p) => {
                                let seen = state.seen.entry(p).or_insert(0);
                                *seen += 1;
                                if *seen == 2 {
                                    state.skip.push(p);
                                    skipped.push(SkippedRecord {
                                        task: i as u32,
                                        source: split_of(&tasks[i]).source(),
                                        position: p,
                                        message: message.clone(),
                                    });
                                    if skipped.len() > me.max_skipped {
                                        return Err(Error::TooManyBadRecords {
                                            count: skipped.len(),
                                            limit: me.max_skipped,
                                            records: skipped.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "),
                                        });
                                    }
                                }
                                true
                            }
                            None => false,
                        };
                        if !learned {
                            state.fruitless += 1;
                        }
                        if phase == Phase::Map {
                            // From now on say which record is being mapped, so a
                            // crash or a hang can be pinned on one.
                            state.careful = true;
                        }
                        if state.fruitless >= me.max_failures {
                            return Err(Error::TaskFailed {
                                task: task_label(phase, i),
                                attempts: state.attempts,
                                last: state.last_failure.clone(),
                            });
                        }
                        if state.running == 0 {
                            pending.push_front(i);
                        }
                    }
                }
                _ = tick.tick() => {
                    if me.backups && pending.is_empty() {
                        let mut sorted = durations.clone();
                        sorted.sort();
                        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
                        let threshold = me.backup_after.max(median * 2);
                        for (i, s) in states.iter_mut().enumerate() {
                            if !s.done && !s.backup && s.running == 1 && s.started.is_some_and(|t| t.elapsed() > threshold) {
                                s.backup = true;
                                report.backups += 1;
                                launch(i, true, s, &mut running, &mut report);
                                in_flight += 1;
                            }
                        }
                    }
                }
            }
        }
        bar.finish_and_clear();
        self.notify(JobEvent::PhaseFinished { phase });
        if in_flight > 0 {
            // Attempts that lost to a backup still hold workers (a stopped
            // one holds its worker until the task timeout): the pool cannot
            // cancel a running task, so end this pool and let the next phase
            // start a fresh one.
            drop(running);
            if let Some(pool) = pool_slot.take() {
                pool.shutdown(ShutdownMode::Cancel {
                    grace: Duration::ZERO,
                })
                .await;
            }
            if phase == Phase::Reduce {
                sweep_tmp(&self.out_dir);
            }
        }
        report.records_in = totals.records_in;
        report.bytes_in = totals.bytes_in;
        report.records_out = totals.records_out;
        report.bytes_out = totals.bytes_out;
        report.spills = totals.spills;
        report.keys = totals.keys;
        report.peak_worker_rss = totals.peak_rss;
        report.wall = started.elapsed();
        Ok(report)
    }
}

fn split_of(kind: &TaskKind) -> Split {
    match kind {
        TaskKind::Map { split, .. } => split.clone(),
        TaskKind::Reduce { partition, .. } => Split::Records {
            label: part_name(*partition),
            records: Vec::new(),
        },
    }
}

fn task_label(phase: Phase, i: usize) -> String {
    match phase {
        Phase::Map => format!("map task {i}"),
        Phase::Reduce => format!("reduce partition {i}"),
    }
}

fn read_cursor(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let bytes: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn progress_bar(on: bool, phase: Phase, len: u64, done: u64) -> ProgressBar {
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
    bar.set_position(done);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            job: "j".into(),
            params: vec![],
            reducers: 2,
            format: OutputFormat::Tsv,
            splits: vec![],
            files: vec![],
        }
    }

    #[test]
    fn a_second_coordinator_on_the_same_output_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = prepare_dirs(&out, &identity()).unwrap();
        let second = prepare_dirs(&out, &identity()).unwrap_err();
        assert!(matches!(second, Error::Busy { .. }), "{second}");
        drop(first);
        prepare_dirs(&out, &identity()).unwrap();
    }

    #[test]
    fn another_jobs_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        drop(prepare_dirs(&out, &identity()).unwrap());
        let other = Identity {
            job: "k".into(),
            ..identity()
        };
        let err = prepare_dirs(&out, &other).unwrap_err();
        assert!(err.to_string().contains("job j"), "{err}");
    }
}
