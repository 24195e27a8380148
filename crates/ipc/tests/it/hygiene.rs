//! fd hygiene: nothing leaked, nothing inherited, truncation reported.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use forkyard_ipc::{Channel, Error};
use serde::{Deserialize, Serialize};

use crate::support::{my_fd_count, rt};

#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    n: u32,
    #[serde(with = "forkyard_ipc::fd::vec")]
    fds: Vec<OwnedFd>,
}

#[test]
fn ten_thousand_fds_passed_and_dropped_leave_the_count_at_baseline() {
    rt().block_on(async {
        let (r, _w) = std::io::pipe().unwrap();
        let r: OwnedFd = r.into();
        let (mut a, mut b) = Channel::<Handle, ()>::pair().unwrap();
        let baseline = my_fd_count();
        let send = async {
            for n in 0..10_000 {
                a.feed(&Handle {
                    n,
                    fds: vec![r.try_clone().unwrap()],
                })
                .await
                .unwrap();
            }
            a.flush().await.unwrap();
        };
        let recv = async {
            for n in 0..10_000 {
                let h = b.recv().await.unwrap().unwrap();
                assert_eq!((h.n, h.fds.len()), (n, 1));
            }
        };
        tokio::join!(send, recv);
        assert_eq!(my_fd_count(), baseline);
    });
}

#[test]
fn a_received_fd_is_close_on_exec_and_not_inherited_by_a_later_child() {
    rt().block_on(async {
        let (mut a, mut b) = Channel::<Handle, ()>::pair().unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        a.send(&Handle {
            n: 0,
            fds: vec![r.into()],
        })
        .await
        .unwrap();
        let h = b.recv().await.unwrap().unwrap();
        let fd = &h.fds[0];
        assert!(
            rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
        let out = forkyard_testkit::fixture("list-fds")
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let child_fds: Vec<i32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert!(!child_fds.is_empty());
        assert!(
            !child_fds.contains(&fd.as_raw_fd()),
            "child inherited fd {}: {child_fds:?}",
            fd.as_raw_fd()
        );
    });
}

/// Lowers this process's RLIMIT_NOFILE (nextest runs each test in its own
/// process), so the kernel can install only some of a frame's fds.
#[test]
fn msg_ctrunc_under_a_lowered_fd_limit_is_a_typed_error_and_the_channel_goes_on() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    rt().block_on(async {
        let (mut a, mut b) = Channel::<Handle, ()>::pair().unwrap();
        // Handshake first, so it does not need fds under the low limit.
        a.send(&Handle { n: 0, fds: vec![] }).await.unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap().n, 0);
        let fds: Vec<OwnedFd> = (0..3)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        a.send(&Handle { n: 1, fds }).await.unwrap();
        a.send(&Handle { n: 2, fds: vec![] }).await.unwrap();
        let saved = getrlimit(Resource::Nofile);
        // Room for exactly one more fd, not three: the kernel installs each
        // received fd at the lowest free number, which must be below the limit,
        // so a limit equal to the second-lowest free number admits only one.
        let open = forkyard_testkit::open_fds(std::process::id());
        let mut free = (0..).filter(|fd| !open.contains(fd));
        let _lowest = free.next().unwrap();
        let limit = free.next().unwrap() as u64;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: saved.maximum,
            },
        )
        .unwrap();
        let got = b.recv().await;
        setrlimit(Resource::Nofile, saved).unwrap();
        match got {
            Err(Error::FdsTruncated {
                declared: 3,
                received,
            }) => assert!(received < 3),
            other => panic!("expected FdsTruncated, got {other:?}"),
        }
        assert_eq!(
            b.recv().await.unwrap().unwrap().n,
            2,
            "the stream stayed in step"
        );
    });
}
