//! What travels through the broker: task messages (postcard), and the
//! records nodes leave in the job's KV bucket (JSON, readable with `nats kv`).
//!
//! Names, for a job with id `ID`:
//!
//! | what | name |
//! |---|---|
//! | task stream (work queue, file storage) | `FY_ID`, subjects `fy.ID.task.>` |
//! | its consumer, shared by every node | `nodes` |
//! | KV bucket (commits, starts, failures, rejections) | `FY_ID` |
//! | object store (uploaded inputs `in.NONCE.m.TASK`, map runs, reduce parts) | `FY_ID` |

use serde::{Deserialize, Serialize};

use crate::input::Split;
use crate::task::{Fault, OutputFormat, TaskStats};

/// The prefix of every job's stream name.
pub(crate) const STREAM_PREFIX: &str = "FY_";
/// The durable consumer every node pulls a job's tasks through.
pub(crate) const CONSUMER: &str = "nodes";

/// Whether a failed `get_stream` says the stream does not exist: only the
/// server's "stream not found" (JetStream error code 10059) means that. A
/// request that timed out or a broker that is restarting says nothing about
/// the stream, so it is an error to report or retry, never "absent".
pub(crate) fn stream_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

pub(crate) fn stream_name(job_id: &str) -> String {
    format!("{STREAM_PREFIX}{job_id}")
}
pub(crate) fn task_subject(job_id: &str, phase: &str, task: u32, attempt: u32) -> String {
    format!("fy.{job_id}.task.{phase}.{task}.a{attempt}")
}
pub(crate) fn task_subjects(job_id: &str) -> String {
    format!("fy.{job_id}.task.>")
}

/// One attempt of one task, as a node receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    pub(crate) job_name: String,
    pub(crate) params: Vec<u8>,
    /// The publishing run's nonce (a resumed job's run has a new one): in
    /// the keys of the start and failure records, so a run counts only its
    /// own.
    pub(crate) nonce: String,
    pub(crate) attempt: u32,
    /// Injected into the first delivery only (tests, the fault suite, demos).
    pub(crate) fault: Option<Fault>,
    pub(crate) kind: WireKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireKind {
    Map {
        task: u32,
        split: Split,
        reducers: u32,
        memory: u64,
        skip: Vec<u64>,
        careful: bool,
        /// Where the split's bytes are when the coordinator uploaded the
        /// input (`None`: read `split`'s path).
        input: Option<InputObject>,
    },
    Reduce {
        partition: u32,
        /// The object prefix of each map task's committed output, in task order.
        inputs: Vec<String>,
        format: OutputFormat,
    },
}

/// A map task's input in the job's object store: the bytes of the split's
/// file from `offset` on (the byte before the split's range, then every
/// line that starts in it), so that a node reads the split from a sparse
/// copy at the same positions, and records keep their positions (skipped
/// records, careful mode) as if read from the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InputObject {
    pub(crate) name: String,
    pub(crate) offset: u64,
}

impl WireKind {
    pub(crate) fn key(&self) -> String {
        match self {
            WireKind::Map { task, .. } => format!("m.{task:05}"),
            WireKind::Reduce { partition, .. } => format!("r.{partition:05}"),
        }
    }
}

/// `commit.m.00003` / `commit.r.00001`: created once, by the first attempt
/// to finish (KV create-if-absent); later attempts lose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Commit {
    pub(crate) node: String,
    pub(crate) attempt: u32,
    pub(crate) delivery: u64,
    /// Where the output is in the object store: `PREFIX/part-0000R` for a map
    /// task, the object `PREFIX` itself for a reduce part.
    pub(crate) prefix: String,
    pub(crate) stats: TaskStats,
    /// Bytes this attempt put into and got from the object store.
    pub(crate) uploaded: u64,
    pub(crate) downloaded: u64,
}

/// `start.m.00003.NONCE.a0.d1`: a node began an attempt of run `NONCE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Start {
    pub(crate) node: String,
}

/// `fail.m.00003.NONCE.a0.d1`: an attempt failed on a node (the node acked it: the
/// coordinator decides what runs next).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub(crate) node: String,
    pub(crate) kind: FailureKind,
    /// The record the map function was on, when it is known.
    pub(crate) position: Option<u64>,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    /// The map function panicked on a record.
    BadRecord,
    /// The worker process died or timed out.
    WorkerLost,
    /// The task returned an error (I/O, missing input...).
    Error,
}

/// A message on a job's task stream that a node refused (stored under
/// `reject.SEQ` in the job's bucket, listed in
/// [`DistReport::rejected`](super::DistReport::rejected)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The message's sequence number on the stream.
    pub sequence: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The node that refused it.
    pub node: String,
    /// Why.
    pub reason: RejectReason,
}

/// Why a node refused a message on a job's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The payload does not decode as a task message.
    NotATask {
        /// The payload's size.
        bytes: usize,
        /// The decoder's message.
        detail: String,
    },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::NotATask { bytes, detail } => {
                write!(f, "not a task message ({bytes} bytes): {detail}")
            }
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message {} on {} rejected by node {}: {}",
            self.sequence, self.subject, self.node, self.reason
        )
    }
}

#[cfg(test)]
mod not_found_tests {
    use super::stream_not_found;
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};

    fn api_error(code: u16, err_code: u64, text: &str) -> GetStreamError {
        let e: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": text
        }))
        .unwrap();
        GetStreamErrorKind::JetStream(e).into()
    }

    #[test]
    fn only_the_servers_stream_not_found_means_absent() {
        assert!(stream_not_found(&api_error(404, 10059, "stream not found")));
        // Another 404 (e.g. consumer not found) is not the stream's absence.
        assert!(!stream_not_found(&api_error(
            404,
            10014,
            "consumer not found"
        )));
        // A request that timed out or failed says nothing about the stream,
        // even if its text happened to say "not found".
        assert!(!stream_not_found(&GetStreamErrorKind::Request.into()));
        assert!(!stream_not_found(&api_error(
            503,
            10008,
            "stream not found? unavailable"
        )));
    }
}
