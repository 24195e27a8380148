//! A narrated run of forkyard-pool: `cargo xtask demo pool` (or
//! `cargo run -p forkyard-pool --example demo -- [--quick]`).
//!
//! A pool of worker processes (this same binary, started again as workers)
//! works through a batch while a chaos task SIGKILLs workers at random. The
//! pool replaces them, retries their tasks, and answers every task exactly
//! once; the live queue is printed as it goes, then a statistics table and the
//! graceful-shutdown report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use forkyard_pool::{Pool, PoolError, ShutdownMode, worker};
use serde::{Deserialize, Serialize};

/// A task: hash `rounds` times, starting from `seed` (a stand-in for real work).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resize {
    seed: u64,
    rounds: u64,
}

fn work(task: &Resize) -> u64 {
    let mut x = task.seed;
    for _ in 0..task.rounds {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            .rotate_left(17);
    }
    x
}

fn main() -> Result<()> {
    if worker::is_worker() {
        worker::serve(|task: Resize| async move { Ok::<u64, String>(work(&task)) });
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(quick))
}

/// The restart backoff the demo's pool uses, printed where it explains a number.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

async fn run(quick: bool) -> Result<()> {
    let (tasks, kills) = if quick { (1000, 4) } else { (6000, 12) };
    println!(
        "== A pool of 4 worker processes, {tasks} tasks, {kills} workers SIGKILLed along the way =="
    );
    println!(
        "The live lines below show the queue (submitted, not yet sent to a worker), the tasks\n\
         running in workers, the tasks done, and how many of the 4 workers are up. A killed\n\
         worker's tasks go back to the queue (retried) and, since it had served, a replacement\n\
         starts at once in its slot. Only a slot whose workers die at once with nothing done\n\
         (a crash loop) backs off: {BACKOFF_FIRST:?}, doubling with each such crash in a row up to\n\
         {BACKOFF_MAX:?}, so that it does not spin. While replacements start, fewer tasks run.\n"
    );
    let started = Instant::now();
    let pool = Pool::<Resize, u64>::builder()
        .self_exec(std::iter::empty::<&str>())?
        .workers(4)
        .max_in_flight_per_worker(4)
        .queue_capacity(tasks)
        .retries(2)
        .task_timeout(Duration::from_secs(10))
        .recycle_after_tasks(if quick { 60 } else { 400 })
        .backoff(forkyard_supervise::Backoff::exponential(
            BACKOFF_FIRST,
            BACKOFF_MAX,
        ))
        .build()
        .await?;
    let stats = pool.stats();
    let pids: Vec<u32> = stats.workers.iter().filter_map(|w| w.pid).collect();
    println!("ready in {:?}: workers {:?}", started.elapsed(), pids);

    // The batch.
    let calls: Vec<_> = (0..tasks as u64)
        .map(|i| {
            let pool = pool.clone();
            let task = Resize {
                seed: i,
                rounds: 20_000 + (i % 7) * 5_000,
            };
            tokio::spawn(async move { (i, pool.call(task).await) })
        })
        .collect();

    // Chaos: SIGKILL a busy worker every so often, and print the live queue.
    let chaos = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut killed = 0;
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(25)).await;
                tick += 1;
                let s = pool.stats();
                if tick.is_multiple_of(8) {
                    let up = s.workers.iter().filter(|w| w.state.is_ready()).count();
                    let note = if up < 4 {
                        "  <- the others are starting (or a crash-looping slot backs off)"
                    } else {
                        ""
                    };
                    println!(
                        "  t={:>5.2}s queued {:>4} running {:>2} done {:>4} up {up}/4 | restarts {} retried {} recycled {}{note}",
                        started.elapsed().as_secs_f64(),
                        s.queued,
                        s.running,
                        s.completed,
                        s.restarts,
                        s.retried,
                        s.recycled
                    );
                }
                if s.completed + s.failed_total() + s.cancelled >= tasks as u64 {
                    return killed;
                }
                let busy = s
                    .workers
                    .iter()
                    .filter(|w| w.in_flight > 0)
                    .nth((tick as usize) % 3);
                if killed < kills
                    && tick.is_multiple_of(2)
                    && let Some(w) = busy
                    && let Some(pid) = w.pid
                {
                    println!(
                        "  kill -9 {pid} (worker {}, {} tasks in flight)",
                        w.worker, w.in_flight
                    );
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
                        rustix::process::Signal::KILL,
                    );
                    killed += 1;
                }
            }
        }
    });

    // Every outcome first, then the clock: checking the answers below redoes every
    // task's work in this process, which must not count as the pool's time (in the
    // dev profile it took longer than the whole run).
    let mut results = Vec::with_capacity(calls.len());
    for call in calls {
        results.push(call.await?);
    }
    let elapsed = started.elapsed();
    let killed = chaos.await?;
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut wrong = 0;
    for (i, outcome) in results {
        let expected = work(&Resize {
            seed: i,
            rounds: 20_000 + (i % 7) * 5_000,
        });
        let label = match outcome {
            Ok(v) if v == expected => "ok",
            Ok(_) => {
                wrong += 1;
                "wrong answer"
            }
            Err(PoolError::WorkerCrashed { .. }) => "worker crashed (retries used up)",
            Err(PoolError::TimedOut { .. }) => "timed out",
            Err(e) => {
                println!("  task {i}: {e}");
                "other error"
            }
        };
        *outcomes.entry(label).or_default() += 1;
    }
    if wrong > 0 {
        bail!("{wrong} tasks got a wrong answer");
    }

    println!("\n== Every task has exactly one outcome ({killed} workers were killed) ==");
    for (label, n) in &outcomes {
        println!("  {label:<34} {n:>6}");
    }
    let s = pool.stats();
    let rate = tasks as f64 / elapsed.as_secs_f64();
    println!("\n== Statistics after {elapsed:.2?} ({rate:.0} tasks/s) ==");
    explain_rate(rate, killed);
    println!(
        "  submitted {}  completed {}  failed {}  retried {}",
        s.submitted,
        s.completed,
        s.failed_total(),
        s.retried
    );
    println!(
        "  crashes {}  restarts {}  recycled {}  start failures {}",
        s.crashes, s.restarts, s.recycled, s.start_failures
    );
    println!(
        "  queue wait  p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        s.queue_wait.p50, s.queue_wait.p90, s.queue_wait.p99, s.queue_wait.max
    );
    println!(
        "  service     p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        s.service_time.p50, s.service_time.p90, s.service_time.p99, s.service_time.max
    );
    println!(
        "  {:<8} {:>7} {:>9} {:>10} {:>10}",
        "worker", "pid", "state", "completed", "rss KiB"
    );
    for w in &s.workers {
        println!(
            "  {:<8} {:>7} {:>9} {:>10} {:>10}",
            w.worker,
            w.pid.map_or("-".into(), |p| p.to_string()),
            w.state,
            w.completed,
            w.rss_bytes.map_or("-".into(), |r| (r / 1024).to_string())
        );
    }
    if s.completed + s.failed_total() != tasks as u64 {
        bail!("the counts do not add up: {s:?}");
    }

    println!("\n== Graceful shutdown (drain, 10 s grace) ==");
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(10),
        })
        .await;
    for w in &report.workers {
        println!("  worker {:<3} {}", w.worker, w.exit);
    }
    println!("  tasks affected by the shutdown: {}", report.tasks.len());

    sandboxed(quick).await?;

    println!(
        "\n== What you saw ==\n\
         {tasks} tasks went through 4 worker processes while {killed} of them were killed with\n\
         SIGKILL mid-task. Every task still got exactly one outcome: the tasks a dead worker\n\
         held were retried on another (\"retried\"), the dead were replaced at once in their\n\
         slots (\"restarts\"; \"up\" dipped below 4 while they started), and workers were also\n\
         replaced on purpose after a number of tasks (\"recycled\"). Queue wait is how long a\n\
         task sat in the queue, service time how long a worker took once it had it. The\n\
         shutdown let the workers finish what they had, and each exited with code 0.\n\
         Then the same workers ran sandboxed: forkyard-secure validated each start against a\n\
         policy, hardened it (seccomp, Landlock, no capabilities, limits) and wrote every start\n\
         and exit to a hash-chained audit log; the pool needed nothing but a different\n\
         `.command(..)`, returning the policy's `Launch` instead of a plain `Command`."
    );
    Ok(())
}

/// The same pool with every worker started by a forkyard-secure policy: hardened and
/// audited, through `SecureCommand::into_launch`.
async fn sandboxed(quick: bool) -> Result<()> {
    use forkyard_secure::audit::{self, AuditLog};
    use forkyard_secure::{EnvRule, Policy, ProgramRule, Sandbox};
    let tasks = if quick { 200 } else { 1000 };
    println!(
        "\n== The same pool, sandboxed: 2 workers under Sandbox::strict(), every start audited =="
    );
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("audit.jsonl");
    let policy = Policy::builder()
        .program("worker", ProgramRule::path(std::env::current_exe()?))
        .env(EnvRule::none().set(worker::WORKER_ENV, "1"))
        // The worker's tokio runtime makes a socket pair for its signal handling.
        .sandbox(Sandbox::strict().socket_pairs(true))
        .audit(AuditLog::open(&log)?)
        .build()?;
    let pool = Pool::<Resize, u64>::builder()
        .command(move || {
            policy
                .command("worker", [] as [&str; 0])
                .expect("the policy allows its worker")
                .into_launch()
        })
        .workers(2)
        .build()
        .await?;
    let started = Instant::now();
    for i in 0..tasks {
        let task = Resize {
            seed: i,
            rounds: 1000,
        };
        if pool.call(task.clone()).await? != work(&task) {
            bail!("a sandboxed worker answered wrongly");
        }
    }
    println!(
        "  {tasks} tasks answered correctly in {:.2?}",
        started.elapsed()
    );
    println!(
        "  what /proc says of each worker (seccomp mode 2 = filter; CapEff = its capabilities):"
    );
    for w in pool.stats().workers {
        let Some(pid) = w.pid else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or("?")
                .trim()
                .to_string()
        };
        println!(
            "    worker {} pid {pid}: Seccomp {}  NoNewPrivs {}  CapEff {}",
            w.worker,
            field("Seccomp"),
            field("NoNewPrivs"),
            field("CapEff")
        );
    }
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    })
    .await;
    let text = std::fs::read_to_string(&log)?;
    let kinds = |kind: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    let verdict = audit::verify(&log)?;
    println!(
        "  audit log: {} records ({} decisions to start a worker, {} exit records with the\n\
         \x20 layers each worker confirmed), chain {}",
        verdict.lines,
        kinds("decision"),
        kinds("exit"),
        if verdict.is_intact() {
            "intact"
        } else {
            "BROKEN"
        }
    );
    if !verdict.is_intact() {
        bail!("the audit log does not verify: {:?}", verdict.findings);
    }
    Ok(())
}

/// Says why the throughput is what it is: each task here is real work, timed here in
/// this very build, so the machine's cores set the ceiling, not the pool.
fn explain_rate(rate: f64, killed: usize) {
    let sample = 200u64;
    let start = Instant::now();
    for i in 0..sample {
        std::hint::black_box(work(&Resize {
            seed: i,
            rounds: 20_000 + (i % 7) * 5_000,
        }));
    }
    let per_task = start.elapsed() / sample as u32;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ceiling = cores as f64 / per_task.as_secs_f64();
    let build = if cfg!(debug_assertions) {
        "the dev profile, unoptimized:\n  `cargo xtask demo pool --release` runs the same work several times faster"
    } else {
        "the release profile"
    };
    println!(
        "  Why {rate:.0} tasks/s and not the README's 400,000: each task here does real work,\n\
         \x20 20,000-50,000 rounds of hashing, which takes {per_task:.2?} on one core in this build\n\
         \x20 ({build}).\n\
         \x20 With {cores} core(s) shared by the 4 workers and this process, the work alone allows\n\
         \x20 at most about {ceiling:.0} tasks/s; the {killed} kills, the time replacements spent\n\
         \x20 starting, and the retried tasks cost the rest. The README's figure is\n\
         \x20 for tasks that do nothing, which measures the pool's own cost per task\n\
         \x20 (`cargo xtask bench pool`)."
    );
}
