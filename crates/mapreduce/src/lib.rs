//! Map-reduce over worker processes (lesson below, in progress).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod buffer;
mod engine;
mod error;
mod input;
mod job;
mod partition;
mod report;
mod run;
mod storage;
mod task;
mod worker;

pub use engine::{JOB_DIR, MapReduce, Phase};
pub use error::Error;
pub use input::{Input, LineFiles, Records, Split};
pub use job::{Emit, Field, Job};
pub use partition::partition;
pub use report::{PhaseReport, Report, SkippedRecord};
pub use storage::{LocalStorage, Storage};
pub use task::{Fault, OutputFormat};
pub use worker::{Workers, serve_if_worker};
