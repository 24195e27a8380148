//! The optional HTTP endpoint: `/metrics`, `/api/snapshot` and `/api/verdicts`, with hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::monitor::Inner;

/// A running metrics endpoint, from [`Monitor::serve`](crate::Monitor::serve).
/// Dropping it stops it (and closes its connections).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(inner: Arc<Inner>, addr: SocketAddr) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Connections live in the set, so they end with the server.
        let mut connections = JoinSet::new();
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let inner = inner.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    async move { Ok::<_, Infallible>(respond(&inner, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(MetricsServer { addr, task })
}

fn respond(inner: &Inner, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            inner.prometheus(),
        ),
        "/api/snapshot" => (
            StatusCode::OK,
            "application/json",
            inner.snapshot().to_json(),
        ),
        "/api/verdicts" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&crate::verdicts(&inner.snapshot())).unwrap_or_default(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /api/snapshot or /api/verdicts\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
