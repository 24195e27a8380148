//! The jobs the tests run; shared with the fixture binary, which serves them
//! as a worker (`src/bin/forkyard-mapreduce-fixture.rs` includes this file).

use forkyard_mapreduce::{Emit, Job};
use serde::{Deserialize, Serialize};

fn contains(haystack: &[u8], needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_some_and(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
}

/// Word count with a combiner; records containing `panic_on` make the map
/// function panic, `abort_on` abort the worker, `hang_on` hang it (those are
/// bad records: the fault is in the data). `hold` parks one attempt mid-task
/// so that a test can strike its worker from outside.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Count {
    pub(crate) panic_on: Option<String>,
    pub(crate) abort_on: Option<String>,
    pub(crate) hang_on: Option<String>,
    pub(crate) hold: Option<Hold>,
}

/// Where to park one attempt: the first attempt to map a record containing
/// `map_on`, or to reduce the key `reduce_on`, writes its pid to
/// `dir/held-map` (or `dir/held-reduce`) and parks for good; every later
/// attempt, finding the file there, goes on. A test waits for the file and
/// then kills or stops that worker from outside, knowing it is mid-task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) map_on: Option<String>,
    pub(crate) reduce_on: Option<String>,
}

impl Hold {
    fn park_once(&self, what: &str) {
        let path = self.dir.join(format!("held-{what}"));
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        if let Ok(mut file) = first {
            use std::io::Write;
            // The pid, then a newline: a reader that sees the newline has it all.
            let _ = writeln!(file, "{}", std::process::id());
            drop(file);
            loop {
                std::thread::park();
            }
        }
    }
}

impl Job for Count {
    type Key = Vec<u8>;
    type Value = u64;
    type Output = u64;
    const COMBINES: bool = true;

    fn name() -> &'static str {
        "test-count"
    }

    fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
        if contains(line, &self.panic_on) {
            panic!("a poison record");
        }
        if contains(line, &self.abort_on) {
            std::process::abort();
        }
        if let Some(hold) = &self.hold
            && contains(line, &hold.map_on)
        {
            hold.park_once("map");
        }
        if contains(line, &self.hang_on) {
            // A map function stuck for good (the engine's timeout ends it).
            loop {
                std::thread::park();
            }
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

    fn reduce(&self, word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
        if let Some(hold) = &self.hold
            && hold.reduce_on.as_deref().map(str::as_bytes) == Some(word.as_slice())
        {
            hold.park_once("reduce");
        }
        emit(counts.iter().sum());
    }
}

/// No combiner: every word with the length of each line it is on; reduce
/// prints every value, sorted, so a lost or doubled value shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Collect;

impl Job for Collect {
    type Key = Vec<u8>;
    type Value = u64;
    type Output = String;

    fn name() -> &'static str {
        "test-collect"
    }

    fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
        for word in line.split(|b| b.is_ascii_whitespace()) {
            if !word.is_empty() {
                emit.emit(word.to_vec(), line.len() as u64);
            }
        }
    }

    fn reduce(&self, _word: &Vec<u8>, mut lens: Vec<u64>, emit: &mut dyn FnMut(String)) {
        lens.sort_unstable();
        let list: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
        emit(list.join(","));
    }
}
