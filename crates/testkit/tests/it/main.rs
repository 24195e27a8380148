//! forkyard-testkit's integration tests: one binary, a module per area.
//!
//! Having integration tests at all matters too: cargo builds a package's binaries
//! for its integration tests, so a workspace test run builds the fixture binary
//! before any test starts (see [`forkyard_testkit::fixture_path`]).

mod fixtures;
mod tidy;
