//! forkyard-monitor's integration tests: one binary, a module per area.

mod alerts;
mod browser;
mod http;
mod support;
mod unix;
