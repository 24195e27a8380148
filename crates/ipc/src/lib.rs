//! Typed messages and file descriptors between processes (lesson below is being written).
#![deny(missing_docs)]

pub mod balance;
mod channel;
mod codec;
mod error;
pub mod fd;
mod frame;
pub mod handoff;
mod handshake;
pub mod pubsub;
pub mod rpc;
pub(crate) mod spawn;

pub use channel::{Channel, Config, Receiver, Sender};
pub use codec::Codec;
pub use error::{Error, HandshakeError, Result};
pub use handshake::{PROTOCOL_VERSION, TypeInfo};
pub use spawn::{IPC_CODEC_ENV, IPC_FD, IPC_FD_ENV, spawn, spawn_with};

/// What a channel can carry: any serde type that can cross threads.
///
/// Implemented for every such type; you never implement it yourself.
pub trait Message: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Message for T {}
