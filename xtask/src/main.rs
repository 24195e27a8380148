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
//!   `cargo xtask fault <name> --seed N` runs; it must accept `--quick` (a run of
//!   seconds, as CI runs it).
//!
//! Every example is built first, all of them in one cargo invocation with cargo's
//! progress on screen (see [`build_examples`]), and then run as a binary, so what a
//! task times is the run, never the build, and nothing is built mid-run.

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
        /// A short run of each suite (seconds), as CI does.
        #[arg(long)]
        quick: bool,
        /// Build the suites in the dev profile (as CI does, reusing its build)
        /// instead of release.
        #[arg(long)]
        dev: bool,
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
        Task::Fault {
            name,
            seed,
            quick,
            dev,
        } => fault(&root, name.as_deref(), seed, quick, !dev),
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

/// Builds `example` of every crate in `names` (and every `[[bin]]` of those crates and
/// of testkit: the fixtures, probes and workers an example may spawn) in **one** cargo
/// invocation, with cargo's progress on screen, and returns, per crate, the command
/// that runs the built example binary directly.
///
/// This is the one place that knows how an example is built and run, shared by
/// demo, bench (compare) and fault. Running the binary rather than `cargo run`
/// keeps building out of every time we print, and building everything first means
/// no example goes quiet mid-run while cargo builds something it needs.
fn build_examples(
    names: &[String],
    example: &str,
    release: bool,
) -> Result<Vec<(String, Command)>> {
    let mut cmd = cargo();
    // JSON on stdout tells us where each binary went (every crate's example is
    // called `demo`, so `target/debug/examples/demo` names only one of them);
    // diagnostics and the progress stay on stderr, rendered as usual.
    cmd.args(["build", "--message-format=json-render-diagnostics"]);
    for name in names {
        cmd.args(["--package", &format!("forkyard-{name}")]);
    }
    if !names.iter().any(|n| n == "testkit") {
        cmd.args(["--package", "forkyard-testkit"]);
    }
    cmd.args(["--example", example, "--bins"]);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "\n==> building {} `{example}` example{} and the binaries they run, in one cargo invocation{}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if release { " (release)" } else { "" },
    );
    eprintln!("    $ {}", display(&cmd));
    let start = Instant::now();
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("building the examples failed ({})", out.status);
    }
    eprintln!("<== built in {:.1?}", start.elapsed());
    // Where the examples went. Every crate's example has the same name, so cargo's
    // uplifted `target/<profile>/examples/demo` names only one of them (and its JSON
    // messages all point there); the binary of each is `examples/demo-<hash>`, whose
    // dep-info file names the example's source.
    let mut examples_dir = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_example = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "example"));
        if msg["reason"] == "compiler-artifact"
            && is_example
            && msg["target"]["name"] == example
            && let Some(exe) = msg["executable"].as_str()
        {
            examples_dir = Path::new(exe).parent().map(Path::to_path_buf);
        }
    }
    let examples_dir = examples_dir.context("cargo reported no example binary")?;
    names
        .iter()
        .map(|name| {
            let source = format!("crates/{name}/examples/{example}.rs");
            let exe = built_example(&examples_dir, example, &source)
                .with_context(|| format!("cargo built no binary for {source}"))?;
            let mut run = Command::new(exe);
            // Examples that can build what they need themselves (for `cargo run
            // --example`) skip that when run from here: it is built.
            run.env("FORKYARD_PREBUILT", "1");
            Ok((name.clone(), run))
        })
        .collect()
}

/// The newest `<example>-<hash>` binary in `dir` whose dep-info names `source`.
fn built_example(dir: &Path, example: &str, source: &str) -> Option<PathBuf> {
    let prefix = format!("{example}-");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hash = name.strip_prefix(&prefix)?.strip_suffix(".d")?;
            let deps = std::fs::read_to_string(entry.path()).ok()?;
            let first = deps.lines().next()?;
            if !first.split_whitespace().any(|dep| dep == source) {
                return None;
            }
            let exe = dir.join(format!("{prefix}{hash}"));
            let modified = exe.metadata().ok()?.modified().ok()?;
            Some((modified, exe))
        })
        .max()
        .map(|(_, exe)| exe)
}

fn demo(root: &Path, name: Option<&str>, quick: bool, release: bool) -> Result<()> {
    let names = select(root, name, "examples/demo.rs", "demo")?;
    let mut times = Vec::new();
    for (name, mut cmd) in build_examples(&names, "demo", release)? {
        if quick {
            cmd.arg("--quick");
        }
        let before = target_processes(root);
        times.push((name.clone(), run(&format!("demo {name}"), &mut cmd)?));
        check_nothing_left(root, &before, &format!("demo {name}"))?;
    }
    if times.len() > 1 {
        eprintln!("\ndemo run times (building excluded):");
        for (name, took) in times {
            eprintln!("  {name:<10} {took:>8.1?}");
        }
    }
    Ok(())
}

/// Live processes whose executable is in this checkout's `target/` (zombies
/// have no `exe` link and do not count), other than this xtask and its ancestors,
/// and other than test binaries (`target/<profile>/deps/`): examples never run
/// those, and a test run next to us (a colleague's, in a shared checkout) is not
/// ours to report.
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
            let test_binary = exe.parent().is_some_and(|dir| dir.ends_with("deps"));
            (exe.starts_with(&target) && !test_binary).then(|| (pid, exe.display().to_string()))
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
    let benches = select(root, name, "benches", "benchmarks").unwrap_or_default();
    let compares = select(root, name, "examples/compare.rs", "comparison").unwrap_or_default();
    if benches.is_empty() && compares.is_empty() {
        bail!(
            "no benchmarks found{}",
            name.map(|n| format!(" for `{n}`")).unwrap_or_default()
        );
    }
    let mut compares = if compares.is_empty() {
        Vec::new()
    } else {
        build_examples(&compares, "compare", true)?
    };
    // Every crate with either, in the order the lessons build on each other.
    let names: Vec<String> = crates_with(root, "Cargo.toml")
        .into_iter()
        .filter(|n| benches.contains(n) || compares.iter().any(|(c, _)| c == n))
        .collect();
    for name in names {
        let before = target_processes(root);
        if benches.contains(&name) {
            let mut cmd = cargo();
            cmd.args(["bench", "--package", &format!("forkyard-{name}"), "--"])
                .args(criterion_args);
            run(&format!("bench {name}"), &mut cmd)?;
        }
        if let Some(i) = compares.iter().position(|(n, _)| *n == name) {
            let (_, mut cmd) = compares.remove(i);
            run(&format!("compare {name}"), &mut cmd)?;
        }
        check_nothing_left(root, &before, &format!("bench {name}"))?;
    }
    Ok(())
}

fn fault(
    root: &Path,
    name: Option<&str>,
    seed: Option<u64>,
    quick: bool,
    release: bool,
) -> Result<()> {
    let names = select(root, name, "examples/fault.rs", "fault suite")?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    for (name, mut cmd) in build_examples(&names, "fault", release)? {
        cmd.args(["--seed", &seed.to_string()]);
        if quick {
            cmd.arg("--quick");
        }
        let before = target_processes(root);
        let how = if quick { ", quick" } else { "" };
        run(&format!("fault {name} (seed {seed}{how})"), &mut cmd)?;
        check_nothing_left(root, &before, &format!("fault {name}"))?;
    }
    Ok(())
}

/// How many times CI runs every test, so that a test that fails one run in a few
/// fails the change that made it flaky. The budget is 25 minutes on 2 cores from a
/// clean checkout; ARCHITECTURE.md ("The cold build") has the measured figures.
const STRESS_COUNT: u32 = 3;

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
    // Every test runs STRESS_COUNT times, so a flaky test fails the change that
    // made it flaky rather than a later one.
    step(
        "nextest",
        cargo()
            .args(["nextest", "run", "--workspace", "--profile", "ci"])
            .args(["--stress-count", &STRESS_COUNT.to_string()])
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
    // The quick fault suites, in the dev profile that everything above built
    // (a release build would double the cold build), with a seed printed for
    // replay: a lost task or a broken restart bound fails here.
    let faults_started = Instant::now();
    fault(root, None, None, true, false)?;
    timings.push(("fault --quick".into(), faults_started.elapsed()));
    eprintln!("\nci passed in {:.1?}:", start.elapsed());
    for (label, took) in timings {
        eprintln!("  {label:<14} {took:>8.1?}");
    }
    Ok(())
}
