//! forkyard's only script: `cargo xtask demo | bench | fault | ci`.
//!
//! Crates join in by convention, so this file does not grow with the workspace:
//!
//! - `crates/<name>/examples/demo.rs` is the narrated demo `cargo xtask demo <name>` runs;
//!   it must accept `--quick` (a short run for CI), exit 0, and leave no process behind.
//! - `crates/<name>/benches/*.rs` are criterion benches (each a `[[bench]]` of the
//!   same name), and `crates/<name>/examples/compare.rs` (optional) measures side by
//!   side with the baselines and peers present on the machine; `cargo xtask bench
//!   <name>` runs both. In a criterion group the function whose id ends with
//!   ` (baseline)` is the baseline the others are reported against, and a compare
//!   example records the rows it prints with `forkyard_testkit::bench::Recorder`;
//!   `cargo xtask bench --summary` turns both into `docs/bench.md` (see [`report`]).
//! - `crates/<name>/examples/fault.rs` is the fault-injection suite
//!   `cargo xtask fault <name> --seed N` runs; it must accept `--quick` (a run of
//!   seconds, as CI runs it).
//!
//! `cargo xtask ci` is what CI runs, cheapest first (see [`ci`]); `cargo xtask tools`
//! installs the system packages its tests drive (chromium, chromedriver,
//! nats-server) when they are missing.
//!
//! Every example is built first, all of them in one cargo invocation with cargo's
//! progress on screen (see [`build_examples`]), and then run as a binary, so what a
//! task times is the run, never the build, and nothing is built mid-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod report;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "forkyard's tasks: demo, bench, fault, ci"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The two halves of `cargo xtask bench`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPart {
    /// `benches/*.rs`, run by criterion.
    Criterion,
    /// `examples/compare.rs`, side by side with peers.
    Compare,
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
    /// Run benchmarks and side-by-side comparisons (all crates, or one); ends with
    /// where criterion's HTML report is and each group's medians as ratios to its
    /// baseline.
    Bench {
        /// A crate folder name or `all`.
        name: Option<String>,
        /// Then write `docs/bench.md` from every crate's saved results.
        #[arg(long)]
        summary: bool,
        /// With `--summary`: run nothing, only write the page from the saved results.
        #[arg(long, requires = "summary")]
        saved: bool,
        /// Run only the criterion benches, or only the compare examples.
        #[arg(long, value_enum)]
        only: Option<BenchPart>,
        /// Extra arguments for criterion (after `--`), e.g. `--save-baseline before`.
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
    /// Install the system packages the tests need (chromium, chromedriver,
    /// nats-server) when they are missing from PATH, with apt-get.
    Tools,
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
            summary,
            saved,
            only,
            criterion_args,
        } => {
            if !saved {
                bench(&root, name.as_deref(), only, &criterion_args)?;
            }
            if summary {
                let names = crates_with(&root, "Cargo.toml");
                let page = report::write_summary(&root, &names)?;
                eprintln!("\nwrote {}", page.display());
            }
            Ok(())
        }
        Task::Tools => install_tools().map(|_| ()),
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

/// The bench targets of crate `name`: `crates/<name>/benches/<bench>.rs`, each
/// declared as a `[[bench]]` of the same name.
fn bench_targets(root: &Path, name: &str) -> Vec<String> {
    let mut benches: Vec<String> =
        std::fs::read_dir(root.join("crates").join(name).join("benches"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        let file = e.file_name().to_string_lossy().into_owned();
                        file.strip_suffix(".rs").map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
    benches.sort();
    benches
}

/// `cargo xtask bench [name]`: every bench target of the crate(s), then its
/// `examples/compare.rs` (release), one crate after the other in the order the
/// lessons build on each other. Everything is built first, in two cargo invocations
/// (the benches, the compare examples), so nothing builds mid-run. Ends with the
/// medians of what criterion measured, each as a ratio to its group's baseline, and
/// where criterion's HTML report is.
fn bench(
    root: &Path,
    name: Option<&str>,
    only: Option<BenchPart>,
    criterion_args: &[String],
) -> Result<()> {
    let benches = if only == Some(BenchPart::Compare) {
        Vec::new()
    } else {
        select(root, name, "benches", "benchmarks").unwrap_or_default()
    };
    let compares = if only == Some(BenchPart::Criterion) {
        Vec::new()
    } else {
        select(root, name, "examples/compare.rs", "comparison").unwrap_or_default()
    };
    if benches.is_empty() && compares.is_empty() {
        bail!(
            "no benchmarks found{}",
            name.map(|n| format!(" for `{n}`")).unwrap_or_default()
        );
    }
    if !benches.is_empty() {
        let mut build = cargo();
        build.args(["bench", "--no-run", "--bench", "*"]);
        for name in &benches {
            build.args(["--package", &format!("forkyard-{name}")]);
        }
        run(
            &format!("building the benches of {}", benches.join(", ")),
            &mut build,
        )?;
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
    let mut measured = Vec::new();
    for name in names {
        let before = target_processes(root);
        if benches.contains(&name) {
            let mut rows = Vec::new();
            for bench in bench_targets(root, &name) {
                let since = std::time::SystemTime::now();
                let mut cmd = cargo();
                cmd.args(["bench", "--package", &format!("forkyard-{name}")])
                    .args(["--bench", &bench, "--"])
                    .args(criterion_args);
                run(&format!("bench {name} ({bench})"), &mut cmd)?;
                rows.extend(report::snapshot_criterion(root, &name, &bench, since)?);
            }
            measured.push((name.clone(), rows));
        }
        if let Some(i) = compares.iter().position(|(n, _)| *n == name) {
            let (_, mut cmd) = compares.remove(i);
            // The example appends its rows (forkyard_testkit::bench::Recorder):
            // start from an empty file, so the rows are this run's.
            let rows = report::compare_rows_path(root, &name);
            if rows.exists() {
                std::fs::remove_file(&rows)
                    .with_context(|| format!("removing {}", rows.display()))?;
            }
            run(&format!("compare {name}"), &mut cmd)?;
        }
        check_nothing_left(root, &before, &format!("bench {name}"))?;
    }
    report::print_run(root, &measured);
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

/// Programs the tests need that cargo does not build, and the Debian packages that
/// provide them: the monitor's browser tests drive chromium through chromedriver
/// (issue #16), mapreduce's NATS engine tests start a nats-server (issue #15).
const TOOLS: [(&str, &str); 3] = [
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("nats-server", "nats-server"),
];

/// The first `program` on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// Installs, with apt-get, the packages of the [`TOOLS`] missing from PATH: one
/// `apt-get update`, then one non-interactive `apt-get install -y` of only those.
/// Does nothing when all are there. Returns the packages it installed.
fn install_tools() -> Result<Vec<&'static str>> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(program, _)| on_path(program).is_none())
        .collect();
    if missing.is_empty() {
        eprintln!(
            "\n==> tools: {} all on PATH; nothing to install",
            TOOLS.map(|(program, _)| program).join(", ")
        );
        return Ok(Vec::new());
    }
    let programs: Vec<&str> = missing.iter().map(|(program, _)| *program).collect();
    let packages: Vec<&'static str> = missing.iter().map(|(_, package)| *package).collect();
    eprintln!(
        "\n==> tools: {} not on PATH; installing {} with apt-get",
        programs.join(", "),
        packages.join(" ")
    );
    let by_hand = format!(
        "install them by hand (`apt-get install -y {}`) and run again",
        packages.join(" ")
    );
    let apt_get = |args: &[&str]| -> Result<Command> {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else if on_path("sudo").is_some() {
            let mut sudo = Command::new("sudo");
            // -n: fail rather than wait for a password nobody will type.
            sudo.args(["-n", "apt-get"]);
            sudo
        } else {
            bail!(
                "installing {} needs root (or sudo): {by_hand}",
                packages.join(" ")
            );
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        Ok(cmd)
    };
    run("apt-get update", &mut apt_get(&["update"])?)
        .with_context(|| format!("apt-get update failed: {by_hand}"))?;
    let mut install = apt_get(&["install", "-y"])?;
    install.args(&packages);
    run(
        &format!("apt-get install {}", packages.join(" ")),
        &mut install,
    )
    .with_context(|| {
        format!(
            "apt-get could not install {}: {by_hand}",
            packages.join(" ")
        )
    })?;
    let still: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| on_path(program).is_none())
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get installed {} but {} is still not on PATH ({}); nats-server goes to \
             /usr/sbin, which some PATHs lack",
            packages.join(" "),
            still.join(", "),
            std::env::var("PATH").unwrap_or_default()
        );
    }
    Ok(packages)
}

/// How many times CI runs every test, so that a test that fails one run in a few
/// fails the change that made it flaky. The budget is 25 minutes on 2 cores from a
/// clean checkout; ARCHITECTURE.md ("The cold build") has the measured figures.
const STRESS_COUNT: u32 = 3;

/// What CI runs, cheapest first, so a formatting slip fails in seconds.
fn ci(root: &Path) -> Result<()> {
    let start = Instant::now();
    let mut timings = Vec::new();
    let step = |timings: &mut Vec<(String, Duration)>, label: &str, cmd: &mut Command| {
        run(label, cmd).map(|took| timings.push((label.to_owned(), took)))
    };
    step(
        &mut timings,
        "fmt",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        &mut timings,
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
        &mut timings,
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // The programs the browser and NATS tests drive, before any test runs.
    let tools_started = Instant::now();
    install_tools()?;
    timings.push(("tools".into(), tools_started.elapsed()));
    // CI=true makes insta refuse to write new snapshots: a missing one fails.
    // Every test runs STRESS_COUNT times, so a flaky test fails the change that
    // made it flaky rather than a later one.
    //
    // One nextest run per iteration, each checked, rather than nextest's own
    // `--stress-count`: cargo-nextest 0.9.143 exited 0 from a stress run whose
    // second of three iterations had failed (only the last iteration's result
    // reached the exit code), which let a flaky test through CI.
    for i in 1..=STRESS_COUNT {
        step(
            &mut timings,
            &format!("nextest {i}/{STRESS_COUNT}"),
            cargo()
                .args(["nextest", "run", "--workspace", "--profile", "ci"])
                .env("CI", "true"),
        )?;
    }
    step(
        &mut timings,
        "doc tests",
        cargo()
            .args(["test", "--doc", "--workspace"])
            .env("CI", "true"),
    )?;
    // Build every bench so none rots, without running them (their figures mean
    // something only on a quiet machine, and take minutes). The dev profile reuses
    // the dependencies the tests were built with (criterion is a dev-dependency, so
    // nextest built it); the bench profile would build the whole workspace again in
    // release. `--bench '*'`: the `[[bench]]` targets only, not every library's unit
    // tests once more in bench mode.
    step(
        &mut timings,
        "bench build",
        cargo().args([
            "bench",
            "--no-run",
            "--workspace",
            "--bench",
            "*",
            "--profile",
            "dev",
        ]),
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
