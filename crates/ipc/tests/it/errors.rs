//! Every error message, as a user reads it (the chain of causes included).

use std::time::Duration;

use forkyard_ipc::{Error, HandshakeError, TypeInfo};

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!("\n    caused by: {c}"));
        cause = c.source();
    }
    text
}

#[test]
fn error_messages() {
    let info = |name: &str, fp: &str| {
        Box::new(TypeInfo {
            name: name.into(),
            fingerprint: fp.into(),
        })
    };
    let errors = vec![
        Error::Io {
            op: "sending",
            source: std::io::Error::from_raw_os_error(104),
        },
        Error::Handshake(HandshakeError::BadMagic {
            first_bytes: "GET / HTTP/1.1".into(),
        }),
        Error::Handshake(HandshakeError::Version { ours: 1, theirs: 2 }),
        Error::Handshake(HandshakeError::Codec {
            ours: "postcard".into(),
            theirs: "json-lines".into(),
        }),
        Error::Handshake(HandshakeError::Types {
            direction: "send",
            peer_direction: "receives",
            ours: info("app::ToWorker", "00000000000000aa"),
            theirs: info("worker::ToWorker", "00000000000000bb"),
        }),
        Error::Handshake(HandshakeError::PeerClosed),
        Error::Handshake(HandshakeError::HelloTooLong { max: 16384 }),
        Error::Handshake(HandshakeError::Timeout(Duration::from_secs(10))),
        Error::ZeroLengthFrame { offset: 128 },
        Error::FrameTooLarge {
            len: 4_294_967_294,
            max: 16 << 20,
        },
        Error::PeerClosedMidFrame { have: 4 },
        Error::FdMismatch {
            declared: 2,
            received: 0,
        },
        Error::FdsTruncated {
            declared: 3,
            received: 1,
        },
        Error::TooManyFds {
            count: 254,
            max: 253,
        },
        Error::FdsNotSupported,
        Error::Closed,
        Error::Broken(forkyard_ipc::Earlier::of(&Error::ZeroLengthFrame {
            offset: 128,
        })),
        Error::SenderClosed,
        Error::NoRuntime,
        Error::NoParentChannel {
            reason: "FORKYARD_IPC_FD is not set".into(),
        },
        Error::DeadlineExceeded(Duration::from_millis(250)),
        Error::Remote("ValueError: bad input".into()),
        Error::HandoffInProgress,
        Error::NotReady {
            generation: 3,
            reason: "worker 1 (pid N) exited (exited with code 3) before it was ready".into(),
        },
    ];
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                chain(e),
                if e.is_fatal() { "  [fatal]" } else { "" }
            )
        })
        .collect();
    insta::assert_snapshot!(text.join("\n"));
}
