//! The HTTP/1.1 server `http_share`, `hot_handoff`, `demo` and `compare` run:
//! a parent owning the port and a [`Cluster`] of worker processes (this same
//! executable, started with `--worker`) serving with hyper.

#![allow(dead_code)] // each example uses a different part

use std::convert::Infallible;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use forkyard_ipc::balance::{Cluster, ClusterConfig, ClusterStats, Mode, Worker};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// How long a draining worker lets an idle keep-alive connection send one more
/// request (answered with `Connection: close`) before it closes it.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// The worker process: serves every connection the cluster gives it, and
/// when told to drain, answers the next request on each connection with
/// `Connection: close`, then reports and exits.
pub(crate) fn worker_main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut worker = Worker::from_parent().context("not started by a forkyard cluster")?;
        let slot = worker.slot();
        let body = Bytes::from(format!(
            "hello from worker {} of generation {} (pid {})\n",
            slot.index,
            slot.generation,
            std::process::id()
        ));
        while let Some(conn) = worker.accept().await {
            let (stream, lease) = conn.into_tokio()?;
            let counters = worker.counters();
            let drain = worker.drain_signal();
            let body = body.clone();
            tokio::spawn(async move {
                let draining = drain.clone();
                let service = service_fn(move |_req: Request<Incoming>| {
                    counters.request();
                    let mut response = Response::new(http_body_util::Full::new(body.clone()));
                    if draining.is_draining() {
                        // hyper closes the connection after this response, and
                        // the client knows not to send another on it.
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                let mut drain = drain;
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = async { drain.wait().await; tokio::time::sleep(IDLE_GRACE).await } => {
                        // Still open a second into the drain: idle. Close it.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                drop(lease);
            });
        }
        worker.finish().await?;
        Ok(())
    })
}

/// True when this process was started as a worker.
pub(crate) fn is_worker() -> bool {
    std::env::args().any(|a| a == "--worker")
}

/// Binds `127.0.0.1:port` and starts `workers` workers in `mode`.
pub(crate) async fn start(workers: usize, mode: Mode, port: u16) -> anyhow::Result<Cluster> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let exe = std::env::current_exe()?;
    let config = ClusterConfig::new(mode).workers(workers);
    let cluster = Cluster::start(listener, config, move |_slot| {
        let mut cmd = Command::new(&exe);
        cmd.arg("--worker");
        cmd
    })
    .await?;
    Ok(cluster)
}

/// The per-worker lines and the fairness line of the serving generation.
pub(crate) fn print_report(report: &ClusterStats) {
    for w in report.current() {
        println!(
            "worker {}: {} connections, {} requests",
            w.index, w.connections, w.requests
        );
    }
    println!("fairness: {:.3}", report.fairness());
}
