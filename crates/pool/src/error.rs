//! Errors of forkyard-pool.

use std::sync::Arc;
use std::time::Duration;

use forkyard_child::Exit;

/// The cause of a [`PoolError::Protocol`] or [`PoolError::Unavailable`] (and of a
/// [`BuildError::NoWorkers`]): an error with its own causes, shared by every caller it
/// fails, so `{:#}` and anyhow chains show each one (the ipc error, the spawn error, the
/// OS error).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a task did not produce a result. Every submitted task ends with exactly
/// one outcome: its result, or one of these.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker running the task died (after any retries the task had).
    #[error("the worker running the task died: {exit}")]
    WorkerCrashed {
        /// How the worker ended, with its rusage.
        exit: Box<Exit>,
        /// The last lines the worker wrote to stderr, if any.
        stderr_tail: Vec<String>,
    },
    /// The task ran longer than the task timeout; its worker was killed.
    #[error("the task timed out after {after:?}")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The task was cancelled before it ran.
    #[error("the task was cancelled")]
    Cancelled,
    /// `try_call` found the queue full.
    #[error("the queue is full")]
    QueueFull,
    /// The pool is shutting down (or has shut down) and did not run the task.
    #[error("the pool is shutting down")]
    ShuttingDown,
    /// The handler returned an error: its kind (the exception's class in
    /// Python, the error's `name` in Node, or what a Rust handler gave
    /// [`TaskError::new`]), its message and any detail (a traceback or
    /// stack), as they crossed from the worker process, where the error's own
    /// causes stayed.
    ///
    /// Unlike the other variants that carry something, this one has no
    /// `#[source]`: the [`TaskError`] is data from another process (the
    /// handler's answer), not a cause on this side, and its text is already
    /// in this error's own (`the task failed: NotFound: no user 7`). As a
    /// source it would print twice in `{:#}` and anyhow chains. Reach it by
    /// matching:
    ///
    /// ```
    /// use std::error::Error as _;
    /// use forkyard_pool::{PoolError, TaskError};
    ///
    /// // What `pool.call(req).await` gives when the handler failed.
    /// let error = PoolError::Task(TaskError::new("NotFound", "no user 7"));
    /// match &error {
    ///     PoolError::Task(e) if e.kind() == Some("NotFound") => {
    ///         assert_eq!(e.message(), "no user 7")
    ///     }
    ///     other => panic!("expected NotFound, got {other}"),
    /// }
    /// assert_eq!(error.to_string(), "the task failed: NotFound: no user 7");
    /// assert!(error.source().is_none(), "shown once in an error chain");
    /// ```
    #[error("the task failed: {0}")]
    Task(TaskError),
    /// The worker broke the protocol (garbage, wrong version, a reply for a task
    /// it did not have); it was killed and replaced.
    #[error("the worker broke the protocol")]
    Protocol(#[source] Cause),
    /// No worker can be started (the circuit breaker is open), so nothing can run.
    #[error("no worker is available")]
    Unavailable(#[source] Cause),
    /// The request could not be sent to a worker: its frame is larger than
    /// ipc's maximum, or it could not be encoded. The worker never saw it.
    /// ([`Pool::map`](crate::Pool::map) splits a chunk that is too large and
    /// gives this error only to a single item that is.)
    #[error("the request could not be sent to a worker")]
    Unsendable(#[source] Cause),
}

impl PoolError {
    /// The [`FailureKind`](crate::FailureKind) this error is counted under
    /// (`None` for `Cancelled` and `QueueFull`, which are not failures of a task that ran).
    pub fn kind(&self) -> Option<crate::FailureKind> {
        use crate::FailureKind as K;
        Some(match self {
            PoolError::WorkerCrashed { .. } => K::WorkerCrashed,
            PoolError::TimedOut { .. } => K::TimedOut,
            PoolError::ShuttingDown => K::ShuttingDown,
            PoolError::Task(_) => K::Task,
            PoolError::Protocol(_) => K::Protocol,
            PoolError::Unavailable(_) => K::Unavailable,
            PoolError::Unsendable(_) => K::Unsendable,
            PoolError::Cancelled | PoolError::QueueFull => return None,
        })
    }
}

/// A handler's error, as it crossed from the worker: an optional kind, a
/// message, and an optional detail.
///
/// - **kind**: what sort of error, for a program to match on: the
///   exception's class name in Python (`ValueError`, or `mymodule.Refused`
///   for a class of a module), the error's `code` when it has one
///   (`ENOENT`), else its `name` (`TypeError`) in Node, or what a Rust handler named with
///   [`TaskError::new`]. `None` when the worker gave none: a Rust handler
///   that returned a plain error (any other `Display` type: a `String`, an
///   `io::Error`), or an older worker that sends only a message.
/// - **message**: the error's text (`str(exc)`, `err.message`,
///   `e.to_string()`).
/// - **detail**: where it came from, for a human: Python's formatted
///   traceback, Node's `err.stack`. At most [`TaskError::DETAIL_MAX`] bytes:
///   a longer one keeps its beginning and its end (where Python puts the
///   innermost frame) around a note of how much was cut, so that a deep
///   stack never makes a result too large to send.
///
/// `Display` shows `kind: message` (or the message alone), the form errors
/// had before they had a kind. On the wire (see [`protocol`](crate::protocol))
/// it is `{"kind":..,"message":..,"detail":..}` in JSON, kind and detail
/// left out when absent; a bare string, the older form, is read as a
/// message without kind.
///
/// ```
/// use forkyard_pool::TaskError;
///
/// let e = TaskError::new("NotFound", "no such user").with_detail("at lookup()");
/// assert_eq!(e.kind(), Some("NotFound"));
/// assert_eq!(e.message(), "no such user");
/// assert_eq!(e.detail(), Some("at lookup()"));
/// assert_eq!(e.to_string(), "NotFound: no such user");
/// assert_eq!(TaskError::untyped("out of stock").to_string(), "out of stock");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TaskError(Box<TaskErrorParts>);

/// Boxed: errors are rare and results are many, so a `Result<Resp, TaskError>`
/// stays one pointer wide on its error side.
#[derive(Clone, PartialEq, Eq)]
struct TaskErrorParts {
    kind: Option<String>,
    message: String,
    detail: Option<String>,
}

impl TaskError {
    /// The most bytes of detail kept (16 KiB); see [`TaskError::with_detail`].
    pub const DETAIL_MAX: usize = 16 * 1024;

    /// The kind of a Rust handler's panic (the worker catches it and lives
    /// on): see [`TaskError::is_panic`].
    pub const PANIC: &'static str = "Panic";

    /// The kind of a result the worker could not send, from Rust, Python and
    /// Node alike: larger than a frame, or with no form in the codec (a
    /// Python set, a Node BigInt have no JSON). See
    /// [`TaskError::is_unsendable`].
    pub const UNSENDABLE: &'static str = "Unsendable";

    /// An error of this kind with this message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> TaskError {
        TaskError(Box::new(TaskErrorParts {
            kind: Some(kind.into()),
            message: message.into(),
            detail: None,
        }))
    }

    /// An error with a message and no kind.
    pub fn untyped(message: impl Into<String>) -> TaskError {
        TaskError(Box::new(TaskErrorParts {
            kind: None,
            message: message.into(),
            detail: None,
        }))
    }

    /// The same error with this detail (a traceback, a stack, a context),
    /// cut to at most [`TaskError::DETAIL_MAX`] bytes: its first 4 KiB and
    /// its last 12 KiB or so, with a line saying how many bytes were cut
    /// between them.
    pub fn with_detail(mut self, detail: impl Into<String>) -> TaskError {
        self.0.detail = Some(bound_detail(detail.into()));
        self
    }

    /// What sort of error it is, if the worker said.
    pub fn kind(&self) -> Option<&str> {
        self.0.kind.as_deref()
    }

    /// Whether the handler panicked: kind [`TaskError::PANIC`].
    pub fn is_panic(&self) -> bool {
        self.kind() == Some(TaskError::PANIC)
    }

    /// Whether the handler's result could not be sent: kind
    /// [`TaskError::UNSENDABLE`].
    pub fn is_unsendable(&self) -> bool {
        self.kind() == Some(TaskError::UNSENDABLE)
    }

    /// The error's text.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where the error came from (a traceback, a stack), if the worker sent it.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }
}

/// `detail` cut to at most [`TaskError::DETAIL_MAX`] bytes, on character
/// boundaries: the head and the tail, with a note of what was cut between.
fn bound_detail(detail: String) -> String {
    const HEAD: usize = 4 * 1024;
    if detail.len() <= TaskError::DETAIL_MAX {
        return detail;
    }
    let head_end = floor_char_boundary(&detail, HEAD);
    // The note is at most 40 bytes; the tail gets what is left.
    let tail_len = TaskError::DETAIL_MAX - HEAD - 40;
    let mut tail_start = detail.len() - tail_len;
    while !detail.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let cut = tail_start - head_end;
    format!(
        "{}\n[... {cut} bytes cut ...]\n{}",
        &detail[..head_end],
        &detail[tail_start..]
    )
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl From<String> for TaskError {
    /// A message without kind.
    fn from(message: String) -> TaskError {
        TaskError::untyped(message)
    }
}

impl From<&str> for TaskError {
    /// A message without kind.
    fn from(message: &str) -> TaskError {
        TaskError::untyped(message)
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind(), self.message()) {
            (Some(kind), "") => f.write_str(kind),
            (Some(kind), message) => write!(f, "{kind}: {message}"),
            (None, message) => f.write_str(message),
        }
    }
}

impl std::fmt::Debug for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("TaskError");
        if let Some(kind) = self.kind() {
            s.field("kind", &kind);
        }
        s.field("message", &self.message());
        if let Some(detail) = self.detail() {
            s.field("detail", &detail);
        }
        s.finish()
    }
}

impl std::error::Error for TaskError {}

// The wire form. In a human-readable format (JSON, for workers in other
// languages) an object whose absent fields are left out, and a bare string
// is accepted as a message (workers from before kinds existed). In a binary
// format (postcard, between Rust processes) a plain struct of three fields:
// such formats cannot tell a string from a struct without being told which.
const FIELDS: &[&str] = &["kind", "message", "detail"];

impl serde::Serialize for TaskError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = &*self.0;
        let readable = serializer.is_human_readable();
        let n = if readable {
            1 + usize::from(p.kind.is_some()) + usize::from(p.detail.is_some())
        } else {
            3
        };
        let mut s = serializer.serialize_struct("TaskError", n)?;
        if readable {
            if let Some(kind) = &p.kind {
                s.serialize_field("kind", kind)?;
            } else {
                s.skip_field("kind")?;
            }
            s.serialize_field("message", &p.message)?;
            if let Some(detail) = &p.detail {
                s.serialize_field("detail", detail)?;
            } else {
                s.skip_field("detail")?;
            }
        } else {
            s.serialize_field("kind", &p.kind)?;
            s.serialize_field("message", &p.message)?;
            s.serialize_field("detail", &p.detail)?;
        }
        s.end()
    }
}

impl<'de> serde::Deserialize<'de> for TaskError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TaskError, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(TaskErrorVisitor)
        } else {
            deserializer.deserialize_struct("TaskError", FIELDS, TaskErrorVisitor)
        }
    }
}

struct TaskErrorVisitor;

impl TaskErrorVisitor {
    fn parts(kind: Option<String>, message: String, detail: Option<String>) -> TaskError {
        TaskError(Box::new(TaskErrorParts {
            kind,
            message,
            detail: detail.map(bound_detail),
        }))
    }
}

impl<'de> serde::de::Visitor<'de> for TaskErrorVisitor {
    type Value = TaskError;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a task error: {\"kind\",\"message\",\"detail\"} or a message string")
    }

    fn visit_str<E: serde::de::Error>(self, message: &str) -> Result<TaskError, E> {
        Ok(TaskError::untyped(message))
    }

    fn visit_string<E: serde::de::Error>(self, message: String) -> Result<TaskError, E> {
        Ok(TaskError::untyped(message))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TaskError, A::Error> {
        use serde::de::Error;
        let kind = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let message = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let detail = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(2, &self))?;
        Ok(Self::parts(kind, message, detail))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TaskError, A::Error> {
        use serde::de::Error;
        let (mut kind, mut message, mut detail) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "kind" => put(&mut kind, map.next_value::<Option<String>>()?, "kind")?,
                "message" => put(&mut message, map.next_value::<String>()?, "message")?,
                "detail" => put(&mut detail, map.next_value::<Option<String>>()?, "detail")?,
                // Room for more fields from newer workers.
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let message = message.ok_or_else(|| A::Error::missing_field("message"))?;
        Ok(Self::parts(kind.flatten(), message, detail.flatten()))
    }
}

fn put<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    value: T,
    field: &'static str,
) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(E::duplicate_field(field)),
    }
}

/// Why an operator's request ([`Pool::resize`](crate::Pool::resize),
/// [`Pool::recycle`](crate::Pool::recycle)) was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A pool has at least one worker.
    #[error("a pool needs at least 1 worker, not {0}")]
    ZeroSize(usize),
    /// No ready worker has this id.
    #[error("no ready worker has id {0}")]
    NoSuchWorker(u64),
    /// The pool is shutting down.
    #[error("the pool is shutting down")]
    ShuttingDown,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No worker command was given.
    #[error("no worker command: call .command(..) or .self_exec(..)")]
    NoCommand,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// `build` was called outside a tokio runtime.
    #[error("build must be called within a tokio runtime")]
    NoRuntime,
    /// The current executable could not be found for `self_exec`.
    #[error("cannot find the current executable")]
    CurrentExe(#[source] std::io::Error),
    /// Not one worker became ready; the pool gave up (its circuit breaker opened).
    #[error("no worker could be started")]
    NoWorkers(#[source] Cause),
}

/// A reason the pool gives, with its causes; cheap to clone into every outcome it
/// decides. Compared by what it says, so the pure core's tests can compare outcomes.
#[derive(Clone)]
pub(crate) struct Why(Cause);

impl Why {
    /// A reason of the pool's own, with no deeper cause.
    pub(crate) fn new(message: impl Into<String>) -> Why {
        Why(Arc::new(Because {
            message: message.into(),
            source: None,
        }))
    }

    /// A reason of the pool's own, caused by `cause`.
    pub(crate) fn because(message: impl Into<String>, cause: &Why) -> Why {
        Why(Arc::new(Because {
            message: message.into(),
            source: Some(cause.0.clone()),
        }))
    }

    /// An error from below (ipc, spawning), kept whole.
    pub(crate) fn of(error: impl std::error::Error + Send + Sync + 'static) -> Why {
        Why(Arc::new(error))
    }

    pub(crate) fn cause(&self) -> Cause {
        self.0.clone()
    }
}

impl PartialEq for Why {
    fn eq(&self, other: &Why) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Why {}

impl std::fmt::Debug for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// A message with an optional cause.
#[derive(Debug)]
struct Because {
    message: String,
    source: Option<Cause>,
}

impl std::fmt::Display for Because {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Because {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
