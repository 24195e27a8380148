//! A child that attacks its parent through the channel: each test pins a hole
//! that was open once (issue #17) and fails on the code that had it.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use forkyard_child::{Child, Input};
use forkyard_ipc::{Channel, Error, IPC_FD, IPC_FD_ENV};
use forkyard_testkit as tk;

use crate::support::{fixture, mt, raw_peer, rt};

/// The most fds one `recvmsg` can install (the kernel's `SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Samples this process's fd count on a thread of its own, and keeps opening
/// and closing a file there as "other work" would, until stopped.
struct FdWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    open_failures: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdWatch {
    fn start() -> FdWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let open_failures = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, peak, open_failures) = (stop.clone(), peak.clone(), open_failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    peak.fetch_max(tk::fd_count(std::process::id()), Ordering::AcqRel);
                    if std::fs::File::open("/dev/null").is_err() {
                        open_failures.fetch_add(1, Ordering::AcqRel);
                    }
                }
            })
        };
        FdWatch {
            stop,
            peak,
            open_failures,
            thread: Some(thread),
        }
    }

    /// (peak fd count, failed opens) over the watch.
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.peak.load(Ordering::Acquire),
            self.open_failures.load(Ordering::Acquire),
        )
    }
}

#[test]
fn one_frame_cannot_fill_the_parents_fd_table() {
    // The attack: a frame declaring 0 fds whose payload comes one byte per
    // sendmsg, 200 fds attached to each byte: 20,000 fds for one frame.
    const BYTES: usize = 100;
    const PER_BYTE: usize = 200;
    mt().block_on(async {
        let base = tk::Baseline::take().await;
        let before = tk::fd_count(std::process::id());
        let watch = FdWatch::start();
        let mut cmd = fixture(&["flood-fds", &BYTES.to_string(), &PER_BYTE.to_string()]);
        let (child, mut chan) = forkyard_ipc::spawn_with::<u64, Vec<u8>>(
            Child::builder(&mut cmd).stdin(Input::Piped),
            forkyard_ipc::Config::new(),
        )
        .unwrap();
        let flooded = chan.recv().await;
        let after_flood = chan.recv().await;
        let (peak, open_failures) = watch.finish();
        // The payload's length prefix is one byte more than BYTES.
        let sent = (BYTES + 1) * PER_BYTE;
        match flooded {
            Err(Error::FdMismatch { declared, received }) => {
                assert_eq!(declared, 0);
                assert_eq!(received, sent, "every fd that came is counted");
            }
            other => panic!("expected FdMismatch, got {other:?}"),
        }
        // The frame was refused, the stream stayed in step.
        assert_eq!(after_flood.unwrap(), Some(vec![7]));
        // What the parent held at any moment: what it had, the one read's
        // batch being closed, the watcher's own file and its runtime's fds.
        assert!(
            peak <= before + SCM_MAX_FD + 16,
            "peak {peak} fds with {before} before: the flood's fds were held"
        );
        assert_eq!(
            open_failures, 0,
            "other work in the parent failed to open files"
        );
        drop((chan, child));
        base.assert_clean().await;
    });
}

#[test]
fn a_child_that_exits_before_our_hello_still_delivers_what_it_sent() {
    rt().block_on(async {
        let base = tk::Baseline::take().await;
        // Made certain: the child has exited before our end says hello, so
        // writing our hello fails with EPIPE.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = fixture(&["hello-then-exit"]);
        let mut child = Child::builder(&mut cmd)
            .env(IPC_FD_ENV, IPC_FD.to_string())
            .pass_fd(OwnedFd::from(theirs), IPC_FD)
            .spawn()
            .unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
        let mut chan = Channel::<u64, Vec<u8>>::from_stream(ours).unwrap();
        assert_eq!(chan.recv().await.unwrap(), Some(vec![42]));
        assert_eq!(chan.recv().await.unwrap(), None);
        let sent = chan.send(&1).await;
        assert!(matches!(sent, Err(Error::Closed)), "{sent:?}");
        drop((chan, child));

        // And as it happens by itself, the race going either way.
        for round in 0..50 {
            let mut cmd = fixture(&["hello-then-exit"]);
            let (mut child, mut chan) = forkyard_ipc::spawn::<u64, Vec<u8>>(&mut cmd).unwrap();
            let first = chan.recv().await;
            assert!(
                matches!(&first, Ok(Some(v)) if v == &[42]),
                "round {round}: {first:?}"
            );
            let end = chan.recv().await;
            assert!(matches!(end, Ok(None)), "round {round}: {end:?}");
            assert_eq!(child.wait().await.unwrap().code(), Some(0));
        }
        base.assert_clean().await;
    });
}

#[test]
fn a_receiver_broken_by_the_peer_leaves_the_sender_working() {
    rt().block_on(async {
        use std::io::Read;
        let (chan, mut peer) = raw_peer::<u64>(forkyard_ipc::Codec::Postcard);
        let (mut tx, mut rx) = chan.split();
        std::io::Write::write_all(&mut peer, &[0, 0, 0, 0, 0]).unwrap();
        let first = rx.recv().await;
        assert!(
            matches!(first, Err(Error::ZeroLengthFrame { offset: 0 })),
            "{first:?}"
        );
        let again = rx.recv().await;
        assert!(
            matches!(&again, Err(Error::Broken(earlier)) if earlier.to_string().contains("zero-length")),
            "{again:?}"
        );
        // The other direction is still in step: the peer gets our message.
        tx.send(&()).await.unwrap();
        peer.set_nonblocking(false).unwrap();
        let mut hello_and_frame = vec![0u8; 4096];
        let n = peer.read(&mut hello_and_frame).unwrap();
        assert!(
            hello_and_frame[..n].ends_with(&[1, 0, 0, 0, 0]),
            "the empty message's frame ends what the peer read"
        );
    });
}

#[test]
fn a_peer_that_went_away_reads_as_closed_every_time() {
    rt().block_on(async {
        let (mut chan, peer) = raw_peer::<u64>(forkyard_ipc::Codec::Postcard);
        drop(peer);
        let first = chan.send(&()).await;
        assert!(matches!(first, Err(Error::Closed)), "{first:?}");
        let second = chan.send(&()).await;
        assert!(matches!(second, Err(Error::Closed)), "{second:?}");
        assert!(matches!(chan.recv().await, Ok(None)));
    });
}
