//! The capabilities layer: the program runs with no capability and cannot regain one.
//!
//! # Design note: four steps, and why in this order
//!
//! A child forked by a root parent holds all of root's capabilities (`CAP_KILL`,
//! `CAP_SYS_ADMIN`, `CAP_DAC_OVERRIDE`, ...), and `execve` by uid 0 grants them again from
//! the bounding set. Landlock, seccomp and `no_new_privs` fence much of that in, but the
//! program would still be root in all but name: able to `chown` any file it can reach, to
//! ignore file permission bits, to raise limits. So, in the child:
//!
//! 1. `PR_SET_SECUREBITS`: `NOROOT` (uid 0 gains nothing at `exec`), `NO_SETUID_FIXUP`,
//!    `KEEP_CAPS` off and `NO_CAP_AMBIENT_RAISE`, each with its lock bit so that nothing
//!    after can clear them. This is systemd's `SecureBits=noroot-locked ...`; nsjail and
//!    bubblewrap do not set it, and with the next three steps it is belt and braces.
//! 2. `PR_CAPBSET_DROP` for every capability `0..=cap_last_cap`: the bounding set caps what
//!    any later `exec` can grant, file capabilities included (nsjail and bubblewrap do the
//!    same). `cap_last_cap` is read from `/proc/sys/kernel/cap_last_cap` in the parent:
//!    the child only makes system calls.
//! 3. `PR_CAP_AMBIENT_CLEAR_ALL`: nothing survives `exec` through the ambient set.
//! 4. `capset` to empty effective, permitted and inheritable sets, then `capget` to check.
//!
//! Steps 1 and 2 need `CAP_SETPCAP`, so they come before step 4 takes it away. The whole
//! layer runs in the pre-exec hook *after* everything that needs a capability (rlimits
//! above the hard limit, joining the run's cgroups, `unshare` and `setns` of namespaces,
//! writing the user-namespace maps) and *before* the pid-namespace relay forks, so neither
//! the relay nor the program holds anything. What follows needs none: `no_new_privs`,
//! Landlock and seccomp are all allowed to an unprivileged process once `no_new_privs` is
//! set (which both set themselves), and forkyard-child's hook only writes to descriptors
//! opened earlier (its cgroup's `cgroup.procs`, whose permission check uses the opener's
//! credentials), opens a pidfd of itself, sends it over a socket and closes descriptors.
//! None of the system calls used here is in the seccomp deny list, which is installed
//! after them anyway.
//!
//! # Without `CAP_SETPCAP`
//!
//! An unprivileged parent (not root, no user namespace for the run) cannot shrink the
//! bounding set or set securebits. It can still empty its own sets and the ambient set,
//! and `no_new_privs` then keeps `exec` from granting anything (set-uid bits and file
//! capabilities are ignored, and the permitted set after `exec` never exceeds the one
//! before). The layer is then reported `partial`, and refused when required.

use rustix::thread::{CapabilitiesSecureBits, CapabilitySet, CapabilitySets};

use crate::sandbox::probe::Probe;
use crate::sandbox::{LayerStatus, Sandbox};

/// What the child does, decided in the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapsPlan {
    /// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
    last_cap: u32,
    /// Whether we may drop from the bounding set and set securebits (`CAP_SETPCAP`).
    privileged: bool,
    /// Whether the kernel has ambient capabilities (4.3).
    ambient: bool,
    /// The securebits to set (see [`securebits`]).
    securebits: CapabilitiesSecureBits,
}

/// Attestation bits, one per step.
pub(crate) const ATTEST_SECUREBITS: u8 = 1;
pub(crate) const ATTEST_BOUNDING: u8 = 2;
pub(crate) const ATTEST_AMBIENT: u8 = 4;
pub(crate) const ATTEST_EMPTY: u8 = 8;

/// Whether the attestation bits confirm a layer planned with `status`.
pub(crate) fn confirmed(status: LayerStatus, bits: u8) -> bool {
    let mut wanted = ATTEST_AMBIENT | ATTEST_EMPTY;
    if status == LayerStatus::Applied {
        wanted |= ATTEST_SECUREBITS | ATTEST_BOUNDING;
    }
    bits & wanted == wanted
}

/// The securebits we set: every "pure capabilities" bit, locked. A bit the parent already
/// locked keeps its value (the kernel refuses to change it, or to unlock it).
fn securebits(ambient: bool, current: CapabilitiesSecureBits) -> CapabilitiesSecureBits {
    let mut wanted = CapabilitiesSecureBits::NO_ROOT
        | CapabilitiesSecureBits::NO_ROOT_LOCKED
        | CapabilitiesSecureBits::NO_SETUID_FIXUP
        | CapabilitiesSecureBits::NO_SETUID_FIXUP_LOCKED
        | CapabilitiesSecureBits::KEEP_CAPS_LOCKED;
    if ambient {
        wanted |= CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE
            | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED;
    }
    // Each lock bit sits just above the bit it locks.
    let current = current.bits();
    let locks = current & 0xAA;
    let locked = locks >> 1;
    CapabilitiesSecureBits::from_bits_retain((wanted.bits() & !locked) | (current & locked) | locks)
}

impl CapsPlan {
    /// Runs in the child, after every step that needs a capability. Only system calls (all
    /// of them `prctl`, `capset` and `capget` on the stack); returns the attestation bits.
    pub(crate) fn apply(&self) -> std::io::Result<u8> {
        let mut done = 0;
        if self.privileged {
            rustix::thread::set_capabilities_secure_bits(self.securebits)?;
            done |= ATTEST_SECUREBITS;
            for cap in 0..=self.last_cap {
                rustix::thread::remove_capability_from_bounding_set(
                    CapabilitySet::from_bits_retain(1 << cap),
                )?;
            }
            done |= ATTEST_BOUNDING;
        }
        if self.ambient {
            rustix::thread::clear_ambient_capability_set()?;
        }
        done |= ATTEST_AMBIENT;
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        rustix::thread::set_capabilities(None, none)?;
        let now = rustix::thread::capabilities(None)?;
        if now.effective.is_empty() && now.permitted.is_empty() && now.inheritable.is_empty() {
            done |= ATTEST_EMPTY;
        }
        Ok(done)
    }
}

/// The plan for a run, its status and the report's detail; or why there is none.
///
/// `user_namespace`: the child creates a user namespace before dropping, and then holds
/// every capability (`CAP_SETPCAP` included) inside it.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    user_namespace: bool,
) -> Option<Result<(CapsPlan, LayerStatus, String), String>> {
    sandbox.capabilities?;
    let probe = Probe::get();
    let last_cap = match &probe.cap_last_cap {
        Ok(n) => *n,
        Err(reason) => return Some(Err(reason.clone())),
    };
    let current =
        rustix::thread::capabilities_secure_bits().unwrap_or(CapabilitiesSecureBits::empty());
    let plan = CapsPlan {
        last_cap,
        privileged: probe.cap_setpcap || user_namespace,
        ambient: probe.ambient_caps,
        securebits: securebits(probe.ambient_caps, current),
    };
    let ambient = if plan.ambient {
        "ambient set cleared"
    } else {
        "no ambient set on this kernel"
    };
    let (status, detail) = if plan.privileged {
        (
            LayerStatus::Applied,
            format!(
                "none held or inheritable: bounding set emptied (0..={last_cap}), {ambient}, \
                 effective/permitted/inheritable emptied; securebits noroot, no-setuid-fixup, \
                 keep-caps off{}, all locked{}",
                if plan.ambient {
                    ", no-ambient-raise"
                } else {
                    ""
                },
                if current.bits() & 0xAA != 0 {
                    " (bits the parent had locked keep their value)"
                } else {
                    ""
                }
            ),
        )
    } else {
        (
            LayerStatus::Partial,
            format!(
                "effective/permitted/inheritable emptied, {ambient}; bounding set and securebits \
                 left as they are (they need CAP_SETPCAP{})",
                if sandbox.no_new_privs || sandbox.landlock.is_some() || sandbox.seccomp.is_some() {
                    "; no_new_privs keeps exec from granting any"
                } else {
                    ""
                }
            ),
        )
    };
    Some(Ok((plan, status, detail)))
}

/// `/proc/sys/kernel/cap_last_cap`, read in the parent.
pub(crate) fn read_last_cap() -> Result<u32, String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .map_err(|e| format!("cannot read /proc/sys/kernel/cap_last_cap: {e}"))?;
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|e| format!("/proc/sys/kernel/cap_last_cap is not a number ({e})"))?;
    if n >= 64 {
        return Err(format!(
            "cap_last_cap {n} does not fit the 64-bit capability sets"
        ));
    }
    Ok(n)
}

/// Whether the kernel has ambient capabilities (`PR_CAP_AMBIENT` fails with `EINVAL` before
/// 4.3).
pub(crate) fn ambient_supported() -> bool {
    rustix::thread::capability_is_in_ambient_set(CapabilitySet::CHOWN).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_layer_is_confirmed_without_the_bounding_set_and_securebits() {
        let own = ATTEST_AMBIENT | ATTEST_EMPTY;
        assert!(confirmed(LayerStatus::Partial, own));
        assert!(!confirmed(LayerStatus::Applied, own));
        assert!(confirmed(LayerStatus::Applied, 0b1111));
        assert!(!confirmed(LayerStatus::Applied, 0b0111), "sets not empty");
    }

    #[test]
    fn securebits_keep_what_the_parent_locked() {
        type B = CapabilitiesSecureBits;
        let fresh = securebits(true, B::empty());
        assert!(fresh.contains(B::NO_ROOT | B::NO_ROOT_LOCKED | B::NO_CAP_AMBIENT_RAISE_LOCKED));
        assert!(!fresh.contains(B::KEEP_CAPS));
        // A parent with keep-caps set and locked (systemd `SecureBits=keep-caps-locked`):
        // keep-caps stays on, everything else as wanted.
        let kept = securebits(true, B::KEEP_CAPS | B::KEEP_CAPS_LOCKED);
        assert!(kept.contains(B::KEEP_CAPS | B::KEEP_CAPS_LOCKED | B::NO_ROOT_LOCKED));
        // No ambient set on the kernel: its bits are not asked for.
        assert!(!securebits(false, B::empty()).contains(B::NO_CAP_AMBIENT_RAISE));
    }
}
