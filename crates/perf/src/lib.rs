//! Result caching, live metrics and bottleneck verdicts for forkyard pools.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod advice;
mod cache;
#[cfg(feature = "http")]
mod http;
mod monitor;
mod sweep;
pub mod verdict;

pub use advice::{Advice, Trace};
pub use cache::{Backend, CacheBuilder, CacheStats, Cached, FnBackend};
#[cfg(feature = "http")]
pub use http::MetricsServer;
pub use monitor::{Latency, Monitor, MonitorConfig, Point, Snapshot, Totals, WorkerFigures};
pub use sweep::{Sweep, SweepConfig, SweepRow, sweep};
pub use verdict::{Verdict, VerdictKind, verdicts};
