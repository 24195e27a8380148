//! Symlink and rename races against a racing thread: the kernel resolves the name once, in
//! one walk, beneath the root, and the descriptor it returns is what the program gets.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use forkyard_secure::{Error, Operand, PassAs, ProgramRule, Request};

use crate::support::{Uploads, policy};

const ROUNDS: usize = 400;
const MIN_FLIPS: u64 = 200;

/// Validates until at least `ROUNDS` validations ran *and* the racing thread made
/// `MIN_FLIPS` swaps while they did (with a generous deadline), so the race really raced.
fn race(flips: &AtomicU64, mut validate_once: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = flips.load(Ordering::Relaxed);
    let mut rounds = 0;
    while rounds < ROUNDS || flips.load(Ordering::Relaxed) - start < MIN_FLIPS {
        assert!(
            Instant::now() < deadline,
            "the racing thread made too few swaps"
        );
        validate_once();
        rounds += 1;
    }
}

/// A thread flips `root/race` between a regular file and a symlink to a secret outside the
/// root, as fast as it can. Every accepted request got the inside file; every refusal names
/// the escape.
#[test]
fn symlink_swapped_in_by_a_racing_thread_never_escapes() {
    let uploads = Uploads::new();
    let root = uploads.root();
    let secret = uploads.outside().join("secret.txt");
    std::fs::write(root.join("real"), "inside").unwrap();
    let policy = policy(|p| ProgramRule::path(p).operand(Operand::path_beneath(&root)));

    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, flips, root) = (Arc::clone(&stop), Arc::clone(&flips), root.clone());
        std::thread::spawn(move || {
            let race = root.join("race");
            let tmp_link = root.join("race.link");
            let tmp_file = root.join("race.file");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp_link);
                std::os::unix::fs::symlink(&secret, &tmp_link).unwrap();
                std::fs::rename(&tmp_link, &race).unwrap();
                std::fs::write(&tmp_file, "inside").unwrap();
                std::fs::rename(&tmp_file, &race).unwrap();
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (mut accepted, mut refused) = (0, 0);
    race(&flips, || {
        match policy.validate(&Request::new("p").arg("race")) {
            Ok(v) => {
                accepted += 1;
                // The canonical path is read back from the descriptor itself: it names the
                // file the program will get.
                let path = v.opened_paths().next().unwrap().to_owned();
                assert!(path.starts_with(&root), "escaped to {}", path.display());
                assert_eq!(v.passed_fds().collect::<Vec<_>>(), vec![4]);
            }
            Err(Error::Denied { denial, .. }) => {
                refused += 1;
                assert!(
                    matches!(denial.rule(), "path.escapes-root" | "path.not-found"),
                    "unexpected refusal {}",
                    denial.rule()
                );
            }
            Err(other) => panic!("{other:?}"),
        }
    });
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(accepted + refused >= ROUNDS);
}

/// A thread swaps a directory on the path for a symlink to `/` (rename race on an
/// intermediate component). The walk either sees the directory or refuses the symlink.
#[test]
fn directory_renamed_to_a_symlink_mid_walk_never_escapes() {
    let uploads = Uploads::new();
    let root = uploads.root();
    std::fs::create_dir(root.join("d.real")).unwrap();
    std::fs::write(root.join("d.real/passwd"), "inside").unwrap();
    std::fs::rename(root.join("d.real"), root.join("d")).unwrap();
    let policy = policy(|p| {
        ProgramRule::path(p).operand(Operand::path_beneath(&root).pass_as(PassAs::Path))
    });

    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, flips, root) = (Arc::clone(&stop), Arc::clone(&flips), root.clone());
        std::thread::spawn(move || {
            let d = root.join("d");
            let parked = root.join("d.parked");
            let evil = root.join("d.evil");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&evil);
                std::os::unix::fs::symlink("/etc", &evil).unwrap();
                std::fs::rename(&d, &parked).unwrap();
                std::fs::rename(&evil, &d).unwrap();
                std::fs::remove_file(&d).unwrap();
                std::fs::rename(&parked, &d).unwrap();
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    race(&flips, || {
        match policy.validate(&Request::new("p").arg("d/passwd")) {
            Ok(v) => {
                // The argument is the path read back from the descriptor the kernel returned:
                // the file that was opened, not what the name points at now.
                let arg = v.args()[1].to_string_lossy().into_owned();
                assert!(arg.starts_with(root.to_str().unwrap()), "escaped to {arg}");
                assert!(
                    arg.ends_with("/d/passwd") || arg.ends_with("/d.parked/passwd"),
                    "{arg}"
                );
            }
            Err(Error::Denied { denial, .. }) => {
                assert!(
                    matches!(denial.rule(), "path.escapes-root" | "path.not-found"),
                    "{}",
                    denial.rule()
                );
            }
            Err(other) => panic!("{other:?}"),
        }
    });
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
}

/// The descriptor handed over is the very file that was checked, even if the name is
/// re-pointed immediately afterwards.
#[test]
fn the_checked_descriptor_survives_a_swap_after_validation() {
    let uploads = Uploads::new();
    let root = uploads.root();
    let policy = policy(|p| ProgramRule::path(p).operand(Operand::path_beneath(&root)));
    let v = policy.validate(&Request::new("p").arg("in.txt")).unwrap();
    // Swap the name for a symlink to the secret after the check.
    std::fs::remove_file(root.join("in.txt")).unwrap();
    std::os::unix::fs::symlink(uploads.outside().join("secret.txt"), root.join("in.txt")).unwrap();
    // The descriptor still reads the original content.
    let fd_dir = std::fs::read_dir("/proc/self/fd").unwrap();
    let mut found = false;
    for entry in fd_dir.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.starts_with(&root) && target.to_string_lossy().ends_with("in.txt (deleted)") {
            let mut s = String::new();
            std::fs::File::open(entry.path())
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "inside");
            found = true;
        }
    }
    assert!(found, "the validated command holds the original file open");
    drop(v);
}
