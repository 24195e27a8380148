//! The owner-death watchdog: nothing we spawn outlives us, even after SIGKILL.
//!
//! # The hazard
//!
//! When the owning process is killed with SIGKILL it runs no code: no `Drop`,
//! no signal handler, no `atexit`. Its children are re-parented and keep
//! running. `PR_SET_PDEATHSIG` is the usual answer, but it reaches only the
//! direct child (not the grandchildren in its group), and it fires when the
//! *thread* that forked the child exits, not the process: a child spawned from
//! one of tokio's blocking-pool threads would be killed when that idle thread
//! retires.
//!
//! # The mechanism
//!
//! The first spawn forks one small watchdog process per owner. Owner and
//! watchdog share a `SOCK_SEQPACKET` socketpair. Every child registers itself
//! with the watchdog *from inside its `pre_exec` closure*, before `exec`, with
//! a message that names its token and process group; the watchdog's end has
//! `SO_PASSPIDFD` set, so the kernel attaches a pidfd *of the sender* to every
//! message it delivers (Linux 6.5 and later). When the child runs in a cgroup,
//! the owner has already sent that cgroup's path before the fork, and the
//! watchdog opened its `cgroup.kill` itself. Only the owner holds its end of
//! the socket (the end is close-on-exec, and children hold a copy only between
//! `fork` and `exec`), so when the owner dies, however it dies, the watchdog's
//! `recvmsg` returns end-of-file, and it kills every registered process group
//! (and cgroup) with SIGKILL, then exits.
//!
//! # Design note: no fd is passed to register
//!
//! The first version sent the child's pidfd (and the `cgroup.kill` fd) as
//! `SCM_RIGHTS`. The kernel counts fds in flight per user and refuses
//! (`ETOOMANYREFS`) to send more from a process without `CAP_SYS_RESOURCE`
//! while that count exceeds the *sender's* `RLIMIT_NOFILE`. A sandboxed child
//! registers after forkyard-secure has dropped its capabilities and lowered
//! that limit to 64, so any process of the same user holding a few hundred fds
//! in flight (a sandboxed program sending fds over a socketpair it never
//! reads, or just a busy Python server) made every hardened spawn fail. With
//! `SO_PASSPIDFD` the kernel makes the pidfd on the watchdog's side and nothing
//! is in flight; the cgroup is registered by path, from the owner. Kernels
//! before 6.5 lack `SO_PASSPIDFD`; there the child still sends its pidfd as
//! `SCM_RIGHTS`, with the old edge. (Before 6.16 the kernel cannot make a
//! pidfd for a sender that has already been reaped; the watchdog then has no
//! pidfd for that entry, which only matters if the child exec'd, forked, exited
//! and was reaped before the watchdog read its registration.)
//!
//! Registering from the child closes the race a registration from the parent
//! would have: if the owner dies between `fork` and the registration, the child
//! still holds a copy of the owner's end, so the watchdog cannot see end-of-file
//! before the registration arrives.
//!
//! Groups are signalled through their pidfds with `PIDFD_SIGNAL_PROCESS_GROUP`,
//! so a pid or pgid recycled after the owner reaped its child is never hit.
//! When a `Child` is dropped its registration is withdrawn.
//!
//! # Rules for the watchdog's code
//!
//! The watchdog is a `fork` of a multi-threaded process, so it may only make
//! async-signal-safe calls: no allocation, no locks, no panics, no `std` I/O.
//! It calls raw syscalls through `libc` and keeps its table in memory it maps
//! itself. The first thing it does is reset every signal handler it inherited
//! (a handler of the owner's, tokio's for instance, would write to an fd number
//! that means something else in the watchdog), leave the owner's session, and
//! close every fd but its socket.
//!
//! Cost: one `fork` of the owner per owner lifetime (a copy of its page tables),
//! and per spawn one `pidfd_open` plus one `sendmsg` in the child and one `send`
//! when the `Child` is dropped; see the crate README for the measured figure.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Message tags on the watchdog socket.
pub(crate) const REGISTER: u8 = 1;
pub(crate) const UNREGISTER: u8 = 2;
/// Sent by the owner before the fork: kill this cgroup with this token's entry.
const REGISTER_CGROUP: u8 = 3;
/// `[tag][token: u64 LE][pgid: i32 LE]`.
pub(crate) const REGISTER_LEN: usize = 13;
/// `[tag][token: u64 LE]`.
const UNREGISTER_LEN: usize = 9;
/// `[tag][token: u64 LE][path of cgroup.kill, NUL-terminated]`, at most this long.
const REGISTER_CGROUP_MAX: usize = 4096;
/// `SCM_PIDFD` (`include/linux/socket.h`; not in every libc yet).
const SCM_PIDFD: libc::c_int = 4;
/// `SO_PASSPIDFD` (the generic value; the architectures we build for use it).
const SO_PASSPIDFD: libc::c_int = 76;

/// The fd number the watchdog keeps its socket at.
const WATCH_FD: libc::c_int = 3;

static CURRENT: Mutex<Option<Arc<Watchdog>>> = Mutex::new(None);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The owner's handle on its watchdog process.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// Our end of the socketpair (close-on-exec).
    sock: OwnedFd,
    pid: u32,
    pidfd: OwnedFd,
    /// The kernel attaches the sender's pidfd to each message (`SO_PASSPIDFD`),
    /// so children register without passing an fd.
    kernel_pidfds: bool,
}

/// A child's registration, withdrawn when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    watchdog: Arc<Watchdog>,
    token: u64,
}

impl Registration {
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn socket(&self) -> RawFd {
        self.watchdog.sock.as_raw_fd()
    }

    /// Whether the child registers without an fd (see the module's design note).
    pub(crate) fn kernel_pidfds(&self) -> bool {
        self.watchdog.kernel_pidfds
    }

    /// Has the watchdog kill the cgroup whose `cgroup.kill` is at `kill_path`
    /// along with this registration's process group. Sent by the owner before
    /// the fork, so a child that joins the cgroup is covered from its first
    /// instruction, with no fd passed.
    pub(crate) fn watch_cgroup(&self, kill_path: &std::path::Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let path = kill_path.as_os_str().as_bytes();
        if 9 + path.len() + 1 > REGISTER_CGROUP_MAX || path.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cgroup path too long for the watchdog: {}",
                    kill_path.display()
                ),
            ));
        }
        let mut msg = Vec::with_capacity(9 + path.len() + 1);
        msg.push(REGISTER_CGROUP);
        msg.extend_from_slice(&self.token.to_le_bytes());
        msg.extend_from_slice(path);
        msg.push(0);
        rustix::net::send(&self.watchdog.sock, &msg, rustix::net::SendFlags::NOSIGNAL)?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut msg = [0u8; UNREGISTER_LEN];
        msg[0] = UNREGISTER;
        msg[1..9].copy_from_slice(&self.token.to_le_bytes());
        // A watchdog that is gone cannot kill anything any more, so there is
        // nothing to withdraw from; ignore the error.
        let _ = rustix::net::send(&self.watchdog.sock, &msg, rustix::net::SendFlags::NOSIGNAL);
    }
}

/// Reserves a registration slot with the current watchdog, starting one if
/// there is none or the last one died. The child completes the registration
/// from its `pre_exec` closure.
pub(crate) fn reserve() -> io::Result<Registration> {
    let mut current = CURRENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let watchdog = match current.as_ref() {
        Some(w) if w.is_alive() => w.clone(),
        stale => {
            if let Some(dead) = stale {
                tracing::warn!(
                    watchdog_pid = dead.pid,
                    "the owner-death watchdog died; starting a new one"
                );
            }
            let fresh = Arc::new(Watchdog::start()?);
            tracing::debug!(watchdog_pid = fresh.pid, "started the owner-death watchdog");
            *current = Some(fresh.clone());
            fresh
        }
    };
    Ok(Registration {
        watchdog,
        token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
    })
}

/// A unique token for a child that is not registered with the watchdog (names its cgroup).
pub(crate) fn untracked_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

/// The pid of the running watchdog, if one has been started (for tests and demos).
pub fn watchdog_pid() -> Option<u32> {
    CURRENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|w| w.is_alive())
        .map(|w| w.pid)
}

impl Watchdog {
    fn start() -> io::Result<Watchdog> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (owner_end, watchdog_end) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let watchdog_raw = watchdog_end.as_raw_fd();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option value that
        // lives for the call.
        let kernel_pidfds = unsafe {
            libc::setsockopt(
                watchdog_raw,
                libc::SOL_SOCKET,
                SO_PASSPIDFD,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        // SAFETY: `fork` itself is safe to call; what matters is what the child does.
        // The child runs only `watchdog_main`, which makes async-signal-safe
        // syscalls and never returns (see the module docs).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: we are the freshly forked child; `watchdog_raw` is open in it.
            unsafe { watchdog_main(watchdog_raw) }
        }
        drop(watchdog_end);
        let pid = pid as u32;
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).expect("fork returned a positive pid"),
            rustix::process::PidfdFlags::empty(),
        )?;
        Ok(Watchdog {
            sock: owner_end,
            pid,
            pidfd,
            kernel_pidfds,
        })
    }

    /// Whether the watchdog still runs; reaps it when it has died.
    fn is_alive(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let ready = loop {
            match poll(
                &mut fds,
                Some(&rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        match ready {
            Ok(0) => true,
            _ => {
                // It exited: reap it so it does not linger as our zombie.
                let _ = crate::sys::wait4(self.pid, true);
                false
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Only reached when a dead watchdog is replaced and its last registration
        // is gone: make sure it is reaped.
        let _ = crate::sys::wait4(self.pid, true);
    }
}

/// The registration a child sends from its `pre_exec` closure.
///
/// Runs between `fork` and `exec`: async-signal-safe syscalls only, no allocation.
///
/// With `kernel_pidfds` the message carries no fd: the kernel gives the
/// watchdog a pidfd of the sender (see the module's design note). Without it
/// (kernels before 6.5) the child sends its own pidfd as `SCM_RIGHTS`.
///
/// # Safety
///
/// Must only be called in a forked child before `exec`; `sock` must be the
/// watchdog socket.
pub(crate) unsafe fn register_self(sock: RawFd, token: u64, kernel_pidfds: bool) -> io::Result<()> {
    // SAFETY: for the whole function: raw syscalls on fds that the caller guarantees open,
    // with buffers on our stack that outlive each call.
    unsafe {
        let pid = libc::getpid();
        let mut payload = [0u8; REGISTER_LEN];
        payload[0] = REGISTER;
        payload[1..9].copy_from_slice(&token.to_le_bytes());
        payload[9..13].copy_from_slice(&pid.to_le_bytes());
        if kernel_pidfds {
            loop {
                let rc = libc::send(
                    sock,
                    payload.as_ptr() as *const libc::c_void,
                    payload.len(),
                    libc::MSG_NOSIGNAL,
                );
                if rc >= 0 {
                    return Ok(());
                }
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(err);
                }
            }
        }
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as libc::c_int;
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = send_with_fds(sock, &payload, &[pidfd]);
        let err = io::Error::last_os_error();
        libc::close(pidfd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
}

/// Control-message space for up to two fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgSpace([u8; 64]);

/// `sendmsg` of `payload` with `fds` as `SCM_RIGHTS`. Async-signal-safe.
///
/// # Safety
///
/// `sock` and every fd in `fds` must be open; `fds.len() <= 2`.
unsafe fn send_with_fds(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> isize {
    // SAFETY: for the whole function: every pointer handed to the kernel points into
    // `payload`, `fds` or `space`, all alive for the call; the CMSG_* helpers only
    // compute offsets within `space`, which CMSG_SPACE(2 fds) = 24 bytes fits.
    unsafe {
        let mut space = CmsgSpace([0; 64]);
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let fd_bytes = std::mem::size_of_val(fds) as u32;
        msg.msg_control = space.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(fd_bytes) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr() as *const u8,
            libc::CMSG_DATA(cmsg),
            fd_bytes as usize,
        );
        loop {
            let rc = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if rc < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            return rc;
        }
    }
}

/// One registered child in the watchdog's table.
#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    token: u64,
    pgid: i32,
    pidfd: i32,
    cgroup_kill: i32,
}

/// A growable array in memory the watchdog maps itself (no allocator after fork).
struct Table {
    ptr: *mut Entry,
    len: usize,
    cap: usize,
}

impl Table {
    /// # Safety
    /// Async-signal-safe; may be called in the forked watchdog.
    unsafe fn new() -> Option<Table> {
        let mut t = Table {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        };
        // SAFETY: forwarded to the caller's contract.
        unsafe { t.grow().then_some(t) }
    }

    /// Doubles the capacity with mmap/mremap.
    ///
    /// # Safety
    /// Async-signal-safe (raw syscalls, no allocation); call it only on the table
    /// the watchdog made with [`Table::new`].
    unsafe fn grow(&mut self) -> bool {
        let new_cap = (self.cap * 2).max(4096);
        let old_bytes = self.cap * std::mem::size_of::<Entry>();
        let new_bytes = new_cap * std::mem::size_of::<Entry>();
        // SAFETY: mmap/mremap of anonymous memory we own; on failure nothing changes.
        let p = unsafe {
            if self.ptr.is_null() {
                libc::mmap(
                    std::ptr::null_mut(),
                    new_bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } else {
                libc::mremap(
                    self.ptr as *mut libc::c_void,
                    old_bytes,
                    new_bytes,
                    libc::MREMAP_MAYMOVE,
                )
            }
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        self.ptr = p as *mut Entry;
        self.cap = new_cap;
        true
    }

    /// Appends an entry, growing the table if needed; false if it cannot grow.
    ///
    /// # Safety
    /// Async-signal-safe (raw syscalls, no allocation); call it only on the table
    /// the watchdog made with [`Table::new`].
    unsafe fn push(&mut self, e: Entry) -> bool {
        // SAFETY: `len < cap` after a successful grow, and the mapping holds `cap` entries.
        unsafe {
            if self.len == self.cap && !self.grow() {
                return false;
            }
            self.ptr.add(self.len).write(e);
        }
        self.len += 1;
        true
    }

    /// Applies `set` to the entry for `token`, adding an empty one first if
    /// there is none. Out of memory for the table, it fails closed: the new
    /// entry's group and cgroup are killed rather than left unguarded.
    ///
    /// # Safety
    /// Async-signal-safe (raw syscalls, no allocation); call it only on the table
    /// the watchdog made with [`Table::new`].
    unsafe fn upsert(&mut self, token: u64, set: impl FnOnce(&mut Entry)) {
        for i in 0..self.len {
            // SAFETY: `i < len <= cap`, and no other reference into the table is live.
            let e = unsafe { &mut *self.ptr.add(i) };
            if e.token == token {
                set(e);
                return;
            }
        }
        let mut entry = Entry {
            token,
            pgid: 0,
            pidfd: -1,
            cgroup_kill: -1,
        };
        set(&mut entry);
        // SAFETY: forwarded to the caller's contract (async-signal-safe calls only).
        unsafe {
            if !self.push(entry) {
                kill_entry(entry);
                close_if_open(entry.pidfd);
                close_if_open(entry.cgroup_kill);
            }
        }
    }

    /// Drops the entry for `token`, closing its fds.
    ///
    /// # Safety
    /// Async-signal-safe (raw syscalls, no allocation); call it only on the table
    /// the watchdog made with [`Table::new`].
    unsafe fn remove(&mut self, token: u64) {
        let mut i = 0;
        while i < self.len {
            // SAFETY: `i < len <= cap`.
            unsafe {
                let e = *self.ptr.add(i);
                if e.token == token {
                    close_if_open(e.pidfd);
                    close_if_open(e.cgroup_kill);
                    self.len -= 1;
                    *self.ptr.add(i) = *self.ptr.add(self.len);
                    return;
                }
            }
            i += 1;
        }
    }

    /// SIGKILLs every registered group and cgroup.
    ///
    /// # Safety
    /// Async-signal-safe (raw syscalls, no allocation); call it only on the table
    /// the watchdog made with [`Table::new`].
    unsafe fn kill_all(&self) {
        for i in 0..self.len {
            // SAFETY: `i < len`; kill_entry makes plain syscalls.
            unsafe { kill_entry(*self.ptr.add(i)) };
        }
    }
}

/// Closes `fd` unless it is negative.
///
/// # Safety
/// `fd` must be an fd the watchdog received and owns, closed exactly once.
unsafe fn close_if_open(fd: i32) {
    if fd >= 0 {
        // SAFETY: the fd was received by us and is closed exactly once.
        unsafe { libc::close(fd) };
    }
}

/// SIGKILLs a registered child's cgroup and process group.
///
/// # Safety
/// Async-signal-safe; `e`'s fds must be ones the watchdog received and still owns.
unsafe fn kill_entry(e: Entry) {
    // SAFETY: plain syscalls on fds we own, with buffers on our stack.
    unsafe {
        if e.cgroup_kill >= 0 {
            libc::write(e.cgroup_kill, b"1".as_ptr() as *const libc::c_void, 1);
        }
        // Without a pidfd (we were at our fd limit when it came) there is nothing
        // safe to signal: a bare pgid number may have been recycled by now.
        if e.pidfd < 0 {
            return;
        }
        let pidfd_signal = |flags: libc::c_uint, sig: libc::c_int| {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                e.pidfd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        // PIDFD_SIGNAL_PROCESS_GROUP: the group the pidfd's process leads, even
        // after that process is gone. ESRCH means the group is empty: done.
        if pidfd_signal(1 << 2, libc::SIGKILL) == 0 || *libc::__errno_location() != libc::EINVAL {
            return;
        }
        // Kernels before 6.9 lack the flag. The pgid number is safe to use only
        // while the leader exists (it pins the number), and only if it is a real
        // group id as seen from here (a child in a pid namespace reports 1).
        if e.pgid > 1 && pidfd_signal(0, 0) == 0 {
            libc::kill(-e.pgid, libc::SIGKILL);
        }
        pidfd_signal(0, libc::SIGKILL);
    }
}

/// The watchdog process. Never returns.
///
/// # Safety
///
/// Must only run in a freshly forked child, with `sock` its end of the socketpair.
unsafe fn watchdog_main(sock: RawFd) -> ! {
    // SAFETY: for the whole function: only async-signal-safe syscalls, on fds we own and
    // buffers on our stack or in memory we mapped; see the module docs.
    unsafe {
        // Inherited handlers would run the owner's code against our fd table.
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Our own session: the terminal's Ctrl-C and hang-up, and kills of the
        // owner's process group, must not take the watchdog down with the owner.
        libc::setsid();
        for sig in [
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mask: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        // Keep only the socket (at WATCH_FD) and /dev/null on 0..=2: holding any
        // other inherited fd would keep pipes and sockets of the owner open.
        if sock != WATCH_FD && libc::dup2(sock, WATCH_FD) < 0 {
            libc::_exit(70);
        }
        if libc::syscall(libc::SYS_close_range, WATCH_FD + 1, libc::c_uint::MAX, 0) != 0 {
            let mut rl: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
            let max = if rl.rlim_cur == libc::RLIM_INFINITY {
                1 << 20
            } else {
                rl.rlim_cur.min(1 << 20)
            };
            for fd in (WATCH_FD + 1)..(max as libc::c_int) {
                libc::close(fd);
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..=2 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"fy-watchdog".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        // Room for one pidfd per live child of the owner.
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }

        let Some(mut table) = Table::new() else {
            libc::_exit(71)
        };
        loop {
            let mut payload = [0u8; REGISTER_CGROUP_MAX];
            let mut space = CmsgSpace([0; 64]);
            let mut iov = libc::iovec {
                iov_base: payload.as_mut_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.0.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space.0.len();
            let n = libc::recvmsg(WATCH_FD, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            if n == 0 {
                // End of file: every copy of the owner's end is closed; the owner is gone.
                break;
            }
            // Collect the fds that came with the message: the sender's pidfd
            // made by the kernel (SCM_PIDFD; negative if it could not be made),
            // and any passed ones (SCM_RIGHTS, kernels before 6.5).
            let mut fds = [-1i32; 2];
            let mut n_fds = 0;
            let mut sender_pidfd = -1;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == SCM_PIDFD
                    && (*cmsg).cmsg_len >= libc::CMSG_LEN(4) as usize
                {
                    let fd = (libc::CMSG_DATA(cmsg) as *const i32).read_unaligned();
                    close_if_open(sender_pidfd);
                    sender_pidfd = fd;
                }
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg) as *const i32;
                    let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<i32>();
                    for i in 0..count {
                        let fd = data.add(i).read_unaligned();
                        if n_fds < fds.len() {
                            fds[n_fds] = fd;
                            n_fds += 1;
                        } else {
                            libc::close(fd);
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let n = n as usize;
            let token =
                |p: &[u8]| u64::from_le_bytes([p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]]);
            let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
            match payload[0] {
                REGISTER if n >= REGISTER_LEN && !truncated => {
                    let pgid =
                        i32::from_le_bytes([payload[9], payload[10], payload[11], payload[12]]);
                    // A passed pidfd (old kernels) wins over the kernel's.
                    let pidfd = if fds[0] >= 0 {
                        close_if_open(sender_pidfd);
                        fds[0]
                    } else {
                        sender_pidfd
                    };
                    close_if_open(fds[1]);
                    table.upsert(token(&payload), |e| {
                        close_if_open(e.pidfd);
                        e.pgid = pgid;
                        e.pidfd = pidfd;
                    });
                }
                REGISTER_CGROUP if n > UNREGISTER_LEN && !truncated && payload[n - 1] == 0 => {
                    close_if_open(sender_pidfd);
                    for fd in fds {
                        close_if_open(fd);
                    }
                    let kill = libc::open(
                        payload[UNREGISTER_LEN..].as_ptr() as *const libc::c_char,
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    );
                    if kill >= 0 {
                        table.upsert(token(&payload), |e| {
                            close_if_open(e.cgroup_kill);
                            e.cgroup_kill = kill;
                        });
                    }
                }
                UNREGISTER if n >= UNREGISTER_LEN => {
                    table.remove(token(&payload));
                    close_if_open(sender_pidfd);
                    for fd in fds {
                        close_if_open(fd);
                    }
                }
                _ => {
                    close_if_open(sender_pidfd);
                    for fd in fds {
                        close_if_open(fd);
                    }
                }
            }
        }
        table.kill_all();
        libc::_exit(0)
    }
}
