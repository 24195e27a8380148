//! Handle passing and load balancing, against real worker processes.

use std::process::Command;
use std::time::Duration;

use forkyard_ipc::Error;
use forkyard_ipc::balance::{Cluster, ClusterConfig, ClusterStats, Mode, WorkerSlot, jain_index};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{Baseline, fixture, mt, wait_for_async};

fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// `serve` fixture workers; `flags(slot)` picks extra flags per worker.
fn serve(
    flags: fn(WorkerSlot) -> Option<&'static str>,
) -> impl FnMut(WorkerSlot) -> Command + Send + 'static {
    move |slot| {
        let mut cmd = fixture(&["serve"]);
        cmd.args(flags(slot));
        cmd
    }
}

/// Extra fixture flags for a worker, by slot.
type Flags = fn(WorkerSlot) -> Option<&'static str>;

fn plain(_: WorkerSlot) -> Option<&'static str> {
    None
}

/// One reply of a `serve` worker: `GEN INDEX PID LINE [close]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) generation: u64,
    pub(crate) index: usize,
    pub(crate) pid: u32,
    pub(crate) close: bool,
}

pub(crate) fn parse(line: &str, sent: &str) -> Reply {
    let parts: Vec<&str> = line.split(' ').collect();
    assert!(
        parts.len() >= 4 && parts[3] == sent,
        "bad reply {line:?} to {sent:?}"
    );
    Reply {
        generation: parts[0].parse().unwrap(),
        index: parts[1].parse().unwrap(),
        pid: parts[2].parse().unwrap(),
        close: parts.get(4) == Some(&"close"),
    }
}

/// Connects, sends one line, reads the reply, closes.
pub(crate) async fn ask(addr: std::net::SocketAddr, text: &str) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(addr).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{text}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(parse(line.trim_end(), text))
}

fn connections(stats: &ClusterStats) -> Vec<u64> {
    stats.current().map(|w| w.connections).collect()
}

#[test]
fn round_robin_hands_out_connections_in_turn() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let cluster = Cluster::start(
            listener(),
            ClusterConfig::new(Mode::RoundRobin).workers(3),
            serve(plain),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        let mut seen = Vec::new();
        for i in 0..30 {
            seen.push(ask(addr, &format!("r{i}")).await.unwrap().index);
        }
        assert_eq!(&seen[..6], &[0, 1, 2, 0, 1, 2]);
        let report = cluster.shutdown().await.unwrap();
        assert_eq!(connections(&report), vec![10, 10, 10]);
        assert_eq!(
            report.current().map(|w| w.requests).collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        assert_eq!(report.fairness(), 1.0);
        assert!(
            report
                .current()
                .all(|w| w.exit.as_ref().is_some_and(|e| e.code() == Some(0))),
            "{report:?}"
        );
        base.assert_clean().await;
    });
}

#[test]
fn least_connections_prefers_the_worker_with_fewer_open() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let cluster = Cluster::start(
            listener(),
            ClusterConfig::new(Mode::LeastConnections).workers(2),
            serve(plain),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        // A connection held open on one worker...
        let held = TcpStream::connect(addr).await.unwrap();
        let (hr, mut hw) = held.into_split();
        hw.write_all(b"hold\n").await.unwrap();
        let mut line = String::new();
        let mut hr = BufReader::new(hr);
        hr.read_line(&mut line).await.unwrap();
        let busy = parse(line.trim_end(), "hold").index;
        // ...so short ones all go to the other.
        for i in 0..5 {
            let r = ask(addr, &format!("s{i}")).await.unwrap();
            assert_ne!(r.index, busy, "connection {i} went to the busy worker");
            wait_for_async("the short connection to be counted closed", || {
                let stats = cluster.stats();
                async move {
                    let stats = stats.await.map_err(|e| e.to_string())?;
                    let open: u64 = stats.current().map(|w| w.open).sum();
                    if open == 1 {
                        Ok(())
                    } else {
                        Err(format!("{open} open"))
                    }
                }
            })
            .await;
        }
        drop((hr, hw));
        let report = cluster.shutdown().await.unwrap();
        let mut c = connections(&report);
        c.sort();
        assert_eq!(c, vec![1, 5]);
        base.assert_clean().await;
    });
}

#[test]
fn a_shared_listener_serves_from_every_worker_and_counts_add_up() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let cluster = Cluster::start(
            listener(),
            ClusterConfig::new(Mode::Shared).workers(2),
            serve(plain),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        let asks = (0..40).map(|i| tokio::spawn(async move { ask(addr, &format!("q{i}")).await }));
        for a in asks {
            assert_eq!(a.await.unwrap().unwrap().generation, 1);
        }
        let live = cluster.stats().await.unwrap();
        assert_eq!(live.current().map(|w| w.requests).sum::<u64>(), 40);
        let report = cluster.shutdown().await.unwrap();
        assert_eq!(report.current().map(|w| w.connections).sum::<u64>(), 40);
        assert!(report.fairness() > 0.0 && report.fairness() <= 1.0);
        base.assert_clean().await;
    });
}

#[test]
fn a_worker_killed_with_a_connection_in_flight_passes_it_to_another() {
    mt().block_on(async {
        let base = Baseline::take().await;
        // Worker 0 says it is ready but never takes a connection.
        let cluster = Cluster::start(
            listener(),
            ClusterConfig::new(Mode::RoundRobin).workers(2),
            serve(|slot| (slot.index == 0).then_some("--no-accept")),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        let client = tokio::spawn(async move { ask(addr, "lost").await });
        wait_for_async("the first connection in flight to worker 0", || {
            let stats = cluster.stats();
            async move {
                let stats = stats.await.map_err(|e| e.to_string())?;
                if stats.workers[0].in_flight {
                    Ok(())
                } else {
                    Err(format!("{stats:?}"))
                }
            }
        })
        .await;
        let victim = cluster.stats().await.unwrap().workers[0].pid;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let reply = client.await.unwrap().unwrap();
        assert_eq!(reply.index, 1, "served by the survivor");
        let report = cluster.shutdown().await.unwrap();
        assert!(report.redispatched >= 1);
        assert_eq!(report.closed_undelivered, 0);
        assert_eq!(report.workers[1].connections, 1);
        base.assert_clean().await;
    });
}

#[test]
fn with_no_worker_left_a_connection_in_flight_is_closed_not_leaked() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let cluster = Cluster::start(
            listener(),
            ClusterConfig::new(Mode::RoundRobin).workers(1),
            serve(|_| Some("--no-accept")),
        )
        .await
        .unwrap();
        let addr = cluster.local_addr();
        let client = tokio::spawn(async move { ask(addr, "anyone").await });
        wait_for_async("the connection in flight", || {
            let stats = cluster.stats();
            async move {
                let stats = stats.await.map_err(|e| e.to_string())?;
                if stats.workers[0].in_flight {
                    Ok(())
                } else {
                    Err(format!("{stats:?}"))
                }
            }
        })
        .await;
        let victim = cluster.stats().await.unwrap().workers[0].pid;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let r = client.await.unwrap();
        assert!(r.is_err(), "the client sees its connection closed: {r:?}");
        let report = cluster.shutdown().await.unwrap();
        assert_eq!(report.closed_undelivered, 1);
        base.assert_clean().await;
    });
}

#[test]
fn a_cluster_whose_workers_cannot_start_fails_to_start_and_leaves_nothing() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let cases: [(Flags, &str); 2] = [
            (|_| Some("--exit-at-start"), "exited"),
            (
                |s| (s.index == 1).then_some("--never-ready"),
                "not ready within",
            ),
        ];
        for (flags, expect) in cases {
            let config = ClusterConfig::new(Mode::Shared)
                .workers(2)
                .ready_timeout(Duration::from_millis(300));
            match Cluster::start(listener(), config, serve(flags)).await {
                Err(Error::NotReady {
                    generation: 1,
                    reason,
                }) => assert!(reason.contains(expect), "{reason}"),
                other => panic!("expected NotReady, got {other:?}"),
            }
        }
        base.assert_clean().await;
    });
}

#[test]
fn jain_index_table() {
    let cases: [(&[f64], f64); 5] = [
        (&[], 1.0),
        (&[0.0, 0.0], 1.0),
        (&[5.0, 5.0, 5.0], 1.0),
        (&[10.0, 0.0], 0.5),
        (&[1.0, 0.0, 0.0, 0.0], 0.25),
    ];
    for (shares, expected) in cases {
        assert!(
            (jain_index(shares.iter().copied()) - expected).abs() < 1e-12,
            "{shares:?}"
        );
    }
}
