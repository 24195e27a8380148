//! Machine-readable rows from the side-by-side comparisons (`examples/compare.rs`).
//!
//! A comparison prints its table for the person watching, and records each row it
//! prints with a [`Recorder`]: one JSON object per line in
//! `target/bench/<crate>.jsonl`. `cargo xtask bench --summary` reads those lines, with
//! criterion's saved estimates, and writes `docs/bench.md`, so no figure there is copied
//! by hand. `cargo xtask bench` empties a crate's file before running its comparison; a
//! comparison run by hand appends, and the summary keeps the last row of each measure.
//!
//! ```no_run
//! use std::time::Duration;
//! use forkyard_testkit::bench::{Figure, Recorder, Row, Target};
//!
//! let recorder = Recorder::new("ipc");
//! recorder.record(&Row {
//!     measure: "round trip, small message, p50".into(),
//!     forkyard: Figure::time("Channel send + recv", Duration::from_micros(19)),
//!     baseline: Figure::time("raw socketpair ping-pong", Duration::from_micros(16)),
//!     target: Target::RatioAtMost(1.3),
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Each line holds the crate, the measure, both figures (label, value, unit), the ratio
//! forkyard ÷ baseline, the target and whether it was met, the load average and the
//! time of the measurement, and the command that reproduces it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a figure counts. Times are stored in seconds, rates per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unit {
    /// A duration (lower is better), stored in seconds.
    Seconds,
    /// Things done per second (higher is better); the text names the things
    /// (`"msg/s"`, `"req/s"`, `"tasks/s"`, `"MB/s"`).
    PerSecond(&'static str),
    /// A plain number in the given unit (`"MiB"`, `"x"`).
    Count(&'static str),
}

impl Unit {
    /// The unit as written in the JSON line (`s`, `msg/s`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::PerSecond(what) | Unit::Count(what) => what,
        }
    }
}

/// One side of a comparison: what was measured, and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What ran (`"Channel send + recv"`, `"node cluster (SCHED_RR)"`).
    pub label: String,
    /// The figure, in [`Figure::unit`].
    pub value: f64,
    /// The unit of [`Figure::value`].
    pub unit: Unit,
}

impl Figure {
    /// A duration.
    pub fn time(label: impl Into<String>, took: Duration) -> Figure {
        Figure {
            label: label.into(),
            value: took.as_secs_f64(),
            unit: Unit::Seconds,
        }
    }

    /// A rate: `per_second` things (named by `what`, e.g. `"msg/s"`) each second.
    pub fn rate(label: impl Into<String>, per_second: f64, what: &'static str) -> Figure {
        Figure {
            label: label.into(),
            value: per_second,
            unit: Unit::PerSecond(what),
        }
    }
}

/// What the ratio forkyard ÷ baseline (or the forkyard figure itself) should be.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// No target: the row is for information.
    None,
    /// forkyard ÷ baseline at most this (for times: "within 1.3x").
    RatioAtMost(f64),
    /// forkyard ÷ baseline at least this (for rates: "at least 2x").
    RatioAtLeast(f64),
    /// The forkyard figure itself at most this, in its unit (for times: seconds).
    AtMost(f64),
}

impl Target {
    /// Whether a row with figure `forkyard` and `ratio` meets the target; `None` when
    /// there is none, or when the ratio is not a number (a baseline of zero).
    pub fn met(self, forkyard: f64, ratio: f64) -> Option<bool> {
        match self {
            Target::None => None,
            Target::RatioAtMost(_) | Target::RatioAtLeast(_) if !ratio.is_finite() => None,
            Target::RatioAtMost(r) => Some(ratio <= r),
            Target::RatioAtLeast(r) => Some(ratio >= r),
            Target::AtMost(v) => Some(forkyard <= v),
        }
    }

    /// The target in words, as the summary prints it.
    pub fn describe(self, unit: Unit) -> String {
        match self {
            Target::None => String::new(),
            Target::RatioAtMost(r) => format!("at most {r}x"),
            Target::RatioAtLeast(r) => format!("at least {r}x"),
            Target::AtMost(v) if unit == Unit::Seconds => format!("at most {}", human_time(v)),
            Target::AtMost(v) => format!("at most {v} {}", unit.as_str()),
        }
    }
}

/// One row of a comparison: forkyard next to a baseline or a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What is measured (`"round trip, small message, p50"`).
    pub measure: String,
    /// forkyard's figure.
    pub forkyard: Figure,
    /// The baseline's or the peer's figure, in the same unit.
    pub baseline: Figure,
    /// What the ratio should be.
    pub target: Target,
}

impl Row {
    /// forkyard ÷ baseline.
    pub fn ratio(&self) -> f64 {
        self.forkyard.value / self.baseline.value
    }

    /// The row as one JSON object (no newline), with the crate, the load average, the
    /// time and the command that reproduces it.
    pub fn to_json(&self, crate_name: &str, command: &str, load: &str, unix_time: u64) -> String {
        let ratio = self.ratio();
        // A non-finite number (a ratio over a zero baseline) becomes `null`.
        let figure = |f: &Figure| serde_json::json!({ "label": f.label, "value": f.value, "unit": f.unit.as_str() });
        serde_json::json!({
            "crate": crate_name,
            "measure": self.measure,
            "forkyard": figure(&self.forkyard),
            "baseline": figure(&self.baseline),
            "ratio": ratio,
            "target": self.target.describe(self.forkyard.unit),
            "met": self.target.met(self.forkyard.value, ratio),
            "load": load,
            "unix_time": unix_time,
            "command": command,
        })
        .to_string()
    }
}

/// Appends a comparison's rows to `target/bench/<crate>.jsonl`.
#[derive(Debug, Clone)]
pub struct Recorder {
    crate_name: String,
    path: PathBuf,
    command: String,
}

impl Recorder {
    /// A recorder for the crate folder `crate_name` (`"ipc"`), writing under the target
    /// directory of the running binary. The command recorded with each row is the
    /// comparison's own: `cargo run --release -p forkyard-<crate> --example compare`
    /// followed by this run's arguments.
    pub fn new(crate_name: &str) -> Recorder {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut command = format!("cargo run --release -p forkyard-{crate_name} --example compare");
        if !args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&args.join(" "));
        }
        Recorder {
            crate_name: crate_name.to_owned(),
            path: target_dir()
                .join("bench")
                .join(format!("{crate_name}.jsonl")),
            command,
        }
    }

    /// The file the rows go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `row`, with the load average and time now.
    pub fn record(&self, row: &Row) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = row.to_json(&self.crate_name, &self.command, &load.join(" "), now);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write per line, so lines from two runs never interleave.
        file.write_all(format!("{line}\n").as_bytes())
    }
}

/// The cargo target directory the running binary was built into: `CARGO_TARGET_DIR`,
/// else the nearest ancestor of the executable holding cargo's `CACHEDIR.TAG`, else
/// `target/` of the workspace this crate was built in.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A duration in seconds as people write it: `16.1 µs`, `1.72 ms`, `2.41 s`.
pub fn human_time(seconds: f64) -> String {
    if seconds < 1e-6 {
        format!("{:.1} ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: Target) -> Row {
        Row {
            measure: "round \"trip\"\n".into(),
            forkyard: Figure::time("chan\\nel", Duration::from_micros(20)),
            baseline: Figure::time("raw", Duration::from_micros(16)),
            target,
        }
    }

    #[test]
    fn a_row_is_one_json_line_with_escaped_text() {
        let mut r = row(Target::RatioAtMost(1.3));
        r.baseline.value = 1e-5;
        let line = r.to_json("ipc", "cargo x", "0.5 1.0 2.0", 7);
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "crate": "ipc", "measure": "round \"trip\"\n",
                "forkyard": {"label": "chan\\nel", "value": 2e-5, "unit": "s"},
                "baseline": {"label": "raw", "value": 1e-5, "unit": "s"},
                "ratio": 2.0, "target": "at most 1.3x", "met": false,
                "load": "0.5 1.0 2.0", "unix_time": 7, "command": "cargo x",
            })
        );
    }

    #[test]
    fn targets_are_met_or_not_by_their_direction() {
        let cases = [
            (Target::RatioAtMost(1.3), Some(true)),
            (Target::RatioAtMost(1.2), Some(false)),
            (Target::RatioAtLeast(1.3), Some(false)),
            (Target::RatioAtLeast(1.0), Some(true)),
            (Target::AtMost(10e-6), Some(false)),
            (Target::AtMost(25e-6), Some(true)),
            (Target::None, None),
        ];
        for (target, want) in cases {
            let r = row(target);
            assert_eq!(target.met(r.forkyard.value, r.ratio()), want, "{target:?}");
        }
    }

    #[test]
    fn a_ratio_over_zero_is_null_not_invalid_json() {
        let mut r = row(Target::RatioAtLeast(1.0));
        r.baseline.value = 0.0;
        let line = r.to_json("ipc", "c", "", 0);
        assert!(line.contains(r#""ratio":null"#), "{line}");
        assert!(line.contains(r#""met":null"#), "{line}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut r = row(Target::None);
        r.measure = "a\u{1}b\tc".into();
        let line = r.to_json("ipc", "c", "", 0);
        assert!(line.contains(r#""a\u0001b\tc""#), "{line}");
    }

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(human_time(16.1e-6), "16.1 µs");
        assert_eq!(human_time(1.72e-3), "1.72 ms");
        assert_eq!(human_time(2.414), "2.41 s");
        assert_eq!(human_time(250e-9), "250.0 ns");
    }
}
