//! Reaping children that were dropped while still running.
//!
//! `Drop` cannot await, and blocking in `drop` on a child that takes a moment
//! to die after SIGKILL would stall the caller's thread. So a dropped child that
//! has not died by the time `drop` runs is handed to one background thread,
//! which blocks in `wait4` for each in turn (they have all been sent SIGKILL, so
//! each wait is short) and then removes the child's cgroup, if it had one.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use crate::cgroup::Cgroup;

pub(crate) struct Orphan {
    /// The dropped child to reap, if it was not reaped yet.
    pub(crate) pid: Option<u32>,
    pub(crate) cgroup: Option<Cgroup>,
}

static REAPER: Mutex<Option<Sender<Orphan>>> = Mutex::new(None);

/// Reaps `orphan` in the background (it must already have been sent SIGKILL).
pub(crate) fn reap_later(orphan: Orphan) {
    let mut tx = REAPER.lock().unwrap_or_else(|p| p.into_inner());
    let orphan = match tx.as_ref() {
        Some(sender) => match sender.send(orphan) {
            Ok(()) => return,
            Err(returned) => returned.0,
        },
        None => orphan,
    };
    let (new_tx, rx) = channel::<Orphan>();
    let spawned = std::thread::Builder::new()
        .name("forkyard-reaper".into())
        .spawn(move || {
            for orphan in rx {
                if let Some(pid) = orphan.pid {
                    let _ = crate::sys::wait4(pid, false);
                }
                if let Some(cg) = orphan.cgroup {
                    remove_cgroup(&cg);
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = new_tx.send(orphan);
            *tx = Some(new_tx);
        }
        Err(e) => {
            // No thread to be had: reap here, blocking, rather than leave a zombie.
            tracing::warn!(pid = ?orphan.pid, error = %e, "cannot start the reaper thread; reaping inline");
            if let Some(pid) = orphan.pid {
                let _ = crate::sys::wait4(pid, false);
            }
        }
    }
}

/// Kills what is left in a cgroup and removes it, waiting for it to empty.
pub(crate) fn remove_cgroup(cg: &Cgroup) {
    let _ = cg.kill();
    let mut interval = std::time::Duration::from_millis(1);
    for _ in 0..200 {
        if cg.remove().is_ok() {
            return;
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(std::time::Duration::from_millis(50));
    }
    tracing::warn!(cgroup = %cg.path().display(), "cgroup did not empty after SIGKILL; left in place");
}
