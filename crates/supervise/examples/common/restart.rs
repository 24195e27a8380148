//! The restart benchmark's rig, shared by `benches/restart.rs` and `examples/compare.rs`: one
//! supervised server process; each round kills it with SIGKILL and measures the time until the
//! replacement is ready.

// Each includer uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use forkyard_child::Output;
use forkyard_supervise::{Backoff, ChildSpec, EventKind, Heartbeat, Launch, Probe, Supervisor};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::roles;

/// How the supervisor learns that the replacement is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// No probe: ready as soon as it is spawned (the floor: spawn + exit detection).
    Spawned,
    /// A TCP connect to its port, tried every millisecond.
    TcpProbe,
    /// The child prints `ready` on stdout once it listens (a heartbeat probe fed by a reader).
    Notify,
}

impl Readiness {
    pub(crate) const ALL: [Readiness; 3] =
        [Readiness::Spawned, Readiness::TcpProbe, Readiness::Notify];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Readiness::Spawned => "spawned (no probe)",
            Readiness::TcpProbe => "TCP probe every 1 ms",
            Readiness::Notify => "ready line on stdout",
        }
    }
}

/// Which server process is supervised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// This binary in its `listen` role (a native program).
    Native,
    /// `node` running a one-line HTTP server that prints `ready` once listening (the same
    /// program a Node cluster worker runs, for a like-for-like comparison).
    Node,
}

/// The Node server: listens on PORT, then prints `ready`.
const NODE_SERVER: &str = "require('http').createServer((q, s) => s.end('ok'))\
    .listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'))";

fn server_command(server: Server, port: u16) -> std::process::Command {
    match server {
        Server::Native => roles::role_command("listen", &["--port".into(), port.to_string()]),
        Server::Node => {
            let mut cmd = std::process::Command::new("node");
            cmd.args(["-e", NODE_SERVER])
                .env("PORT", port.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            cmd
        }
    }
}

pub(crate) struct Rig {
    sup: Supervisor,
}

impl Rig {
    pub(crate) async fn start(readiness: Readiness) -> Rig {
        Rig::start_server(Server::Native, readiness).await
    }

    pub(crate) async fn start_server(server: Server, readiness: Readiness) -> Rig {
        let port = roles::free_port();
        let mut spec = match readiness {
            Readiness::Spawned | Readiness::TcpProbe => {
                ChildSpec::new("server", move || server_command(server, port))
            }
            Readiness::Notify => {
                let (tx, rx) = watch::channel(Heartbeat::default());
                let tx = Arc::new(tx);
                let spec = ChildSpec::new("server", move || {
                    let tx = tx.clone();
                    Launch::new(server_command(server, port))
                        .stdout(Output::piped())
                        .on_spawn(move |child| {
                            let pipe = child.take_stdout().expect("piped stdout");
                            tokio::spawn(async move {
                                let mut lines = tokio::io::BufReader::new(pipe).lines();
                                let mut n = 0;
                                while let Ok(Some(line)) = lines.next_line().await {
                                    if line == "ready" {
                                        n += 1;
                                        tx.send_replace(Heartbeat::new(n));
                                    }
                                }
                            });
                        })
                });
                spec.readiness(Probe::heartbeat(rx).timeout(Duration::from_secs(5)))
            }
        };
        if readiness == Readiness::TcpProbe {
            spec = spec
                .readiness(Probe::tcp(format!("127.0.0.1:{port}")).every(Duration::from_millis(1)));
        }
        let sup = Supervisor::builder()
            .intensity(1_000_000, Duration::from_secs(1))
            .child(spec.backoff(Backoff::none()))
            .start()
            .await
            .expect("start the server");
        Rig { sup }
    }

    /// Kills the server and waits for its replacement to be ready; returns the time between.
    pub(crate) async fn restart_once(&self) -> Duration {
        let mut events = self.sup.events();
        let old = self.sup.status().await.expect("status")[0]
            .pid
            .expect("running");
        let t0 = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(old as i32).expect("pid"),
            rustix::process::Signal::KILL,
        )
        .expect("kill");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("replacement ready within 10 s")
                .expect("event stream open");
            if let EventKind::Ready { pid, .. } = event.kind
                && pid != old
            {
                return t0.elapsed();
            }
        }
    }

    pub(crate) async fn stop(self) {
        self.sup.shutdown().await.expect("shutdown");
    }
}
