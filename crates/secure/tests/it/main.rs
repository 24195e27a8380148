//! forkyard-secure's integration tests: one binary, one module per area.

mod audit;
mod env;
mod paths;
mod run;
mod sandbox;
mod support;
mod validate;
