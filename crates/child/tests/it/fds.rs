//! No fd of the parent leaks into the child, except those passed on purpose.

use std::io::Read;
use std::os::fd::AsRawFd;

use forkyard_child::{Child, Output};

use crate::support::{Baseline, fixture};

async fn child_fds(builder: forkyard_child::Builder<'_>) -> Vec<i32> {
    let out = builder
        .stdout(Output::capture(1 << 16))
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert!(out.exit.success(), "{}", out.exit);
    out.stdout
        .text()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn inherited_fds_are_closed_even_without_cloexec() {
    let base = Baseline::take().await;
    // A pipe opened the careless way, as a C library might: no O_CLOEXEC.
    let (leaky_r, leaky_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::empty()).unwrap();
    let mut cmd = fixture("list-fds", &[]);
    let fds = child_fds(Child::builder(&mut cmd)).await;
    // list-fds itself opens /proc/self/fd while listing, which shows up as one more fd.
    assert!(
        !fds.contains(&leaky_r.as_raw_fd()) && !fds.contains(&leaky_w.as_raw_fd()),
        "leaked fds {} {} into the child, which has {fds:?}",
        leaky_r.as_raw_fd(),
        leaky_w.as_raw_fd()
    );
    assert!(
        fds.iter().filter(|&&fd| fd > 2).count() <= 1,
        "child has extra fds: {fds:?}"
    );
    drop((leaky_r, leaky_w));
    base.assert_clean().await;
}

#[tokio::test]
async fn passed_fds_arrive_at_their_numbers() {
    let base = Baseline::take().await;
    let (r1, mut w1) = std::io::pipe().unwrap();
    let (r2, w2) = rustix::pipe::pipe().unwrap();
    let mut cmd = fixture("list-fds", &[]);
    // Targets that collide with each other's likely source numbers exercise the parking.
    let fds = child_fds(
        Child::builder(&mut cmd)
            .pass_fd(w1.try_clone().unwrap().into(), 7)
            .pass_fd(r2, 3),
    )
    .await;
    assert!(fds.contains(&7) && fds.contains(&3), "child fds {fds:?}");
    // Our copies of passed fds were consumed by the spawn: only the parent's own w1 holds the pipe now.
    drop(w2);
    use std::io::Write;
    w1.write_all(b"x").unwrap();
    drop(w1);
    let mut got = String::new();
    let mut r1 = r1;
    r1.read_to_string(&mut got).unwrap();
    assert_eq!(got, "x");
    drop(r1);
    base.assert_clean().await;
}

#[tokio::test]
async fn a_passed_fd_is_a_working_channel() {
    let base = Baseline::take().await;
    let (r, w) = std::io::pipe().unwrap();
    // The child writes through fd 3, which is our pipe's write end.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo through-fd-3 >&3"]);
    let exit = Child::builder(&mut cmd)
        .pass_fd(w.into(), 3)
        .spawn()
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    let mut got = String::new();
    let mut r = r;
    r.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through-fd-3\n");
    drop(r);
    base.assert_clean().await;
}
