//! Jobs that come with the library, so that every program built from it
//! can run them: the `wordcount` example, the node program
//! (`forkyard-mapreduce-node`), the demos, the fault suite and the tests
//! all use these, and a node started from one of them runs tasks submitted
//! by any other.
//!
//! A job is known to workers by [`Job::name`], and its code must be in the
//! worker's binary: a node can run only the jobs it was built with. These
//! are the ones every forkyard binary has.

use crate::job::{Emit, Job};
use crate::worker::Workers;

/// Word count: each output line is `word<TAB>count`, a word being a maximal
/// run of bytes that are not ASCII whitespace. Combines (one count per word
/// and map task travels, not one per occurrence).
///
/// ```no_run
/// use forkyard_mapreduce::jobs::WordCount;
/// use forkyard_mapreduce::{LineFiles, MapReduce};
///
/// fn main() -> Result<(), forkyard_mapreduce::Error> {
///     forkyard_mapreduce::jobs::workers().serve_if_worker();
///     let report = MapReduce::new(WordCount::new())
///         .input(LineFiles::new(["corpus.txt"]))
///         .out_dir("counts")
///         .run_blocking()?;
///     println!("{}", report.summary());
///     Ok(())
/// }
/// ```
///
/// [`WordCount::poisoned_by`] makes the map function panic on every line
/// containing a marker: a *poison record*, as real jobs meet them (a line
/// that crashes a parser), for demos and drills of the engine's skipping of
/// bad records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WordCount {
    poison: Option<String>,
}

impl WordCount {
    /// A plain word count.
    pub fn new() -> Self {
        WordCount::default()
    }

    /// A word count whose map function panics on every line that contains
    /// `marker` (never on an empty marker).
    pub fn poisoned_by(marker: impl Into<String>) -> Self {
        let marker = marker.into();
        WordCount {
            poison: (!marker.is_empty()).then_some(marker),
        }
    }

    /// The poison marker, if any.
    pub fn poison(&self) -> Option<&str> {
        self.poison.as_deref()
    }
}

impl Job for WordCount {
    type Key = Vec<u8>;
    type Value = u64;
    type Output = u64;
    const COMBINES: bool = true;

    fn name() -> &'static str {
        "forkyard.wordcount"
    }

    fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
        if let Some(p) = &self.poison
            && memchr::memmem::find(line, p.as_bytes()).is_some()
        {
            panic!("poison record");
        }
        for word in line.split(|b| b.is_ascii_whitespace()) {
            if !word.is_empty() {
                emit.emit_ref(word, 1);
            }
        }
    }

    fn combine(&self, _word: &Vec<u8>, count: &mut u64, more: u64) {
        *count += more;
    }

    fn reduce(&self, _word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
        emit(counts.iter().sum());
    }
}

/// The library's jobs, registered for a worker: call
/// `forkyard_mapreduce::jobs::workers().serve_if_worker()` first thing in
/// `main` (add your own jobs with [`Workers::job`]).
pub fn workers() -> Workers {
    Workers::new().job::<WordCount>()
}

/// A remote call every node built from the library serves: the words of a
/// line, counted (the distributed demo and benchmark call it).
#[cfg(feature = "nats")]
#[derive(Debug, Clone, Copy)]
pub struct CountWords;

#[cfg(feature = "nats")]
impl crate::dist::Service for CountWords {
    type Req = String;
    type Resp = u64;
    const NAME: &'static str = "count-words";
    fn call(line: String) -> Result<u64, String> {
        Ok(line.split_ascii_whitespace().count() as u64)
    }
}

/// The library's remote-call services ([`CountWords`]), registered: call
/// `.serve_if_worker()` on it first thing in `main`, and give it to
/// [`Node::calls`](crate::dist::Node::calls).
#[cfg(feature = "nats")]
pub fn services() -> crate::dist::Services {
    crate::dist::Services::new().service::<CountWords>()
}
