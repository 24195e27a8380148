//! N worker processes serving HTTP/1.1 (keep-alive) on one port.
//!
//! ```text
//! cargo run --release -p forkyard-ipc --example http_share -- --workers 2 --mode round-robin --port 8080
//! ```
//!
//! Prints `listening on 127.0.0.1:P` once every worker is ready. On SIGINT or
//! SIGTERM it drains the workers and prints `worker I: C connections, R
//! requests` for each and `fairness: F` (Jain's index over connections), then
//! exits 0 with nothing left running.

#[path = "common/http.rs"]
mod http;

use clap::Parser;
use forkyard_ipc::balance::Mode;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "N worker processes serving HTTP on one port")]
struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// shared | round-robin | least-conn
    #[arg(long, default_value = "round-robin")]
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
        let cluster = http::start(args.workers, args.mode, args.port).await?;
        println!("listening on {}", cluster.local_addr());
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let report = cluster.shutdown().await?;
        http::print_report(&report);
        Ok(())
    })
}
