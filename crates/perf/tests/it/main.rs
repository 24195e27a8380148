//! forkyard-perf against real worker processes (the `forkyard-perf-fixture` bin).

mod job;
mod support;

mod cache;
mod monitor;
mod sweep;
