//! Result caching, live metrics and bottleneck verdicts for forkyard pools.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod advice;
mod cache;

pub use advice::{Advice, Trace};
pub use cache::{Backend, CacheBuilder, CacheStats, Cached, FnBackend};
