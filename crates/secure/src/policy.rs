//! The policy: programs, environment, limits, sandbox, audit log; and validation of requests
//! into [`ValidatedCommand`]s.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::audit::{AuditArg, AuditLog};
use crate::env::EnvRule;
use crate::error::{AuditError, Denial, Error, PolicyError};
use crate::grammar::{OpenedSummary, Rendered};
use crate::limits::Limits;
use crate::paths::{PathAccess, Root};
use crate::program::{CompiledProgram, ProgramRule, display_name, to_hex, valid_name};
use crate::record::{Decision, Event, LimitsRecord, PathRecord, env_digest, env_names};
use crate::run::{RunOutput, SecureCommand};
use crate::sandbox::cgroup::CgroupSet;
use crate::sandbox::{Enforcement, Layer, Sandbox, landlock, seccomp};

/// The fd number of a command's first path operand (then up): 3 is left free for an
/// ipc channel (`forkyard_ipc::IPC_FD`), so a hardened program can be a pool worker or a
/// supervised service that talks to its parent over one.
pub(crate) const FIRST_OPERAND_FD: i32 = 4;

/// Builds a [`Policy`]; see [`Policy::builder`].
#[derive(Debug, Default)]
pub struct PolicyBuilder {
    programs: Vec<(String, ProgramRule)>,
    env: EnvRule,
    limits: Option<Limits>,
    sandbox: Option<Sandbox>,
    audit: Option<AuditLog>,
}

impl PolicyBuilder {
    /// Allows `name` to run according to `rule`. Requests name programs by this key, never
    /// by path.
    pub fn program(mut self, name: impl Into<String>, rule: ProgramRule) -> PolicyBuilder {
        self.programs.push((name.into(), rule));
        self
    }

    /// The environment rule (default: empty but for `PATH=/usr/bin:/bin`).
    pub fn env(mut self, env: EnvRule) -> PolicyBuilder {
        self.env = env;
        self
    }

    /// Resource limits (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> PolicyBuilder {
        self.limits = Some(limits);
        self
    }

    /// The sandbox (default: [`Sandbox::strict`]).
    pub fn sandbox(mut self, sandbox: Sandbox) -> PolicyBuilder {
        self.sandbox = Some(sandbox);
        self
    }

    /// Where decisions and exits are recorded. Without one nothing is audited.
    pub fn audit(mut self, log: AuditLog) -> PolicyBuilder {
        self.audit = Some(log);
        self
    }

    /// Checks everything that can be checked before the first request: program paths,
    /// ownership, interpreters, pins, operand roots, environment rules, limits, and that
    /// every required sandbox layer is available on this kernel.
    pub fn build(self) -> Result<Policy, Error> {
        if self.programs.is_empty() {
            return Err(PolicyError::Empty.into());
        }
        let limits = self.limits.unwrap_or_default();
        limits.check()?;
        let sandbox = self.sandbox.unwrap_or_default();
        let env = self.env.compile()?;

        let mut roots: BTreeMap<PathBuf, Arc<Root>> = BTreeMap::new();
        let mut programs = BTreeMap::new();
        let mut describe = String::new();
        let seccomp = seccomp::prepare(&sandbox);
        if let Some(Err(reason)) = &seccomp
            && sandbox.seccomp == Some(Enforcement::Required)
        {
            return Err(Error::LayerUnavailable {
                layer: Layer::Seccomp,
                reason: reason.clone(),
            });
        }
        for (name, mut rule) in self.programs {
            if !valid_name(&name) {
                return Err(PolicyError::BadProgramName { name }.into());
            }
            if programs.contains_key(&name) {
                return Err(PolicyError::DuplicateProgram { name }.into());
            }
            let mut used_roots = Vec::new();
            let values = rule
                .grammar
                .flags
                .iter_mut()
                .filter_map(|f| f.value.as_mut())
                .chain(rule.grammar.positional.iter_mut())
                .chain(rule.grammar.rest.iter_mut());
            for value in values {
                if let Some(path_rule) = value.path_rule_mut() {
                    let root = match roots.get(&path_rule.root_path) {
                        Some(root) => Arc::clone(root),
                        None => {
                            let root = Arc::new(Root::open(&path_rule.root_path)?);
                            roots.insert(path_rule.root_path.clone(), Arc::clone(&root));
                            root
                        }
                    };
                    used_roots.push((Arc::clone(&root), path_rule.access));
                    path_rule.root = Some(root);
                }
            }
            let compiled = rule.compile(&name)?;
            compiled.describe(&mut describe);
            // Deduplicate roots, keeping the widest access.
            used_roots.sort_by(|a, b| a.0.path.cmp(&b.0.path));
            let mut merged: Vec<(Arc<Root>, PathAccess)> = Vec::new();
            for (root, access) in used_roots {
                match merged.last_mut() {
                    Some((last, a)) if last.path == root.path => {
                        if access != PathAccess::Read {
                            *a = access;
                        }
                    }
                    _ => merged.push((root, access)),
                }
            }
            let landlock = landlock::prepare(&sandbox, &compiled.path, &merged);
            if let Some(Err(reason)) = &landlock
                && landlock::required(&sandbox)
            {
                return Err(Error::LayerUnavailable {
                    layer: Layer::Landlock,
                    reason: reason.clone(),
                });
            }
            programs.insert(
                name,
                Arc::new(ProgramEntry {
                    program: compiled,
                    landlock,
                }),
            );
        }
        env.describe(&mut describe);
        sandbox.describe(&mut describe);
        describe.push_str(&format!("{limits:?}"));
        let id = to_hex(&Sha256::digest(describe.as_bytes())[..8]);
        Ok(Policy {
            inner: Arc::new(Inner {
                id,
                programs,
                env,
                limits,
                sandbox,
                audit: self.audit,
                seccomp,
                cgroup_pool: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// A compiled program rule with its prepared Landlock ruleset.
#[derive(Debug)]
pub(crate) struct ProgramEntry {
    pub(crate) program: CompiledProgram,
    pub(crate) landlock: Option<landlock::Prepared>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) id: String,
    pub(crate) programs: BTreeMap<String, Arc<ProgramEntry>>,
    pub(crate) env: EnvRule,
    pub(crate) limits: Limits,
    pub(crate) sandbox: Sandbox,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) seccomp: Option<seccomp::Prepared>,
    /// Empty cgroup sets of finished runs, reused by the next ones (creating and removing
    /// cgroup directories is a good part of a hardened spawn's cost).
    pub(crate) cgroup_pool: Mutex<Vec<CgroupSet>>,
}

/// How many idle cgroup sets a policy keeps.
const CGROUP_POOL: usize = 8;

impl Inner {
    pub(crate) fn take_pooled_cgroups(&self) -> Option<CgroupSet> {
        self.cgroup_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// Keeps `set` for a later run if it is empty and there is room; otherwise it is removed.
    pub(crate) fn return_cgroups(&self, set: CgroupSet) {
        if set.reusable() {
            let mut pool = self.cgroup_pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < CGROUP_POOL {
                pool.push(set);
            }
        }
    }
}

/// What may run, how, and under which limits. Cheap to clone; share it between tasks.
///
/// See the [crate documentation](crate) for the lesson and an example.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) inner: Arc<Inner>,
}

/// One request to run a program: the program's name in the policy, its arguments, extra
/// environment variables and who asked. Everything in it is untrusted.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub(crate) program: String,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) caller: Option<String>,
}

impl Request {
    /// A request to run the program called `program` in the policy.
    pub fn new(program: impl Into<String>) -> Request {
        Request {
            program: program.into(),
            ..Request::default()
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Request {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Request
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Asks for an environment variable (it must be allowlisted and valid).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Request {
        self.env
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Who is asking, for the audit log (a user, a tenant, a request id).
    pub fn caller(mut self, caller: impl Into<String>) -> Request {
        self.caller = Some(caller.into());
        self
    }
}

/// A request that passed every rule: the executable, the argv (flags and values as separate
/// elements, `--` before operands, path operands as `/proc/self/fd/N` or canonical paths),
/// the environment, and the descriptors to hand to the child.
///
/// Only [`Policy::validate`] makes one (its fields are private), so holding a
/// `ValidatedCommand` *is* the proof that the request was checked: parse, don't validate.
#[derive(Debug)]
pub struct ValidatedCommand {
    pub(crate) entry: Arc<ProgramEntry>,
    pub(crate) exe_fd: Option<(OwnedFd, i32)>,
    pub(crate) argv: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) fds: Vec<(OwnedFd, i32)>,
    pub(crate) paths: Vec<OpenedSummary>,
    pub(crate) decision: Option<u64>,
}

impl ValidatedCommand {
    /// The program's name in the policy.
    pub fn program(&self) -> &str {
        &self.entry.program.name
    }

    /// The executable's absolute path.
    pub fn executable(&self) -> &Path {
        &self.entry.program.path
    }

    /// The arguments after `argv[0]`, exactly as the program will receive them.
    pub fn args(&self) -> &[OsString] {
        &self.argv
    }

    /// The complete environment the program will receive.
    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The canonical paths of the path operands that were opened, in argument order.
    pub fn opened_paths(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter().map(|p| p.canonical.as_path())
    }

    /// The descriptor numbers the child will find its path operands (and pinned executable)
    /// at.
    pub fn passed_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.fds
            .iter()
            .map(|(_, n)| *n)
            .chain(self.exe_fd.iter().map(|(_, n)| *n))
    }

    /// The audit sequence number of the decision that allowed it (when there is a log).
    pub fn decision_seq(&self) -> Option<u64> {
        self.decision
    }
}

impl Policy {
    /// Validates `args` for `program`, runs it with every layer and limit, waits, and
    /// records the exit. Must be called within a tokio runtime.
    ///
    /// A refused request is [`Error::Denied`]; a program that fails or is killed is a
    /// successful `run` whose [`RunOutput::cause`] says what happened.
    pub async fn run<I, S>(&self, program: &str, args: I) -> Result<RunOutput, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_request(Request::new(program).args(args)).await
    }

    /// [`run`](Policy::run) for a full [`Request`] (environment, caller).
    pub async fn run_request(&self, request: Request) -> Result<RunOutput, Error> {
        self.command_request(&request)?.spawn()?.wait().await
    }

    /// Validates and hardens a request without running it.
    pub fn command<I, S>(&self, program: &str, args: I) -> Result<SecureCommand, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command_request(&Request::new(program).args(args))
    }

    /// [`command`](Policy::command) for a full [`Request`].
    pub fn command_request(&self, request: &Request) -> Result<SecureCommand, Error> {
        let validated = self.validate(request)?;
        self.harden(validated)
    }

    /// Hardens an already validated command.
    pub fn harden(&self, validated: ValidatedCommand) -> Result<SecureCommand, Error> {
        crate::run::harden(self, validated)
    }

    /// Starts a policy.
    ///
    /// ```no_run
    /// use forkyard_secure::{EnvRule, Operand, Policy, ProgramRule, Value};
    /// let policy = Policy::builder()
    ///     .program(
    ///         "iconv",
    ///         ProgramRule::path("/usr/bin/iconv")
    ///             .flag_value("-f", Value::one_of(["LATIN1", "UTF-8"]))
    ///             .flag_value("-t", Value::one_of(["LATIN1", "UTF-8"]))
    ///             .operand(Operand::path_beneath("/srv/uploads")),
    ///     )
    ///     .env(EnvRule::allow(["LANG"]))
    ///     .build()?;
    /// # Ok::<(), forkyard_secure::Error>(())
    /// ```
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// A short digest of the whole policy (programs, grammars, roots, env, limits, sandbox),
    /// written into every audit record.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The policy's limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The audit log, if any.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.inner.audit.as_ref()
    }

    /// Checks a request against the policy and records the decision in the audit log.
    ///
    /// A refusal is [`Error::Denied`] naming the rule; nothing of the request survives it
    /// (descriptors are closed, files it created are removed). If the audit log cannot be
    /// written the request is refused with [`Error::Audit`]: nothing runs unaudited.
    pub fn validate(&self, request: &Request) -> Result<ValidatedCommand, Error> {
        match self.check(request) {
            Ok((validated, created)) => {
                let decision = self.record_decision(request, Ok(&validated));
                match decision {
                    Ok(seq) => {
                        drop(created);
                        Ok(ValidatedCommand {
                            decision: seq,
                            ..validated
                        })
                    }
                    Err(e) => {
                        drop(validated);
                        created.undo_created();
                        Err(e.into())
                    }
                }
            }
            Err(denial) => {
                self.record_decision(request, Err(&denial))?;
                Err(Error::Denied {
                    program: display_name(&request.program),
                    denial,
                })
            }
        }
    }

    /// The validation proper; `Rendered` carries the files created, to undo if the decision
    /// cannot be recorded.
    fn check(&self, request: &Request) -> Result<(ValidatedCommand, Rendered), Denial> {
        let entry = self
            .inner
            .programs
            .get(&request.program)
            .ok_or(Denial::UnknownProgram)?;
        let exe = entry.program.verified_exe()?;
        let mut rendered = Rendered::new(FIRST_OPERAND_FD);
        entry.program.grammar.parse(&request.args, &mut rendered)?;
        let env = match self.inner.env.build(&request.env) {
            Ok(env) => env,
            Err(denial) => {
                rendered.undo_created();
                return Err(denial);
            }
        };
        let exe_fd = exe.map(|fd| {
            let n = rendered.next_fd;
            (fd, n)
        });
        let fds = std::mem::take(&mut rendered.fds);
        let paths = std::mem::take(&mut rendered.paths);
        let argv = std::mem::take(&mut rendered.argv);
        let validated = ValidatedCommand {
            entry: Arc::clone(entry),
            exe_fd,
            argv,
            env,
            fds,
            paths,
            decision: None,
        };
        Ok((validated, rendered))
    }

    fn record_decision(
        &self,
        request: &Request,
        outcome: Result<&ValidatedCommand, &Denial>,
    ) -> Result<Option<u64>, AuditError> {
        let Some(log) = &self.inner.audit else {
            return Ok(None);
        };
        // What runs is logged in full, so the log reproduces it byte for byte; a refused
        // request (which may be hostile and huge) is logged with long arguments digested.
        let arg: fn(&OsStr) -> AuditArg = if outcome.is_ok() {
            AuditArg::new
        } else {
            AuditArg::capped
        };
        let mut record = Decision {
            decision: if outcome.is_ok() { "allowed" } else { "denied" },
            policy: self.inner.id.clone(),
            caller: request.caller.as_deref().map(|c| arg(OsStr::new(c))),
            program: arg(OsStr::new(&request.program)),
            exe: None,
            request: request.args.iter().map(|a| arg(a)).collect(),
            argv: None,
            env: env_names(&request.env),
            env_sha256: None,
            paths: Vec::new(),
            rule: None,
            reason: None,
            limits: None,
        };
        match outcome {
            Ok(v) => {
                record.exe = Some(v.entry.program.path.clone());
                record.argv = Some(v.argv.iter().map(|a| AuditArg::new(a)).collect());
                record.env = env_names(&v.env);
                record.env_sha256 = Some(env_digest(&v.env));
                record.paths = v.paths.iter().map(PathRecord::from).collect();
                record.limits = Some(LimitsRecord::from(&self.inner.limits));
            }
            Err(denial) => {
                record.rule = Some(denial.rule());
                record.reason = Some(denial.to_string());
            }
        }
        log.append(&Event::Decision(Box::new(record))).map(Some)
    }
}
