//! Alert rules over a real pool: pending, firing, resolved, and the
//! notifications a webhook and a command receive.

use std::convert::Infallible;
use std::time::Duration;

use forkyard_monitor::{AlertRule, Condition, Notifier};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::sync::mpsc;

use crate::support::{Baseline, Job, Rig, VIEWER, wait_for_async};

/// A local HTTP endpoint that hands over every body POSTed to it.
async fn webhook_receiver() -> (
    String,
    mpsc::UnboundedReceiver<serde_json::Value>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            conns.spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let _ = tx.send(
                                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                            );
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx, task)
}

async fn alert_status(rig: &Rig) -> Option<String> {
    let snap = rig.get("/api/snapshot", Some(VIEWER)).await.json();
    snap["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "HighErrorRate")
        .map(|a| a["status"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_alert_fires_resolves_and_notifies() {
    let base = Baseline::take().await;
    let (url, mut hooks, receiver) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notified");
    let script =
        "echo \"$FORKYARD_ALERT_STATUS $FORKYARD_ALERT_NAME $FORKYARD_ALERT_SUBJECT\" >> \"$0\"";
    let rule = AlertRule::new("HighErrorRate", Condition::ErrorRateAbove { per_sec: 2.0 })
        .for_duration(Duration::from_millis(300))
        .only("images");
    let rig = Rig::start(vec![rule], |b| {
        b.notify(Notifier::webhook(&url).unwrap())
            .notify(Notifier::command(
                "/bin/sh",
                ["-c", script, out.to_str().unwrap()],
            ))
    })
    .await;
    assert_eq!(alert_status(&rig).await, None, "quiet before the errors");

    // Errors at about 50/s until the alert fires.
    let pool = rig.pool.clone();
    // Paced by an interval (a load generator's rate, not a wait for anything).
    let storm = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        loop {
            pace.tick().await;
            let _ = pool.call(Job::Fail).await;
        }
    });
    wait_for_async("the alert to fire", || async {
        match alert_status(&rig).await.as_deref() {
            Some("firing") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let metrics = rig.get("/metrics", Some(VIEWER)).await.body;
    assert!(
        metrics.contains("forkyard_monitor_alerts{alertname=\"HighErrorRate\",subject=\"images\",alertstate=\"firing\"} 1"),
        "{metrics}"
    );
    storm.abort();
    let _ = storm.await;
    wait_for_async("the alert to resolve", || async {
        match alert_status(&rig).await.as_deref() {
            Some("resolved") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The command ran once per notification, in order. On a loaded machine
    // the storm may dip below the threshold for a second, so the alert may
    // fire and resolve more than once: each firing is followed by its
    // resolution, and the last word is "resolved".
    let lines = wait_for_async("the command to hear of the resolution", || async {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.ends_with("resolved HighErrorRate images\n") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    let told: Vec<&str> = lines.lines().collect();
    assert!(told.len().is_multiple_of(2), "{told:?}");
    for pair in told.chunks(2) {
        assert_eq!(
            pair,
            [
                "firing HighErrorRate images",
                "resolved HighErrorRate images"
            ]
        );
    }
    // The webhook got the same notifications, as Alertmanager's payload.
    let mut got = Vec::new();
    while got.len() < told.len() {
        let hook = tokio::time::timeout(Duration::from_secs(30), hooks.recv())
            .await
            .expect("a webhook call within 30 s")
            .unwrap();
        got.push(hook);
    }
    let shape: Vec<_> = got
        .iter()
        .map(|h| {
            (
                h["version"].as_str().unwrap().to_owned(),
                h["status"].as_str().unwrap().to_owned(),
                h["alerts"][0]["labels"]["alertname"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                h["alerts"][0]["labels"]["subject"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                h["alerts"][0]["endsAt"]
                    .as_str()
                    .unwrap()
                    .starts_with("0001-"),
            )
        })
        .collect();
    let want = |status: &str, open: bool| {
        (
            "4".to_owned(),
            status.to_owned(),
            "HighErrorRate".to_owned(),
            "images".to_owned(),
            open,
        )
    };
    for pair in shape.chunks(2) {
        assert_eq!(pair, [want("firing", true), want("resolved", false)]);
    }

    // And the event log tells the story in order.
    let log = rig.get("/api/log", Some(VIEWER)).await.json();
    let story: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "alert")
        .map(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(story.first().map(String::as_str), Some("pending"));
    assert!(story.iter().any(|s| s == "firing"));
    assert_eq!(story.last().map(String::as_str), Some("resolved"));
    rig.stop().await;
    receiver.abort();
    let _ = receiver.await;
    base.assert_clean().await;
}
