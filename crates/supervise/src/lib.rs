//! Keep processes alive: restart policies, backoff, circuit breakers, health probes and
//! supervisor trees. (Being written; see issue 4.)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
mod breaker;
mod budget;
mod decide;
mod error;
mod event;
mod explain;
mod policy;
mod probe;
mod spec;
mod supervisor;

pub use backoff::{Backoff, BackoffState};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use error::Error;
pub use event::{ChildState, ChildStatus, Event, EventKind, Health, ProbeRole, StopReason};
pub use explain::{Decision, Explanation};
pub use policy::{Ending, ExitReport, Restart, Shutdown, Strategy, Usage};
pub use probe::{Heartbeat, Probe};
pub use spec::{ChildSpec, Launch};
pub use supervisor::{EventStream, Supervisor, SupervisorBuilder};
