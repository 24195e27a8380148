//! The child's environment: empty, then an allowlist with per-variable validation.
//!
//! Environment variables are code. `LD_PRELOAD` loads a library into the program,
//! `BASH_ENV` runs a script in every non-interactive bash, `BASH_FUNC_x%%=() { ...; }` defines
//! a function (Shellshock), `GCONV_PATH` makes glibc's `iconv` load a module, `PYTHONPATH`,
//! `NODE_OPTIONS=--require`, `PERL5OPT=-M...` do the same for interpreters, and `IFS`
//! re-splits shell words. So the environment starts empty; only allowlisted names pass,
//! each value is validated, and a fixed list of hook variables is refused even if a policy
//! tries to allow or set it. Blocklists age; the allowlist is the real defence and the
//! blocklist is the seat belt.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Denial, PolicyError};
use crate::grammar::{Rendered, Value};

/// Names refused whatever the policy says: dynamic loader, libc, shell and interpreter hooks
/// (from glibc's `unsecvars.h`, sudo's `initial_badenv_table`, and the interpreters'
/// documented startup hooks).
const DANGEROUS_NAMES: &[&str] = &[
    // Shells.
    "IFS",
    "CDPATH",
    "ENV",
    "BASH_ENV",
    "BASHOPTS",
    "SHELLOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "GLOBIGNORE",
    "FPATH",
    "NULLCMD",
    "READNULLCMD",
    "ZDOTDIR",
    "TMPPREFIX",
    // glibc (unsecvars.h) and friends.
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
    "PATH_LOCALE",
    "TERMINFO",
    "TERMINFO_DIRS",
    "TERMPATH",
    "TERMCAP",
    "SHLIB_PATH",
    "LIBPATH",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "SSLKEYLOGFILE",
    // Interpreters and runtimes.
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    // Programs that run other programs.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_ASKPASS",
    "GIT_PROXY_COMMAND",
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_TEMPLATE_DIR",
    "MAGICK_CONFIGURE_PATH",
    "MAGICK_CODER_MODULE_PATH",
];

/// Name prefixes refused whatever the policy says.
const DANGEROUS_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "_RLD",
    "LDR_",
    "BASH_FUNC_",
    "GLIBC_",
    "MALLOC_",
    "GCONV_",
    "KRB5",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "LESS",
    "GIT_CONFIG",
];

/// Whether `name` is one of the always-refused hook variables.
pub(crate) fn is_dangerous(name: &[u8]) -> bool {
    DANGEROUS_NAMES.iter().any(|d| d.as_bytes() == name)
        || DANGEROUS_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
}

/// Longest value accepted for any variable.
const MAX_VALUE_LEN: usize = 4096;

/// The environment rule of a policy.
///
/// ```
/// use forkyard_secure::{EnvRule, Value};
/// let env = EnvRule::allow(["LANG", "TZ"])            // built-in validators for these
///     .allow_with("OUTPUT_QUALITY", Value::integer(1, 100))
///     .set("PATH", "/usr/bin:/bin");                  // a constant the request cannot change
/// ```
///
/// Values for allowlisted names come from the request (see
/// [`Request::env`](crate::Request::env)) or, when the request does not give one and
/// [`inherit`](EnvRule::inherit) is on (the default), from this process's environment. Both
/// are validated. If no `PATH` constant is set, `PATH=/usr/bin:/bin` is.
#[derive(Debug, Clone)]
pub struct EnvRule {
    allowed: Vec<(String, Option<Value>)>,
    constants: Vec<(String, String)>,
    inherit: bool,
}

impl Default for EnvRule {
    fn default() -> Self {
        EnvRule {
            allowed: Vec::new(),
            constants: Vec::new(),
            inherit: true,
        }
    }
}

impl EnvRule {
    /// An empty environment (only the constant `PATH`).
    pub fn none() -> EnvRule {
        EnvRule::default()
    }

    /// Allows these names, each with its built-in validator: locale names for `LANG`,
    /// `LANGUAGE` and `LC_*` (no `/`, which glibc would read as a path), a zone name for `TZ`
    /// (no absolute path, no `..`), a terminal name for `TERM`, and printable text of at most
    /// 4096 bytes for anything else.
    pub fn allow<I, S>(names: I) -> EnvRule
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EnvRule::default().and_allow(names)
    }

    /// Adds more allowed names (see [`allow`](EnvRule::allow)).
    pub fn and_allow<I, S>(mut self, names: I) -> EnvRule
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed
            .extend(names.into_iter().map(|n| (n.into(), None)));
        self
    }

    /// Allows `name` with a custom validator.
    pub fn allow_with(mut self, name: impl Into<String>, value: Value) -> EnvRule {
        self.allowed.push((name.into(), Some(value)));
        self
    }

    /// Sets a constant. Requests cannot override it.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> EnvRule {
        self.constants.push((name.into(), value.into()));
        self
    }

    /// Whether allowlisted names missing from a request are taken from this process's
    /// environment (default: yes).
    pub fn inherit(mut self, inherit: bool) -> EnvRule {
        self.inherit = inherit;
        self
    }

    /// Checks the rule itself (dangerous names, constant values); used by the policy builder.
    pub(crate) fn compile(mut self) -> Result<EnvRule, PolicyError> {
        for (name, value) in &self.allowed {
            check_name(name)?;
            if value.as_ref().is_some_and(|v| v.path_rule().is_some()) {
                return Err(PolicyError::BadEnvConstant {
                    name: name.clone(),
                    reason: "a path validator cannot be used for an environment variable".into(),
                });
            }
        }
        if !self.constants.iter().any(|(n, _)| n == "PATH") {
            self.constants.push(("PATH".into(), "/usr/bin:/bin".into()));
        }
        for (name, value) in &self.constants {
            check_name(name)?;
            let reason = if name == "PATH" {
                check_search_path(value)
            } else {
                check_generic(value.as_bytes())
                    .or_else(|| self.builtin_check(name, value.as_bytes()))
            };
            if let Some(reason) = reason {
                return Err(PolicyError::BadEnvConstant {
                    name: name.clone(),
                    reason,
                });
            }
        }
        Ok(self)
    }

    fn builtin_check(&self, name: &str, value: &[u8]) -> Option<String> {
        builtin_validator(name).and_then(|check| check(value))
    }

    /// Builds the environment for one request. `request` is what the caller asked for.
    pub(crate) fn build(
        &self,
        request: &[(OsString, OsString)],
    ) -> Result<Vec<(OsString, OsString)>, Denial> {
        let mut out: Vec<(OsString, OsString)> = Vec::new();
        for (name, value) in request {
            let bytes = name.as_bytes();
            if is_dangerous(bytes) {
                return Err(Denial::DangerousEnv {
                    name: display(name),
                });
            }
            if value_is_function(value.as_bytes()) {
                return Err(Denial::EnvFunction {
                    name: display(name),
                });
            }
            let Some((_, validator)) = self.allowed.iter().find(|(n, _)| n.as_bytes() == bytes)
            else {
                return Err(Denial::EnvNotAllowed {
                    name: display(name),
                });
            };
            if self.constants.iter().any(|(n, _)| n.as_bytes() == bytes) {
                return Err(Denial::EnvNotAllowed {
                    name: display(name),
                });
            }
            self.validate(name, value, validator.as_ref())?;
            out.retain(|(n, _)| n != name);
            out.push((name.clone(), value.clone()));
        }
        if self.inherit {
            for (name, validator) in &self.allowed {
                if out.iter().any(|(n, _)| n.as_bytes() == name.as_bytes())
                    || self.constants.iter().any(|(n, _)| n == name)
                {
                    continue;
                }
                if let Some(value) = std::env::var_os(name) {
                    let name = OsString::from(name);
                    self.validate(&name, &value, validator.as_ref())?;
                    out.push((name, value));
                }
            }
        }
        for (name, value) in &self.constants {
            out.push((name.into(), value.into()));
        }
        out.sort();
        Ok(out)
    }

    fn validate(
        &self,
        name: &OsStr,
        value: &OsStr,
        validator: Option<&Value>,
    ) -> Result<(), Denial> {
        let invalid = |reason: String| Denial::EnvInvalid {
            name: display(name),
            reason,
        };
        let bytes = value.as_bytes();
        if value_is_function(bytes) {
            return Err(Denial::EnvFunction {
                name: display(name),
            });
        }
        if let Some(reason) = check_generic(bytes) {
            return Err(invalid(reason));
        }
        match validator {
            Some(value_rule) => {
                let mut scratch = Rendered::new(0);
                value_rule
                    .check(0, value, &mut scratch)
                    .map_err(|denial| match denial {
                        Denial::InvalidValue { reason, .. } => invalid(reason),
                        Denial::OptionLikeOperand { .. } => invalid("starts with `-`".into()),
                        Denial::ArgTooLong { max, .. } => {
                            invalid(format!("longer than {max} bytes"))
                        }
                        other => invalid(other.to_string()),
                    })
            }
            None => match builtin_validator(&name.to_string_lossy()).and_then(|check| check(bytes))
            {
                Some(reason) => Err(invalid(reason)),
                None => Ok(()),
            },
        }
    }

    pub(crate) fn describe(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "inherit={};", self.inherit);
        for (name, value) in &self.allowed {
            let _ = write!(out, "allow {name}=");
            match value {
                Some(v) => v.describe(out),
                None => out.push_str("builtin"),
            }
            out.push(';');
        }
        for (name, value) in &self.constants {
            let _ = write!(out, "set {name}={value:?};");
        }
    }
}

fn check_name(name: &str) -> Result<(), PolicyError> {
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if is_dangerous(name.as_bytes()) {
        return Err(PolicyError::DangerousEnv {
            name: name.to_owned(),
        });
    }
    if !valid {
        return Err(PolicyError::BadEnvConstant {
            name: name.to_owned(),
            reason: "a variable name is letters, digits and `_`, not starting with a digit".into(),
        });
    }
    Ok(())
}

/// Bash imports any variable whose value starts with `() {` as a function definition
/// (Shellshock, CVE-2014-6271); refuse such values under every name.
fn value_is_function(value: &[u8]) -> bool {
    let trimmed = value.trim_ascii_start();
    trimmed.starts_with(b"()")
}

/// Checks every value must pass: length and no control characters.
fn check_generic(value: &[u8]) -> Option<String> {
    if value.len() > MAX_VALUE_LEN {
        return Some(format!("longer than {MAX_VALUE_LEN} bytes"));
    }
    if value.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("contains control characters".into());
    }
    None
}

type Check = fn(&[u8]) -> Option<String>;

fn builtin_validator(name: &str) -> Option<Check> {
    match name {
        "LANG" | "LANGUAGE" => Some(check_locale),
        n if n.starts_with("LC_") => Some(check_locale),
        "TZ" => Some(check_tz),
        "TERM" => Some(check_term),
        "TMPDIR" | "HOME" => Some(check_absolute_dir),
        _ => None,
    }
}

fn check_locale(value: &[u8]) -> Option<String> {
    let ok = value.len() <= 64
        && value.first() != Some(&b'.')
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_.@-:".contains(&b));
    (!ok).then(|| "not a locale name (letters, digits, `_.@-:`, no `/`)".into())
}

fn check_tz(value: &[u8]) -> Option<String> {
    let body = value.strip_prefix(b":").unwrap_or(value);
    let ok = value.len() <= 64
        && body.first() != Some(&b'/')
        && !body.windows(2).any(|w| w == b"..")
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_+-:/,.<>".contains(&b));
    (!ok).then(|| "not a time zone name (no absolute path, no `..`)".into())
}

fn check_term(value: &[u8]) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    (!ok).then(|| "not a terminal name".into())
}

fn check_absolute_dir(value: &[u8]) -> Option<String> {
    let ok = value.first() == Some(&b'/')
        && !value.split(|&b| b == b'/').any(|c| c == b".." || c == b".");
    (!ok).then(|| "not an absolute, normalised path".into())
}

/// `PATH` entries must be absolute and normalised: an empty entry or `.` means "the current
/// directory", which is wherever the attacker's upload landed.
fn check_search_path(value: &str) -> Option<String> {
    for entry in value.split(':') {
        if check_absolute_dir(entry.as_bytes()).is_some() {
            return Some(format!(
                "entry {entry:?} is not an absolute, normalised directory"
            ));
        }
    }
    None
}

/// A name as it may appear in an error message: lossy, escaped, at most 64 characters.
pub(crate) fn display(name: &OsStr) -> String {
    let lossy = name.to_string_lossy();
    let mut out: String = lossy
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if lossy.chars().count() > 64 {
        out.push_str("...");
    }
    out
}
