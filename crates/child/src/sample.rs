//! Live resource figures of a running child, read from `/proc`.

use std::time::Duration;

use serde::Serialize;

/// A snapshot of a running child's memory and CPU, and of its whole process group.
///
/// CPU times are cumulative since the process started; sample twice and divide
/// the difference by the wall time between the samples for a utilisation figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Sample {
    /// The child's pid.
    pub pid: u32,
    /// Resident set size of the child, in bytes.
    pub rss_bytes: u64,
    /// CPU time the child spent in user mode.
    pub user_cpu: Duration,
    /// CPU time the child spent in the kernel.
    pub system_cpu: Duration,
    /// Threads in the child.
    pub threads: u64,
    /// Totals over every live process in the child's process group (the child included).
    pub group: GroupSample,
}

/// Totals over the live processes of a process group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupSample {
    /// Live (non-zombie) processes in the group.
    pub processes: usize,
    /// Sum of their resident set sizes, in bytes. Shared pages count once per process.
    pub rss_bytes: u64,
    /// Sum of their user and system CPU time.
    pub cpu: Duration,
}

fn ticks(t: u64) -> Duration {
    let hz = procfs::ticks_per_second().max(1);
    Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz)
}

pub(crate) fn sample(pid: u32, pgid: u32) -> procfs::ProcResult<Sample> {
    let stat = procfs::process::Process::new(pid as i32)?.stat()?;
    let page = procfs::page_size();
    Ok(Sample {
        pid,
        rss_bytes: stat.rss * page,
        user_cpu: ticks(stat.utime),
        system_cpu: ticks(stat.stime),
        threads: stat.num_threads.max(0) as u64,
        group: group(pgid),
    })
}

/// Totals over the live members of process group `pgid` (one scan of `/proc`).
pub(crate) fn group(pgid: u32) -> GroupSample {
    let page = procfs::page_size();
    let mut g = GroupSample::default();
    let Ok(all) = procfs::process::all_processes() else {
        return g;
    };
    for stat in all.flatten().filter_map(|p| p.stat().ok()) {
        if stat.pgrp == pgid as i32 && !matches!(stat.state, 'Z' | 'X') {
            g.processes += 1;
            g.rss_bytes += stat.rss * page;
            g.cpu += ticks(stat.utime + stat.stime);
        }
    }
    g
}
