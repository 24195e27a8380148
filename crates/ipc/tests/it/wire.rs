//! Message types shared by the tests and the fixture worker
//! (`src/bin/forkyard-ipc-fixture.rs` includes this file with `#[path]`).

use serde::{Deserialize, Serialize};

/// What the parent asks an rpc fixture worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Answer `n`.
    Echo(u64),
    /// Sleep `ms`, then answer `value`.
    Sleep { ms: u64, value: u64 },
    /// Ask the parent `Ask::Double(n)` and answer its reply plus one.
    AskParent(u64),
    /// Never answer; remembers `tag` as started, and as cancelled once its
    /// handler is dropped before finishing.
    Hang { tag: u64 },
    /// How many `Hang`s with `tag` were cancelled (0 or 1).
    WasCancelled { tag: u64 },
    /// Fail with this message.
    Fail(String),
    /// Exit the process at once, with this request (and any other) in flight.
    Die,
    /// Answer the worker's pid.
    Pid,
}

/// What an rpc fixture worker asks the parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Ask {
    /// Answer `2 * n`.
    Double(u64),
}
