//! `forkyard-ipc-fixture`: the worker processes forkyard-ipc's tests run.
//! Not part of the library.
//!
//! Subcommands:
//! - `rpc`: a request-response worker serving `Job`s (tests/it/wire.rs) and
//!   calling the parent back with `Ask`s.
//! - `sub TOPIC...`: a pub-sub client that subscribes, prints `subscribed`, then
//!   prints `got TOPIC MESSAGE dropped=N` per delivery and `closed` at the end.
//! - `slow-sub TOPIC`: the same, but reads nothing until a line arrives on stdin.
//! - `pub TOPIC N`: publishes `m0`..`m{N-1}` on TOPIC, prints `published`, exits.
//! - `serve [--no-accept | --never-ready | --exit-at-start]`: a cluster worker
//!   speaking a line protocol: each line gets `GEN INDEX PID LINE`, with
//!   ` close` appended (and the connection closed) once the worker drains.
//!
//! Hostile peers, writing raw bytes to the channel fd and never reading it
//! (the parent's channel is a `Channel<_, Vec<u8>>`):
//! - `flood-fds BYTES FDS`: a hello, then one frame that declares 0 fds and
//!   holds `BYTES` zero bytes (a valid `Vec<u8>`), its payload sent one byte per `sendmsg` with `FDS` fds attached
//!   to each; then a well-formed frame `[7]`; prints `flooded N` with the
//!   number of fds sent, and waits for stdin to close.
//! - `hello-then-exit`: a hello and one frame `[42]` in one write, then exits
//!   at once, before the parent's hello can have been read.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[path = "../../tests/it/wire.rs"]
mod wire;

use wire::{Ask, Job};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async move {
        match args.first().map(String::as_str) {
            Some("rpc") => rpc().await,
            Some("sub") => subscriber(&args[1..], false).await,
            Some("slow-sub") => subscriber(&args[1..], true).await,
            Some("pub") => publisher(&args[1..]).await,
            Some("serve") => serve(args.get(1).map(String::as_str)).await,
            Some("flood-fds") => hostile::flood_fds(&args[1..]),
            Some("hello-then-exit") => hostile::hello_then_exit(),
            other => Err(format!("unknown subcommand {other:?}")),
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("forkyard-ipc-fixture: {message}");
            ExitCode::from(2)
        }
    }
}

/// Marks a `Hang` cancelled when its handler future is dropped unfinished.
struct CancelProbe {
    tag: u64,
    cancelled: Arc<Mutex<HashMap<u64, u64>>>,
}

impl Drop for CancelProbe {
    fn drop(&mut self) {
        *self.cancelled.lock().unwrap().entry(self.tag).or_default() += 1;
    }
}

async fn rpc() -> Result<ExitCode, String> {
    let chan: RpcChannel<Ask, u64, Job, u64> =
        forkyard_ipc::Channel::from_parent().map_err(|e| e.to_string())?;
    let cancelled: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let rpc = Rpc::new_with(
        chan,
        RpcConfig::new(),
        move |job: Job, rpc: Rpc<Ask, u64>| {
            // Made before the future is first polled, so a handler cancelled
            // before it ever ran counts too.
            let probe = match &job {
                Job::Hang { tag } => Some(CancelProbe {
                    tag: *tag,
                    cancelled: cancelled.clone(),
                }),
                _ => None,
            };
            let cancelled = cancelled.clone();
            async move {
                match job {
                    Job::Echo(n) => Ok(n),
                    Job::Sleep { ms, value } => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(value)
                    }
                    Job::AskParent(n) => rpc
                        .call(Ask::Double(n))
                        .await
                        .map(|d| d + 1)
                        .map_err(|e| e.to_string()),
                    Job::Hang { .. } => {
                        let _probe = probe;
                        std::future::pending::<()>().await;
                        unreachable!("pending never resolves")
                    }
                    Job::WasCancelled { tag } => {
                        Ok(cancelled.lock().unwrap().get(&tag).copied().unwrap_or(0))
                    }
                    Job::Fail(message) => Err(message),
                    Job::Die => std::process::exit(9),
                    Job::Pid => Ok(u64::from(std::process::id())),
                }
            }
        },
    );
    rpc.closed().await;
    Ok(ExitCode::SUCCESS)
}

async fn subscriber(topics: &[String], slow: bool) -> Result<ExitCode, String> {
    let mut client =
        forkyard_ipc::pubsub::Client::<String>::from_parent().map_err(|e| e.to_string())?;
    for topic in topics {
        client.subscribe(topic).await.map_err(|e| e.to_string())?;
    }
    println!("subscribed");
    if slow {
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    loop {
        match client.recv().await {
            Ok(Some(d)) => println!("got {} {} dropped={}", d.topic, d.message, d.dropped),
            Ok(None) => break,
            Err(e) => {
                println!("error {e}");
                break;
            }
        }
    }
    println!("closed");
    Ok(ExitCode::SUCCESS)
}

async fn publisher(args: &[String]) -> Result<ExitCode, String> {
    let topic = args.first().ok_or("missing TOPIC")?;
    let n: u64 = args
        .get(1)
        .ok_or("missing N")?
        .parse()
        .map_err(|e| format!("bad N: {e}"))?;
    let mut client =
        forkyard_ipc::pubsub::Client::<String>::from_parent().map_err(|e| e.to_string())?;
    for i in 0..n {
        client
            .publish(topic, &format!("m{i}"))
            .await
            .map_err(|e| e.to_string())?;
    }
    println!("published");
    Ok(ExitCode::SUCCESS)
}

async fn serve(flag: Option<&str>) -> Result<ExitCode, String> {
    match flag {
        Some("--exit-at-start") => return Ok(ExitCode::from(3)),
        Some("--never-ready") => {
            let _worker =
                forkyard_ipc::balance::Worker::from_parent().map_err(|e| e.to_string())?;
            std::future::pending::<()>().await;
        }
        Some("--no-accept") => {
            // Ready, but never takes a connection: one handed to it stays in flight.
            let mut worker =
                forkyard_ipc::balance::Worker::from_parent().map_err(|e| e.to_string())?;
            worker.ready();
            std::future::pending::<()>().await;
        }
        None => {}
        Some(other) => return Err(format!("unknown serve flag `{other}`")),
    }
    let mut worker = forkyard_ipc::balance::Worker::from_parent().map_err(|e| e.to_string())?;
    let slot = worker.slot();
    let prefix = format!("{} {} {}", slot.generation, slot.index, std::process::id());
    while let Some(conn) = worker.accept().await {
        let (stream, lease) = conn.into_tokio().map_err(|e| e.to_string())?;
        let counters = worker.counters();
        let drain = worker.drain_signal();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                counters.request();
                let closing = drain.is_draining();
                let reply = if closing {
                    format!("{prefix} {line} close\n")
                } else {
                    format!("{prefix} {line}\n")
                };
                if write.write_all(reply.as_bytes()).await.is_err() || closing {
                    break;
                }
            }
            drop(lease);
        });
    }
    worker.finish().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Peers that break the rules on purpose, with raw socket calls.
mod hostile {
    use std::io::Write;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::ExitCode;

    use forkyard_ipc::{Codec, IPC_FD, PROTOCOL_VERSION, TypeInfo};
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

    fn channel_fd() -> UnixStream {
        // SAFETY: fd 3 is the channel end the parent passed to us (the tests
        // spawn this fixture through `forkyard_ipc::spawn`), and nothing else in
        // this process owns it.
        UnixStream::from(unsafe { OwnedFd::from_raw_fd(IPC_FD) })
    }

    /// The hello of a peer that sends `Vec<u8>` and receives `u64`.
    fn hello() -> Vec<u8> {
        let info = |t: TypeInfo| serde_json::json!({"name": t.name, "fingerprint": t.fingerprint});
        let mut line = serde_json::to_vec(&serde_json::json!({
            "forkyard_ipc": PROTOCOL_VERSION,
            "codec": Codec::Postcard.name(),
            "sends": info(TypeInfo::of::<Vec<u8>>()),
            "receives": info(TypeInfo::of::<u64>()),
        }))
        .expect("a json value serializes");
        line.push(b'\n');
        line
    }

    fn frame(payload: &[u8], n_fds: u8) -> Vec<u8> {
        let mut f = ((payload.len() + 1) as u32).to_le_bytes().to_vec();
        f.push(n_fds);
        f.extend_from_slice(payload);
        f
    }

    pub(super) fn hello_then_exit() -> Result<ExitCode, String> {
        let mut sock = channel_fd();
        let mut bytes = hello();
        let body = postcard::to_allocvec(&vec![42u8]).map_err(|e| e.to_string())?;
        bytes.extend(frame(&body, 0));
        sock.write_all(&bytes).map_err(|e| e.to_string())?;
        Ok(ExitCode::SUCCESS)
    }

    pub(super) fn flood_fds(args: &[String]) -> Result<ExitCode, String> {
        let number = |i: usize, what: &str| -> Result<usize, String> {
            args.get(i)
                .ok_or(format!("missing {what}"))?
                .parse()
                .map_err(|e| format!("bad {what}: {e}"))
        };
        let n_bytes = number(0, "BYTES")?;
        let per_byte = number(1, "FDS")?.min(253);
        let mut sock = channel_fd();
        sock.write_all(&hello()).map_err(|e| e.to_string())?;
        // The header of a frame of `n_bytes` payload bytes declaring 0 fds,
        // whose payload is a valid postcard `Vec<u8>` (so only its fds are wrong).
        let body = postcard::to_allocvec(&vec![0u8; n_bytes]).map_err(|e| e.to_string())?;
        let header = frame(&body, 0);
        sock.write_all(&header[..5]).map_err(|e| e.to_string())?;
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let fds: Vec<_> = (0..per_byte).map(|_| null.as_fd()).collect();
        let mut sent = 0usize;
        for byte in &body {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            let iov = [std::io::IoSlice::new(std::slice::from_ref(byte))];
            loop {
                match rustix::net::sendmsg(&sock, &iov, &mut control, SendFlags::NOSIGNAL) {
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => {}
                    // Not root: the kernel caps this user's fds in flight;
                    // wait for the parent to take (and close) some.
                    Err(rustix::io::Errno::TOOMANYREFS) => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => return Err(format!("sendmsg: {e}")),
                }
            }
            sent += fds.len();
        }
        let ok = postcard::to_allocvec(&vec![7u8]).map_err(|e| e.to_string())?;
        sock.write_all(&frame(&ok, 0)).map_err(|e| e.to_string())?;
        println!("flooded {sent}");
        std::io::stdin()
            .read_line(&mut String::new())
            .map_err(|e| e.to_string())?;
        Ok(ExitCode::SUCCESS)
    }
}
