//! A live monitor web page for forkyard pools and supervisors: time series,
//! an event log, alerts, and role-based control.
//!
//! # The problem
//!
//! Whoever runs a pool of worker processes and a few supervised services
//! wants three things from one place, at a glance: *what is happening*
//! (throughput, errors, queues, latency, which process crashed and why),
//! *being told when something is wrong* (without staring at the page), and
//! *acting, safely* (restart the stuck child, resize the pool), where a
//! person who may only look cannot press the button by mistake or on purpose.
//! PM2's users reach for `pm2 monit` and PM2's web dashboard for this every
//! day. forkyard had the figures (forkyard-perf's monitor, the pool's event
//! stream, the supervisor's status and `explain`) but no page.
//!
//! # The approach
//!
//! [`Monitor`] watches pools ([`Monitor::watch_pool`]) and supervisor trees
//! ([`Monitor::watch_supervisor`]); [`Monitor::serve`] serves, with hyper, on
//! loopback by default:
//!
//! | path | what | who |
//! |---|---|---|
//! | `/` | the page (one HTML file, its JS and CSS, and uPlot, embedded in the binary) | anyone: it holds no data |
//! | `/api/snapshot` | everything the page shows, as JSON ([`MonitorSnapshot`]) | viewer, operator, auditor |
//! | `/api/events` | the snapshot after every sample, as server-sent events | the same |
//! | `/api/series`, `/api/log` | each pool's time series; the event log | the same |
//! | `/metrics` | Prometheus text: forkyard-perf's figures per pool (label `pool`), alerts, supervised children | the same |
//! | `/api/actions` | the action log | operator, auditor |
//! | `/api/audit` | forkyard-secure's audit log, and whether its hash chain holds | auditor |
//! | `POST /api/pools/{pool}/resize` `{"workers": n}` | set a pool's size | operator |
//! | `POST /api/pools/{pool}/workers/{id}/recycle` | restart one worker (its replacement is ready before it drains) | operator |
//! | `POST /api/pools/{pool}/breaker` `{"open": bool}` | open or close a pool's circuit breaker | operator |
//! | `POST /api/pools/{pool}/drain` `{"grace_secs": s}` | drain a pool (no new task; the rest finish within the grace) | operator |
//! | `POST /api/supervisors/{sup}/children/{child}/{restart,stop,start}` | act on a supervised child (restart is rolling) | operator |
//!
//! **Push for events, pull for figures.** What happens once and matters each
//! time (a worker crashed, and how; a child is backing off; a breaker
//! opened) is *pushed*: the monitor reads the pool's event stream and the
//! supervisor's events as they come and writes each into the event log, in
//! order. What changes all the time (tasks per second, queue depth,
//! percentiles, each worker's CPU and memory) is *pulled*: every
//! [`sample_every`](MonitorBuilder::sample_every) (1 s) the monitor reads
//! forkyard-perf's per-second figures, `Pool::stats` and each supervisor's
//! status and last `explain` decision, so its cost does not grow with the
//! task rate. The page is then *pushed* the new snapshot (server-sent
//! events, no reloads, no polling), while Prometheus keeps its own pull
//! model on `/metrics`.
//!
//! **Time-series retention, in the server.** Each pool keeps a ring buffer
//! of [`retention`](MonitorBuilder::retention) / `sample_every` points (10
//! minutes of 1 s points by default, about 600 points): tasks/s, errors/s by
//! kind, queue depth, queue-wait and service-time p50/p99 (forkyard-perf's
//! HDR histograms of the last complete second), and each worker's CPU and
//! RSS. The oldest point goes when a new one comes, so memory is fixed by
//! configuration, not by uptime. A page that opens late gets the whole ring
//! (`/api/series`) and then follows along. The event log keeps its newest
//! 1,000 entries (the snapshot carries 200), the page its 20 last resolved
//! alerts. Anything longer belongs to Prometheus, scraping `/metrics`.
//!
//! **Alerts, with Prometheus's semantics.** An [`AlertRule`] is a
//! [`Condition`] (error rate, p99 queue wait, restarts per minute, breaker
//! open, a worker's RSS) and a duration. It is evaluated at every sample, for
//! every pool or supervisor it applies to. When the condition holds the
//! alert is *pending*; once it has held at every evaluation for the rule's
//! duration (Prometheus's `for:`) it is *firing*; at the first evaluation
//! where it no longer holds it is *resolved*. A pending alert that stops
//! holding goes back to inactive and nobody is told. Firing and resolution
//! are shown on the page and sent to each [`Notifier`]: a command (the alert
//! in environment variables) or a webhook that receives the payload
//! Alertmanager sends its webhook receivers (version 4), so receivers
//! written for Alertmanager take it as is. Grouping, silences and repeats
//! are Alertmanager's job, not this crate's.
//!
//! **Roles.** Three [`Role`]s: a *viewer* reads everything the page shows
//! and changes nothing; an *operator* may also act; an *auditor* may also
//! read the action log and forkyard-secure's audit log (and may not act:
//! the one who checks is not the one who acts). Callers prove who they are
//! with a bearer token ([`Access::token`], [`Access::generate`]): the monitor
//! keeps only its SHA-256 digest and compares digests in constant time
//! (`subtle`), against every known token, so neither a stolen config nor the
//! time an answer takes gives a token away. On the same machine, the Unix
//! socket ([`Monitor::serve_unix`]) needs no token: the kernel says which uid
//! is at the other end (`SO_PEERCRED`), and [`Access::uid`] maps uids to
//! roles. No credentials: 401; a role that may not: 403; either way nothing
//! is done. Every action attempt, refused or not, is recorded with who, what,
//! when and the result, in memory and (with
//! [`action_log`](MonitorBuilder::action_log)) appended as JSON lines to a
//! file opened with `O_APPEND` that is never rewritten. Bad input is a clear
//! 4xx with a JSON body saying what was wrong: an unknown pool or child
//! (404), a malformed path (400), a body over the limit (413, refused before
//! it is read when its length is announced, cut off at the limit when not).
//!
//! # Example
//!
//! This one watches a pool of two workers (the same binary, squaring
//! numbers) and a supervisor with one child, serves on a port the kernel
//! picks, reads its own snapshot once with the viewer's token, and stops
//! everything:
//!
//! ```rust,standalone_crate
//! use std::time::Duration;
//! use forkyard_monitor::{Access, AlertRule, Condition, Monitor, Role};
//! use forkyard_pool::{Pool, ShutdownMode};
//! use forkyard_supervise::{ChildSpec, Supervisor};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     if forkyard_pool::worker::is_worker() {
//!         forkyard_pool::worker::serve(|n: u64| async move { Ok::<u64, String>(n * n) });
//!     }
//!     tokio::runtime::Runtime::new()?.block_on(async {
//!         let pool = Pool::<u64, u64>::builder()
//!             .self_exec(std::iter::empty::<&str>())?
//!             .workers(2)
//!             .build()
//!             .await?;
//!         let sup = Supervisor::builder()
//!             .child(ChildSpec::new("web", || {
//!                 let mut web = std::process::Command::new("sleep");
//!                 web.arg("600");
//!                 web
//!             }))
//!             .start()
//!             .await?;
//!
//!         let mut access = Access::new();
//!         let viewer = access.generate("viewer", Role::Viewer)?;
//!         println!("operator token: {}", access.generate("operator", Role::Operator)?);
//!         let monitor = Monitor::builder()
//!             .access(access)
//!             .alert(
//!                 AlertRule::new("HighErrorRate", Condition::ErrorRateAbove { per_sec: 1.0 })
//!                     .for_duration(Duration::from_secs(30)),
//!             )
//!             .build()?;
//!         monitor.watch_pool("images", &pool)?;
//!         monitor.watch_supervisor(&sup)?;
//!         let server = monitor.serve("127.0.0.1:0".parse()?).await?;
//!         let addr = server.local_addr().expect("a TCP address");
//!         println!("monitor on http://{addr}/");
//!         assert_eq!(pool.call(12).await?, 144);
//!
//!         // What the page reads, as the viewer.
//!         let mut conn = tokio::net::TcpStream::connect(addr).await?;
//!         let request = format!(
//!             "GET /api/snapshot HTTP/1.1\r\nHost: {addr}\r\n\
//!              Authorization: Bearer {viewer}\r\nConnection: close\r\n\r\n"
//!         );
//!         conn.write_all(request.as_bytes()).await?;
//!         let mut answer = String::new();
//!         conn.read_to_string(&mut answer).await?;
//!         assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
//!         assert!(answer.contains("\"images\""), "{answer}");
//!
//!         server.shutdown().await;
//!         drop(monitor);
//!         pool.shutdown(ShutdownMode::Drain { grace: Duration::from_secs(5) }).await;
//!         sup.shutdown().await?;
//!         Ok::<(), Box<dyn std::error::Error>>(())
//!     })
//! }
//! ```
//!
//! `examples/live.rs` runs a small workload behind the monitor
//! (`cargo run --release -p forkyard-monitor --example live -- --port 8080`);
//! `examples/demo.rs` drives a scripted incident (`cargo xtask demo monitor`).
//!
//! # Caveats
//!
//! - **Plain HTTP.** Tokens travel in clear text: serve on loopback (the
//!   default in the examples) or the Unix socket, or put a TLS proxy in
//!   front. The page keeps its token in the tab's `sessionStorage`, reads it
//!   from the URL's fragment (never sent to a server) and removes it from
//!   the address bar.
//! - **The monitor holds a handle on each watched pool and supervisor**: a
//!   watched pool does not end because its other handles were dropped.
//!   [`Monitor::unwatch_pool`], dropping the monitor, or an explicit
//!   `Pool::shutdown` ends it.
//! - **Figures are sampled**: a chart point is the last complete second as
//!   forkyard-perf measured it; a spike shorter than a sample may show in
//!   one point only, and the per-worker charts follow worker *slots* (a
//!   replaced worker's successor continues its line).
//! - **A rolling restart of a supervised child** starts the new instance
//!   before stopping the old one: the child must be able to share its port
//!   (see forkyard-supervise).
//! - **Events can be missed** by a monitor that falls more than the pool's
//!   event capacity behind; the log says how many.
//! - **Drain has no undo**: a drained pool takes no new task and its
//!   workers exit; the page keeps showing it (with 0 workers) until it is
//!   unwatched.
//!
//! # Compared with
//!
//! - **`pm2 monit`**: a terminal view of CPU, memory, restarts and logs per
//!   process; no queue, no latency percentiles, no history, no alerts, and
//!   anyone with a shell on the machine can act.
//! - **PM2's web dashboard** (PM2 Plus / pm2.io): history, alerts on CPU,
//!   memory and exceptions, restart buttons; hosted by a third party, with
//!   accounts rather than local roles; it knows processes, not queues.
//! - **Prometheus + Alertmanager + Grafana**: the reference for all three
//!   parts (this crate keeps their alert semantics and exports for them),
//!   but three services to run and no buttons; use them for long history and
//!   many machines, and this page for one machine, now.
//! - **Erlang's observer**: a live tree of supervisors and processes with the
//!   power to kill any of them, for whoever is attached; no roles, no log of
//!   who did what.
//!
//! # See also
//!
//! `forkyard-perf` (the per-second figures, verdicts and the Prometheus
//! families this crate serves per pool), `forkyard-pool` (the event stream
//! and statistics), `forkyard-supervise` (status, `explain`, rolling
//! restarts), `forkyard-secure` (the audit log the auditor reads).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod actions;
mod alerts;
mod auth;
mod error;
mod http;
mod metrics;
mod monitor;
mod notify;
mod state;

pub use actions::{Action, ActionRecord, ActionResult};
pub use alerts::{AlertRule, AlertState, Condition};
pub use auth::{Access, Principal, Role, token_sha256};
pub use error::MonitorError;
pub use http::Server;
pub use monitor::{Monitor, MonitorBuilder};
pub use notify::Notifier;
pub use state::{
    AlertStatus, AlertView, ChildStateKind, ChildView, DecisionView, Level, LogEntry, LogKind,
    Millis, MonitorSnapshot, PoolPoint, PoolStatus, PoolTotals, PoolView, SupervisorHealth,
    SupervisorView, WorkerPoint, WorkerView,
};
