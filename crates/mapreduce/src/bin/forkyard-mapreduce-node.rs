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

const USAGE: &str = "usage: forkyard-mapreduce-node [--serve] --nats URL [--workers N] [--verbose]\n\
                     \x20      forkyard-mapreduce-node --nats URL --list-jobs\n\
                     \x20      forkyard-mapreduce-node --nats URL --remove-job ID";

#[derive(Debug)]
enum Action {
    Serve { workers: usize, verbose: bool },
    List,
    Remove(String),
}

fn parse(args: &[String]) -> Result<(String, Action), String> {
    let mut url = None;
    let mut workers = 2usize;
    let mut verbose = false;
    let mut list = false;
    let mut remove = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--serve" => {}
            "--nats" => url = Some(value("--nats")?),
            "--workers" => {
                let v = value("--workers")?;
                workers = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--workers {v}: not a positive number")),
                };
            }
            "--verbose" => verbose = true,
            "--list-jobs" => list = true,
            "--remove-job" => remove = Some(value("--remove-job")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--nats URL is required")?;
    let action = match (list, remove) {
        (true, Some(_)) => return Err("--list-jobs and --remove-job exclude each other".into()),
        (true, None) => Action::List,
        (false, Some(id)) => Action::Remove(id),
        (false, None) => Action::Serve { workers, verbose },
    };
    Ok((url, action))
}

fn main() -> ExitCode {
    jobs::services().serve_if_worker();
    jobs::workers().serve_if_worker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, action) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("forkyard-mapreduce-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
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
