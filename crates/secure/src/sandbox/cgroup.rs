//! A cgroup per run, for the `processes` (pids) and `memory` limits.
//!
//! # Design note
//!
//! `RLIMIT_NPROC` counts every process of the real user, not of the run, and root (or
//! CAP_SYS_RESOURCE) ignores it entirely; `RLIMIT_AS` limits address space per process, not
//! the memory of a process tree, and an allocation failure shows up as whatever the program
//! does with `ENOMEM`. A cgroup fixes both: `pids.max` bounds the run's tasks whoever runs it,
//! `memory.max` (`memory.limit_in_bytes` on v1) bounds the whole tree, and the kernel's OOM
//! counter tells us for certain that the run ended because of memory.
//!
//! The parent creates one directory per controller beneath its own cgroup, writes the
//! limits, and opens `cgroup.procs`; the child's pre-exec hook writes `0` ("me") to it
//! before anything else can fork. After the run every task still listed is killed (this also
//! reaches descendants that left the process group with `setsid`), and the directory removed.
//!
//! Both cgroup v1 (a `pids` or `memory` hierarchy we can write to) and v2 (the controller
//! enabled in our cgroup's `cgroup.subtree_control`) are supported; where neither works the
//! layer reports why and the limits fall back to rlimits.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Where runs of one controller get their directories.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    dir: PathBuf,
    version: Version,
}

impl Base {
    pub(crate) fn describe(&self) -> String {
        let v = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        format!("{v} {}", self.dir.display())
    }
}

/// Probed once: where each controller can be used, or why not.
#[derive(Debug)]
pub(crate) struct Support {
    pub(crate) pids: Result<Base, String>,
    pub(crate) memory: Result<Base, String>,
}

impl Support {
    pub(crate) fn get() -> &'static Support {
        static SUPPORT: OnceLock<Support> = OnceLock::new();
        SUPPORT.get_or_init(|| Support {
            pids: find(Controller::Pids),
            memory: find(Controller::Memory),
        })
    }
}

fn find(controller: Controller) -> Result<Base, String> {
    let name = controller.name();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read mountinfo: {e}"))?;
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    // v1: a hierarchy with this controller among its super options.
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let (root, mount, fstype, opts) = (fields[3], fields[4], rfields[0], rfields[2]);
        if fstype == "cgroup" && opts.split(',').any(|o| o == name) {
            let path = own
                .lines()
                .filter_map(|l| l.splitn(3, ':').collect::<Vec<_>>().try_into().ok())
                .find_map(|[_, ctrls, path]: [&str; 3]| {
                    ctrls.split(',').any(|c| c == name).then_some(path)
                })
                .ok_or_else(|| format!("no {name} line in /proc/self/cgroup"))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            let dir = Path::new(mount).join(rel);
            return writable(&dir).map(|()| Base {
                dir,
                version: Version::V1,
            });
        }
    }
    // v2: the unified hierarchy, with the controller delegated to our cgroup's children.
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.len() < 5 || !right.starts_with("cgroup2 ") {
            continue;
        }
        let (root, mount) = (fields[3], fields[4]);
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| "no cgroup v2 line in /proc/self/cgroup".to_string())?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        let dir = Path::new(mount).join(rel);
        let subtree = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        if !subtree.split_whitespace().any(|c| c == name) {
            return Err(format!(
                "cgroup v2: `{name}` is not enabled in {}/cgroup.subtree_control (needs a delegated subtree), \
                 and no v1 {name} hierarchy is mounted",
                dir.display()
            ));
        }
        return writable(&dir).map(|()| Base {
            dir,
            version: Version::V2,
        });
    }
    Err(format!(
        "no cgroup hierarchy with the {name} controller is mounted"
    ))
}

fn writable(dir: &Path) -> Result<(), String> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
        .map_err(|e| format!("cannot create cgroups in {}: {e}", dir.display()))
}

/// One run's cgroup directory (one per v1 hierarchy; one for every controller on v2).
#[derive(Debug)]
pub(crate) struct RunCgroup {
    controllers: Vec<Controller>,
    version: Version,
    dir: PathBuf,
    /// `cgroup.procs`, opened for the child to write `0` into.
    procs: Option<OwnedFd>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The cgroups of one run, with their layer report.
#[derive(Debug)]
pub(crate) struct CgroupSet {
    pub(crate) cgroups: Vec<RunCgroup>,
    pub(crate) report: crate::sandbox::LayerReport,
    /// Whether memory is limited by a cgroup (rather than by `RLIMIT_AS`).
    pub(crate) memory: bool,
    /// OOM kills counted before this run (a reused cgroup keeps its counter).
    oom_base: u64,
}

impl Default for CgroupSet {
    fn default() -> Self {
        CgroupSet {
            cgroups: Vec::new(),
            report: crate::sandbox::LayerReport {
                layer: crate::sandbox::Layer::Cgroup,
                status: crate::sandbox::LayerStatus::Off,
                detail: String::new(),
            },
            memory: false,
            oom_base: 0,
        }
    }
}

impl CgroupSet {
    /// Records the counters a run is measured against.
    pub(crate) fn arm(&mut self) {
        self.oom_base = self.oom_total();
    }

    fn oom_total(&self) -> u64 {
        self.cgroups
            .iter()
            .filter(|c| c.has(Controller::Memory))
            .map(RunCgroup::oom_kills)
            .sum()
    }

    /// Whether the kernel's OOM killer fired in this run.
    pub(crate) fn oom_killed(&self) -> bool {
        self.oom_total() > self.oom_base
    }

    /// Kills what is left in the cgroups, adding the pids to `killed`.
    pub(crate) fn sweep(&self, killed: &mut BTreeSet<i32>) {
        for cgroup in &self.cgroups {
            cgroup.kill_all(Duration::from_secs(2), killed);
        }
    }

    /// Whether the set can serve another run.
    pub(crate) fn reusable(&self) -> bool {
        !self.cgroups.is_empty() && self.cgroups.iter().all(RunCgroup::reusable)
    }
}

/// Puts `controller` with `limit` into the run's cgroups: on v2 into the run's existing
/// directory in that hierarchy if there is one, otherwise into a new directory.
pub(crate) fn join_or_create(
    cgroups: &mut Vec<RunCgroup>,
    base: &Base,
    controller: Controller,
    limit: u64,
) -> io::Result<()> {
    let existing = cgroups.iter_mut().find(|c| {
        c.version == Version::V2 && base.version == Version::V2 && c.dir.parent() == Some(&base.dir)
    });
    match existing {
        Some(cgroup) => {
            cgroup.set_limit(controller, limit)?;
            cgroup.controllers.push(controller);
            Ok(())
        }
        None => {
            let cgroup = RunCgroup::create(base, controller, limit)?;
            cgroups.push(cgroup);
            Ok(())
        }
    }
}

impl RunCgroup {
    /// Creates the directory and writes the limit.
    fn create(base: &Base, controller: Controller, limit: u64) -> io::Result<RunCgroup> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = base
            .dir
            .join(format!("forkyard-secure-{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        // From here on, Drop removes the directory if anything below fails.
        let mut cgroup = RunCgroup {
            controllers: vec![controller],
            version: base.version,
            dir,
            procs: None,
        };
        cgroup.set_limit(controller, limit)?;
        let procs = rustix::fs::open(
            cgroup.dir.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        cgroup.procs = Some(procs);
        Ok(cgroup)
    }

    fn set_limit(&self, controller: Controller, limit: u64) -> io::Result<()> {
        let value = if limit == u64::MAX {
            "max".to_string()
        } else {
            limit.to_string()
        };
        match (controller, self.version) {
            (Controller::Pids, _) => fs::write(self.dir.join("pids.max"), value),
            (Controller::Memory, Version::V1) => {
                if limit == u64::MAX {
                    return Ok(());
                }
                fs::write(self.dir.join("memory.limit_in_bytes"), value)
            }
            (Controller::Memory, Version::V2) => {
                fs::write(self.dir.join("memory.max"), value)?;
                // No swap either, or the limit only moves the pressure to swap.
                let _ = fs::write(self.dir.join("memory.swap.max"), "0");
                Ok(())
            }
        }
    }

    /// A duplicate of the `cgroup.procs` descriptor, for one child's hooks.
    pub(crate) fn procs_dup(&self) -> Option<io::Result<OwnedFd>> {
        self.procs.as_ref().map(OwnedFd::try_clone)
    }

    /// Whether the cgroup is empty and holds no charge a next run would inherit. (A pids
    /// cgroup keeps counting a killed orphan until its zombie is reaped, which some init
    /// processes never do; such a cgroup is not reused.)
    fn reusable(&self) -> bool {
        let charged = self.has(Controller::Pids)
            && fs::read_to_string(self.dir.join("pids.current")).map_or(true, |s| s.trim() != "0");
        !charged && self.tasks().is_empty()
    }

    pub(crate) fn has(&self, controller: Controller) -> bool {
        self.controllers.contains(&controller)
    }

    /// How many times the kernel's OOM killer fired in this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    fn tasks(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every task still in the cgroup (repeatedly, since a task may fork while we
    /// read) until it is empty or `within` has passed. Adds the pids it signalled to `killed`.
    ///
    /// On v1 this lists `cgroup.procs` and kills each pid: a pid that exits and is reused
    /// between the read and the kill could be hit. The window is the few microseconds
    /// between two system calls, and the tasks listed cannot exit on their own while stopped
    /// in the kernel by nothing; v2's `cgroup.kill` has no such window.
    pub(crate) fn kill_all(&self, within: Duration, killed: &mut BTreeSet<i32>) {
        let deadline = Instant::now() + within;
        if self.version == Version::V2 {
            let tasks = self.tasks();
            if !tasks.is_empty() && fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
                killed.extend(tasks);
            }
        }
        loop {
            let tasks = self.tasks();
            if tasks.is_empty() {
                return;
            }
            for pid in tasks {
                if let Some(p) = rustix::process::Pid::from_raw(pid)
                    && rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
                {
                    killed.insert(pid);
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs = None;
        if !self.tasks().is_empty() {
            self.kill_all(Duration::from_secs(1), &mut BTreeSet::new());
        }
        // A killed task leaves the cgroup when it exits, a moment after SIGKILL; retry rmdir
        // briefly rather than leave the directory behind.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a run's cgroup");
                    return;
                }
            }
        }
    }
}
