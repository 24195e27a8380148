//! A pool of worker processes (the lesson is being written).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod core;
mod error;
mod pool;
pub mod protocol;
mod stats;
pub mod worker;

pub use crate::core::{RecycleReason, ShutdownMode};
pub use error::{BuildError, PoolError};
pub use pool::{Builder, Pool, ShutdownReport, TaskOutcome, WorkerEnd};
pub use stats::{FailureKind, Percentiles, Stats, WorkerStats};
