//! The Landlock layer, prepared in the parent.
//!
//! The ruleset is created and filled once per program when the policy is built (that opens
//! every allowed path with `O_PATH`, which allocates and must not happen after `fork`). Each
//! spawn duplicates the ruleset descriptor; the child only calls `landlock_restrict_self`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible as _, PathBeneath, Ruleset,
    RulesetAttr as _, RulesetCreated, RulesetCreatedAttr as _, Scope, path_beneath_rules,
};

use crate::paths::{PathAccess, Root};
use crate::sandbox::probe::Probe;
use crate::sandbox::{Enforcement, LayerStatus, Network, Sandbox};

/// The ABI whose rights we ask for: file system rights up to ABI 5 (`IOCTL_DEV`), TCP rules
/// (ABI 4) and scopes (ABI 6). On an older kernel the crate drops what the kernel lacks and
/// we report the layer as partial.
const TARGET_ABI: ABI = ABI::V6;
const TARGET_ABI_NUM: i32 = 6;

/// Read-only (and executable) system paths; missing ones are skipped.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// A ruleset ready to be applied by a child.
#[derive(Debug)]
pub(crate) struct LandlockPlan {
    ruleset: RulesetCreated,
    pub(crate) status: LayerStatus,
    pub(crate) detail: String,
}

impl LandlockPlan {
    /// A duplicate for one spawn (one `dup` of the ruleset descriptor).
    pub(crate) fn for_spawn(&self) -> std::io::Result<RulesetCreated> {
        self.ruleset.try_clone()
    }
}

/// The outcome of preparing the layer: a plan, or the reason there is none.
pub(crate) type Prepared = Result<Arc<LandlockPlan>, String>;

/// Builds the ruleset for one program.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    exe: &Path,
    roots: &[(Arc<Root>, PathAccess)],
) -> Option<Prepared> {
    sandbox.landlock?;
    let kernel_abi = match &Probe::get().landlock_abi {
        Ok(v) => *v,
        Err(reason) => return Some(Err(reason.clone())),
    };
    Some(
        build(sandbox, exe, roots, kernel_abi)
            .map(Arc::new)
            .map_err(|e| format!("building the ruleset failed: {e}")),
    )
}

fn build(
    sandbox: &Sandbox,
    exe: &Path,
    roots: &[(Arc<Root>, PathAccess)],
    kernel_abi: i32,
) -> Result<LandlockPlan, landlock::RulesetError> {
    let read = AccessFs::from_read(TARGET_ABI);
    let all = AccessFs::from_all(TARGET_ABI);
    let network_off = sandbox.network == Network::Off;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?;
    if network_off {
        ruleset = ruleset.handle_access(AccessNet::from_all(TARGET_ABI))?;
    }
    ruleset = ruleset.scope(Scope::from_all(TARGET_ABI))?;
    let mut created = ruleset.create()?;

    let mut read_paths: Vec<PathBuf> = Vec::new();
    if sandbox.system_paths {
        read_paths.extend(SYSTEM_READ.iter().map(PathBuf::from));
    }
    read_paths.push(exe.to_owned());
    read_paths.extend(sandbox.read_only.iter().cloned());
    let n_read = read_paths.iter().filter(|p| p.exists()).count();
    created = created.add_rules(path_beneath_rules(&read_paths, read))?;
    // /dev/null is written to by many tools.
    if sandbox.system_paths {
        created = created.add_rules(path_beneath_rules(
            ["/dev/null"],
            AccessFs::from_file(TARGET_ABI),
        ))?;
    }
    created = created.add_rules(path_beneath_rules(&sandbox.read_write, all))?;
    let mut n_roots = 0;
    for (root, access) in roots {
        let rights: BitFlags<AccessFs> = match access {
            PathAccess::Read => read,
            PathAccess::Write | PathAccess::CreateNew => all,
        };
        created = created.add_rule(PathBeneath::new(root.fd.as_fd(), rights))?;
        n_roots += 1;
    }

    let partial = kernel_abi < TARGET_ABI_NUM;
    let mut detail = format!(
        "abi {} enforced (kernel abi {kernel_abi}, asked for {TARGET_ABI_NUM}); read/exec: {n_read} paths; \
         operand roots: {n_roots}; read-write: {}",
        kernel_abi.min(TARGET_ABI_NUM),
        sandbox.read_write.len()
    );
    if network_off {
        detail.push_str(if kernel_abi >= 4 {
            "; tcp bind/connect denied"
        } else {
            "; no tcp rules (abi < 4)"
        });
    }
    detail.push_str(if kernel_abi >= 6 {
        "; scoped: signals and abstract unix sockets"
    } else {
        "; no scopes (abi < 6): signals to outside processes not blocked"
    });
    Ok(LandlockPlan {
        ruleset: created,
        status: if partial {
            LayerStatus::Partial
        } else {
            LayerStatus::Applied
        },
        detail,
    })
}

/// Whether the layer is required (so an unavailable one refuses the run).
pub(crate) fn required(sandbox: &Sandbox) -> bool {
    sandbox.landlock == Some(Enforcement::Required)
}
