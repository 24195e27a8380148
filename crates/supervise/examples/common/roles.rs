//! Child roles shared by the demo, the fault suite and the benchmarks: the example binary runs
//! itself with `--role NAME ...` to become one of these processes.
//!
//! - `web --port P`: a tiny HTTP/1.1 server. `GET /health` answers 200; `GET /fail` makes
//!   `/health` answer 500 from then on; `GET /hang` makes it stop answering anything (a hang:
//!   connections are accepted by the kernel, nobody replies).
//! - `worker --crash-after-ms N`: works (prints a line now and then), then exits with code 1
//!   after N ms; N = 0 means it never crashes.
//! - `cache --exit-code C`: exits at once with C (a cache that cannot start); C = 0 means it
//!   starts and runs.
//! - `listen --port P`: binds the port, prints `ready`, and waits (the benchmark's server).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// If `args` asks for a role, runs it (never returns) and gives its exit code.
pub(crate) fn run_role_if_asked() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--role")?;
    let role = args.get(at + 1)?.clone();
    let value = |flag: &str| -> u64 {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(match role.as_str() {
        "web" => web(value("--port") as u16),
        "worker" => worker(value("--crash-after-ms")),
        "cache" => cache(value("--exit-code") as u8),
        "listen" => listen(value("--port") as u16),
        other => {
            eprintln!("unknown role {other}");
            ExitCode::from(2)
        }
    })
}

/// A command that runs this very binary in `role` with `args`.
pub(crate) fn role_command(role: &str, args: &[String]) -> std::process::Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--role").arg(role).args(args);
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null());
    cmd
}

/// A TCP port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const HUNG: u8 = 2;

fn web(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("web: bind {port}: {e}");
            return ExitCode::from(3);
        }
    };
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let mode = mode.clone();
        std::thread::spawn(move || serve(conn, &mode));
    }
    ExitCode::SUCCESS
}

fn serve(mut conn: TcpStream, mode: &AtomicU8) {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&head);
    let path = request.split(' ').nth(1).unwrap_or("/");
    if mode.load(Ordering::SeqCst) == HUNG {
        // Hung: hold the connection and never answer.
        loop {
            std::thread::park();
        }
    }
    let status = match path {
        "/hang" => {
            mode.store(HUNG, Ordering::SeqCst);
            "200 OK"
        }
        "/fail" => {
            mode.store(FAILING, Ordering::SeqCst);
            "200 OK"
        }
        "/health" if mode.load(Ordering::SeqCst) == FAILING => "500 Internal Server Error",
        _ => "200 OK",
    };
    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = conn.write_all(reply.as_bytes());
}

fn worker(crash_after_ms: u64) -> ExitCode {
    if crash_after_ms == 0 {
        loop {
            std::thread::park();
        }
    }
    std::thread::sleep(Duration::from_millis(crash_after_ms));
    ExitCode::from(1)
}

fn cache(exit_code: u8) -> ExitCode {
    if exit_code != 0 {
        return ExitCode::from(exit_code);
    }
    loop {
        std::thread::park();
    }
}

fn listen(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listen: bind {port}: {e}");
            return ExitCode::from(3);
        }
    };
    // Announce readiness (for the stdout-notification variant), then accept and drop:
    // readiness probes only need the connect to succeed.
    println!("ready");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        drop(conn);
    }
    ExitCode::SUCCESS
}

/// Sends a one-off `GET path` to 127.0.0.1:port and ignores the answer.
pub(crate) fn poke(port: u16, path: &str) {
    if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let mut buf = [0u8; 128];
        let _ = conn.read(&mut buf);
    }
}

/// Whether a process is alive (not gone, not a zombie), from `/proc/PID/stat`.
pub(crate) fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}
