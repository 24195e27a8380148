//! The map-reduce demo: a word count over a generated corpus, clean and then
//! with faults (a worker killed mid-map and one mid-reduce, a poison record,
//! a straggler), each output checked against a single-threaded count.
//!
//! ```sh
//! cargo xtask demo mapreduce          # or: cargo run --example demo -p forkyard-mapreduce -- --quick
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "common/demo_dist.rs"]
mod demo_dist;
#[path = "common/fault_dist.rs"]
mod fault_dist;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use forkyard_mapreduce::jobs::WordCount;
use forkyard_mapreduce::{Fault, LineFiles, MapReduce, Phase};

fn main() -> Result<()> {
    forkyard_mapreduce::serve_if_worker::<WordCount>();
    let quick = std::env::args().any(|a| a == "--quick");
    let (size, distinct, split) = if quick {
        (3u64 << 20, 20_000, 256u64 << 10)
    } else {
        (48u64 << 20, 50_000, 4u64 << 20)
    };
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    let started = Instant::now();
    let lines = common::zipf_corpus(&corpus, size, distinct, 42)?;
    say(&format!(
        "A corpus of {} lines ({:.1} MB, {distinct} distinct words, Zipf-distributed), made in {:.1?}.",
        lines,
        size as f64 / 1e6,
        started.elapsed()
    ));
    // A second file with one line the map function cannot take.
    let poison = dir.path().join("poison.txt");
    std::fs::write(
        &poison,
        b"just some words\nthis line is POISON for the mapper\nand a last line\n",
    )?;
    let inputs = [corpus.as_path(), poison.as_path()];
    let reference = common::reference(&inputs, Some("POISON"))?;
    let words: u64 = reference.values().sum();

    say("\n1. A clean run: 2 worker processes (this same binary, started again), 4 reducers.");
    let clean_out = dir.path().join("clean");
    let clean = MapReduce::new(WordCount::poisoned_by("POISON"))
        .input(LineFiles::new(inputs))
        .out_dir(&clean_out)
        .workers(2)
        .reducers(4)
        .split_size(split)
        .progress(true)
        .run_blocking()?;
    println!("{clean}");
    say(&format!(
        "   The poison line crashed its map task twice, so the third attempt skipped it: {}.",
        clean
            .skipped
            .first()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(none?)".into())
    ));
    common::check_output(&clean_out, &reference, 4).map_err(anyhow::Error::msg)?;
    say(&format!(
        "   Output checked: identical to a single-threaded HashMap count ({words} words, {} distinct).",
        reference.len()
    ));

    say("\n2. The same job with faults injected into first attempts:");
    say("   - the worker running map task 1 SIGKILLs itself after 100 records;");
    say("   - the worker running reduce partition 2 SIGKILLs itself after 50 keys;");
    say(
        "   - the worker running map task 0 SIGSTOPs itself: a straggler only a backup can overtake.",
    );
    let faulty_out = dir.path().join("faulty");
    let faulty = MapReduce::new(WordCount::poisoned_by("POISON"))
        .input(LineFiles::new(inputs))
        .out_dir(&faulty_out)
        .workers(2)
        .reducers(4)
        .split_size(split)
        .progress(true)
        .backups(true, Duration::from_millis(300))
        .task_timeout(Duration::from_secs(30))
        .inject(Phase::Map, 1, Fault::Kill { at: 100 })
        .inject(Phase::Reduce, 2, Fault::Kill { at: 50 })
        .inject(Phase::Map, 0, Fault::Stop { at: 10 })
        .run_blocking()?;
    println!("{faulty}");
    common::same_parts(&clean_out, &faulty_out, 4).map_err(anyhow::Error::msg)?;
    say("   Output checked: byte-identical to the clean run.");
    if faulty.map.backup_wins == 0 {
        bail!("the straggler's backup did not win");
    }

    say("\n3. The job directory records committed tasks, so running the job again does nothing:");
    let again = MapReduce::new(WordCount::poisoned_by("POISON"))
        .input(LineFiles::new(inputs))
        .out_dir(&faulty_out)
        .workers(2)
        .reducers(4)
        .split_size(split)
        .run_blocking()
        .context("re-running the job")?;
    say(&format!(
        "   {} of {} map tasks and {} of {} reduce tasks found committed; {} attempts run.",
        again.map.resumed,
        again.map.tasks,
        again.reduce.resumed,
        again.reduce.tasks,
        again.map.attempts + again.reduce.attempts
    ));

    println!("\n  {:<26} {:>10} {:>10}", "", "clean", "faults");
    let row = |name: &str, a: String, b: String| println!("  {name:<26} {a:>10} {b:>10}");
    row(
        "wall time",
        format!("{:.2?}", clean.wall),
        format!("{:.2?}", faulty.wall),
    );
    row(
        "map attempts",
        clean.map.attempts.to_string(),
        faulty.map.attempts.to_string(),
    );
    row(
        "reduce attempts",
        clean.reduce.attempts.to_string(),
        faulty.reduce.attempts.to_string(),
    );
    row(
        "retries",
        (clean.map.retries + clean.reduce.retries).to_string(),
        (faulty.map.retries + faulty.reduce.retries).to_string(),
    );
    row(
        "backups (won)",
        format!(
            "{} ({})",
            clean.map.backups + clean.reduce.backups,
            clean.map.backup_wins + clean.reduce.backup_wins
        ),
        format!(
            "{} ({})",
            faulty.map.backups + faulty.reduce.backups,
            faulty.map.backup_wins + faulty.reduce.backup_wins
        ),
    );
    row(
        "skipped records",
        clean.skipped.len().to_string(),
        faulty.skipped.len().to_string(),
    );
    row(
        "throughput MB/s",
        format!("{:.1}", clean.throughput_mb_s()),
        format!("{:.1}", faulty.throughput_mb_s()),
    );
    println!("{}", faulty.summary());
    // Then across machines, when nats-server is on PATH.
    demo_dist::run(&corpus, split, say)
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}
