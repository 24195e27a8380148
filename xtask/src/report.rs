//! What `cargo xtask bench` leaves behind, and the page it writes from it.
//!
//! Two sources, both under the target directory:
//!
//! - **criterion's saved estimates**, `target/criterion/<group>/<function>/new/`
//!   (`benchmark.json` names the benchmark, `estimates.json` holds its median with a
//!   95 % interval). After each bench binary runs, [`snapshot_criterion`] takes the
//!   benchmarks it measured (those whose estimates are newer than the run's start) into
//!   `target/bench/<crate>.criterion.jsonl`, with the load average and the time, so the
//!   summary knows which crate each group belongs to and under what load it ran.
//! - **the compare examples' rows**, `target/bench/<crate>.jsonl`, written by
//!   `forkyard_testkit::bench::Recorder` (one JSON object per line).
//!
//! **The baseline convention.** In a criterion group, the function whose id ends with
//! [`BASELINE_MARK`] (`" (baseline)"`) is the group's baseline; every other function's
//! median is reported as a ratio to it. A bench file may state a target for a function
//! in a comment line `// bench target: `group/function` at most 1.3x` (or `at least`),
//! which the summary checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The suffix that marks a criterion group's baseline function.
pub(crate) const BASELINE_MARK: &str = " (baseline)";

/// One criterion benchmark's result, as snapshotted after its run.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) bench: String,
    pub(crate) group: String,
    pub(crate) function: String,
    /// Median time per iteration, nanoseconds, with its 95 % interval.
    pub(crate) median: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
    pub(crate) load: String,
    pub(crate) unix_time: u64,
}

impl Measured {
    fn full_id(&self) -> String {
        if self.function.is_empty() {
            self.group.clone()
        } else {
            format!("{}/{}", self.group, self.function)
        }
    }

    fn is_baseline(&self) -> bool {
        self.function.ends_with(BASELINE_MARK)
    }

    /// The function's name without the baseline mark; a benchmark outside a group
    /// (`c.bench_function`) is named by its group id alone.
    fn label(&self) -> &str {
        if self.function.is_empty() {
            return &self.group;
        }
        self.function
            .strip_suffix(BASELINE_MARK)
            .unwrap_or(&self.function)
    }

    fn to_json(&self) -> Value {
        json!({
            "bench": self.bench, "group": self.group, "function": self.function,
            "median_ns": self.median, "low_ns": self.low, "high_ns": self.high,
            "load": self.load, "unix_time": self.unix_time,
        })
    }

    fn from_json(v: &Value) -> Option<Measured> {
        Some(Measured {
            bench: v["bench"].as_str()?.to_owned(),
            group: v["group"].as_str()?.to_owned(),
            function: v["function"].as_str()?.to_owned(),
            median: v["median_ns"].as_f64()?,
            low: v["low_ns"].as_f64()?,
            high: v["high_ns"].as_f64()?,
            load: v["load"].as_str().unwrap_or_default().to_owned(),
            unix_time: v["unix_time"].as_u64().unwrap_or_default(),
        })
    }
}

/// `CARGO_TARGET_DIR`, or `target/` of the workspace.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn bench_dir(root: &Path) -> PathBuf {
    target_dir(root).join("bench")
}

/// The compare rows of `name`, written by its `examples/compare.rs`.
pub(crate) fn compare_rows_path(root: &Path, name: &str) -> PathBuf {
    bench_dir(root).join(format!("{name}.jsonl"))
}

fn criterion_rows_path(root: &Path, name: &str) -> PathBuf {
    bench_dir(root).join(format!("{name}.criterion.jsonl"))
}

/// The HTML report criterion writes after every bench binary.
pub(crate) fn html_report(root: &Path) -> PathBuf {
    target_dir(root)
        .join("criterion")
        .join("report")
        .join("index.html")
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every `new/` result directory under `dir` (criterion nests one level per part of
/// the id: group, function, parameter).
fn result_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || path.file_name().is_some_and(|n| n == "report") {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() {
                found.push(path);
            }
        } else {
            result_dirs(&path, found);
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Takes the benchmarks that bench binary `bench` of crate `name` measured since
/// `since` into the crate's snapshot (replacing earlier results of the same ids), and
/// returns them.
pub(crate) fn snapshot_criterion(
    root: &Path,
    name: &str,
    bench: &str,
    since: SystemTime,
) -> Result<Vec<Measured>> {
    let mut dirs = Vec::new();
    result_dirs(&target_dir(root).join("criterion"), &mut dirs);
    let load = load_average();
    let now = unix_now();
    let mut measured = Vec::new();
    let mut order = Vec::new();
    for dir in dirs {
        let estimates = dir.join("estimates.json");
        let Ok(written) = estimates.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if written < since {
            continue;
        }
        order.push(written);
        let id = read_json(&dir.join("benchmark.json"))?;
        let est = read_json(&estimates)?;
        let median = &est["median"];
        let mut function = id["function_id"].as_str().unwrap_or_default().to_owned();
        if let Some(value) = id["value_str"].as_str() {
            function = format!("{function}/{value}");
        }
        measured.push(Measured {
            bench: bench.to_owned(),
            group: id["group_id"].as_str().unwrap_or_default().to_owned(),
            function,
            median: median["point_estimate"].as_f64().unwrap_or(f64::NAN),
            low: median["confidence_interval"]["lower_bound"]
                .as_f64()
                .unwrap_or(f64::NAN),
            high: median["confidence_interval"]["upper_bound"]
                .as_f64()
                .unwrap_or(f64::NAN),
            load: load.clone(),
            unix_time: now,
        });
    }
    // In the order they ran, which is the order of the bench's code.
    let mut ordered: Vec<(SystemTime, Measured)> = order.into_iter().zip(measured).collect();
    ordered.sort_by_key(|(written, _)| *written);
    let measured: Vec<Measured> = ordered.into_iter().map(|(_, m)| m).collect();
    // Merge: a filtered run (`-- <filter>`) replaces only what it measured.
    let mut all = load_criterion(root, name);
    for m in &measured {
        match all.iter_mut().find(|old| old.full_id() == m.full_id()) {
            Some(old) => *old = m.clone(),
            None => all.push(m.clone()),
        }
    }
    let path = criterion_rows_path(root, name);
    std::fs::create_dir_all(bench_dir(root))?;
    let mut text = String::new();
    for m in &all {
        text.push_str(&m.to_json().to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(measured)
}

fn load_criterion(root: &Path, name: &str) -> Vec<Measured> {
    read_lines(&criterion_rows_path(root, name))
        .iter()
        .filter_map(Measured::from_json)
        .collect()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `rows` by group, groups and members in the order they ran.
fn groups(rows: &[Measured]) -> Vec<(&str, Vec<&Measured>)> {
    let mut groups: Vec<(&str, Vec<&Measured>)> = Vec::new();
    for m in rows {
        match groups.iter_mut().find(|(g, _)| *g == m.group) {
            Some((_, members)) => members.push(m),
            None => groups.push((&m.group, vec![m])),
        }
    }
    groups
}

/// A row of the summary: one criterion function against its group's baseline, or one
/// compare row.
#[derive(Debug)]
struct Line {
    measure: String,
    forkyard: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
    command: String,
}

/// A target stated in a bench file: `// bench target: `group/function` at most 1.3x`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(r) => ratio <= r,
            Target::AtLeast(r) => ratio >= r,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtMost(r) => format!("at most {r}x"),
            Target::AtLeast(r) => format!("at least {r}x"),
        }
    }
}

/// The targets stated in `crates/<name>/benches/*.rs`, by full id.
fn bench_targets(root: &Path, name: &str) -> BTreeMap<String, Target> {
    let mut targets = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(root.join("crates").join(name).join("benches")) else {
        return targets;
    };
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some((id, target)) = parse_target(line) {
                targets.insert(id, target);
            }
        }
    }
    targets
}

fn parse_target(line: &str) -> Option<(String, Target)> {
    let rest = line.trim_start().strip_prefix("//")?;
    let rest = rest.trim_start().strip_prefix("bench target:")?;
    let (_, rest) = rest.split_once('`')?;
    let (id, rest) = rest.split_once('`')?;
    let rest = rest.trim_start();
    let (make, number): (fn(f64) -> Target, &str) = if let Some(n) = rest.strip_prefix("at most ") {
        (Target::AtMost, n)
    } else {
        (Target::AtLeast, rest.strip_prefix("at least ")?)
    };
    let number = number.split_whitespace().next()?.strip_suffix('x')?;
    Some((id.to_owned(), make(number.parse().ok()?)))
}

/// The criterion results of `rows` as summary lines: each function against its group's
/// baseline.
fn criterion_lines(name: &str, rows: &[Measured], targets: &BTreeMap<String, Target>) -> Vec<Line> {
    let mut lines = Vec::new();
    for (group, members) in groups(rows) {
        let baseline = members.iter().find(|m| m.is_baseline());
        for m in &members {
            if m.is_baseline() && members.len() > 1 {
                continue;
            }
            let ratio = baseline
                .filter(|_| !m.is_baseline())
                .map(|b| m.median / b.median);
            let target = targets.get(&m.full_id()).copied();
            lines.push(Line {
                measure: group.to_owned(),
                forkyard: format!("{}: {}", m.label(), human_ns(m.median)),
                baseline: baseline.map_or_else(
                    || "-".to_owned(),
                    |b| format!("{}: {}", b.label(), human_ns(b.median)),
                ),
                ratio,
                target: target.map(Target::describe).unwrap_or_default(),
                met: target.zip(ratio).map(|(t, r)| t.met(r)),
                // A group's functions share the filter `group/`; a lone benchmark
                // is matched by its own id.
                command: format!(
                    "cargo bench -p forkyard-{name} --bench {} -- '{}{}'",
                    m.bench,
                    group,
                    if m.function.is_empty() { "" } else { "/" }
                ),
            });
        }
    }
    lines
}

fn figure(v: &Value) -> String {
    let value = v["value"].as_f64().unwrap_or(f64::NAN);
    let unit = v["unit"].as_str().unwrap_or_default();
    let amount = if unit == "s" {
        human_ns(value * 1e9)
    } else if value >= 1000.0 {
        format!("{} {unit}", thousands(value))
    } else {
        format!("{value:.2} {unit}")
    };
    format!("{}: {amount}", v["label"].as_str().unwrap_or_default())
}

/// The compare rows of `name`: the last row of each measure and pair of contenders
/// (a comparison run by hand appends to the rows of the previous run).
fn compare_lines(rows: &[Value]) -> Vec<Line> {
    let mut last: Vec<((&str, &str, &str), &Value)> = Vec::new();
    for row in rows {
        let key = (
            row["measure"].as_str().unwrap_or_default(),
            row["forkyard"]["label"].as_str().unwrap_or_default(),
            row["baseline"]["label"].as_str().unwrap_or_default(),
        );
        match last.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = row,
            None => last.push((key, row)),
        }
    }
    last.into_iter()
        .map(|((measure, _, _), row)| Line {
            measure: measure.to_owned(),
            forkyard: figure(&row["forkyard"]),
            baseline: figure(&row["baseline"]),
            ratio: row["ratio"].as_f64(),
            target: row["target"].as_str().unwrap_or_default().to_owned(),
            met: row["met"].as_bool(),
            command: row["command"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Nanoseconds as people write a time: `250.0 ns`, `16.1 µs`, `1.72 ms`, `2.41 s`.
pub(crate) fn human_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio_text(r: Option<f64>) -> String {
    r.filter(|r| r.is_finite())
        .map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

fn met_text(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

/// Prints the criterion results measured by this run, per group, with the ratio to
/// the group's baseline, and where the HTML report is.
pub(crate) fn print_run(root: &Path, measured: &[(String, Vec<Measured>)]) {
    let report = html_report(root);
    if measured.iter().any(|(_, m)| !m.is_empty()) {
        eprintln!("\nmedians, and each against its group's baseline (criterion, this run):");
        eprintln!(
            "  {:<10} {:<28} {:<48} {:>10} {:>8}",
            "crate", "group", "function", "median", "ratio"
        );
        for (name, rows) in measured {
            for (group, members) in groups(rows) {
                let baseline = members.iter().find(|m| m.is_baseline());
                for m in &members {
                    let ratio = baseline.map(|b| m.median / b.median);
                    eprintln!(
                        "  {name:<10} {group:<28} {:<48} {:>10} {:>8}",
                        m.function,
                        human_ns(m.median),
                        ratio_text(ratio)
                    );
                }
            }
        }
        eprintln!("  (load average now: {})", load_average());
    }
    if report.is_file() {
        eprintln!(
            "\ncriterion's HTML report (violin and line charts of every group): {}",
            report.display()
        );
    } else {
        eprintln!(
            "\nno HTML report at {} (no criterion bench ran)",
            report.display()
        );
    }
}

/// Civil date and time (UTC) of a Unix time: `2026-12-07 14:05 UTC`.
pub(crate) fn utc(unix: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(String::new(), |kb| {
            format!(", {:.1} GiB of memory", kb / 1024.0 / 1024.0)
        });
    format!("{model}, {cpus} CPUs{memory}, Linux {kernel}")
}

const HOW_TO_READ: &str = "\
## How to read these numbers

- **Read the ratios, not the absolute times.** Every ratio here compares two things
  measured side by side in one run, on one machine, under one load: a criterion group
  runs its functions one after the other within seconds, and the compare examples
  take turns between their contenders (round by round, or best of a few runs each),
  so a busier moment falls on all of them alike. Absolute
  times move with the machine (its CPU, its kernel, what else runs); the ratio moves
  much less. A ratio of two rows measured in different runs means little.
- **Ratio = forkyard ÷ baseline**, in the row's unit: for times (lower is better)
  below 1x means forkyard is faster; for rates (msg/s, req/s, tasks/s; higher is
  better) above 1x means forkyard is faster. The target column says which way the
  goal points. In criterion rows the forkyard column holds each function of the
  group in turn (forkyard's, and also peers and reference rows such as tokio's),
  each against the group's baseline, the function marked `(baseline)` in the bench.
- **Medians and tails.** Criterion's figure is the median of its samples (each
  sample is the mean over many iterations), with a 95 % interval in the HTML report;
  it hides the tail. The compare examples time every call and report p50 and p99
  where the tail matters (round trips); a p99 ratio far above the p50 ratio means
  forkyard has a slower tail (a wake-up, a reallocation), not a slower common case.
- **Noise on a shared 2-core machine.** These ran on a 2-CPU VM shared with other
  engineers' builds (the load average is printed next to every run). Load slows
  whatever needs the CPU at the wrong moment: process spawns and cross-process round
  trips suffer most, because they need both cores at once. Expect absolute times to
  move by tens of percent between runs and ratios by a few percent to 20 %; a target
  missed or met by less than that is not settled by one run.
- **Comparing two runs** (before and after a change): criterion keeps the previous
  result of every benchmark and prints the change against it. To compare on purpose,
  save a named baseline and measure against it:

  ```sh
  cargo xtask bench child -- --save-baseline before    # on the old code
  cargo xtask bench child -- --baseline before         # on the new code: prints the change
  ```

  `cargo bench -p forkyard-<crate> -- --save-baseline NAME` / `--baseline NAME` do
  the same for one crate's benches alone. Run both on the same machine under similar
  load; the HTML report overlays the two.
";

/// Writes `docs/bench.md` from every crate's saved results.
pub(crate) fn write_summary(root: &Path, names: &[String]) -> Result<PathBuf> {
    let mut page = String::new();
    let now = unix_now();
    let _ = writeln!(page, "# Benchmarks\n");
    let _ = writeln!(
        page,
        "Generated by `cargo xtask bench --summary` on {}, from the results the last \
         `cargo xtask bench` of each crate saved (criterion's estimates and the compare \
         examples' rows under `target/bench/`). Do not edit by hand: run it again. \
         Criterion's HTML report, with the violin and line charts of every group, is at \
         `target/criterion/report/index.html` after a run.\n",
        utc(now)
    );
    let _ = writeln!(page, "Machine: {}.\n", machine());
    let _ = writeln!(
        page,
        "Other work may have shared the machine's CPUs (on the machines these pages come \
         from, other engineers' builds and tests often did), so every run below states the \
         load average it saw (1, 5 and 15 minutes). Load average when this page was \
         written: {}.\n",
        load_average()
    );
    page.push_str(HOW_TO_READ);
    for name in names {
        let criterion = load_criterion(root, name);
        let compare = read_lines(&compare_rows_path(root, name));
        if criterion.is_empty() && compare.is_empty() {
            continue;
        }
        let _ = writeln!(page, "\n## {name}\n");
        let mut lines = criterion_lines(name, &criterion, &bench_targets(root, name));
        lines.extend(compare_lines(&compare));
        // One entry per minute, with the load average of its first row.
        let when = |times: Vec<(u64, String)>| -> String {
            let mut seen: Vec<(String, String)> = Vec::new();
            for (t, load) in times {
                let minute = utc(t);
                if !seen.iter().any(|(m, _)| *m == minute) {
                    seen.push((minute, load));
                }
            }
            let seen: Vec<String> = seen
                .into_iter()
                .map(|(minute, load)| format!("{minute} (load average {load})"))
                .collect();
            seen.join(", ")
        };
        if !criterion.is_empty() {
            let _ = writeln!(
                page,
                "Criterion rows measured {}.",
                when(
                    criterion
                        .iter()
                        .map(|m| (m.unix_time, m.load.clone()))
                        .collect()
                )
            );
        }
        if !compare.is_empty() {
            let _ = writeln!(
                page,
                "Compare rows (`examples/compare.rs`) measured {}.",
                when(
                    compare
                        .iter()
                        .map(|r| {
                            (
                                r["unix_time"].as_u64().unwrap_or_default(),
                                r["load"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                )
            );
        }
        let _ = writeln!(
            page,
            "\n| measure | forkyard | baseline or peer | ratio | target | met? | reproduce |"
        );
        let _ = writeln!(page, "|---|---|---|---|---|---|---|");
        for l in lines {
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} | {} | `{}` |",
                cell(&l.measure),
                cell(&l.forkyard),
                cell(&l.baseline),
                ratio_text(l.ratio),
                l.target,
                met_text(l.met),
                l.command.replace('|', "\\|"),
            );
        }
    }
    let path = root.join("docs").join("bench.md");
    std::fs::create_dir_all(path.parent().expect("docs/"))?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_from_comment_lines() {
        let cases = [
            (
                "// bench target: `spawn_wait_true/forkyard_child::Child` at most 1.3x the fastest peer",
                Some(("spawn_wait_true/forkyard_child::Child", Target::AtMost(1.3))),
            ),
            (
                "    // bench target: `stream_64_bytes/channel_feed` at least 1x",
                Some(("stream_64_bytes/channel_feed", Target::AtLeast(1.0))),
            ),
            ("// bench target: `a/b` within 2x", None),
            ("// a comment about `a/b` at most 1.3x", None),
            ("let x = 1; // bench target: `a/b` at most 2", None),
        ];
        for (line, want) in cases {
            let got = parse_target(line);
            assert_eq!(
                got.as_ref().map(|(id, t)| (id.as_str(), *t)),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn unix_times_become_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_652_300), "2026-12-07 14:05 UTC");
    }

    #[test]
    fn each_function_is_a_ratio_to_its_groups_baseline() {
        let m = |group: &str, function: &str, median: f64| Measured {
            bench: "b".into(),
            group: group.into(),
            function: function.into(),
            median,
            low: median,
            high: median,
            load: String::new(),
            unix_time: 0,
        };
        let rows = [
            m("g", "raw (baseline)", 100.0),
            m("g", "ours", 150.0),
            m("h", "alone", 5.0),
        ];
        let targets = BTreeMap::from([("g/ours".to_owned(), Target::AtMost(1.3))]);
        let lines = criterion_lines("ipc", &rows, &targets);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].forkyard, "ours: 150.0 ns");
        assert_eq!(lines[0].baseline, "raw: 100.0 ns");
        assert_eq!(lines[0].ratio, Some(1.5));
        assert_eq!(lines[0].met, Some(false));
        assert_eq!(
            lines[0].command,
            "cargo bench -p forkyard-ipc --bench b -- 'g/'"
        );
        assert_eq!(lines[1].baseline, "-");
        assert_eq!(lines[1].ratio, None);
    }

    #[test]
    fn a_rerun_replaces_its_rows_and_keeps_other_pairs() {
        let row = |baseline: &str, value: f64| {
            json!({
                "measure": "word count", "ratio": 0.5, "target": "", "met": null, "command": "c",
                "forkyard": {"label": "engine", "value": 1.0, "unit": "s"},
                "baseline": {"label": baseline, "value": value, "unit": "s"},
            })
        };
        let rows = [row("single", 2.0), row("python", 5.0), row("single", 3.0)];
        let lines = compare_lines(&rows);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].baseline, "single: 3.00 s");
        assert_eq!(lines[1].baseline, "python: 5.00 s");
    }

    #[test]
    fn large_rates_get_thousands_separators() {
        assert_eq!(thousands(3_611_000.4), "3,611,000");
        assert_eq!(thousands(589.0), "589");
        assert_eq!(thousands(1000.0), "1,000");
    }
}
