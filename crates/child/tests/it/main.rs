//! Integration tests of forkyard-child against real processes (testkit fixtures).
//!
//! One test binary with modules, to keep link times down.

mod support;

mod errors;
mod exits;
mod fds;
mod group;
mod launch;
mod leaks;
mod orphans;
mod output;
mod props;
mod sample;
