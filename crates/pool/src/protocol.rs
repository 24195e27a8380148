//! The messages between a pool and its workers.
//!
//! They travel over a [`forkyard_ipc::Channel`], which does the framing, the
//! handshake and the codec; these enums are only what the pool says. With the
//! JSON-lines codec they look like this (one per line, after ipc's handshake):
//!
//! ```text
//! worker -> pool   "Ready"
//! pool -> worker   {"Task":{"id":7,"req":<your request>}}
//! worker -> pool   {"Done":{"id":7,"result":{"Ok":<your response>}}}
//! worker -> pool   {"Done":{"id":8,"result":{"Err":"message"}}}
//! pool -> worker   "Drain"
//! ```
//!
//! A worker sends `Ready` once it can take tasks, answers every `Task` exactly
//! once (in any order: tasks may be pipelined), and on `Drain` finishes the
//! tasks it has, sends their `Done`s, and exits with status 0.

use serde::{Deserialize, Serialize};

/// From the pool to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker<Req> {
    /// Run this task and answer with `Done` carrying the same id.
    Task {
        /// The task's id, unique within the pool.
        id: u64,
        /// The request.
        req: Req,
    },
    /// Finish the tasks you have, answer them, then exit 0. No more tasks will come.
    Drain,
}

/// From a worker to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker<Resp> {
    /// The worker is up and takes tasks.
    Ready,
    /// The answer to a task.
    Done {
        /// The id from the `Task`.
        id: u64,
        /// The handler's result; `Err` carries its message.
        result: Result<Resp, String>,
    },
}
