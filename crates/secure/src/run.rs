//! Spawning a validated command with every layer, waiting for it, and saying why it ended.

use std::borrow::BorrowMut;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use forkyard_child::{Captured, Child, Exit, Input, Launch, Output, Reason, Signal};
use serde::Serialize;

use crate::audit::AuditArg;
use crate::error::Error;
use crate::harden::{self, Prepared};
use crate::policy::{Inner, Policy, ProgramEntry, ValidatedCommand};
use crate::record::{Event, ExitRecord, RusageRecord};
use crate::sandbox::LayerReport;
use crate::sandbox::cgroup::CgroupSet;
use crate::sandbox::exec::{ATTEST_LEN, Attestation};

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
#[non_exhaustive]
pub enum EndCause {
    /// The program exited by itself with this code (0 is success).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The wall-clock limit passed; the whole run was killed.
    Timeout,
    /// The CPU limit was reached (`SIGXCPU`, or `SIGKILL` at the hard limit).
    CpuLimit,
    /// The memory cgroup's limit was reached and the kernel's OOM killer fired.
    Memory,
    /// The program tried to write a file beyond the file-size limit (`SIGXFSZ`).
    FileSizeLimit,
    /// The program wrote more than the output cap; the whole run was killed.
    OutputLimit,
    /// The program made a system call the seccomp filter kills for (`SIGSYS`).
    SeccompKill,
    /// The program died of another signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// We ended it for another reason (the handle was dropped, or `kill` was called).
    Killed,
}

impl EndCause {
    /// A short kebab-case name, as written in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            EndCause::Exited { .. } => "exit",
            EndCause::Timeout => "timeout",
            EndCause::CpuLimit => "cpu-limit",
            EndCause::Memory => "memory",
            EndCause::FileSizeLimit => "file-size-limit",
            EndCause::OutputLimit => "output-limit",
            EndCause::SeccompKill => "seccomp-kill",
            EndCause::Signaled { .. } => "signal",
            EndCause::Killed => "killed",
        }
    }
}

impl std::fmt::Display for EndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndCause::Exited { code } => write!(f, "exit code {code}"),
            EndCause::Signaled { signal } => write!(f, "died of signal {signal}"),
            other => f.write_str(other.name()),
        }
    }
}

/// The result of [`Policy::run`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOutput {
    /// Why the run ended.
    pub cause: EndCause,
    /// The exit as `forkyard-child` saw it (status, rusage, elapsed time).
    pub exit: Exit,
    /// Captured stdout (at most the output cap).
    pub stdout: Captured,
    /// Captured stderr (at most the output cap).
    pub stderr: Captured,
    /// Every layer and whether it applied, as confirmed by the child before `exec`.
    pub layers: Vec<LayerReport>,
    /// Processes still in the run's cgroup after the program ended (daemonised or
    /// `setsid` descendants), which were killed.
    pub stragglers_killed: usize,
}

impl RunOutput {
    /// Whether the program exited with code 0.
    pub fn success(&self) -> bool {
        self.cause == EndCause::Exited { code: 0 }
    }
}

/// A validated request, hardened and ready to spawn: what [`Policy::command`] returns.
///
/// Spawn it with [`spawn`](SecureCommand::spawn) (limits and capture configured from the
/// policy), or take a preconfigured [`forkyard_child::Builder`] with
/// [`builder`](SecureCommand::builder) to change stdio before spawning, e.g. from a pool.
///
/// # Caveats
///
/// Keep the `SecureCommand` alive as long as the process it spawned: it owns the run's
/// cgroups, and dropping it kills whatever is still in them. Its drop also writes the exit
/// record if [`finish`](SecureCommand::finish) was not called.
#[derive(Debug)]
pub struct SecureCommand {
    cmd: std::process::Command,
    fds: Vec<(OwnedFd, RawFd)>,
    run: RunState,
}

#[derive(Debug)]
struct RunState {
    policy: Arc<Inner>,
    entry: Arc<ProgramEntry>,
    decision: Option<u64>,
    cgroups: CgroupSet,
    attest: Option<OwnedFd>,
    reports: Vec<LayerReport>,
    confirmed: bool,
    pid_namespace: bool,
    seccomp: bool,
    pid: Option<u32>,
    /// Our own pidfd of the spawned process, to notice its exit while output is collected.
    pidfd: Option<OwnedFd>,
    /// Pids killed by the sweeps.
    killed: BTreeSet<i32>,
    recorded: bool,
}

/// Hardens an already validated command: [`Policy::harden`]'s machinery.
pub(crate) fn harden(policy: &Policy, validated: ValidatedCommand) -> Result<SecureCommand, Error> {
    let ValidatedCommand {
        entry,
        exe_fd,
        argv,
        env,
        mut fds,
        decision,
        ..
    } = validated;
    let n_fds = fds.len() + usize::from(exe_fd.is_some());
    let mut run = RunState {
        policy: Arc::clone(&policy.inner),
        entry: Arc::clone(&entry),
        decision,
        cgroups: CgroupSet::default(),
        attest: None,
        reports: Vec::new(),
        confirmed: false,
        pid_namespace: false,
        seccomp: false,
        pid: None,
        pidfd: None,
        killed: BTreeSet::new(),
        recorded: false,
    };
    let prepared = match harden::prepare(&policy.inner, &entry, n_fds) {
        Ok(p) => p,
        Err(e) => {
            run.record(None, Some(&e.to_string()));
            return Err(e);
        }
    };
    let Prepared {
        mut hooks,
        cgroups,
        attest,
        reports,
        pid_namespace,
        seccomp,
    } = prepared;
    run.cgroups = cgroups;
    run.attest = attest;
    run.reports = reports;
    run.pid_namespace = pid_namespace;
    run.seccomp = seccomp;
    let exe_n = exe_fd.as_ref().map(|(_, n)| *n);
    let mut cmd = harden::command(&entry.program.path, exe_n, &argv, &env);
    // SAFETY: `Hooks::apply` runs between fork and exec and only makes system calls on
    // values prepared here, before the fork; it never allocates or locks (see
    // `sandbox::exec`).
    unsafe {
        cmd.pre_exec(move || hooks.apply());
    }
    fds.extend(exe_fd);
    Ok(SecureCommand { cmd, fds, run })
}

impl SecureCommand {
    /// The program's name in the policy.
    pub fn program(&self) -> &str {
        &self.run.entry.program.name
    }

    /// The layers as planned; after a spawn, as confirmed by the child.
    pub fn layers(&mut self) -> &[LayerReport] {
        self.run.confirm();
        &self.run.reports
    }

    /// A [`forkyard_child::Builder`] set up from the policy: the path-operand descriptors
    /// passed, stdin from `/dev/null`, stdout and stderr captured up to the output cap (the
    /// run is killed beyond it), the wall-clock timeout ending the run with SIGKILL. Adjust
    /// it and call `spawn`; then [`finish`](SecureCommand::finish) with the exit.
    pub fn builder(&mut self) -> forkyard_child::Builder<'_> {
        let fds = std::mem::take(&mut self.fds);
        configure(Child::builder(&mut self.cmd), &self.run, fds)
    }

    /// The command as an owned [`Launch`], for a pool's workers or a supervisor's
    /// children: set up as [`builder`](SecureCommand::builder) is, with hooks that do what
    /// [`spawned`](SecureCommand::spawned) and [`finish`](SecureCommand::finish) do, so the
    /// confirmed layer report, the limits and the audit record are kept whoever starts
    /// the process.
    ///
    /// The exit record of a run started this way counts no output bytes (the output
    /// belongs to whoever spawned it); a `Launch` that is dropped unspawned, or whose
    /// child is dropped unreaped, still records the run as abandoned. Its wall-clock
    /// limit applies to the whole life of the process: a pool worker is ended (and
    /// replaced) when it is reached.
    ///
    /// ```no_run
    /// # fn demo(policy: &forkyard_secure::Policy) -> Result<(), forkyard_secure::Error> {
    /// // A pool whose every worker is a sandboxed, audited start of `decoder`.
    /// let policy = policy.clone();
    /// let make_worker = move || -> forkyard_child::Launch {
    ///     match policy.command("decoder", ["--serve"]) {
    ///         Ok(cmd) => cmd.into_launch(),
    ///         // A refused request still gives the pool something that fails to start.
    ///         Err(e) => forkyard_child::Launch::new(std::process::Command::new(format!("/refused: {e}"))),
    ///     }
    /// };
    /// # let _ = make_worker;
    /// # Ok(()) }
    /// ```
    pub fn into_launch(self) -> Launch {
        let SecureCommand { cmd, fds, run } = self;
        let launch = configure(Launch::new(cmd), &run, fds);
        let run = Arc::new(std::sync::Mutex::new(run));
        let at_spawn = Arc::clone(&run);
        launch
            .on_spawn(move |child| lock(&at_spawn).spawned(child))
            .on_exit(move |exit| {
                let mut run = lock(&run);
                run.sweep();
                let cause = run.classify(exit);
                if let Err(e) = run.record_exit(exit, cause, 0, 0) {
                    tracing::error!(error = %e, "could not write an exit record");
                }
            })
    }

    /// Spawns with the policy's limits; see [`builder`](SecureCommand::builder).
    pub fn spawn(mut self) -> Result<SecureChild, Error> {
        let program = self.program().to_owned();
        match self.builder().spawn() {
            Ok(child) => {
                self.spawned(&child);
                Ok(SecureChild {
                    child: Some(child),
                    command: self,
                })
            }
            Err(source) => {
                self.run.record(None, Some(&source.to_string()));
                Err(Error::Spawn { program, source })
            }
        }
    }

    /// Tells the command which child it became (for [`builder`](SecureCommand::builder)
    /// users), confirming the layers.
    pub fn spawned(&mut self, child: &Child) {
        self.run.spawned(child);
    }

    /// Kills what is left in the run's cgroups, classifies the exit and writes the exit
    /// record. `stdout_bytes`/`stderr_bytes` are what the program wrote, for the record.
    pub fn finish(
        &mut self,
        exit: &Exit,
        stdout_bytes: u64,
        stderr_bytes: u64,
    ) -> Result<(EndCause, usize), Error> {
        let stragglers = self.run.sweep();
        let cause = self.run.classify(exit);
        self.run
            .record_exit(exit, cause, stdout_bytes, stderr_bytes)?;
        Ok((cause, stragglers))
    }
}

/// A running hardened program; see [`SecureCommand::spawn`].
#[derive(Debug)]
pub struct SecureChild {
    child: Option<Child>,
    command: SecureCommand,
}

impl SecureChild {
    /// The process id (and process group id).
    pub fn id(&self) -> u32 {
        self.command.run.pid.unwrap_or(0)
    }

    /// The layers, as confirmed by the child before `exec`.
    pub fn layers(&self) -> &[LayerReport] {
        &self.command.run.reports
    }

    /// The underlying [`Child`] (to stop it, signal it, sample it).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until wait")
    }

    /// Waits for the program (the wall-clock limit applies), kills any straggler left in
    /// the run's cgroups, collects the output, and records the exit.
    pub async fn wait(mut self) -> Result<RunOutput, Error> {
        let program = self.command.program().to_owned();
        let child = self.child.take().expect("present until wait");
        let supervise = |source: forkyard_child::Error| Error::Supervise {
            program: program.clone(),
            source,
        };
        // Wait for output and exit together (the wall-clock limit applies inside). When the
        // program itself exits, anything still in its cgroups (a daemonised grandchild, a
        // descendant that called setsid) is killed at once, so that it cannot hold the output
        // pipes open, nor outlive the run. Our own pidfd tells us when the program exits.
        let exited = self.command.run.pidfd.take().map(|pidfd| {
            // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the descriptor stays
            // open, and the same, for the AsyncFd's whole life.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    pidfd,
                    tokio::io::Interest::READABLE,
                )
            }
        });
        let output = child.wait_with_output();
        tokio::pin!(output);
        let output = match exited {
            Some(Ok(exited)) => {
                tokio::select! {
                    r = &mut output => r,
                    _ = exited.readable() => {
                        self.command.run.sweep();
                        output.await
                    }
                }
            }
            _ => output.await,
        }
        .map_err(supervise)?;
        // Anything that got in between the exit and the sweep.
        let stragglers = self.command.run.sweep();
        let cause = self.command.run.classify(&output.exit);
        self.command.run.record_exit(
            &output.exit,
            cause,
            output.stdout.total,
            output.stderr.total,
        )?;
        tracing::debug!(pid = output.exit.pid(), %cause, "secure run ended");
        Ok(RunOutput {
            cause,
            exit: output.exit,
            stdout: output.stdout,
            stderr: output.stderr,
            layers: self.command.run.reports.clone(),
            stragglers_killed: stragglers,
        })
    }
}

impl RunState {
    /// Reads the child's attestation (once) and updates the reports.
    fn spawned(&mut self, child: &Child) {
        self.pid = Some(child.id());
        // The process is our unreaped child, so its pid cannot have been recycled.
        self.pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()
        });
        self.confirm();
    }

    fn confirm(&mut self) {
        if self.confirmed || self.pid.is_none() {
            return;
        }
        let mut buf = [0u8; ATTEST_LEN];
        let attestation = self
            .attest
            .take()
            .and_then(|rx| match rustix::io::read(&rx, &mut buf) {
                Ok(n) => Attestation::decode(&buf[..n]),
                Err(_) => None,
            });
        if let (Some(a), Some(wanted), Some(pid)) =
            (attestation, self.policy.limits.open_files, self.pid)
            && a.nofile > wanted
        {
            let note = tighten_nofile(pid, wanted, self.pid_namespace, a.nofile);
            if let Some(r) = self
                .reports
                .iter_mut()
                .find(|r| r.layer == crate::sandbox::Layer::Rlimits)
            {
                r.detail.push_str(&note);
            }
        }
        self.reports = harden::confirm(std::mem::take(&mut self.reports), attestation);
        self.confirmed = true;
    }

    /// Kills what is left in the run's cgroups; returns how many processes that was.
    fn sweep(&mut self) -> usize {
        self.cgroups.sweep(&mut self.killed);
        self.killed.len()
    }

    fn classify(&self, exit: &Exit) -> EndCause {
        if let Some(t) = exit.ended_by() {
            return match t.reason {
                Reason::Timeout => EndCause::Timeout,
                Reason::OutputLimit => EndCause::OutputLimit,
                _ => EndCause::Killed,
            };
        }
        if self.cgroups.oom_killed() {
            return EndCause::Memory;
        }
        let limits = &self.policy.limits;
        match exit.signal().map(Signal::as_raw) {
            Some(libc::SIGXCPU) => EndCause::CpuLimit,
            Some(libc::SIGKILL) if limits.cpu.is_some_and(|cpu| exit.rusage().cpu() >= cpu) => {
                EndCause::CpuLimit
            }
            Some(libc::SIGXFSZ) => EndCause::FileSizeLimit,
            Some(libc::SIGSYS) if self.seccomp => EndCause::SeccompKill,
            Some(signal) => EndCause::Signaled { signal },
            None => EndCause::Exited {
                code: exit.code().unwrap_or(-1),
            },
        }
    }

    fn record_exit(
        &mut self,
        exit: &Exit,
        cause: EndCause,
        stdout: u64,
        stderr: u64,
    ) -> Result<(), Error> {
        self.recorded = true;
        let Some(log) = &self.policy.audit else {
            return Ok(());
        };
        let ru = exit.rusage();
        let record = ExitRecord {
            decision: self.decision,
            program: AuditArg::new(OsStr::new(&self.entry.program.name)),
            pid: Some(exit.pid()),
            cause: cause.name().into(),
            code: exit.code(),
            signal: exit.signal().map(Signal::as_raw),
            layers: self.reports.clone(),
            rusage: Some(RusageRecord {
                user_cpu_ms: ru.user_cpu.as_millis(),
                system_cpu_ms: ru.system_cpu.as_millis(),
                max_rss_bytes: ru.max_rss_bytes,
            }),
            wall_ms: exit.elapsed().as_millis(),
            stdout_bytes: stdout,
            stderr_bytes: stderr,
            error: None,
        };
        log.append(&Event::Exit(Box::new(record)))?;
        Ok(())
    }

    /// An exit record for a run that never got an exit (spawn failed, or the command was
    /// dropped unused).
    fn record(&mut self, pid: Option<u32>, error: Option<&str>) {
        self.recorded = true;
        let Some(log) = &self.policy.audit else {
            return;
        };
        let record = ExitRecord {
            decision: self.decision,
            program: AuditArg::new(OsStr::new(&self.entry.program.name)),
            pid,
            cause: if error.is_some() {
                "not-started".into()
            } else {
                "abandoned".into()
            },
            code: None,
            signal: None,
            layers: self.reports.clone(),
            rusage: None,
            wall_ms: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            error: error.map(|e| e.chars().take(512).collect()),
        };
        if let Err(e) = log.append(&Event::Exit(Box::new(record))) {
            tracing::error!(error = %e, "could not write an exit record");
        }
    }
}

/// Sets up a start of a hardened command, owned or borrowed: the path-operand descriptors
/// passed, stdin from `/dev/null`, stdout and stderr captured up to the output cap (the run
/// is killed beyond it), the wall-clock timeout ending it with SIGKILL.
fn configure<C: BorrowMut<Command>>(
    launch: Launch<C>,
    run: &RunState,
    fds: Vec<(OwnedFd, RawFd)>,
) -> Launch<C> {
    let limits = &run.policy.limits;
    let capture = |cap: Option<u64>| match cap {
        Some(cap) => Output::capture(usize::try_from(cap).unwrap_or(usize::MAX)).kill_on_overflow(),
        None => Output::capture(usize::MAX),
    };
    let mut launch = launch
        .stdin(Input::Null)
        .stdout(capture(limits.output))
        .stderr(capture(limits.output))
        .stop_signal(Signal::KILL)
        .grace(Duration::ZERO);
    if let Some(wall) = limits.wall {
        launch = launch.timeout(wall);
    }
    if run.pid_namespace {
        // The program reports pid 1 from inside its namespace; the watchdog must not be
        // handed that number. The relay's parent-death signal and the namespace itself
        // take its place (see `sandbox::exec`).
        launch = launch.kill_on_owner_death(false);
    }
    for (fd, target) in fds {
        launch = launch.pass_fd(fd, target);
    }
    launch
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lowers `RLIMIT_NOFILE` of the spawned process (and, behind a pid-namespace relay, of the
/// program itself) to `wanted`, after the child had to raise it to `raised` to get through
/// forkyard-child's hook in a parent with many descriptors open (see `sandbox::exec`).
fn tighten_nofile(pid: u32, wanted: u64, pid_namespace: bool, raised: u64) -> String {
    let limit = rustix::process::Rlimit {
        current: Some(wanted),
        maximum: Some(wanted),
    };
    let mut targets = vec![pid];
    if pid_namespace {
        // The relay's only child is the program (pid 1 inside, this number outside).
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        targets.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    let mut lowered = 0;
    for target in targets {
        let Some(p) = rustix::process::Pid::from_raw(target as i32) else {
            continue;
        };
        match rustix::process::prlimit(Some(p), rustix::process::Resource::Nofile, limit) {
            Ok(_) => lowered += 1,
            Err(e) => {
                tracing::warn!(pid = target, error = %e, "could not lower the open-files limit")
            }
        }
    }
    format!(
        " (the busy parent's descriptors forced {raised} until exec; lowered to {wanted} in {lowered} process(es) right after)"
    )
}

impl Drop for RunState {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(self.pid, None);
        }
        // What is left in the cgroups is killed; an empty set serves the next run, any other
        // is removed (`RunCgroup`'s drop).
        self.cgroups.sweep(&mut self.killed);
        self.policy
            .return_cgroups(std::mem::take(&mut self.cgroups));
    }
}
