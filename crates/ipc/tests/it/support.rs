//! Helpers shared by the test modules.

use std::io::Write;
use std::os::unix::net::UnixStream;

use forkyard_ipc::{Channel, Codec, Message, TypeInfo};
use forkyard_testkit as tk;

/// A current-thread runtime for one test.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A two-thread runtime, for tests whose parent side runs several tasks.
pub(crate) fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The fixture worker binary (src/bin/forkyard-ipc-fixture.rs).
pub(crate) fn fixture(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_forkyard-ipc-fixture"));
    cmd.args(args);
    cmd
}

/// The hello line a well-behaved peer sending `Tx` and receiving `Rx` would send.
pub(crate) fn hello_line<Tx: Message, Rx: Message>(codec: Codec) -> Vec<u8> {
    let info = |t: TypeInfo| serde_json::json!({"name": t.name, "fingerprint": t.fingerprint});
    let mut line = serde_json::to_vec(&serde_json::json!({
        "forkyard_ipc": forkyard_ipc::PROTOCOL_VERSION,
        "codec": codec.name(),
        "sends": info(TypeInfo::of::<Tx>()),
        "receives": info(TypeInfo::of::<Rx>()),
    }))
    .unwrap();
    line.push(b'\n');
    line
}

/// A channel receiving `Rx` whose peer is a raw socket that has already sent a
/// valid hello: the test writes whatever bytes it likes after it.
pub(crate) fn raw_peer<Rx: Message>(codec: Codec) -> (Channel<(), Rx>, UnixStream) {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(&hello_line::<Rx, ()>(codec)).unwrap();
    let chan = Channel::from_stream_with(
        a,
        forkyard_ipc::Config::new()
            .codec(codec)
            .max_frame_len(1 << 20),
    )
    .unwrap();
    (chan, b)
}

/// One postcard frame as the wire format documents it.
pub(crate) fn postcard_frame(n_fds: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(n_fds);
    f.extend_from_slice(payload);
    f
}

/// Number of fds this process has open.
pub(crate) fn my_fd_count() -> usize {
    tk::fd_count(std::process::id())
}

/// The leak check, the deadline and the polling helpers are testkit's, shared by every
/// crate's tests.
pub(crate) use forkyard_testkit::{Baseline, DEADLINE, wait_for, wait_for_async};
