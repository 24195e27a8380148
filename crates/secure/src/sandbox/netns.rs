//! One empty network namespace shared by the runs of this process.
//!
//! Creating a network namespace costs about a millisecond (and tearing one down more,
//! asynchronously, in the kernel); joining an existing one with `setns` costs one system
//! call. So when we may (CAP_SYS_ADMIN) and it is safe, every run joins the same empty
//! namespace, created once by a short-lived thread and kept alive by a descriptor.
//!
//! It is safe when the seccomp layer denies `socket(2)`: then no run can create a socket to
//! reach another run through the shared namespace, nor bring its loopback up. Otherwise each
//! run gets its own namespace (see `harden`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};

/// The shared namespace, created on first use.
pub(crate) fn shared() -> Result<BorrowedFd<'static>, String> {
    static NS: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    NS.get_or_init(create)
        .as_ref()
        .map(AsFd::as_fd)
        .map_err(Clone::clone)
}

fn create() -> Result<OwnedFd, String> {
    std::thread::Builder::new()
        .name("forkyard-netns".into())
        .spawn(|| -> Result<OwnedFd, String> {
            // SAFETY: this thread exists only to enter the new namespace and exits right
            // after; NEWNET does not unshare the descriptor table.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            rustix::fs::open(
                "/proc/thread-self/ns/net",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("opening the new namespace: {e}"))
        })
        .map_err(|e| format!("starting a thread: {e}"))?
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
}
