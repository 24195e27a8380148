//! Tasks: what the coordinator asks a worker, what the worker does, and what
//! it answers. A task is "run map task i of this job" or "run reduce
//! partition r": everything a worker needs travels in the request, so the
//! same request could be sent to a worker on another machine.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;
use std::hash::Hash;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::buffer::{Buffer, Combiner, fold};
use crate::input::Split;
use crate::job::{Emit, Field, Job};
use crate::run::{RunReader, RunWriter, Source, merge, merge_chunk};
use crate::storage::{LocalStorage, Storage, rename_no_replace};

/// How output lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OutputFormat {
    /// `key<TAB>value` lines (see [`Field`]).
    #[default]
    Tsv,
    /// `{"key":...,"value":...}` lines.
    JsonLines,
}

/// A fault to inject into one attempt of a task ([`MapReduce::inject`]):
/// the worker does it to itself when it reaches the given record (map) or key
/// (reduce), for a demo with a fixed story. Faults from outside go through
/// [`MapReduce::on_event`].
///
/// [`MapReduce::inject`]: crate::MapReduce::inject
/// [`MapReduce::on_event`]: crate::MapReduce::on_event
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Fault {
    /// SIGKILL itself.
    Kill {
        /// After this many records (map) or keys (reduce).
        at: u64,
    },
    /// SIGSTOP itself: a straggler that never finishes on its own.
    Stop {
        /// After this many records (map) or keys (reduce).
        at: u64,
    },
}

impl Fault {
    fn at(self) -> u64 {
        match self {
            Fault::Kill { at } | Fault::Stop { at } => at,
        }
    }

    fn strike(self) {
        use rustix::process::{Signal, getpid, kill_process};
        let sig = match self {
            Fault::Kill { .. } => Signal::KILL,
            Fault::Stop { .. } => Signal::STOP,
        };
        // Our own pid: it cannot be recycled while we run.
        let _ = kill_process(getpid(), sig);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRequest {
    pub(crate) job_name: String,
    pub(crate) job: Vec<u8>,
    pub(crate) job_dir: PathBuf,
    pub(crate) attempt: u32,
    pub(crate) fault: Option<Fault>,
    pub(crate) kind: TaskKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TaskKind {
    Map {
        task: u32,
        split: Split,
        reducers: u32,
        memory: u64,
        skip: Vec<u64>,
        careful: bool,
    },
    Reduce {
        partition: u32,
        maps: u32,
        out_dir: PathBuf,
        format: OutputFormat,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskResponse {
    pub(crate) outcome: Outcome,
    pub(crate) stats: TaskStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// This attempt's output is the task's output.
    Committed,
    /// Another attempt committed first; this one's output was dropped.
    Lost,
    /// The map function panicked on the record at this position.
    BadRecord { position: u64, message: String },
}

/// Counters of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskStats {
    pub(crate) records_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) records_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) spills: u64,
    pub(crate) skipped: u64,
    pub(crate) keys: u64,
    /// The worker's peak resident memory so far (VmHWM), in bytes.
    #[serde(default)]
    pub(crate) peak_rss: u64,
}

impl TaskStats {
    pub(crate) fn add(&mut self, o: &TaskStats) {
        self.records_in += o.records_in;
        self.bytes_in += o.bytes_in;
        self.records_out += o.records_out;
        self.bytes_out += o.bytes_out;
        self.spills += o.spills;
        self.skipped += o.skipped;
        self.keys += o.keys;
        self.peak_rss = self.peak_rss.max(o.peak_rss);
    }
}

pub(crate) fn map_task_name(task: u32) -> String {
    format!("m-{task:05}")
}
pub(crate) fn map_attempt_name(task: u32, attempt: u32) -> String {
    format!("m-{task:05}.a{attempt}")
}
pub(crate) fn part_name(partition: u32) -> String {
    format!("part-{partition:05}")
}
/// Where a careful attempt writes the position of the record it is on.
pub(crate) fn cursor_path(job_dir: &Path, task: u32, attempt: u32) -> PathBuf {
    job_dir
        .join("cursors")
        .join(map_attempt_name(task, attempt))
}
pub(crate) fn reduce_marker(job_dir: &Path, partition: u32) -> PathBuf {
    job_dir
        .join("reduce")
        .join(format!("r-{partition:05}.json"))
}
/// Where attempt `attempt` of reduce partition `partition` writes before it commits.
pub(crate) fn reduce_tmp(out_dir: &Path, partition: u32, attempt: u32) -> PathBuf {
    out_dir.join(format!(".{}.a{attempt}.tmp", part_name(partition)))
}
pub(crate) const STATS_FILE: &str = "stats.json";

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Runs one task of job `J` in this (worker) process.
pub(crate) fn run_task<J: Job>(req: &TaskRequest) -> Result<TaskResponse, String> {
    let job: J = postcard::from_bytes(&req.job).map_err(|e| err("cannot decode the job", e))?;
    match &req.kind {
        TaskKind::Map {
            task,
            split,
            reducers,
            memory,
            skip,
            careful,
        } => run_map(
            &job,
            req,
            MapArgs {
                task: *task,
                split,
                reducers: *reducers,
                memory: *memory,
                skip,
                careful: *careful,
            },
        ),
        TaskKind::Reduce {
            partition,
            maps,
            out_dir,
            format,
        } => run_reduce(&job, req, *partition, *maps, out_dir, *format),
    }
}

/// The buffer of this worker's last map task, kept for the next one (see
/// [`Buffer`]): a `Buffer<J::Key, J::Value>`.
static KEPT: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

/// The buffer this worker kept from its last map task, if it has the same
/// types and reducers and its keys take at most half the memory bound; or a
/// new one.
fn take_buffer<K, V>(reducers: u32, memory: u64) -> Buffer<K, V>
where
    K: Hash + Eq + Serialize + Send + 'static,
    V: Send + 'static,
{
    let kept = KEPT.lock().ok().and_then(|mut kept| kept.take());
    match kept.and_then(|b| b.downcast::<Buffer<K, V>>().ok()) {
        Some(mut buffer) if buffer.reducers == reducers => {
            if buffer.bytes as u64 > memory / 2 {
                buffer.clear();
            }
            buffer.emitted = 0;
            *buffer
        }
        _ => Buffer::new(reducers),
    }
}

fn keep_buffer<K: Send + 'static, V: Send + 'static>(buffer: Buffer<K, V>) {
    if let Ok(mut kept) = KEPT.lock() {
        *kept = Some(Box::new(buffer));
    }
}

struct MapArgs<'a> {
    task: u32,
    split: &'a Split,
    reducers: u32,
    memory: u64,
    skip: &'a [u64],
    careful: bool,
}

fn run_map<J: Job>(job: &J, req: &TaskRequest, args: MapArgs<'_>) -> Result<TaskResponse, String> {
    let storage = LocalStorage::new(&req.job_dir);
    let attempt = map_attempt_name(args.task, req.attempt);
    let scratch_root = req.job_dir.join("scratch");
    std::fs::create_dir_all(&scratch_root).map_err(|e| err("cannot create the scratch dir", e))?;
    let scratch = tempfile::Builder::new()
        .prefix(&attempt)
        .tempdir_in(&scratch_root)
        .map_err(|e| err("cannot create a scratch dir", e))?;
    let cursor = if args.careful {
        let path = cursor_path(&req.job_dir, args.task, req.attempt);
        std::fs::create_dir_all(path.parent().unwrap_or(&req.job_dir))
            .map_err(|e| err("cannot create the cursor dir", e))?;
        Some(File::create(&path).map_err(|e| err("cannot create the cursor", e))?)
    } else {
        None
    };
    let skip: HashSet<u64> = args.skip.iter().copied().collect();
    let combine_fn = |k: &J::Key, acc: &mut J::Value, v: J::Value| job.combine(k, acc, v);
    let combine: Option<Combiner<'_, J::Key, J::Value>> =
        if J::COMBINES { Some(&combine_fn) } else { None };

    let mut buffer = take_buffer::<J::Key, J::Value>(args.reducers, args.memory);
    let mut stats = TaskStats::default();
    let mut spills: Vec<Vec<PathBuf>> = Vec::new();
    let position = Cell::new(0u64);

    let spill = |buffer: &mut Buffer<J::Key, J::Value>,
                 spills: &mut Vec<Vec<PathBuf>>|
     -> io::Result<()> {
        let n = spills.len();
        let mut paths = Vec::new();
        for (r, part) in buffer.drain_sorted().into_iter().enumerate() {
            let path = scratch.path().join(format!("spill-{n}-{r}"));
            let mut w = RunWriter::new(BufWriter::with_capacity(256 << 10, File::create(&path)?));
            for (k, v) in &part {
                w.write(k, v.as_slice())?;
            }
            w.finish()?;
            paths.push(path);
        }
        spills.push(paths);
        Ok(())
    };

    let read = catch_unwind(AssertUnwindSafe(|| {
        args.split.read::<io::Error>(|pos, record| {
            if skip.contains(&pos) {
                stats.skipped += 1;
                return Ok(());
            }
            if let Some(cursor) = &cursor {
                cursor.write_at(&pos.to_le_bytes(), 0)?;
            }
            position.set(pos);
            if let Some(fault) = req.fault
                && fault.at() == stats.records_in
            {
                fault.strike();
            }
            stats.records_in += 1;
            stats.bytes_in += record.len() as u64 + 1;
            // Made here, not captured: a constant at the call, so that once
            // `map` and `emit` are inlined the combiner is called directly
            // (and inlined), not through the `dyn Fn`.
            let combine: Option<Combiner<'_, J::Key, J::Value>> =
                if J::COMBINES { Some(&combine_fn) } else { None };
            job.map(
                record,
                &mut Emit {
                    buffer: &mut buffer,
                    combine,
                },
            );
            if buffer.full(args.memory) {
                spill(&mut buffer, &mut spills)?;
                stats.spills += 1;
            }
            Ok(())
        })
    }));
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(err(&format!("cannot read {}", args.split.source()), e)),
        Err(payload) => {
            return Ok(TaskResponse {
                outcome: Outcome::BadRecord {
                    position: position.get(),
                    message: forkyard_child::panic_message(&*payload),
                },
                stats,
            });
        }
    }
    stats.records_out = buffer.emitted;

    let write_err = |e: io::Error| err("cannot write map output", e);
    if spills.is_empty() {
        buffer.write_sorted(|r, part| {
            let mut w = RunWriter::new(
                storage
                    .create(&attempt, &part_name(r as u32))
                    .map_err(write_err)?,
            );
            for (_, k, v) in part {
                w.write(*k, v).map_err(write_err)?;
            }
            stats.bytes_out += w.bytes;
            w.finish().map_err(write_err)?;
            Ok::<(), String>(())
        })?;
    } else {
        // What is still in memory joins the merge as one more (sorted) source.
        let mut in_memory = buffer.drain_sorted().into_iter();
        for r in 0..args.reducers as usize {
            let mut sources = Vec::with_capacity(spills.len() + 1);
            let chunk = merge_chunk(spills.len());
            for s in &spills {
                let f = File::open(&s[r]).map_err(write_err)?;
                sources.push(Source::Run(RunReader::with_chunk(Box::new(f), chunk)));
            }
            if let Some(part) = in_memory.next() {
                sources.push(Source::Memory(part.into_iter()));
            }
            let mut w = RunWriter::new(
                storage
                    .create(&attempt, &part_name(r as u32))
                    .map_err(write_err)?,
            );
            merge(sources, |k, v| match combine {
                Some(combine) if v.len() > 1 => w.write(&k, fold(combine, &k, v).as_slice()),
                _ => w.write(&k, &v),
            })
            .map_err(|e| err("cannot merge spills", e))?;
            stats.bytes_out += w.bytes;
            w.finish().map_err(write_err)?;
        }
    }
    drop(scratch);
    keep_buffer(buffer);
    stats.peak_rss = peak_rss();
    let mut w = storage.create(&attempt, STATS_FILE).map_err(write_err)?;
    serde_json::to_writer(&mut w, &stats).map_err(|e| err("cannot write stats", e))?;
    w.flush().map_err(write_err)?;
    drop(w);
    let won = storage
        .commit(&attempt, &map_task_name(args.task))
        .map_err(|e| err("cannot commit", e))?;
    if args.careful {
        let _ = std::fs::remove_file(cursor_path(&req.job_dir, args.task, req.attempt));
    }
    Ok(TaskResponse {
        outcome: if won {
            Outcome::Committed
        } else {
            Outcome::Lost
        },
        stats,
    })
}

/// A reader that counts the bytes read through it.
struct Counted {
    inner: Box<dyn io::Read + Send>,
    bytes: Arc<AtomicU64>,
}

impl io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(Serialize)]
struct JsonLine<'a, K, O> {
    key: &'a K,
    value: &'a O,
}

fn run_reduce<J: Job>(
    job: &J,
    req: &TaskRequest,
    partition: u32,
    maps: u32,
    out_dir: &Path,
    format: OutputFormat,
) -> Result<TaskResponse, String> {
    // The map phase is over for this worker: the keys it kept for a next map
    // task would only weigh on the reduce's memory.
    drop(KEPT.lock().ok().and_then(|mut kept| kept.take()));
    let storage = LocalStorage::new(&req.job_dir);
    let part = part_name(partition);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let mut sources = Vec::with_capacity(maps as usize);
    let chunk = merge_chunk(maps as usize);
    for m in 0..maps {
        let r = storage
            .open(&map_task_name(m), &part)
            .map_err(|e| err(&format!("cannot open the output of map task {m}"), e))?;
        let counted = Counted {
            inner: r,
            bytes: read_bytes.clone(),
        };
        sources.push(Source::Run(RunReader::<J::Key, J::Value>::with_chunk(
            Box::new(counted),
            chunk,
        )));
    }
    let tmp = reduce_tmp(out_dir, partition, req.attempt);
    let file = File::create(&tmp).map_err(|e| err("cannot create the output", e))?;
    let mut out = BufWriter::with_capacity(256 << 10, file);
    let mut stats = TaskStats::default();
    let mut line = Vec::new();
    let merged = merge(sources, |key, values| {
        if let Some(fault) = req.fault
            && fault.at() == stats.keys
        {
            fault.strike();
        }
        stats.keys += 1;
        stats.records_in += values.len() as u64;
        let mut failed = None;
        job.reduce(&key, values, &mut |value| {
            line.clear();
            match format {
                OutputFormat::Tsv => {
                    key.write_field(&mut line);
                    line.push(b'\t');
                    value.write_field(&mut line);
                }
                OutputFormat::JsonLines => {
                    if let Err(e) = serde_json::to_writer(
                        &mut line,
                        &JsonLine {
                            key: &key,
                            value: &value,
                        },
                    ) {
                        failed = Some(io::Error::other(e));
                    }
                }
            }
            line.push(b'\n');
            stats.records_out += 1;
            stats.bytes_out += line.len() as u64;
            if let Err(e) = out.write_all(&line) {
                failed = Some(e);
            }
        });
        failed.map_or(Ok(()), Err)
    });
    let finished = merged.and_then(|()| out.flush());
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&format!("reduce partition {partition}"), e));
    }
    drop(out);
    stats.bytes_in = read_bytes.load(Ordering::Relaxed);
    stats.peak_rss = peak_rss();
    // The part file first, then the marker that records the commit. An
    // attempt that dies between the two leaves a part file a later attempt
    // finds in place: outputs are deterministic, so it is the same file.
    if !rename_no_replace(&tmp, &out_dir.join(&part))
        .map_err(|e| err("cannot commit the output", e))?
    {
        let _ = std::fs::remove_file(&tmp);
    }
    let marker = reduce_marker(&req.job_dir, partition);
    let marker_tmp = marker.with_extension(format!("a{}.tmp", req.attempt));
    std::fs::write(&marker_tmp, serde_json::to_vec(&stats).unwrap_or_default())
        .map_err(|e| err("cannot write the commit marker", e))?;
    let won =
        rename_no_replace(&marker_tmp, &marker).map_err(|e| err("cannot commit the marker", e))?;
    if !won {
        let _ = std::fs::remove_file(&marker_tmp);
    }
    Ok(TaskResponse {
        outcome: if won {
            Outcome::Committed
        } else {
            Outcome::Lost
        },
        stats,
    })
}

/// This process's peak resident set size (VmHWM in /proc/self/status), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sum;
    impl Job for Sum {
        type Key = Vec<u8>;
        type Value = u64;
        type Output = u64;
        const COMBINES: bool = true;
        fn map(&self, r: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
            for w in r.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
                emit.emit_ref(w, 1);
            }
        }
        fn combine(&self, _word: &Vec<u8>, count: &mut u64, more: u64) {
            *count += more;
        }
        fn reduce(&self, _: &Vec<u8>, v: Vec<u64>, emit: &mut dyn FnMut(u64)) {
            emit(v.iter().sum())
        }
    }

    /// No combiner: values must come out in emission order.
    #[derive(Debug, Serialize, Deserialize)]
    struct Positions;
    impl Job for Positions {
        type Key = Vec<u8>;
        type Value = u32;
        type Output = u64;
        fn map(&self, r: &[u8], emit: &mut Emit<'_, Vec<u8>, u32>) {
            for (i, w) in r.split(|b| *b == b' ').enumerate() {
                emit.emit(w.to_vec(), i as u32);
            }
        }
        fn reduce(&self, _: &Vec<u8>, v: Vec<u32>, emit: &mut dyn FnMut(u64)) {
            emit(v.len() as u64)
        }
    }

    /// Runs map task 0 over `records` in-process; returns the outcome and
    /// the committed run of every partition.
    fn map_once<J: Job>(
        job: J,
        dir: &Path,
        records: &[Vec<u8>],
        memory: u64,
        attempt: u32,
    ) -> (Outcome, TaskStats, Vec<Vec<u8>>) {
        let split = Split::Records {
            label: "test".into(),
            records: records.to_vec(),
        };
        let req = TaskRequest {
            job_name: J::name().into(),
            job: postcard::to_allocvec(&job).unwrap(),
            job_dir: dir.to_path_buf(),
            attempt,
            fault: None,
            kind: TaskKind::Map {
                task: 0,
                split,
                reducers: 3,
                memory,
                skip: vec![],
                careful: false,
            },
        };
        let resp = run_task::<J>(&req).unwrap();
        let runs = (0..3)
            .map(|r| {
                std::fs::read(
                    dir.join("committed")
                        .join(map_task_name(0))
                        .join(part_name(r)),
                )
                .unwrap()
            })
            .collect();
        (resp.outcome, resp.stats, runs)
    }

    fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let word = prop_oneof![
            Just(b"a".to_vec()),
            Just(b"bb".to_vec()),
            Just(b"c".to_vec()),
            "[a-e]{1,3}".prop_map(String::into_bytes)
        ];
        let line = proptest::collection::vec(word, 0..6).prop_map(|ws| ws.join(&b' '));
        proptest::collection::vec(line, 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        // Spilling after every record and merging the runs at the end writes
        // the same committed runs, byte for byte, as one in-memory sort.
        #[test]
        fn spill_and_merge_equals_in_memory(records in records()) {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (_, s1, mem) = map_once(Sum, a.path(), &records, u64::MAX, 0);
            let (_, s2, spilled) = map_once(Sum, b.path(), &records, 0, 0);
            prop_assert_eq!(s1.spills, 0);
            let with_words = records.iter().filter(|r| r.iter().any(|b| *b != b' ')).count();
            prop_assert_eq!(s2.spills as usize, with_words);
            prop_assert_eq!(mem, spilled);
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (_, _, mem) = map_once(Positions, a.path(), &records, u64::MAX, 0);
            let (_, _, spilled) = map_once(Positions, b.path(), &records, 0, 0);
            prop_assert_eq!(mem, spilled);
        }
    }

    #[test]
    fn a_duplicate_attempt_loses_and_leaves_the_first_output() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = vec![b"a b a".to_vec(), b"c".to_vec()];
        let (first, _, runs) = map_once(Sum, dir.path(), &records, u64::MAX, 0);
        assert!(matches!(first, Outcome::Committed));
        let (second, _, again) = map_once(Sum, dir.path(), &records, 0, 1);
        assert!(matches!(second, Outcome::Lost));
        assert_eq!(runs, again);
        let staged = dir.path().join("staging");
        assert_eq!(
            std::fs::read_dir(staged).unwrap().count(),
            0,
            "the loser's files are gone"
        );
    }
}
