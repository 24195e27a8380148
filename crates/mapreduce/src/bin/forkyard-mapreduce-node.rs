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
//! The `wordcount` example's `--serve` is the same node.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use forkyard_mapreduce::dist::{self, NatsConfig, Node};
use forkyard_mapreduce::jobs;

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

#[derive(Debug)]
enum Action {
    Serve { workers: usize, verbose: bool },
    List,
    Remove(String),
}

fn main() -> ExitCode {
    jobs::services().serve_if_worker();
    jobs::workers().serve_if_worker();
    let args = <Args as clap::Parser>::parse();
    let url = args.nats;
    let action = match (args.list_jobs, args.remove_job) {
        (true, _) => Action::List,
        (false, Some(id)) => Action::Remove(id),
        (false, None) => Action::Serve {
            workers: usize::from(args.workers),
            verbose: args.verbose,
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let result = rt.block_on(async move {
        let cluster = NatsConfig::new(&url)
            .credentials_from_env()
            .connect()
            .await?;
        match action {
            Action::Serve { workers, verbose } => {
                eprintln!("forkyard-mapreduce-node: serving {url} with {workers} workers");
                Node::new(cluster)
                    .workers(workers)
                    .calls(jobs::services())
                    .verbose(verbose)
                    .run_until_signal()
                    .await
            }
            Action::List => {
                for id in dist::jobs_on(&cluster).await? {
                    println!("{id}");
                }
                cluster.close().await;
                Ok(())
            }
            Action::Remove(id) => {
                let removed = dist::remove_job(&cluster, &id).await;
                cluster.close().await;
                match removed? {
                    true => println!("removed job {id}"),
                    false => println!("no job {id} on the server"),
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprint!("forkyard-mapreduce-node: error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprint!(": {s}");
        source = s.source();
    }
    eprintln!();
    ExitCode::FAILURE
}
