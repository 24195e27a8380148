//! The rig every test starts: a pool of fixture workers, a supervisor with
//! two children, a monitor watching both with three tokens, and an HTTP
//! client.

use std::process::Command;
use std::time::Duration;

use forkyard_monitor::{Access, AlertRule, Monitor, MonitorBuilder, Role, Server};
use forkyard_pool::{Pool, ShutdownMode};
use forkyard_supervise::{ChildSpec, Supervisor};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

pub(crate) use forkyard_testkit::{Baseline, wait_for, wait_for_async};

/// The fixture's job (the same shape as in `src/bin/forkyard-monitor-fixture.rs`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Job {
    Sleep { n: u64, ms: u64 },
    Fail,
    Crash,
}

pub(crate) const VIEWER: &str = "viewer-token";
pub(crate) const OPERATOR: &str = "operator-token";
pub(crate) const AUDITOR: &str = "auditor-token";

pub(crate) struct Rig {
    pub(crate) monitor: Monitor,
    pub(crate) server: Server,
    pub(crate) pool: Pool<Job, u64>,
    pub(crate) sup: Supervisor,
    pub(crate) base: String,
}

pub(crate) fn access() -> Access {
    Access::new()
        .token("vera", Role::Viewer, VIEWER)
        .token("otto", Role::Operator, OPERATOR)
        .token("audrey", Role::Auditor, AUDITOR)
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    cmd
}

pub(crate) async fn pool(workers: usize) -> Pool<Job, u64> {
    Pool::<Job, u64>::builder()
        .command(|| Command::new(env!("CARGO_BIN_EXE_forkyard-monitor-fixture")))
        .workers(workers)
        .sample_every(Duration::from_millis(100))
        .build()
        .await
        .expect("a pool of fixture workers")
}

pub(crate) async fn supervisor() -> Supervisor {
    Supervisor::builder()
        .child(ChildSpec::new("web", sleeper))
        .child(ChildSpec::supervisor(
            "jobs",
            Supervisor::builder().child(ChildSpec::new("indexer", sleeper)),
        ))
        .start()
        .await
        .expect("a supervisor")
}

impl Rig {
    /// A rig whose monitor samples every 100 ms and has `rules`.
    pub(crate) async fn start(
        rules: Vec<AlertRule>,
        tune: impl FnOnce(MonitorBuilder) -> MonitorBuilder,
    ) -> Rig {
        let pool = pool(2).await;
        let sup = supervisor().await;
        let mut builder = Monitor::builder()
            .access(access())
            .sample_every(Duration::from_millis(100));
        for r in rules {
            builder = builder.alert(r);
        }
        let monitor = tune(builder).build().expect("a monitor");
        monitor.watch_pool("images", &pool).unwrap();
        monitor.watch_supervisor(&sup).unwrap();
        let server = monitor.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        // Ready once the first sample has seen the supervisor's children.
        wait_for("the first sample of the supervisor", || {
            let snap = monitor.snapshot();
            (snap.supervisors.first().map(|s| s.children.len()) == Some(3))
                .then_some(())
                .ok_or_else(|| format!("{:?}", snap.supervisors))
        })
        .await;
        Rig {
            monitor,
            server,
            pool,
            sup,
            base,
        }
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown().await;
        drop(self.monitor);
        self.pool
            .shutdown(ShutdownMode::Cancel {
                grace: Duration::from_secs(1),
            })
            .await;
        let _ = self.sup.shutdown().await;
    }

    pub(crate) fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        request(&self.addr(), "GET", path, token, Vec::new()).await
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Answer {
        request(&self.addr(), "POST", path, token, body.as_bytes().to_vec()).await
    }

    /// The pid of the supervised child `name` as the supervisor says now.
    pub(crate) async fn child_pid(&self, name: &str) -> Option<u32> {
        self.sup
            .status()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.pid)
    }
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1 request on a fresh connection.
pub(crate) async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(stream, addr, method, path, token, body).await
}

pub(crate) async fn exchange<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    conn.abort();
    Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
