//! Errors of `forkyard-supervise`.

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
    #[error("child {child} did not start: {state}")]
    NotStarted {
        /// The child's name.
        child: String,
        /// Where it stands instead.
        state: String,
    },
}
