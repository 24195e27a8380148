//! `forkyard-secure-probe`: a test fixture that pokes at its sandbox.
//!
//! `forkyard-testkit`'s fixture covers misbehaviour (CPU, memory, output, hangs, process
//! trees); this one covers what a sandbox must stop: reading files, opening sockets,
//! `ptrace`, forbidden system calls, signalling outsiders, fork bombs, using a capability. Each subcommand prints
//! one line saying what happened (`ok ...` or `err ERRNO_NAME`) and exits 0, unless the
//! kernel kills it first, which is the point of some of them.
//!
//! Used by this crate's tests and demo; not part of the library.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

const HELP: &str = "\
forkyard-secure-probe <subcommand> [args]

  argv [ARGS..]            print each argument, hex-encoded, one per line
  env                      print the environment, NAME=VALUE hex-encoded, one per line
  read PATH                read PATH, print `ok N` (bytes) or `err ERRNO`
  write --out PATH TEXT    write TEXT to PATH (truncating), print `ok` or `err ERRNO`
  chown --out PATH UID     give PATH to UID (needs CAP_CHOWN), print `ok` or `err ERRNO`
  socket inet|inet6|unix   create a socket, print `ok` or `err ERRNO`
  connect HOST:PORT        TCP connect, print `ok` or `err ERRNO`
  syscall NAME             make a denied system call (ptrace, bpf, unshare, mount, keyctl,
                           userfaultfd, io-uring, clone3, x32, tiocsti); print its result
  signal-parent            kill(getppid(), 0), print `ok` or `err ERRNO`
  status                   print no_new_privs and the seccomp mode
  fork-bomb                fork until fork fails (at most 10000 times), print `pids P..` and
                           `forks N err ERRNO`, then exit 0 (the children stay, paused)
  write-big --out PATH BYTES
                           write BYTES bytes to PATH in 1 MiB steps (SIGXFSZ ends it early)
  pid                      print getpid()
  nofile                   wait for a line (or EOF) on stdin, then print `nofile SOFT HARD`
  hold-fds-in-flight N     make a socketpair and send N fds over it without ever receiving
                           them (253 per sendmsg), print `holding K` (K sent), or
                           `holding K err ERRNO` when the kernel refused more, or
                           `err ERRNO` when no socketpair could be made; then wait for a
                           line (or EOF) on stdin before exiting
";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    let cmd = cmd.to_string_lossy().into_owned();
    // `--out PATH` is how the tests' grammar renders an output operand.
    let rest: &[std::ffi::OsString] = if rest.first().is_some_and(|a| a == "--out") {
        &rest[1..]
    } else {
        rest
    };
    let text = |i: usize| {
        rest.get(i)
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let line = match cmd.as_str() {
        "argv" => {
            let mut out = std::io::stdout().lock();
            for a in rest {
                let _ = writeln!(out, "{}", hex(a.as_bytes()));
            }
            return ExitCode::SUCCESS;
        }
        "env" => {
            let mut out = std::io::stdout().lock();
            for (k, v) in std::env::vars_os() {
                let _ = writeln!(out, "{}={}", hex(k.as_bytes()), hex(v.as_bytes()));
            }
            return ExitCode::SUCCESS;
        }
        "read" => match std::fs::File::open(&rest[0]) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                match f.read_to_end(&mut buf) {
                    Ok(n) => format!("ok {n}"),
                    Err(e) => err(&e),
                }
            }
            Err(e) => err(&e),
        },
        "write" => match std::fs::write(&rest[0], text(1)) {
            Ok(()) => "ok".into(),
            Err(e) => err(&e),
        },
        "chown" => match text(1).parse::<u32>() {
            Ok(uid) => match std::os::unix::fs::chown(&rest[0], Some(uid), None) {
                Ok(()) => "ok".into(),
                Err(e) => err(&e),
            },
            Err(_) => "err not a uid".into(),
        },
        "socket" => {
            let domain = match text(0).as_str() {
                "inet" => libc::AF_INET,
                "inet6" => libc::AF_INET6,
                _ => libc::AF_UNIX,
            };
            // SAFETY: socket(2) takes plain integers; the result is closed below.
            let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                err(&std::io::Error::last_os_error())
            } else {
                // SAFETY: fd was just returned by socket(2) and is ours.
                unsafe { libc::close(fd) };
                "ok".into()
            }
        }
        "connect" => match std::net::TcpStream::connect(text(0)) {
            Ok(_) => "ok".into(),
            Err(e) => err(&e),
        },
        "syscall" => syscall(&text(0)),
        "signal-parent" => {
            // SAFETY: kill with signal 0 only checks permission.
            let rc = unsafe { libc::kill(libc::getppid(), 0) };
            if rc == 0 {
                "ok".into()
            } else {
                err(&std::io::Error::last_os_error())
            }
        }
        "status" => {
            // SAFETY: both prctl options only read a flag of the calling thread.
            let (nnp, seccomp) = unsafe {
                (
                    libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                    libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
                )
            };
            format!("no_new_privs {nnp} seccomp {seccomp}")
        }
        "fork-bomb" => {
            let mut forks = 0u64;
            let mut pids = String::new();
            let result = loop {
                // SAFETY: the child only calls pause(2) and _exit(2), both async-signal-safe.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    loop {
                        // SAFETY: pause has no preconditions.
                        unsafe { libc::pause() };
                    }
                }
                if pid < 0 {
                    break format!("forks {forks} {}", err(&std::io::Error::last_os_error()));
                }
                forks += 1;
                pids.push_str(&format!(" {pid}"));
                if forks >= 10_000 {
                    break format!("forks {forks} not contained");
                }
            };
            format!("pids{pids}\n{result}")
        }
        "write-big" => {
            let bytes: u64 = text(1).parse().unwrap_or(0);
            match std::fs::File::create(&rest[0]) {
                Ok(mut f) => {
                    let chunk = vec![b'x'; 1 << 20];
                    let mut left = bytes;
                    let mut result = "ok".to_string();
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        if let Err(e) = f.write_all(&chunk[..n]) {
                            result = err(&e);
                            break;
                        }
                        left -= n as u64;
                    }
                    result
                }
                Err(e) => err(&e),
            }
        }
        "pid" => format!("pid {}", std::process::id()),
        "hold-fds-in-flight" => {
            let line = hold_fds_in_flight(text(0).parse().unwrap_or(0));
            println!("{line}");
            let _ = std::io::stdout().flush();
            let mut wait = String::new();
            let _ = std::io::stdin().read_line(&mut wait);
            return ExitCode::SUCCESS;
        }
        "nofile" => {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we own.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
            format!("nofile {} {}", rl.rlim_cur, rl.rlim_max)
        }
        _ => {
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    println!("{line}");
    ExitCode::SUCCESS
}

fn syscall(name: &str) -> String {
    match raw_syscall(name) {
        None => format!("unknown syscall {name}"),
        Some(rc) if rc < 0 => err(&std::io::Error::last_os_error()),
        Some(rc) => format!("ok {rc}"),
    }
}

/// Makes the named system call with null or dummy arguments.
fn raw_syscall(name: &str) -> Option<libc::c_long> {
    let mut params = [0u8; 120];
    let c = b'x';
    // SAFETY: each call gets null pointers, zeros, or pointers to the live locals above; the
    // kernel either refuses it (the expected outcome in a sandbox) or does something harmless
    // to this process alone.
    let rc = unsafe {
        match name {
            "ptrace" => libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0),
            "bpf" => libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0),
            "unshare" => libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUTS),
            "mount" => libc::syscall(libc::SYS_mount, 0usize, 0usize, 0usize, 0usize, 0usize),
            "keyctl" => libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0),
            "userfaultfd" => libc::syscall(libc::SYS_userfaultfd, 0),
            "io-uring" => libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()),
            "clone3" => libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0),
            #[cfg(target_arch = "x86_64")]
            "x32" => libc::syscall(0x4000_0000 | libc::SYS_getpid),
            "tiocsti" => libc::ioctl(0, libc::TIOCSTI, &c) as libc::c_long,
            _ => return None,
        }
    };
    Some(rc)
}

fn err(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EACCES) => "EACCES",
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EAFNOSUPPORT) => "EAFNOSUPPORT",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EFBIG) => "EFBIG",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EFAULT) => "EFAULT",
        Some(n) => return format!("err errno {n}"),
        None => return format!("err {e}"),
    };
    format!("err {name}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts up to `n` fds in flight on a socketpair nobody reads; the pair is leaked on
/// purpose, so they stay in flight until the process exits.
fn hold_fds_in_flight(n: usize) -> String {
    let mut pair = [-1; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) } != 0 {
        return err(&std::io::Error::last_os_error());
    }
    // SAFETY: open with a static C string; the fd is sent (duplicated) many times and
    // stays open until exit.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(253);
        let fds = vec![null; batch];
        let fd_bytes = std::mem::size_of_val(fds.as_slice());
        // SAFETY: CMSG_SPACE only computes a size.
        let space_len = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut space = vec![0u64; space_len.div_ceil(8)];
        let byte = [0u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: msghdr is plain data; every pointer set below points into buffers that
        // live until sendmsg returns, and the CMSG_* helpers stay within `space`, which is
        // CMSG_SPACE(fd_bytes) long.
        let rc = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space_len;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
            libc::sendmsg(pair[0], &msg, libc::MSG_DONTWAIT)
        };
        if rc < 0 {
            return format!("holding {sent} {}", err(&std::io::Error::last_os_error()));
        }
        sent += batch;
    }
    format!("holding {sent}")
}
