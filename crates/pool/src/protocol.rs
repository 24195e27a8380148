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
//! worker -> pool   {"Done":{"id":8,"result":{"Err":{"kind":"ValueError","message":"bad input","detail":"Traceback ..."}}}}
//! worker -> pool   {"Done":{"id":8,"result":{"Err":{"message":"bad input"}}}}
//!
//! pool -> worker   {"Chunk":{"id":9,"items":[<request>,<request>,<request>]}}
//! worker -> pool   {"Items":{"id":9,"results":[[0,{"Ok":<response>}],[2,{"Err":{"kind":"KeyError","message":"x"}}]]}}
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
//!   carries the handler's error (see *Errors* below); the worker keeps serving.
//! - **Chunk** (a piece of a batch, `Pool::map`). One
//!   message carries many items; the worker runs its handler once per item
//!   (in order or concurrently, as it likes) and answers every item exactly
//!   once with `Items` messages. Each result is an `[index, result]` pair,
//!   `index` being the item's position in `items`, counted from 0. One `Items`
//!   may carry any set of results, in any order; a chunk is answered when
//!   every index has been answered once. A chunk gets no `Done`. A worker that
//!   sends results while it works (say every few milliseconds, and at once
//!   when an item has to wait) lets the pool hand them to the caller before
//!   the chunk ends, and keep them if it dies later: the pool re-runs only
//!   the items that got no result, and never runs an answered item again.
//! - **Errors.** An `Err` is an object with a `message` (a string), and
//!   optionally a `kind` (a string a program can match on: the exception's
//!   class, the error's name or code) and a `detail` (a string for a human:
//!   a traceback, a stack), leaving out what it does not have. A worker
//!   keeps a detail to about [`TaskError::DETAIL_MAX`](crate::TaskError::DETAIL_MAX)
//!   bytes (its beginning and its end); the pool cuts a longer one the same
//!   way. A bare string, `{"Err":"message"}`, the form before errors had
//!   kinds, is still read: a message without kind. The pool gives the error
//!   to the caller as [`PoolError::Task`](crate::PoolError::Task) with a
//!   [`TaskError`]. (Between Rust processes, over
//!   postcard, it is a struct of three fields: `kind`, `message`, `detail`.)
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

use crate::error::TaskError;

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
        /// The handler's result.
        result: Result<Resp, TaskError>,
    },
    /// Answers to some of a chunk's items.
    Items {
        /// The id from the `Chunk`.
        id: u64,
        /// `(index, result)` pairs: the item's position in the chunk's
        /// `items`, and the handler's result for it.
        results: Vec<(u32, Result<Resp, TaskError>)>,
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

    fn to(m: ToWorker<u64>) -> String {
        serde_json::to_string(&m).unwrap()
    }

    fn from(m: FromWorker<u64>) -> String {
        serde_json::to_string(&m).unwrap()
    }

    fn parse(text: &str) -> FromWorker<u64> {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The JSON-lines shapes the module docs promise to workers in other languages.
    #[test]
    fn json_shapes_are_the_documented_ones() {
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
        let typed = TaskError::new("ValueError", "bad input").with_detail("Traceback ...");
        let done = r#"{"Done":{"id":8,"result":{"Err":{"kind":"ValueError","message":"bad input","detail":"Traceback ..."}}}}"#;
        let msg = FromWorker::Done {
            id: 8,
            result: Err(typed),
        };
        assert_eq!(from(msg.clone()), done);
        assert_eq!(parse(done), msg);
        let untyped = FromWorker::Done {
            id: 8,
            result: Err(TaskError::untyped("bad input")),
        };
        let done = r#"{"Done":{"id":8,"result":{"Err":{"message":"bad input"}}}}"#;
        assert_eq!(from(untyped.clone()), done);
        assert_eq!(parse(done), untyped);
        let items = r#"{"Items":{"id":9,"results":[[0,{"Ok":2}],[2,{"Err":{"kind":"KeyError","message":"x"}}]]}}"#;
        let msg = FromWorker::Items {
            id: 9,
            results: vec![(0, Ok(2)), (2, Err(TaskError::new("KeyError", "x")))],
        };
        assert_eq!(from(msg.clone()), items);
        assert_eq!(parse(items), msg);
        assert_eq!(
            from(FromWorker::Cancelled { id: 10 }),
            r#"{"Cancelled":{"id":10}}"#
        );
    }

    /// Workers from before errors had kinds send a bare string: still read, as
    /// a message without kind, in `Done` and in `Items`; so are explicit nulls
    /// and fields this pool does not know.
    #[test]
    fn older_and_looser_error_forms_still_parse() {
        let cases: &[(&str, Option<&str>, &str, Option<&str>)] = &[
            (
                r#""ValueError: bad input""#,
                None,
                "ValueError: bad input",
                None,
            ),
            (r#"{"message":"m"}"#, None, "m", None),
            (
                r#"{"kind":null,"message":"m","detail":null}"#,
                None,
                "m",
                None,
            ),
            (
                r#"{"detail":"d","message":"m","kind":"K"}"#,
                Some("K"),
                "m",
                Some("d"),
            ),
            (
                r#"{"kind":"K","message":"","code":42}"#,
                Some("K"),
                "",
                None,
            ),
        ];
        for &(err, kind, message, detail) in cases {
            for text in [
                format!(r#"{{"Done":{{"id":1,"result":{{"Err":{err}}}}}}}"#),
                format!(r#"{{"Items":{{"id":1,"results":[[0,{{"Err":{err}}}]]}}}}"#),
            ] {
                let e = match parse(&text) {
                    FromWorker::Done { result: Err(e), .. } => e,
                    FromWorker::Items { mut results, .. } => results.remove(0).1.unwrap_err(),
                    other => panic!("{text}: {other:?}"),
                };
                assert_eq!(
                    (e.kind(), e.message(), e.detail()),
                    (kind, message, detail),
                    "{text}"
                );
            }
        }
    }

    /// An error without a message, a message that is not a string, or a field
    /// given twice is a decoding error (a protocol error), not a guess.
    #[test]
    fn malformed_errors_are_refused() {
        for err in [
            r#"{"kind":"K"}"#,
            r#"{"message":3}"#,
            r#"{"message":"a","message":"b"}"#,
            "17",
            "[]",
        ] {
            let text = format!(r#"{{"Done":{{"id":1,"result":{{"Err":{err}}}}}}}"#);
            assert!(
                serde_json::from_str::<FromWorker<u64>>(&text).is_err(),
                "{text}"
            );
        }
    }

    fn task_error(kind: Option<String>, message: String, detail: Option<String>) -> TaskError {
        let e = match kind {
            Some(kind) => TaskError::new(kind, message),
            None => TaskError::untyped(message),
        };
        match detail {
            Some(detail) => e.with_detail(detail),
            None => e,
        }
    }

    proptest::proptest! {
        /// Any error survives the JSON wire whole, in `Done` and in `Items`.
        #[test]
        fn task_errors_round_trip_through_json(
            kind in proptest::option::of(".{0,12}"),
            message in ".{0,40}",
            detail in proptest::option::of(".{0,40}"),
        ) {
            let e = task_error(kind, message, detail);
            for msg in [
                FromWorker::Done { id: 3, result: Err(e.clone()) },
                FromWorker::Items { id: 4, results: vec![(1, Err(e.clone())), (0, Ok(9))] },
            ] {
                let text = serde_json::to_string(&msg).unwrap();
                proptest::prop_assert_eq!(parse(&text), msg);
            }
        }

        /// A detail is kept whole up to `DETAIL_MAX` bytes; past it, it is
        /// at most `DETAIL_MAX` bytes that begin and end as it did.
        #[test]
        fn a_detail_is_bounded_and_keeps_its_ends(
            unit in "[a-zé€😀\n]{1,4}",
            copies in 1usize..12_000,
        ) {
            let detail = unit.repeat(copies);
            let e = TaskError::untyped("m").with_detail(detail.clone());
            let kept = e.detail().unwrap();
            if detail.len() <= TaskError::DETAIL_MAX {
                proptest::prop_assert_eq!(kept, detail.as_str());
            } else {
                proptest::prop_assert!(kept.len() <= TaskError::DETAIL_MAX);
                let (head, tail) = kept.split_once("\n[... ").unwrap();
                let tail = tail.split_once(" ...]\n").unwrap().1;
                proptest::prop_assert!(detail.starts_with(head) && head.len() >= 4 * 1024 - 4);
                proptest::prop_assert!(detail.ends_with(tail) && tail.len() >= 12 * 1024 - 60);
            }
        }
    }

    /// A detail longer than the bound keeps its head and its tail, on
    /// character boundaries, with the count of what was cut; whether it is cut
    /// by the worker (`with_detail`) or on arrival (a foreign worker's).
    #[test]
    fn a_long_detail_is_cut_to_its_head_and_tail() {
        let long: String = "é".repeat(20_000) + "the innermost frame";
        let check = |e: &TaskError| {
            let detail = e.detail().unwrap();
            assert!(detail.len() <= TaskError::DETAIL_MAX, "{}", detail.len());
            assert!(detail.starts_with("ééé"));
            assert!(detail.ends_with("the innermost frame"));
            let cut: usize = detail
                .split("[... ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no note of the cut"));
            let note = format!("\n[... {cut} bytes cut ...]\n").len();
            assert_eq!(
                detail.len() - note + cut,
                long.len(),
                "the note counts what is gone"
            );
        };
        check(&TaskError::untyped("m").with_detail(long.clone()));
        let wire = serde_json::json!({"Done": {"id": 1, "result": {"Err": {"message": "m", "detail": long}}}});
        match serde_json::from_value::<FromWorker<u64>>(wire).unwrap() {
            FromWorker::Done { result: Err(e), .. } => check(&e),
            other => panic!("{other:?}"),
        }
        let short = TaskError::untyped("m").with_detail("short");
        assert_eq!(short.detail(), Some("short"));
    }
}
