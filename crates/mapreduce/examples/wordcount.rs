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

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use forkyard_mapreduce::{Emit, Job, LineFiles, MapReduce};

/// Counts words.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct WordCount;

impl Job for WordCount {
    type Key = Vec<u8>;
    type Value = u64;
    type Output = u64;
    const COMBINES: bool = true;

    fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
        for word in line.split(|b| b.is_ascii_whitespace()) {
            if !word.is_empty() {
                emit.emit_ref(word, 1);
            }
        }
    }

    fn combine(&self, _word: &Vec<u8>, count: &mut u64, more: u64) {
        *count += more;
    }

    fn reduce(&self, _word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
        emit(counts.iter().sum());
    }
}

#[derive(Debug, Parser)]
#[command(about = "Counts words with forkyard-mapreduce")]
struct Args {
    /// Input files (line-oriented text).
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Reduce partitions (output files).
    #[arg(long, default_value_t = 4)]
    reducers: u32,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Memory bound of a map task's buffer (e.g. 64MiB, 512KiB, 1GiB, or bytes).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: u64,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
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
    forkyard_mapreduce::serve_if_worker::<WordCount>();
    let args = Args::parse();
    let job = MapReduce::new(WordCount)
        .input(LineFiles::new(&args.input))
        .out_dir(&args.out)
        .workers(args.workers)
        .reducers(args.reducers)
        .memory(args.memory)
        .progress(true);
    match job.run_blocking() {
        Ok(report) => {
            println!("{report}");
            if args.json {
                println!("{}", report.to_json());
            }
            println!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("wordcount: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprint!(": {s}");
                source = s.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}
