//! File descriptors as typed message fields.
//!
//! Put `#[serde(with = "forkyard_ipc::fd")]` on an [`OwnedFd`] field (or
//! `#[serde(with = "forkyard_ipc::fd::option")]` on an `Option<OwnedFd>`), and the
//! channel sends the descriptor as `SCM_RIGHTS` ancillary data with the frame;
//! the payload holds only its index in the frame's fd table. The receiver gets
//! a fresh descriptor (close-on-exec) in the same field.
//!
//! ```
//! use std::os::fd::OwnedFd;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! enum ToWorker {
//!     Connection {
//!         id: u64,
//!         #[serde(with = "forkyard_ipc::fd")]
//!         socket: OwnedFd,
//!     },
//! }
//! ```
//!
//! Sending takes the message by reference, so the sender keeps its descriptor:
//! the channel duplicates it for the kernel and closes the duplicate once sent.
//! Drop yours when you are done with it.
//!
//! Outside a channel (say, serializing the same message with `serde_json`), an fd
//! field is a serialization error: a number on its own would be meaningless.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::OwnedFd;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};

thread_local! {
    /// Fds collected while a channel encodes a message.
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Fds received with the frame being decoded; `None` once taken.
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// Set while the handshake traces a type's structure.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Serializes `f` with an fd sink installed; returns what it produced and the
/// duplicated fds in index order.
pub(crate) fn collect_outgoing<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let previous = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let result = f();
    let fds = OUTGOING.with(|o| o.replace(previous)).unwrap_or_default();
    (result, fds)
}

/// Deserializes with `fds` available to fd fields; returns the result and how many
/// fds the message did not claim (those are closed here).
pub(crate) fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> (R, usize) {
    let previous = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let result = f();
    let left = INCOMING
        .with(|i| i.replace(previous))
        .map(|v| v.into_iter().flatten().count())
        .unwrap_or(0);
    (result, left)
}

/// Runs `f` with fd fields deserializing to a placeholder, for type tracing.
pub(crate) fn while_tracing<R>(f: impl FnOnce() -> R) -> R {
    let previous = TRACING.with(|t| t.replace(true));
    let result = f();
    TRACING.with(|t| t.set(previous));
    result
}

/// Serializes an fd field (use through `#[serde(with = "forkyard_ipc::fd")]`).
pub fn serialize<S: Serializer>(fd: &OwnedFd, serializer: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| -> Result<u32, String> {
        let mut o = o.borrow_mut();
        let sink = o.as_mut().ok_or_else(|| {
            "a file descriptor field can only be serialized by a forkyard-ipc channel".to_owned()
        })?;
        let dup = fd
            .try_clone()
            .map_err(|e| format!("cannot duplicate file descriptor: {e}"))?;
        sink.push(dup);
        u32::try_from(sink.len() - 1).map_err(|_| "too many file descriptors".to_owned())
    });
    match index {
        Ok(index) => serializer.serialize_newtype_struct("Fd", &index),
        Err(msg) => Err(ser::Error::custom(msg)),
    }
}

/// Deserializes an fd field (use through `#[serde(with = "forkyard_ipc::fd")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OwnedFd, D::Error> {
    deserializer.deserialize_newtype_struct("Fd", FdVisitor)
}

struct FdVisitor;

impl<'de> Visitor<'de> for FdVisitor {
    type Value = OwnedFd;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a file descriptor index")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<OwnedFd, D::Error> {
        let index = <u32 as serde::Deserialize>::deserialize(d)?;
        take(index)
    }

    fn visit_u32<E: de::Error>(self, index: u32) -> Result<OwnedFd, E> {
        take(index)
    }

    fn visit_u64<E: de::Error>(self, index: u64) -> Result<OwnedFd, E> {
        take(u32::try_from(index).map_err(|_| E::custom("fd index out of range"))?)
    }
}

fn take<E: de::Error>(index: u32) -> Result<OwnedFd, E> {
    if TRACING.with(Cell::get) {
        // Type tracing needs a value of every field; any real fd will do, and it
        // is closed as soon as the traced sample is dropped.
        return std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| E::custom(format!("tracing placeholder: {e}")));
    }
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let table = i
            .as_mut()
            .ok_or_else(|| E::custom("file descriptor field outside a forkyard-ipc channel"))?;
        let n = table.len();
        let slot = table
            .get_mut(index as usize)
            .ok_or_else(|| E::custom(format!("fd index {index} but the frame carries {n}")))?;
        slot.take()
            .ok_or_else(|| E::custom(format!("fd index {index} used twice")))
    })
}

/// `#[serde(with = "forkyard_ipc::fd::option")]` for `Option<OwnedFd>` fields.
pub mod option {
    use std::os::fd::OwnedFd;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Out<'a>(&'a OwnedFd);
    impl Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }
    struct In(OwnedFd);
    impl<'de> Deserialize<'de> for In {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(In)
        }
    }

    /// Serializes an optional fd field.
    pub fn serialize<S: Serializer>(fd: &Option<OwnedFd>, s: S) -> Result<S::Ok, S::Error> {
        fd.as_ref().map(Out).serialize(s)
    }

    /// Deserializes an optional fd field.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OwnedFd>, D::Error> {
        Ok(Option::<In>::deserialize(d)?.map(|i| i.0))
    }
}

/// `#[serde(with = "forkyard_ipc::fd::vec")]` for `Vec<OwnedFd>` fields (at most
/// 253 fds per message, the kernel's `SCM_MAX_FD`).
pub mod vec {
    use std::fmt;
    use std::os::fd::OwnedFd;

    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Out<'a>(&'a OwnedFd);
    impl Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }
    struct In(OwnedFd);
    impl<'de> Deserialize<'de> for In {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(In)
        }
    }

    /// Serializes a list of fds.
    pub fn serialize<S: Serializer>(fds: &[OwnedFd], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(fds.len()))?;
        for fd in fds {
            seq.serialize_element(&Out(fd))?;
        }
        seq.end()
    }

    /// Deserializes a list of fds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OwnedFd>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<OwnedFd>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of file descriptors")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<OwnedFd>, A::Error> {
                // No pre-allocation from the announced length: it is untrusted input.
                let mut fds = Vec::new();
                while let Some(In(fd)) = seq.next_element()? {
                    fds.push(fd);
                }
                Ok(fds)
            }
        }
        d.deserialize_seq(V)
    }
}
