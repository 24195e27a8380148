//! Map-reduce over worker processes: combiners, spills, atomic commits,
//! backup tasks, skipped bad records and resumable jobs, on one machine.
//!
//! # The problem
//!
//! A batch job over more data than one core gets through quickly (count the
//! words of a corpus, summarise a month of access logs, build an index) wants
//! every core, and wants to survive the things that go wrong when it runs for
//! a while: a worker killed by the OOM killer, a record that crashes the
//! parser, a worker that stalls, the coordinator itself killed half-way. What
//! people reach for on one machine handles these badly: a single-threaded
//! script uses one core; Python's `multiprocessing.Pool` **hangs** when a
//! worker dies (cpython#96062) and holds every result in memory; `sort | uniq
//! -c` is robust but spends its time sorting what a hash table would count.
//!
//! # The approach: the MapReduce paper, on one machine
//!
//! Dean and Ghemawat's MapReduce (OSDI 2004) solved this for thousands of
//! machines. Most of its ideas carry over to one machine with worker
//! *processes* (not threads: a crashing record must not take the job down):
//!
//! - **A job is three functions**: [`Job::map`] turns a record into key-value
//!   pairs, an optional [`Job::combine`] folds values of a key early (in the
//!   map task, so a word count ships one count per word and split, not one
//!   per occurrence), and [`Job::reduce`] turns a key and all its values into
//!   output. Keys and values are serde types (postcard between processes);
//!   keys are ordered, and every output file is sorted by key.
//! - **Splits, pulled dynamically.** [`LineFiles`] cuts files into byte
//!   ranges aligned to line starts (a line belongs to the split its first byte
//!   is in, so no line is cut or read twice); the coordinator hands the next
//!   split to whichever worker is free, so fast workers do more.
//! - **Partitioning by a stable hash**: a key goes to reduce partition
//!   `fnv1a(postcard(key)) mod R` ([`partition`]), the same in every process
//!   and every build (std's `HashMap` hasher is seeded at random per process).
//! - **Bounded memory**: a map task's buffer holds about `memory` bytes; past
//!   it, the buffer is sorted and *spilled* to disk as a run, and the runs are
//!   merged when the task ends. A reduce task k-way merges the sorted runs of
//!   its partition from every map task and streams keys through `reduce`.
//! - **A map-side table that costs less than a `HashMap`.** What a word
//!   count spends its time on is the lookup of each word, and a lookup's
//!   time is a cache miss. The buffer's hash table is an index (4 bytes a
//!   key) into entries kept in the order keys first came, so the keys a job
//!   emits most sit together and stay in the cache; an entry holds a
//!   *fingerprint* of a byte-string key (its length and first and last 8
//!   bytes), which for a key of up to 16 bytes is the key, so most lookups
//!   compare three integers in the entry instead of calling `memcmp` on
//!   bytes behind a pointer. Measured, this is what lets two workers beat one
//!   thread by more than 1.7x (the README has the figures).
//! - **Atomic commits, first one wins.** An attempt writes under its own name
//!   and publishes with one `renameat2(RENAME_NOREPLACE)`: a duplicate or a
//!   backup attempt can never double or mix output ([`Storage`]).
//! - **Re-execution.** A task whose worker dies or times out runs again on
//!   another worker (the pool replaces the dead one).
//! - **Backup tasks.** Near the end of a phase, a task running well past the
//!   phase's median gets a second attempt; the first to commit wins. In the
//!   paper, disabling them made a sort 44 % slower.
//! - **Skipping bad records.** A record that makes `map` panic, crash the
//!   worker or hang, twice, is skipped and reported ([`SkippedRecord`]), up to
//!   a limit per job ([`MapReduce::max_skipped`]); past it, the job fails
//!   naming the records. A panic is caught in-process and names its record at
//!   once; a crash or a hang cannot report anything, so the retry runs
//!   *carefully*: the worker writes the position of each record to a small
//!   cursor file before mapping it, and the coordinator reads it after the
//!   crash (the paper's workers sent a "last gasp" UDP packet instead).
//! - **Resumable jobs.** The output directory holds a job directory
//!   (`_forkyard/`) recording the job's identity and each committed task; a
//!   job run again (after the coordinator was killed, say) redoes only what
//!   did not commit, and writes the same output. A directory holding another
//!   job's output is refused.
//!
//! What does not carry over: locality (one disk), re-running *completed* map
//! tasks when a machine dies (their output is on our disk and survives a
//! worker), and the master's pings (the pool sees a worker die at once,
//! through its pidfd).
//!
//! A task is "run map task i of job J" or "run reduce partition r", complete
//! in its request, and intermediate data goes only through [`Storage`], so the
//! same tasks can later be handed to workers on other machines.
//!
//! # Example
//!
//! The same binary is the coordinator and its workers: the workers are this
//! program started again (see [`forkyard_pool::Builder::self_exec`]), so
//! `main` first lets a worker serve.
//!
//! ```no_run
//! use forkyard_mapreduce::{Emit, Job, LineFiles, MapReduce};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct WordCount;
//!
//! impl Job for WordCount {
//!     type Key = Vec<u8>;
//!     type Value = u64;
//!     type Output = u64;
//!     const COMBINES: bool = true;
//!
//!     fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
//!         for word in line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
//!             emit.emit_ref(word, 1); // copies the word only when it is new
//!         }
//!     }
//!     fn combine(&self, _word: &Vec<u8>, count: &mut u64, more: u64) {
//!         *count += more;
//!     }
//!     fn reduce(&self, _word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
//!         emit(counts.iter().sum());
//!     }
//! }
//!
//! fn main() -> Result<(), forkyard_mapreduce::Error> {
//!     forkyard_mapreduce::serve_if_worker::<WordCount>(); // a worker never returns
//!     let report = MapReduce::new(WordCount)
//!         .input(LineFiles::new(["corpus.txt"]))
//!         .out_dir("counts") // counts/part-00000 .. part-00003, `word<TAB>count`
//!         .workers(2)
//!         .reducers(4)
//!         .memory(64 << 20)
//!         .progress(true)
//!         .run_blocking()?;
//!     println!("{report}"); // per phase: tasks, attempts, retries, backups, records, bytes, spills, wall
//!     println!("{}", report.summary()); // job done in 1.23s: N records, K distinct keys, ...
//!     Ok(())
//! }
//! ```
//!
//! The library ships this job as [`jobs::WordCount`] (with [`jobs::workers`]
//! to serve it), so that every forkyard binary, and the node program
//! `forkyard-mapreduce-node`, can run it.
//! `examples/wordcount.rs` is this program with a command line;
//! `examples/demo.rs` shows crashes, a poison record and a straggler;
//! `examples/fault.rs` is the fault suite; `examples/logs.rs` an access-log
//! report; `examples/compare.rs` the comparison with the usual tools.
//!
//! # Watching a job from outside
//!
//! [`MapReduce::on_event`] hands an observer each [`JobEvent`]: a phase
//! starting and finishing, an attempt handed to the pool, and the pid of
//! each worker process as it becomes ready and as it exits. The fault suite
//! (`examples/fault.rs`, `cargo xtask fault mapreduce --seed N`) is such an
//! observer: it SIGKILLs and SIGSTOPs workers from outside, at random moments
//! of both phases, as an operator's `kill -9` or the OOM killer would, and
//! checks that every output is byte-identical to a clean run's.
//!
//! # Caveats
//!
//! - **Combine is a fold** (`acc`, `value`), not the paper's list of values:
//!   it must be associative and commutative, as it runs on any grouping of the
//!   values. Without a combiner every value travels to the reducer.
//! - `reduce` gets all the values of one key in a `Vec`: one key's values
//!   must fit in memory (a partition need not).
//! - The memory bound is an estimate (serialized key size plus a fixed
//!   overhead per key and per value), checked after each record; a worker's
//!   resident memory also holds the runtime, its read buffer, the table's
//!   spare capacity, and the keys it keeps from one map task for the next
//!   (while they take at most half the bound): measured under 3x the bound
//!   with 5 million keys, see the README.
//! - Reading runs costs memory outside the bound: the runs one merge reads
//!   (a map task's spills, or a reduce's map outputs) share 8 MiB of read
//!   buffers, 4 to 64 KiB each; past 2,048 runs, 4 KiB each.
//! - Fault tolerance assumes deterministic tasks: a re-run or a backup must
//!   write the same output as the attempt it replaces.
//! - Attempts that lose to a backup keep running on their worker (the pool
//!   cannot cancel a running task); a phase that leaves such attempts behind
//!   ends its pool, and the next phase starts fresh workers. Two workers
//!   stalled at once while tasks wait stall the phase until the task timeout.
//! - Keys and values written as `key<TAB>value` are written as they are: a
//!   key containing a TAB or a newline makes the line ambiguous (use
//!   [`OutputFormat::JsonLines`]). Output files are not fsynced.
//! - Dropping the future of [`MapReduce::run`] drops the pool, which kills
//!   every worker at once; the job directory keeps what committed, and a
//!   later run resumes from there.
//!
//! # See also
//!
//! `forkyard-pool` (the workers, their crash detection and replacement, the
//! task timeout), `forkyard-child` (every worker is a child that dies with its
//! owner, even one killed with SIGKILL), `forkyard-ipc` (the channel to each
//! worker).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod buffer;
mod engine;
mod error;
mod input;
mod job;
pub mod jobs;
mod partition;
mod report;
mod run;
mod storage;
mod task;
mod worker;

#[cfg(feature = "nats")]
pub mod dist;

pub use engine::{JOB_DIR, JobEvent, MapReduce, Phase};
pub use error::Error;
pub use input::{Input, LineFiles, Records, Split};
pub use job::{Emit, Field, Job};
pub use partition::partition;
pub use report::{PhaseReport, Report, SkippedRecord};
pub use storage::{LocalStorage, Storage};
pub use task::{Fault, OutputFormat};
pub use worker::{Workers, serve_if_worker};
