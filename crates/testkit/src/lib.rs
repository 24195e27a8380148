//! Fixtures that misbehave on purpose, and probes for what they leave behind: how
//! forkyard tests code whose job is to survive other programs.
//!
//! # The problem
//!
//! Code that manages processes is judged by what happens when the processes
//! misbehave: a child that ignores SIGTERM, crashes mid-task, floods its pipes,
//! forks a grandchild that escapes into its own session, leaks a descriptor, or
//! allocates until the kernel stops it. A test with a well-behaved stand-in (a
//! mock, or `/bin/true`) proves none of that. And the failures that matter most
//! leave no error behind: an orphaned grandchild, a zombie nobody reaps, one fd
//! too many. A test that only checks return values passes while the machine
//! fills up with leftovers.
//!
//! The usual answers fall short. Python's and Node's test suites write a small
//! script per scenario (`subprocess` with `sleep 100` or `node -e ...`), so every
//! suite reinvents them, slightly differently; tokio's own tests stop at the
//! processes they need for the API, not the ones that fight back; and sleeping
//! "long enough" for a kill to land makes a suite both slow and flaky.
//!
//! # The approach
//!
//! **One cast of misbehaving programs, shared by every crate.** One binary,
//! `forkyard-fixture`, with a subcommand per behaviour: `echo`, `exit-with N`,
//! `crash segv|abort`, `hang`, `ignore-sigterm`, `flood`, `grandchild [--setsid]`,
//! `leak-fd N`, `list-fds`, `alloc-until-killed`, `cpu-burn`, `print-env`,
//! `sleep`, `own-tree`, `spawn-and-hang` (`forkyard-fixture help` lists them).
//! [`fixture`] returns a [`Command`] for it. A fixture that a test must
//! synchronise with prints a line starting with `ready` once it is in the state
//! the test wants (its signal handlers installed, its grandchildren started),
//! so the test waits on that line, an event, rather than on a guess.
//!
//! **Probes that read the truth from `/proc`.** [`open_fds`] and [`fd_count`]
//! read `/proc/PID/fd`; [`live_descendants`] walks the process tree (zombies
//! excluded); [`zombie_children`] lists unreaped children; [`is_alive`] tells a
//! live process from a dead or zombie one; [`live_group_members`] and
//! [`rss_bytes`] answer what their names say.
//!
//! **A leak check every test ends with.** [`Baseline::take`] records the test
//! process's fds (after one warm-up spawn, so the owner-death watchdog and the
//! runtime are counted); [`Baseline::assert_clean`] waits until there is no live
//! descendant but the watchdog, no zombie child and no extra fd.
//!
//! **Deadlines, not sleeps.** Some conditions have no event of their own (a
//! process leaving `/proc`, a pool's statistics settling). [`wait_until`]
//! (blocking) and [`wait_for`] / [`wait_for_async`] (in a tokio test) poll them,
//! 1 ms doubling to 50 ms, until they hold or a generous deadline ([`DEADLINE`])
//! fails the test. The deadline bounds a failure; it is never what a test
//! asserts. These are the only sleeps forkyard's tests may contain (the tidy
//! check in `tests/it/tidy.rs` enforces it).
//!
//! # Example
//!
//! A child that ignores SIGTERM is killed by forkyard-child at the end of its
//! grace period, and nothing is left behind:
//!
//! ```no_run
//! use std::time::Duration;
//! use forkyard_testkit::{Baseline, fixture};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let base = Baseline::take().await;
//! let mut cmd = fixture("ignore-sigterm");
//! let mut child = forkyard_child::Child::spawn(&mut cmd).unwrap();
//! let exit = child.stop(Duration::from_millis(300)).await.unwrap();
//! assert_eq!(exit.signal(), Some(forkyard_child::Signal::KILL));
//! drop(child);
//! base.assert_clean().await; // no process, zombie or fd of ours left
//! # }
//! ```
//!
//! # Caveats
//!
//! - Linux only: everything here reads `/proc`.
//! - The fixture is a binary of this package. `cargo nextest run --workspace`
//!   builds it before any test starts (cargo builds a package's binaries for its
//!   integration tests); a run of one crate (`-p forkyard-ipc`) does not, so
//!   there the first test that asks builds it with cargo, and says so. That build
//!   waits for cargo's lock on the target directory, behind any other build.
//! - [`Baseline`] counts this *process's* fds and children: tests that run
//!   several cases at once in one process (libtest threads rather than nextest's
//!   process per test) can see each other's children.
//! - On machines whose pid 1 does not reap orphans (some VM init processes), a
//!   killed orphan stays a zombie child of pid 1. The probes here count zombies
//!   as dead and only report zombies that are children of the process asked about.
//!
//! # See also
//!
//! - [`forkyard-child`](forkyard_child): the owned process every fixture here is
//!   spawned as in the tests, and the watchdog that [`Baseline`] leaves out.
//! - A crate whose tests need workers speaking its own protocol ships them as a
//!   `[[bin]]` of its own (ipc's `forkyard-ipc-fixture`, pool's
//!   `forkyard-pool-fixture`, secure's `forkyard-secure-probe`), so that testkit
//!   depends on forkyard-child only (ARCHITECTURE.md).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

pub mod bench;
pub mod nats;

/// The name of the fixture binary.
pub const FIXTURE_BIN: &str = "forkyard-fixture";

/// A [`Command`] running the fixture binary with `subcommand` as its first argument.
///
/// # Panics
///
/// When the binary cannot be found or built: a test without its fixture cannot run.
pub fn fixture(subcommand: &str) -> Command {
    let mut cmd = Command::new(fixture_path());
    cmd.arg(subcommand);
    cmd
}

/// The path of the fixture binary, building it when missing or older than its sources.
///
/// `cargo nextest run --workspace` (and `cargo test --workspace`) builds it before
/// any test starts: it is a binary of this package, which has integration tests, and
/// cargo builds a package's binaries for its integration tests. A run of one crate
/// (`-p forkyard-ipc`) does not build other packages' binaries, so there the first
/// test to ask builds it with cargo, and says so on stderr.
///
/// That build is the one thing here that can take long: it waits for cargo's lock on
/// the target directory, so on a machine where other builds run it waits for them.
/// Before the workspace run built the fixture, the first tests of every CI run paid
/// for it (child's `exits::dropping_a_running_child_kills_and_reaps_it` and
/// `exits::exit_matrix` took about 58 s each on a busy machine instead of under one).
/// `tests/it/fixtures.rs` pins that a workspace run leaves nothing to build here.
///
/// # Panics
///
/// When the binary cannot be found or built.
pub fn fixture_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = target_dir().join(FIXTURE_BIN);
        if let Some(why) = needs_build(&path) {
            eprintln!(
                "forkyard-testkit: building {FIXTURE_BIN} ({why}); a workspace run \
                 (`cargo nextest run --workspace`) builds it before the tests start"
            );
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build.args([
                "build",
                "--quiet",
                "--package",
                "forkyard-testkit",
                "--bin",
                FIXTURE_BIN,
            ]);
            if profile_dir().file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("run cargo to build the fixture binary");
            assert!(status.success(), "building {FIXTURE_BIN} failed: {status}");
        }
        assert!(
            path.exists(),
            "fixture binary missing at {}",
            path.display()
        );
        path
    })
}

/// Why the fixture binary at `path` must be built first, if it must.
fn needs_build(path: &Path) -> Option<&'static str> {
    if !path.exists() {
        Some("it is missing")
    } else if older_than_sources(path) {
        Some("its sources changed since it was built")
    } else {
        None
    }
}

/// `target/<profile>` of the running test binary (tests live in `target/<profile>/deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir
}

fn target_dir() -> PathBuf {
    profile_dir()
}

fn older_than_sources(bin: &Path) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    newest_mtime(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).is_some_and(|src| src > built)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The fd numbers `pid` has open, sorted (empty when the process is gone).
pub fn open_fds(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// How many fds `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    open_fds(pid).len()
}

/// What an open fd of `pid` points at (`pipe:[123]`, `/dev/null`, `socket:[9]`, ...).
pub fn fd_target(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// One line of `/proc/PID/stat`, the fields tests care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
    /// State letter: R, S, D, Z, T, ...
    pub state: char,
}

impl ProcStat {
    /// Whether the process is a zombie (dead, not yet reaped) or dead.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Reads `/proc/PID/stat`; `None` when the process no longer exists.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')': split after the last ')'.
    let rest = &raw[raw.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        pgrp,
        session,
        state,
    })
}

/// Every process on the machine, as seen in `/proc`.
pub fn all_processes() -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter_map(stat)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| !s.is_zombie())
}

/// The live (non-zombie) descendants of `pid`: children, grandchildren, and so on.
///
/// A descendant whose parent died is re-parented (to pid 1 or a subreaper) and so
/// stops being a descendant: to follow processes that may escape, record their pids
/// while the tree is intact and check them with [`is_alive`].
pub fn live_descendants(pid: u32) -> Vec<u32> {
    let procs = all_processes();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            if !p.is_zombie() {
                found.push(p.pid);
            }
        }
    }
    found.sort_unstable();
    found
}

/// The zombie children of `pid`: exited, not yet reaped by `pid`.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    let mut z: Vec<u32> = all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid && p.is_zombie())
        .map(|p| p.pid)
        .collect();
    z.sort_unstable();
    z
}

/// The live members of process group `pgid`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut m: Vec<u32> = all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && !p.is_zombie())
        .map(|p| p.pid)
        .collect();
    m.sort_unstable();
    m
}

/// Resident set size of `pid` in bytes, from `/proc/PID/statm`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// A condition that did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was awaited, as given to [`wait_until`].
    pub what: String,
    /// How long we waited.
    pub waited: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.waited, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Polls `probe` until it returns `Some`, or fails once `timeout` has passed.
///
/// For conditions with no event to wait on (a process leaving `/proc`, an fd
/// count settling). The poll interval starts at 1 ms and doubles up to 50 ms, so
/// fast conditions are seen fast and slow ones do not burn a core. The deadline
/// is a failure bound, not a timing assertion: pick one generous enough for a
/// loaded CI machine.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(TimedOut {
                what: what.to_owned(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Waits until every pid in `pids` is dead (gone or a zombie).
pub fn wait_all_dead(pids: &[u32], timeout: Duration) -> Result<(), TimedOut> {
    wait_until(&format!("pids {pids:?} to die"), timeout, || {
        pids.iter().all(|&p| !is_alive(p)).then_some(())
    })
}

/// Parses `pid N` lines (as printed by the `grandchild` fixture) out of `output`.
pub fn parse_pids(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("pid ")?.trim().parse().ok())
        .collect()
}

/// A writable cgroup v2 directory for tests (`forkyard-tests` under the first
/// cgroup2 mount this process may write), created if needed; `None` when the
/// machine has none.
pub fn cgroup_parent() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        if fstype == "cgroup2" {
            let parent = Path::new(dir).join("forkyard-tests");
            if std::fs::create_dir(&parent).is_ok() || parent.is_dir() {
                return Some(parent);
            }
        }
    }
    None
}

/// How long [`wait_for`] and [`Baseline::assert_clean`] wait before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Ok` (1 ms doubling to 50 ms, yielding to the
/// tokio runtime between tries), and returns what it returned; panics with `what`
/// and the probe's last `Err` after [`DEADLINE`]. The async sibling of
/// [`wait_until`], for tests whose own runtime tasks must run for the condition to
/// come true.
pub async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    wait_for_async(what, || std::future::ready(probe())).await
}

/// [`wait_for`] with an async probe, for conditions read through an async API
/// (a pool's statistics, a supervisor's status):
///
/// ```no_run
/// # async fn stats() -> usize { 3 }
/// # async fn example() {
/// let ready = forkyard_testkit::wait_for_async("three ready workers", || async {
///     let n = stats().await;
///     if n == 3 { Ok(n) } else { Err(format!("{n} ready")) }
/// })
/// .await;
/// # }
/// ```
pub async fn wait_for_async<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(1);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(detail) if start.elapsed() > DEADLINE => {
                panic!(
                    "timed out after {:?} waiting for {what}: {detail}",
                    start.elapsed()
                )
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// What a test process had before it started spawning, to check afterwards
/// that it left nothing behind: every forkyard test ends with
/// `base.assert_clean().await`.
#[derive(Debug)]
pub struct Baseline {
    fds: usize,
}

impl Baseline {
    /// Takes the baseline after one warm-up spawn through forkyard-child, so
    /// the owner-death watchdog's fds, the runtime's fds and the reaper thread
    /// are already counted. Call it inside the test's tokio runtime.
    pub async fn take() -> Baseline {
        let mut warm = Command::new("/bin/true");
        let mut child = forkyard_child::Child::spawn(&mut warm).expect("warm-up spawn");
        child.wait().await.expect("warm-up wait");
        drop(child);
        Baseline {
            fds: fd_count(std::process::id()),
        }
    }

    /// Waits until this process is back to its baseline: no live descendant
    /// but the watchdog, no zombie child, no more fds than at the start.
    pub async fn assert_clean(&self) {
        let me = std::process::id();
        let watchdog = forkyard_child::watchdog_pid();
        wait_for("no live descendants but the watchdog", || {
            let left: Vec<u32> = live_descendants(me)
                .into_iter()
                .filter(|&p| Some(p) != watchdog)
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        })
        .await;
        wait_for("no zombie children", || {
            let zombies = zombie_children(me);
            if zombies.is_empty() {
                Ok(())
            } else {
                Err(format!("{zombies:?}"))
            }
        })
        .await;
        wait_for("the fd count back to baseline", || {
            let n = fd_count(me);
            if n <= self.fds {
                Ok(())
            } else {
                let fds: Vec<(i32, Option<String>)> = open_fds(me)
                    .into_iter()
                    .map(|fd| (fd, fd_target(me, fd)))
                    .collect();
                Err(format!("{n} fds open, baseline {}: {fds:?}", self.fds))
            }
        })
        .await;
    }
}
