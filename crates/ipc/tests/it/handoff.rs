//! Zero-downtime handoff, against real worker processes under load.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use forkyard_ipc::Error;
use forkyard_ipc::balance::{Cluster, ClusterConfig, Mode, WorkerSlot};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::balance::{ask, parse};
use crate::support::{Baseline, fixture, mt};

/// What a client loop saw.
#[derive(Debug, Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Highest generation that answered.
    newest: AtomicU64,
}

/// A client that sends requests back to back on keep-alive connections,
/// reconnecting when a reply says `close`, until `stop`. Any connection
/// refused, reset or closed without a reply is a failed request.
async fn client_loop(
    addr: std::net::SocketAddr,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
    name: usize,
) {
    let mut conn: Option<(
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    )> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let text = format!("c{name}-{i}");
        let result: std::io::Result<bool> = async {
            if conn.is_none() {
                let (r, w) = TcpStream::connect(addr).await?.into_split();
                conn = Some((BufReader::new(r), w));
            }
            let (r, w) = conn.as_mut().expect("just connected");
            w.write_all(format!("{text}\n").as_bytes()).await?;
            let mut line = String::new();
            r.read_line(&mut line).await?;
            if line.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let reply = parse(line.trim_end(), &text);
            load.newest.fetch_max(reply.generation, Ordering::Relaxed);
            Ok(reply.close)
        }
        .await;
        match result {
            Ok(close) => {
                load.ok.fetch_add(1, Ordering::Relaxed);
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                eprintln!("client {name}: request {i} failed: {e}");
                load.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

fn serve(
    flags: fn(WorkerSlot) -> Option<&'static str>,
) -> impl FnMut(WorkerSlot) -> Command + Send + 'static {
    move |slot| {
        let mut cmd = fixture(&["serve"]);
        cmd.args(flags(slot));
        cmd
    }
}

#[test]
fn handoffs_under_steady_load_lose_no_request() {
    for mode in [Mode::Shared, Mode::RoundRobin] {
        mt().block_on(async {
            let base = Baseline::take().await;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let cluster = Cluster::start(
                listener,
                ClusterConfig::new(mode).workers(2),
                serve(|_| None),
            )
            .await
            .unwrap();
            let addr = cluster.local_addr();
            let load = Arc::new(Load::default());
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..4)
                .map(|n| tokio::spawn(client_loop(addr, load.clone(), stop.clone(), n)))
                .collect();
            let mut before = 0;
            for expected in 2..=4u64 {
                // Each handoff happens with requests flowing.
                while load.ok.load(Ordering::Relaxed) < before + 50 {
                    tokio::task::yield_now().await;
                }
                let old_pids: Vec<u32> = cluster
                    .stats()
                    .await
                    .unwrap()
                    .current()
                    .map(|w| w.pid)
                    .collect();
                assert_eq!(cluster.handoff().await.unwrap(), expected);
                for pid in old_pids {
                    assert!(
                        !forkyard_testkit::is_alive(pid),
                        "{mode:?}: old worker {pid} still alive after the handoff"
                    );
                }
                before = load.ok.load(Ordering::Relaxed);
            }
            while load.ok.load(Ordering::Relaxed) < before + 50 {
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::Relaxed);
            for c in clients {
                c.await.unwrap();
            }
            assert_eq!(
                load.failed.load(Ordering::Relaxed),
                0,
                "{mode:?}: failed requests"
            );
            assert_eq!(load.newest.load(Ordering::Relaxed), 4);
            let report = cluster.shutdown().await.unwrap();
            assert_eq!(report.generation, 4);
            assert_eq!(report.workers.len(), 8, "four generations of two");
            assert!(
                report
                    .workers
                    .iter()
                    .all(|w| w.exit.as_ref().is_some_and(|e| e.code() == Some(0))),
                "{report:?}"
            );
            base.assert_clean().await;
        });
    }
}

#[test]
fn a_generation_that_fails_to_start_is_killed_and_the_old_one_keeps_serving() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = ClusterConfig::new(Mode::Shared)
            .workers(2)
            .ready_timeout(Duration::from_millis(500));
        // Generation 2 never says ready; generation 3 crashes at start.
        let cluster = Cluster::start(
            listener,
            config,
            serve(|slot| match slot.generation {
                2 => (slot.index == 1).then_some("--never-ready"),
                3 => Some("--exit-at-start"),
                _ => None,
            }),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        for (generation, expect) in [(2, "not ready within"), (3, "exited")] {
            // Clients keep coming while the doomed generation starts (one of
            // generation 2's workers is ready for the whole 500 ms): each is
            // answered, and by generation 1.
            let asking = AtomicBool::new(true);
            let clients = async {
                let mut answered = 0u64;
                while asking.load(Ordering::Relaxed) {
                    let reply = ask(addr, "during")
                        .await
                        .expect("a client during a failed handoff");
                    assert_eq!(reply.generation, 1, "answered by a generation that failed");
                    answered += 1;
                }
                answered
            };
            let handoff = async {
                let result = cluster.handoff().await;
                asking.store(false, Ordering::Relaxed);
                result
            };
            let (result, answered) = tokio::join!(handoff, clients);
            assert!(answered > 0);
            match result {
                Err(Error::NotReady {
                    generation: g,
                    reason,
                }) => {
                    assert_eq!(g, generation);
                    assert!(reason.contains(expect), "{reason}");
                }
                other => panic!("expected NotReady, got {other:?}"),
            }
            // Generation 1 still serves, and the failed one is gone.
            assert_eq!(ask(addr, "still-there").await.unwrap().generation, 1);
            let stats = cluster.stats().await.unwrap();
            assert_eq!(stats.generation, 1);
            for w in stats.workers.iter().filter(|w| w.generation == generation) {
                crate::support::wait_for("the failed generation to die", || {
                    (!forkyard_testkit::is_alive(w.pid))
                        .then_some(())
                        .ok_or(format!("{} alive", w.pid))
                })
                .await;
            }
        }
        // A later, good generation takes over.
        assert_eq!(cluster.handoff().await.unwrap(), 4);
        assert_eq!(ask(addr, "new").await.unwrap().generation, 4);
        drop(cluster.shutdown().await.unwrap());
        base.assert_clean().await;
    });
}

#[test]
fn a_second_handoff_while_one_runs_is_refused() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cluster = Cluster::start(
            listener,
            ClusterConfig::new(Mode::RoundRobin).workers(1),
            serve(|_| None),
        )
        .await
        .unwrap();
        // Both requests reach the cluster in order: the first starts a handoff.
        let (first, second) = tokio::join!(cluster.handoff(), cluster.handoff());
        assert_eq!(first.unwrap(), 2);
        assert!(
            matches!(second, Err(Error::HandoffInProgress)),
            "{second:?}"
        );
        assert_eq!(ask(cluster.local_addr(), "hi").await.unwrap().generation, 2);
        drop(cluster.shutdown().await.unwrap());
        base.assert_clean().await;
    });
}
