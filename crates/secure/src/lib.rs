//! Running commands built from untrusted input.
//!
//! # The problem
//!
//! A service converts uploaded files by running `iconv`, `convert` or `ffmpeg` with
//! arguments taken from the request. Every part of that request is an attack surface:
//!
//! * the **command line**: `; rm -rf ~` reaches a shell if there is one (CWE-78), and even
//!   without a shell `--checkpoint-action=exec=sh` or `-oProxyCommand=` turns a flag into
//!   code (CWE-88);
//! * the **file names**: `../../etc/shadow`, an absolute path, a symlink planted in the
//!   upload directory, or one swapped in between the check and the open (CWE-22, CWE-367);
//! * the **environment**: `LD_PRELOAD`, `GCONV_PATH`, `BASH_ENV`, `() { :; }; id`;
//! * the **program itself**, once running: it may be exploited by its input and then burn
//!   CPU, memory, disk, output, processes, or reach for the network, other files, other
//!   processes and the kernel's less-trodden system calls;
//! * and afterwards, **nobody can tell** what ran, on whose behalf, and how it ended.
//!
//! # The approach: layers, each testable alone
//!
//! ```text
//!  request (untrusted)             parent                                  child, between fork and exec
//!  ────────────────────    ┌─────────────────────────────────┐     ┌───────────────────────────────────┐
//!  program name ─────────▶ │ 1 policy: allowlist by name,    │     │ 3 hardening (system calls only):  │
//!  arguments   ─────────▶  │   absolute path, sha256 pin     │     │   setsid / TIOCNOTTY, pdeathsig,  │
//!  environment ─────────▶  │ 2 validation → ValidatedCommand │ ──▶ │   rlimits, join cgroups, net/pid  │ ──▶ exec
//!                          │   argv grammar, openat2 beneath │     │   namespaces, drop capabilities,  │
//!                          │   a root, env allowlist         │     │   no_new_privs, Landlock,         │
//!                          │                                 │     │   seccomp, attestation            │
//!                          │ 4 audit: decision record ───────┼──┐  └───────────────────────────────────┘
//!                          └─────────────────────────────────┘  │   wait: wall clock, output cap, sweep the
//!                                                               └── cgroups, classify the end, exit record
//! ```
//!
//! 1. **Policy** ([`Policy`], [`ProgramRule`]): requests name programs by key; each key maps
//!    to an absolute, normalised path (never a `PATH` search), optionally pinned by sha256
//!    (and then executed through the very descriptor that was hashed). Shells, interpreters
//!    and exec wrappers are refused unless a rule names them with
//!    [`allow_interpreter`](ProgramRule::allow_interpreter).
//! 2. **Validation** ([`Policy::validate`] → [`ValidatedCommand`], whose constructor is
//!    private: parse, don't validate). Arguments follow a grammar: declared flags (with
//!    or without [`Value`]s), operands, counts and lengths; anything else that looks like an
//!    option is refused, and the argv is re-laid out canonically with `--` before operands
//!    ([`Layout`]). There is never a shell, so `; id` is one literal argument. Path operands
//!    are opened by the kernel beneath a root with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_MAGICLINKS)`, and the *descriptor* is handed to the child as
//!    `/proc/self/fd/N` ([`PassAs`]): no escape, no check-then-use race. The environment
//!    starts empty and is built from an allowlist with per-variable validation ([`EnvRule`]);
//!    loader, shell and interpreter hooks are refused whatever the policy says.
//! 3. **Hardening at spawn** ([`Sandbox`], [`Limits`]): everything is prepared in the parent;
//!    between `fork` and `exec` the child only makes system calls: no controlling terminal,
//!    parent-death signal, rlimits, a per-run cgroup (pids, memory), network and pid
//!    namespaces, every capability dropped (a root parent's `CAP_SYS_ADMIN`,
//!    `CAP_DAC_OVERRIDE`, `CAP_KILL`... do not reach the program, and uid 0 regains none at
//!    `exec`), `no_new_privs`, Landlock, seccomp. It then writes a few bytes saying what
//!    applied, so [`RunOutput::layers`] reports what the *child confirmed*, and a layer the
//!    kernel lacks is either refused ([`Enforcement::Required`]) or reported
//!    ([`LayerStatus::Unavailable`]), never silently skipped. The parent enforces wall-clock
//!    time and output caps, kills stragglers left in the run's cgroup, and says why the run
//!    ended ([`EndCause`]).
//! 4. **Audit** ([`audit`]): one JSON line per decision and per exit, escaped so no input can
//!    forge a record or a line, each carrying the hash of the previous one;
//!    [`audit::verify`] points at edited, removed, reordered or inserted records.
//!
//! Every refusal is an [`Error::Denied`] whose [`Denial`] names the rule
//! ([`Denial::rule`]), and is audited too.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use forkyard_secure::{EndCause, EnvRule, Limits, Operand, Policy, ProgramRule, Sandbox, Value};
//! use forkyard_secure::audit::{self, AuditLog};
//!
//! let uploads = tempfile::tempdir()?;
//! std::fs::write(uploads.path().join("in.txt"), b"Gr\xfc\xdfe\n")?;
//! let log_dir = tempfile::tempdir()?;
//! let log = AuditLog::open(log_dir.path().join("audit.jsonl"))?;
//!
//! let policy = Policy::builder()
//!     .program(
//!         "iconv",
//!         ProgramRule::path("/usr/bin/iconv")
//!             .flag_value("-f", Value::one_of(["LATIN1", "UTF-8"]))
//!             .flag_value("-t", Value::one_of(["LATIN1", "UTF-8"]))
//!             .operand(Operand::path_beneath(uploads.path())),
//!     )
//!     .env(EnvRule::allow(["LANG"]))
//!     .limits(Limits { cpu: Some(Duration::from_secs(5)), wall: Some(Duration::from_secs(10)), ..Limits::default() })
//!     .sandbox(Sandbox::strict())
//!     .audit(log.clone())
//!     .build()?;
//!
//! let out = policy.run("iconv", ["-f", "LATIN1", "-t", "UTF-8", "in.txt"]).await?;
//! assert_eq!(out.cause, EndCause::Exited { code: 0 });
//! assert_eq!(out.stdout.text(), "Grüße\n");
//!
//! // Hostile requests never reach the program.
//! let denied = policy.run("iconv", ["-f", "LATIN1", "-t", "UTF-8", "../../etc/shadow"]).await;
//! assert!(matches!(denied, Err(forkyard_secure::Error::Denied { denial, .. }) if denial.rule() == "path.escapes-root"));
//!
//! // Decision, exit, decision: chained and intact.
//! let verification = audit::verify(log.path())?;
//! assert!(verification.is_intact() && verification.lines == 3);
//! # Ok(()) }
//! ```
//!
//! To hand a hardened command to something that runs processes itself (a pool, a
//! supervisor), use [`Policy::command`], which returns a [`SecureCommand`] with a
//! preconfigured [`forkyard_child::Builder`].
//!
//! # How it compares
//!
//! | | forkyard-secure | nsjail | bubblewrap | systemd unit |
//! |---|---|---|---|---|
//! | argv | typed grammar per program, `--` inserted, option-like operands refused | passed verbatim | passed verbatim | passed verbatim |
//! | file names | `openat2` beneath a root, descriptor passed | mount namespace | bind mounts | `ProtectSystem=`, `ReadOnlyPaths=` |
//! | environment | empty + validated allowlist, hooks always refused | `keep_env=false` | `--clearenv` | clean by default |
//! | file system | Landlock (no root, no mounts) | mounts + `pivot_root` | tmpfs root + binds | mount namespace |
//! | capabilities | all dropped: bounding, ambient, effective, permitted, inheritable; securebits `noroot`, `no-setuid-fixup`, `no-ambient-raise`, locked | bounding set dropped (given `CAP_SETPCAP`), inheritable and ambient cleared (`cap`, `keep_caps` keep some) | bounding set dropped, `capset` to none (`--cap-add` keeps some) | `CapabilityBoundingSet=`, `AmbientCapabilities=`, `SecureBits=` |
//! | system calls | seccomp deny list, x32/foreign ABIs killed, SIGSYS reported | Kafel policy | prebuilt BPF via `--seccomp` | `SystemCallFilter=` |
//! | resources | rlimits + per-run cgroup + wall clock + output cap | rlimits, cgroups, `time_limit` | none | `LimitCPU=`, `MemoryMax=`, `RuntimeMaxSec=` |
//! | end cause | typed: timeout, CPU, memory, file size, output, seccomp kill | exit status | exit status (`--json-status-fd`) | unit result |
//! | what applied | confirmed by the child, per layer | log | no | `systemd-analyze security` |
//! | audit | hash-chained JSON lines, verifier | text log | none | journal (+ FSS sealing of files) |
//!
//! What they do that this crate does not: a mount namespace with a minimal root
//! (bubblewrap, nsjail), running the program as another uid (nsjail, systemd's `User=`),
//! keeping chosen capabilities, user-notify seccomp, and cgroup v2 delegation management
//! (systemd). Landlock gives most of the file-system
//! confinement without root or mounts; see the caveats for what it leaves open.
//!
//! # Caveats
//!
//! * **Linux only**, and the layers depend on the kernel: Landlock needs 5.13 (TCP rules 6.7,
//!   scopes 6.12), `openat2` 5.6, `cgroup.kill` 5.14. The report says what applied.
//! * **Dropping** a [`SecureChild`] (or a [`SecureCommand`] after spawning) kills the
//!   whole run: its process group, and everything in its cgroups. Nothing it started
//!   outlives it, not even descendants that called `setsid` (when a cgroup was available).
//!   If the owner process is SIGKILLed, forkyard-child's watchdog kills the process group;
//!   descendants outside it die only with a pid namespace ([`Sandbox::pid_namespace`]).
//! * **Signals**: timeouts and output caps end the run with SIGKILL at once; `RLIMIT_CPU`
//!   sends SIGXCPU, then SIGKILL a second later. In a pid namespace the program is pid 1 and
//!   ignores signals it has no handler for, except SIGKILL.
//! * **Parent-death signal** fires when the *thread* that spawned exits; spawn from a
//!   long-lived thread (a runtime worker, not `spawn_blocking`) when using
//!   [`Policy::command`] for long-running children.
//! * **Landlock before Linux 7.1 does not cover named Unix sockets**: a sandboxed program
//!   could connect to `/run/dbus/system_bus_socket` if it could create a socket; with
//!   [`Network::Off`] seccomp refuses `socket(2)` altogether.
//! * **Capabilities go, the uid stays**: a root parent's program runs as uid 0 without a
//!   single capability, so it still owns root's files and may write what root's permission
//!   bits allow (Landlock decides which of those it can reach). A parent without
//!   `CAP_SETPCAP` (not root) cannot empty the bounding set; the layer is then `partial` and
//!   `no_new_privs` is what keeps `exec` from granting capabilities.
//! * **`RLIMIT_NPROC` counts per user and root ignores it**; the per-run pids cgroup is what
//!   contains fork bombs. Without a cgroup, memory falls back to `RLIMIT_AS`.
//! * **A hash chain can be recomputed** by someone who can rewrite the file: keep the
//!   [`audit::Head`] elsewhere or use an HMAC key ([`audit::AuditOptions::hmac_key`]).
//!
//! # See also
//!
//! * `forkyard-child`: the process ownership every run here is built on (process group,
//!   pidfd exit, watchdog, capped output).
//! * `forkyard-pool` and `forkyard-supervise`: run [`SecureCommand`]s as pooled workers or
//!   supervised services.

#![deny(missing_docs)]

pub mod audit;
mod env;
mod error;
mod grammar;
mod harden;
mod limits;
mod paths;
mod policy;
mod program;
mod record;
mod run;
mod sandbox;

pub use env::EnvRule;
pub use error::{AuditError, Denial, Error, PolicyError, VerifyError};
pub use grammar::{Layout, Operand, PassAs, PathRule, Value};
pub use limits::Limits;
pub use policy::{Policy, PolicyBuilder, Request, ValidatedCommand};
pub use program::{ProgramRule, sha256_file};
pub use run::{EndCause, RunOutput, SecureChild, SecureCommand};
pub use sandbox::{Enforcement, Layer, LayerReport, LayerStatus, Network, Sandbox};
