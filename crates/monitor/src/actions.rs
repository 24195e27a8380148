//! Operator actions and the append-only log of every attempt (who, what,
//! when, result).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::auth::{Principal, Role};
use crate::error::MonitorError;
use crate::state::{lock, unix_ms, unix_ms_to_rfc3339};

/// What an operator can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[non_exhaustive]
pub enum Action {
    /// Set a pool's size (growing starts workers at once; shrinking drains
    /// the least busy ones, losing no task).
    ResizePool {
        /// The pool's name.
        pool: String,
        /// The new size.
        workers: usize,
    },
    /// Restart one pool worker: a replacement starts, and once it is ready
    /// the worker drains and exits (a recycle: capacity never dips).
    RecycleWorker {
        /// The pool's name.
        pool: String,
        /// The worker's id.
        worker: u64,
    },
    /// Open (no worker starts) or close (workers start again) a pool's
    /// circuit breaker.
    SetBreaker {
        /// The pool's name.
        pool: String,
        /// Open it, or close it.
        open: bool,
    },
    /// Drain a pool: it takes no new task, finishes what it has within the
    /// grace period, and its workers exit. There is no undo.
    DrainPool {
        /// The pool's name.
        pool: String,
        /// Seconds queued and running tasks get.
        grace_secs: u64,
    },
    /// Rolling restart of a supervised child (the new instance is ready
    /// before the old one stops).
    RestartChild {
        /// The supervisor's name.
        supervisor: String,
        /// The child's path below it.
        child: String,
    },
    /// Stop a supervised child and keep it down.
    StopChild {
        /// The supervisor's name.
        supervisor: String,
        /// The child's path below it.
        child: String,
    },
    /// Start a stopped supervised child (forgetting its backoff and breaker).
    StartChild {
        /// The supervisor's name.
        supervisor: String,
        /// The child's path below it.
        child: String,
    },
}

impl Action {
    /// `restart_child root/web`, for logs.
    pub fn describe(&self) -> String {
        match self {
            Action::ResizePool { pool, workers } => {
                format!("resize pool {pool} to {workers} workers")
            }
            Action::RecycleWorker { pool, worker } => {
                format!("recycle worker {worker} of pool {pool}")
            }
            Action::SetBreaker { pool, open: true } => format!("open the breaker of pool {pool}"),
            Action::SetBreaker { pool, open: false } => format!("close the breaker of pool {pool}"),
            Action::DrainPool { pool, grace_secs } => {
                format!("drain pool {pool} (grace {grace_secs} s)")
            }
            Action::RestartChild { supervisor, child } => {
                format!("restart child {supervisor}/{child}")
            }
            Action::StopChild { supervisor, child } => format!("stop child {supervisor}/{child}"),
            Action::StartChild { supervisor, child } => format!("start child {supervisor}/{child}"),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// It was carried out.
    Done,
    /// No valid credentials (401): nothing was done.
    Unauthenticated,
    /// The caller's role may not act (403): nothing was done.
    Forbidden,
    /// The request was malformed or named nothing known (4xx): nothing was done.
    Rejected,
    /// It was tried and failed.
    Failed,
}

/// One line of the action log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    /// Its number (increasing from 1 in this run).
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The same, as RFC 3339.
    pub at: String,
    /// Who: a token's name, `uid:N`, or `anonymous`.
    pub who: String,
    /// Their role, when known.
    pub role: Option<Role>,
    /// What was asked: the method and path.
    pub request: String,
    /// The action, when the request parsed as one.
    pub action: Option<Action>,
    /// How it ended.
    pub result: ActionResult,
    /// The HTTP status answered.
    pub status: u16,
    /// In words.
    pub detail: String,
}

/// Records kept in memory for `/api/actions`.
const KEPT: usize = 1000;

pub(crate) struct ActionLog {
    file: Option<(PathBuf, Mutex<File>)>,
    inner: Mutex<(u64, std::collections::VecDeque<ActionRecord>)>,
}

impl ActionLog {
    /// Appends to `path` (created if missing; opened with `O_APPEND`, never
    /// truncated or rewritten), or keeps records in memory only.
    pub(crate) fn open(path: Option<&Path>) -> Result<ActionLog, MonitorError> {
        let file = match path {
            Some(p) => {
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map_err(|source| MonitorError::ActionLog {
                        path: p.to_owned(),
                        source,
                    })?;
                Some((p.to_owned(), Mutex::new(f)))
            }
            None => None,
        };
        Ok(ActionLog {
            file,
            inner: Mutex::new((1, std::collections::VecDeque::new())),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        who: Option<&Principal>,
        request: String,
        action: Option<Action>,
        result: ActionResult,
        status: u16,
        detail: String,
    ) -> ActionRecord {
        let at_ms = unix_ms();
        let mut inner = lock(&self.inner);
        let record = ActionRecord {
            seq: inner.0,
            at_ms,
            at: unix_ms_to_rfc3339(at_ms),
            who: who.map_or_else(|| "anonymous".to_owned(), |p| p.name.clone()),
            role: who.map(|p| p.role),
            request,
            action,
            result,
            status,
            detail,
        };
        inner.0 += 1;
        if inner.1.len() == KEPT {
            inner.1.pop_front();
        }
        inner.1.push_back(record.clone());
        // Written while the sequence is held, so the file keeps the order.
        if let Some((path, file)) = &self.file {
            let mut line = serde_json::to_string(&record).unwrap_or_default();
            line.push('\n');
            if let Err(e) = lock(file).write_all(line.as_bytes()) {
                tracing::error!(path = %path.display(), error = %e, "cannot append to the action log");
            }
        }
        record
    }

    pub(crate) fn recent(&self) -> Vec<ActionRecord> {
        lock(&self.inner).1.iter().cloned().collect()
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }
}
