//! Word count: the classic map-reduce job, with a fixed interface.
//!
//! ```sh
//! cargo run --release -p forkyard-mapreduce --example wordcount -- \
//!     --input FILE [FILE...] --workers 2 --reducers 4 --out DIR [--memory 64MiB]
//! ```
//!
//! Writes `DIR/part-00000`... sorted by word, lines `word<TAB>count`; a word
//! is a maximal run of bytes that are not ASCII whitespace. The last line
//! printed starts with `job done in `.
//!
//! Across machines, through a NATS JetStream server (credentials from
//! `NATS_USER`/`NATS_PASSWORD` or `NATS_NKEY` when set):
//!
//! ```sh
//! # on each machine, a node (until SIGINT/SIGTERM):
//! wordcount --serve --nats nats://HOST:4222 --workers 2
//! # anywhere, the job: the same output directory and last line as locally
//! wordcount --input FILE --workers 2 --reducers 4 --out DIR --nats nats://HOST:4222
//! # nodes on machines without this filesystem: upload the input first
//! wordcount --input FILE --out DIR --nats nats://HOST:4222 --upload
//! ```
//!
//! A coordinator killed mid-job leaves the job on the server; the same
//! command again resumes it (tasks committed are not run again).
//!
//! The job is the library's [`forkyard_mapreduce::jobs::WordCount`], so a
//! node started with `forkyard-mapreduce-node --serve` (the crate's node
//! program) runs it as well as one started from this example.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use forkyard_mapreduce::dist::{self, DistOptions, NatsConfig};
use forkyard_mapreduce::jobs::{self, WordCount};
use forkyard_mapreduce::{LineFiles, MapReduce};

#[derive(Debug, Parser)]
#[command(about = "Counts words with forkyard-mapreduce")]
struct Args {
    /// Input files (line-oriented text).
    #[arg(long, num_args = 1.., required_unless_present = "serve")]
    input: Vec<PathBuf>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Reduce partitions (output files).
    #[arg(long, default_value_t = 4)]
    reducers: u32,
    /// Output directory.
    #[arg(long, required_unless_present = "serve")]
    out: Option<PathBuf>,
    /// Memory bound of a map task's buffer (e.g. 64MiB, 512KiB, 1GiB, or bytes).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: u64,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Run on the nodes of this NATS JetStream server instead of locally
    /// (with --serve: be one of those nodes).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With --nats: upload the inputs to the job's object store, for nodes
    /// that do not share this machine's filesystem (by default they read
    /// the input files by path).
    #[arg(long, requires = "nats")]
    upload: bool,
    /// Run a node (needs --nats): pull tasks of any word-count job and run
    /// them on --workers worker processes, until SIGINT or SIGTERM.
    #[arg(long, requires = "nats")]
    serve: bool,
    /// Print a line per task attempt (with --serve).
    #[arg(long)]
    verbose: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s}"))
}

fn main() -> ExitCode {
    // The library's jobs and calls (`forkyard_mapreduce::jobs`): a node
    // started from this example and one started from the
    // `forkyard-mapreduce-node` program run the same tasks.
    jobs::services().serve_if_worker();
    jobs::workers().serve_if_worker();
    let args = Args::parse();
    if args.serve {
        return serve(&args);
    }
    let job = MapReduce::new(WordCount::new())
        .input(LineFiles::new(&args.input))
        .out_dir(args.out.as_deref().unwrap_or(Path::new(".")))
        .workers(args.workers)
        .reducers(args.reducers)
        .memory(args.memory)
        .progress(true);
    let result = match &args.nats {
        Some(url) => job
            .run_on_blocking(
                &NatsConfig::new(url).credentials_from_env(),
                DistOptions::new().upload_inputs(args.upload),
            )
            .map(|r| r.report)
            .map_err(Box::<dyn std::error::Error>::from),
        None => job
            .run_blocking()
            .map_err(Box::<dyn std::error::Error>::from),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            if args.json {
                println!("{}", report.to_json());
            }
            println!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => dist::report_error(PROGRAM, &*e),
    }
}

/// The name the program's error messages start with.
const PROGRAM: &str = "wordcount";

/// `--serve`: a node until SIGINT/SIGTERM, then exit 0 with its workers gone.
fn serve(args: &Args) -> ExitCode {
    let url = args.nats.clone().unwrap_or_default();
    let config = NatsConfig::new(url).credentials_from_env();
    match dist::serve_jobs_blocking(&config, args.workers, args.verbose, "wordcount node") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => dist::report_error(PROGRAM, &e),
    }
}
