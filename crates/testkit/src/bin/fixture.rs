//! `forkyard-fixture`: one binary, many misbehaving processes.
//!
//! Every forkyard test that needs a real child runs this binary with a subcommand.
//! Each subcommand does one thing on purpose (crash, hang, flood, leak, ...), and
//! announces readiness on stdout with a line starting `ready` when a test needs to
//! synchronise with it, so tests wait on an event instead of sleeping.
//!
//! Run `forkyard-fixture help` for the list.

use std::io::{self, BufRead, Read, Write};
use std::process::{Command, ExitCode};
use std::time::Duration;

const HELP: &str = "\
forkyard-fixture <subcommand> [args]

  echo [ARGS..]                 print ARGS on one line, then copy stdin to stdout until EOF
  exit-with N                   exit with code N
  crash segv|abort              die by SIGSEGV or SIGABRT
  hang                          print `ready`, then sleep forever
  ignore-sigterm                ignore SIGTERM (and SIGINT, SIGHUP), print `ready`, sleep forever
  flood STDOUT_BYTES STDERR_BYTES
                                write that many bytes to stdout and stderr at once, then exit 0
  grandchild [--setsid] [--children N] [--depth D]
                                spawn a tree of descendants that ignore SIGTERM/SIGHUP and try to
                                survive; with --setsid one of them escapes into its own session.
                                Prints `pid P` for every descendant, then `ready`, then sleeps
  leak-fd N                     open N fds without close-on-exec, print `ready N`, sleep forever
  list-fds                      print the fd numbers this process has open, one per line
  alloc-until-killed [STEP_MIB] allocate and touch STEP_MIB (default 8) MiB at a time, forever;
                                prints `rss N` after every step
  cpu-burn [SECONDS]            spin until SECONDS of its own CPU time are used (forever without)
  print-env [NAME..]            print NAME=VALUE for the given names (all when none)
  sleep SECONDS                 sleep, then exit 0
  own-tree [--trees N] [--setsid] [--cgroup DIR]
                                an owner: spawns N `grandchild` trees through forkyard-child
                                (optionally each in a cgroup under DIR), prints `pid P` for every
                                descendant, `ready`, then hangs; kill it to test owner death
  spawn-and-hang PROGRAM [ARGS..]
                                run PROGRAM as a child (not waited), print `child P`, `ready`, hang
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    match run(cmd, rest) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("forkyard-fixture {cmd}: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: &str, rest: &[String]) -> Result<ExitCode, String> {
    match cmd {
        "echo" => echo(rest),
        "exit-with" => {
            let code: u8 = arg(rest, 0, "N")?;
            Ok(ExitCode::from(code))
        }
        "crash" => crash(rest.first().map(String::as_str).unwrap_or("segv")),
        "hang" => {
            ready("ready");
            hang()
        }
        "ignore-sigterm" => {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                ignore_signal(sig);
            }
            ready("ready");
            hang()
        }
        "flood" => flood(arg(rest, 0, "STDOUT_BYTES")?, arg(rest, 1, "STDERR_BYTES")?),
        "grandchild" => grandchild(rest),
        "leak-fd" => leak_fd(arg(rest, 0, "N")?),
        "list-fds" => {
            let mut out = io::stdout().lock();
            for fd in forkyard_testkit::open_fds(std::process::id()) {
                writeln!(out, "{fd}").map_err(|e| e.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        "alloc-until-killed" => alloc_until_killed(
            rest.first()
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| format!("{e}"))?
                .unwrap_or(8),
        ),
        "cpu-burn" => cpu_burn(
            rest.first()
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| format!("{e}"))?,
        ),
        "print-env" => {
            let mut out = io::stdout().lock();
            if rest.is_empty() {
                for (k, v) in std::env::vars_os() {
                    writeln!(out, "{}={}", k.to_string_lossy(), v.to_string_lossy())
                        .map_err(|e| e.to_string())?;
                }
            } else {
                for name in rest {
                    if let Some(v) = std::env::var_os(name) {
                        writeln!(out, "{name}={}", v.to_string_lossy())
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "sleep" => {
            let secs: f64 = arg(rest, 0, "SECONDS")?;
            std::thread::sleep(Duration::from_secs_f64(secs));
            Ok(ExitCode::SUCCESS)
        }
        "own-tree" => own_tree(rest),
        "spawn-and-hang" => {
            let (program, args) = rest.split_first().ok_or("missing PROGRAM")?;
            let child = Command::new(program)
                .args(args)
                .spawn()
                .map_err(|e| format!("spawn {program}: {e}"))?;
            println!("child {}", child.id());
            ready("ready");
            hang()
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown subcommand `{other}`\n{HELP}")),
    }
}

fn arg<T: std::str::FromStr>(rest: &[String], idx: usize, name: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let raw = rest.get(idx).ok_or_else(|| format!("missing {name}"))?;
    raw.parse().map_err(|e| format!("bad {name} `{raw}`: {e}"))
}

/// Prints a readiness line and flushes, so a parent reading lines can proceed.
fn ready(line: &str) {
    let mut out = io::stdout().lock();
    // A parent that closed our stdout does not care about readiness.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

fn ignore_signal(sig: libc::c_int) {
    // SAFETY: installing SIG_IGN is async-signal-safe and has no Rust-visible state.
    unsafe {
        libc::signal(sig, libc::SIG_IGN);
    }
}

fn echo(rest: &[String]) -> Result<ExitCode, String> {
    let mut out = io::stdout().lock();
    if !rest.is_empty() {
        writeln!(out, "{}", rest.join(" ")).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        out.write_all(&line).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
}

fn crash(how: &str) -> Result<ExitCode, String> {
    match how {
        "segv" => {
            // Restore the default action so the kernel really kills us with SIGSEGV
            // (the Rust runtime installs a handler for stack overflows).
            // SAFETY: resetting a disposition and raising a signal are plain syscalls.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            Err("SIGSEGV did not kill us".into())
        }
        "abort" => std::process::abort(),
        other => Err(format!("unknown crash kind `{other}` (segv|abort)")),
    }
}

fn flood(stdout_bytes: u64, stderr_bytes: u64) -> Result<ExitCode, String> {
    let writer = |mut sink: Box<dyn Write + Send>, mut left: u64, byte: u8| {
        move || -> io::Result<()> {
            let mut chunk = vec![byte; 64 * 1024];
            // Newlines every 128 bytes so line readers see lines, not one endless blob.
            for i in (127..chunk.len()).step_by(128) {
                chunk[i] = b'\n';
            }
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                sink.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            sink.flush()
        }
    };
    let out = std::thread::spawn(writer(Box::new(io::stdout()), stdout_bytes, b'o'));
    let err = std::thread::spawn(writer(Box::new(io::stderr()), stderr_bytes, b'e'));
    for handle in [out, err] {
        handle
            .join()
            .map_err(|_| "writer thread panicked")?
            .map_err(|e| e.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A tree of descendants that try hard to survive.
///
/// `--children N` direct children, each with one grandchild when `--depth 2` (the default).
/// Every descendant ignores SIGTERM and SIGHUP. With `--setsid` the last grandchild calls
/// setsid(2), leaving our process group: the documented limit of process-group kills.
/// Descendants report their pid on a shared stdout as `pid P`; the root prints `ready`
/// once every descendant has reported.
fn grandchild(rest: &[String]) -> Result<ExitCode, String> {
    let mut setsid = false;
    let mut children = 2usize;
    let mut depth = 2usize;
    // Internal flags, used when the tree re-runs this binary for its descendants.
    let mut level = 0usize;
    let mut last = false;
    let mut escape = false;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let raw = it.next().ok_or_else(|| format!("missing {name}"))?;
            raw.parse().map_err(|e| format!("bad {name} `{raw}`: {e}"))
        };
        match flag.as_str() {
            "--setsid" => setsid = true,
            "--children" => children = value("N")?,
            "--depth" => depth = value("D")?,
            "--level" => level = value("LEVEL")?,
            "--last" => last = true,
            "--escape" => escape = true,
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    ignore_signal(libc::SIGTERM);
    ignore_signal(libc::SIGHUP);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let descendant = |level: usize, last: bool, escape: bool| {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "grandchild",
            "--level",
            &level.to_string(),
            "--depth",
            &depth.to_string(),
        ]);
        if setsid {
            cmd.arg("--setsid");
        }
        if last {
            cmd.arg("--last");
        }
        if escape {
            cmd.arg("--escape");
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    };
    if level > 0 {
        // A descendant: maybe escape, spawn the next level, report, then sleep.
        if escape {
            // SAFETY: setsid has no preconditions; failure is reported below.
            if unsafe { libc::setsid() } < 0 {
                return Err(format!("setsid: {}", io::Error::last_os_error()));
            }
        }
        let mut kids = Vec::new();
        if level < depth {
            // The last chain's deepest member is the one that escapes.
            let next_escape = setsid && last && level + 1 == depth;
            kids.push(
                descendant(level + 1, last, next_escape)
                    .spawn()
                    .map_err(|e| e.to_string())?,
            );
        }
        println!("pid {}", std::process::id());
        let _ = io::stdout().flush();
        hang()
    }
    // The root: spawn the direct children and wait for the whole tree to report.
    let expected = children * depth.max(1);
    let mut kids = Vec::new();
    let (reader, writer) = io::pipe().map_err(|e| e.to_string())?;
    for i in 0..children {
        let last = i + 1 == children;
        let escape = setsid && last && depth == 1;
        let mut cmd = descendant(1, last, escape);
        cmd.stdout(writer.try_clone().map_err(|e| e.to_string())?);
        kids.push(cmd.spawn().map_err(|e| e.to_string())?);
    }
    drop(writer);
    let mut reader = io::BufReader::new(reader);
    let mut out = io::stdout().lock();
    let mut seen = 0;
    let mut line = String::new();
    while seen < expected {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!(
                "descendants stopped reporting after {seen} of {expected}"
            ));
        }
        if line.starts_with("pid ") {
            seen += 1;
            out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    // Keep draining so descendants never block on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    hang()
}

fn leak_fd(n: usize) -> Result<ExitCode, String> {
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        let mut pair = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we own; flags 0 means no O_CLOEXEC,
        // which is the point of this fixture.
        if unsafe { libc::pipe2(pair.as_mut_ptr(), 0) } < 0 {
            return Err(format!("pipe2: {}", io::Error::last_os_error()));
        }
        fds.extend(pair);
    }
    ready(&format!("ready {}", fds.len()));
    hang()
}

fn alloc_until_killed(step_mib: usize) -> Result<ExitCode, String> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; step_mib << 20];
        // Touch every page so the memory is resident, not just reserved.
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        hoard.push(block);
        let rss = forkyard_testkit::rss_bytes(std::process::id()).unwrap_or(0);
        println!("rss {rss}");
        let _ = io::stdout().flush();
    }
}

/// Spins until it has used `seconds` of its own CPU time (not wall-clock time: on a
/// loaded machine a burner timed by the wall clock gets only a share of a core, and a
/// test reading its rusage would see less CPU than it asked for).
fn cpu_burn(seconds: Option<f64>) -> Result<ExitCode, String> {
    let cpu_used = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let mut x: u64 = 1;
    loop {
        for _ in 0..1_000_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
        if let Some(s) = seconds
            && cpu_used() >= s
        {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// An owner process for owner-death tests: everything it spawns goes through
/// forkyard-child, and the test kills this process with SIGKILL.
fn own_tree(rest: &[String]) -> Result<ExitCode, String> {
    let mut trees = 2usize;
    let mut setsid = false;
    let mut cgroup: Option<String> = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--trees" => {
                trees = it
                    .next()
                    .ok_or("missing N")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--setsid" => setsid = true,
            "--cgroup" => cgroup = Some(it.next().ok_or("missing DIR")?.clone()),
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut children = Vec::new();
        let mut out = String::new();
        for _ in 0..trees {
            let mut cmd = Command::new(&exe);
            cmd.args(["grandchild", "--children", "2", "--depth", "2"]);
            if setsid {
                cmd.arg("--setsid");
            }
            let mut builder = forkyard_child::Child::builder(&mut cmd)
                .stdin(forkyard_child::Input::Null)
                .stdout(forkyard_child::Output::lines());
            if let Some(dir) = &cgroup {
                builder = builder.cgroup(dir);
            }
            let mut child = builder.spawn().map_err(|e| e.to_string())?;
            out.push_str(&format!("pid {}\n", child.id()));
            while let Some(line) = child.next_line().await {
                let text = line.text();
                if text == "ready" {
                    break;
                }
                out.push_str(&text);
                out.push('\n');
            }
            children.push(child);
        }
        print!("{out}");
        ready("ready");
        // Wait to be killed; the children stay owned by this process.
        std::future::pending::<()>().await;
        drop(children);
        Ok::<(), String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
