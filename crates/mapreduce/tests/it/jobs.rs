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
/// function panic, `abort_on` abort the worker, `hang_on` hang it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Count {
    pub(crate) panic_on: Option<String>,
    pub(crate) abort_on: Option<String>,
    pub(crate) hang_on: Option<String>,
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

    fn reduce(&self, _word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
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
