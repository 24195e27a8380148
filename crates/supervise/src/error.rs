//! Errors of `forkyard-supervise`.

use crate::event::ChildState;

/// What can go wrong when building, starting or driving a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The supervisor's or a child's spec is not valid; nothing was started.
    #[error("invalid spec for {what}: {why}")]
    InvalidSpec {
        /// The supervisor or child concerned.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// No child has this name (or path, `sub/child` for a nested supervisor's child).
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    /// The supervisor gave up (its restart budget ran out, or a critical child's breaker
    /// opened): it stopped every child and ended.
    #[error("supervisor {supervisor} gave up: {reason}")]
    GaveUp {
        /// Path of the supervisor.
        supervisor: String,
        /// Why.
        reason: String,
    },
    /// The supervisor has already ended (it was shut down, or gave up earlier).
    #[error("supervisor {0} has ended")]
    Ended(String),
    /// A child that was asked to start did not come up: it exited, or went into backoff or
    /// breaker-open instead of becoming ready.
    #[error("child {child} did not start: {why}")]
    NotStarted {
        /// The child's name.
        child: String,
        /// Why: where it stands instead.
        why: NotUp,
    },
}

/// Why a child asked to start (or restart) did not come up, in [`Error::NotStarted`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotUp {
    /// It is in this state instead of running: backing off, breaker open, stopped, or
    /// exited and not restarted.
    In(ChildState),
    /// A rolling restart's replacement failed; the old instance was kept.
    ReplacementFailed {
        /// What the supervisor recorded about the failure.
        reason: String,
    },
}

impl std::fmt::Display for NotUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotUp::In(ChildState::BackingOff { .. }) => f.write_str("backing off after a failure"),
            NotUp::In(ChildState::BreakerOpen { .. }) => f.write_str("its breaker is open"),
            NotUp::In(ChildState::Exited) => f.write_str("exited and not restarted"),
            NotUp::In(state) => write!(f, "{state}"),
            NotUp::ReplacementFailed { reason } => {
                write!(f, "replacement failed, old instance kept: {reason}")
            }
        }
    }
}
