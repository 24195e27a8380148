//! Helpers shared by the test modules.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use forkyard_ipc::{Channel, Codec, Message, TypeInfo};
use forkyard_testkit as tk;

/// Generous bound for anything a test waits on: a failure bound, not a timing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

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

/// This process's fds before a test that spawns (taken after one warm-up
/// spawn, so the owner-death watchdog started by the first spawn is counted).
pub(crate) struct Baseline {
    fds: usize,
}

impl Baseline {
    pub(crate) async fn take() -> Baseline {
        let mut warm = std::process::Command::new("/bin/true");
        let mut child = forkyard_child::Child::spawn(&mut warm).expect("warm-up spawn");
        child.wait().await.expect("warm-up wait");
        drop(child);
        Baseline { fds: my_fd_count() }
    }

    /// Waits until no worker, zombie or extra fd of ours is left.
    pub(crate) async fn assert_clean(&self) {
        let me = std::process::id();
        let watchdog = forkyard_child::watchdog_pid();
        wait_for("no live descendants but the watchdog", || {
            let left: Vec<u32> = tk::live_descendants(me)
                .into_iter()
                .filter(|&p| Some(p) != watchdog)
                .collect();
            left.is_empty().then_some(()).ok_or(format!("{left:?}"))
        })
        .await;
        wait_for("no zombie children", || {
            let z = tk::zombie_children(me);
            z.is_empty().then_some(()).ok_or(format!("{z:?}"))
        })
        .await;
        wait_for("fd count back to baseline", || {
            let n = my_fd_count();
            (n <= self.fds).then_some(()).ok_or(format!(
                "{n} fds, baseline {}: {:?}",
                self.fds,
                tk::open_fds(me)
            ))
        })
        .await;
    }
}

/// Polls `probe` (1 ms doubling to 50 ms, yielding to the runtime) until it
/// says `Ok`, or panics after [`DEADLINE`] with its last `Err`.
pub(crate) async fn wait_for(what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    let start = std::time::Instant::now();
    let mut interval = Duration::from_millis(1);
    loop {
        match probe() {
            Ok(()) => return,
            Err(detail) if start.elapsed() > DEADLINE => {
                panic!("timed out waiting for {what}: {detail}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Like [`wait_for`], for an async probe.
pub(crate) async fn wait_for_async<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = std::time::Instant::now();
    let mut interval = Duration::from_millis(1);
    loop {
        match probe().await {
            Ok(()) => return,
            Err(detail) if start.elapsed() > DEADLINE => {
                panic!("timed out waiting for {what}: {detail}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}
