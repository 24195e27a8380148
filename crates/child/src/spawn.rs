//! Spawning: the builder, the `pre_exec` closure, and typed spawn errors.

use std::borrow::BorrowMut;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use crate::cgroup::Cgroup;
use crate::output::{Input, Output, OutputKind};
use crate::process::Child;
use crate::{Error, Exit, Signal, watchdog};

/// The grace period used by timeouts when none is set: 5 seconds.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How to start a process, owned: the `Command` plus every option forkyard
/// adds (stdio, passed fds, timeout, grace, stop signal, watchdog, cgroup,
/// session, line buffer) and hooks run just after the spawn and after the exit.
///
/// A `Launch` can be stored, sent to another task and handed to another crate,
/// which is what lets the patterns compose: a pool starts its workers from a
/// `Fn() -> Launch`, a supervisor restarts a service from one, and
/// forkyard-secure turns a validated request into one whose hooks keep its
/// layer report and audit record. [`Builder`] is the same type over a borrowed
/// `Command`, for one-off spawns; every option is defined once, here.
///
/// ```no_run
/// # async fn run() -> Result<(), forkyard_child::Error> {
/// use std::process::Command;
/// use std::time::Duration;
/// use forkyard_child::{Launch, Output};
///
/// let mut cmd = Command::new("make");
/// cmd.arg("-j4");
/// let launch = Launch::new(cmd)
///     .stdout(Output::capture(1 << 20))
///     .stderr(Output::capture(1 << 20).with_lines())
///     .timeout(Duration::from_secs(600))
///     .grace(Duration::from_secs(10))
///     .on_spawn(|child| eprintln!("make runs as pid {}", child.id()))
///     .on_exit(|exit| eprintln!("make ended: {exit}"));
/// let mut child = launch.spawn()?;
/// while let Some(line) = child.next_line().await {
///     eprintln!("make: {}", line.text());
/// }
/// let out = child.wait_with_output().await?;
/// println!("{} ({} bytes of stdout)", out.exit, out.stdout.total);
/// # Ok(()) }
/// ```
#[must_use = "a launch does nothing until .spawn() is called"]
pub struct Launch<C = Command> {
    cmd: C,
    options: Options,
    on_spawn: Vec<SpawnHook>,
    on_exit: Vec<ExitHook>,
}

/// [`Launch`] over a borrowed `Command`; made by [`Child::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), forkyard_child::Error> {
/// use std::process::Command;
/// use std::time::Duration;
/// use forkyard_child::{Child, Output};
///
/// let mut child = Child::builder(Command::new("make").arg("-j4"))
///     .stdout(Output::capture(1 << 20))
///     .timeout(Duration::from_secs(600))
///     .spawn()?;
/// let out = child.wait_with_output().await?;
/// println!("{} ({} bytes of stdout)", out.exit, out.stdout.total);
/// # Ok(()) }
/// ```
pub type Builder<'a> = Launch<&'a mut Command>;

/// Called once with a freshly spawned child.
pub(crate) type SpawnHook = Box<dyn FnOnce(&mut Child) + Send>;
/// Called once with the child's exit, when it is reaped.
pub(crate) type ExitHook = Box<dyn FnOnce(&Exit) + Send>;

/// Every option of a [`Launch`] but the command and the hooks.
#[derive(Debug)]
struct Options {
    stdin: Option<Input>,
    stdout: Option<Output>,
    stderr: Option<Output>,
    fds: Vec<(OwnedFd, RawFd)>,
    timeout: Option<Duration>,
    grace: Duration,
    stop_signal: Signal,
    watchdog: bool,
    cgroup: Option<PathBuf>,
    line_buffer: usize,
    new_session: bool,
}

impl<C: std::fmt::Debug> std::fmt::Debug for Launch<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("cmd", &self.cmd)
            .field("options", &self.options)
            .field("on_spawn", &self.on_spawn.len())
            .field("on_exit", &self.on_exit.len())
            .finish()
    }
}

impl Launch {
    /// Run `cmd` with the default options: its own process group, guarded by
    /// the owner-death watchdog, stdio as configured on the `Command`.
    pub fn new(cmd: Command) -> Launch {
        Launch::with(cmd)
    }

    /// The command, to read what will run.
    pub fn command(&self) -> &Command {
        &self.cmd
    }

    /// The command, to change its arguments, environment or working directory.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }
}

impl From<Command> for Launch {
    fn from(cmd: Command) -> Launch {
        Launch::new(cmd)
    }
}

impl<C: BorrowMut<Command>> Launch<C> {
    pub(crate) fn with(cmd: C) -> Launch<C> {
        Launch {
            cmd,
            options: Options {
                stdin: None,
                stdout: None,
                stderr: None,
                fds: Vec::new(),
                timeout: None,
                grace: DEFAULT_GRACE,
                stop_signal: Signal::TERM,
                watchdog: true,
                cgroup: None,
                line_buffer: 1024,
                new_session: false,
            },
            on_spawn: Vec::new(),
            on_exit: Vec::new(),
        }
    }

    /// What the child's stdin is connected to (default: as configured on the
    /// `Command`, which inherits unless told otherwise).
    pub fn stdin(mut self, input: Input) -> Self {
        self.options.stdin = Some(input);
        self
    }

    /// What happens to the child's stdout (default: as configured on the `Command`).
    pub fn stdout(mut self, output: Output) -> Self {
        self.options.stdout = Some(output);
        self
    }

    /// What happens to the child's stderr (default: as configured on the `Command`).
    pub fn stderr(mut self, output: Output) -> Self {
        self.options.stderr = Some(output);
        self
    }

    /// Sets an environment variable for the child (as `Command::env` does).
    pub fn env(
        mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> Self {
        self.cmd.borrow_mut().env(key, value);
        self
    }

    /// Hands `fd` to the child as fd number `target` (3 or more; 0 to 2 are stdio).
    ///
    /// Every other fd of the parent is closed in the child, whatever its
    /// close-on-exec flag says; these are the only exceptions.
    pub fn pass_fd(mut self, fd: OwnedFd, target: RawFd) -> Self {
        self.options.fds.push((fd, target));
        self
    }

    /// Stop the child (reason [`Reason::Timeout`](crate::Reason::Timeout), with the
    /// stop signal and the [`grace`](Self::grace) period) once it has run this long.
    /// The deadline is enforced while somebody awaits [`Child::wait`] or
    /// [`Child::wait_with_output`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// How long a timed-out child gets between the stop signal and SIGKILL
    /// (default [`DEFAULT_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.options.grace = grace;
        self
    }

    /// The polite signal sent by [`Child::stop`] and timeouts (default SIGTERM).
    pub fn stop_signal(mut self, signal: Signal) -> Self {
        self.options.stop_signal = signal;
        self
    }

    /// Whether the owner-death watchdog guards this child (default `true`).
    ///
    /// Turning it off saves a `send` per spawn, and leaves the child running
    /// if the owner is killed. Meant for measuring the guard's cost, and for
    /// owners that are themselves contained (in a pid namespace or a cgroup that
    /// is killed as a whole).
    pub fn kill_on_owner_death(mut self, enabled: bool) -> Self {
        self.options.watchdog = enabled;
        self
    }

    /// Runs the child in a new cgroup v2 under `parent` (which the owner must be
    /// able to write), so that every descendant, even one that calls `setsid`,
    /// is stopped and killed with it. See the crate docs, "Containment".
    pub fn cgroup(mut self, parent: impl Into<PathBuf>) -> Self {
        self.options.cgroup = Some(parent.into());
        self
    }

    /// Starts the child in a new session (`setsid`) rather than only a new
    /// process group: it then has no controlling terminal, and its session id,
    /// process group id and pid are all the same. Group signals work as before.
    pub fn new_session(mut self, enabled: bool) -> Self {
        self.options.new_session = enabled;
        self
    }

    /// How many lines may wait in the line channel before the readers pause
    /// (default 1024).
    pub fn line_buffer(mut self, lines: usize) -> Self {
        self.options.line_buffer = lines.max(1);
        self
    }

    /// Runs `hook` with the child right after it is spawned, before
    /// [`spawn`](Self::spawn) returns it: take its stdin or stdout here, or
    /// tell another component which process it became. Hooks run in the order
    /// added. A hook that panics ends the child (it is dropped, so killed) and
    /// the spawn fails with [`Error::Hook`].
    pub fn on_spawn(mut self, hook: impl FnOnce(&mut Child) + Send + 'static) -> Self {
        self.on_spawn.push(Box::new(hook));
        self
    }

    /// Runs `hook` once with the child's [`Exit`], when it is reaped (by
    /// [`Child::wait`], [`Child::try_wait`] or a stop). Not run for a child
    /// that is dropped unreaped. A panic in it is caught and logged.
    pub fn on_exit(mut self, hook: impl FnOnce(&Exit) + Send + 'static) -> Self {
        self.on_exit.push(Box::new(hook));
        self
    }

    /// Spawns the child.
    ///
    /// Must be called from within a tokio runtime (exit notification uses the
    /// runtime's reactor).
    pub fn spawn(self) -> Result<Child, Error> {
        let Launch {
            mut cmd,
            options:
                Options {
                    stdin,
                    stdout,
                    stderr,
                    fds,
                    timeout,
                    grace,
                    stop_signal,
                    watchdog,
                    cgroup,
                    line_buffer,
                    new_session,
                },
            on_spawn,
            on_exit,
        } = self;
        let cmd: &mut Command = cmd.borrow_mut();
        let program = cmd.get_program().to_string_lossy().into_owned();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { program });
        }
        if !new_session {
            // With a new session, `setsid` in our pre_exec makes the group instead
            // (it fails for a process that already leads a group).
            cmd.process_group(0);
        }
        if let Some(input) = stdin {
            cmd.stdin(match input {
                Input::Inherit => Stdio::inherit(),
                Input::Null => Stdio::null(),
                Input::Piped => Stdio::piped(),
            });
        }
        for (output, set) in [
            (
                &stdout,
                Command::stdout as fn(&mut Command, Stdio) -> &mut Command,
            ),
            (&stderr, Command::stderr),
        ] {
            if let Some(output) = output {
                set(
                    cmd,
                    match output.kind {
                        OutputKind::Inherit => Stdio::inherit(),
                        OutputKind::Null => Stdio::null(),
                        OutputKind::Piped | OutputKind::Collected => Stdio::piped(),
                    },
                );
            }
        }
        if let Some(twice) = fds
            .iter()
            .enumerate()
            .find_map(|(i, (_, t))| fds[..i].iter().any(|(_, u)| u == t).then_some(*t))
        {
            return Err(Error::Spawn {
                program,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("pass_fd target {twice} is given twice"),
                ),
            });
        }
        if let Some(&(_, bad)) = fds.iter().find(|(_, target)| *target < 3) {
            return Err(Error::Spawn {
                program,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("pass_fd target {bad} is a stdio fd"),
                ),
            });
        }

        // A dead watchdog is only noticed when a child fails to register with it,
        // so one retry with a fresh watchdog is part of the protocol.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let registration = if watchdog {
                Some(watchdog::reserve().map_err(|source| Error::Watchdog {
                    program: program.clone(),
                    source,
                })?)
            } else {
                None
            };
            let token = registration
                .as_ref()
                .map_or_else(watchdog::untracked_token, |r| r.token());
            let cg = match &cgroup {
                Some(parent) => {
                    Some(
                        Cgroup::create(parent, token).map_err(|source| Error::Cgroup {
                            program: program.clone(),
                            path: parent.clone(),
                            source,
                        })?,
                    )
                }
                None => None,
            };
            // The cgroup is registered by the owner, before the fork (see
            // watchdog.rs): no fd crosses, and nothing the child does can stop it.
            if let (Some(registration), Some(cg)) = (&registration, &cg)
                && let Err(source) = registration.watch_cgroup(&cg.path().join("cgroup.kill"))
            {
                let _ = cg.remove();
                if attempt == 1 && watchdog_gone(&source) {
                    continue;
                }
                return Err(Error::Watchdog { program, source });
            }
            let plan = Arc::new(PreExec::new(
                registration.as_ref(),
                cg.as_ref(),
                &fds,
                new_session,
            ));
            let in_child = plan.clone();
            // SAFETY: the closure runs between fork and exec; `PreExec::run` makes
            // only async-signal-safe syscalls and touches only memory allocated
            // here, before the fork (see its docs).
            unsafe {
                cmd.pre_exec(move || in_child.run());
            }
            let spawned = cmd.spawn();
            // The closure stays on the Command; disarm it so a later spawn of the
            // same Command does not replay this child's plan.
            plan.armed.store(false, Ordering::Release);
            match spawned {
                Ok(std_child) => {
                    drop(fds);
                    let config = crate::process::Config {
                        timeout,
                        grace,
                        stop_signal,
                        stdout: stdout.filter(|o| {
                            matches!(o.kind, OutputKind::Piped | OutputKind::Collected)
                        }),
                        stderr: stderr.filter(|o| {
                            matches!(o.kind, OutputKind::Piped | OutputKind::Collected)
                        }),
                        line_buffer,
                        on_exit: crate::process::ExitHooks(std::sync::Mutex::new(on_exit)),
                    };
                    let mut child =
                        Child::adopt(std_child, registration, cg, config).map_err(|source| {
                            Error::Spawn {
                                program: program.clone(),
                                source,
                            }
                        })?;
                    for hook in on_spawn {
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            hook(&mut child)
                        }));
                        if let Err(panic) = ran {
                            // Dropping the child kills its group and reaps it.
                            return Err(Error::Hook {
                                program,
                                message: panic_message(panic.as_ref()),
                            });
                        }
                    }
                    return Ok(child);
                }
                Err(source) => {
                    if let Some(cg) = cg {
                        let _ = cg.remove();
                    }
                    let watchdog_gone = registration.is_some() && watchdog_gone(&source);
                    if watchdog_gone && attempt == 1 {
                        continue;
                    }
                    if watchdog_gone {
                        return Err(Error::Watchdog { program, source });
                    }
                    return Err(classify(cmd, program, source));
                }
            }
        }
    }
}

/// The message of a caught panic (from `catch_unwind` or a `JoinError`): its
/// `&str` or `String` payload, or a placeholder for any other payload.
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("the hook refuses")).unwrap_err();
/// assert_eq!(forkyard_child::panic_message(&*caught), "the hook refuses");
/// ```
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}

/// Whether a failed send to the watchdog says it is gone (so a fresh one is due).
fn watchdog_gone(source: &io::Error) -> bool {
    matches!(
        source.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNREFUSED | libc::ENOTCONN | libc::ECONNRESET)
    )
}

/// Everything the `pre_exec` closure needs, allocated before the fork.
///
/// # Design note: what may run between fork and exec
///
/// The child of a `fork` in a multi-threaded process has one thread, and any
/// lock another thread held at the fork (the allocator's, stdout's) stays
/// locked forever. So the closure allocates nothing and locks nothing: it reads
/// this struct (a copy-on-write copy of the parent's) and makes raw syscalls.
#[derive(Debug)]
struct PreExec {
    armed: AtomicBool,
    /// Call `setsid` first (instead of std's `setpgid`).
    new_session: bool,
    /// Watchdog socket, registration token, and whether the kernel attaches
    /// our pidfd to the registration (else we pass it).
    watchdog: Option<(RawFd, u64, bool)>,
    /// `cgroup.procs` of the child's cgroup.
    cgroup_procs: Option<RawFd>,
    /// (source fd, target fd) for every passed fd.
    fds: Vec<(RawFd, RawFd)>,
    /// Lowest fd number above every target, for parking sources out of the way.
    park_above: RawFd,
    /// Where the parked copies go: one slot per passed fd, allocated before the
    /// fork so the child only writes into memory it already has.
    parked: Vec<AtomicI32>,
}

impl PreExec {
    fn new(
        registration: Option<&watchdog::Registration>,
        cg: Option<&Cgroup>,
        fds: &[(OwnedFd, RawFd)],
        new_session: bool,
    ) -> PreExec {
        let fds: Vec<(RawFd, RawFd)> = fds
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), *target))
            .collect();
        let park_above = fds.iter().map(|&(_, target)| target + 1).max().unwrap_or(3);
        PreExec {
            armed: AtomicBool::new(true),
            new_session,
            watchdog: registration.map(|r| (r.socket(), r.token(), r.kernel_pidfds())),
            cgroup_procs: cg.map(Cgroup::procs_fd),
            parked: fds.iter().map(|_| AtomicI32::new(-1)).collect(),
            fds,
            park_above,
        }
    }

    /// Runs in the forked child, after std has set up stdio, the process group
    /// and the working directory, and before `exec`.
    fn run(&self) -> io::Result<()> {
        if !self.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(rc)
            }
        };
        // SAFETY: for the whole block: raw syscalls on fds that were open at fork time and
        // stack buffers; no allocation, no locks (see the design note above).
        unsafe {
            // 0. A new session (and with it a new process group led by us).
            if self.new_session {
                check(libc::setsid())?;
            }
            // 1. Join the cgroup first, so that everything after, exec included,
            //    happens inside it.
            if let Some(procs) = self.cgroup_procs
                && libc::write(procs, b"0".as_ptr() as *const libc::c_void, 1) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // 2. Register with the watchdog before exec (see watchdog.rs for why here).
            if let Some((sock, token, kernel_pidfds)) = self.watchdog {
                watchdog::register_self(sock, token, kernel_pidfds)?;
            }
            // 3. Every fd from 3 up closes at exec, whatever its flag said.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                let mut rl: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
                let max = if rl.rlim_cur == libc::RLIM_INFINITY {
                    1 << 20
                } else {
                    rl.rlim_cur.min(1 << 20)
                };
                for fd in 3..(max as libc::c_int) {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // 4. Passed fds: park every source above all targets first (a source
            //    may sit on another's target), then dup2 onto the targets; dup2
            //    leaves the target without close-on-exec.
            for (&(source, _), slot) in self.fds.iter().zip(&self.parked) {
                slot.store(
                    check(libc::fcntl(source, libc::F_DUPFD_CLOEXEC, self.park_above))?,
                    Ordering::Relaxed,
                );
            }
            for (&(_, target), slot) in self.fds.iter().zip(&self.parked) {
                check(libc::dup2(slot.load(Ordering::Relaxed), target))?;
            }
        }
        Ok(())
    }
}

/// Turns a spawn `io::Error` into an error that says what failed.
///
/// `exec` reports a missing program and a missing working directory with the
/// same `ENOENT`, so the working directory is checked to tell them apart.
fn classify(cmd: &Command, program: String, source: io::Error) -> Error {
    let cwd = cmd.get_current_dir().map(std::path::Path::to_path_buf);
    let cwd_bad = cwd.as_ref().is_some_and(|dir| {
        !dir.is_dir() || rustix::fs::access(dir.as_path(), rustix::fs::Access::EXEC_OK).is_err()
    });
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES) if cwd_bad => Error::BadCwd {
            program,
            cwd: cwd.unwrap_or_default(),
            source,
        },
        Some(libc::ENOENT) => Error::ProgramNotFound { program, source },
        Some(libc::EACCES | libc::EPERM | libc::EISDIR) => {
            Error::PermissionDenied { program, source }
        }
        Some(libc::ENOEXEC) => Error::NotExecutable { program, source },
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => {
            Error::Resources { program, source }
        }
        _ => Error::Spawn { program, source },
    }
}
