//! The pre-exec hook: what runs in the child between `fork` and `exec`.
//!
//! # Design note: only system calls after `fork`
//!
//! The parent is multi-threaded (tokio). `fork` copies only the calling thread, so any lock
//! another thread held at that instant (the allocator's, stdio's, a `Mutex` of ours) stays
//! locked forever in the child. The hook therefore never allocates, never locks and never
//! formats: every value it needs (rlimit numbers, the Landlock ruleset descriptor, the BPF
//! programs, cgroup descriptors, the user-namespace map lines, the attestation buffer) is
//! computed in the parent and moved into the closure, and the closure only makes system
//! calls through `rustix`, `landlock` and `seccompiler`, none of which allocate on these paths.
//!
//! Order, each step failing the spawn if it fails:
//!
//! 1. `setsid` (new session, no controlling terminal). `forkyard-child` makes every child
//!    the leader of its own process group before our hook runs, and a group leader may not
//!    call `setsid`; then we detach from the controlling terminal with `TIOCNOTTY` instead,
//!    which is what the layer is for (no terminal to inject keystrokes into);
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then check the parent is still the one we expect;
//! 3. `setrlimit` for each limit, `RLIMIT_CORE` 0;
//! 4. join the run's cgroups (write `0` to their `cgroup.procs`) before anything can fork;
//! 5. `unshare` the network and pid (and user) namespaces, writing our own uid/gid maps when
//!    a user namespace was needed, or join the shared empty network namespace (`netns`);
//! 6. drop every capability (securebits, bounding set, ambient set, `capset`; see
//!    [`caps`](crate::sandbox::caps)): after the last step that needs one (raising
//!    `RLIMIT_NOFILE`, joining cgroups, namespaces), before the relay forks;
//! 7. with a pid namespace: `fork` once more (see below);
//! 8. `PR_SET_NO_NEW_PRIVS`;
//! 9. Landlock `restrict_self`;
//! 10. the seccomp filters, last, so that nothing above runs under them;
//! 11. a few bytes to the attestation pipe saying what was applied, so the parent reports
//!     what the child confirmed rather than what it hoped for.
//!
//! # Design note: the pid namespace relay
//!
//! `unshare(CLONE_NEWPID)` moves the *children* of the caller into the new namespace, not
//! the caller: the first child becomes its pid 1, and when pid 1 exits the kernel kills
//! the whole namespace and refuses further forks. So after the unshare the hook forks:
//! the new process (pid 1 inside) carries on to `exec` the program, and the spawned process
//! (the one `forkyard-child` tracks) becomes a relay that closes every descriptor, blocks
//! every catchable signal, waits for pid 1 and then exits the same way (same code, or the
//! same signal re-raised). Killing the relay's process group kills both; the program, as
//! pid 1, takes every process it started down with it, even ones that left its process
//! group; and `wait4` on the relay reports the program's resource usage, since the relay
//! reaped it. Signals other than SIGKILL from outside reach a pid 1 only if it handles
//! them, so a graceful stop of a program that does not handle SIGTERM becomes a SIGKILL
//! after the grace period.
//!
//! `forkyard-child`'s own hook runs after this one (registering with its watchdog and closing
//! every descriptor but the ones it passes), under our seccomp filters and without
//! capabilities; it needs none of the calls they deny, and no capability.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use landlock::{RulesetCreated, RulesetStatus};
use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Resource, Rlimit, Signal};

use crate::sandbox::caps::CapsPlan;
use crate::sandbox::seccomp::SeccompPlan;

/// Attestation bytes written by the child.
pub(crate) const ATTEST_LEN: usize = 19;
const MAGIC: u8 = 0xF5;

/// The contents of `/proc/self/{setgroups,uid_map,gid_map}` for an unprivileged user
/// namespace, formatted in the parent.
#[derive(Debug)]
pub(crate) struct UserNsMaps {
    files: [(CString, Vec<u8>); 3],
}

impl UserNsMaps {
    /// Maps our own uid and gid to themselves inside the new user namespace, so files the
    /// program creates belong to us as usual.
    pub(crate) fn identity() -> UserNsMaps {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let path = |p: &str| CString::new(p).expect("no NUL in a constant");
        UserNsMaps {
            files: [
                (path("/proc/self/setgroups"), b"deny".to_vec()),
                (
                    path("/proc/self/uid_map"),
                    format!("{uid} {uid} 1\n").into_bytes(),
                ),
                (
                    path("/proc/self/gid_map"),
                    format!("{gid} {gid} 1\n").into_bytes(),
                ),
            ],
        }
    }
}

/// Everything the child does, prepared in the parent.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub(crate) session: bool,
    pub(crate) parent_death: Option<Pid>,
    pub(crate) rlimits: Vec<(Resource, Rlimit)>,
    /// `RLIMIT_NOFILE` wanted, and how many descriptors forkyard-child's hook may still need.
    pub(crate) nofile: Option<(u64, u64)>,
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    pub(crate) unshare_net: bool,
    /// A network namespace to join instead of creating one.
    pub(crate) join_net: Option<BorrowedFd<'static>>,
    pub(crate) unshare_pid: bool,
    pub(crate) userns: Option<UserNsMaps>,
    pub(crate) capabilities: Option<CapsPlan>,
    pub(crate) no_new_privs: bool,
    pub(crate) landlock: Option<RulesetCreated>,
    pub(crate) seccomp: Option<Arc<SeccompPlan>>,
    pub(crate) attest: Option<OwnedFd>,
}

/// What the child confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Attestation {
    /// 0 none, 1 setsid, 2 TIOCNOTTY.
    pub(crate) session: u8,
    pub(crate) parent_death: bool,
    pub(crate) rlimits: u8,
    pub(crate) cgroups: u8,
    pub(crate) network_namespace: bool,
    pub(crate) pid_namespace: bool,
    /// The open-files limit the child set (0: none).
    pub(crate) nofile: u64,
    pub(crate) no_new_privs: bool,
    /// 0 not applied, 1 not enforced, 2 partially enforced, 3 fully enforced.
    pub(crate) landlock: u8,
    pub(crate) seccomp_filters: u8,
    /// The capability steps done (`caps::ATTEST_*` bits).
    pub(crate) capabilities: u8,
}

impl Attestation {
    pub(crate) fn decode(buf: &[u8]) -> Option<Attestation> {
        if buf.len() != ATTEST_LEN || buf[0] != MAGIC {
            return None;
        }
        Some(Attestation {
            session: buf[1],
            parent_death: buf[2] == 1,
            rlimits: buf[3],
            cgroups: buf[4],
            network_namespace: buf[5] == 1,
            no_new_privs: buf[6] == 1,
            landlock: buf[7],
            seccomp_filters: buf[8],
            pid_namespace: buf[9] == 1,
            nofile: u64::from_le_bytes(buf[10..18].try_into().ok()?),
            capabilities: buf[18],
        })
    }
}

impl Hooks {
    /// Runs in the child. See the module documentation for the rules.
    pub(crate) fn apply(&mut self) -> io::Result<()> {
        let mut report = [0u8; ATTEST_LEN];
        report[0] = MAGIC;

        if self.session {
            report[1] = match rustix::process::setsid() {
                Ok(_) => 1,
                Err(rustix::io::Errno::PERM) => {
                    detach_terminal()?;
                    2
                }
                Err(e) => return Err(e.into()),
            };
        }
        if let Some(parent) = self.parent_death {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // If the parent died between fork and the prctl, the signal will never come:
            // we were re-parented already. Refuse to run an orphan.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            report[2] = 1;
        }
        for (resource, limit) in &self.rlimits {
            rustix::process::setrlimit(*resource, *limit)?;
            report[3] += 1;
        }
        if let Some((wanted, reserve)) = self.nofile {
            // This process is a copy of a busy parent and still holds all its descriptors
            // (they close at exec). forkyard-child's hook, which runs after this one, must
            // still allocate a few; with a limit below the highest inherited number it
            // would fail with EMFILE. So the limit is raised as far as needed here, and the
            // parent lowers it to `wanted` right after exec (see `run`).
            let effective = wanted.max(highest_open_fd()? + 1 + reserve);
            let limit = Rlimit {
                current: Some(effective),
                maximum: Some(effective),
            };
            rustix::process::setrlimit(Resource::Nofile, limit)?;
            report[3] += 1;
            report[10..18].copy_from_slice(&effective.to_le_bytes());
        }
        for procs in &self.cgroup_procs {
            rustix::io::write(procs, b"0")?;
            report[4] += 1;
        }
        if self.unshare_net || self.unshare_pid {
            use rustix::thread::UnshareFlags;
            let mut flags = UnshareFlags::empty();
            if self.unshare_net {
                flags |= UnshareFlags::NEWNET;
            }
            if self.unshare_pid {
                flags |= UnshareFlags::NEWPID;
            }
            if self.userns.is_some() {
                flags |= UnshareFlags::NEWUSER;
            }
            // SAFETY: the child is single-threaded after fork, and none of these flags
            // unshares the descriptor table, so no other thread can observe a changed table.
            unsafe { rustix::thread::unshare_unsafe(flags)? };
            if let Some(maps) = &self.userns {
                for (path, contents) in &maps.files {
                    let fd = rustix::fs::open(
                        path.as_c_str(),
                        OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    rustix::io::write(&fd, contents)?;
                }
            }
            report[5] = u8::from(self.unshare_net);
        }
        if let Some(ns) = self.join_net {
            rustix::thread::move_into_link_name_space(
                ns,
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            report[5] = 1;
        }
        if let Some(plan) = &self.capabilities {
            report[18] = plan.apply()?;
        }
        if self.unshare_pid {
            relay_through_pid_one()?;
            // Only the new pid 1 gets here. Its parent is the relay, which cannot die before
            // it short of SIGKILL, which this makes fatal for pid 1 too.
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            report[9] = 1;
        }
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
            report[6] = 1;
        }
        if let Some(ruleset) = self.landlock.take() {
            let status = ruleset.restrict_self().map_err(landlock_errno)?;
            report[7] = match status.ruleset {
                RulesetStatus::NotEnforced => 1,
                RulesetStatus::PartiallyEnforced => 2,
                RulesetStatus::FullyEnforced => 3,
            };
            if status.no_new_privs {
                report[6] = 1;
            }
        }
        if let Some(plan) = &self.seccomp {
            let n = crate::sandbox::seccomp::apply(&plan.filters)?;
            report[8] = n as u8;
            report[6] = 1;
        }
        if let Some(attest) = &self.attest {
            rustix::io::write(attest.as_fd(), &report)?;
        }
        Ok(())
    }
}

/// The errno of a failed `restrict_self`, without allocating.
fn landlock_errno(error: landlock::RulesetError) -> io::Error {
    use landlock::{RestrictSelfError, RulesetError};
    match error {
        RulesetError::RestrictSelf(
            RestrictSelfError::SetNoNewPrivsCall { source, .. }
            | RestrictSelfError::RestrictSelfCall { source, .. },
        ) => source,
        _ => io::Error::from_raw_os_error(libc::EINVAL),
    }
}

/// Detaches from the controlling terminal, if there is one (`ENXIO`: there is none).
fn detach_terminal() -> io::Result<()> {
    let tty = match rustix::fs::open(
        c"/dev/tty",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NXIO | rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: TIOCNOTTY takes no argument; `tty` is an open descriptor we own.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCNOTTY) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks the process that will be pid 1 of the new pid namespace. Returns in that process;
/// the caller (the spawned process) becomes the relay and never returns. See the module docs.
fn relay_through_pid_one() -> io::Result<()> {
    // SAFETY: fork in a single-threaded process (we are the child of a fork); both sides only
    // make async-signal-safe system calls from here on.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(());
    }
    // SAFETY: the relay. Every call below is an async-signal-safe system call on values on
    // our stack; the function ends in _exit or a fatal signal and never returns.
    unsafe {
        // Hold nothing the parent waits on: std's exec-status pipe, stdio, passed fds.
        libc::syscall(libc::SYS_close_range, 0u32, libc::c_uint::MAX, 0u32);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let mut status: libc::c_int = 0;
        loop {
            let rc = libc::waitpid(pid, &mut status, libc::__WALL);
            if rc == pid {
                break;
            }
            if rc < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = libc::WTERMSIG(status);
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut one);
        libc::sigaddset(&mut one, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
}

/// The highest descriptor number open in this process, read from `/proc/self/fd` into a
/// buffer on the stack (no allocation).
fn highest_open_fd() -> io::Result<u64> {
    use std::mem::MaybeUninit;
    let dir = rustix::fs::open(
        c"/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let mut entries = rustix::fs::RawDir::new(&dir, &mut buf);
    let mut highest = 0u64;
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
            let n = name.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            highest = highest.max(n);
        }
    }
    Ok(highest)
}
