//! Bottleneck verdicts: what limits a pool's throughput, and what to do,
//! each with the numbers that led to it. A pure function over a
//! [`Snapshot`], so every rule is tested with hand-made snapshots.
//!
//! The rules follow the USE method (utilisation, saturation, errors) per
//! resource (workers, the machine's CPUs, memory, the cache), and size the
//! pool with Little's law: the tasks in the system on average, `L = λW`, are
//! what would keep that many workers busy with no queue.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::monitor::Snapshot;

/// What limits throughput (or does not).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum VerdictKind {
    /// Calls wait in the queue while every worker is busy: add workers.
    AddWorkers {
        /// The suggested pool size (Little's law, capped by the CPUs).
        suggest: usize,
    },
    /// Calls wait in the queue, but the pool already has a worker per CPU.
    AtCpuLimit,
    /// The machine's CPUs are saturated: more workers will not help.
    CpuSaturated,
    /// Workers are busy in the pool's eyes but barely use a CPU: calls wait
    /// on the round trip (or on I/O); pipeline or batch.
    IpcBound,
    /// A worker's memory grows with the tasks it serves: recycle every K tasks.
    RecycleForMemory {
        /// The worker that grows fastest.
        worker: u64,
        /// Recycle after this many tasks.
        every: u64,
    },
    /// One worker is much slower than its peers: recycle it.
    SlowWorker {
        /// The slow worker.
        worker: u64,
    },
    /// The cache hits too rarely for a key space that is reused: grow it.
    GrowCache {
        /// The advised size in bytes.
        bytes: u64,
    },
    /// Nothing limits throughput in the measurements.
    Healthy,
}

/// One verdict: what, why (in words, with the numbers) and the numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Verdict {
    /// What limits throughput.
    pub kind: VerdictKind,
    /// The verdict and the advice in one sentence, numbers included.
    pub explanation: String,
    /// The measurements it rests on, by name.
    pub numbers: BTreeMap<&'static str, f64>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// Busy share of the workers above which the pool counts as saturated.
const BUSY: f64 = 0.9;
/// Machine CPU utilisation above which more workers cannot help.
const CPU_SATURATED: f64 = 0.9;
/// A busy worker using less than this share of a CPU waits on something else.
const WORKER_CPU_LOW: f64 = 0.5;

fn ms(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn mib(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// What limits the pool's throughput, from the measurements in `snap`: one
/// verdict per limit found, most pressing first, or [`VerdictKind::Healthy`].
pub fn verdicts(snap: &Snapshot) -> Vec<Verdict> {
    let mut out = Vec::new();
    let r = &snap.recent;
    let workers = r.workers.max(snap.workers as f64).max(1.0);
    let busy = r.busy_workers / workers;
    let cpus = snap.cpus.max(1);
    let cpu = r.cpu_utilisation;
    let saturated = cpu.is_some_and(|c| c >= CPU_SATURATED);
    let qw = r.queue_wait.mean_us;
    let svc = r.service.mean_us;

    if saturated {
        let c = cpu.unwrap_or_default();
        out.push(Verdict {
            kind: VerdictKind::CpuSaturated,
            explanation: format!(
                "the machine's CPUs are saturated ({:.0}% busy over {cpus} CPUs): more workers will not help; make each task cheaper, cache results, or add machines",
                c * 100.0
            ),
            numbers: BTreeMap::from([
                ("cpu_utilisation", c),
                ("cpus", cpus as f64),
                ("workers", workers),
            ]),
        });
    }

    if r.queue_wait.count > 0 && busy >= BUSY && qw > svc && r.queue_depth >= 0.5 {
        // Little's law: L = λW tasks are in the system on average; that many
        // workers (one task each) would leave none of them waiting.
        let l = r.in_system;
        let lambda = r.tasks_per_sec;
        let w = r.end_to_end.mean_us / 1e6;
        let wanted = l.ceil().max(workers + 1.0) as usize;
        let suggest = wanted.min(cpus);
        let numbers = BTreeMap::from([
            ("queue_wait_mean_us", qw),
            ("queue_wait_p50_us", r.queue_wait.p50_us as f64),
            ("service_mean_us", svc),
            ("busy_share", busy),
            ("workers", workers),
            ("tasks_per_sec", lambda),
            ("end_to_end_mean_s", w),
            ("in_system", l),
            ("cpus", cpus as f64),
        ]);
        if suggest as f64 > workers {
            out.push(Verdict {
                kind: VerdictKind::AddWorkers { suggest },
                explanation: format!(
                    "queue wait dominates ({} mean wait vs {} service) while {:.0}% of {workers:.0} workers are busy: add workers: suggest {suggest} (Little's law: L = λW = {lambda:.0}/s × {} = {l:.1} tasks in the system{})",
                    ms(qw),
                    ms(svc),
                    busy * 100.0,
                    ms(w * 1e6),
                    if wanted > cpus {
                        format!(", capped at {cpus} CPUs")
                    } else {
                        String::new()
                    },
                ),
                numbers,
            });
        } else if !saturated {
            out.push(Verdict {
                kind: VerdictKind::AtCpuLimit,
                explanation: format!(
                    "queue wait dominates ({} mean wait vs {} service) but the pool already has {workers:.0} workers for {cpus} CPUs: more would compete for the CPUs; make tasks cheaper, cache results, or add machines",
                    ms(qw),
                    ms(svc)
                ),
                numbers,
            });
        }
    }

    let cpu_ratios: Vec<f64> = snap
        .worker_figures
        .iter()
        .filter_map(|w| w.cpu_ratio)
        .collect();
    if busy >= 0.8 && !cpu_ratios.is_empty() && !saturated {
        let mean = cpu_ratios.iter().sum::<f64>() / cpu_ratios.len() as f64;
        if mean < WORKER_CPU_LOW {
            out.push(Verdict {
                kind: VerdictKind::IpcBound,
                explanation: format!(
                    "workers are busy {:.0}% of the time but use {:.0}% of a CPU each: calls wait on the round trip (or on I/O), not on work; pipeline more tasks per worker (max_in_flight_per_worker) or batch small calls",
                    busy * 100.0,
                    mean * 100.0
                ),
                numbers: BTreeMap::from([
                    ("busy_share", busy),
                    ("worker_cpu_ratio", mean),
                    ("service_mean_us", svc),
                ]),
            });
        }
    }

    // Memory growth per task, worst worker first.
    let growth = snap
        .worker_figures
        .iter()
        .filter_map(|w| {
            let (first, now) = (w.first_rss?, w.rss_bytes?);
            let tasks = w.completed.checked_sub(w.completed_at_first_rss?)?;
            let grown = now.checked_sub(first)?;
            (tasks >= 50 && grown >= 32 << 20)
                .then(|| (w, first, now, tasks, grown as f64 / tasks as f64))
        })
        .max_by(|a, b| a.4.total_cmp(&b.4));
    if let Some((w, first, now, tasks, per_task)) = growth
        && per_task >= 16.0 * 1024.0
    {
        let budget = (first as f64).max(64.0 * 1024.0 * 1024.0);
        let every = ((budget / per_task) as u64).max(1);
        out.push(Verdict {
            kind: VerdictKind::RecycleForMemory {
                worker: w.worker,
                every,
            },
            explanation: format!(
                "worker {} grew from {} to {} over {tasks} tasks ({:.0} KiB per task): recycle every {every} tasks (recycle_after_tasks), so growth stays under {}",
                w.worker,
                mib(first as f64),
                mib(now as f64),
                per_task / 1024.0,
                mib(budget)
            ),
            numbers: BTreeMap::from([
                ("first_rss_bytes", first as f64),
                ("rss_bytes", now as f64),
                ("tasks", tasks as f64),
                ("bytes_per_task", per_task),
            ]),
        });
    }

    // One worker much slower than its peers.
    let timed: Vec<_> = snap
        .worker_figures
        .iter()
        .filter(|w| w.service.count >= 20)
        .collect();
    if timed.len() >= 2 {
        for w in &timed {
            let mut peers: Vec<u64> = timed
                .iter()
                .filter(|p| p.worker != w.worker)
                .map(|p| p.service.p50_us)
                .collect();
            peers.sort_unstable();
            let peer = peers[peers.len() / 2] as f64;
            let mine = w.service.p50_us as f64;
            if mine > 2.0 * peer && mine - peer >= 100.0 {
                out.push(Verdict {
                    kind: VerdictKind::SlowWorker { worker: w.worker },
                    explanation: format!(
                        "worker {}{} serves in {} at p50, its peers in {} ({:.1}x slower): recycle it",
                        w.worker,
                        w.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        ms(mine),
                        ms(peer),
                        mine / peer.max(1.0)
                    ),
                    numbers: BTreeMap::from([
                        ("service_p50_us", mine),
                        ("peers_service_p50_us", peer),
                    ]),
                });
            }
        }
    }

    if let (Some(c), Some(a)) = (&snap.cache, &snap.advice) {
        let rate = c.hit_rate;
        if rate < a.target
            && let Some(bytes) = a.smallest
            && bytes > a.current_bytes
        {
            let row = a.rows.iter().find(|r| r.bytes == bytes);
            let predicted = row.map_or(0.0, |r| r.lru.max(r.tinylfu));
            out.push(Verdict {
                kind: VerdictKind::GrowCache { bytes },
                explanation: format!(
                    "cache hit rate {rate:.2} is below the target {:.2} and the keys are reused (best possible {:.2}): grow the cache from {} to {} ({:.0}x), which the trace says would hit {predicted:.2}",
                    a.target,
                    a.ceiling,
                    mib(a.current_bytes as f64),
                    mib(bytes as f64),
                    bytes as f64 / a.current_bytes.max(1) as f64
                ),
                numbers: BTreeMap::from([
                    ("hit_rate", rate),
                    ("target", a.target),
                    ("ceiling", a.ceiling),
                    ("current_bytes", a.current_bytes as f64),
                    ("advised_bytes", bytes as f64),
                    ("predicted_hit_rate", predicted),
                ]),
            });
        }
    }

    if out.is_empty() {
        out.push(Verdict {
            kind: VerdictKind::Healthy,
            explanation: format!(
                "no bottleneck found: {:.0}% of {workers:.0} workers busy, {} mean queue wait vs {} service, {} tasks/s",
                busy * 100.0,
                ms(qw),
                ms(svc),
                r.tasks_per_sec.round()
            ),
            numbers: BTreeMap::from([
                ("busy_share", busy),
                ("queue_wait_mean_us", qw),
                ("service_mean_us", svc),
                ("tasks_per_sec", r.tasks_per_sec),
            ]),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheStats;
    use crate::monitor::{Latency, WorkerFigures};

    /// A snapshot of a pool of `workers` on `cpus` CPUs, all quiet.
    fn base(workers: usize, cpus: usize) -> Snapshot {
        let mut s = Snapshot {
            cpus,
            workers,
            ..Snapshot::default()
        };
        s.recent.workers = workers as f64;
        s.recent.secs = 10.0;
        s.recent.cpu_utilisation = Some(0.3);
        s.recent.tasks_per_sec = 100.0;
        s.recent.queue_wait = Latency::from_us(1000, 5, 20);
        s.recent.service = Latency::from_us(1000, 1000, 2000);
        s.recent.end_to_end = Latency::from_us(1000, 1005, 2020);
        s.recent.busy_workers = workers as f64 * 0.3;
        s.recent.in_system = workers as f64 * 0.3;
        s
    }

    fn worker(id: u64) -> WorkerFigures {
        WorkerFigures {
            worker: id,
            pid: Some(1000 + id as u32),
            cpu_ratio: Some(0.3),
            service: Latency::from_us(500, 1000, 1500),
            ..WorkerFigures::default()
        }
    }

    fn queueing(mut s: Snapshot, in_system: f64) -> Snapshot {
        s.recent.busy_workers = s.recent.workers;
        s.recent.queue_wait = Latency::from_us(1000, 8000, 15000);
        s.recent.end_to_end = Latency::from_us(1000, 9000, 17000);
        s.recent.queue_depth = in_system - s.recent.workers;
        s.recent.in_system = in_system;
        s.recent.cpu_utilisation = Some(0.5);
        s
    }

    fn cache_case(hit_rate: f64, keys: u64, bytes_now: u64) -> Snapshot {
        let mut s = base(2, 2);
        s.cache = Some(CacheStats {
            hit_rate,
            ..CacheStats::default()
        });
        let mut t = crate::advice::Trace::new(100_000, 1.0);
        for i in 0..20_000u64 {
            t.push(i % keys, 100);
        }
        s.advice = Some(t.advise(bytes_now, 0.9));
        s
    }

    #[test]
    fn verdict_rules() {
        let cases: Vec<(&str, Snapshot)> = vec![
            ("quiet pool", base(2, 2)),
            (
                "one worker, queue wait dominates, 2 CPUs",
                queueing(base(1, 2), 4.0),
            ),
            (
                "two workers, queue, 8 CPUs: Little's law",
                queueing(base(2, 8), 5.2),
            ),
            (
                "queue but already a worker per CPU",
                queueing(base(2, 2), 6.0),
            ),
            ("CPUs saturated", {
                let mut s = queueing(base(4, 2), 8.0);
                s.recent.cpu_utilisation = Some(0.97);
                s
            }),
            ("busy workers barely use a CPU", {
                let mut s = base(2, 4);
                s.recent.busy_workers = 1.9;
                s.worker_figures = vec![worker(1), worker(2)];
                s.worker_figures[0].cpu_ratio = Some(0.12);
                s.worker_figures[1].cpu_ratio = Some(0.18);
                s
            }),
            ("memory grows with tasks", {
                let mut s = base(2, 2);
                let mut w = worker(1);
                w.first_rss = Some(20 << 20);
                w.completed_at_first_rss = Some(10);
                w.rss_bytes = Some(120 << 20);
                w.completed = 410;
                s.worker_figures = vec![w, worker(2)];
                s
            }),
            ("one slow worker", {
                let mut s = base(3, 4);
                s.worker_figures = vec![worker(1), worker(2), worker(3)];
                s.worker_figures[1].service = Latency::from_us(300, 6000, 9000);
                s
            }),
            ("low hit rate, reusable keys", cache_case(0.4, 100, 2_500)),
            (
                "low hit rate, nothing reusable",
                cache_case(0.4, 20_000, 2_500),
            ),
        ];
        let mut report = String::new();
        for (name, snap) in &cases {
            report.push_str(&format!("## {name}\n"));
            for v in verdicts(snap) {
                report.push_str(&format!("{:?}\n  {}\n", v.kind, v.explanation));
            }
        }
        insta::assert_snapshot!(report);
        // The kinds, asserted outright too.
        let kinds: Vec<Vec<VerdictKind>> = cases
            .iter()
            .map(|(_, s)| verdicts(s).into_iter().map(|v| v.kind).collect())
            .collect();
        use VerdictKind::*;
        assert_eq!(
            kinds,
            vec![
                vec![Healthy],
                vec![AddWorkers { suggest: 2 }],
                vec![AddWorkers { suggest: 6 }],
                vec![AtCpuLimit],
                vec![CpuSaturated],
                vec![IpcBound],
                vec![RecycleForMemory {
                    worker: 1,
                    every: 256
                }],
                vec![SlowWorker { worker: 2 }],
                vec![GrowCache { bytes: 10_000 }],
                vec![Healthy],
            ]
        );
    }
}
