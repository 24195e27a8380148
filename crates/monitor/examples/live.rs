//! A live monitor over a small workload: a pool with injected crashes and a
//! supervised service that fails now and then.
//!
//! ```sh
//! cargo run --release -p forkyard-monitor --example live -- --port 8080
//! ```
//!
//! Prints the tokens it generated, then `monitor on http://127.0.0.1:PORT/`
//! once it serves; runs until SIGINT (Ctrl-C), then stops everything it
//! started and exits 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use clap::Parser;
use forkyard_monitor::{Access, AlertRule, Condition, Monitor, Notifier, Role};

// The demo turns the knobs; this example only sets them.
#[allow(dead_code)]
#[path = "workload/mod.rs"]
mod workload;

#[derive(Parser, Debug)]
#[command(about = "A live forkyard monitor over a small workload")]
struct Args {
    /// The port to serve on (on 127.0.0.1 unless --bind says otherwise); 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to bind (loopback by default).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Pool workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Tasks started per second.
    #[arg(long, default_value_t = 60)]
    rate: u32,
    /// Tasks per 10,000 that crash their worker.
    #[arg(long, default_value_t = 2)]
    crash_per_10k: u32,
    /// Append every operator action to this file (JSON lines).
    #[arg(long)]
    action_log: Option<std::path::PathBuf>,
    /// forkyard-secure's audit log, for the auditor role.
    #[arg(long)]
    audit_log: Option<std::path::PathBuf>,
    /// Send alerts to this webhook (http://host:port/path).
    #[arg(long)]
    webhook: Option<String>,
}

fn main() -> anyhow::Result<()> {
    workload::enter_child_roles();
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut access = Access::new();
    let viewer = access.generate("viewer", Role::Viewer)?;
    let operator = access.generate("operator", Role::Operator)?;
    let auditor = access.generate("auditor", Role::Auditor)?;
    let mut builder = Monitor::builder()
        .access(access)
        .alert(
            AlertRule::new("HighErrorRate", Condition::ErrorRateAbove { per_sec: 1.0 })
                .for_duration(Duration::from_secs(5)),
        )
        .alert(
            AlertRule::new("SlowQueue", Condition::QueueWaitP99Above { ms: 500.0 })
                .for_duration(Duration::from_secs(10)),
        )
        .alert(
            AlertRule::new(
                "RestartStorm",
                Condition::RestartsPerMinuteAbove { restarts: 10 },
            )
            .for_duration(Duration::from_secs(5)),
        )
        .alert(AlertRule::new("BreakerOpen", Condition::BreakerOpen))
        .alert(
            AlertRule::new(
                "WorkerMemory",
                Condition::WorkerRssAbove { bytes: 512 << 20 },
            )
            .for_duration(Duration::from_secs(30)),
        );
    if let Some(path) = &args.action_log {
        builder = builder.action_log(path);
    }
    if let Some(path) = &args.audit_log {
        builder = builder.audit_log(path);
    }
    if let Some(url) = &args.webhook {
        builder = builder.notify(Notifier::webhook(url)?);
    }
    let monitor = builder.build()?;
    let work = workload::Workload::start(
        args.workers,
        workload::Knobs {
            rate: AtomicU32::new(args.rate),
            ms: AtomicU32::new(5),
            crash_per_10k: AtomicU32::new(args.crash_per_10k),
            fail_per_10k: AtomicU32::new(20),
        },
    )
    .await?;
    monitor.watch_pool("images", &work.pool)?;
    monitor.watch_supervisor(&work.sup)?;
    let server = monitor.serve(SocketAddr::new(args.bind, args.port)).await?;
    let addr = server.local_addr().expect("a TCP server");
    println!("viewer token:   {viewer}");
    println!("operator token: {operator}");
    println!("auditor token:  {auditor}");
    println!(
        "open http://{addr}/#token={viewer} (viewer) or http://{addr}/#token={operator} (operator)"
    );
    println!("monitor on http://{addr}/");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    server.shutdown().await;
    drop(monitor);
    work.stop().await;
    Ok(())
}
