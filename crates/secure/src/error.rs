//! Every error the crate returns.
//!
//! Two families matter to a caller:
//!
//! * [`Denial`]: a request was refused by a rule. Each variant names the rule
//!   ([`Denial::rule`] returns a stable identifier such as `argv.unknown-flag`) and
//!   carries the argument *index*, never the argument itself: the argument may be a
//!   megabyte of terminal escapes, and error messages end up in logs.
//! * [`PolicyError`]: a policy could not be built (a program that is not an absolute,
//!   normalised path, a shell without an explicit opt-in, a dangerous environment
//!   variable in the allowlist, ...). These are programming errors caught at start-up.
//!
//! [`Error`] wraps both plus the spawn, sandbox and audit failures.

use std::io;
use std::path::PathBuf;

use crate::sandbox::Layer;

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request was refused by a policy rule (and the refusal was audited).
    #[error("request to run `{program}` denied by rule `{rule}`", rule = denial.rule())]
    Denied {
        /// The program name as the request gave it (escaped for display).
        program: String,
        /// Which rule refused it and why.
        #[source]
        denial: Denial,
    },
    /// The policy itself is invalid.
    #[error("invalid policy")]
    Policy(#[from] PolicyError),
    /// The sandbox requires a layer that the running kernel (or our privileges) cannot provide.
    #[error("required sandbox layer `{layer}` is unavailable: {reason}")]
    LayerUnavailable {
        /// The missing layer.
        layer: Layer,
        /// Why it is unavailable, as probed in the parent.
        reason: String,
    },
    /// Preparing a sandbox layer in the parent failed (building the Landlock ruleset, the
    /// seccomp program, a cgroup, ...).
    #[error("failed to prepare sandbox layer `{layer}`")]
    Prepare {
        /// The layer being prepared.
        layer: Layer,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Spawning the hardened process failed (including a failure inside the pre-exec hook,
    /// for example `landlock_restrict_self` refused by the kernel).
    #[error("failed to spawn `{program}`")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying failure.
        #[source]
        source: forkyard_child::Error,
    },
    /// Waiting for or reading from the process failed.
    #[error("failed while supervising `{program}`")]
    Supervise {
        /// The program name.
        program: String,
        /// The underlying failure.
        #[source]
        source: forkyard_child::Error,
    },
    /// Writing the audit log failed. The run is refused (fail closed): nothing runs unaudited.
    #[error("audit log write failed")]
    Audit(#[from] AuditError),
}

/// Why a request was refused. Each variant is one rule; [`Denial::rule`] names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The program name is not in the policy. Lookups are exact: `ls `, `./ls` and
    /// `/usr/bin/ls` are all different from `ls`.
    #[error("program is not in the allowlist")]
    UnknownProgram,
    /// The executable's sha256 no longer matches the pin in the policy.
    #[error(
        "executable {path} does not match its pinned sha256 (expected {expected}, found {actual})"
    )]
    ProgramHashMismatch {
        /// The executable path.
        path: PathBuf,
        /// The pinned digest (hex).
        expected: String,
        /// The digest found now (hex).
        actual: String,
    },
    /// The executable could not be opened for verification.
    #[error("executable {path} could not be opened for verification")]
    ProgramUnavailable {
        /// The executable path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// More arguments than the rule allows.
    #[error("{got} arguments given, at most {max} allowed")]
    TooManyArgs {
        /// The limit.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// One argument is longer than the rule allows.
    #[error("argument {index} is {len} bytes long, at most {max} allowed")]
    ArgTooLong {
        /// Zero-based index in the request's argument list.
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument contains a NUL byte (it would be silently truncated by `execve`).
    #[error("argument {index} contains a NUL byte")]
    NulByte {
        /// Zero-based index.
        index: usize,
    },
    /// An argument looks like an option but the rule does not declare it.
    #[error("argument {index} is an option the rule does not allow")]
    UnknownFlag {
        /// Zero-based index.
        index: usize,
    },
    /// A flag that takes a value was given without one.
    #[error("argument {index} is an option that needs a value and none follows")]
    MissingValue {
        /// Zero-based index.
        index: usize,
    },
    /// A flag that takes no value was given one (`--flag=value`).
    #[error("argument {index} gives a value to an option that takes none")]
    UnexpectedValue {
        /// Zero-based index.
        index: usize,
    },
    /// A flag value or operand failed its validator.
    #[error("argument {index} is not acceptable: {reason}")]
    InvalidValue {
        /// Zero-based index.
        index: usize,
        /// What the validator expected.
        reason: String,
    },
    /// An operand starts with `-` and could be read as an option by the tool.
    #[error("argument {index} is an operand that looks like an option")]
    OptionLikeOperand {
        /// Zero-based index.
        index: usize,
    },
    /// Too few or too many operands.
    #[error("{got} operands given, the rule wants between {min} and {max}")]
    OperandCount {
        /// Minimum.
        min: usize,
        /// Maximum.
        max: usize,
        /// Given.
        got: usize,
    },
    /// A path operand resolves outside its root (`..`, an absolute path, a symlink
    /// pointing out, `/proc/self/root`, ...).
    #[error("argument {index} resolves outside its root")]
    PathEscapes {
        /// Zero-based index.
        index: usize,
    },
    /// A path operand crosses a symlink the rule refuses, or a magic link.
    #[error("argument {index} crosses a refused symlink or magic link")]
    PathSymlink {
        /// Zero-based index.
        index: usize,
    },
    /// A path operand that must exist does not.
    #[error("argument {index} names a file that does not exist beneath its root")]
    PathNotFound {
        /// Zero-based index.
        index: usize,
    },
    /// A path operand that must not exist already does.
    #[error("argument {index} names a file that already exists")]
    PathExists {
        /// Zero-based index.
        index: usize,
    },
    /// A path operand is not a regular file (a FIFO, a device, a directory, ...).
    #[error("argument {index} is not a regular file")]
    PathNotRegular {
        /// Zero-based index.
        index: usize,
    },
    /// Opening a path operand failed for another reason.
    #[error("argument {index} could not be opened beneath its root")]
    PathOpen {
        /// Zero-based index.
        index: usize,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// An environment variable whose name is always refused (loader, shell and interpreter
    /// hooks: `LD_*`, `BASH_ENV`, `BASH_FUNC_*`, `PYTHONPATH`, ...).
    #[error("environment variable {name} is never allowed")]
    DangerousEnv {
        /// The variable name (escaped).
        name: String,
    },
    /// A value that bash would import as a function definition (`() { ...; }`, Shellshock),
    /// refused under every name.
    #[error("environment variable {name} holds a shell function definition")]
    EnvFunction {
        /// The variable name (escaped).
        name: String,
    },
    /// An environment variable not in the allowlist.
    #[error("environment variable {name} is not in the allowlist")]
    EnvNotAllowed {
        /// The variable name (escaped).
        name: String,
    },
    /// An environment variable's value failed its validator.
    #[error("environment variable {name} has an unacceptable value: {reason}")]
    EnvInvalid {
        /// The variable name.
        name: String,
        /// What the validator expected.
        reason: String,
    },
}

impl Denial {
    /// A stable identifier of the rule that refused the request, as written in the audit
    /// log: `program.unknown`, `argv.unknown-flag`, `path.escapes-root`, `env.dangerous`, ...
    pub fn rule(&self) -> &'static str {
        match self {
            Denial::UnknownProgram => "program.unknown",
            Denial::ProgramHashMismatch { .. } => "program.sha256",
            Denial::ProgramUnavailable { .. } => "program.unavailable",
            Denial::TooManyArgs { .. } => "argv.count",
            Denial::ArgTooLong { .. } => "argv.length",
            Denial::NulByte { .. } => "argv.nul",
            Denial::UnknownFlag { .. } => "argv.unknown-flag",
            Denial::MissingValue { .. } => "argv.missing-value",
            Denial::UnexpectedValue { .. } => "argv.unexpected-value",
            Denial::InvalidValue { .. } => "argv.invalid-value",
            Denial::OptionLikeOperand { .. } => "argv.option-like-operand",
            Denial::OperandCount { .. } => "argv.operand-count",
            Denial::PathEscapes { .. } => "path.escapes-root",
            Denial::PathSymlink { .. } => "path.symlink",
            Denial::PathNotFound { .. } => "path.not-found",
            Denial::PathExists { .. } => "path.exists",
            Denial::PathNotRegular { .. } => "path.not-regular",
            Denial::PathOpen { .. } => "path.open",
            Denial::DangerousEnv { .. } => "env.dangerous",
            Denial::EnvFunction { .. } => "env.shell-function",
            Denial::EnvNotAllowed { .. } => "env.not-allowed",
            Denial::EnvInvalid { .. } => "env.invalid-value",
        }
    }
}

/// A policy that cannot be built. Raised by [`PolicyBuilder::build`](crate::PolicyBuilder::build).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A program name is empty, too long, or uses characters other than `[A-Za-z0-9._+-]`.
    #[error("program name {name:?} is not a plain name")]
    BadProgramName {
        /// The offending name.
        name: String,
    },
    /// Two rules for one program name.
    #[error("program name {name:?} is declared twice")]
    DuplicateProgram {
        /// The offending name.
        name: String,
    },
    /// A program path is relative, or not normalised (`.`, `..`, `//`, trailing `/`).
    #[error("program path {path} must be absolute and normalised")]
    ProgramPathNotCanonical {
        /// The offending path.
        path: PathBuf,
    },
    /// A program path cannot be inspected.
    #[error("program {path} cannot be inspected")]
    ProgramMissing {
        /// The program path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A program path is not an executable regular file.
    #[error("program {path} is not an executable regular file")]
    ProgramNotExecutable {
        /// The program path.
        path: PathBuf,
    },
    /// A program is writable by group or others, or owned by someone other than root or us.
    #[error("program {path} could be replaced by another user (owner or mode too permissive)")]
    ProgramUnsafeOwnership {
        /// The program path.
        path: PathBuf,
    },
    /// A shell, interpreter or exec wrapper without an explicit `allow_interpreter()`.
    #[error(
        "program {path} is a shell, interpreter or exec wrapper ({kind}); name it with allow_interpreter() to run it"
    )]
    InterpreterNotAllowed {
        /// The program path.
        path: PathBuf,
        /// The basename it was recognised by.
        kind: String,
    },
    /// A sha256 pin that is not 64 hex digits.
    #[error("sha256 pin for {path} is not 64 hex digits")]
    BadSha256 {
        /// The program path.
        path: PathBuf,
    },
    /// A sha256 pin that does not match the file now.
    #[error("program {path} does not match its sha256 pin (found {actual})")]
    Sha256Mismatch {
        /// The program path.
        path: PathBuf,
        /// The digest of the file as it is.
        actual: String,
    },
    /// A flag declared twice or not starting with `-`.
    #[error("flag {flag:?} of program {program:?} must start with `-` and be declared once")]
    BadFlag {
        /// The program name.
        program: String,
        /// The flag.
        flag: String,
    },
    /// An operand root that cannot be opened as a directory.
    #[error("operand root {path} cannot be opened as a directory")]
    BadRoot {
        /// The root path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A dangerous environment variable named in the allowlist or set as a constant.
    #[error("environment variable {name} can never be allowed or set")]
    DangerousEnv {
        /// The variable name.
        name: String,
    },
    /// A constant environment value that fails its validator (e.g. a relative `PATH` entry).
    #[error("constant environment variable {name} is invalid: {reason}")]
    BadEnvConstant {
        /// The variable name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Limits that make no sense (zero wall time, zero output cap, ...).
    #[error("limit {name} is invalid: {reason}")]
    BadLimit {
        /// The limit.
        name: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A policy without any program.
    #[error("policy allows no program")]
    Empty,
}

/// Writing or opening the audit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log file could not be opened, locked, read or written.
    #[error("audit log {path} i/o failed")]
    Io {
        /// The log path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The existing log ends in something that is not a record written by this crate, so
    /// the chain cannot be continued. Run [`audit::verify`](crate::audit::verify) to see where.
    #[error("audit log {path} cannot be continued: its last line is not a valid record")]
    BadTail {
        /// The log path.
        path: PathBuf,
    },
}

/// [`audit::verify`](crate::audit::verify) could not read the log at all. (Tampering is not
/// an error of the verifier: it is reported in [`Verification`](crate::audit::Verification).)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The log could not be read.
    #[error("cannot read audit log {path}")]
    Io {
        /// The log path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}
