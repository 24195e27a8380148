//! forkyard-pool against real worker processes (testkit's `pool-worker` fixture).

mod job;
mod support;

mod backpressure;
mod batch;
mod control;
mod events;
mod faults;
mod lifecycle;
mod node;
mod observe;
mod protocol;
mod python;
mod sandboxed;
mod schedule;
mod shutdown;
