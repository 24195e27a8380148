//! The audit records this crate writes.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::Serialize;

use crate::audit::AuditArg;
use crate::grammar::OpenedSummary;
use crate::limits::Limits;
use crate::paths::PathAccess;
use crate::sandbox::LayerReport;

/// One record's payload; the log adds `seq`, `time_ms`, `prev` and `hash`.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Event {
    Decision(Box<Decision>),
    Exit(Box<ExitRecord>),
}

#[derive(Debug, Serialize)]
pub(crate) struct Decision {
    pub(crate) decision: &'static str,
    pub(crate) policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) caller: Option<AuditArg>,
    pub(crate) program: AuditArg,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exe: Option<PathBuf>,
    pub(crate) request: Vec<AuditArg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) argv: Option<Vec<AuditArg>>,
    pub(crate) env: Vec<AuditArg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) env_sha256: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) paths: Vec<PathRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<LimitsRecord>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PathRecord {
    pub(crate) arg: usize,
    pub(crate) path: PathBuf,
    pub(crate) access: &'static str,
}

impl From<&OpenedSummary> for PathRecord {
    fn from(p: &OpenedSummary) -> Self {
        PathRecord {
            arg: p.index,
            path: p.canonical.clone(),
            access: match p.access {
                PathAccess::Read => "read",
                PathAccess::Write => "write",
                PathAccess::CreateNew => "create-new",
            },
        }
    }
}

/// Limits in plain units for the log.
#[derive(Debug, Serialize)]
pub(crate) struct LimitsRecord {
    cpu_s: Option<u64>,
    wall_ms: Option<u128>,
    memory: Option<u64>,
    address_space: Option<u64>,
    file_size: Option<u64>,
    open_files: Option<u64>,
    processes: Option<u64>,
    output: Option<u64>,
}

impl From<&Limits> for LimitsRecord {
    fn from(l: &Limits) -> Self {
        LimitsRecord {
            cpu_s: l.cpu.map(|d| d.as_secs()),
            wall_ms: l.wall.map(|d| d.as_millis()),
            memory: l.memory,
            address_space: l.address_space,
            file_size: l.file_size,
            open_files: l.open_files,
            processes: l.processes,
            output: l.output,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ExitRecord {
    pub(crate) decision: Option<u64>,
    pub(crate) program: AuditArg,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    pub(crate) cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<i32>,
    pub(crate) layers: Vec<LayerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rusage: Option<RusageRecord>,
    pub(crate) wall_ms: u128,
    pub(crate) stdout_bytes: u64,
    pub(crate) stderr_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RusageRecord {
    pub(crate) user_cpu_ms: u128,
    pub(crate) system_cpu_ms: u128,
    pub(crate) max_rss_bytes: u64,
}

/// Names of an environment, for the log (values are hashed, not written).
pub(crate) fn env_names(env: &[(OsString, OsString)]) -> Vec<AuditArg> {
    env.iter().map(|(n, _)| AuditArg::new(n)).collect()
}

/// A digest of an environment's names and values.
pub(crate) fn env_digest(env: &[(OsString, OsString)]) -> String {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::ffi::OsStrExt as _;
    let mut h = Sha256::new();
    for (n, v) in env {
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    crate::program::to_hex(&h.finalize())
}
