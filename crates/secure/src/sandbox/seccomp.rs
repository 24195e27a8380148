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
//! * **`EAFNOSUPPORT`** for `socket(2)` and `socketpair(2)` when the network is off: the
//!   answer a kernel without that address family gives, which programs already handle.
//!   `socketpair` goes too because a Unix socket the program made itself is how it could
//!   put file descriptors *in flight* (sent, never received) in bulk: the kernel counts
//!   those per user, and a few hundred of them once made every other sandboxed spawn of
//!   the same user fail. forkyard-child no longer passes an fd to start a child, so that
//!   hole is closed at its cause; denying what the program has no use for keeps such a
//!   count from being inflated at all. A channel the parent handed over (an ipc channel
//!   on fd 3) is an inherited socket and keeps working. Runtimes that make a socket pair
//!   for their own wake-ups (tokio's signal handling) need
//!   [`Sandbox::socket_pairs`](crate::Sandbox::socket_pairs).
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
    Some(build(sandbox.network == Network::Off, !sandbox.socket_pairs).map(Arc::new))
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn build(_network_off: bool, _no_socket_pairs: bool) -> Result<SeccompPlan, String> {
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
fn build(network_off: bool, no_socket_pairs: bool) -> Result<SeccompPlan, String> {
    let mut filters = separate_programs(network_off, no_socket_pairs)?;
    let n_kills = kill_list().len();
    // One merged program instead of four: the kernel precomputes, per filter, which
    // system calls are always allowed (emulating the filter for every system call number),
    // so each extra filter costs at spawn time; merged, the cost is paid once.
    let separate = filters.len();
    if let Some(merged) = merge(&filters) {
        filters = vec![merged];
    }
    let detail = format!(
        "{} filter{} ({separate} rule groups); kill-process on {n_kills} calls (+ clone with namespace flags, \
         foreign and x32 abi); ENOSYS on io_uring_*, clone3; EPERM on TIOCSTI/TIOCLINUX ioctls, perf_event_open{}",
        filters.len(),
        if filters.len() == 1 { "" } else { "s" },
        if network_off {
            if no_socket_pairs {
                "; EAFNOSUPPORT on socket, socketpair"
            } else {
                "; EAFNOSUPPORT on socket"
            }
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

/// The rule groups, one `seccompiler` program per action.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn separate_programs(network_off: bool, no_socket_pairs: bool) -> Result<Vec<BpfProgram>, String> {
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
    // Filter 4: no sockets, and no socket pairs to hold fds in flight with.
    if network_off {
        let mut socket_rules = BTreeMap::new();
        socket_rules.insert(libc::SYS_socket, Vec::new());
        if no_socket_pairs {
            socket_rules.insert(libc::SYS_socketpair, Vec::new());
        }
        filters.push(compile(
            socket_rules,
            SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        )?);
    }
    Ok(filters)
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

const RET_ALLOW: u32 = 0x7fff_0000;
const LD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, offset 0 (seccomp_data.nr)
const ARCH_CHECK_LEN: usize = 3;

/// Concatenates `seccompiler` programs into one.
///
/// Each program is `[arch check (3)] [ld nr] [one chain per system call] [ret ALLOW]`, and
/// every jump is relative and forward. Dropping a program's final `ret ALLOW` makes its
/// "no system call matched" path fall through into the next program's `ld nr` (its arch
/// check is dropped too: the first program's covers all). This is sound because the groups
/// name disjoint system calls: a call that matches a chain returns from it, and one that
/// matches none reaches the next group. Returns `None` (keep the separate filters) if a
/// program does not have the shape this relies on.
fn merge(programs: &[BpfProgram]) -> Option<BpfProgram> {
    let first = programs.first()?;
    let arch = &first[..ARCH_CHECK_LEN];
    let mut merged: BpfProgram = Vec::new();
    for (i, program) in programs.iter().enumerate() {
        let last = program.last()?;
        let shaped = program.len() > ARCH_CHECK_LEN + 1
            && &program[..ARCH_CHECK_LEN] == arch
            && last.code == 0x06
            && last.k == RET_ALLOW;
        if !shaped {
            return None;
        }
        let body = if i == 0 {
            &program[..program.len() - 1]
        } else {
            &program[ARCH_CHECK_LEN..program.len() - 1]
        };
        if i > 0 && !(body[0].code == LD_NR && body[0].k == 0) {
            return None;
        }
        merged.extend_from_slice(body);
    }
    merged.push(programs.last()?.last()?.clone());
    (merged.len() < 4096).then_some(merged)
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A seccomp BPF interpreter for the instructions `seccompiler` (and our x32 check)
    /// emit, run on a `seccomp_data`.
    fn run(program: &BpfProgram, data: &[u32; 16]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &program[pc];
            pc += 1;
            match ins.code {
                0x20 => acc = data[ins.k as usize / 4],
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        0x35 => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                0x06 => return ins.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    /// The kernel's rule for several filters: the most severe action wins.
    fn severity(action: u32) -> u32 {
        match action & 0xffff_0000 {
            0x8000_0000 => 7, // kill process
            0x0000_0000 => 6, // kill thread
            0x0003_0000 => 5, // trap
            0x0005_0000 => 4, // errno
            0x7fc0_0000 => 3, // user notif
            0x7ff0_0000 => 2, // trace
            0x7ffc_0000 => 1, // log
            _ => 0,           // allow
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = nr;
        d[1] = arch;
        for (i, a) in args.iter().enumerate() {
            d[4 + 2 * i] = *a as u32;
            d[5 + 2 * i] = (*a >> 32) as u32;
        }
        d
    }

    /// For every system call number (native and x32), a foreign arch, and the argument
    /// values the rules look at, the merged program decides exactly what the separate
    /// filters decide together.
    #[test]
    fn the_merged_filter_decides_like_the_separate_ones() {
        let plan = build(true, true).unwrap();
        assert_eq!(
            plan.filters.len(),
            1,
            "merging applies to seccompiler's current output"
        );
        let merged = &plan.filters[0];
        // Rebuild the separate programs the same way `build` does, without merging.
        let separate = separate_programs(true, true).unwrap();
        let x86_64 = 0xc000_003e;
        let args = [
            [0u64; 6],
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            [(libc::CLONE_VM | libc::CLONE_THREAD) as u64, 0, 0, 0, 0, 0],
            [0, libc::TIOCSTI, 0, 0, 0, 0],
            [0, libc::TIOCLINUX, 0, 0, 0, 0],
            [0, libc::TIOCGWINSZ, 0, 0, 0, 0],
            [libc::AF_INET as u64, 1, 0, 0, 0, 0],
        ];
        let mut checked = 0;
        for arch in [x86_64, 0x4000_0003 /* i386 */] {
            for nr in (0..470u32).chain((0..470).map(|n| n | 0x4000_0000)) {
                for a in args {
                    let d = data(arch, nr, a);
                    let expected = separate
                        .iter()
                        .map(|p| run(p, &d))
                        .max_by_key(|&r| severity(r))
                        .unwrap();
                    assert_eq!(
                        run(merged, &d),
                        expected,
                        "arch {arch:#x} nr {nr} args {a:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
        // Spot checks of the intended behaviour.
        let verdict = |nr: i64, a: [u64; 6]| run(merged, &data(x86_64, nr as u32, a));
        assert_eq!(
            verdict(libc::SYS_ptrace, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            verdict(libc::SYS_io_uring_setup, [0; 6]),
            0x0005_0000 | libc::ENOSYS as u32
        );
        assert_eq!(
            verdict(libc::SYS_socket, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            0x0005_0000 | libc::EAFNOSUPPORT as u32
        );
        assert_eq!(
            verdict(libc::SYS_socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            0x0005_0000 | libc::EAFNOSUPPORT as u32
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]),
            0x0005_0000 | libc::EPERM as u32
        );
        assert_eq!(
            verdict(libc::SYS_clone, [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            verdict(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(verdict(libc::SYS_read, [0; 6]), RET_ALLOW);
        assert_eq!(
            run(
                merged,
                &data(x86_64, libc::SYS_getpid as u32 | 0x4000_0000, [0; 6])
            ),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}
