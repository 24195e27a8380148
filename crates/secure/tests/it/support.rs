//! Shared helpers: a populated upload root and a one-call `check`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use forkyard_secure::{Error, Limits, Policy, ProgramRule, Request, Sandbox};

/// The probe binary built with this crate.
pub(crate) fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkyard-secure-probe"))
}

/// A temporary upload root:
///
/// ```text
/// root/in.txt            "inside"
/// root/sub/doc.txt       "doc"
/// root/link-etc    ->    /etc            (absolute symlink out)
/// root/up          ->    ../             (relative symlink out)
/// root/inner       ->    in.txt          (symlink that stays inside)
/// root/fifo              a FIFO
/// outside/secret.txt     "secret"        (a sibling of root)
/// ```
pub(crate) struct Uploads {
    pub(crate) dir: tempfile::TempDir,
}

impl Uploads {
    pub(crate) fn new() -> Uploads {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("in.txt"), "inside").unwrap();
        std::fs::write(root.join("sub/doc.txt"), "doc").unwrap();
        std::fs::write(dir.path().join("outside/secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link-etc")).unwrap();
        std::os::unix::fs::symlink("../", root.join("up")).unwrap();
        std::os::unix::fs::symlink("in.txt", root.join("inner")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        Uploads { dir }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root").canonicalize().unwrap()
    }

    pub(crate) fn outside(&self) -> PathBuf {
        self.dir.path().join("outside").canonicalize().unwrap()
    }
}

/// A policy with one program `p` (the probe) under `rule_for(probe path)`, minimal sandbox,
/// no audit.
pub(crate) fn policy(rule: impl FnOnce(&Path) -> ProgramRule) -> Policy {
    Policy::builder()
        .program("p", rule(&probe()))
        .limits(Limits::none())
        .sandbox(Sandbox::minimal())
        .build()
        .expect("policy builds")
}

/// Validates `args` for program `p`; the validated argv as strings, or the refusing rule.
pub(crate) fn check(policy: &Policy, args: &[&[u8]]) -> Result<Vec<String>, &'static str> {
    let request = Request::new("p").args(
        args.iter()
            .map(|a| OsString::from(std::ffi::OsStr::from_bytes(a))),
    );
    match policy.validate(&request) {
        Ok(v) => Ok(v
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()),
        Err(Error::Denied { denial, .. }) => Err(denial.rule()),
        Err(other) => panic!("unexpected error: {other:?}"),
    }
}
