//! The job report: what happened, phase by phase.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A record that crashed the map function twice and was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRecord {
    /// The map task.
    pub task: u32,
    /// The input it came from (a path, or a label).
    pub source: String,
    /// Its byte offset in the file (or its index among inline records).
    pub position: u64,
    /// What the map function did to it (a panic message, or how the worker died).
    pub message: String,
}

impl fmt::Display for SkippedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}: {}", self.source, self.position, self.message)
    }
}

/// One phase (map or reduce).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    /// Tasks in the phase.
    pub tasks: usize,
    /// Tasks found committed by an earlier run of the job, not run again.
    pub resumed: usize,
    /// Attempts started, backups included.
    pub attempts: u64,
    /// Attempts that failed (crash, timeout, bad record, error) and were retried.
    pub retries: u64,
    /// Backup attempts started for stragglers.
    pub backups: u64,
    /// Tasks with a backup whose backup committed first.
    pub backup_wins: u64,
    /// Tasks with a backup whose original attempt committed first.
    pub original_wins: u64,
    /// Wall time of the phase.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// Records read (map: input records; reduce: values).
    pub records_in: u64,
    /// Bytes read (map: input bytes).
    pub bytes_in: u64,
    /// Of `bytes_in`, what tasks committed by an earlier run had read.
    pub resumed_bytes_in: u64,
    /// Records written (map: pairs emitted; reduce: output lines).
    pub records_out: u64,
    /// Bytes written (map: run bytes; reduce: output bytes).
    pub bytes_out: u64,
    /// Spills of the in-memory buffer to disk (map).
    pub spills: u64,
    /// Distinct keys (reduce).
    pub keys: u64,
    /// The largest peak resident memory of a worker, in bytes, as workers
    /// reported it after their tasks.
    pub peak_worker_rss: u64,
    /// The failures seen, one line each (at most 20 kept).
    pub failures: Vec<String>,
}

/// What a job did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The job's name.
    pub job: String,
    /// Worker processes.
    pub workers: usize,
    /// Reduce partitions.
    pub reducers: u32,
    /// Memory bound of a map task's buffer, in bytes.
    pub memory: u64,
    /// Wall time of the whole job.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// The map phase.
    pub map: PhaseReport,
    /// The reduce phase.
    pub reduce: PhaseReport,
    /// Records skipped because they crashed the map function twice.
    pub skipped: Vec<SkippedRecord>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Report {
    /// Input records read by the map phase.
    pub fn records(&self) -> u64 {
        self.map.records_in
    }

    /// Distinct keys in the output.
    pub fn distinct_keys(&self) -> u64 {
        self.reduce.keys
    }

    /// Input throughput of this run, MB/s (10^6 bytes): the input its map
    /// tasks read (not counting tasks resumed from an earlier run) over the
    /// job's wall time.
    pub fn throughput_mb_s(&self) -> f64 {
        (self.map.bytes_in - self.map.resumed_bytes_in) as f64
            / 1e6
            / self.wall.as_secs_f64().max(1e-9)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The one-line summary: `job done in 1.23s: N records, K distinct keys, ...`.
    pub fn summary(&self) -> String {
        format!(
            "job done in {:.2}s: {} records, {} distinct keys, {:.1} MB/s, {} retries, {} backups, {} skipped records",
            self.wall.as_secs_f64(),
            self.records(),
            self.distinct_keys(),
            self.throughput_mb_s(),
            self.map.retries + self.reduce.retries,
            self.map.backups + self.reduce.backups,
            self.skipped.len(),
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "job {}: {} workers, {} reducers, {} MiB buffer",
            self.job,
            self.workers,
            self.reducers,
            self.memory >> 20
        )?;
        writeln!(
            f,
            "  {:<7} {:>6} {:>7} {:>8} {:>7} {:>7} {:>13} {:>11} {:>13} {:>11} {:>6} {:>9}",
            "phase",
            "tasks",
            "resumed",
            "attempts",
            "retries",
            "backups",
            "records in",
            "MB in",
            "records out",
            "MB out",
            "spills",
            "wall"
        )?;
        for (name, p) in [("map", &self.map), ("reduce", &self.reduce)] {
            writeln!(
                f,
                "  {:<7} {:>6} {:>7} {:>8} {:>7} {:>7} {:>13} {:>11.1} {:>13} {:>11.1} {:>6} {:>8.2}s",
                name,
                p.tasks,
                p.resumed,
                p.attempts,
                p.retries,
                p.backups,
                p.records_in,
                p.bytes_in as f64 / 1e6,
                p.records_out,
                p.bytes_out as f64 / 1e6,
                p.spills,
                p.wall.as_secs_f64()
            )?;
        }
        let (bw, ow) = (
            self.map.backup_wins + self.reduce.backup_wins,
            self.map.original_wins + self.reduce.original_wins,
        );
        writeln!(
            f,
            "  peak worker RSS: map {:.1} MiB, reduce {:.1} MiB",
            self.map.peak_worker_rss as f64 / (1 << 20) as f64,
            self.reduce.peak_worker_rss as f64 / (1 << 20) as f64
        )?;
        if bw + ow > 0 {
            writeln!(f, "  backups: {bw} won, {ow} lost to the original")?;
        }
        for p in self.map.failures.iter().chain(&self.reduce.failures) {
            writeln!(f, "  failure: {p}")?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped record {s}")?;
        }
        write!(
            f,
            "  throughput {:.1} MB/s of input",
            self.throughput_mb_s()
        )
    }
}
