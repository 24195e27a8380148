//! Laws: round trips, splits at every byte, garbage never panics or hangs.

use std::io::{IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use forkyard_ipc::{Channel, Codec, Config, Error};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{hello_line, postcard_frame, raw_peer, rt};

/// A message with optional fds.
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    data: Vec<u8>,
    text: String,
    #[serde(with = "forkyard_ipc::fd::vec")]
    fds: Vec<OwnedFd>,
}

/// `Item` as the wire sees it: fds are indices (documented in the README).
#[derive(Serialize)]
struct ItemWire<'a> {
    data: &'a [u8],
    text: &'a str,
    fds: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Spec {
    data: Vec<u8>,
    text: String,
    n_fds: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec(any::<u8>(), 0..300),
        ".{0,20}",
        0usize..4,
    )
        .prop_map(|(data, text, n_fds)| Spec { data, text, n_fds })
}

/// Inode of whatever an fd points at, to check a received fd is the one sent.
fn ino(fd: impl AsFd) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino
}

fn make_fds(n: usize) -> Vec<OwnedFd> {
    (0..n).map(|_| std::io::pipe().unwrap().0.into()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_sequence_round_trips(specs in proptest::collection::vec(spec(), 0..20), json in any::<bool>()) {
        let codec = if json { Codec::JsonLines } else { Codec::Postcard };
        rt().block_on(async {
            let (mut a, mut b) = Channel::<Item, ()>::pair_with(Config::new().codec(codec)).unwrap();
            let mut sent = Vec::new();
            for s in &specs {
                let n = if json { 0 } else { s.n_fds };
                let fds = make_fds(n);
                sent.push(fds.iter().map(ino).collect::<Vec<_>>());
                a.feed(&Item { data: s.data.clone(), text: s.text.clone(), fds }).await.unwrap();
            }
            drop(a); // flushes what the socket takes; small sequences fit
            for (s, inos) in specs.iter().zip(&sent) {
                let got = b.recv().await.unwrap().unwrap();
                assert_eq!((&got.data, &got.text), (&s.data, &s.text));
                assert_eq!(&got.fds.iter().map(ino).collect::<Vec<_>>(), inos);
            }
            assert!(b.recv().await.unwrap().is_none());
        });
    }
}

/// Writes `wire` to `sock` in pieces cut at `split` and at every fd frame's
/// bounds (an fd frame goes out in its own `sendmsg`, as the Sender does),
/// waiting after each piece until the reader has drained it, so the reader
/// really sees the split.
fn write_split(
    sock: &UnixStream,
    reader: &UnixStream,
    wire: &[u8],
    fd_frames: &[(usize, usize, Vec<OwnedFd>)],
    split: usize,
) {
    let mut cuts = vec![0, split, wire.len()];
    for (s, e, _) in fd_frames {
        cuts.push(*s);
        cuts.push(*e);
    }
    cuts.sort_unstable();
    cuts.dedup();
    for w in cuts.windows(2) {
        let (from, to) = (w[0], w[1]);
        if from == to {
            continue;
        }
        let fds: Vec<_> = fd_frames
            .iter()
            .filter(|(s, _, _)| *s == from)
            .flat_map(|(_, _, f)| f.iter().map(AsFd::as_fd))
            .collect();
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        }
        let mut sent = 0;
        while from + sent < to {
            let iov = [IoSlice::new(&wire[from + sent..to])];
            sent +=
                rustix::net::sendmsg(sock, &iov, &mut control, rustix::net::SendFlags::NOSIGNAL)
                    .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while rustix::io::ioctl_fionread(reader).unwrap() > 0 {
            assert!(
                Instant::now() < deadline,
                "the reader never drained the piece"
            );
            std::thread::yield_now();
        }
    }
}

#[test]
fn split_at_every_byte_still_decodes() {
    let specs = [
        Spec {
            data: vec![1, 2, 3],
            text: "a".into(),
            n_fds: 0,
        },
        Spec {
            data: vec![],
            text: "two fds".into(),
            n_fds: 2,
        },
        Spec {
            data: vec![7; 40],
            text: String::new(),
            n_fds: 0,
        },
        Spec {
            data: vec![9],
            text: "one".into(),
            n_fds: 1,
        },
    ];
    // Encode by the documented wire format.
    let mut wire = Vec::new();
    let mut fd_frames = Vec::new();
    let mut next_index = 0;
    for s in &specs {
        let _ = &mut next_index;
        let payload = postcard::to_stdvec(&ItemWire {
            data: &s.data,
            text: &s.text,
            fds: (0..s.n_fds as u32).collect(),
        })
        .unwrap();
        let start = wire.len();
        wire.extend(postcard_frame(s.n_fds as u8, &payload));
        if s.n_fds > 0 {
            fd_frames.push((start, wire.len(), make_fds(s.n_fds)));
        }
    }
    let expected_inos: Vec<Vec<u64>> = {
        let mut it = fd_frames.iter();
        specs
            .iter()
            .map(|s| {
                if s.n_fds > 0 {
                    it.next().unwrap().2.iter().map(ino).collect()
                } else {
                    vec![]
                }
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for split in 0..=wire.len() {
        let (chan_end, mut raw) = UnixStream::pair().unwrap();
        let reader = chan_end.try_clone().unwrap();
        raw.write_all(&hello_line::<Item, ()>(Codec::Postcard))
            .unwrap();
        let mut chan = {
            let _guard = rt.enter();
            Channel::<(), Item>::from_stream(chan_end).unwrap()
        };
        let got = rt.spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = chan.recv().await.unwrap() {
                got.push(item);
            }
            got
        });
        write_split(&raw, &reader, &wire, &fd_frames, split);
        drop(raw);
        let got = rt.block_on(got).unwrap();
        assert_eq!(got.len(), specs.len(), "split at {split}");
        for ((g, s), inos) in got.iter().zip(&specs).zip(&expected_inos) {
            assert_eq!((&g.data, &g.text), (&s.data, &s.text), "split at {split}");
            assert_eq!(
                &g.fds.iter().map(ino).collect::<Vec<_>>(),
                inos,
                "split at {split}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_after_the_hello_is_an_error_never_a_panic_or_hang(
        garbage in proptest::collection::vec(any::<u8>(), 0..2000),
        json in any::<bool>(),
    ) {
        let codec = if json { Codec::JsonLines } else { Codec::Postcard };
        rt().block_on(async {
            let (mut chan, mut raw) = raw_peer::<Item>(codec);
            raw.write_all(&garbage).unwrap();
            drop(raw);
            // Every recv ends: a message, a typed error, or the end. Bounded
            // number of steps (each consumes at least one byte or ends).
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                for _ in 0..=garbage.len() + 1 {
                    match chan.recv().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(e) if e.is_fatal() => return,
                        Err(_) => {}
                    }
                }
                panic!("recv kept returning without reaching the end");
            })
            .await;
            assert!(outcome.is_ok(), "recv hung on garbage");
        });
    }

    #[test]
    fn garbage_instead_of_a_hello_fails_the_handshake(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
        rt().block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            let mut chan = Channel::<(), Item>::from_stream(a).unwrap();
            b.write_all(&garbage).unwrap();
            drop(b);
            let r = tokio::time::timeout(Duration::from_secs(10), chan.recv()).await.expect("handshake hung");
            assert!(matches!(r, Err(Error::Handshake(_))), "{r:?}");
        });
    }
}
