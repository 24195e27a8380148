//! Own a spawned process: its group, its exit, its resources.
//!
//! # The problem
//!
//! `std::process::Command::spawn` starts a program and hands back a pid. Most
//! of what can go wrong afterwards is left to the caller:
//!
//! - **Descendants.** Killing the child does not kill what it started: a shell
//!   script's `sleep`, a compiler's sub-processes, a server's workers.
//! - **The owner's death.** If the owning process is killed with SIGKILL, its
//!   children live on, re-parented, with nobody to stop them.
//! - **Races on pids.** A pid is a number the kernel reuses. Signalling a pid
//!   after its process was reaped can hit a stranger; a global SIGCHLD reaper
//!   can steal another library's exit statuses.
//! - **Output.** Reading stdout to the end before stderr deadlocks with a child
//!   that fills stderr first; collecting everything lets a child decide how much
//!   memory we use.
//! - **Leaked fds.** Every fd the parent has open without close-on-exec (C
//!   libraries are not careful) leaks into the child and keeps pipes and sockets
//!   open.
//! - **Knowing what happened.** "Killed by signal 9": by whom? Because it ran
//!   too long, or because the OOM killer struck? How much memory did it peak at?
//!
//! # The approach
//!
//! A [`Child`] owns one process and everything in its process group:
//!
//! 1. **Own process group.** The child is spawned as the leader of a new
//!    process group (pgid = its pid), and every signal we send goes to the whole
//!    group, so grandchildren that stay in the group stop with it.
//! 2. **pidfd, not pid.** Right after the spawn we take a pidfd
//!    (`pidfd_open(2)`) while the child is still ours and unreaped. Exit
//!    notification is the pidfd becoming readable in tokio's reactor; then
//!    `wait4(2)` on that one pid reaps it and returns its rusage. No SIGCHLD
//!    handler, no reaping of other people's children. Signals go through the
//!    pidfd (`pidfd_send_signal(2)`, with `PIDFD_SIGNAL_PROCESS_GROUP` for the
//!    group), so a recycled pid is never hit.
//! 3. **Owner-death watchdog.** The first spawn forks one tiny watchdog process
//!    per owner; each child registers its pidfd with it from its `pre_exec`
//!    closure. When the owner dies, however it dies, the watchdog sees
//!    end-of-file on their socket and SIGKILLs every registered group. (Why not
//!    `PR_SET_PDEATHSIG`: it reaches only the direct child, and fires when the
//!    *thread* that spawned it exits. See `watchdog.rs` for the whole design.)
//! 4. **Closed fds.** In `pre_exec`, `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`
//!    marks every inherited fd close-on-exec; only fds passed explicitly with
//!    [`Builder::pass_fd`] survive into the child.
//! 5. **Stopping is a protocol.** [`Child::stop`] sends SIGTERM (or your stop
//!    signal) to the group, gives it a grace period, then SIGKILLs the group, and
//!    the [`Exit`] records that *we* ended it, why ([`Reason`]) and whether
//!    SIGKILL was needed ([`Termination`]).
//! 6. **Output without deadlock or unbounded memory.** Each captured stream is
//!    drained by its own task; captures keep the first N bytes and report the
//!    rest as truncated; lines stream through a bounded channel ([`Output`]).
//!
//! # Example
//!
//! ```
//! use std::process::Command;
//! use std::time::Duration;
//! use forkyard_child::{Child, Output, Reason};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), forkyard_child::Error> {
//! // Spawn, capture, and read the exit with its resource usage.
//! let mut cmd = Command::new("sh");
//! cmd.args(["-c", "echo hello; exit 3"]);
//! let child = Child::builder(&mut cmd).stdout(Output::capture(1 << 20)).spawn()?;
//! let out = child.wait_with_output().await?;
//! assert_eq!(out.exit.code(), Some(3));
//! assert_eq!(out.stdout.text(), "hello\n");
//! println!("{} max_rss={} bytes", out.exit, out.exit.rusage().max_rss_bytes);
//!
//! // A shell and its `sleep` form one group: a timeout stops both.
//! let mut cmd = Command::new("sh");
//! cmd.args(["-c", "sleep 60; echo never"]);
//! let mut child = Child::builder(&mut cmd)
//!     .timeout(Duration::from_millis(100))
//!     .grace(Duration::from_secs(2))
//!     .spawn()?;
//! let exit = child.wait().await?;
//! assert_eq!(exit.ended_by().map(|t| t.reason), Some(Reason::Timeout));
//! # Ok(()) }
//! ```
//!
//! # Containment
//!
//! What each mechanism reaches, when the child or the owner is ended:
//!
//! | descendant | process group (default) | [`Builder::cgroup`] |
//! |---|---|---|
//! | the child | yes | yes |
//! | children and grandchildren that stay in the group | yes | yes |
//! | a descendant that calls `setsid` or `setpgid` | **no** | yes |
//!
//! A process group is a convention any descendant can leave. A cgroup v2 is
//! inherited by every descendant and cannot be left without write access to
//! the cgroup tree; `cgroup.kill` kills all of it at once. It needs a cgroup v2
//! directory the owner may write (root, or a delegated subtree).
//!
//! # How it compares
//!
//! With `std::process` and `tokio::process` (and wrappers such as process-wrap)
//! you get a pid and an exit status; the rest is left to you:
//!
//! | | std / tokio | forkyard-child |
//! |---|---|---|
//! | process group | opt-in (`process_group(0)`) | always; every signal goes to the group |
//! | owner killed with SIGKILL | children live on | a watchdog kills every registered group |
//! | signalling after exit | by pid (recycling hazard) | by pidfd, the group too |
//! | exit notification | blocking `waitpid` or a SIGCHLD reaper | pidfd in tokio's reactor, then `wait4` on that pid only |
//! | resource usage | none | user/system CPU, max RSS, faults, context switches |
//! | who ended it | unknown | [`Exit::ended_by`]: reason, signal, escalated |
//! | graceful stop | by hand | [`Child::stop`]: TERM the group, grace, KILL the group |
//! | output | unbounded `wait_with_output` | capped captures, bounded line streams, no deadlock |
//! | inherited fds | whatever lacks `CLOEXEC` leaks | `close_range` in the child; only passed fds survive |
//! | dropping the handle | the child keeps running | the group is killed and reaped |
//! | `setsid` escapees | out of reach | caught with [`Builder::cgroup`] (cgroup v2) |
//!
//! The price is a `fork` instead of `posix_spawn` (any `pre_exec` hook forces it):
//! a spawn costs about 1.6x std's on a small parent; the README has the figures
//! and what would close the gap.
//!
//! # Caveats
//!
//! - **Dropping a [`Child`] kills its group** (SIGKILL), and reaps it in the
//!   background. This is the opposite of `std` and `tokio::process`, where a
//!   dropped child keeps running: here nothing outlives its owner. Call
//!   [`Child::stop`] first for a graceful end.
//! - [`Child::spawn`] must be called inside a tokio runtime.
//! - The child gets a `pre_exec` closure, which makes std spawn with `fork`
//!   rather than `posix_spawn`; see the README for what that costs.
//! - `pre_exec` closures you add to the `Command` run *before* forkyard's own
//!   (std runs them in the order added; forkyard adds its own at spawn). A hook
//!   that installs a seccomp filter must leave `send`/`sendmsg` (and, on
//!   kernels before 6.5, `pidfd_open`), `fcntl`, `dup2`, `close_range`, `setsid` and `write` allowed; a hook that
//!   lowers `RLIMIT_NOFILE` below the fds in use makes the spawn fail with
//!   EMFILE (forkyard-secure lowers it from the parent with `prlimit` right
//!   after `exec` instead).
//! - A `SIGCHLD` disposition of `SIG_IGN` in the owner makes the kernel reap
//!   children itself: waits then fail with [`Error::Wait`].
//! - The watchdog is one extra process per owner, named `fy-watchdog`. If
//!   somebody kills it, the next spawn starts a new one; children registered
//!   with the dead one are unguarded until they end.
//! - Group signals after the child has been reaped need Linux 6.9
//!   (`PIDFD_SIGNAL_PROCESS_GROUP`); on older kernels stragglers left in the
//!   group after the child's exit are out of reach.
//!
//! # See also
//!
//! `forkyard-ipc` adds a typed message channel to a `Child`; `forkyard-pool`
//! and `forkyard-supervise` manage many of them; `forkyard-secure` builds
//! hardened `Command`s to hand to [`Child::builder`].

#![deny(missing_docs)]

mod cgroup;
mod deadline;
mod error;
mod exit;
mod output;
mod process;
mod reaper;
mod sample;
mod signal;
mod spawn;
mod sys;
mod watchdog;

pub use deadline::sleep_until;
pub use error::Error;
pub use exit::{Exit, Reason, Rusage, Termination};
pub use output::{Captured, ChildOutput, DEFAULT_MAX_LINE, Input, Line, Output, Stream};
pub use process::{Child, ChildPipe, ChildStdin, Lines};
pub use sample::{GroupSample, Sample};
pub use signal::Signal;
pub use spawn::{Builder, DEFAULT_GRACE, Launch, panic_message};
pub use watchdog::watchdog_pid;
