//! forkyard-ipc's integration tests: one binary, a module per area.

mod channel;
mod hygiene;
mod props;
mod support;
