//! The seccomp layer: a deny list compiled to BPF in the parent with `seccompiler`.
//!
//! # Design note: kill or errno?
//!
//! A deny list has to choose, per system call, between killing the process
//! (`SECCOMP_RET_KILL_PROCESS`, the process dies of `SIGSYS` and the run ends with
//! [`EndCause::SeccompKill`](crate::EndCause)) and failing the call with an errno.
//!
//! * **Kill** for calls a file converter has no business making and that only an exploit
//!   makes: `ptrace`, `process_vm_*`, `mount` and the new mount API, `kexec_*`, module
//!   loading, `bpf`, `userfaultfd`, the keyring calls, `unshare`/`setns` and `clone` with
//!   namespace flags, `pivot_root`/`chroot`, `open_by_handle_at`, `pidfd_getfd`, swap, reboot,
//!   clock setting, raw port I/O. A loud death with a precise cause in the audit log beats an
//!   errno an attacker can retry around.
//! * **`ENOSYS`** for `io_uring_*` and `clone3`: runtimes (libuv, glibc's `posix_spawn`,
//!   tokio-uring) probe them and fall back to the classic calls on `ENOSYS`. io_uring must be
//!   closed because its operations bypass seccomp entirely.
//! * **`EPERM`** for `ioctl(TIOCSTI)`/`ioctl(TIOCLINUX)` (typing into a terminal) and
//!   `perf_event_open`, which some tools probe.
//! * **`EAFNOSUPPORT`** for `socket(2)` when the network is off: the answer a kernel without
//!   that address family gives, which programs already handle.
//!
//! The filters also kill any system call made through a foreign ABI: another architecture
//! (i386 `int 0x80` on x86-64, checked by `seccompiler`'s arch test) and the x32 ABI (same
//! arch value, numbers with bit 30 set), which would otherwise bypass a number-based list.
//!
//! The filters are installed last in the pre-exec hook; `forkyard-child`'s own hook runs
//! after ours under them, and needs none of the calls denied here.

use std::collections::BTreeMap;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::sandbox::probe::Probe;
use crate::sandbox::{LayerStatus, Network, Sandbox};

/// The compiled filters of one policy.
#[derive(Debug)]
pub(crate) struct SeccompPlan {
    pub(crate) filters: Vec<BpfProgram>,
    pub(crate) status: LayerStatus,
    pub(crate) detail: String,
}

pub(crate) type Prepared = Result<Arc<SeccompPlan>, String>;

pub(crate) fn prepare(sandbox: &Sandbox) -> Option<Prepared> {
    sandbox.seccomp?;
    if let Err(reason) = &Probe::get().seccomp {
        return Some(Err(reason.clone()));
    }
    Some(build(sandbox.network == Network::Off).map(Arc::new))
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn build(_network_off: bool) -> Result<SeccompPlan, String> {
    Err("no system call table for this architecture".into())
}

/// System calls that kill the process.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn kill_list() -> Vec<(&'static str, i64)> {
    let mut list = vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("bpf", libc::SYS_bpf),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("syslog", libc::SYS_syslog),
        ("vhangup", libc::SYS_vhangup),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([("ioperm", libc::SYS_ioperm), ("iopl", libc::SYS_iopl)]);
    list
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn build(network_off: bool) -> Result<SeccompPlan, String> {
    let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>,
                   action: SeccompAction|
     -> Result<BpfProgram, String> {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, ARCH)
            .map_err(|e| e.to_string())?;
        BpfProgram::try_from(filter).map_err(|e| e.to_string())
    };
    let cond = |arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, len, op, value).map_err(|e| e.to_string())
    };
    let rule = |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(|e| e.to_string());

    // Filter 1: kill.
    let kills = kill_list();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        kills.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    // clone(2) with any namespace flag (x86-64 and arm64 both pass flags first).
    let ns_flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ];
    let clone_rules = ns_flags
        .iter()
        .map(|&f| {
            let f = f as u64;
            rule(vec![cond(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(f),
                f,
            )?])
        })
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let mut kill = compile(rules, SeccompAction::KillProcess)?;
    splice_x32_check(&mut kill);

    // Filter 2: ENOSYS, so callers fall back.
    let enosys_calls = [
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("clone3", libc::SYS_clone3),
    ];
    let enosys = compile(
        enosys_calls
            .iter()
            .map(|(_, nr)| (*nr, Vec::new()))
            .collect(),
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;

    // Filter 3: EPERM.
    let mut eperm_rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    eperm_rules.insert(libc::SYS_perf_event_open, Vec::new());
    eperm_rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::TIOCSTI,
            )?])?,
            rule(vec![cond(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::TIOCLINUX,
            )?])?,
        ],
    );
    let eperm = compile(eperm_rules, SeccompAction::Errno(libc::EPERM as u32))?;

    let mut filters = vec![kill, enosys, eperm];
    // Filter 4: no sockets.
    if network_off {
        let mut socket_rules = BTreeMap::new();
        socket_rules.insert(libc::SYS_socket, Vec::new());
        filters.push(compile(
            socket_rules,
            SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        )?);
    }
    let detail = format!(
        "{} filters; kill-process on {} calls (+ clone with namespace flags, foreign and x32 abi); \
         ENOSYS on io_uring_*, clone3; EPERM on TIOCSTI/TIOCLINUX ioctls, perf_event_open{}",
        filters.len(),
        kills.len(),
        if network_off {
            "; EAFNOSUPPORT on socket"
        } else {
            ""
        }
    );
    Ok(SeccompPlan {
        filters,
        status: LayerStatus::Applied,
        detail,
    })
}

/// Inserts, right after `seccompiler`'s architecture check, a kill for x32 system calls
/// (numbers with `__X32_SYSCALL_BIT` set), which carry the x86-64 arch value.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn splice_x32_check(program: &mut BpfProgram) {
    #[cfg(target_arch = "x86_64")]
    {
        use seccompiler::sock_filter;
        // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JGE | BPF_K, BPF_RET | BPF_K.
        const BPF_LD_W_ABS: u16 = 0x20;
        const BPF_JMP_JGE_K: u16 = 0x35;
        const BPF_RET_K: u16 = 0x06;
        const X32_SYSCALL_BIT: u32 = 0x4000_0000;
        let check = [
            sock_filter {
                code: BPF_LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 0,
            },
            sock_filter {
                code: BPF_JMP_JGE_K,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            sock_filter {
                code: BPF_RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_KILL_PROCESS,
            },
        ];
        // seccompiler emits three instructions of arch validation first.
        let at = 3.min(program.len());
        program.splice(at..at, check);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = program;
}

/// Installs the filters on the calling thread. Called in the child after `fork`: no
/// allocation, only `prctl` and `seccomp` system calls.
pub(crate) fn apply(filters: &[BpfProgram]) -> std::io::Result<usize> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| match e {
            seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => io,
            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    }
    Ok(filters.len())
}
