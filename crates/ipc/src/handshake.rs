//! The hello each side sends first, and the type fingerprints it carries.
//!
//! The hello is one JSON line whatever the codec, so a person (or a Python
//! worker) can read it:
//!
//! ```text
//! {"forkyard_ipc":1,"codec":"postcard","sends":{"name":"app::ToWorker","fingerprint":"9f1c…"},"receives":{…}}
//! ```
//!
//! A fingerprint is a hash of the *structure* of a type as serde sees it
//! (container names, field names and types, variant names and contents, at
//! every depth), traced by `shape.rs`. Two builds of the same type agree;
//! adding a field, renaming a variant or changing a field's type anywhere
//! changes it. Types that cannot be traced (those needing `deserialize_any`,
//! such as untagged enums) fall back to a hash of the type's name.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::Message;
use crate::codec::Codec;
use crate::error::HandshakeError;

/// Protocol version spoken by this crate. Bumped on any wire change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest hello line accepted.
pub(crate) const MAX_HELLO_LEN: usize = 16 * 1024;

/// A message type's name and structural fingerprint, as exchanged in the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    /// `std::any::type_name` of the type (informational; not compared).
    pub name: String,
    /// Hex of a 64-bit FNV-1a hash of the type's serde structure.
    pub fingerprint: String,
}

impl TypeInfo {
    /// The name and fingerprint of `T`, computed once per type and cached.
    ///
    /// A worker written in another language declares these in its hello; print
    /// them with `println!("{}", TypeInfo::of::<MyMsg>())`.
    pub fn of<T: Message>() -> TypeInfo {
        static CACHE: OnceLock<Mutex<HashMap<TypeId, TypeInfo>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(info) = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&TypeId::of::<T>())
        {
            return info.clone();
        }
        let info = TypeInfo {
            name: std::any::type_name::<T>().to_owned(),
            fingerprint: format!("{:016x}", fnv1a(structure::<T>().as_bytes())),
        };
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(TypeId::of::<T>(), info.clone());
        info
    }
}

impl fmt::Display for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` (fingerprint {})", self.name, self.fingerprint)
    }
}

/// A canonical text of `T`'s structure, or its name when it cannot be traced.
fn structure<T: Message>() -> String {
    crate::fd::while_tracing(crate::shape::trace::<T>)
        .unwrap_or_else(|| format!("name:{}", std::any::type_name::<T>()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The hello line's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The magic key: its presence says "forkyard-ipc", its value is the version.
    pub(crate) forkyard_ipc: u32,
    pub(crate) codec: String,
    pub(crate) sends: TypeInfo,
    pub(crate) receives: TypeInfo,
}

impl Hello {
    pub(crate) fn ours<Tx: Message, Rx: Message>(codec: Codec) -> Hello {
        Hello {
            forkyard_ipc: PROTOCOL_VERSION,
            codec: codec.name().to_owned(),
            sends: TypeInfo::of::<Tx>(),
            receives: TypeInfo::of::<Rx>(),
        }
    }

    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a hello always serializes");
        line.push(b'\n');
        line
    }

    /// Parses the peer's line (without its newline) and checks it against ours.
    pub(crate) fn check(ours: &Hello, line: &[u8]) -> Result<Hello, HandshakeError> {
        let bad_magic = || HandshakeError::BadMagic {
            first_bytes: String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned(),
        };
        // Read the version alone first, so a future hello with other fields still
        // gets a clear version error rather than a parse error.
        #[derive(Deserialize)]
        struct Magic {
            forkyard_ipc: u32,
        }
        let magic: Magic = serde_json::from_slice(line).map_err(|_| bad_magic())?;
        if magic.forkyard_ipc != ours.forkyard_ipc {
            return Err(HandshakeError::Version {
                ours: ours.forkyard_ipc,
                theirs: magic.forkyard_ipc,
            });
        }
        let theirs: Hello = serde_json::from_slice(line).map_err(|_| bad_magic())?;
        if theirs.codec != ours.codec {
            return Err(HandshakeError::Codec {
                ours: ours.codec.clone(),
                theirs: theirs.codec,
            });
        }
        if theirs.receives.fingerprint != ours.sends.fingerprint {
            return Err(HandshakeError::Types {
                direction: "send",
                peer_direction: "receives",
                ours: Box::new(ours.sends.clone()),
                theirs: Box::new(theirs.receives),
            });
        }
        if theirs.sends.fingerprint != ours.receives.fingerprint {
            return Err(HandshakeError::Types {
                direction: "receive",
                peer_direction: "sends",
                ours: Box::new(ours.receives.clone()),
                theirs: Box::new(theirs.sends),
            });
        }
        Ok(theirs)
    }
}
