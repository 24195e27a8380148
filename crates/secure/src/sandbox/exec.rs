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
//! 1. `setsid` (new session, no controlling terminal);
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then check the parent is still the one we expect;
//! 3. `setrlimit` for each limit, `RLIMIT_CORE` 0;
//! 4. join the run's cgroups (write `0` to their `cgroup.procs`) before anything can fork;
//! 5. `unshare` the network (and user) namespace, writing our own uid/gid maps when a user
//!    namespace was needed;
//! 6. `PR_SET_NO_NEW_PRIVS`;
//! 7. Landlock `restrict_self`;
//! 8. the seccomp filters, last, so that nothing above runs under them;
//! 9. a few bytes to the attestation pipe saying what was applied, so the parent reports
//!    what the child confirmed rather than what it hoped for.
//!
//! `forkyard-child`'s own hook runs after this one (registering with its watchdog and closing
//! every descriptor but the ones it passes), under our seccomp filters; it needs none of the
//! calls they deny.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use landlock::{RulesetCreated, RulesetStatus};
use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Resource, Rlimit, Signal};

use crate::sandbox::seccomp::SeccompPlan;

/// Attestation bytes written by the child.
pub(crate) const ATTEST_LEN: usize = 9;
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
                (path("/proc/self/uid_map"), format!("{uid} {uid} 1\n").into_bytes()),
                (path("/proc/self/gid_map"), format!("{gid} {gid} 1\n").into_bytes()),
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
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    pub(crate) unshare_net: bool,
    pub(crate) userns: Option<UserNsMaps>,
    pub(crate) no_new_privs: bool,
    pub(crate) landlock: Option<RulesetCreated>,
    pub(crate) seccomp: Option<Arc<SeccompPlan>>,
    pub(crate) attest: Option<OwnedFd>,
}

/// What the child confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Attestation {
    pub(crate) session: bool,
    pub(crate) parent_death: bool,
    pub(crate) rlimits: u8,
    pub(crate) cgroups: u8,
    pub(crate) network_namespace: bool,
    pub(crate) no_new_privs: bool,
    /// 0 not applied, 1 not enforced, 2 partially enforced, 3 fully enforced.
    pub(crate) landlock: u8,
    pub(crate) seccomp_filters: u8,
}

impl Attestation {
    pub(crate) fn decode(buf: &[u8]) -> Option<Attestation> {
        if buf.len() != ATTEST_LEN || buf[0] != MAGIC {
            return None;
        }
        Some(Attestation {
            session: buf[1] == 1,
            parent_death: buf[2] == 1,
            rlimits: buf[3],
            cgroups: buf[4],
            network_namespace: buf[5] == 1,
            no_new_privs: buf[6] == 1,
            landlock: buf[7],
            seccomp_filters: buf[8],
        })
    }
}

impl Hooks {
    /// Runs in the child. See the module documentation for the rules.
    pub(crate) fn apply(&mut self) -> io::Result<()> {
        let mut report = [0u8; ATTEST_LEN];
        report[0] = MAGIC;

        if self.session {
            rustix::process::setsid()?;
            report[1] = 1;
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
            rustix::process::setrlimit(*resource, limit.clone())?;
            report[3] += 1;
        }
        for procs in &self.cgroup_procs {
            rustix::io::write(procs, b"0")?;
            report[4] += 1;
        }
        if self.unshare_net {
            let mut flags = rustix::thread::UnshareFlags::NEWNET;
            if self.userns.is_some() {
                flags |= rustix::thread::UnshareFlags::NEWUSER;
            }
            // SAFETY: the child is single-threaded after fork, and NEWNET/NEWUSER do not
            // unshare the descriptor table, so no other thread can observe a changed table.
            unsafe { rustix::thread::unshare_unsafe(flags)? };
            if let Some(maps) = &self.userns {
                for (path, contents) in &maps.files {
                    let fd = rustix::fs::open(path.as_c_str(), OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
                    rustix::io::write(&fd, contents)?;
                }
            }
            report[5] = 1;
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
            RestrictSelfError::SetNoNewPrivsCall { source, .. } | RestrictSelfError::RestrictSelfCall { source, .. },
        ) => source,
        _ => io::Error::from_raw_os_error(libc::EINVAL),
    }
}
