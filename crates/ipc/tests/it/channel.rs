//! The channel core: round trips, handshake, frame errors, fds, backpressure.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use forkyard_ipc::{Channel, Codec, Config, Error, HandshakeError};
use serde::{Deserialize, Serialize};

use crate::support::{hello_line, postcard_frame, raw_peer, rt};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ping {
    Ping(u64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Pong {
    Pong(u64),
}

#[derive(Debug, Serialize, Deserialize)]
struct WithFd {
    tag: u32,
    #[serde(with = "forkyard_ipc::fd")]
    fd: OwnedFd,
    #[serde(with = "forkyard_ipc::fd::option")]
    extra: Option<OwnedFd>,
}

#[test]
fn round_trip_both_codecs() {
    for codec in [Codec::Postcard, Codec::JsonLines] {
        rt().block_on(async {
            let (mut a, mut b) =
                Channel::<Ping, Pong>::pair_with(Config::new().codec(codec)).unwrap();
            a.send(&Ping::Ping(7)).await.unwrap();
            a.send(&Ping::Text("héllo\nworld".into())).await.unwrap();
            assert_eq!(b.recv().await.unwrap(), Some(Ping::Ping(7)));
            assert_eq!(
                b.recv().await.unwrap(),
                Some(Ping::Text("héllo\nworld".into()))
            );
            b.send(&Pong::Pong(8)).await.unwrap();
            assert_eq!(a.recv().await.unwrap(), Some(Pong::Pong(8)));
            drop(a);
            assert_eq!(
                b.recv().await.unwrap(),
                None,
                "{codec:?}: clean end of stream"
            );
        });
    }
}

/// `recv_buffered` hands out what an earlier `recv` already read, in order,
/// and never waits: a burst written before the first `recv` comes out of one
/// read as one batch, and nothing is lost or reordered between the two calls.
#[test]
fn recv_buffered_drains_a_burst_in_order_without_waiting() {
    for codec in [Codec::Postcard, Codec::JsonLines] {
        rt().block_on(async {
            let (mut a, mut b) =
                Channel::<Ping, Pong>::pair_with(Config::new().codec(codec)).unwrap();
            // Nothing read yet (not even the hello): nothing buffered.
            assert!(b.recv_buffered().is_none());
            for i in 0..100 {
                a.feed(&Ping::Ping(i)).await.unwrap();
            }
            a.flush().await.unwrap();
            let mut got = Vec::new();
            let mut batches = Vec::new();
            while got.len() < 100 {
                let first = b.recv().await.unwrap().expect("not at the end yet");
                let mut batch = vec![first];
                while let Some(next) = b.recv_buffered() {
                    batch.push(next.unwrap());
                }
                batches.push(batch.len());
                got.extend(batch);
            }
            let want: Vec<Ping> = (0..100).map(Ping::Ping).collect();
            assert_eq!(got, want, "{codec:?}");
            // All 100 were in the socket before the first read: one read took
            // more than one of them.
            assert!(batches[0] > 1, "{codec:?}: batches {batches:?}");
            // Drained: nothing buffered, and the end of stream still comes
            // through `recv`.
            assert!(b.recv_buffered().is_none());
            drop(a);
            assert_eq!(b.recv().await.unwrap(), None);
            assert!(b.recv_buffered().is_none());
        });
    }
}

#[test]
fn handshake_mismatch_fails_both_sides_and_names_the_types() {
    rt().block_on(async {
        let (x, y) = UnixStream::pair().unwrap();
        let mut a = Channel::<Ping, Pong>::from_stream(x).unwrap();
        // The peer expects to receive `Pong` where we send `Ping`.
        let mut b = Channel::<Pong, Pong>::from_stream(y).unwrap();
        let ea = a.send(&Ping::Ping(1)).await.unwrap_err();
        let eb = b.recv().await.unwrap_err();
        for e in [&ea, &eb] {
            let Error::Handshake(HandshakeError::Types { ours, theirs, .. }) = e else {
                panic!("expected a type mismatch, got {e:?}");
            };
            assert_ne!(ours.fingerprint, theirs.fingerprint);
        }
        let msg = format!("{}", std::error::Error::source(&ea).unwrap());
        assert!(msg.contains("Ping") && msg.contains("Pong"), "{msg}");
        // The error sticks: the channel is unusable.
        assert!(a.recv().await.is_err());
    });
}

#[test]
fn handshake_errors_table() {
    // (what the peer sends first, what we expect)
    type Expect = fn(&HandshakeError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            |e| matches!(e, HandshakeError::BadMagic { first_bytes } if first_bytes.starts_with("GET /")),
        ),
        (b"{\"hello\":1}\n".to_vec(), |e| {
            matches!(e, HandshakeError::BadMagic { .. })
        }),
        (b"{\"forkyard_ipc\":99}\n".to_vec(), |e| {
            matches!(
                e,
                HandshakeError::Version {
                    ours: 1,
                    theirs: 99
                }
            )
        }),
        (hello_line::<(), Ping>(Codec::JsonLines), |e| {
            matches!(e, HandshakeError::Codec { .. })
        }),
        (Vec::new(), |e| matches!(e, HandshakeError::PeerClosed)),
        (vec![b'{'; 20_000], |e| {
            matches!(e, HandshakeError::HelloTooLong { .. })
        }),
    ];
    for (bytes, expected) in cases {
        rt().block_on(async {
            let (x, mut y) = UnixStream::pair().unwrap();
            let mut a = Channel::<(), Ping>::from_stream(x).unwrap();
            y.write_all(&bytes).unwrap();
            y.shutdown(std::net::Shutdown::Write).unwrap();
            match a.recv().await {
                Err(Error::Handshake(e)) => assert!(
                    expected(&e),
                    "{:?}: got {e:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
                ),
                other => panic!("expected a handshake error, got {other:?}"),
            }
        });
    }
}

#[test]
fn handshake_times_out_on_a_silent_peer() {
    rt().block_on(async {
        let (x, _y) = UnixStream::pair().unwrap();
        let mut a = Channel::<(), Ping>::from_stream_with(
            x,
            Config::new().handshake_timeout(Duration::from_millis(50)),
        )
        .unwrap();
        assert!(matches!(
            a.recv().await,
            Err(Error::Handshake(HandshakeError::Timeout(_)))
        ));
    });
}

/// Feeds raw bytes after a valid hello and checks the first result of `recv`.
fn check_raw(
    codec: Codec,
    bytes: &[u8],
    close: bool,
    expect: impl Fn(&Result<Option<Ping>, Error>) -> bool,
) {
    rt().block_on(async {
        let (mut chan, mut raw) = raw_peer::<Ping>(codec);
        // A thread writes, so a payload larger than the socket buffer cannot
        // block the writer before the channel starts reading.
        let owned = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            // The channel may stop reading (and drop its end) at the error.
            let _ = raw.write_all(&owned);
            if close {
                let _ = raw.shutdown(std::net::Shutdown::Write);
            }
            raw
        });
        let got = chan.recv().await;
        drop(chan);
        drop(writer.join().unwrap());
        let shown = &bytes[..bytes.len().min(40)];
        assert!(expect(&got), "{codec:?} {shown:?}: got {got:?}");
    });
}

#[test]
fn frame_errors_table() {
    let ping7 = postcard::to_stdvec(&Ping::Ping(7)).unwrap();
    check_raw(Codec::Postcard, &postcard_frame(0, &ping7), true, |r| {
        matches!(r, Ok(Some(Ping::Ping(7))))
    });
    check_raw(Codec::Postcard, &[0, 0, 0, 0, 0], false, |r| {
        matches!(r, Err(Error::ZeroLengthFrame { .. }))
    });
    // 4 GiB announced: refused from the header alone, before any allocation.
    check_raw(
        Codec::Postcard,
        &[0xff, 0xff, 0xff, 0xff, 0],
        false,
        |r| matches!(r, Err(Error::FrameTooLarge { max, .. }) if *max == 1 << 20),
    );
    check_raw(Codec::Postcard, &postcard_frame(0, &[9]), false, |r| {
        matches!(r, Err(Error::Decode { .. }))
    });
    check_raw(Codec::Postcard, &postcard_frame(0, &[1]), false, |r| {
        matches!(r, Err(Error::Truncated { .. }))
    });
    let mut trailing = ping7.clone();
    trailing.push(0);
    check_raw(Codec::Postcard, &postcard_frame(0, &trailing), false, |r| {
        matches!(r, Err(Error::Decode { .. }))
    });
    check_raw(
        Codec::Postcard,
        &postcard_frame(0, &ping7)[..4],
        true,
        |r| matches!(r, Err(Error::PeerClosedMidFrame { have: 4 })),
    );
    check_raw(Codec::Postcard, &postcard_frame(2, &ping7), false, |r| {
        matches!(
            r,
            Err(Error::FdMismatch {
                declared: 2,
                received: 0
            })
        )
    });
    check_raw(Codec::JsonLines, b"{\"Ping\":7}\n", true, |r| {
        matches!(r, Ok(Some(Ping::Ping(7))))
    });
    check_raw(Codec::JsonLines, b"{\"Ping\":7}\r\n", true, |r| {
        matches!(r, Ok(Some(Ping::Ping(7))))
    });
    check_raw(Codec::JsonLines, b"\n", false, |r| {
        matches!(r, Err(Error::ZeroLengthFrame { .. }))
    });
    check_raw(Codec::JsonLines, b"{\"Pin", true, |r| {
        matches!(r, Err(Error::PeerClosedMidFrame { have: 5 }))
    });
    check_raw(Codec::JsonLines, b"{\"Ping\":\n", false, |r| {
        matches!(r, Err(Error::Truncated { .. }))
    });
    check_raw(Codec::JsonLines, b"{\"Pang\":7}\n", false, |r| {
        matches!(r, Err(Error::Decode { .. }))
    });
    check_raw(Codec::JsonLines, &vec![b'x'; (1 << 20) + 2], false, |r| {
        matches!(r, Err(Error::FrameTooLarge { .. }))
    });
}

#[test]
fn a_bad_frame_is_skipped_and_the_next_one_arrives() {
    rt().block_on(async {
        let (mut chan, mut raw) = raw_peer::<Ping>(Codec::Postcard);
        let good = postcard::to_stdvec(&Ping::Ping(2)).unwrap();
        raw.write_all(&postcard_frame(0, &[9])).unwrap();
        raw.write_all(&postcard_frame(0, &good)).unwrap();
        let err = chan.recv().await.unwrap_err();
        assert!(!err.is_fatal(), "{err:?}");
        assert_eq!(chan.recv().await.unwrap(), Some(Ping::Ping(2)));
    });
}

#[test]
fn a_fatal_error_breaks_the_channel() {
    rt().block_on(async {
        let (mut chan, mut raw) = raw_peer::<Ping>(Codec::Postcard);
        raw.write_all(&[0, 0, 0, 0, 0]).unwrap();
        assert!(chan.recv().await.unwrap_err().is_fatal());
        assert!(matches!(chan.recv().await, Err(Error::Broken(_))));
    });
}

#[test]
fn oversized_send_is_refused_and_the_channel_goes_on() {
    rt().block_on(async {
        let (mut a, mut b) =
            Channel::<Ping, Pong>::pair_with(Config::new().max_frame_len(100)).unwrap();
        let err = a.send(&Ping::Text("x".repeat(200))).await.unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { max: 100, .. }),
            "{err:?}"
        );
        a.send(&Ping::Ping(1)).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Some(Ping::Ping(1)));
    });
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

#[test]
fn fds_travel_with_their_message() {
    rt().block_on(async {
        let (mut a, mut b) = Channel::<WithFd, ()>::pair().unwrap();
        let (r, w) = pipe();
        let (r2, w2) = pipe();
        a.send(&WithFd {
            tag: 1,
            fd: w,
            extra: Some(w2),
        })
        .await
        .unwrap();
        a.send(&WithFd {
            tag: 2,
            fd: r2,
            extra: None,
        })
        .await
        .unwrap();
        let m1 = b.recv().await.unwrap().unwrap();
        let m2 = b.recv().await.unwrap().unwrap();
        assert_eq!((m1.tag, m2.tag), (1, 2));
        assert!(m2.extra.is_none());
        // The received write end really is our pipe.
        std::fs::File::from(m1.fd).write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        std::fs::File::from(r).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        std::fs::File::from(m1.extra.unwrap())
            .write_all(b"yo")
            .unwrap();
        std::fs::File::from(m2.fd).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"yo");
    });
}

#[test]
fn json_lines_refuses_fds() {
    rt().block_on(async {
        let (mut a, _b) =
            Channel::<WithFd, ()>::pair_with(Config::new().codec(Codec::JsonLines)).unwrap();
        let (r, _w) = pipe();
        let err = a
            .send(&WithFd {
                tag: 1,
                fd: r,
                extra: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::FdsNotSupported), "{err:?}");
    });
}

#[test]
fn too_many_fds_is_an_error_not_a_panic() {
    #[derive(Serialize, Deserialize)]
    struct Many(#[serde(with = "forkyard_ipc::fd::vec")] Vec<OwnedFd>);
    rt().block_on(async {
        let (mut a, _b) = Channel::<Many, ()>::pair().unwrap();
        let base = crate::support::my_fd_count();
        let fds: Vec<OwnedFd> = (0..254)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let err = a.send(&Many(fds)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyFds {
                    count: 254,
                    max: 253
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            crate::support::my_fd_count(),
            base,
            "the duplicates were closed"
        );
    });
}

/// Polls `fut` once: its output if it finishes without waiting, else `None`
/// (and the future is dropped, i.e. cancelled).
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[test]
fn a_slow_reader_makes_the_sender_wait() {
    rt().block_on(async {
        let (mut a, mut b) = Channel::<Ping, ()>::pair().unwrap();
        let big = Ping::Text("x".repeat(64 << 10));
        a.handshake().await.unwrap();
        // With nobody reading, sends stall once the socket buffer is full: a
        // send that cannot finish without the reader stays pending.
        let mut sent = 0;
        while let Some(r) = poll_once(a.send(&big)).await {
            r.unwrap();
            sent += 1;
            assert!(
                sent < 1000,
                "the sender never waited: memory is not bounded"
            );
        }
        assert!(sent > 0);
        // ...and the stalled message is delivered once the reader drains, whole and in order.
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(m) = b.recv().await.unwrap() {
                assert_eq!(m, Ping::Text("x".repeat(64 << 10)));
                n += 1;
            }
            n
        });
        a.flush().await.unwrap();
        a.send(&big).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), sent + 2);
    });
}

#[test]
fn split_halves_work_from_different_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = Channel::<Ping, Pong>::pair().unwrap();
        let (mut tx, mut rx) = a.split();
        let (mut btx, mut brx) = b.split();
        let echo = tokio::spawn(async move {
            while let Some(Ping::Ping(n)) = brx.recv().await.unwrap() {
                btx.send(&Pong::Pong(n)).await.unwrap();
            }
        });
        let producer = tokio::spawn(async move {
            for i in 0..1000 {
                tx.feed(&Ping::Ping(i)).await.unwrap();
            }
            tx.close().await.unwrap();
        });
        for i in 0..1000 {
            assert_eq!(rx.recv().await.unwrap(), Some(Pong::Pong(i)));
        }
        producer.await.unwrap();
        echo.await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), None);
    });
}

#[test]
fn outside_a_runtime_is_a_typed_error() {
    let (x, _y) = UnixStream::pair().unwrap();
    assert!(matches!(
        Channel::<(), ()>::from_stream(x),
        Err(Error::NoRuntime)
    ));
}

#[test]
fn fd_numbers_in_the_payload_are_indices_not_raw_fds() {
    // A peer cannot name one of our fds: it only indexes the fds it sent.
    rt().block_on(async {
        let (mut chan, mut raw) = raw_peer::<WithFd>(Codec::Postcard);
        let stdin = std::io::stdin().as_raw_fd() as u8;
        raw.write_all(&postcard_frame(0, &[1, stdin, 0])).unwrap();
        assert!(matches!(chan.recv().await, Err(Error::Decode { .. })));
    });
}

/// Builds of one protocol that differ in small ways, fingerprinted.
mod builds {
    macro_rules! build {
        ($name:ident { $($job:tt)* } { $($to:tt)* }) => {
            pub(crate) mod $name {
                #[derive(serde::Serialize, serde::Deserialize)]
                pub(crate) enum Job { $($job)* }
                #[derive(serde::Serialize, serde::Deserialize)]
                pub(crate) enum ToWorker { $($to)* }
            }
        };
    }
    build!(base { Echo(u64), Sleep { ms: u64 } } { Hello, Task { id: u64, job: Job } });
    build!(same { Echo(u64), Sleep { ms: u64 } } { Hello, Task { id: u64, job: Job } });
    build!(field_type { Echo(u64), Sleep { ms: u32 } } { Hello, Task { id: u64, job: Job } });
    build!(nested_variant { Echo(u64), Sleep { ms: u64 }, Stop } { Hello, Task { id: u64, job: Job } });
    build!(renamed_field { Echo(u64), Sleep { ms: u64 } } { Hello, Task { id: u64, work: Job } });
    build!(top_variant { Echo(u64), Sleep { ms: u64 } } { Hello, Task { id: u64, job: Job }, Bye });
}

#[test]
fn fingerprints_follow_the_structure_not_the_path() {
    use forkyard_ipc::TypeInfo;
    let fp = |t: TypeInfo| t.fingerprint;
    let base = fp(TypeInfo::of::<builds::base::ToWorker>());
    assert_eq!(
        fp(TypeInfo::of::<builds::same::ToWorker>()),
        base,
        "same structure, other module"
    );
    for (what, other) in [
        (
            "a field type inside a nested enum",
            fp(TypeInfo::of::<builds::field_type::ToWorker>()),
        ),
        (
            "a variant added to a nested enum",
            fp(TypeInfo::of::<builds::nested_variant::ToWorker>()),
        ),
        (
            "a renamed field",
            fp(TypeInfo::of::<builds::renamed_field::ToWorker>()),
        ),
        (
            "a variant added at the top",
            fp(TypeInfo::of::<builds::top_variant::ToWorker>()),
        ),
    ] {
        assert_ne!(other, base, "{what} must change the fingerprint");
    }
}
