//! The `http_share` server, with a zero-downtime handoff on every SIGHUP.
//!
//! ```text
//! cargo run --release -p forkyard-ipc --example hot_handoff -- --workers 2 --port 8080
//! kill -HUP <pid>     # prints `generation 2 ready` once the new generation
//!                     # serves alone; not one request fails meanwhile
//! ```
//!
//! SIGINT or SIGTERM end it as `http_share` does.

#[path = "common/http.rs"]
mod http;

use std::sync::Arc;

use clap::Parser;
use forkyard_ipc::Error;
use forkyard_ipc::balance::Mode;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "HTTP workers replaced on SIGHUP without dropping a request")]
struct Args {
    /// Worker processes per generation.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// shared | round-robin | least-conn
    #[arg(long, default_value = "shared")]
    mode: Mode,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Run as a worker (the parent starts its workers with this).
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> anyhow::Result<()> {
    if http::is_worker() {
        return http::worker_main();
    }
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cluster = Arc::new(http::start(args.workers, args.mode, args.port).await?);
        println!("listening on {}", cluster.local_addr());
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    let cluster = cluster.clone();
                    tokio::spawn(async move {
                        match cluster.handoff().await {
                            Ok(generation) => println!("generation {generation} ready"),
                            Err(Error::HandoffInProgress) => println!("handoff already in progress"),
                            Err(e) => println!("handoff failed: {e}; the old generation keeps serving"),
                        }
                    });
                }
            }
        }
        let report = cluster.shutdown().await?;
        http::print_report(&report);
        Ok(())
    })
}
