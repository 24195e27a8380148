//! Path operands resolved beneath a root with `openat2(2)`.
//!
//! # Design note: why `openat2` and a kept descriptor
//!
//! The classic check (`realpath`, then "does it start with the root?", then `open`) has two
//! holes. The check and the open resolve the name twice, so a symlink swapped in between wins
//! (CWE-367); and string prefix checks miss `/srv/up` vs `/srv/uploads-evil`. `openat2` with
//! `RESOLVE_BENEATH` makes the kernel refuse, *during its own single path walk*, any step that
//! leaves the directory the walk started from: `..` past the root, an absolute path, an
//! absolute symlink, a symlink climbing out. `RESOLVE_NO_MAGICLINKS` refuses `/proc/self/fd/N`
//! and `/proc/self/root` style jumps. The descriptor we get back *is* the file we checked; we
//! hand that descriptor to the child instead of the name, so there is no second resolution.
//!
//! If a rename races the walk, the kernel returns `EAGAIN` rather than guess; we retry a few
//! times and then refuse.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Denial, PolicyError};

/// How a path operand is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathAccess {
    /// Must exist; read-only.
    Read,
    /// Opened for writing, created if missing (not truncated: the program truncates its
    /// output when it opens it, as it would any output file).
    Write,
    /// Must not exist; created with `O_EXCL`.
    CreateNew,
}

/// A root directory, opened once when the policy is built.
#[derive(Debug)]
pub(crate) struct Root {
    /// Canonical absolute path (for Landlock rules, display and [`PassAs::Path`](crate::PassAs)).
    pub(crate) path: PathBuf,
    /// `O_PATH | O_DIRECTORY` descriptor every resolution starts from.
    pub(crate) fd: OwnedFd,
}

impl Root {
    pub(crate) fn open(path: &Path) -> Result<Root, PolicyError> {
        let bad = |source| PolicyError::BadRoot {
            path: path.to_owned(),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(bad)?;
        let fd = rustix::fs::open(
            &canonical,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| bad(e.into()))?;
        Ok(Root {
            path: canonical,
            fd,
        })
    }
}

/// A file opened beneath a root.
#[derive(Debug)]
pub(crate) struct OpenedPath {
    pub(crate) fd: OwnedFd,
    /// Where the file really is (read back from the descriptor).
    pub(crate) canonical: PathBuf,
    /// Whether this open created the file.
    pub(crate) created: bool,
}

const EAGAIN_RETRIES: usize = 8;

/// Opens `name` beneath `root`. `index` is the request argument index, for the denial.
pub(crate) fn open_beneath(
    root: &Root,
    name: &OsStr,
    access: PathAccess,
    follow_symlinks: bool,
    index: usize,
) -> Result<OpenedPath, Denial> {
    let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    if !follow_symlinks {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    // Non-blocking so that a FIFO planted beneath the root cannot hang the open; cleared
    // again below once we know it is a regular file.
    let base = OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let (fd, created) = match access {
        PathAccess::Read => (
            openat2_retry(root, name, base | OFlags::RDONLY, resolve, index)?,
            false,
        ),
        PathAccess::CreateNew => {
            let flags = base | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
            (openat2_retry(root, name, flags, resolve, index)?, true)
        }
        PathAccess::Write => {
            // Try to create first so we know whether a refusal later must remove the file.
            let create = base | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
            match openat2_retry(root, name, create, resolve, index) {
                Ok(fd) => (fd, true),
                Err(Denial::PathExists { .. }) => (
                    openat2_retry(root, name, base | OFlags::WRONLY, resolve, index)?,
                    false,
                ),
                Err(other) => return Err(other),
            }
        }
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Denial::PathOpen {
        index,
        source: e.into(),
    })?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Denial::PathNotRegular { index });
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| Denial::PathOpen {
        index,
        source: e.into(),
    })?;
    let canonical = std::fs::read_link(format!("/proc/self/fd/{}", raw(&fd)))
        .map_err(|source| Denial::PathOpen { index, source })?;
    // Defence in depth: the kernel already guaranteed this, but a root that was moved
    // after the policy was built would show up here.
    if !canonical.starts_with(&root.path) {
        if created {
            remove_created(root, name);
        }
        return Err(Denial::PathEscapes { index });
    }
    Ok(OpenedPath {
        fd,
        canonical,
        created,
    })
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn openat2_retry(
    root: &Root,
    name: &OsStr,
    flags: OFlags,
    resolve: ResolveFlags,
    index: usize,
) -> Result<OwnedFd, Denial> {
    // openat2 insists on a zero mode unless it may create the file.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o644)
    } else {
        Mode::empty()
    };
    let mut attempt = 0;
    loop {
        match rustix::fs::openat2(root.fd.as_fd(), name, flags, mode, resolve) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::AGAIN) if attempt < EAGAIN_RETRIES => attempt += 1,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(classify(errno, index)),
        }
    }
}

fn classify(errno: rustix::io::Errno, index: usize) -> Denial {
    use rustix::io::Errno;
    match errno {
        Errno::XDEV => Denial::PathEscapes { index },
        Errno::LOOP => Denial::PathSymlink { index },
        Errno::NOENT | Errno::NOTDIR => Denial::PathNotFound { index },
        Errno::EXIST => Denial::PathExists { index },
        // ENXIO: a FIFO with no reader opened for writing; EISDIR: a directory for writing.
        Errno::NXIO | Errno::ISDIR => Denial::PathNotRegular { index },
        other => Denial::PathOpen {
            index,
            source: other.into(),
        },
    }
}

/// Removes a file this crate created beneath `root`, without ever following a symlink out:
/// the parent directory is opened with the same `openat2` rules and the last component is
/// unlinked relative to it.
pub(crate) fn remove_created(root: &Root, name: &OsStr) {
    let bytes = name.as_bytes();
    let (dir, base) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(pos) => (&bytes[..pos], &bytes[pos + 1..]),
        None => (&b"."[..], bytes),
    };
    let dir = if dir.is_empty() { &b"."[..] } else { dir };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dirfd) = rustix::fs::openat2(
        root.fd.as_fd(),
        OsStr::from_bytes(dir),
        flags,
        Mode::empty(),
        resolve,
    ) else {
        return;
    };
    if let Err(error) = rustix::fs::unlinkat(
        &dirfd,
        OsStr::from_bytes(base),
        rustix::fs::AtFlags::empty(),
    ) {
        tracing::debug!(%error, "could not remove a file created for a refused request");
    }
}
