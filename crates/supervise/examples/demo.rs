//! A narrated run of a small supervision tree:
//!
//! ```text
//! root (one_for_one, intensity 3 within 10s)
//! ├── web        HTTP server; readiness and liveness: GET /health
//! └── backend    nested supervisor (one_for_one, intensity 6 within 10s)
//!     ├── worker     crashes four times right after starting, then settles
//!     └── cache      optional, with a circuit breaker
//! ```
//!
//! It goes through a crash loop with growing backoff, a hang caught by the liveness probe, a
//! breaker opening (the group degrades and keeps serving) and closing again, an explanation of
//! the supervisor's decisions, and a clean shutdown, then checks that no process is left.
//!
//! `cargo run --release -p forkyard-supervise --example demo -- [--quick]`

#[path = "common/roles.rs"]
mod roles;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use forkyard_supervise::{
    Backoff, BreakerConfig, ChildSpec, Event, EventKind, EventStream, Health, Probe, Shutdown,
    Strategy, Supervisor,
};

struct Pace {
    backoff_initial: Duration,
    backoff_max: Duration,
    liveness_every: Duration,
    breaker_open: Duration,
    pause: Duration,
}

fn main() -> anyhow::Result<ExitCode> {
    if let Some(code) = roles::run_role_if_asked() {
        return Ok(code);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let pace = if quick {
        Pace {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            liveness_every: Duration::from_millis(100),
            breaker_open: Duration::from_millis(700),
            pause: Duration::ZERO,
        }
    } else {
        Pace {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            liveness_every: Duration::from_millis(300),
            breaker_open: Duration::from_secs(3),
            pause: Duration::from_millis(1_500),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(pace))
}

/// Prints every event as it goes by, and waits for the ones the story needs.
struct Narrator {
    events: EventStream,
    pids: BTreeSet<u32>,
    seen: Vec<Event>,
}

impl Narrator {
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .with_context(|| format!("timed out waiting for {what}"))?
                .with_context(|| format!("events ended waiting for {what}"))?;
            if let EventKind::Spawned { pid } = event.kind
                && pid != 0
            {
                self.pids.insert(pid);
            }
            print_event(&event);
            self.seen.push(event.clone());
            if pred(&event) {
                return Ok(event);
            }
        }
    }

    /// Prints whatever is already waiting.
    fn drain(&mut self) {
        while let Some(event) = self.events.try_next() {
            if let EventKind::Spawned { pid } = event.kind
                && pid != 0
            {
                self.pids.insert(pid);
            }
            print_event(&event);
            self.seen.push(event);
        }
    }
}

/// `  0.412s  backend/worker  exited pid 1234: exit code 1 after 30ms`
fn print_event(event: &Event) {
    let path = match &event.child {
        Some(child) => format!("{}/{child}", event.supervisor),
        None => event.supervisor.clone(),
    };
    let who = path.strip_prefix("root/").unwrap_or(&path);
    println!(
        "  {:>3}.{:03}s  {who:<15} {}",
        event.at.as_secs(),
        event.at.subsec_millis(),
        event.kind
    );
}

fn is(event: &Event, child: &str, pred: impl Fn(&EventKind) -> bool) -> bool {
    event.child.as_deref() == Some(child) && pred(&event.kind)
}

fn heading(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

async fn demo(pace: Pace) -> anyhow::Result<ExitCode> {
    let port = roles::free_port();
    let health = format!("http://127.0.0.1:{port}/health");

    // The worker crashes 30 ms after each of its first four starts.
    let starts = Arc::new(AtomicU32::new(0));
    let worker = ChildSpec::new("worker", move || {
        let n = starts.fetch_add(1, Ordering::SeqCst);
        let crash_after = if n < 4 { "30" } else { "0" };
        roles::role_command("worker", &["--crash-after-ms".into(), crash_after.into()])
    })
    .backoff(Backoff::exponential(pace.backoff_initial, pace.backoff_max).jitter(0.0));

    // The cache cannot start while `cache_broken` is set.
    let cache_broken = Arc::new(AtomicBool::new(false));
    let broken = cache_broken.clone();
    let cache = ChildSpec::new("cache", move || {
        let code = if broken.load(Ordering::SeqCst) {
            "2"
        } else {
            "0"
        };
        roles::role_command("cache", &["--exit-code".into(), code.into()])
    })
    .optional()
    .breaker(BreakerConfig::new(3, Duration::from_secs(10)).open_for(pace.breaker_open))
    .backoff(Backoff::fixed(Duration::from_millis(20)));

    let backend = Supervisor::builder()
        .strategy(Strategy::OneForOne)
        .intensity(6, Duration::from_secs(10))
        .child(worker)
        .child(cache);
    let web = ChildSpec::new("web", move || {
        roles::role_command("web", &["--port".into(), port.to_string()])
    })
    .readiness(Probe::http(&health).every(Duration::from_millis(10)))
    .liveness(
        Probe::http(&health)
            .every(pace.liveness_every)
            .timeout(pace.liveness_every)
            .failures(3),
    )
    .shutdown(Shutdown::Signal {
        grace: Duration::from_secs(1),
    });
    let builder = Supervisor::builder()
        .intensity(3, Duration::from_secs(10))
        .seed(4)
        .child(web)
        .child(ChildSpec::supervisor("backend", backend));

    println!("forkyard-supervise demo");
    println!();
    println!("  root (one_for_one, intensity 3 within 10s)");
    println!("  ├── web        HTTP server on 127.0.0.1:{port}, probed with GET /health");
    println!("  └── backend    nested supervisor (one_for_one, intensity 6 within 10s)");
    println!("      ├── worker     crashes 30 ms after each of its first 4 starts");
    println!("      └── cache      optional, breaker: 3 failures within 10s");

    let mut story = Narrator {
        events: builder.subscribe(),
        pids: BTreeSet::new(),
        seen: Vec::new(),
    };
    heading("1. start in order (each child ready before the next) and a crash loop");
    let t0 = Instant::now();
    let sup = builder.spawn()?;
    // The worker's fifth start is the one that stays up.
    let readies = std::cell::Cell::new(0);
    story
        .until("the worker's fifth start", |e| {
            if is(e, "worker", |k| matches!(k, EventKind::Ready { .. })) {
                readies.set(readies.get() + 1);
            }
            readies.get() == 5
        })
        .await?;
    sup.started().await?;
    story.drain();
    let backoffs: Vec<String> = story
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Restarting { after, .. } if e.child.as_deref() == Some("worker") => {
                Some(format!("{}ms", after.as_millis()))
            }
            _ => None,
        })
        .collect();
    println!("  -> the worker's backoff grew: {}", backoffs.join(", "));
    tokio::time::sleep(pace.pause).await;

    heading("2. the web server hangs; its liveness probe notices and it is replaced");
    let hung_since = Instant::now();
    roles::poke(port, "/hang");
    let unhealthy = story
        .until("web unhealthy", |e| {
            is(e, "web", |k| matches!(k, EventKind::Unhealthy { .. }))
        })
        .await?;
    let detected = hung_since.elapsed();
    let ready = story
        .until("web ready again", |e| {
            is(e, "web", |k| matches!(k, EventKind::Ready { .. }))
        })
        .await?;
    let replaced = ready.at.saturating_sub(unhealthy.at);
    println!(
        "  -> hang detected after {} ms; replacement ready {} ms later",
        detected.as_millis(),
        replaced.as_millis()
    );
    tokio::time::sleep(pace.pause).await;

    heading("3. the cache breaks: its breaker opens, the group degrades and keeps serving");
    cache_broken.store(true, Ordering::SeqCst);
    let cache_pid = sup
        .status()
        .await?
        .into_iter()
        .find(|s| s.name == "backend/cache")
        .and_then(|s| s.pid)
        .context("cache pid")?;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(cache_pid as i32).context("pid")?,
        rustix::process::Signal::KILL,
    )?;
    story
        .until("degraded", |e| matches!(e.kind, EventKind::Degraded { .. }))
        .await?;
    match sup.health().await? {
        Health::Degraded { which, why } => {
            println!("  -> health: degraded, down: {} ({why})", which.join(", "))
        }
        other => bail!("expected a degraded group, got {other:?}"),
    }
    roles::poke(port, "/health");
    println!("  -> web still answers; only the optional cache is down");
    heading("4. the cache is fixed: the half-open trial succeeds and the breaker closes");
    cache_broken.store(false, Ordering::SeqCst);
    story
        .until("recovered", |e| matches!(e.kind, EventKind::Recovered))
        .await?;
    if sup.health().await? != Health::Healthy {
        bail!("expected a healthy group after recovery");
    }
    println!("  -> health: healthy");
    tokio::time::sleep(pace.pause).await;

    heading("5. why? the supervisor explains its decisions about the worker");
    let explanation = sup.explain("backend/worker").await?;
    print!("{}", indent(&explanation.to_string()));

    heading("6. status, then a clean shutdown in reverse start order");
    let status = sup.status().await?;
    println!(
        "  {:<16} {:<10} {:>8} {:>7}  last exit",
        "child", "state", "restarts", "pid"
    );
    for s in &status {
        println!(
            "  {:<16} {:<10} {:>8} {:>7}  {}",
            s.name,
            s.state.to_string(),
            s.restarts,
            s.pid.map_or("-".to_string(), |p| p.to_string()),
            s.last_exit
                .as_ref()
                .map_or("-".to_string(), ToString::to_string)
        );
    }
    let shutdown_started = Instant::now();
    sup.shutdown().await?;
    let shutdown_took = shutdown_started.elapsed();
    story
        .until("root stopped", |e| {
            e.supervisor == "root" && e.child.is_none() && e.kind == EventKind::Stopped
        })
        .await?;

    heading("figures");
    let left: Vec<u32> = story
        .pids
        .iter()
        .copied()
        .filter(|&p| roles::is_alive(p))
        .collect();
    let restarts: u32 = status.iter().map(|s| s.restarts).sum();
    println!("  processes started          {}", story.pids.len());
    println!("  restarts                   {restarts}");
    println!("  worker backoffs            {}", backoffs.join(", "));
    println!("  hang detected after        {} ms", detected.as_millis());
    println!("  unhealthy -> ready         {} ms", replaced.as_millis());
    println!(
        "  shutdown took              {} ms",
        shutdown_took.as_millis()
    );
    println!(
        "  total run time             {} ms",
        t0.elapsed().as_millis()
    );
    println!("  processes left running     {}", left.len());
    if !left.is_empty() {
        eprintln!("still alive: {left:?}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "\n── What you saw\n\
         A tree of supervisors kept three programs up. A worker that crashed right after each\n\
         start was restarted with a backoff that doubled each time (so a crash loop does not\n\
         spin), within the restart budget (the intensity: so many restarts within so long)\n\
         before the group would give up. A web server that hung without exiting was caught by\n\
         its liveness probe (three timed-out probes in a row: the \"hang detected\" time) and\n\
         replaced. An optional cache that kept failing opened its circuit breaker: the group\n\
         reported itself degraded but kept serving, and one trial start later the cache was\n\
         back. Each restart decision can be asked for its reasons, and the shutdown stopped\n\
         children in reverse start order, leaving nothing running."
    );
    Ok(ExitCode::SUCCESS)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
