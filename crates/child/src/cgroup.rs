//! Optional cgroup v2 containment: the answer to descendants that escape the group.
//!
//! A process group is a convention, not a wall: any descendant can call
//! `setsid(2)` or `setpgid(2)` and leave it, and then no group signal reaches
//! it. A cgroup is a wall: membership is inherited by every descendant and a
//! process cannot leave it without write access to the cgroup tree, and
//! `cgroup.kill` (Linux 5.14) SIGKILLs every member at once. The price is that
//! the owner needs write access to a cgroup v2 directory (root, or a directory
//! delegated to the user, e.g. by systemd's `Delegate=yes`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One child's cgroup: `<parent>/forkyard-<owner pid>-<token>`.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
    procs: OwnedFd,
    kill: OwnedFd,
}

impl Cgroup {
    pub(crate) fn create(parent: &Path, token: u64) -> io::Result<Cgroup> {
        let path = parent.join(format!("forkyard-{}-{token}", std::process::id()));
        std::fs::create_dir(&path)?;
        let open = |name: &str| -> io::Result<OwnedFd> {
            Ok(OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path.join(name))?
                .into())
        };
        let made = open("cgroup.procs").and_then(|procs| Ok((procs, open("cgroup.kill")?)));
        match made {
            Ok((procs, kill)) => Ok(Cgroup { path, procs, kill }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The fd a child writes `0` to, from `pre_exec`, to move itself in.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// SIGKILLs every process in the cgroup.
    pub(crate) fn kill(&self) -> io::Result<()> {
        let mut f = File::from(self.kill.try_clone()?);
        f.write_all(b"1")
    }

    /// Whether any live process is still in the cgroup (`populated 1` in `cgroup.events`).
    pub(crate) fn is_populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .map(|events| events.lines().any(|l| l.trim() == "populated 1"))
            .unwrap_or(false)
    }

    /// Removes the (empty) cgroup directory.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
