//! The page in a real headless Chromium, driven over WebDriver (chromedriver
//! and fantoccini): live data, the numbers `/api/snapshot` gives, a killed
//! worker in the event log, an alert firing and resolving, and a viewer's
//! click refused where an operator's works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use forkyard_monitor::{AlertRule, Condition};

use crate::support::{Baseline, Job, OPERATOR, Rig, VIEWER, wait_for_async};

/// The browser and its driver, looked up on PATH (as `cargo xtask`'s
/// install step does).
const CHROMIUM: &str = "chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// The first `program` on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// chromedriver on a free port, in its own process group (owned by
/// forkyard-child): dropping it kills the group, the browser with it.
struct Browser {
    client: Client,
    driver: forkyard_child::Child,
    profile: tempfile::TempDir,
}

/// Where Chromium and chromedriver are on PATH; `None` (and a note) when
/// the machine has not both, outside CI; in CI (`CI=true`) a missing browser
/// is a failure.
fn browser_available() -> Option<(PathBuf, PathBuf)> {
    if let (Some(chromium), Some(driver)) = (on_path(CHROMIUM), on_path(CHROMEDRIVER)) {
        return Some((chromium, driver));
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "chromium and chromedriver are required in CI ({CHROMIUM}, {CHROMEDRIVER} on PATH): apt-get install chromium chromium-driver"
        );
    }
    println!("skipped: chromium not installed");
    None
}

/// Starts chromedriver on a port the kernel just gave out and let go of.
/// Another process may take that port in between: chromedriver then says so
/// and exits, and we try another port (as testkit's `NatsServer` does).
async fn start_driver(driver: &Path) -> (forkyard_child::Child, u16) {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = std::process::Command::new(driver);
        cmd.arg(format!("--port={port}"));
        let mut child = forkyard_child::Child::builder(&mut cmd)
            .stdout(forkyard_child::Output::lines())
            .stderr(forkyard_child::Output::null())
            .spawn()
            .expect("chromedriver starts");
        // chromedriver says "ChromeDriver was started successfully on port
        // N." once it listens, "IPv4 port not available. Exiting..." when
        // the bind fails; its stdout ends when it exits.
        let mut said = String::new();
        let mut listening = false;
        while let Some(line) = child.next_line().await {
            let line = line.text().into_owned();
            if line.contains("started successfully") {
                listening = true;
                break;
            }
            said.push_str(&line);
            said.push('\n');
        }
        if listening {
            // Nobody reads its output any more: let it run free.
            drop(child.take_lines());
            return (child, port);
        }
        let _ = child.stop(Duration::from_secs(2)).await;
        failures.push(format!("port {port}:\n{said}"));
    }
    panic!(
        "chromedriver did not listen after 5 tries:\n{}",
        failures.join("\n")
    );
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let (driver, port) = start_driver(chromedriver).await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,2400",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": chromium, "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_for_async("chromedriver to accept a session", || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Ends the session (Chromium exits), then chromedriver.
    async fn stop(self) {
        let _ = self.client.close().await;
        let mut driver = self.driver;
        let _ = driver.stop(Duration::from_secs(2)).await;
        drop(self.profile);
    }

    /// The text of the first element matching `css`, if there is one now.
    async fn text(&self, css: &str) -> Result<String, String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        match self.client.execute(script, vec![css.into()]).await {
            Ok(serde_json::Value::String(s)) => Ok(s),
            Ok(_) => Err(format!("no {css}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait_text(&self, what: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for_async(what, || async {
            let t = self.text(css).await?;
            if ok(&t) { Ok(t) } else { Err(t) }
        })
        .await
    }

    /// Clicks the element matching `css` as a person would (WebDriver's
    /// click); the page redraws every sample, so a stale element is looked
    /// up again.
    async fn click(&self, css: &str) {
        wait_for_async(&format!("a click on {css}"), || async {
            let e = self
                .client
                .find(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())?;
            e.click().await.map_err(|e| e.to_string())
        })
        .await;
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("monitor-screenshots")
}

fn sigkill(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// What the overview card of the pool shows, field by field.
async fn card(b: &Browser, field: &str) -> Result<String, String> {
    b.text(&format!("[data-testid=pool-images] [data-field={field}]"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_pool_and_its_alerts_and_refuses_a_viewer_but_not_an_operator() {
    let Some((chromium, chromedriver)) = browser_available() else {
        return;
    };
    let base = Baseline::take().await;
    let rule = AlertRule::new("HighErrorRate", Condition::ErrorRateAbove { per_sec: 2.0 })
        .for_duration(Duration::from_millis(300));
    let rig = Rig::start(vec![rule], |b| b.sample_every(Duration::from_millis(250))).await;
    let b = Browser::start(&chromium, &chromedriver).await;
    b.client
        .goto(&format!("{}/#token={VIEWER}", rig.base))
        .await
        .unwrap();
    b.wait_text("the page to go live", "#conn-text", |t| t == "live")
        .await;
    assert_eq!(b.text("[data-testid=role]").await.unwrap(), "viewer");

    // The numbers shown are the snapshot's.
    for n in 0..25 {
        rig.pool.call(Job::Sleep { n, ms: 0 }).await.unwrap();
    }
    b.wait_text(
        "25 completed on the page",
        "[data-testid=pool-images] [data-field=completed]",
        |t| t == "25",
    )
    .await;
    let snap = rig.get("/api/snapshot", Some(VIEWER)).await.json();
    let pool = &snap["pools"][0];
    assert_eq!(
        card(&b, "completed").await.unwrap(),
        pool["totals"]["completed"].to_string()
    );
    assert_eq!(
        card(&b, "workers").await.unwrap(),
        format!("{}/{}", pool["workers_ready"], pool["workers"])
    );
    assert_eq!(
        card(&b, "failed").await.unwrap(),
        pool["totals"]["failed"].to_string()
    );
    let running = snap["supervisors"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "running")
        .count();
    b.wait_text(
        "the supervisor's running children",
        "[data-testid=supervisor-root] [data-field=running]",
        |t| t == format!("{running}/3"),
    )
    .await;

    // Kill a worker: the crash, with its cause, reaches the event log, and
    // the charts keep moving (one point per sample).
    let points_js =
        "return document.querySelector('[data-testid=chart-images-tasks]').dataset.points";
    let points = |v: serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let before = points(b.client.execute(points_js, vec![]).await.unwrap());
    let victim = rig.pool.stats().workers[0].clone();
    sigkill(victim.pid.unwrap());
    let crash = b
        .wait_text(
            "the crash in the event log",
            "tr.log-row[data-kind=crash]",
            |t| t.contains(&format!("worker {}", victim.worker)) && t.contains("SIGKILL"),
        )
        .await;
    assert!(crash.contains("crashed"), "{crash}");
    wait_for_async("the charts to move", || async {
        let now = points(
            b.client
                .execute(points_js, vec![])
                .await
                .map_err(|e| e.to_string())?,
        );
        if now >= before + 2 {
            Ok(())
        } else {
            Err(format!("{before} -> {now} points"))
        }
    })
    .await;
    b.wait_text(
        "the crash counted on the card",
        "[data-testid=pool-images] [data-field=crashes]",
        |t| t == "1",
    )
    .await;

    // Trip the alert with a storm of failing tasks: it fires, then resolves.
    let pool = rig.pool.clone();
    // Paced by an interval (a load generator's rate, not a wait for anything).
    let storm = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        loop {
            pace.tick().await;
            let _ = pool.call(Job::Fail).await;
        }
    });
    let alert = "[data-alert='HighErrorRate:images']";
    b.wait_text(
        "the alert to fire on the page",
        &format!("{alert}[data-status=firing]"),
        |t| t.contains("FIRING"),
    )
    .await;
    storm.abort();
    let _ = storm.await;
    b.wait_text(
        "the alert to resolve on the page",
        &format!("{alert}[data-status=resolved]"),
        |t| t.contains("RESOLVED"),
    )
    .await;

    // A viewer's click on "restart" is refused, and nothing changes.
    let pid = rig.child_pid("web").await;
    b.click("button[data-action=restart-child][data-child=web]")
        .await;
    let toast = b
        .wait_text("the refusal", "#toast[data-result=refused]", |t| {
            t.contains("403")
        })
        .await;
    assert!(toast.contains("may not act"), "{toast}");
    assert_eq!(rig.child_pid("web").await, pid);

    std::fs::create_dir_all(screenshot_dir()).unwrap();
    let png = b.client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join("viewer.png"), png).unwrap();

    // The viewer signs out; an operator signs in with the form, and the same
    // click works.
    b.click("#logout").await;
    b.wait_text("the sign-in help", "#conn-text", |t| t == "signed out")
        .await;
    let input = b.client.find(Locator::Css("#token")).await.unwrap();
    input.send_keys(OPERATOR).await.unwrap();
    b.click("#login button[type=submit]").await;
    b.wait_text("the page to go live again", "#conn-text", |t| t == "live")
        .await;
    assert_eq!(b.text("[data-testid=role]").await.unwrap(), "operator");
    let pid = rig.child_pid("jobs/indexer").await.unwrap();
    b.click("button[data-action=restart-child][data-child='jobs/indexer']")
        .await;
    b.wait_text("the restart to be done", "#toast[data-result=ok]", |t| {
        t.contains("restarted")
    })
    .await;
    let new_pid = rig.child_pid("jobs/indexer").await.unwrap();
    assert_ne!(new_pid, pid);
    // The page shows the new instance once it samples again.
    b.wait_text(
        "the new pid on the page",
        "tr[data-child='jobs/indexer'] td:nth-child(3)",
        |t| t == new_pid.to_string(),
    )
    .await;
    // The operator grows the pool from the page.
    let size = b
        .client
        .find(Locator::Css("[data-testid=resize-images]"))
        .await
        .unwrap();
    size.clear().await.unwrap();
    size.send_keys("3").await.unwrap();
    b.click("button[data-action=resize][data-pool=images]")
        .await;
    b.wait_text(
        "three workers on the card",
        "[data-testid=pool-images] [data-field=workers]",
        |t| t == "3/3",
    )
    .await;
    assert_eq!(rig.pool.size(), 3);

    // The clicks are in the action log: who, what, and how each ended.
    let actions = rig.get("/api/actions", Some(OPERATOR)).await.json();
    let log: Vec<(&str, &str, &str)> = actions["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap(),
                r["request"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            (
                "vera",
                "POST /api/supervisors/root/children/web/restart",
                "forbidden"
            ),
            (
                "otto",
                "POST /api/supervisors/root/children/jobs/indexer/restart",
                "done"
            ),
            ("otto", "POST /api/pools/images/resize", "done"),
        ]
    );

    // The operator sees the action log on the page too, the viewer's refusal first.
    b.wait_text(
        "the refusal in the page's action log",
        "#actions tr[data-result=forbidden]",
        |t| t.contains("vera (viewer)") && t.contains("403"),
    )
    .await;

    let png = b.client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join("operator.png"), png).unwrap();
    b.stop().await;
    rig.stop().await;
    base.assert_clean().await;
}
