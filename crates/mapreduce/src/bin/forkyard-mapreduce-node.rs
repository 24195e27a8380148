//! A node of the distributed engine for the library's jobs
//! ([`forkyard_mapreduce::jobs`]): pulls tasks of any job on a NATS
//! JetStream server and runs them on its own worker processes (this binary
//! started again), until SIGINT or SIGTERM, then exits 0 with its workers
//! gone.
//!
//! ```sh
//! forkyard-mapreduce-node --serve --nats nats://HOST:4222 --workers 2 [--verbose]
//! forkyard-mapreduce-node --nats nats://HOST:4222 --list-jobs
//! forkyard-mapreduce-node --nats nats://HOST:4222 --remove-job ID
//! ```
//!
//! Credentials come from `NATS_USER`/`NATS_PASSWORD` or `NATS_NKEY` (a
//! seed), never from the command line. `--list-jobs` prints the ids of the
//! jobs on the server (a coordinator killed mid-job leaves its job there,
//! to be resumed by running it again); `--remove-job` deletes one.
//!
//! The `wordcount` example's `--serve` is the same node (both run
//! `forkyard_mapreduce::dist::serve_jobs_blocking`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use forkyard_mapreduce::dist::{self, NatsConfig};
use forkyard_mapreduce::jobs;

/// The name the program's messages start with.
const PROGRAM: &str = "forkyard-mapreduce-node";

/// A node of forkyard-mapreduce's distributed engine, for the library's jobs.
#[derive(Debug, clap::Parser)]
#[command(name = "forkyard-mapreduce-node")]
struct Args {
    /// Serve tasks until SIGINT/SIGTERM (what the program does without
    /// `--list-jobs` or `--remove-job`; accepted for symmetry with
    /// `wordcount --serve`).
    #[arg(long, conflicts_with_all = ["list_jobs", "remove_job"])]
    serve: bool,
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Worker processes of this node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..),
          conflicts_with_all = ["list_jobs", "remove_job"])]
    workers: u16,
    /// One line per task attempt on stderr.
    #[arg(long, conflicts_with_all = ["list_jobs", "remove_job"])]
    verbose: bool,
    /// Print the ids of the jobs on the server, one a line.
    #[arg(long, conflicts_with = "remove_job")]
    list_jobs: bool,
    /// Delete a job's stream, bucket and object store.
    #[arg(long, value_name = "ID")]
    remove_job: Option<String>,
}

/// What the program does besides serving.
#[derive(Debug)]
enum Admin {
    List,
    Remove(String),
}

fn main() -> ExitCode {
    jobs::services().serve_if_worker();
    jobs::workers().serve_if_worker();
    let args = <Args as clap::Parser>::parse();
    let config = NatsConfig::new(&args.nats).credentials_from_env();
    let result = match (args.list_jobs, args.remove_job) {
        (true, _) => admin(&config, Admin::List),
        (false, Some(id)) => admin(&config, Admin::Remove(id)),
        (false, None) => {
            dist::serve_jobs_blocking(&config, usize::from(args.workers), args.verbose, PROGRAM)
                .map_err(Box::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => dist::report_error(PROGRAM, &*e),
    }
}

/// `--list-jobs`, `--remove-job ID`.
fn admin(config: &NatsConfig, action: Admin) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cluster = config.connect().await?;
        match action {
            Admin::List => {
                for id in dist::jobs_on(&cluster).await? {
                    println!("{id}");
                }
                cluster.close().await;
            }
            Admin::Remove(id) => {
                let removed = dist::remove_job(&cluster, &id).await;
                cluster.close().await;
                match removed? {
                    true => println!("removed job {id}"),
                    false => println!("no job {id} on the server"),
                }
            }
        }
        Ok(())
    })
}
