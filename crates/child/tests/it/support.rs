//! Shared helpers: fixtures as `Command`s and the leak check every test ends with.

use std::process::Command;
use std::time::Duration;

use forkyard_child::{Child, Input, Output};
use forkyard_testkit as tk;

/// How long a condition may take on a loaded CI machine before a test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn fixture(sub: &str, args: &[&str]) -> Command {
    let mut cmd = tk::fixture(sub);
    cmd.args(args);
    cmd
}

/// Spawns a fixture with stdout streamed as lines, and waits for its `ready` line.
/// Returns the child and the lines before `ready`.
pub(crate) async fn spawn_ready(cmd: &mut Command) -> (Child, Vec<String>) {
    let mut child = Child::builder(cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .expect("spawn fixture");
    let lines = read_until_ready(&mut child).await;
    (child, lines)
}

pub(crate) async fn read_until_ready(child: &mut Child) -> Vec<String> {
    let mut before = Vec::new();
    let wait = async {
        while let Some(line) = child.next_line().await {
            let text = line.text().into_owned();
            if text.starts_with("ready") {
                return;
            }
            before.push(text);
        }
        panic!("fixture ended before printing `ready`; got {before:?}");
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("fixture did not become ready in time");
    before
}

/// The state of this test process before it started spawning: fds and children.
pub(crate) struct Baseline {
    fds: usize,
}

impl Baseline {
    /// Takes the baseline after one warm-up spawn, so the watchdog socket, the
    /// runtime's fds and the reaper thread are already counted.
    pub(crate) async fn take() -> Baseline {
        let mut warm = Command::new("/bin/true");
        Child::spawn(&mut warm)
            .expect("warm-up spawn")
            .wait()
            .await
            .expect("warm-up wait");
        Baseline {
            fds: tk::fd_count(std::process::id()),
        }
    }

    /// Waits until this process is back to its baseline: no more fds, no zombie
    /// children, and no live descendant but the watchdog.
    ///
    /// Async, so that tasks still winding down on a current-thread runtime
    /// (output readers reaching end-of-file) get to run while we wait.
    pub(crate) async fn assert_clean(&self) {
        let me = std::process::id();
        let watchdog = forkyard_child::watchdog_pid();
        wait_for(
            "fd count back to baseline",
            || tk::fd_count(me) <= self.fds,
            || {
                format!(
                    "{} fds open, baseline {}: {:?}",
                    tk::fd_count(me),
                    self.fds,
                    fd_list(me)
                )
            },
        )
        .await;
        wait_for(
            "no zombie children",
            || tk::zombie_children(me).is_empty(),
            || format!("{:?}", tk::zombie_children(me)),
        )
        .await;
        wait_for(
            "no live descendants",
            || live_descendants_but_watchdog(me, watchdog).is_empty(),
            || format!("{:?}", live_descendants_but_watchdog(me, watchdog)),
        )
        .await;
    }
}

/// Polls `done` (1 ms doubling to 50 ms, yielding to the runtime) until it holds
/// or [`DEADLINE`] passes; then panics with `what` and `detail()`.
pub(crate) async fn wait_for(
    what: &str,
    mut done: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = std::time::Instant::now();
    let mut interval = Duration::from_millis(1);
    while !done() {
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {:?} waiting for {what}: {}",
                start.elapsed(),
                detail()
            );
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

fn live_descendants_but_watchdog(me: u32, watchdog: Option<u32>) -> Vec<u32> {
    tk::live_descendants(me)
        .into_iter()
        .filter(|&p| Some(p) != watchdog)
        .collect()
}

fn fd_list(pid: u32) -> Vec<(i32, Option<String>)> {
    tk::open_fds(pid)
        .into_iter()
        .map(|fd| (fd, tk::fd_target(pid, fd)))
        .collect()
}

/// A writable cgroup v2 directory for tests, created under the first writable
/// cgroup2 mount. `None` when the machine has none we may write.
pub(crate) fn cgroup_parent() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        if fstype == "cgroup2" {
            let parent = std::path::Path::new(dir).join("forkyard-tests");
            if std::fs::create_dir(&parent).is_ok() || parent.is_dir() {
                return Some(parent);
            }
        }
    }
    None
}
