//! The fault suite: word counts while workers SIGKILL and SIGSTOP themselves
//! at random points of both phases, over an input with poison records; every
//! run's output must be byte-identical to a clean run's.
//!
//! ```sh
//! cargo xtask fault mapreduce --seed 7          # or: cargo run --example fault -p forkyard-mapreduce -- --seed 7 [--quick]
//! ```
//!
//! Prints one summary line; exits non-zero on any difference or failed job.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use common::WordCount;
use forkyard_mapreduce::{Fault, LineFiles, MapReduce, Phase};

#[derive(Debug, Parser)]
struct Args {
    /// Seed for the corpus, the poison records and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A run of seconds (as CI runs it).
    #[arg(long)]
    quick: bool,
}

const REDUCERS: u32 = 3;

fn job(inputs: &[std::path::PathBuf], out: &std::path::Path, split: u64) -> MapReduce<WordCount> {
    MapReduce::new(WordCount {
        poison: Some("POISON".into()),
    })
    .input(LineFiles::new(inputs))
    .out_dir(out)
    .workers(2)
    .reducers(REDUCERS)
    .split_size(split)
    .max_skipped(50)
    .max_failures(6)
    .backups(true, Duration::from_millis(200))
    // Two stopped workers in one phase wait for the timeout.
    .task_timeout(Duration::from_secs(5))
}

fn main() -> ExitCode {
    forkyard_mapreduce::serve_if_worker::<WordCount>();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("fault mapreduce seed {}: FAILED: {e:#}", args.seed);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    let (size, runs, split) = if args.quick {
        (1u64 << 20, 2, 96u64 << 10)
    } else {
        (16u64 << 20, 8, 1u64 << 20)
    };
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    common::zipf_corpus(&corpus, size, 20_000, args.seed)?;
    // Poison records spread over the corpus: each line gets the marker
    // with a small probability.
    let text = std::fs::read(&corpus)?;
    let mut poisoned = Vec::with_capacity(text.len() + 1024);
    let mut n_poison = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if n_poison < 5 && rng.u32(0..2000) == 0 {
            poisoned.extend_from_slice(b"POISON ");
            n_poison += 1;
        }
        poisoned.extend_from_slice(line);
    }
    std::fs::write(&corpus, &poisoned)?;
    let inputs = vec![corpus.clone()];
    let n_maps = size.div_ceil(split) as u32;

    let clean_out = dir.path().join("clean");
    let clean = job(&inputs, &clean_out, split)
        .run_blocking()
        .context("the clean run")?;
    let reference = common::reference(&[corpus.as_path()], Some("POISON"))?;
    common::check_output(&clean_out, &reference, REDUCERS).map_err(anyhow::Error::msg)?;

    let (mut kills, mut stops, mut identical, mut retries, mut backups) = (0, 0, 0, 0, 0);
    let mut differences = Vec::new();
    for run in 0..runs {
        let out = dir.path().join(format!("run-{run}"));
        let mut mr = job(&inputs, &out, split);
        for (phase, tasks, span) in [
            (Phase::Map, n_maps, 1500u64),
            (Phase::Reduce, REDUCERS, 3000),
        ] {
            for task in 0..tasks {
                if rng.u32(0..10) < 3 {
                    let at = rng.u64(0..span);
                    let fault = if rng.u32(0..10) < 7 {
                        kills += 1;
                        Fault::Kill { at }
                    } else {
                        stops += 1;
                        Fault::Stop { at }
                    };
                    mr = mr.inject(phase, task, fault);
                }
            }
        }
        match mr.run_blocking() {
            Ok(report) => {
                retries += report.map.retries + report.reduce.retries;
                backups += report.map.backups + report.reduce.backups;
                match common::same_parts(&clean_out, &out, REDUCERS) {
                    Ok(()) => identical += 1,
                    Err(e) => differences.push(format!("run {run}: {e}")),
                }
            }
            Err(e) => differences.push(format!("run {run}: the job failed: {e}")),
        }
    }
    let ok = differences.is_empty();
    println!(
        "fault mapreduce seed {}: {identical}/{runs} outputs byte-identical to the clean run; {kills} SIGKILLs and {stops} SIGSTOPs injected, {retries} retries, {backups} backups, {} poison records skipped{}{}",
        args.seed,
        clean.skipped.len(),
        if ok { "" } else { "; " },
        differences.join("; ")
    );
    Ok(ok)
}
