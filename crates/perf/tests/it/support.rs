//! Helpers: a pool of fixture workers.

use crate::job::{Answer, Job};
use forkyard_pool::{Builder, Pool};

pub(crate) use forkyard_testkit::Baseline;

/// A builder for a pool of `forkyard-perf-fixture` workers.
pub(crate) fn builder() -> Builder<Job, Answer> {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_forkyard-perf-fixture"));
    Pool::<Job, Answer>::builder().command(move || std::process::Command::new(&path))
}
