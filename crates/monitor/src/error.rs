//! Errors of `forkyard-monitor`.

use std::path::PathBuf;

/// What can go wrong when setting a monitor up or serving it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// A pool or supervisor is already watched under this name.
    #[error("a {kind} named {name:?} is already watched")]
    DuplicateName {
        /// `pool` or `supervisor`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// No pool is watched under this name.
    #[error("no pool named {0:?} is watched")]
    NoSuchPool(String),
    /// A name that cannot appear in a URL path segment.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// A token digest that is not 64 hex digits.
    #[error("invalid sha-256 digest: expected 64 hex digits")]
    InvalidDigest,
    /// An alert rule that cannot be evaluated.
    #[error("invalid alert rule {name:?}: {why}")]
    InvalidRule {
        /// The rule's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The webhook URL is not a plain `http://host:port/path` URL.
    #[error("invalid webhook url {0:?}: only http://host:port/path is supported")]
    InvalidWebhook(String),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address or socket path.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The action log could not be opened or written.
    #[error("action log {path}")]
    ActionLog {
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The OS gave no random bytes for a token.
    #[error("cannot read random bytes for a token")]
    Random(#[source] std::io::Error),
}
