//! Preparing one spawn: the pre-exec hooks, the run's cgroups, and the layer report.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::process::{Resource, Rlimit};

use crate::error::Error;
use crate::limits::Limits;
use crate::policy::{Inner, ProgramEntry};
use crate::sandbox::cgroup::{self, CgroupSet, Controller, RunCgroup};
use crate::sandbox::exec::{Attestation, Hooks, UserNsMaps};
use crate::sandbox::probe::{NamespaceMode, Probe};
use crate::sandbox::{Enforcement, Layer, LayerReport, LayerStatus, Network, Sandbox};

/// Everything prepared in the parent for one spawn.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) hooks: Hooks,
    pub(crate) cgroups: CgroupSet,
    /// Read end of the attestation pipe.
    pub(crate) attest: Option<OwnedFd>,
    /// The layers, as planned (confirmed after spawn).
    pub(crate) reports: Vec<LayerReport>,
    pub(crate) pid_namespace: bool,
    pub(crate) seccomp: bool,
}

fn report(layer: Layer, status: LayerStatus, detail: impl Into<String>) -> LayerReport {
    LayerReport {
        layer,
        status,
        detail: detail.into(),
    }
}

/// An unavailable layer: an error if required, a report line if best effort.
fn unavailable(
    layer: Layer,
    enforcement: Enforcement,
    reason: String,
) -> Result<LayerReport, Error> {
    match enforcement {
        Enforcement::Required => Err(Error::LayerUnavailable { layer, reason }),
        Enforcement::BestEffort => {
            tracing::warn!(%layer, %reason, "sandbox layer unavailable; running without it (best effort)");
            Ok(report(layer, LayerStatus::Unavailable, reason))
        }
    }
}

/// Prepares one spawn: every layer in the order the child applies them, each planned by its
/// own function below, which adds its hooks and its line of the report.
pub(crate) fn prepare(
    policy: &Inner,
    entry: &ProgramEntry,
    n_passed_fds: usize,
) -> Result<Prepared, Error> {
    let sandbox = &policy.sandbox;
    let probe = Probe::get();
    let mut plan = Plan::default();
    session(&mut plan, sandbox);
    parent_death_signal(&mut plan, sandbox);
    // Cgroups before rlimits: the memory fallback depends on them.
    let cgroups = cgroups_layer(&mut plan, policy)?;
    rlimits_layer(&mut plan, &policy.limits, cgroups.memory, n_passed_fds);
    let userns_for_net = network_namespace(&mut plan, policy, probe)?;
    let (pid_namespace, userns_for_pid) = pid_namespace(&mut plan, sandbox, probe)?;
    let userns = userns_for_net || userns_for_pid;
    if userns {
        plan.hooks.userns = Some(UserNsMaps::identity());
    }
    capabilities(&mut plan, sandbox, userns)?;
    no_new_privs(&mut plan, sandbox);
    landlock(&mut plan, entry, sandbox)?;
    let seccomp = seccomp(&mut plan, policy)?;
    let attest = attestation_pipe(&mut plan)?;
    let Plan { hooks, mut reports } = plan;
    reports.sort_by_key(|r| r.layer);
    Ok(Prepared {
        hooks,
        cgroups,
        attest: Some(attest),
        reports,
        pid_namespace,
        seccomp,
    })
}

/// A spawn being prepared: the hooks the child will run, and one report line per layer.
#[derive(Default)]
struct Plan {
    hooks: Hooks,
    reports: Vec<LayerReport>,
}

impl Plan {
    fn report(&mut self, layer: Layer, status: LayerStatus, detail: impl Into<String>) {
        self.reports.push(report(layer, status, detail));
    }
}

/// Layer 1: Session: no controlling terminal.
fn session(plan: &mut Plan, sandbox: &Sandbox) {
    if sandbox.session {
        plan.hooks.session = true;
        plan.report(
            Layer::Session,
            LayerStatus::Applied,
            "no controlling terminal (setsid, or TIOCNOTTY when the child already leads its process group)",
        );
    } else {
        plan.report(Layer::Session, LayerStatus::Off, "");
    }
}

/// Layer 2: Parent-death signal.
fn parent_death_signal(plan: &mut Plan, sandbox: &Sandbox) {
    if sandbox.parent_death_signal {
        plan.hooks.parent_death = Some(rustix::process::getpid());
        plan.report(
            Layer::ParentDeathSignal,
            LayerStatus::Applied,
            "SIGKILL when the spawning thread exits (forkyard-child's watchdog covers the owner process)",
        );
    } else {
        plan.report(Layer::ParentDeathSignal, LayerStatus::Off, "");
    }
}

/// Layer 3: Cgroups. A set left over by an earlier run of this policy is reused when it is empty
/// (see `sandbox::cgroup`).
fn cgroups_layer(plan: &mut Plan, policy: &Inner) -> Result<CgroupSet, Error> {
    let Some(enforcement) = policy.sandbox.cgroup else {
        plan.report(Layer::Cgroup, LayerStatus::Off, "");
        return Ok(CgroupSet::default());
    };
    let mut cgroups = match policy.take_pooled_cgroups() {
        Some(set) => set,
        None => create_cgroups(&policy.limits, enforcement)?,
    };
    cgroups.arm();
    plan.reports.push(cgroups.report.clone());
    plan.hooks.cgroup_procs = cgroups
        .cgroups
        .iter()
        .filter_map(RunCgroup::procs_dup)
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Prepare {
            layer: Layer::Cgroup,
            source,
        })?;
    Ok(cgroups)
}

/// Layer 4: Rlimits (always: core dumps are always off).
fn rlimits_layer(plan: &mut Plan, limits: &Limits, memory_in_cgroup: bool, n_passed_fds: usize) {
    let (rlimits, detail) = rlimits(limits, memory_in_cgroup);
    plan.hooks.rlimits = rlimits;
    plan.hooks.nofile = limits
        .open_files
        .map(|n| (n, 2 * (n_passed_fds as u64 + 3) + 4));
    plan.report(Layer::Rlimits, LayerStatus::Applied, detail);
}

/// Layer 5a: Network namespace. Returns whether it needs a user namespace.
fn network_namespace(plan: &mut Plan, policy: &Inner, probe: &Probe) -> Result<bool, Error> {
    let sandbox = &policy.sandbox;
    let (Network::Off, Some(enforcement)) = (sandbox.network, sandbox.network_namespace) else {
        plan.report(Layer::NetworkNamespace, LayerStatus::Off, "");
        return Ok(false);
    };
    // With seccomp denying socket(2), runs cannot reach each other through a shared
    // namespace, so a privileged parent lets them all join one (see `sandbox::netns`).
    let sockets_denied = matches!(policy.seccomp, Some(Ok(_))) && sandbox.seccomp.is_some();
    let shared = match probe.namespace_mode(probe.net_ns) {
        Ok(NamespaceMode::Privileged) if sockets_denied => crate::sandbox::netns::shared().ok(),
        _ => None,
    };
    match probe.namespace_mode(probe.net_ns) {
        Ok(_) if shared.is_some() => {
            plan.hooks.join_net = shared;
            plan.report(
                Layer::NetworkNamespace,
                LayerStatus::Applied,
                "shared empty network namespace: no interfaces but a down loopback \
                 (sockets are denied by seccomp, so runs cannot meet there)",
            );
            Ok(false)
        }
        Ok(mode) => {
            plan.hooks.unshare_net = true;
            plan.report(
                Layer::NetworkNamespace,
                LayerStatus::Applied,
                namespace_detail(
                    "own empty network namespace: no interfaces but a down loopback",
                    mode,
                ),
            );
            Ok(mode == NamespaceMode::InUserNamespace)
        }
        Err(reason) => {
            let line = unavailable(Layer::NetworkNamespace, enforcement, reason)?;
            plan.reports.push(line);
            Ok(false)
        }
    }
}

/// Layer 5b: Pid namespace. Returns whether it is on, and whether it needs a user namespace.
fn pid_namespace(plan: &mut Plan, sandbox: &Sandbox, probe: &Probe) -> Result<(bool, bool), Error> {
    let Some(enforcement) = sandbox.pid_namespace else {
        plan.report(Layer::PidNamespace, LayerStatus::Off, "");
        return Ok((false, false));
    };
    match probe.namespace_mode(probe.pid_ns) {
        Ok(mode) => {
            plan.hooks.unshare_pid = true;
            plan.report(
                Layer::PidNamespace,
                LayerStatus::Applied,
                namespace_detail(
                    "the program is pid 1 of a new pid namespace; everything it starts dies with it",
                    mode,
                ),
            );
            Ok((true, mode == NamespaceMode::InUserNamespace))
        }
        Err(reason) => {
            let line = unavailable(Layer::PidNamespace, enforcement, reason)?;
            plan.reports.push(line);
            Ok((false, false))
        }
    }
}

/// Layer 6: Capabilities, dropped in the child after the namespaces (inside the user namespace
/// when there is one, where the child holds CAP_SETPCAP).
fn capabilities(plan: &mut Plan, sandbox: &Sandbox, userns: bool) -> Result<(), Error> {
    match (
        sandbox.capabilities,
        crate::sandbox::caps::prepare(sandbox, userns),
    ) {
        (None, _) | (_, None) => plan.report(Layer::Capabilities, LayerStatus::Off, ""),
        (Some(enforcement), Some(Err(reason))) => {
            let line = unavailable(Layer::Capabilities, enforcement, reason)?;
            plan.reports.push(line);
        }
        (Some(enforcement), Some(Ok((caps, status, detail)))) => {
            if status == LayerStatus::Partial && enforcement == Enforcement::Required {
                return Err(Error::LayerUnavailable {
                    layer: Layer::Capabilities,
                    reason: detail,
                });
            }
            plan.hooks.capabilities = Some(caps);
            plan.report(Layer::Capabilities, status, detail);
        }
    }
    Ok(())
}

/// Layer 7: no_new_privs.
fn no_new_privs(plan: &mut Plan, sandbox: &Sandbox) {
    if sandbox.no_new_privs {
        plan.hooks.no_new_privs = true;
        plan.report(
            Layer::NoNewPrivs,
            LayerStatus::Applied,
            "set-uid bits and file capabilities ignored",
        );
    } else {
        plan.report(
            Layer::NoNewPrivs,
            LayerStatus::Off,
            "(Landlock and seccomp still set it)",
        );
    }
}

/// Layer 8: Landlock.
fn landlock(plan: &mut Plan, entry: &ProgramEntry, sandbox: &Sandbox) -> Result<(), Error> {
    match (&entry.landlock, sandbox.landlock) {
        (None, _) | (_, None) => plan.report(Layer::Landlock, LayerStatus::Off, ""),
        (Some(Err(reason)), Some(enforcement)) => {
            let line = unavailable(Layer::Landlock, enforcement, reason.clone())?;
            plan.reports.push(line);
        }
        (Some(Ok(ruleset)), Some(_)) => {
            plan.hooks.landlock = Some(ruleset.for_spawn().map_err(|source| Error::Prepare {
                layer: Layer::Landlock,
                source,
            })?);
            plan.report(Layer::Landlock, ruleset.status, ruleset.detail.clone());
        }
    }
    Ok(())
}

/// Layer 9: Seccomp. Returns whether a filter is installed.
fn seccomp(plan: &mut Plan, policy: &Inner) -> Result<bool, Error> {
    match (&policy.seccomp, policy.sandbox.seccomp) {
        (None, _) | (_, None) => {
            plan.report(Layer::Seccomp, LayerStatus::Off, "");
            Ok(false)
        }
        (Some(Err(reason)), Some(enforcement)) => {
            let line = unavailable(Layer::Seccomp, enforcement, reason.clone())?;
            plan.reports.push(line);
            Ok(false)
        }
        (Some(Ok(filter)), Some(_)) => {
            plan.hooks.seccomp = Some(filter.clone());
            plan.report(Layer::Seccomp, filter.status, filter.detail.clone());
            Ok(true)
        }
    }
}

/// Layer 10: The attestation pipe, through which the child confirms each layer before `exec`.
/// Returns its read end.
fn attestation_pipe(plan: &mut Plan) -> Result<OwnedFd, Error> {
    let (rx, tx) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| Error::Prepare {
        layer: Layer::Session,
        source: e.into(),
    })?;
    plan.hooks.attest = Some(tx);
    Ok(rx)
}

/// Creates the cgroups a run of this policy needs (pids always, for containment; memory when
/// limited), or reports why it cannot.
fn create_cgroups(limits: &Limits, enforcement: Enforcement) -> Result<CgroupSet, Error> {
    let support = cgroup::Support::get();
    let mut set = CgroupSet::default();
    let mut notes = Vec::new();
    let mut missing = Vec::new();
    let wanted = [
        (
            Controller::Pids,
            Some(limits.processes.unwrap_or(u64::MAX)),
            &support.pids,
        ),
        (Controller::Memory, limits.memory, &support.memory),
    ];
    for (controller, limit, base) in wanted {
        let Some(limit) = limit else { continue };
        match base {
            Ok(base) => match cgroup::join_or_create(&mut set.cgroups, base, controller, limit) {
                Ok(()) => {
                    set.memory |= controller == Controller::Memory;
                    notes.push(format!(
                        "{} ({})",
                        controller_note(controller, limit),
                        base.describe()
                    ));
                }
                Err(e) => missing.push(format!("{}: {e}", controller_name(controller))),
            },
            Err(reason) => missing.push(reason.clone()),
        }
    }
    set.report = if missing.is_empty() {
        report(Layer::Cgroup, LayerStatus::Applied, notes.join("; "))
    } else if notes.is_empty() {
        unavailable(Layer::Cgroup, enforcement, missing.join("; "))?
    } else {
        let detail = format!("{}; missing: {}", notes.join("; "), missing.join("; "));
        match enforcement {
            Enforcement::Required => {
                return Err(Error::LayerUnavailable {
                    layer: Layer::Cgroup,
                    reason: detail,
                });
            }
            Enforcement::BestEffort => report(Layer::Cgroup, LayerStatus::Partial, detail),
        }
    };
    Ok(set)
}

fn controller_name(c: Controller) -> &'static str {
    match c {
        Controller::Pids => "pids",
        Controller::Memory => "memory",
    }
}

fn controller_note(c: Controller, limit: u64) -> String {
    match (c, limit) {
        (Controller::Pids, u64::MAX) => "pids: no limit, contains every descendant".into(),
        (Controller::Pids, n) => format!("pids.max {n}"),
        (Controller::Memory, n) => format!("memory limit {} MiB", n >> 20),
    }
}

fn namespace_detail(what: &str, mode: NamespaceMode) -> String {
    match mode {
        NamespaceMode::Privileged => what.to_owned(),
        NamespaceMode::InUserNamespace => {
            format!("{what} (inside a user namespace mapping our own uid/gid)")
        }
    }
}

/// The rlimits for a run, and a one-line description.
fn rlimits(limits: &Limits, memory_in_cgroup: bool) -> (Vec<(Resource, Rlimit)>, String) {
    let lim = |n: u64| Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    let mut out = vec![(Resource::Core, lim(0))];
    let mut notes = vec!["core 0".to_string()];
    if let Some(cpu) = limits.cpu {
        let secs = cpu.as_secs().max(1);
        // SIGXCPU at the soft limit, SIGKILL one second later if it is ignored.
        out.push((
            Resource::Cpu,
            Rlimit {
                current: Some(secs),
                maximum: Some(secs + 1),
            },
        ));
        notes.push(format!("cpu {secs}s"));
    }
    let address_space = match (limits.address_space, limits.memory) {
        (Some(a), _) => Some(a),
        (None, Some(m)) if !memory_in_cgroup => {
            notes.push("memory as address space (no memory cgroup)".into());
            Some(m)
        }
        _ => None,
    };
    if let Some(a) = address_space {
        out.push((Resource::As, lim(a)));
        notes.push(format!("as {} MiB", a >> 20));
    }
    if let Some(f) = limits.file_size {
        out.push((Resource::Fsize, lim(f)));
        notes.push(format!("fsize {} MiB", f >> 20));
    }
    if let Some(n) = limits.open_files {
        // Applied separately (see `Hooks::nofile`): forkyard-child parks each passed
        // descriptor above its target and opens a pidfd after our hook has run.
        notes.push(format!("nofile {n}"));
    }
    if let Some(p) = limits.processes {
        out.push((Resource::Nproc, lim(p)));
        let root = rustix::process::geteuid().is_root();
        notes.push(if root {
            format!("nproc {p} (ignored for root)")
        } else {
            format!("nproc {p} (per user)")
        });
    }
    (out, notes.join(", "))
}

/// Turns the planned reports into the confirmed ones, given what the child attested.
pub(crate) fn confirm(
    mut reports: Vec<LayerReport>,
    attestation: Option<Attestation>,
) -> Vec<LayerReport> {
    let Some(a) = attestation else {
        for r in &mut reports {
            if matches!(r.status, LayerStatus::Applied | LayerStatus::Partial) {
                r.status = LayerStatus::Unavailable;
                r.detail = format!("not confirmed by the child: {}", r.detail);
            }
        }
        return reports;
    };
    for r in &mut reports {
        if !matches!(r.status, LayerStatus::Applied | LayerStatus::Partial) {
            continue;
        }
        let confirmed = match r.layer {
            Layer::Session => a.session != 0,
            Layer::ParentDeathSignal => a.parent_death,
            Layer::Rlimits => a.rlimits > 0,
            Layer::Cgroup => true,
            Layer::NetworkNamespace => a.network_namespace,
            Layer::PidNamespace => a.pid_namespace,
            Layer::NoNewPrivs => a.no_new_privs,
            Layer::Capabilities => crate::sandbox::caps::confirmed(r.status, a.capabilities),
            Layer::Landlock => a.landlock >= 2,
            Layer::Seccomp => a.seccomp_filters > 0,
        };
        if r.layer == Layer::Session && a.session == 2 {
            r.detail = "no controlling terminal (TIOCNOTTY: forkyard-child makes the child a process-group leader, so setsid is refused)".into();
        } else if r.layer == Layer::Session && a.session == 1 {
            r.detail = "new session (setsid): no controlling terminal".into();
        }
        if r.layer == Layer::Landlock && a.landlock == 2 {
            r.status = LayerStatus::Partial;
        }
        if !confirmed {
            r.status = LayerStatus::Unavailable;
            r.detail = format!("not confirmed by the child: {}", r.detail);
        }
    }
    reports
}

/// A `Command` for the validated program: exact argv, empty environment plus the validated
/// one, `/` as working directory.
pub(crate) fn command(
    exe: &std::path::Path,
    exe_fd: Option<i32>,
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let program: PathBuf = match exe_fd {
        Some(n) => PathBuf::from(format!("/proc/self/fd/{n}")),
        None => exe.to_owned(),
    };
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(exe);
    cmd.args(argv);
    cmd.env_clear();
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.current_dir("/");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_layer_is_an_error_only_when_required() {
        let err =
            unavailable(Layer::Landlock, Enforcement::Required, "no landlock".into()).unwrap_err();
        assert!(matches!(
            err,
            Error::LayerUnavailable {
                layer: Layer::Landlock,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "required sandbox layer `landlock` is unavailable: no landlock"
        );
        let line = unavailable(
            Layer::Landlock,
            Enforcement::BestEffort,
            "no landlock".into(),
        )
        .unwrap();
        assert_eq!(
            (line.status, line.detail.as_str()),
            (LayerStatus::Unavailable, "no landlock")
        );
    }

    #[test]
    fn layers_the_child_did_not_confirm_are_reported_unavailable() {
        let planned = vec![
            report(Layer::Seccomp, LayerStatus::Applied, "filters"),
            report(Layer::Landlock, LayerStatus::Applied, "rules"),
            report(Layer::PidNamespace, LayerStatus::Off, ""),
        ];
        let none = confirm(planned.clone(), None);
        assert!(
            none[..2]
                .iter()
                .all(|r| r.status == LayerStatus::Unavailable
                    && r.detail.starts_with("not confirmed"))
        );
        assert_eq!(none[2].status, LayerStatus::Off);
        // Landlock only partially enforced, seccomp confirmed.
        let partial = Attestation {
            landlock: 2,
            seccomp_filters: 3,
            ..Attestation::default()
        };
        let got = confirm(planned, Some(partial));
        assert_eq!(got[0].status, LayerStatus::Applied);
        assert_eq!(got[1].status, LayerStatus::Partial);
    }
}
