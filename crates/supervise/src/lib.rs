//! Keep processes alive: restart policies, backoff, circuit breakers, health probes,
//! supervisor trees and graceful degradation.
//!
//! # The problem
//!
//! A long-running service runs other programs: a web server, workers, a cache. They crash, they
//! hang, they get stuck in a loop that looks alive, they fail to start because a port is taken
//! or a disk is full. "Restart it when it dies" is the easy part, and it is where most tools stop.
//! The hard parts are the ones users of those tools keep reporting:
//!
//! - **Crash loops that never end.** PM2's `max_restarts` counts only crashes within
//!   `min_uptime` (1 s), so a program that crashes after 2 s is restarted thousands of times a
//!   night. Without a budget, a restart loop burns CPU and fills logs; without backoff, it
//!   hammers whatever it depends on.
//! - **Hangs.** A process that is alive but stuck never exits, so a supervisor that only waits
//!   for exits never notices it. A livelocked one even answers "I'm alive".
//! - **All or nothing.** A broken optional component (a cache) takes the whole service down, or
//!   is retried forever at full speed.
//! - **Unsafe restarts.** A reload that kills the old instance before the new one is ready drops
//!   traffic; a grandchild that kept the port open makes the restart fail with `EADDRINUSE`.
//! - **Opaque decisions.** "Why was it restarted at 03:12? Why did it give up?"
//!
//! # The approach
//!
//! Erlang/OTP solved the structure 30 years ago: *restart types* (permanent, transient,
//! temporary), *strategies* (one_for_one, one_for_all, rest_for_one, with ordered start and
//! reverse stop), a *restart intensity* (more than `intensity` restarts within `period` and the
//! supervisor gives up and escalates to its parent), and *trees* of supervisors. systemd
//! contributed an exponential backoff formula (`RestartSteps=`, `RestartMaxDelaySec=`) and the
//! list of clean exits; Kubernetes the probe semantics (initial delay, period, timeout, failure
//! and success thresholds); resilience libraries the circuit breaker. This crate puts them
//! together for OS processes, on top of [`forkyard_child`], which owns each process's whole
//! group (so a stop reaches grandchildren) and reports how it ended with its resource usage.
//!
//! Its core is a **pure decision function**: `step(state, input, now) -> actions`. It does no
//! I/O and reads no clock; the runtime feeds it what happened (an exit, a probe result, a timer,
//! a stop request) and carries out what it decides (spawn, stop, probe, set a timer, publish an
//! event). Every decision is tested in virtual time, and every one is journaled with the rule
//! behind it, so [`Supervisor::explain`] can answer "why".
//!
//! The parts:
//!
//! - [`ChildSpec`]: how to start a child ([`Launch`] for stdio, passed fds and containment), its
//!   [`Restart`] type and clean exits, [`Backoff`], optional [`CircuitBreaker`], readiness and
//!   liveness [`Probe`]s (TCP, HTTP, exec, file, and heartbeats carrying a progress counter,
//!   which catch a livelock, not only a deadlock), and its [`Shutdown`].
//! - [`Supervisor`]: a [`Strategy`], an intensity, children started in order (each one ready
//!   before the next) and stopped in reverse; nested supervisors ([`ChildSpec::supervisor`]) whose
//!   give-up counts as a failure of the parent's child, so escalation travels up the tree.
//! - Optional children ([`ChildSpec::optional`]) are governed by their breaker instead of the
//!   group's budget: when it opens, the child stays down and the group reports
//!   [`Health::Degraded`] while the rest keeps serving.
//! - [`Event`]s (spawned, ready, exited with rusage, unhealthy, restarting in X, breaker
//!   opened/half-open/closed, degraded, gave up...) on a bounded stream, also logged with
//!   `tracing`; a [`ChildStatus`] snapshot per child; rolling restarts
//!   ([`Supervisor::restart_child`]) that start the new instance and wait for it to be ready
//!   before stopping the old one.
//! - [`Backoff`], [`BackoffState`] and [`CircuitBreaker`] are plain values with no supervisor
//!   attached, for reuse elsewhere (`forkyard-pool` restarts its workers with them).
//!
//! # Example
//!
//! A steady child and one that always fails. The flaky one is restarted after 10, 20 and 40 ms
//! (exponential backoff); its fourth restart within 10 s exceeds the intensity of 3, so the
//! supervisor gives up, stops the steady child too, and says why.
//!
//! ```
//! use std::process::Command;
//! use std::time::Duration;
//! use forkyard_supervise::{Backoff, ChildSpec, Error, EventKind, Supervisor};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let ms = Duration::from_millis;
//! let builder = Supervisor::builder()
//!     .intensity(3, Duration::from_secs(10))
//!     .child(ChildSpec::new("steady", || {
//!         let mut cmd = Command::new("sleep");
//!         cmd.arg("60");
//!         cmd
//!     }))
//!     .child(
//!         ChildSpec::new("flaky", || {
//!             let mut cmd = Command::new("sh");
//!             cmd.args(["-c", "exit 1"]);
//!             cmd
//!         })
//!         .backoff(Backoff::exponential(ms(10), ms(80)).jitter(0.0)),
//!     );
//! let mut events = builder.subscribe();
//! let sup = builder.start().await?;
//!
//! let err = sup.wait().await.unwrap_err();
//! assert!(matches!(err, Error::GaveUp { .. }));
//!
//! let mut delays = Vec::new();
//! while let Some(event) = events.next().await {
//!     if let EventKind::Restarting { after, .. } = event.kind {
//!         delays.push(after);
//!     }
//! }
//! assert_eq!(delays, [ms(10), ms(20), ms(40)]);
//!
//! // Why did it give up?
//! let why = sup.explain("flaky").await?;
//! assert!(why.to_string().contains("4 restarts within 10s (at most 3 allowed)"));
//! println!("{why}");
//! # Ok(()) }
//! ```
//!
//! For health checks, trees and degradation, see `examples/demo.rs`
//! (`cargo xtask demo supervise`), which runs a web server with HTTP probes, a crash-looping
//! worker and an optional cache through a crash loop, a hang, a breaker opening and closing and
//! a clean shutdown.
//!
//! # How it compares
//!
//! | | Erlang/OTP | systemd | PM2 | forkyard-supervise |
//! |---|---|---|---|---|
//! | restart types | permanent / transient / temporary | `Restart=` always, on-failure, ... | `autorestart`, `stop_exit_codes` | OTP's three, clean codes and signals configurable (systemd's defaults) |
//! | group strategies | one_for_one, one_for_all, rest_for_one | dependencies, no strategies | none | OTP's three, ordered start, reverse stop |
//! | restart budget | intensity / period, escalate | `StartLimitBurst` per interval, unit fails | `max_restarts` of crashes within `min_uptime` only | OTP intensity over *all* restarts (a slow loop is bounded too), escalates up the tree |
//! | backoff | none | `RestartSteps` / `RestartMaxDelaySec`, never reset by uptime | ×1.5 up to 15 s, reset after 30 s up | systemd's formula, seeded jitter, reset after a stability window |
//! | readiness | `init` returns | `Type=notify` | `wait_ready` | probe (TCP, HTTP, exec, file, heartbeat) or a nested group's start, with a start timeout |
//! | liveness | links (exits only) | `WatchdogSec` pings | memory limit, polled | probes with Kubernetes thresholds; heartbeats with progress catch livelocks |
//! | circuit breaker / degraded mode | no | no | no | per child; optional children degrade the group instead of escalating |
//! | stop | `shutdown` timeout, kill | `TimeoutStopSec`, `KillMode` | SIGINT, SIGKILL after 1.6 s | signal + grace, then SIGKILL to the whole process group |
//! | zero-downtime restart | hot code loading | `ExecReload` | `pm2 reload` (kills before ready, #3078) | rolling restart: new ready before old stops |
//! | why did it restart? | SASL reports | journal | logs | [`Supervisor::explain`]: each decision with its rule |
//!
//! # Caveats
//!
//! - **Dropping** the last [`Supervisor`] handle shuts the supervisor down in the background
//!   (reverse order, graceful). If the tokio runtime itself ends first, the children are dropped
//!   [`forkyard_child::Child`]ren: their process groups are SIGKILLed, with no grace period.
//!   Call [`Supervisor::shutdown`] for an orderly end.
//! - **What a stop reaches**: the child's process group. A descendant that calls `setsid` or
//!   `setpgid` leaves the group and escapes the stop, unless the child runs in a cgroup of its
//!   own ([`Launch::cgroup`], which needs a writable cgroup v2 directory; see
//!   `forkyard-child`'s "Containment").
//! - **Signals**: a [`Shutdown::Signal`] stop sends the stop signal (SIGTERM unless
//!   [`ChildSpec::stop_signal`] says otherwise) to the group, then SIGKILL after the grace
//!   period. Exits by SIGHUP, SIGINT, SIGTERM or SIGPIPE count as clean for transient children
//!   unless [`ChildSpec::clean_signals`] says otherwise; a stop the supervisor asked for is
//!   never a failure, but an unhealthy child killed by its liveness probe is.
//! - **Budgets**: critical children's restarts count against the group's intensity, optional
//!   children's do not (their breaker governs them). A failed start (spawn error, not ready in
//!   time) counts like a crash. Nested limits multiply, as in OTP.
//! - **Probes**: a TCP probe sees "listening", not "answering" (the kernel completes the
//!   handshake); use HTTP or heartbeats for liveness. Readiness probes have no failure threshold
//!   unless set: the start timeout (30 s) bounds the wait.
//! - **Rolling restarts** run two instances side by side for a moment: the child must be able
//!   to share its port (`SO_REUSEPORT`, or a listening socket passed with [`Launch::pass_fd`]).
//! - **Time** is monotonic (a wall-clock jump changes nothing); jitter is derived from a seed
//!   ([`SupervisorBuilder::seed`]), so a run can be replayed.
//! - **Events** are a bounded broadcast: a reader more than 4096 events behind loses the oldest
//!   and receives one [`EventKind::Lagged`]. Status and explanations are always exact.
//!
//! # See also
//!
//! `forkyard-child` owns each process (group, pidfd, exit and rusage); `forkyard-ipc` carries
//! the messages a heartbeat probe can be fed from ([`Probe::heartbeat`] shows the wiring);
//! `forkyard-pool` reuses [`Backoff`] and [`CircuitBreaker`] for its workers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
mod breaker;
mod budget;
mod decide;
mod error;
mod event;
mod explain;
mod policy;
mod probe;
mod spec;
mod supervisor;

pub use backoff::{Backoff, BackoffState};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use error::{Error, NotUp};
pub use event::{ChildState, ChildStatus, Event, EventKind, Health, ProbeRole, StopReason};
pub use explain::{Decision, Explanation};
pub use policy::{Ending, ExitReport, Restart, Shutdown, Strategy};
pub use probe::{Heartbeat, Probe};
pub use spec::{ChildSpec, Launch};
pub use supervisor::{EventStream, Supervisor, SupervisorBuilder};
