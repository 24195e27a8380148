//! The messages between a pool and its workers.
//!
//! They travel over a [`forkyard_ipc::Channel`], which does the framing, the
//! handshake and the codec; these enums are only what the pool says. With the
//! JSON-lines codec they look like this (one per line, after ipc's handshake;
//! serde's external tagging: a unit variant is a string, a struct variant an
//! object with one key):
//!
//! ```text
//! worker -> pool   "Ready"
//! pool -> worker   {"Task":{"id":7,"req":<request>}}
//! worker -> pool   {"Done":{"id":7,"result":{"Ok":<response>}}}
//! worker -> pool   {"Done":{"id":8,"result":{"Err":"message"}}}
//!
//! pool -> worker   {"Chunk":{"id":9,"items":[<request>,<request>,<request>]}}
//! worker -> pool   {"Items":{"id":9,"results":[[0,{"Ok":<response>}],[2,{"Err":"message"}]]}}
//! worker -> pool   {"Items":{"id":9,"results":[[1,{"Ok":<response>}]]}}
//!
//! pool -> worker   {"Cancel":{"id":10}}
//! worker -> pool   {"Cancelled":{"id":10}}
//!
//! pool -> worker   "Drain"
//! ```
//!
//! # The rules
//!
//! - **Ready.** A worker sends `Ready` once, when it can take work.
//! - **Task.** Answer every `Task` exactly once with a `Done` carrying the
//!   same `id`, in any order: several tasks and chunks may be in flight at
//!   once (pipelining), up to the pool's `max_in_flight_per_worker`. `Err`
//!   carries the handler's error as text; the worker keeps serving.
//! - **Chunk** (a piece of a batch, `Pool::map`). One
//!   message carries many items; the worker runs its handler once per item
//!   (in order or concurrently, as it likes) and answers every item exactly
//!   once with `Items` messages. Each result is an `[index, result]` pair,
//!   `index` being the item's position in `items`, counted from 0. One `Items`
//!   may carry any set of results, in any order; a chunk is answered when
//!   every index has been answered once. A chunk gets no `Done`. A worker that
//!   sends results while it works (say every few milliseconds) lets the pool
//!   keep them if it dies later: the pool re-runs only the items that got no
//!   result, and never runs an answered item again.
//! - **Cancel.** The task or chunk `id` is no longer wanted. The worker stops
//!   it (drops the handler's work, starts none of the chunk's remaining
//!   items) and then answers `Cancelled` with that id; after `Cancelled`
//!   nothing more may be sent for the id. Results of a chunk's items sent
//!   before `Cancelled` stand. If the task's `Done` (or the chunk's last
//!   `Items`) has already gone out, or the id is unknown, the worker ignores
//!   the `Cancel`. A worker that cannot stop a handler (a synchronous one
//!   running in a thread) must not claim it did: it says nothing, and once
//!   the pool's cancel grace has passed the pool kills the worker's process
//!   group, replaces it, and re-runs its other tasks without charging them.
//! - **Drain.** Start nothing new, finish and answer what you have, then exit
//!   with status 0.
//! - **Frame size.** Every message must fit in ipc's maximum frame (16 MiB by
//!   default). A worker whose answer would not fit splits an `Items` into
//!   several, and answers a single result that cannot fit with an `Err`
//!   saying so. On the pool's side a chunk that does not fit is split (see
//!   `Pool::map`) and a single request that does not fit
//!   fails with [`PoolError::Unsendable`](crate::PoolError::Unsendable).
//!
//! Anything else (a `Done` or `Items` for an id the worker does not have, an
//! index out of range or answered twice, a message that does not parse) is a
//! protocol error: the pool kills the worker and fails what it was running
//! with [`PoolError::Protocol`](crate::PoolError::Protocol).

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
    /// Run the handler on each item and answer each with `Items` (see the
    /// [module docs](self)).
    Chunk {
        /// The chunk's id, unique within the pool (shared with task ids).
        id: u64,
        /// The items, indexed from 0 in the answers.
        items: Vec<Req>,
    },
    /// Abandon the task or chunk `id` and answer `Cancelled` (see the
    /// [module docs](self)).
    Cancel {
        /// The task's or chunk's id.
        id: u64,
    },
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
    /// Answers to some of a chunk's items.
    Items {
        /// The id from the `Chunk`.
        id: u64,
        /// `(index, result)` pairs: the item's position in the chunk's
        /// `items`, and the handler's result for it.
        results: Vec<(u32, Result<Resp, String>)>,
    },
    /// The task or chunk `id` was abandoned on `Cancel`: nothing more comes for it.
    Cancelled {
        /// The id from the `Cancel`.
        id: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON-lines shapes the module docs promise to workers in other languages.
    #[test]
    fn json_shapes_are_the_documented_ones() {
        let to = |m: ToWorker<u64>| serde_json::to_string(&m).unwrap();
        let from = |m: FromWorker<u64>| serde_json::to_string(&m).unwrap();
        assert_eq!(
            to(ToWorker::Task { id: 7, req: 3 }),
            r#"{"Task":{"id":7,"req":3}}"#
        );
        assert_eq!(
            to(ToWorker::Chunk {
                id: 9,
                items: vec![1, 2, 3]
            }),
            r#"{"Chunk":{"id":9,"items":[1,2,3]}}"#
        );
        assert_eq!(to(ToWorker::Cancel { id: 10 }), r#"{"Cancel":{"id":10}}"#);
        assert_eq!(to(ToWorker::Drain), r#""Drain""#);
        assert_eq!(from(FromWorker::Ready), r#""Ready""#);
        assert_eq!(
            from(FromWorker::Done {
                id: 8,
                result: Err("message".into())
            }),
            r#"{"Done":{"id":8,"result":{"Err":"message"}}}"#
        );
        let items = r#"{"Items":{"id":9,"results":[[0,{"Ok":2}],[2,{"Err":"message"}]]}}"#;
        assert_eq!(
            from(FromWorker::Items {
                id: 9,
                results: vec![(0, Ok(2)), (2, Err("message".into()))]
            }),
            items
        );
        assert_eq!(
            serde_json::from_str::<FromWorker<u64>>(items).unwrap(),
            FromWorker::Items {
                id: 9,
                results: vec![(0, Ok(2)), (2, Err("message".into()))]
            }
        );
        assert_eq!(
            from(FromWorker::Cancelled { id: 10 }),
            r#"{"Cancelled":{"id":10}}"#
        );
    }
}
