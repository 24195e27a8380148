//! What the running kernel and our privileges offer, probed once per process.

use std::sync::OnceLock;

/// The probe results.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Landlock ABI version, or why there is none.
    pub(crate) landlock_abi: Result<i32, String>,
    /// Whether seccomp filters can be installed, or why not.
    pub(crate) seccomp: Result<(), String>,
    /// Whether we hold CAP_SYS_ADMIN (namespaces without a user namespace).
    pub(crate) cap_sys_admin: bool,
    /// Whether we hold CAP_SETPCAP (dropping from the bounding set, securebits).
    pub(crate) cap_setpcap: bool,
    /// `/proc/sys/kernel/cap_last_cap`, or why it could not be read.
    pub(crate) cap_last_cap: Result<u32, String>,
    /// Whether the kernel has ambient capabilities.
    pub(crate) ambient_caps: bool,
    /// Whether unprivileged user namespaces can be created.
    pub(crate) user_namespaces: bool,
    /// Whether the kernel has network / pid namespaces.
    pub(crate) net_ns: bool,
    pub(crate) pid_ns: bool,
}

impl Probe {
    pub(crate) fn get() -> &'static Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(Probe::run)
    }

    fn run() -> Probe {
        Probe {
            landlock_abi: landlock_abi(),
            seccomp: seccomp(),
            cap_sys_admin: has_cap(21),
            cap_setpcap: has_cap(8),
            cap_last_cap: crate::sandbox::caps::read_last_cap(),
            ambient_caps: crate::sandbox::caps::ambient_supported(),
            user_namespaces: user_namespaces(),
            net_ns: std::path::Path::new("/proc/self/ns/net").exists(),
            pid_ns: std::path::Path::new("/proc/self/ns/pid").exists(),
        }
    }

    /// How a namespace can be created here: plainly (CAP_SYS_ADMIN), inside a new user
    /// namespace, or not at all.
    pub(crate) fn namespace_mode(&self, kernel_has_it: bool) -> Result<NamespaceMode, String> {
        if !kernel_has_it {
            return Err("the kernel was built without this namespace type".into());
        }
        if self.cap_sys_admin {
            Ok(NamespaceMode::Privileged)
        } else if self.user_namespaces {
            Ok(NamespaceMode::InUserNamespace)
        } else {
            Err(
                "needs CAP_SYS_ADMIN or unprivileged user namespaces, and neither is available"
                    .into(),
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamespaceMode {
    Privileged,
    InUserNamespace,
}

fn landlock_abi() -> Result<i32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the kernel only
    // returns the ABI version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v > 0 {
        return Ok(v as i32);
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel was built without Landlock (ENOSYS)".into(),
        Some(libc::EOPNOTSUPP) => {
            "Landlock is built in but not enabled at boot (EOPNOTSUPP; add it to lsm=)".into()
        }
        _ => format!("landlock_create_ruleset failed: {err}"),
    })
}

fn seccomp() -> Result<(), String> {
    // PR_GET_SECCOMP fails with EINVAL on a kernel without CONFIG_SECCOMP.
    match rustix::thread::secure_computing_mode() {
        Ok(_) => {}
        Err(e) => return Err(format!("the kernel has no seccomp ({e})")),
    }
    // Filter mode needs CONFIG_SECCOMP_FILTER; the status file shows the field when it is
    // there.
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) if status.contains("Seccomp_filters:") => Ok(()),
        Ok(_) => Err("the kernel has seccomp but not seccomp filters".into()),
        Err(e) => Err(format!("cannot read /proc/self/status: {e}")),
    }
}

fn has_cap(bit: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

fn user_namespaces() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let max_ok = read("/proc/sys/user/max_user_namespaces").is_none_or(|v| v != "0");
    let debian_ok = read("/proc/sys/kernel/unprivileged_userns_clone").is_none_or(|v| v != "0");
    let apparmor_ok =
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_none_or(|v| v != "1");
    max_ok && debian_ok && apparmor_ok
}
