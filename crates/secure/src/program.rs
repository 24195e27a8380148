//! Program rules: which executable runs, and with which argument grammar.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::error::{Denial, PolicyError};
use crate::grammar::{Flag, Grammar, Layout, Value};

/// One allowlisted program: an absolute path, an optional sha256 pin, and the grammar its
/// arguments must follow.
///
/// ```no_run
/// use forkyard_secure::{Operand, ProgramRule, Value};
/// let iconv = ProgramRule::path("/usr/bin/iconv")
///     .flag_value("-f", Value::one_of(["LATIN1", "UTF-8", "UTF-16"]))
///     .flag_value("-t", Value::one_of(["LATIN1", "UTF-8", "UTF-16"]))
///     .flags(["-c"])
///     .operand(Operand::path_beneath("/srv/uploads"))
///     .max_args(8);
/// ```
///
/// A rule never searches `PATH`: the path must be absolute and normalised (no `.`, `..`,
/// `//` or trailing `/`), name an executable regular file that only root or this user can
/// replace, and not be a shell, interpreter or exec wrapper (`sh`, `bash`, `python3`,
/// `env`, `xargs`, `find`, `awk`, ...) unless [`allow_interpreter`](ProgramRule::allow_interpreter)
/// says so: those programs turn data into code, and no argument grammar can make that safe
/// in general.
#[derive(Debug, Clone)]
pub struct ProgramRule {
    pub(crate) path: PathBuf,
    pub(crate) sha256: Option<String>,
    pub(crate) grammar: Grammar,
    pub(crate) interpreter_ok: bool,
    flag_errors: Vec<String>,
}

impl ProgramRule {
    /// A rule for the executable at `path` (absolute; never searched for).
    pub fn path(path: impl Into<PathBuf>) -> ProgramRule {
        ProgramRule {
            path: path.into(),
            sha256: None,
            grammar: Grammar::default(),
            interpreter_ok: false,
            flag_errors: Vec::new(),
        }
    }

    /// Pins the executable's content: a request is refused if the file's sha256 differs, and
    /// the very descriptor that was hashed is the one executed (`/proc/self/fd/N`), so a
    /// swap of the file after the check does not matter.
    pub fn sha256(mut self, hex: impl Into<String>) -> ProgramRule {
        self.sha256 = Some(hex.into().to_ascii_lowercase());
        self
    }

    /// Allows flags that take no value (`-v`, `--verbose`).
    pub fn flags<I, S>(mut self, names: I) -> ProgramRule
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for name in names {
            self.add_flag(name.into(), None);
        }
        self
    }

    /// Allows one flag that takes a value, checked by `value`. The request may give it as
    /// `-f VALUE`, or `--flag=VALUE` / `--flag VALUE` for long flags; the program always
    /// receives flag and value as two separate elements.
    pub fn flag_value(mut self, name: impl Into<String>, value: impl Into<Value>) -> ProgramRule {
        self.add_flag(name.into(), Some(value.into()));
        self
    }

    fn add_flag(&mut self, name: String, value: Option<Value>) {
        let well_formed = name.len() >= 2
            && name.starts_with('-')
            && name != "--"
            && !name.contains('=')
            && name.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed || self.grammar.flags.iter().any(|f| f.name == name) {
            self.flag_errors.push(name);
            return;
        }
        self.grammar.flags.push(Flag { name, value });
    }

    /// Adds one positional operand (required, in order).
    pub fn operand(mut self, operand: impl Into<Value>) -> ProgramRule {
        self.grammar.positional.push(operand.into());
        self
    }

    /// Allows any number of further operands, each checked by `operand` (bounded by
    /// [`operand_count`](ProgramRule::operand_count) and [`max_args`](ProgramRule::max_args)).
    pub fn operands(mut self, operand: impl Into<Value>) -> ProgramRule {
        self.grammar.rest = Some(operand.into());
        self
    }

    /// Bounds the number of operands explicitly.
    pub fn operand_count(mut self, min: usize, max: usize) -> ProgramRule {
        self.grammar.operand_bounds = Some((min, max));
        self
    }

    /// The most arguments a request may give (default 64).
    pub fn max_args(mut self, max: usize) -> ProgramRule {
        self.grammar.max_args = max;
        self
    }

    /// The longest argument a request may give, in bytes (default 4096).
    pub fn max_arg_len(mut self, max: usize) -> ProgramRule {
        self.grammar.max_arg_len = max;
        self
    }

    /// How the validated argv is laid out (default: options, `--`, operands).
    pub fn layout(mut self, layout: Layout) -> ProgramRule {
        self.grammar.layout = layout;
        self
    }

    /// Allows this program even though it is a shell, interpreter or exec wrapper. The
    /// argument grammar still applies: allowing `python3` with no `-c` flag declared does
    /// not allow `python3 -c`.
    pub fn allow_interpreter(mut self) -> ProgramRule {
        self.interpreter_ok = true;
        self
    }

    pub(crate) fn compile(self, name: &str) -> Result<CompiledProgram, PolicyError> {
        if let Some(flag) = self.flag_errors.first() {
            return Err(PolicyError::BadFlag {
                program: name.to_owned(),
                flag: flag.clone(),
            });
        }
        check_canonical(&self.path)?;
        let missing = |source| PolicyError::ProgramMissing {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(missing)?;
        if !meta.is_file() || meta.mode() & 0o111 == 0 {
            return Err(PolicyError::ProgramNotExecutable {
                path: self.path.clone(),
            });
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != euid) {
            return Err(PolicyError::ProgramUnsafeOwnership {
                path: self.path.clone(),
            });
        }
        if !self.interpreter_ok {
            let target = std::fs::canonicalize(&self.path).map_err(missing)?;
            for candidate in [self.path.as_path(), target.as_path()] {
                if let Some(kind) = interpreter_kind(candidate) {
                    return Err(PolicyError::InterpreterNotAllowed {
                        path: self.path.clone(),
                        kind,
                    });
                }
            }
        }
        let pin = match &self.sha256 {
            None => None,
            Some(hex) => {
                let expected = parse_hex32(hex).ok_or(PolicyError::BadSha256 {
                    path: self.path.clone(),
                })?;
                let (fd, identity) = open_exe(&self.path).map_err(missing)?;
                let actual = hash_fd(&fd).map_err(missing)?;
                if actual != expected {
                    return Err(PolicyError::Sha256Mismatch {
                        path: self.path.clone(),
                        actual: to_hex(&actual),
                    });
                }
                Some(Pin {
                    expected,
                    verified: Mutex::new(Some(identity)),
                })
            }
        };
        Ok(CompiledProgram {
            name: name.to_owned(),
            path: self.path,
            grammar: self.grammar,
            pin,
            interpreter: self.interpreter_ok,
        })
    }
}

/// A program rule checked against the file system.
#[derive(Debug)]
pub(crate) struct CompiledProgram {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) grammar: Grammar,
    pub(crate) pin: Option<Pin>,
    pub(crate) interpreter: bool,
}

/// A sha256 pin and the identity of the file last verified against it.
#[derive(Debug)]
pub(crate) struct Pin {
    expected: [u8; 32],
    /// `(dev, ino, size, mtime, ctime)` of the file that last hashed correctly. Writing to a
    /// file changes its ctime, which no unprivileged call can set back, so an unchanged
    /// identity means unchanged content and the hash need not be recomputed per spawn.
    verified: Mutex<Option<Identity>>,
}

type Identity = (u64, u64, i64, i64, i64, i64, i64);

impl CompiledProgram {
    /// For a pinned program, opens the executable, checks its content and returns the
    /// descriptor to execute.
    pub(crate) fn verified_exe(&self) -> Result<Option<OwnedFd>, Denial> {
        let Some(pin) = &self.pin else {
            return Ok(None);
        };
        let unavailable = |source| Denial::ProgramUnavailable {
            path: self.path.clone(),
            source,
        };
        let (fd, identity) = open_exe(&self.path).map_err(unavailable)?;
        let mut verified = pin.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.as_ref() != Some(&identity) {
            let actual = hash_fd(&fd).map_err(unavailable)?;
            if actual != pin.expected {
                *verified = None;
                return Err(Denial::ProgramHashMismatch {
                    path: self.path.clone(),
                    expected: to_hex(&pin.expected),
                    actual: to_hex(&actual),
                });
            }
            *verified = Some(identity);
        }
        Ok(Some(fd))
    }

    pub(crate) fn describe(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "program {:?} path={:?} interpreter={} ",
            self.name, self.path, self.interpreter
        );
        if let Some(pin) = &self.pin {
            let _ = write!(out, "sha256={} ", to_hex(&pin.expected));
        }
        self.grammar.describe(out);
        out.push('\n');
    }
}

fn check_canonical(path: &Path) -> Result<(), PolicyError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let canonical = path.is_absolute()
        && !bytes.windows(2).any(|w| w == b"//")
        && (bytes.len() == 1 || !bytes.ends_with(b"/"))
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !bytes.split(|&b| b == b'/').any(|c| c == b"." || c == b"..");
    if canonical {
        Ok(())
    } else {
        Err(PolicyError::ProgramPathNotCanonical {
            path: path.to_owned(),
        })
    }
}

/// Opens the executable read-only (to hash it and later execute it by descriptor).
fn open_exe(path: &Path) -> std::io::Result<(OwnedFd, Identity)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let identity = (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
    );
    Ok((fd, identity))
}

fn hash_fd(fd: &OwnedFd) -> std::io::Result<[u8; 32]> {
    let dup = fd.try_clone()?;
    let mut file = std::fs::File::from(dup);
    // The duplicate shares the file offset; hash with pread-like semantics by rewinding.
    use std::io::Seek as _;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(hasher.finalize().into())
}

/// The sha256 of a file, as lowercase hex (handy for writing pins).
pub fn sha256_file(path: impl AsRef<Path>) -> std::io::Result<String> {
    let (fd, _) = open_exe(path.as_ref())?;
    Ok(to_hex(&hash_fd(&fd)?))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Basenames (after stripping a version suffix such as `3.11` or `-5.1`) of programs that
/// run code or other programs given to them as data: shells, language interpreters, exec
/// wrappers, and GTFOBins' usual suspects with built-in shell escapes.
const INTERPRETERS: &[&str] = &[
    // Shells and multi-call binaries that contain one.
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "pdksh",
    "csh",
    "tcsh",
    "fish",
    "rbash",
    "yash",
    "elvish",
    "nu",
    "xonsh",
    "busybox",
    "toybox",
    // Interpreters.
    "python",
    "pypy",
    "perl",
    "ruby",
    "irb",
    "node",
    "nodejs",
    "deno",
    "bun",
    "php",
    "lua",
    "luajit",
    "tclsh",
    "wish",
    "expect",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "jjs",
    "rscript",
    "julia",
    "guile",
    "sbcl",
    "ghci",
    "osascript",
    "pwsh",
    "gdb",
    "lldb",
    // Programs that execute their arguments.
    "env",
    "xargs",
    "find",
    "nice",
    "nohup",
    "timeout",
    "stdbuf",
    "setsid",
    "chroot",
    "unshare",
    "nsenter",
    "ionice",
    "taskset",
    "chrt",
    "flock",
    "watch",
    "script",
    "strace",
    "ltrace",
    "valgrind",
    "sudo",
    "su",
    "doas",
    "runuser",
    "pkexec",
    "ssh",
    "socat",
    "nc",
    "ncat",
    "netcat",
    "parallel",
    "make",
    "systemd-run",
    "capsh",
    "setpriv",
    "run-parts",
    "start-stop-daemon",
    // Editors, pagers and stream editors with shell escapes.
    "sed",
    "ed",
    "ex",
    "vi",
    "vim",
    "nvim",
    "view",
    "rvim",
    "emacs",
    "nano",
    "less",
    "more",
    "most",
    "man",
];

/// Returns the interpreter name `path` was recognised as, if any.
pub(crate) fn interpreter_kind(path: &Path) -> Option<String> {
    let base = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let stripped = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    INTERPRETERS
        .iter()
        .find(|name| **name == base || **name == stripped)
        .map(|name| (*name).to_owned())
}

/// Whether a program name is a plain name we accept as a policy key.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// The program name of a request as it may appear in an error message.
pub(crate) fn display_name(name: &str) -> String {
    crate::env::display(OsStr::new(name))
}
