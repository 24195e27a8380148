//! The monitor against a real pool: what it counts, what it exports, and
//! the HTTP endpoint.

use std::time::Duration;

use forkyard_perf::{Cached, Monitor, MonitorConfig};
use forkyard_pool::ShutdownMode;
use forkyard_testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::job::Job;
use crate::support::{Baseline, builder};

const GRACE: ShutdownMode = ShutdownMode::Drain {
    grace: Duration::from_secs(10),
};

/// Metric families of an exposition as `name type`, sorted.
fn families(text: &str) -> Vec<String> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut out: Vec<String> = scrape
        .samples
        .iter()
        // Per-worker figures come and go with the sampling; not in the snapshot.
        .filter(|s| s.labels.get("worker").is_none())
        .map(|s| {
            let kind = match &s.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                prometheus_parse::Value::Summary(_) => "summary",
                prometheus_parse::Value::Untyped(_) => "untyped",
            };
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            format!("{} {kind} {{{}}}", s.metric, labels.join(","))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn value(text: &str, metric: &str, label: Option<(&str, &str)>) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {label:?} in\n{text}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{metric} is not a number"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_counts_what_the_pool_did_and_exports_it() {
    let base = Baseline::take().await;
    let b = builder().workers(2).sample_every(Duration::from_millis(50));
    let monitor = Monitor::start(b.subscribe(), MonitorConfig::default());
    let pool = b.build().await.unwrap();
    let cached = Cached::builder(pool.clone())
        .record_trace(10_000, 1.0)
        .build();
    monitor.watch_cache(&cached);
    for i in 0..100u64 {
        cached.call(Job::Slow { key: i % 10, ms: 0 }).await.unwrap();
    }
    for _ in 0..2 {
        pool.call(Job::Crash).await.unwrap_err();
    }
    wait_for("the monitor to see every task and both crashes", || {
        let s = monitor.snapshot();
        if s.totals.completed == 10 && s.totals.crashes == 2 && s.workers == 2 {
            Ok(())
        } else {
            Err(format!("{:?}", s.totals))
        }
    })
    .await;
    let snap = monitor.snapshot();
    assert_eq!(snap.totals.failed.get("worker_crashed"), Some(&2));
    assert_eq!(snap.totals.restarts, 2);
    let cache = snap.cache.as_ref().unwrap();
    assert_eq!((cache.hits, cache.misses), (90, 10));
    assert!(snap.advice.is_some());
    let json: serde_json::Value = serde_json::from_str(&snap.to_json()).unwrap();
    assert_eq!(json["totals"]["completed"], 10);

    let text = monitor.prometheus();
    insta::assert_snapshot!(families(&text).join("\n"));
    assert_eq!(
        value(
            &text,
            "forkyard_pool_tasks_total",
            Some(("outcome", "completed"))
        ),
        10.0
    );
    assert_eq!(
        value(
            &text,
            "forkyard_pool_tasks_total",
            Some(("outcome", "worker_crashed"))
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "forkyard_cache_lookups_total",
            Some(("result", "hit"))
        ),
        90.0
    );
    assert_eq!(value(&text, "forkyard_pool_workers", None), 2.0);
    assert!(text.contains("# HELP forkyard_pool_tasks Tasks that got their outcome, by outcome"));
    assert!(text.contains("# TYPE forkyard_pool_service_seconds histogram"));

    // The same over HTTP, on loopback.
    let server = monitor.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let get = |path: &'static str| {
        let addr = server.local_addr();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            (head.lines().next().unwrap().to_owned(), body.to_owned())
        }
    };
    let (status, body) = get("/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        value(
            &body,
            "forkyard_pool_tasks_total",
            Some(("outcome", "completed"))
        ),
        10.0
    );
    let (status, body) = get("/api/snapshot").await;
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["totals"]["crashes"], 2);
    let (status, body) = get("/api/verdicts").await;
    assert!(status.contains("200"), "{status}");
    let verdicts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(verdicts[0]["explanation"].is_string(), "{body}");
    let (status, _) = get("/nothing").await;
    assert!(status.contains("404"), "{status}");
    server.shutdown().await;

    pool.shutdown(GRACE).await;
    drop(monitor);
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_falls_behind_counts_the_loss_and_keeps_sane_levels() {
    let base = Baseline::take().await;
    let b = builder()
        .workers(2)
        .max_in_flight_per_worker(8)
        .event_capacity(4);
    let monitor = Monitor::start(b.subscribe(), MonitorConfig::default());
    let pool = b.build().await.unwrap();
    let calls: Vec<_> = (0..2_000u64)
        .map(|key| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo { key }).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Whatever was lost, once every task is done nothing is queued or running,
    // and what was counted plus what was lost covers what happened.
    wait_for("the monitor to settle", || {
        let s = monitor.snapshot();
        if s.queue_depth == 0 && s.running == 0 && s.busy_workers == 0 {
            Ok(())
        } else {
            Err(format!("{} queued, {} running", s.queue_depth, s.running))
        }
    })
    .await;
    let s = monitor.snapshot();
    eprintln!(
        "lost {} events, counted {} completions",
        s.totals.lagged, s.totals.completed
    );
    assert!(s.totals.completed <= 2_000);
    if s.totals.lagged == 0 {
        assert_eq!(s.totals.completed, 2_000);
    }
    pool.shutdown(GRACE).await;
    drop(monitor);
    base.assert_clean().await;
}
