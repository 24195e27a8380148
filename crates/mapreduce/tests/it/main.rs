//! forkyard-mapreduce against real worker processes (the fixture binary
//! serves the jobs in `jobs.rs`).

mod jobs;
mod support;

mod bad_input;
mod basic;
mod dist;
mod dist_auth;
mod dist_data;
mod dist_resume;
mod faults;
