//! forkyard-ipc's integration tests: one binary, a module per area.

mod balance;
mod channel;
mod errors;
mod handoff;
mod hostile;
mod hygiene;
mod props;
mod pubsub;
mod python;
mod rpc;
mod support;
mod wire;
