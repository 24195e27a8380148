//! Every endpoint, every role, and bad input, over real HTTP.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{AUDITOR, Baseline, Job, OPERATOR, Rig, VIEWER, wait_for_async};

/// Who may read what: (method, path, token, expected status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_role_as_documented() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b).await;
    let table: &[(&str, Option<&str>, u16)] = &[
        // The page and its files carry no data: anyone gets them.
        ("/", None, 200),
        ("/app.js", None, 200),
        ("/app.css", None, 200),
        ("/uPlot.iife.min.js", None, 200),
        ("/uPlot.min.css", None, 200),
        // Data needs a token.
        ("/api/snapshot", None, 401),
        ("/api/snapshot", Some("wrong"), 401),
        ("/api/snapshot", Some(VIEWER), 200),
        ("/api/snapshot", Some(OPERATOR), 200),
        ("/api/snapshot", Some(AUDITOR), 200),
        ("/api/series", Some(VIEWER), 200),
        ("/api/log", Some(VIEWER), 200),
        ("/api/whoami", Some(AUDITOR), 200),
        ("/metrics", None, 401),
        ("/metrics", Some(VIEWER), 200),
        // The action log: operators and auditors; the audit log: auditors.
        ("/api/actions", Some(VIEWER), 403),
        ("/api/actions", Some(OPERATOR), 200),
        ("/api/actions", Some(AUDITOR), 200),
        ("/api/audit", Some(VIEWER), 403),
        ("/api/audit", Some(OPERATOR), 403),
        // No audit log configured in this rig: a clear 404.
        ("/api/audit", Some(AUDITOR), 404),
        ("/api/nothing", Some(VIEWER), 404),
        ("/nothing", None, 404),
    ];
    let mut got = Vec::new();
    for &(path, token, _) in table {
        got.push(rig.get(path, token).await.status);
    }
    let want: Vec<u16> = table.iter().map(|t| t.2).collect();
    assert_eq!(got, want, "{table:?}");

    let who = rig.get("/api/whoami", Some(OPERATOR)).await.json();
    assert_eq!(who, serde_json::json!({"name": "otto", "role": "operator"}));
    let page = rig.get("/", None).await;
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("/uPlot.iife.min.js"));
    let metrics = rig.get("/metrics", Some(VIEWER)).await;
    assert!(
        metrics
            .content_type
            .starts_with("application/openmetrics-text")
    );
    rig.stop().await;
    base.assert_clean().await;
}

/// The snapshot, the series and `/metrics` say what the pool did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_series_and_metrics_count_what_the_pool_did() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b).await;
    for n in 0..20 {
        assert_eq!(rig.pool.call(Job::Sleep { n, ms: 0 }).await.unwrap(), n);
    }
    assert!(rig.pool.call(Job::Fail).await.is_err());
    let snap = rig.get("/api/snapshot", Some(VIEWER)).await.json();
    let pool = &snap["pools"][0];
    assert_eq!(pool["name"], "images");
    assert_eq!(pool["totals"]["completed"], 20);
    assert_eq!(pool["totals"]["failed_by_kind"]["task"], 1);
    assert_eq!(pool["workers"], 2);
    let names: Vec<&str> = snap["supervisors"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "jobs", "jobs/indexer"]);

    // The series grows by one point per sample.
    let before = rig.get("/api/series", Some(VIEWER)).await.json()["images"]
        .as_array()
        .unwrap()
        .len();
    wait_for_async("two more samples in the series", || async {
        let n = rig.get("/api/series", Some(VIEWER)).await.json()["images"]
            .as_array()
            .unwrap()
            .len();
        if n >= before + 2 {
            Ok(())
        } else {
            Err(format!("{n} points"))
        }
    })
    .await;

    // /metrics parses as Prometheus text, with the pool as a label.
    wait_for_async("the completed tasks in /metrics", || async {
        let text = rig.get("/metrics", Some(VIEWER)).await.body;
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
        let completed = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "forkyard_pool_tasks_total"
                    && s.labels.get("pool") == Some("images")
                    && s.labels.get("outcome") == Some("completed")
            })
            .map(|s| s.value.clone());
        match completed {
            // The parser reads OpenMetrics' `_total` samples as untyped.
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v))
                if v == 20.0 =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let text = rig.get("/metrics", Some(VIEWER)).await.body;
    assert!(
        text.contains("forkyard_supervisor_child_up{supervisor=\"root\",child=\"jobs/indexer\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    // The event log's size is a counter (it only grows), and it counts what
    // the log holds (far below the log's capacity here).
    assert!(
        text.contains("# TYPE forkyard_monitor_events counter"),
        "{text}"
    );
    let log_len = || async {
        let body = rig.get("/api/log", Some(VIEWER)).await.body;
        let log: serde_json::Value = serde_json::from_str(&body).unwrap();
        log.as_array().map_or(0, Vec::len) as u64
    };
    let before = log_len().await;
    let text = rig.get("/metrics", Some(VIEWER)).await.body;
    let after = log_len().await;
    let written: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("forkyard_monitor_events_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no forkyard_monitor_events_total sample: {text}"));
    assert!(
        (before..=after).contains(&written),
        "{written} written, {before}..={after} in the log"
    );
    rig.stop().await;
    base.assert_clean().await;
}

/// A viewer's or an auditor's action, or one without a token, is refused
/// and changes nothing; an operator's is carried out; every attempt is in
/// the action log with who, what, when and the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_actions_change_nothing_and_every_attempt_is_logged() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("actions.jsonl");
    let rig = Rig::start(Vec::new(), |b| b.action_log(&log_path)).await;
    let path = "/api/supervisors/root/children/jobs/indexer/restart";
    let pid = rig.child_pid("jobs/indexer").await.unwrap();
    let refused = [
        (None, 401),
        (Some("nonsense"), 401),
        (Some(VIEWER), 403),
        (Some(AUDITOR), 403),
    ];
    for (token, status) in refused {
        let answer = rig.post(path, token, "").await;
        assert_eq!(answer.status, status, "{token:?}: {}", answer.body);
    }
    assert_eq!(
        rig.child_pid("jobs/indexer").await,
        Some(pid),
        "nothing changed"
    );

    let done = rig.post(path, Some(OPERATOR), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let new_pid = rig.child_pid("jobs/indexer").await.unwrap();
    assert_ne!(new_pid, pid, "restarted");
    assert!(
        rig.post(
            "/api/supervisors/root/children/web/stop",
            Some(OPERATOR),
            ""
        )
        .await
        .status
            == 200
    );
    assert_eq!(rig.child_pid("web").await, None, "stopped");
    assert!(
        rig.post(
            "/api/supervisors/root/children/web/start",
            Some(OPERATOR),
            ""
        )
        .await
        .status
            == 200
    );
    assert!(rig.child_pid("web").await.is_some(), "started again");

    let records = rig.get("/api/actions", Some(AUDITOR)).await.json()["records"].clone();
    insta::assert_json_snapshot!("action_log", records, {
        "[].at_ms" => "[at_ms]",
        "[].at" => "[at]",
    });
    // The file holds the same records, one JSON object a line.
    let file = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(serde_json::Value::Array(lines), records);
    // Refusals reached the event log as actions too (not the 401s: no one to name).
    let log = rig.get("/api/log", Some(VIEWER)).await.json();
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "action")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 5, "{actions:?}");
    rig.stop().await;

    // A second monitor appends to the same file; it never truncates it.
    let rig = Rig::start(Vec::new(), |b| b.action_log(&log_path)).await;
    assert_eq!(rig.post(path, Some(VIEWER), "").await.status, 403);
    rig.stop().await;
    let lines = std::fs::read_to_string(&log_path).unwrap().lines().count();
    assert_eq!(lines, 8);
    base.assert_clean().await;
}

/// Bad input gets a clear 4xx, never a panic, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b.max_body(1024)).await;
    let op = Some(OPERATOR);
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("POST", "/api/supervisors/nope/children/web/restart", op, ""),
        ("POST", "/api/supervisors/root/children/nope/restart", op, ""),
        ("POST", "/api/supervisors/root/children/web/explode", op, ""),
        ("POST", "/api/supervisors/root/children/%zz/restart", op, ""),
        ("POST", "/api/pools/nope/resize", op, r#"{"workers": 2}"#),
        ("POST", "/api/pools/images/resize", op, r#"{"workers": -1}"#),
        ("POST", "/api/pools/images/resize", op, r#"{"workers": 0}"#),
        ("POST", "/api/pools/images/resize", op, r#"{"workers": 1000000}"#),
        ("POST", "/api/pools/images/resize", op, r#"{"workers": 2.5}"#),
        ("POST", "/api/pools/images/resize", op, r#"{"workers": "three"}"#),
        ("POST", "/api/pools/images/resize", op, "{}"),
        ("POST", "/api/pools/images/resize", op, "workers=3"),
        ("POST", "/api/pools/images/resize", op, "[3]"),
        ("POST", "/api/pools/images/workers/x/recycle", op, ""),
        ("POST", "/api/pools/images/workers/999999/recycle", op, ""),
        ("POST", "/api/pools/images/breaker", op, r#"{"open": "yes"}"#),
        ("POST", "/api/pools/images/drain", op, r#"{"grace_secs": -5}"#),
        ("POST", "/api/snapshot", op, ""),
        ("DELETE", "/api/snapshot", op, ""),
        ("PUT", "/", None, ""),
    ];
    let mut answers = Vec::new();
    for &(method, path, token, body) in cases {
        let a = crate::support::request(&rig.addr(), method, path, token, body.as_bytes().to_vec())
            .await;
        answers.push(serde_json::json!({
            "request": format!("{method} {path}"),
            "status": a.status,
            "body": a.json(),
        }));
    }
    // A body over the limit, declared: refused before it is read.
    let big = crate::support::request(
        &rig.addr(),
        "POST",
        "/api/supervisors/root/children/web/restart",
        Some(OPERATOR),
        vec![b'x'; 4096],
    )
    .await;
    answers.push(
        serde_json::json!({"request": "POST 4 KiB body", "status": big.status, "body": big.json()}),
    );
    // A malformed Authorization header.
    let mut stream = tokio::net::TcpStream::connect(rig.addr()).await.unwrap();
    stream
        .write_all(b"GET /api/snapshot HTTP/1.1\r\nhost: x\r\nauthorization: Basic Zm9vOmJhcg==\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(raw.contains("must be `Bearer <token>`"), "{raw}");
    drop(stream);
    insta::assert_json_snapshot!("bad_input", answers);
    // Still serving, and nothing changed.
    assert_eq!(rig.get("/api/snapshot", Some(VIEWER)).await.status, 200);
    assert_eq!(rig.pool.size(), 2);
    assert!(rig.pool.stats().degraded.is_none());
    rig.stop().await;
    base.assert_clean().await;
}

/// A 100 MB body: announced, it is refused at once (413) without being
/// read; streamed without a length (chunked), it is cut off at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_refused_without_reading_it() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b).await;
    let head = format!(
        "POST /api/supervisors/root/children/web/restart HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\ncontent-length: {}\r\n\r\n",
        100 << 20
    );
    let mut stream = tokio::net::TcpStream::connect(rig.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop(stream);

    // Chunked: the server stops reading at its limit (64 KiB) and answers
    // 413 while we are still sending (our writes may then fail: fine).
    let head = format!(
        "POST /api/supervisors/root/children/web/restart HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let stream = tokio::net::TcpStream::connect(rig.addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "y".repeat(1 << 16));
        for _ in 0..1600 {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let answer = read_head(&mut rd).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop(rd);
    let _ = writer.await;
    let pid_before = rig.child_pid("web").await;
    assert!(pid_before.is_some(), "nothing was restarted");
    let records = rig.get("/api/actions", Some(OPERATOR)).await.json()["records"].clone();
    let statuses: Vec<u64> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [413, 413]);
    rig.stop().await;
    base.assert_clean().await;
}

async fn read_head<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !buf.ends_with(b"\r\n\r\n") {
            if r.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            buf.push(byte[0]);
        }
    })
    .await
    .expect("an answer within 30 s");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Server-sent events: a snapshot at once, then one after every sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_a_snapshot_after_every_sample() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b).await;
    let stream = tokio::net::TcpStream::connect(rig.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("/api/events")
        .header("host", "x")
        .header("authorization", format!("Bearer {VIEWER}"))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut uptimes = Vec::new();
    while uptimes.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("a tick within 30 s")
            .expect("the stream goes on")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
        while let Some(i) = text.find("\n\n") {
            let block: String = text.drain(..i + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(block.starts_with("event: tick\n"), "{block}");
                let snap: serde_json::Value = serde_json::from_str(data).unwrap();
                uptimes.push(snap["uptime_secs"].as_f64().unwrap());
            }
        }
    }
    assert!(uptimes.windows(2).all(|w| w[0] < w[1]), "{uptimes:?}");
    drop(body);
    conn.abort();
    rig.stop().await;
    base.assert_clean().await;
}

/// The auditor reads forkyard-secure's audit log and whether its chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_security_audit_log_and_its_verification() {
    use forkyard_secure::audit::AuditLog;
    use forkyard_secure::{Policy, ProgramRule, Request};
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let log = AuditLog::open(&path).unwrap();
        let policy = Policy::builder()
            .program("echo", ProgramRule::path("/bin/echo"))
            .audit(log)
            .build()
            .unwrap();
        assert!(policy.validate(&Request::new("echo")).is_ok());
        assert!(policy.validate(&Request::new("rm")).is_err());
    }
    let rig = Rig::start(Vec::new(), |b| b.audit_log(&path)).await;
    let audit = rig.get("/api/audit", Some(AUDITOR)).await.json();
    assert_eq!(audit["lines"], 2);
    assert_eq!(audit["intact"], true, "{audit}");
    assert_eq!(audit["records"].as_array().unwrap().len(), 2);
    // Someone edits a record: the auditor is told.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"rm\"", "\"ls\"", 1);
    std::fs::write(&path, text).unwrap();
    let audit = rig.get("/api/audit", Some(AUDITOR)).await.json();
    assert_eq!(audit["intact"], false, "{audit}");
    assert!(
        audit["findings"][0].as_str().unwrap().contains("edited"),
        "{audit}"
    );
    rig.stop().await;
    base.assert_clean().await;
}

/// The pool's operator controls: resize, recycle one worker, open and close
/// the breaker, drain; refused for a viewer, with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resize_recycle_break_and_drain_a_pool() {
    let base = Baseline::take().await;
    let rig = Rig::start(Vec::new(), |b| b).await;
    let resize = "/api/pools/images/resize";
    assert_eq!(
        rig.post(resize, Some(VIEWER), "{\"workers\": 3}")
            .await
            .status,
        403
    );
    assert_eq!(rig.pool.size(), 2, "a viewer changes nothing");
    let done = rig.post(resize, Some(OPERATOR), "{\"workers\": 3}").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["detail"], "resized from 2 to 3 workers");
    wait_for_async("three ready workers", || async {
        let s = rig.pool.stats();
        let ready = s.busy_workers + s.idle_workers;
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await;

    // Recycle one: it is replaced, and its replacement serves.
    let victim = rig.pool.stats().workers[0].worker;
    let path = format!("/api/pools/images/workers/{victim}/recycle");
    assert_eq!(rig.post(&path, Some(AUDITOR), "").await.status, 403);
    assert_eq!(rig.post(&path, Some(OPERATOR), "").await.status, 200);
    wait_for_async("the recycled worker gone, three ready", || async {
        let s = rig.pool.stats();
        let gone = s.workers.iter().all(|w| w.worker != victim);
        let ready = s.busy_workers + s.idle_workers;
        if gone && ready == 3 {
            Ok(())
        } else {
            Err(format!("{:?}", s.workers))
        }
    })
    .await;
    assert_eq!(rig.pool.call(Job::Sleep { n: 7, ms: 0 }).await.unwrap(), 7);

    // The breaker, opened and closed by hand, shows in the event log.
    let breaker = "/api/pools/images/breaker";
    assert_eq!(
        rig.post(breaker, Some(OPERATOR), "{\"open\": true}")
            .await
            .status,
        200
    );
    assert_eq!(
        rig.post(breaker, Some(OPERATOR), "{\"open\": false}")
            .await
            .status,
        200
    );
    let messages = wait_for_async(
        "the resize, the recycle and the breaker in the event log",
        || async {
            let log = rig.get("/api/log", Some(VIEWER)).await.json();
            let m: Vec<String> = log
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    matches!(
                        e["kind"].as_str(),
                        Some("resize" | "recycle" | "breaker_open" | "breaker_close")
                    )
                })
                .map(|e| e["message"].as_str().unwrap().to_owned())
                .collect();
            if m.len() >= 4 {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        messages,
        [
            "resized from 2 to 3 workers".to_owned(),
            format!("worker {victim} recycled: operator's request"),
            "breaker opened by an operator: no worker starts until it is closed".to_owned(),
            "breaker closed by an operator: workers start again".to_owned(),
        ]
    );

    // Drain: the pool takes no new task and its workers exit.
    let drained = rig
        .post(
            "/api/pools/images/drain",
            Some(OPERATOR),
            "{\"grace_secs\": 5}",
        )
        .await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    wait_for_async("the pool to refuse new tasks", || async {
        match rig.pool.call(Job::Sleep { n: 1, ms: 0 }).await {
            Err(forkyard_pool::PoolError::ShuttingDown) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // When the drain ends, its report is in the event log.
    let finished = wait_for_async("the drain's report in the event log", || async {
        let log = rig.get("/api/log", Some(VIEWER)).await.json();
        log.as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["subject"] == "images"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("drain finished: "))
            })
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert!(finished.contains("worker(s) ended"), "{finished}");
    let records = rig.get("/api/actions", Some(AUDITOR)).await.json()["records"].clone();
    let results: Vec<(String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |w: &str, r: &str| (w.to_owned(), r.to_owned());
    assert_eq!(
        results,
        [
            pair("vera", "forbidden"),
            pair("otto", "done"),
            pair("audrey", "forbidden"),
            pair("otto", "done"),
            pair("otto", "done"),
            pair("otto", "done"),
            pair("otto", "done"),
        ]
    );
    rig.stop().await;
    base.assert_clean().await;
}
