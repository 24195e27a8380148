//! The syscalls that `rustix` does not wrap the way we need them.
//!
//! Everything here is a thin, safe wrapper over one syscall, so the `unsafe`
//! of the crate stays in three places: this file, the owner-death watchdog
//! (`watchdog.rs`) and the `pre_exec` closure (`spawn.rs`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::Signal;
use crate::exit::Rusage;

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): deliver to the process group of the
/// pidfd's process instead of to the process.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `pidfd_send_signal(2)` with `flags`.
fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: Signal, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: the syscall reads no memory of ours (siginfo is null) and the fd is
    // borrowed, so it stays open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig.as_raw(),
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to the whole process group led by the pidfd's process.
///
/// Through the pidfd, so a recycled pid or pgid is never hit: the kernel resolves
/// the group from the `struct pid` the pidfd pins, which stays the group's
/// identity even after the leader has been reaped. `ESRCH` (nobody left in the
/// group) is success: the goal, an empty group, is reached.
///
/// Kernels before 6.9 lack the flag (`EINVAL`); there we fall back to `kill(-pgid)`,
/// but only while the leader is unreaped: its zombie pins the pgid number, so the
/// number cannot be recycled. After reaping, the fallback signals only the leader
/// pidfd (a no-op), and stragglers are out of reach on such kernels.
pub(crate) fn signal_group(
    pidfd: BorrowedFd<'_>,
    pgid: u32,
    leader_reaped: bool,
    sig: Signal,
) -> io::Result<()> {
    match pidfd_send_signal(pidfd, sig, PIDFD_SIGNAL_PROCESS_GROUP) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !leader_reaped => {
            let pgid = rustix::process::Pid::from_raw(pgid as i32)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            match rustix::process::kill_process_group(pgid, to_rustix(sig)?) {
                Ok(()) => Ok(()),
                Err(rustix::io::Errno::SRCH) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether any process, zombies included, is still in the pidfd's process group
/// (a signal 0 probe; `false` also on kernels without group pidfd signals).
pub(crate) fn group_has_members(pidfd: BorrowedFd<'_>) -> bool {
    pidfd_send_signal(pidfd, Signal::from_raw(0), PIDFD_SIGNAL_PROCESS_GROUP).is_ok()
}

/// Sends `sig` to the pidfd's process only.
pub(crate) fn signal_process(pidfd: BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
    match pidfd_send_signal(pidfd, sig, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

fn to_rustix(sig: Signal) -> io::Result<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(sig.as_raw())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `wait4(pid)`: reaps `pid` if it has exited, returning its raw status and rusage.
///
/// `Ok(None)` with `nohang` when it is still running. The caller must own the
/// child (be its parent and the only one reaping it), or the pid could be reused.
pub(crate) fn wait4(pid: u32, nohang: bool) -> io::Result<Option<(i32, Rusage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` and `ru` are valid for writes for the duration of the call.
        let rc = unsafe {
            libc::wait4(
                pid as libc::pid_t,
                &mut status,
                flags | libc::__WALL,
                &mut ru,
            )
        };
        if rc == pid as libc::pid_t {
            return Ok(Some((status, Rusage::from_libc(&ru))));
        }
        if rc == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}
