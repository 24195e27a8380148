//! The two codecs a channel can speak.

/// How messages are encoded on the wire.
///
/// Both sides must agree; the handshake checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// `u32` LE length, fd count, postcard payload. Compact and fast; carries fds.
    #[default]
    Postcard,
    /// One JSON document per `\n`-terminated line (serde_json's external
    /// tagging for enums). For workers in Python, Node or shell. Cannot carry fds.
    JsonLines,
}

impl Codec {
    /// The name used in the hello and in `FORKYARD_IPC_CODEC`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Postcard => "postcard",
            Codec::JsonLines => "json-lines",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Codec> {
        match name {
            "postcard" => Some(Codec::Postcard),
            "json-lines" => Some(Codec::JsonLines),
            _ => None,
        }
    }
}
