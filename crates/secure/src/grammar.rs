//! Argument grammars: which flags a program accepts, which values they take, which operands
//! follow, and how the validated argv is laid out.
//!
//! The parser here is deliberately stricter than the tools it guards. It recognises exactly
//! the flags a rule declares, spelled exactly as declared (`-f VALUE`, or `--long=VALUE` for
//! long flags); anything else that starts with `-` is refused rather than guessed at. The
//! output is re-laid out canonically (flag and value as separate elements, `--` before
//! operands by default), so what the tool parses is what we validated.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Denial;
use crate::paths::{self, PathAccess, Root};

/// A validator for a flag value or an operand.
///
/// Text values must be UTF-8 and may not start with `-` (a value that looks like an option
/// is one parser differential away from being one). Path values are resolved beneath a root
/// with `openat2(RESOLVE_BENEATH)`; see [`PathRule`].
#[derive(Debug, Clone)]
pub struct Value {
    pub(crate) kind: ValueKind,
    pub(crate) max_len: Option<usize>,
}

/// Operands use the same validators as flag values: `Operand::path_beneath(..)` reads well
/// at the call site.
pub type Operand = Value;

#[derive(Debug, Clone)]
pub(crate) enum ValueKind {
    Text,
    OneOf(Vec<String>),
    Charset(String),
    Integer { min: i64, max: i64 },
    Path(PathRule),
}

impl Value {
    /// Any UTF-8 text that does not start with `-`. Shell metacharacters are fine: there is
    /// no shell, so `; id` or `$(id)` reach the program as one literal argument.
    pub fn text() -> Value {
        Value {
            kind: ValueKind::Text,
            max_len: None,
        }
    }

    /// One of a fixed set of strings, compared exactly.
    pub fn one_of<I, S>(values: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Value {
            kind: ValueKind::OneOf(values.into_iter().map(Into::into).collect()),
            max_len: None,
        }
    }

    /// Non-empty text made only of the given characters (for example `"0123456789x%"` for an
    /// image geometry). A leading `-` is refused even if `-` is in the set.
    pub fn charset(allowed: &str) -> Value {
        Value {
            kind: ValueKind::Charset(allowed.to_owned()),
            max_len: None,
        }
    }

    /// A decimal integer within `min..=max` (a leading `-` is allowed here only for
    /// negative numbers, and only if `min` is negative).
    pub fn integer(min: i64, max: i64) -> Value {
        Value {
            kind: ValueKind::Integer { min, max },
            max_len: Some(24),
        }
    }

    /// A path resolved beneath `root`; see [`PathRule`] for the access mode and how the
    /// program receives it.
    pub fn path_beneath(root: impl Into<PathBuf>) -> PathRule {
        PathRule {
            root_path: root.into(),
            access: PathAccess::Read,
            follow_symlinks: true,
            pass_as: PassAs::Fd,
            root: None,
        }
    }

    /// Caps the value's length in bytes (on top of the rule's `max_arg_len`).
    pub fn max_len(mut self, max: usize) -> Value {
        self.max_len = Some(max);
        self
    }

    pub(crate) fn path_rule(&self) -> Option<&PathRule> {
        match &self.kind {
            ValueKind::Path(rule) => Some(rule),
            _ => None,
        }
    }

    pub(crate) fn path_rule_mut(&mut self) -> Option<&mut PathRule> {
        match &mut self.kind {
            ValueKind::Path(rule) => Some(rule),
            _ => None,
        }
    }

    /// Checks `arg` (the request's argument number `index`) and renders it for the argv.
    pub(crate) fn check(
        &self,
        index: usize,
        arg: &OsStr,
        out: &mut Rendered,
    ) -> Result<(), Denial> {
        if let Some(max) = self.max_len
            && arg.len() > max
        {
            return Err(Denial::ArgTooLong {
                index,
                len: arg.len(),
                max,
            });
        }
        if let ValueKind::Path(rule) = &self.kind {
            return rule.check(index, arg, out);
        }
        let Some(text) = arg.to_str() else {
            return Err(invalid(index, "not valid UTF-8"));
        };
        let leading_dash_ok = matches!(self.kind, ValueKind::OneOf(_))
            || matches!(self.kind, ValueKind::Integer { min, .. } if min < 0);
        if text.starts_with('-') && !leading_dash_ok {
            return Err(Denial::OptionLikeOperand { index });
        }
        match &self.kind {
            ValueKind::Text => {}
            ValueKind::OneOf(values) => {
                if !values.iter().any(|v| v == text) {
                    return Err(invalid(index, "not one of the allowed values"));
                }
            }
            ValueKind::Charset(allowed) => {
                if text.is_empty() || !text.chars().all(|c| allowed.contains(c)) {
                    return Err(invalid(
                        index,
                        "contains characters outside the allowed set",
                    ));
                }
            }
            ValueKind::Integer { min, max } => {
                let digits = text.strip_prefix('-').unwrap_or(text);
                let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    text.parse::<i64>().ok()
                } else {
                    None
                };
                match parsed {
                    Some(n) if (*min..=*max).contains(&n) => {}
                    _ => return Err(invalid(index, "not an integer in the allowed range")),
                }
            }
            ValueKind::Path(_) => unreachable!("handled above"),
        }
        out.argv.push(arg.to_owned());
        Ok(())
    }

    pub(crate) fn describe(&self, out: &mut String) {
        use std::fmt::Write as _;
        match &self.kind {
            ValueKind::Text => out.push_str("text"),
            ValueKind::OneOf(v) => {
                let _ = write!(out, "one-of{v:?}");
            }
            ValueKind::Charset(c) => {
                let _ = write!(out, "charset{c:?}");
            }
            ValueKind::Integer { min, max } => {
                let _ = write!(out, "int[{min},{max}]");
            }
            ValueKind::Path(p) => {
                let _ = write!(
                    out,
                    "path[{:?},{:?},symlinks={},{:?}]",
                    p.root_path, p.access, p.follow_symlinks, p.pass_as
                );
            }
        }
        if let Some(m) = self.max_len {
            let _ = write!(out, "<={m}");
        }
    }
}

fn invalid(index: usize, reason: &str) -> Denial {
    Denial::InvalidValue {
        index,
        reason: reason.to_owned(),
    }
}

/// How a path operand reaches the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PassAs {
    /// The file we opened (beneath the root, with `openat2`) is handed to the child as an
    /// inherited descriptor, and the argv names it `/proc/self/fd/N`. The program opens
    /// exactly the file we checked: no check-then-use race. The default.
    Fd,
    /// The argv carries the canonical absolute path of the file we opened (read back from
    /// the descriptor, so symlinks and `..` are already resolved). For tools that need a
    /// real file name (to pick a format from the extension, say). The program re-resolves
    /// the name, so a racing rename inside the root could swap the file; the Landlock layer
    /// keeps any such swap inside the allowed roots.
    Path,
}

/// A path operand resolved beneath a root directory.
///
/// The request's text is resolved by the kernel relative to a directory descriptor opened
/// when the policy was built, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`:
/// `..` that climbs out, absolute paths, symlinks pointing out and `/proc/self/root` tricks
/// all fail with `EXDEV`/`ELOOP` inside the kernel's own path walk, so there is nothing to
/// race. Only regular files are accepted (a FIFO planted in an upload directory would block
/// the open; it is opened non-blocking and refused).
#[derive(Debug, Clone)]
pub struct PathRule {
    pub(crate) root_path: PathBuf,
    pub(crate) access: PathAccess,
    pub(crate) follow_symlinks: bool,
    pub(crate) pass_as: PassAs,
    pub(crate) root: Option<Arc<Root>>,
}

impl PathRule {
    /// The file must exist and is opened read-only (the default).
    pub fn read(mut self) -> PathRule {
        self.access = PathAccess::Read;
        self
    }

    /// The file is opened for writing and created if missing. It is not truncated here: the
    /// program truncates its output when it opens it.
    pub fn write(mut self) -> PathRule {
        self.access = PathAccess::Write;
        self
    }

    /// The file must not exist yet; it is created (`O_EXCL`) for writing.
    pub fn create_new(mut self) -> PathRule {
        self.access = PathAccess::CreateNew;
        self
    }

    /// Refuses paths that cross any symlink, even one that stays beneath the root
    /// (`RESOLVE_NO_SYMLINKS`).
    pub fn no_symlinks(mut self) -> PathRule {
        self.follow_symlinks = false;
        self
    }

    /// Chooses how the program receives the file; [`PassAs::Fd`] by default.
    pub fn pass_as(mut self, pass_as: PassAs) -> PathRule {
        self.pass_as = pass_as;
        self
    }

    fn check(&self, index: usize, arg: &OsStr, out: &mut Rendered) -> Result<(), Denial> {
        if arg.as_bytes().first() == Some(&b'-') {
            return Err(Denial::OptionLikeOperand { index });
        }
        let root = self
            .root
            .as_ref()
            .expect("roots are opened when the policy is built");
        let opened = paths::open_beneath(root, arg, self.access, self.follow_symlinks, index)?;
        match self.pass_as {
            PassAs::Fd => {
                let target = out.next_fd;
                out.next_fd += 1;
                let mut name = OsString::from("/proc/self/fd/");
                name.push(target.to_string());
                out.argv.push(name);
                out.fds.push((opened.fd, target));
            }
            PassAs::Path => {
                out.argv.push(opened.canonical.clone().into_os_string());
            }
        }
        if opened.created {
            out.created.push((Arc::clone(root), arg.to_owned()));
        }
        out.paths.push(OpenedSummary {
            index,
            canonical: opened.canonical,
            access: self.access,
        });
        Ok(())
    }
}

impl From<PathRule> for Value {
    fn from(rule: PathRule) -> Value {
        Value {
            kind: ValueKind::Path(rule),
            max_len: None,
        }
    }
}

/// How the validated argv is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Options (each flag followed by its value as a separate element), then `--`, then
    /// operands. For tools whose parser honours `--` (getopt, clap, most GNU tools).
    #[default]
    DoubleDash,
    /// Options, then operands, with no `--`: for tools that would take `--` as an operand.
    /// Safe because operands starting with `-` are refused and path operands are rendered
    /// as absolute paths.
    OptionsFirst,
    /// Flags and operands in the order the request gave them, for tools where position
    /// matters (ImageMagick's `convert in.png -resize 50% out.png`).
    AsGiven,
}

/// Where the grammar's output goes: the argv elements after `argv[0]`, and the descriptors
/// to hand to the child (with the number each must have there).
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) argv: Vec<OsString>,
    pub(crate) fds: Vec<(OwnedFd, i32)>,
    pub(crate) paths: Vec<OpenedSummary>,
    /// Files created by this request (root and the request's relative name), removed again
    /// if the request is refused after all.
    pub(crate) created: Vec<(Arc<Root>, OsString)>,
    pub(crate) next_fd: i32,
}

impl Rendered {
    pub(crate) fn new(first_fd: i32) -> Rendered {
        Rendered {
            argv: Vec::new(),
            fds: Vec::new(),
            paths: Vec::new(),
            created: Vec::new(),
            next_fd: first_fd,
        }
    }

    /// Removes the files this request created (best effort: a file that cannot be removed
    /// is empty and inside its root).
    pub(crate) fn undo_created(self) {
        for (root, name) in &self.created {
            paths::remove_created(root, name);
        }
    }
}

/// What was opened for one path operand, for the audit record.
#[derive(Debug, Clone)]
pub(crate) struct OpenedSummary {
    pub(crate) index: usize,
    pub(crate) canonical: PathBuf,
    pub(crate) access: PathAccess,
}

/// One declared flag.
#[derive(Debug, Clone)]
pub(crate) struct Flag {
    pub(crate) name: String,
    pub(crate) value: Option<Value>,
}

/// The argument part of a [`ProgramRule`](crate::ProgramRule).
#[derive(Debug, Clone)]
pub(crate) struct Grammar {
    pub(crate) flags: Vec<Flag>,
    pub(crate) positional: Vec<Value>,
    pub(crate) rest: Option<Value>,
    pub(crate) operand_bounds: Option<(usize, usize)>,
    pub(crate) max_args: usize,
    pub(crate) max_arg_len: usize,
    pub(crate) layout: Layout,
}

impl Default for Grammar {
    fn default() -> Self {
        Grammar {
            flags: Vec::new(),
            positional: Vec::new(),
            rest: None,
            operand_bounds: None,
            max_args: 64,
            max_arg_len: 4096,
            layout: Layout::DoubleDash,
        }
    }
}

/// One token of the request after the structural pass.
enum Item<'a> {
    Option {
        flag: &'a Flag,
        value: Option<(usize, &'a OsStr)>,
    },
    Operand {
        index: usize,
        k: usize,
    },
}

impl Grammar {
    /// The operand count bounds, explicit or implied by the positional/rest declarations.
    pub(crate) fn bounds(&self) -> (usize, usize) {
        if let Some(bounds) = self.operand_bounds {
            return bounds;
        }
        let n = self.positional.len();
        match self.rest {
            Some(_) => (n, usize::MAX),
            None => (n, n),
        }
    }

    fn operand_rule(&self, k: usize) -> Option<&Value> {
        self.positional.get(k).or(self.rest.as_ref())
    }

    fn flag(&self, name: &[u8]) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name.as_bytes() == name)
    }

    /// Parses the request's arguments into `out`.
    ///
    /// Three passes, so that a refused request has no side effect: (1) counts, NUL bytes,
    /// lengths and the structure (which token is a flag, a flag's value, an operand);
    /// (2) every validator that does not touch the file system; (3) path operands, reads
    /// before writes. If pass 3 fails, files it created are removed again.
    pub(crate) fn parse(&self, args: &[OsString], out: &mut Rendered) -> Result<(), Denial> {
        if args.len() > self.max_args {
            return Err(Denial::TooManyArgs {
                max: self.max_args,
                got: args.len(),
            });
        }
        for (index, arg) in args.iter().enumerate() {
            if arg.as_bytes().contains(&0) {
                return Err(Denial::NulByte { index });
            }
            if arg.len() > self.max_arg_len {
                return Err(Denial::ArgTooLong {
                    index,
                    len: arg.len(),
                    max: self.max_arg_len,
                });
            }
        }

        // Pass 1: structure.
        let mut items = Vec::with_capacity(args.len());
        let mut operands_only = false;
        let mut n_operands = 0;
        let mut i = 0;
        while i < args.len() {
            let bytes = args[i].as_bytes();
            if !operands_only && bytes == b"--" {
                operands_only = true;
            } else if !operands_only && bytes.first() == Some(&b'-') && bytes.len() > 1 {
                let (name, attached) = split_long(bytes);
                let flag = self.flag(name).ok_or(Denial::UnknownFlag { index: i })?;
                let value = match (&flag.value, attached) {
                    (None, Some(_)) => return Err(Denial::UnexpectedValue { index: i }),
                    (None, None) => None,
                    (Some(_), Some(attached)) => Some((i, OsStr::from_bytes(attached))),
                    (Some(_), None) => {
                        let v = args.get(i + 1).ok_or(Denial::MissingValue { index: i })?;
                        i += 1;
                        Some((i, v.as_os_str()))
                    }
                };
                items.push(Item::Option { flag, value });
            } else {
                items.push(Item::Operand {
                    index: i,
                    k: n_operands,
                });
                n_operands += 1;
            }
            i += 1;
        }
        let (min, max) = self.bounds();
        if n_operands < min || n_operands > max {
            return Err(Denial::OperandCount {
                min,
                max,
                got: n_operands,
            });
        }

        // Passes 2 and 3: validators, file system last.
        let mut rendered: Vec<Option<(bool, Rendered)>> = (0..items.len()).map(|_| None).collect();
        for pass in [Pass::Text, Pass::Read, Pass::Write] {
            for (slot, item) in items.iter().enumerate() {
                let (is_option, check) = match item {
                    Item::Option { flag, value, .. } => (
                        true,
                        value.map(|(vi, v)| (vi, v, flag.value.as_ref().expect("has value"))),
                    ),
                    Item::Operand { index, k } => {
                        let rule = self.operand_rule(*k).expect("count checked");
                        (false, Some((*index, args[*index].as_os_str(), rule)))
                    }
                };
                let wanted = match check.map(|(_, _, rule)| rule.path_rule()) {
                    None | Some(None) => Pass::Text,
                    Some(Some(p)) if p.access == PathAccess::Read => Pass::Read,
                    Some(Some(_)) => Pass::Write,
                };
                if wanted != pass {
                    continue;
                }
                let mut scratch = Rendered::new(out.next_fd);
                if let Item::Option { flag, .. } = item {
                    scratch.argv.push(OsString::from(&flag.name));
                }
                if let Some((value_index, value, rule)) = check
                    && let Err(denial) = rule.check(value_index, value, &mut scratch)
                {
                    // Nothing of a refused request survives: descriptors close on drop, and
                    // files this request created are removed again.
                    let done = rendered.into_iter().flatten().map(|(_, r)| r);
                    for piece in done.chain(std::iter::once(scratch)) {
                        piece.undo_created();
                    }
                    return Err(denial);
                }
                out.next_fd = scratch.next_fd;
                rendered[slot] = Some((is_option, scratch));
            }
        }

        let mut operands = Vec::new();
        for (is_option, piece) in rendered.into_iter().flatten() {
            let Rendered {
                argv,
                fds,
                paths,
                created,
                ..
            } = piece;
            out.fds.extend(fds);
            out.paths.extend(paths);
            out.created.extend(created);
            match (self.layout, is_option) {
                (Layout::AsGiven, _) | (_, true) => out.argv.extend(argv),
                (_, false) => operands.extend(argv),
            }
        }
        if self.layout == Layout::DoubleDash && !operands.is_empty() {
            out.argv.push(OsString::from("--"));
        }
        out.argv.extend(operands);
        Ok(())
    }

    pub(crate) fn describe(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "max_args={};max_arg_len={};layout={:?};",
            self.max_args, self.max_arg_len, self.layout
        );
        for f in &self.flags {
            let _ = write!(out, "flag {:?}=", f.name);
            match &f.value {
                Some(v) => v.describe(out),
                None => out.push_str("none"),
            }
            out.push(';');
        }
        for p in &self.positional {
            out.push_str("operand ");
            p.describe(out);
            out.push(';');
        }
        if let Some(r) = &self.rest {
            out.push_str("operands ");
            r.describe(out);
            out.push(';');
        }
        let (min, max) = self.bounds();
        let _ = write!(out, "count[{min},{max}]");
    }
}

/// Splits `--name=value` into its parts; short flags and bare long flags have no
/// attached value.
fn split_long(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    if bytes.starts_with(b"--")
        && let Some(eq) = bytes.iter().position(|&b| b == b'=')
    {
        return (&bytes[..eq], Some(&bytes[eq + 1..]));
    }
    (bytes, None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Text,
    Read,
    Write,
}
