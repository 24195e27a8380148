//! forkyard's only script: `cargo xtask demo | bench | fault | ci`.
//!
//! Crates join in by convention, so this file does not grow with the workspace:
//!
//! - `crates/<name>/examples/demo.rs` is the narrated demo `cargo xtask demo <name>` runs;
//!   it must accept `--quick` (a short run for CI), exit 0, and leave no process behind.
//! - `crates/<name>/benches/*.rs` are criterion benches, and
//!   `crates/<name>/examples/compare.rs` (optional) measures side by side with the
//!   baselines and peers present on the machine; `cargo xtask bench <name>` runs both.
//! - `crates/<name>/examples/fault.rs` is the fault-injection suite
//!   `cargo xtask fault <name> --seed N` runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "forkyard's tasks: demo, bench, fault, ci"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the narrated demos (all crates, or one).
    Demo {
        /// A crate folder name (`child`, `ipc`, ...) or `all`.
        name: Option<String>,
        /// Short runs, as CI does.
        #[arg(long)]
        quick: bool,
        /// Build the demos with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run benchmarks and side-by-side comparisons (all crates, or one).
    Bench {
        /// A crate folder name or `all`.
        name: Option<String>,
        /// Extra arguments for criterion (after `--`).
        #[arg(last = true)]
        criterion_args: Vec<String>,
    },
    /// Run a fault-injection suite.
    Fault {
        /// A crate folder name, or `all`.
        name: Option<String>,
        /// Seed for the random schedule (printed, so a failure can be replayed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Everything CI checks, cheapest first.
    Ci,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Demo {
            name,
            quick,
            release,
        } => demo(&root, name.as_deref(), quick, release),
        Task::Bench {
            name,
            criterion_args,
        } => bench(&root, name.as_deref(), &criterion_args),
        Task::Fault { name, seed } => fault(&root, name.as_deref(), seed),
        Task::Ci => ci(&root),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Crate folders under `crates/` that have `file` (relative to the crate), sorted
/// in the order the lessons build on each other.
fn crates_with(root: &Path, file: &str) -> Vec<String> {
    const ORDER: [&str; 8] = [
        "child",
        "ipc",
        "pool",
        "supervise",
        "secure",
        "perf",
        "mapreduce",
        "testkit",
    ];
    let mut names: Vec<String> = std::fs::read_dir(root.join("crates"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().join(file).exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| {
        (
            ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()),
            n.clone(),
        )
    });
    names
}

fn select(root: &Path, name: Option<&str>, file: &str, what: &str) -> Result<Vec<String>> {
    let all = crates_with(root, file);
    match name {
        None | Some("all") => Ok(all),
        Some(one) if all.iter().any(|n| n == one) => Ok(vec![one.to_owned()]),
        Some(one) => bail!(
            "no {what} for `{one}` (crates with one: {})",
            all.join(", ")
        ),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command, echoing it, failing with its status.
fn run(label: &str, cmd: &mut Command) -> Result<Duration> {
    eprintln!("\n==> {label}\n    $ {}", display(cmd));
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("running {label}"))?;
    let took = start.elapsed();
    if !status.success() {
        bail!("{label} failed ({status}) after {took:.1?}");
    }
    eprintln!("<== {label}: ok in {took:.1?}");
    Ok(took)
}

fn display(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn demo(root: &Path, name: Option<&str>, quick: bool, release: bool) -> Result<()> {
    let names = select(root, name, "examples/demo.rs", "demo")?;
    for name in names {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--quiet",
            "--package",
            &format!("forkyard-{name}"),
            "--example",
            "demo",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.arg("--");
        if quick {
            cmd.arg("--quick");
        }
        let before = target_processes(root);
        run(&format!("demo {name}"), &mut cmd)?;
        check_nothing_left(root, &before, &format!("demo {name}"))?;
    }
    Ok(())
}

/// Live processes whose executable is in this checkout's `target/` (zombies
/// have no `exe` link and do not count), other than this xtask and its ancestors.
fn target_processes(root: &Path) -> Vec<(u32, String)> {
    let target = root.join("target");
    let mine = ancestors(std::process::id());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !mine.contains(pid))
        .filter_map(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            exe.starts_with(&target)
                .then(|| (pid, exe.display().to_string()))
        })
        .collect()
}

/// Fails if a process started from `target/` since `before` was taken still
/// runs, after giving it a moment to exit.
fn check_nothing_left(root: &Path, before: &[(u32, String)], after: &str) -> Result<()> {
    let leftovers = || -> Vec<(u32, String)> {
        target_processes(root)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut interval = Duration::from_millis(10);
    loop {
        let left = leftovers();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{after} left processes running: {left:?}");
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

fn ancestors(mut pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    while pid > 1 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            break;
        };
        pid = ppid;
        chain.push(pid);
    }
    chain
}

fn bench(root: &Path, name: Option<&str>, criterion_args: &[String]) -> Result<()> {
    let mut names = select(root, name, "benches", "benchmarks").unwrap_or_default();
    for extra in select(root, name, "examples/compare.rs", "comparison").unwrap_or_default() {
        if !names.contains(&extra) {
            names.push(extra);
        }
    }
    if names.is_empty() {
        bail!(
            "no benchmarks found{}",
            name.map(|n| format!(" for `{n}`")).unwrap_or_default()
        );
    }
    for name in names {
        let package = format!("forkyard-{name}");
        let before = target_processes(root);
        if root.join("crates").join(&name).join("benches").exists() {
            let mut cmd = cargo();
            cmd.args(["bench", "--package", &package, "--"])
                .args(criterion_args);
            run(&format!("bench {name}"), &mut cmd)?;
        }
        if root
            .join("crates")
            .join(&name)
            .join("examples/compare.rs")
            .exists()
        {
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--quiet",
                "--release",
                "--package",
                &package,
                "--example",
                "compare",
            ]);
            run(&format!("compare {name}"), &mut cmd)?;
        }
        check_nothing_left(root, &before, &format!("bench {name}"))?;
    }
    Ok(())
}

fn fault(root: &Path, name: Option<&str>, seed: Option<u64>) -> Result<()> {
    let names = select(root, name, "examples/fault.rs", "fault suite")?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    for name in names {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--quiet",
            "--release",
            "--package",
            &format!("forkyard-{name}"),
            "--example",
            "fault",
        ]);
        cmd.args(["--", "--seed", &seed.to_string()]);
        let before = target_processes(root);
        run(&format!("fault {name} (seed {seed})"), &mut cmd)?;
        check_nothing_left(root, &before, &format!("fault {name}"))?;
    }
    Ok(())
}

/// What CI runs, cheapest first, so a formatting slip fails in seconds.
fn ci(root: &Path) -> Result<()> {
    let start = Instant::now();
    let mut timings = Vec::new();
    let mut step = |label: &str, cmd: &mut Command| -> Result<()> {
        timings.push((label.to_owned(), run(label, cmd)?));
        Ok(())
    };
    step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // CI=true makes insta refuse to write new snapshots: a missing one fails.
    step(
        "nextest",
        cargo()
            .args(["nextest", "run", "--workspace", "--profile", "ci"])
            .env("CI", "true"),
    )?;
    step(
        "doc tests",
        cargo()
            .args(["test", "--doc", "--workspace"])
            .env("CI", "true"),
    )?;
    let demos_started = Instant::now();
    demo(root, None, true, false)?;
    timings.push(("demo --quick".into(), demos_started.elapsed()));
    eprintln!("\nci passed in {:.1?}:", start.elapsed());
    for (label, took) in timings {
        eprintln!("  {label:<14} {took:>8.1?}");
    }
    Ok(())
}
