//! The `Child` handle: exit notification, stopping, killing, dropping.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroup::Cgroup;
use crate::exit::{Reason, Termination};
use crate::output::{self, Captured, ChildOutput, Line, Output, OutputKind, Stream};
use crate::reaper::{self, Orphan};
use crate::watchdog::Registration;
use crate::{Builder, Error, Exit, Sample, Signal, sys};

/// The write end of a child's stdin pipe.
pub type ChildStdin = pipe::Sender;
/// The read end of a child's stdout or stderr pipe.
pub type ChildPipe = pipe::Receiver;

/// A child's line stream, taken with [`Child::take_lines`].
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<Line>,
}

impl Lines {
    /// The next line, in the order read; `None` once every streamed output has
    /// reached end-of-file.
    pub async fn next_line(&mut self) -> Option<Line> {
        self.rx.recv().await
    }
}

/// State shared by the `Child` and its output reader tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pid: u32,
    pidfd: OwnedFd,
    state: Mutex<SharedState>,
    cgroup: Option<Cgroup>,
}

#[derive(Debug, Default)]
struct SharedState {
    termination: Option<Termination>,
    reaped: bool,
}

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that we are ending the child (the first reason wins; a later
    /// SIGKILL marks the termination escalated) and signals its whole group.
    pub(crate) fn terminate(&self, reason: Reason, signal: Signal) -> Result<(), Error> {
        let reaped = {
            let mut st = self.lock();
            match &mut st.termination {
                None => {
                    st.termination = Some(Termination {
                        reason,
                        signal,
                        escalated: false,
                    })
                }
                Some(t) if signal == Signal::KILL && t.signal != Signal::KILL => {
                    t.signal = Signal::KILL;
                    t.escalated = true;
                }
                Some(_) => {}
            }
            st.reaped
        };
        tracing::debug!(pid = self.pid, %signal, %reason, "signalling child group");
        self.signal_group(signal, reaped)
    }

    fn signal_group(&self, signal: Signal, reaped: bool) -> Result<(), Error> {
        if signal == Signal::KILL
            && let Some(cg) = &self.cgroup
        {
            // Best effort: the group signal below still reaches the group.
            let _ = cg.kill();
        }
        sys::signal_group(self.pidfd.as_fd(), self.pid, reaped, signal).map_err(|source| {
            Error::Signal {
                pid: self.pid,
                signal,
                source,
            }
        })
    }

    /// Whether any live process remains in the child's group (or cgroup).
    fn group_alive(&self) -> bool {
        if let Some(cg) = &self.cgroup {
            return cg.is_populated();
        }
        // The cheap kernel probe answers "nobody, not even a zombie" exactly; a yes
        // may be only zombies (orphans whose reaper is slow), so confirm in /proc.
        sys::group_has_members(self.pidfd.as_fd()) && crate::sample::group(self.pid).processes > 0
    }
}

/// What the builder hands to [`Child::adopt`].
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) stop_signal: Signal,
    pub(crate) stdout: Option<Output>,
    pub(crate) stderr: Option<Output>,
    pub(crate) line_buffer: usize,
    pub(crate) on_exit: ExitHooks,
}

/// A spawned process that we own: its process group, its exit, its resources.
///
/// See the [crate docs](crate) for the lesson; in short: spawn with
/// [`Child::spawn`] or [`Child::builder`], then [`wait`](Child::wait),
/// [`stop`](Child::stop) or [`kill`](Child::kill), and read the [`Exit`].
///
/// # Caveats
///
/// - Dropping a `Child` whose process still runs SIGKILLs its whole process
///   group (and cgroup), and reaps it in the background. Dropping one that has
///   exited SIGKILLs whatever is left in its group. Nothing a `Child` started
///   outlives it; call [`stop`](Child::stop) first for a graceful end.
/// - The [`timeout`](Builder::timeout) is enforced only while someone awaits
///   [`wait`](Child::wait) or [`wait_with_output`](Child::wait_with_output).
#[derive(Debug)]
pub struct Child {
    shared: Arc<Shared>,
    exit_fd: AsyncFd<Arc<Shared>>,
    exit: Option<Exit>,
    registration: Option<Registration>,
    started: Instant,
    deadline: Option<Instant>,
    grace: Duration,
    stop_signal: Signal,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildPipe>,
    stderr: Option<ChildPipe>,
    lines: Option<mpsc::Receiver<Line>>,
    captures: [Option<JoinHandle<io::Result<Captured>>>; 2],
    on_exit: ExitHooks,
}

/// The [`Launch::on_exit`](crate::Launch::on_exit) hooks, run once at reaping.
///
/// Behind a mutex only so that `Child` stays `Sync` (the hooks are `Send`, not
/// `Sync`); it is only ever reached through `&mut self`, so never contended.
pub(crate) struct ExitHooks(pub(crate) Mutex<Vec<crate::spawn::ExitHook>>);

impl fmt::Debug for ExitHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |hooks| hooks.len());
        write!(f, "{n} exit hooks")
    }
}

impl Child {
    /// Spawns `cmd` with the default options: its own process group, guarded by
    /// the owner-death watchdog, stdio as configured on the `Command`.
    ///
    /// Must be called from within a tokio runtime.
    pub fn spawn(cmd: &mut std::process::Command) -> Result<Child, Error> {
        Builder::with(cmd).spawn()
    }

    /// Options for spawning `cmd`: output capture, passed fds, timeout, ...
    pub fn builder(cmd: &mut std::process::Command) -> Builder<'_> {
        Builder::with(cmd)
    }

    pub(crate) fn adopt(
        mut std_child: std::process::Child,
        registration: Option<Registration>,
        cgroup: Option<Cgroup>,
        config: Config,
    ) -> io::Result<Child> {
        let pid = std_child.id();
        let started = Instant::now();
        let stdin = std_child.stdin.take();
        let stdout = std_child.stdout.take();
        let stderr = std_child.stderr.take();
        // std's Child neither waits nor kills on drop; from here on we own the pid.
        drop(std_child);
        let pidfd = match rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).expect("spawned pid is positive"),
            rustix::process::PidfdFlags::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd we cannot watch it safely; do not leave it running.
                let _ = rustix::process::kill_process_group(
                    rustix::process::Pid::from_raw(pid as i32).expect("positive"),
                    rustix::process::Signal::KILL,
                );
                reaper::reap_later(Orphan {
                    pid: Some(pid),
                    cgroup,
                });
                return Err(e.into());
            }
        };
        let shared = Arc::new(Shared {
            pid,
            pidfd,
            state: Mutex::new(SharedState::default()),
            cgroup,
        });
        // SAFETY: `Shared` owns the pidfd and never closes or replaces it, and the
        // `Arc` keeps `Shared` alive for as long as the `AsyncFd`, so the fd stays
        // open and the same for the AsyncFd's whole life.
        let registered =
            unsafe { AsyncFd::register_with_interest(shared.clone(), Interest::READABLE) };
        let exit_fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                let e = e.into_parts().1;
                let _ = shared.signal_group(Signal::KILL, false);
                reaper::reap_later(Orphan {
                    pid: Some(pid),
                    cgroup: None,
                });
                return Err(e);
            }
        };
        let mut child = Child {
            shared,
            exit_fd,
            exit: None,
            registration,
            started,
            deadline: config.timeout.map(|t| started + t),
            grace: config.grace,
            stop_signal: config.stop_signal,
            stdin: None,
            stdout: None,
            stderr: None,
            lines: None,
            captures: [None, None],
            on_exit: config.on_exit,
        };
        child.stdin = stdin
            .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
            .transpose()?;
        let (line_tx, line_rx) = mpsc::channel(config.line_buffer);
        let mut wants_lines = false;
        for (idx, stream, pipe, cfg) in [
            (0, Stream::Stdout, stdout.map(OwnedFd::from), config.stdout),
            (1, Stream::Stderr, stderr.map(OwnedFd::from), config.stderr),
        ] {
            let Some(fd) = pipe else { continue };
            let receiver = pipe::Receiver::from_owned_fd(fd)?;
            match cfg {
                Some(cfg) if cfg.kind == OutputKind::Collected => {
                    wants_lines |= cfg.lines;
                    let tx = cfg.lines.then(|| line_tx.clone());
                    child.captures[idx] = Some(tokio::spawn(output::drain(
                        receiver,
                        stream,
                        cfg,
                        tx,
                        child.shared.clone(),
                    )));
                }
                // Piped by us, or piped on the Command by the caller: theirs to take.
                _ if stream == Stream::Stdout => child.stdout = Some(receiver),
                _ => child.stderr = Some(receiver),
            }
        }
        if wants_lines {
            child.lines = Some(line_rx);
        }
        tracing::debug!(pid, "spawned child");
        Ok(child)
    }

    /// The child's pid, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.shared.pid
    }

    /// The cgroup directory the child runs in, when spawned with [`Builder::cgroup`].
    pub fn cgroup_path(&self) -> Option<&Path> {
        self.shared.cgroup.as_ref().map(Cgroup::path)
    }

    /// The exit, once the child has been reaped.
    pub fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    /// Waits for the child to exit and reaps it.
    ///
    /// With a [`timeout`](Builder::timeout), a child still running at the
    /// deadline is stopped (stop signal, grace, SIGKILL) and the returned
    /// [`Exit`] says so. Cancel-safe: dropping the future leaves the child
    /// running and a later call picks up where this one left off. After the
    /// first success, returns the same `Exit` again.
    pub async fn wait(&mut self) -> Result<Exit, Error> {
        if let Some(exit) = &self.exit {
            return Ok(exit.clone());
        }
        if let Some(deadline) = self.deadline {
            let reaped = tokio::select! {
                r = self.reap() => Some(r?),
                () = tokio::time::sleep_until(deadline) => None,
            };
            return match reaped {
                Some(exit) => Ok(self.store(exit)),
                None => {
                    tracing::info!(pid = self.id(), "child timed out");
                    self.stop_because(Reason::Timeout, self.grace).await
                }
            };
        }
        let exit = self.reap().await?;
        Ok(self.store(exit))
    }

    /// Reaps the child if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<Exit>, Error> {
        if let Some(exit) = &self.exit {
            return Ok(Some(exit.clone()));
        }
        Ok(self.try_reap()?.map(|exit| self.store(exit)))
    }

    fn store(&mut self, exit: Exit) -> Exit {
        tracing::debug!(pid = self.id(), %exit, "child reaped");
        self.exit = Some(exit.clone());
        let hooks = std::mem::take(self.on_exit.0.get_mut().unwrap_or_else(|p| p.into_inner()));
        for hook in hooks {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&exit)));
            if let Err(panic) = ran {
                tracing::warn!(
                    pid = self.id(),
                    panic = %crate::panic_message(panic.as_ref()),
                    "an on_exit hook panicked"
                );
            }
        }
        exit
    }

    fn try_reap(&self) -> Result<Option<Exit>, Error> {
        let pid = self.shared.pid;
        let Some((status, rusage)) =
            sys::wait4(pid, true).map_err(|source| Error::Wait { pid, source })?
        else {
            return Ok(None);
        };
        let termination = {
            let mut st = self.shared.lock();
            st.reaped = true;
            st.termination
        };
        Ok(Some(Exit::from_wait_status(
            pid,
            status,
            rusage,
            termination,
            self.started.elapsed(),
        )))
    }

    /// Waits on the pidfd, then reaps. Takes `&self` so it can race a timer.
    async fn reap(&self) -> Result<Exit, Error> {
        let pid = self.shared.pid;
        loop {
            let mut ready = self
                .exit_fd
                .readable()
                .await
                .map_err(|source| Error::Wait { pid, source })?;
            if let Some(exit) = self.try_reap()? {
                return Ok(exit);
            }
            // Readable but not yet reapable cannot happen for a pidfd; be robust anyway.
            ready.clear_ready();
        }
    }

    /// Stops the whole group: the stop signal (SIGTERM unless configured),
    /// then SIGKILL if the child is still running after `grace`.
    ///
    /// Once the child itself has exited, the rest of its group gets what is left
    /// of the grace period to follow, then SIGKILL. The returned [`Exit`]'s
    /// [`ended_by`](Exit::ended_by) says whether SIGKILL was needed.
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit, Error> {
        self.stop_because(Reason::Stop, grace).await
    }

    /// [`stop`](Child::stop), recording `reason` as why we ended the child.
    pub async fn stop_because(&mut self, reason: Reason, grace: Duration) -> Result<Exit, Error> {
        if let Some(exit) = &self.exit {
            // Already reaped; anything left in the group goes now.
            let exit = exit.clone();
            self.shared.signal_group(Signal::KILL, true)?;
            return Ok(exit);
        }
        let signal = self.stop_signal;
        self.shared.terminate(reason, signal)?;
        if signal == Signal::KILL {
            let exit = self.reap().await?;
            return Ok(self.store(exit));
        }
        let deadline = Instant::now() + grace;
        let reaped = tokio::select! {
            r = self.reap() => Some(r?),
            () = tokio::time::sleep_until(deadline) => None,
        };
        match reaped {
            Some(exit) => {
                let exit = self.store(exit);
                if !self.wait_group_empty(deadline).await {
                    tracing::debug!(pid = self.id(), "group outlived the grace period; SIGKILL");
                    self.shared.signal_group(Signal::KILL, true)?;
                }
                Ok(exit)
            }
            None => {
                tracing::debug!(pid = self.id(), "grace period over; SIGKILL");
                self.shared.terminate(reason, Signal::KILL)?;
                let exit = self.reap().await?;
                Ok(self.store(exit))
            }
        }
    }

    /// Polls (1 ms doubling to 50 ms) until the group is empty or `deadline`.
    /// A group has no exit event of its own, so polling is the only way.
    async fn wait_group_empty(&self, deadline: Instant) -> bool {
        let mut interval = Duration::from_millis(1);
        loop {
            if !self.shared.group_alive() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the whole group at once and waits for the child.
    pub async fn kill(&mut self) -> Result<Exit, Error> {
        if let Some(exit) = &self.exit {
            let exit = exit.clone();
            self.shared.signal_group(Signal::KILL, true)?;
            return Ok(exit);
        }
        self.shared.terminate(Reason::Kill, Signal::KILL)?;
        let exit = self.reap().await?;
        Ok(self.store(exit))
    }

    /// SIGKILLs the whole group without waiting, recording `reason`.
    pub fn start_kill(&mut self, reason: Reason) -> Result<(), Error> {
        if self.exit.is_some() {
            return self.shared.signal_group(Signal::KILL, true);
        }
        self.shared.terminate(reason, Signal::KILL)
    }

    /// Sends `signal` to the child's whole process group (without recording a
    /// termination: for SIGHUP-style requests, not for ending the child).
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let reaped = self.exit.is_some();
        self.shared.signal_group(signal, reaped)
    }

    /// Sends `signal` to the child process only, not to the rest of its group.
    pub fn signal_leader(&self, signal: Signal) -> Result<(), Error> {
        sys::signal_process(self.shared.pidfd.as_fd(), signal).map_err(|source| Error::Signal {
            pid: self.shared.pid,
            signal,
            source,
        })
    }

    /// Memory and CPU of the running child and of its whole group, from `/proc`.
    pub fn sample(&self) -> Result<Sample, Error> {
        let pid = self.shared.pid;
        if self.exit.is_some() {
            return Err(Error::NotRunning { pid });
        }
        crate::sample::sample(pid, pid).map_err(|source| match source {
            procfs::ProcError::NotFound(_) => Error::NotRunning { pid },
            source => Error::Sample { pid, source },
        })
    }

    /// The child's stdin pipe, when spawned with [`Input::Piped`](crate::Input::Piped)
    /// (or a piped stdin on the `Command`). Dropping it closes the child's stdin.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The child's raw stdout pipe, when spawned with [`Output::piped`].
    pub fn take_stdout(&mut self) -> Option<ChildPipe> {
        self.stdout.take()
    }

    /// The child's raw stderr pipe, when spawned with [`Output::piped`].
    pub fn take_stderr(&mut self) -> Option<ChildPipe> {
        self.stderr.take()
    }

    /// The next line from the streams spawned with line streaming
    /// ([`Output::lines`] or [`Output::with_lines`]), in the order read; `None`
    /// once both streams reached end-of-file (or none streams lines).
    pub async fn next_line(&mut self) -> Option<Line> {
        self.lines.as_mut()?.recv().await
    }

    /// Takes the line stream out of the `Child`, so another task can read it
    /// while this one waits for the exit (`wait` and
    /// [`next_line`](Child::next_line) both need `&mut self`). `None` if the
    /// child streams no lines or the stream was taken already.
    pub fn take_lines(&mut self) -> Option<Lines> {
        self.lines.take().map(|rx| Lines { rx })
    }

    /// Waits for the child (honouring the timeout) and for the end of its
    /// captured output, and returns both.
    ///
    /// Output ends when every process holding the pipes has closed them, which
    /// includes descendants that inherited them: if the child exits but leaves a
    /// descendant holding its stdout, this waits for that descendant (or until
    /// the timeout stops the group). Lines not yet read with
    /// [`next_line`](Child::next_line) are discarded.
    pub async fn wait_with_output(mut self) -> Result<ChildOutput, Error> {
        // Nobody will read lines any more: let the readers run free.
        self.lines = None;
        let pid = self.id();
        let mut captured = [Captured::default(), Captured::default()];
        let readers = [self.captures[0].take(), self.captures[1].take()];
        let collect = async {
            for (slot, reader) in captured.iter_mut().zip(readers) {
                if let Some(reader) = reader {
                    *slot = reader
                        .await
                        .map_err(|join| io::Error::other(join.to_string()))
                        .and_then(|r| r)
                        .map_err(|source| Error::Output { pid, source })?;
                }
            }
            Ok::<_, Error>(())
        };
        let exit = match self.deadline {
            None => {
                let (exit, collected) = tokio::join!(self.wait(), collect);
                collected?;
                exit?
            }
            Some(deadline) if self.exit.is_some() => {
                // Already reaped by an earlier `wait`: only the output is left,
                // and the deadline still bounds it (a descendant may hold a pipe).
                tokio::pin!(collect);
                let finished = tokio::select! {
                    r = &mut collect => Some(r),
                    () = tokio::time::sleep_until(deadline) => None,
                };
                match finished {
                    Some(collected) => collected?,
                    None => {
                        self.shared.signal_group(Signal::KILL, true)?;
                        collect.await?;
                    }
                }
                self.exit.clone().expect("checked")
            }
            Some(deadline) => {
                // Racing the deadline against both exit and end-of-output: a
                // descendant holding the pipe open must not outlive the timeout.
                tokio::pin!(collect);
                let finished = tokio::select! {
                    r = async { tokio::join!(self.reap(), &mut collect) } => Some(r),
                    () = tokio::time::sleep_until(deadline) => None,
                };
                match finished {
                    Some((exit, collected)) => {
                        collected?;
                        self.store(exit?)
                    }
                    None => {
                        let exit = self.wait().await?;
                        // The group is dead now, so the pipes reach end-of-file.
                        self.shared.signal_group(Signal::KILL, true)?;
                        collect.await?;
                        exit
                    }
                }
            }
        };
        let [stdout, stderr] = captured;
        Ok(ChildOutput {
            exit,
            stdout,
            stderr,
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = self.shared.pid;
        if self.exit.is_none() {
            let _ = self.shared.terminate(Reason::Drop, Signal::KILL);
        } else {
            // Reaped already: stragglers in its group go too.
            let _ = self.shared.signal_group(Signal::KILL, true);
        }
        // Withdraw from the watchdog: the group has been sent SIGKILL already.
        self.registration.take();
        let reaped = self.exit.is_some() || matches!(self.try_reap(), Ok(Some(_)));
        if !reaped {
            tracing::debug!(pid, "dropped running child; reaping in the background");
            reaper::reap_later(Orphan {
                pid: Some(pid),
                cgroup: None,
            });
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Last reference (the child and its output readers are gone): the cgroup
        // directory can be removed once it is empty, which may take a moment.
        if let Some(cgroup) = self.cgroup.take() {
            reaper::reap_later(Orphan {
                pid: None,
                cgroup: Some(cgroup),
            });
        }
    }
}
