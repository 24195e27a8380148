//! `cargo xtask demo monitor`: a scripted incident on a live monitor.
//!
//! A pool serves a steady load while the monitor watches; then poison input
//! arrives (tasks that crash any worker that runs them): workers die, the
//! error rate climbs, the `HighErrorRate` alert goes pending, then fires and
//! a webhook is told. An operator resizes the pool over the monitor's API
//! (a viewer trying the same is refused), the poison stops, and the alert
//! resolves. Every number printed says what it is.
//!
//! `--quick` ends by itself within 30 s; without it, the monitor stays up
//! (URL and tokens printed) until Ctrl-C.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use forkyard_monitor::{
    Access, AlertRule, AlertStatus, Condition, Monitor, MonitorSnapshot, Notifier, Role,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

#[path = "workload/mod.rs"]
mod workload;

fn main() -> anyhow::Result<()> {
    workload::enter_child_roles();
    let quick = std::env::args().any(|a| a == "--quick");
    tokio::runtime::Runtime::new()?.block_on(run(quick))
}

/// A local webhook that prints what the monitor sends it.
async fn webhook() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        println!(
                            "  webhook <- {} {} on {} (Alertmanager payload, version {})",
                            v["status"].as_str().unwrap_or("?").to_uppercase(),
                            v["commonLabels"]["alertname"].as_str().unwrap_or("?"),
                            v["commonLabels"]["subject"].as_str().unwrap_or("?"),
                            v["version"].as_str().unwrap_or("?"),
                        );
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, task))
}

/// One request to the monitor, as the page (or curl) sends it.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    conn.abort();
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

fn line(t0: Instant, snap: &MonitorSnapshot) {
    let Some(p) = snap.pools.first() else { return };
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.rule == "HighErrorRate" && a.status != AlertStatus::Resolved)
        .map_or("-", |a| match a.status {
            AlertStatus::Pending => "PENDING",
            _ => "FIRING",
        });
    println!(
        "  {:>5.1}s  tasks/s {:>5.0}  errors/s {:>5.1}  queued {:>4}  p99 wait {:>7.1} ms  workers {}/{}  crashes {:>3}  alert {alert}",
        t0.elapsed().as_secs_f64(),
        p.last.tasks_per_sec,
        p.last.errors_per_sec,
        p.queue_depth,
        p.last.queue_wait.p99_ms,
        p.workers_ready,
        p.workers,
        p.totals.crashes,
    );
    if let Some(why) = &p.degraded {
        println!("         breaker open: {why}");
    }
}

/// Prints a line per sample until `done` says so or `limit` passes.
async fn watch(
    monitor: &Monitor,
    t0: Instant,
    limit: Duration,
    done: impl Fn(&MonitorSnapshot) -> bool,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snap = monitor.snapshot();
        line(t0, &snap);
        if done(&snap) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

fn alert_is(snap: &MonitorSnapshot, status: AlertStatus) -> bool {
    snap.alerts
        .iter()
        .any(|a| a.rule == "HighErrorRate" && a.status == status)
}

async fn run(quick: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let (hook_url, hook) = webhook().await?;
    let mut access = Access::new();
    let viewer = access.generate("viewer", Role::Viewer)?;
    let operator = access.generate("operator", Role::Operator)?;
    let monitor = Monitor::builder()
        .access(access)
        .sample_every(Duration::from_millis(500))
        .alert(
            AlertRule::new("HighErrorRate", Condition::ErrorRateAbove { per_sec: 1.0 })
                .for_duration(Duration::from_secs(2)),
        )
        .notify(Notifier::webhook(&hook_url)?)
        .build()?;
    let work = workload::Workload::start(
        3,
        workload::Knobs {
            rate: AtomicU32::new(80),
            ms: AtomicU32::new(4),
            crash_per_10k: AtomicU32::new(0),
            fail_per_10k: AtomicU32::new(0),
        },
    )
    .await?;
    monitor.watch_pool("images", &work.pool)?;
    monitor.watch_supervisor(&work.sup)?;
    let server = monitor.serve("127.0.0.1:0".parse()?).await?;
    let addr = server.local_addr().expect("a TCP server");
    println!(
        "forkyard-monitor demo: a pool of 3 workers ('images', 80 tasks/s of ~4 ms CPU) and a supervisor tree"
    );
    println!("monitor on http://{addr}/   (open http://{addr}/#token={viewer} to watch along)");
    println!("viewer token:   {viewer}");
    println!("operator token: {operator}");
    println!(
        "alert rule: HighErrorRate = failed tasks/s > 1, held for 2 s (Prometheus `for:`), sent to a local webhook"
    );
    println!();
    println!(
        "Each line is one sample (every 0.5 s): tasks/s and errors/s of the last complete second, tasks"
    );
    println!(
        "waiting now, the p99 queue wait of that second, ready/all workers, worker crashes since the start,"
    );
    println!("and the alert's state.");
    println!();
    println!("1. Steady load.");
    watch(
        &monitor,
        t0,
        Duration::from_secs(if quick { 3 } else { 8 }),
        |_| false,
    )
    .await;

    println!();
    println!(
        "2. Poison input: 1 task in 20 now crashes whichever worker runs it (SIGABRT). Each is retried once"
    );
    println!(
        "   on another worker, crashes it too, and fails: errors/s climbs, the alert goes pending, then fires."
    );
    work.knobs.crash_per_10k.store(500, Ordering::Relaxed);
    let fired = watch(&monitor, t0, Duration::from_secs(10), |s| {
        alert_is(s, AlertStatus::Firing)
    })
    .await;
    println!(
        "   {}",
        if fired {
            "-> HighErrorRate is FIRING (the page shows it in red; the webhook was called)"
        } else {
            "-> the alert did not fire in time (a very loaded machine?)"
        }
    );

    println!();
    println!(
        "3. The operator grows the pool from 3 to 6 workers through the monitor (POST /api/pools/images/resize),"
    );
    println!(
        "   so the healthy tasks keep flowing while workers are being replaced. A viewer trying the same is refused:"
    );
    let (status, body) = post(
        addr,
        "/api/pools/images/resize",
        &viewer,
        "{\"workers\": 6}",
    )
    .await?;
    println!(
        "   viewer   -> {status} {}",
        body["error"].as_str().unwrap_or("")
    );
    let (status, body) = post(
        addr,
        "/api/pools/images/resize",
        &operator,
        "{\"workers\": 6}",
    )
    .await?;
    println!(
        "   operator -> {status} {}",
        body["detail"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or("")
    );
    watch(&monitor, t0, Duration::from_secs(2), |_| false).await;

    println!();
    println!(
        "4. The poison input is traced and stopped: errors/s falls to 0 and the alert resolves."
    );
    work.knobs.crash_per_10k.store(0, Ordering::Relaxed);
    let resolved = watch(&monitor, t0, Duration::from_secs(8), |s| {
        alert_is(s, AlertStatus::Resolved)
    })
    .await;
    println!(
        "   {}",
        if resolved {
            "-> HighErrorRate RESOLVED (and the webhook was told)"
        } else {
            "-> not resolved in time"
        }
    );

    let snap = monitor.snapshot();
    let p = &snap.pools[0];
    println!();
    println!("Summary (from /api/snapshot):");
    println!("  tasks completed        {:>7}", p.totals.completed);
    for (kind, n) in &p.totals.failed_by_kind {
        println!("  tasks failed ({kind:<14}) {n:>3}   (a poison task fails after its one retry)");
    }
    println!(
        "  worker crashes         {:>7}   (each replaced at once: the pool keeps its capacity)",
        p.totals.crashes
    );
    println!("  replacement workers    {:>7}", p.totals.restarts);
    println!("  workers now            {:>7}", p.workers);
    println!(
        "  event-log entries      {:>7}   (crashes with their cause, restarts, the resize, the alert)",
        snap.events.len()
    );
    let actions = monitor_actions(addr, &operator).await?;
    println!("  action log             {actions}");

    if !quick {
        println!();
        println!(
            "The monitor stays up: http://{addr}/#token={operator} (operator). Ctrl-C ends the demo."
        );
        tokio::signal::ctrl_c().await?;
    }
    server.shutdown().await;
    drop(monitor);
    work.stop().await;
    hook.abort();
    Ok(())
}

/// The action log's records in one line each: who, what, result.
async fn monitor_actions(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("/api/actions")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let body = sender
        .send_request(req)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    conn.abort();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["records"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{} {} -> {} ({})",
                        r["who"].as_str().unwrap_or("?"),
                        r["request"].as_str().unwrap_or("?"),
                        r["result"].as_str().unwrap_or("?"),
                        r["status"]
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default())
}
