//! The distributed engine against a real `nats-server` on loopback and real
//! node processes (`forkyard-mapreduce-node --serve`), each killed by pid.
//!
//! Every test starts its own server (testkit's `NatsServer`: free port,
//! temporary store) and skips, saying so, when `nats-server` is not on PATH
//! (it fails instead under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use forkyard_mapreduce::dist::{
    CallError, Caller, ConnectFailure, DistError, DistOptions, NatsConfig, RejectReason,
};
use forkyard_mapreduce::jobs::{CountWords, WordCount};
use forkyard_mapreduce::{Fault, LineFiles, MapReduce, Phase};
use forkyard_testkit::nats::NatsServer;
use forkyard_testkit::{live_descendants, stat, wait_for, wait_for_async};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

/// A server and node processes.
pub(crate) struct Rig {
    pub(crate) server: NatsServer,
    pub(crate) nodes: Vec<Child>,
    /// The nodes' TMPDIR: a SIGKILLed node cannot remove its scratch
    /// directory, so the rig does.
    tmp: tempfile::TempDir,
}

impl Rig {
    pub(crate) fn start(nodes: usize) -> Option<Rig> {
        if !NatsServer::available() {
            return None;
        }
        let server = NatsServer::start().expect("nats-server");
        let mut rig = Rig {
            server,
            nodes: Vec::new(),
            tmp: tempfile::tempdir().expect("tmp"),
        };
        for _ in 0..nodes {
            rig.add_node();
        }
        Some(rig)
    }

    /// Starts a node ([`node_command`]: with `FORKYARD_NODE_LOG=1` in the
    /// environment, it prints a line per task attempt to the test's stderr).
    pub(crate) fn add_node(&mut self) {
        let child = node_command(&self.server.url())
            .env("TMPDIR", self.tmp.path())
            .spawn()
            .expect("node");
        self.nodes.push(child);
    }

    pub(crate) fn cluster_config(&self) -> NatsConfig {
        NatsConfig::new(self.server.url())
    }

    /// Waits until a worker of some node has stopped itself (an injected
    /// `Fault::Stop`): returns that node's index.
    pub(crate) async fn node_with_stopped_worker(&self) -> usize {
        let pids: Vec<u32> = self.nodes.iter().map(Child::id).collect();
        wait_for("a node's worker to stop itself", || {
            pids.iter()
                .position(|&p| {
                    live_descendants(p)
                        .iter()
                        .any(|&d| stat(d).is_some_and(|s| s.state == 'T'))
                })
                .ok_or_else(|| "no stopped worker yet".to_string())
        })
        .await
    }

    pub(crate) fn signal(&self, node: usize, sig: Signal) {
        let pid = Pid::from_raw(self.nodes[node].id() as i32).expect("pid");
        kill_process(pid, sig).expect("kill");
    }

    /// SIGKILLs and reaps every node and the server (what drop does, also
    /// when a test fails half-way).
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        self.server.kill();
    }
}

pub(crate) fn input(dir: &Path, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = text(seed, 6000, 400);
    (write(dir, "in.txt", &data), data)
}

pub(crate) fn dist_job(input: &Path, out: &Path) -> MapReduce<WordCount> {
    MapReduce::new(WordCount::new())
        .input(LineFiles::new([input]))
        .out_dir(out)
        .reducers(3)
        .split_size(8 << 10)
}

pub(crate) fn expected(data: &[u8]) -> Vec<Vec<u8>> {
    expected_parts(&counts_as_rows(&reference_count(data, None)), 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_three_nodes_writes_what_the_local_engine_writes() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, _) = input(dir.path(), 1);
    let cluster = rig.cluster_config().connect().await.unwrap();
    let dist = dist_job(&inp, &dir.path().join("dist"))
        .run_on(&cluster)
        .await
        .unwrap();
    let exe = node_bin();
    let local = dist_job(&inp, &dir.path().join("local"))
        .workers(2)
        .worker_command(move || Command::new(&exe))
        .run()
        .await
        .unwrap();
    for r in 0..3 {
        let name = format!("part-{r:05}");
        let a = std::fs::read(dir.path().join("dist").join(&name)).unwrap();
        let b = std::fs::read(dir.path().join("local").join(&name)).unwrap();
        assert!(
            a == b,
            "{name} differs between the cluster and the local engine"
        );
    }
    assert_eq!(dist.report.map.tasks, local.map.tasks);
    assert_eq!(dist.report.records(), local.records());
    assert_eq!(dist.report.distinct_keys(), local.distinct_keys());
    assert_eq!(dist.report.reduce.records_out, local.reduce.records_out);
    assert!(dist.broker_bytes > 0);
    assert_eq!(dist.redeliveries, 0, "{:?}", dist.report.map.failures);
    assert!(dist.rejected.is_empty());
    // The job cleaned up after itself on the server.
    let js = async_nats::jetstream::new(cluster.client().clone());
    let mut streams = js.stream_names();
    let mut left = Vec::new();
    while let Some(Ok(n)) = futures::StreamExt::next(&mut streams).await {
        if n.contains(&dist.job_id) {
            left.push(n);
        }
    }
    assert!(left.is_empty(), "streams left on the server: {left:?}");
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_mid_map_and_mid_reduce_have_their_tasks_redelivered() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 2);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    // A worker stops itself mid-task; its node is then SIGKILLed: only the
    // broker's redelivery (after the ack wait) can finish the task.
    let job = dist_job(&inp, &out)
        .backups(false, Duration::from_secs(600))
        .inject(Phase::Map, 1, Fault::Stop { at: 20 })
        .inject(Phase::Reduce, 1, Fault::Stop { at: 20 });
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(&c, DistOptions::new().ack_wait(Duration::from_secs(1)))
            .await
    });
    let first = rig.node_with_stopped_worker().await;
    rig.signal(first, Signal::KILL);
    let second = wait_for("the reduce worker to stop itself", || {
        let pids: Vec<u32> = rig.nodes.iter().map(Child::id).collect();
        pids.iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .find(|(_, p)| {
                live_descendants(**p)
                    .iter()
                    .any(|&d| stat(d).is_some_and(|s| s.state == 'T'))
            })
            .map(|(i, _)| i)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    rig.signal(second, Signal::KILL);
    let report = job.await.unwrap().unwrap();
    assert_output(&out, &expected(&data));
    // Each killed node held the stalled task and maybe one more (2 workers).
    assert!(report.redeliveries >= 2, "{}", report.report);
    assert!(report.report.map.retries >= 1, "{}", report.report);
    assert!(report.report.reduce.retries >= 1, "{}", report.report);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_out_of_deliveries_fails_the_job_naming_it() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, _) = input(dir.path(), 6);
    let cluster = rig.cluster_config().connect().await.unwrap();
    // One delivery allowed: once the node holding the stalled task is
    // killed, the broker gives up on it, and so does the job.
    let job = dist_job(&inp, &dir.path().join("out"))
        .backups(false, Duration::from_secs(600))
        .inject(Phase::Map, 0, Fault::Stop { at: 5 });
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(
            &c,
            DistOptions::new()
                .ack_wait(Duration::from_secs(1))
                .max_deliver(1),
        )
        .await
    });
    let holder = rig.node_with_stopped_worker().await;
    rig.signal(holder, Signal::KILL);
    let err = job.await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            DistError::Undeliverable {
                phase: Phase::Map,
                index: 0,
                deliveries: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "map task 0 was delivered 1 time(s) and never finished (the nodes running it died or stalled)"
    );
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_mid_job_loses_no_committed_work() {
    let base = Baseline::take().await;
    let Some(mut rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 3);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    // Map task 0 stalls for good: the job cannot end before its backup
    // runs, so the restart lands mid-job.
    let job = dist_job(&inp, &out)
        .backups(true, Duration::from_millis(300))
        .inject(Phase::Map, 0, Fault::Stop { at: 5 });
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(&c, DistOptions::new().ack_wait(Duration::from_secs(2)))
            .await
    });
    rig.node_with_stopped_worker().await;
    rig.server.restart().expect("restart nats-server");
    let report = tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job ends after the restart")
        .unwrap()
        .unwrap();
    assert_output(&out, &expected(&data));
    assert!(report.report.map.backups >= 1, "{}", report.report);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_gone_for_good_mid_job_is_a_typed_error_not_a_hang() {
    let base = Baseline::take().await;
    // No nodes: the job waits on its queue until the broker goes.
    let Some(mut rig) = Rig::start(0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, _) = input(dir.path(), 7);
    let cluster = rig.cluster_config().connect().await.unwrap();
    let job = dist_job(&inp, &dir.path().join("out"));
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(
            &c,
            DistOptions::new().job_id("gone-test").broker_failures(2),
        )
        .await
    });
    // Mid-job: its tasks are on the queue.
    let js = async_nats::jetstream::new(cluster.client().clone());
    wait_for_async("the job's tasks on its stream", || async {
        match js.get_stream("FY_gone-test").await {
            Ok(mut s) => match s.info().await {
                Ok(i) if i.state.messages > 0 => Ok(()),
                Ok(_) => Err("no task yet".to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    rig.server.kill();
    let err = tokio::time::timeout(Duration::from_secs(100), job)
        .await
        .expect("the job ends once the broker is gone")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, DistError::Broker { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the client's error is kept: {err:?}"
    );
    drop((err, js));
    // The test's own client reconnects until closed, and closing needs a
    // server (a client that is reconnecting cannot drain): bring it back
    // only to let that connection go. close() returns once the socket is
    // closed, so stopping the server right after cannot strand it.
    rig.server.restart().expect("restart nats-server");
    wait_for("the test's client back on the server", || {
        match cluster.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            s => Err(s.to_string()),
        }
    })
    .await;
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_node_takes_ends_at_its_deadline() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, _) = input(dir.path(), 8);
    let cluster = rig.cluster_config().connect().await.unwrap();
    let err = dist_job(&inp, &dir.path().join("out"))
        .run_on_with(
            &cluster,
            DistOptions::new().deadline(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistError::Deadline { deadline } if deadline == Duration::from_secs(1)),
        "{err:?}"
    );
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_does_not_stall_the_job_its_task_is_backed_up() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 4);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    // An ack wait far longer than the test: redelivery cannot save the job,
    // only a backup attempt can.
    let job = dist_job(&inp, &out)
        .backups(true, Duration::from_millis(300))
        .inject(Phase::Map, 2, Fault::Stop { at: 5 });
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(&c, DistOptions::new().ack_wait(Duration::from_secs(300)))
            .await
    });
    let stalled = rig.node_with_stopped_worker().await;
    rig.signal(stalled, Signal::STOP);
    let report = job.await.unwrap().unwrap();
    assert_output(&out, &expected(&data));
    // Map task 2's backup won (a slow task on a busy machine may get one too).
    assert!(report.report.map.backup_wins >= 1, "{}", report.report);
    assert_eq!(report.redeliveries, 0, "{}", report.report);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

/// A node that froze with a pull request out (SIGSTOP, a paused VM) is
/// delivered a task it never starts: the broker counts it delivered, so it
/// is not redelivered before the ack wait ends, and no start record tells
/// the coordinator that anyone runs it. The test plays that node: it pulls
/// two of the job's task messages itself and holds them, never acked. The
/// job must end by backing them up, long before its 300 s ack wait (its
/// deadline is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_a_frozen_node_took_are_backed_up() {
    use async_nats::jetstream::consumer::PullConsumer;
    use futures::StreamExt;

    let base = Baseline::take().await;
    let Some(mut rig) = Rig::start(0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 5);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    let js = async_nats::jetstream::new(cluster.client().clone());
    let job = dist_job(&inp, &out).backups(true, Duration::from_millis(300));
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(
            &c,
            DistOptions::new()
                .job_id("frozen")
                .ack_wait(Duration::from_secs(300))
                .deadline(Duration::from_secs(60)),
        )
        .await
    });
    let consumer: PullConsumer = wait_for_async("the job's consumer", || async {
        js.get_consumer_from_stream("nodes", "FY_frozen")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let mut held = Vec::new();
    while held.len() < 2 {
        let message = wait_for_async("a task message", || async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            match batch.next().await {
                Some(Ok(m)) => Ok(m),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("none yet".to_string()),
            }
        })
        .await;
        held.push(message);
    }
    rig.add_node();
    rig.add_node();
    let done = job.await.unwrap().unwrap();
    assert_output(&out, &expected(&data));
    let map = &done.report.map;
    assert!(
        map.backups >= 2 && map.backup_wins >= 2,
        "both held tasks backed up: {}",
        done.report
    );
    assert_eq!(done.redeliveries, 0, "{}", done.report);
    drop((held, consumer, js));
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error_and_so_is_a_wrong_password() {
    let base = Baseline::take().await;
    if !NatsServer::available() {
        return;
    }
    // A port nothing listens on: bound (so no other test's server can
    // take it) but not listening (so a connection is refused), for the
    // whole test.
    let unlistened = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(
        &unlistened,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
    )
    .unwrap();
    let port = std::net::SocketAddrV4::try_from(rustix::net::getsockname(&unlistened).unwrap())
        .unwrap()
        .port();
    let err = NatsConfig::new(format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DistError::Connect {
                kind: ConnectFailure::Unreachable | ConnectFailure::TimedOut,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot connect to NATS at nats://127.0.0.1:")
    );

    let server = NatsServer::start_with_user("fy", "right").unwrap();
    let err = NatsConfig::new(server.url())
        .user("fy", "wrong")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DistError::Connect {
                kind: ConnectFailure::Credentials,
                ..
            }
        ),
        "{err:?}"
    );
    NatsConfig::new(server.url())
        .user("fy", "right")
        .connect()
        .await
        .expect("the right password is accepted")
        .close()
        .await;
    // The node says so and exits non-zero.
    let out = Command::new(node_bin())
        .args(["--serve", "--nats", &server.url()])
        .env("NATS_USER", "fy")
        .env("NATS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the server refused the credentials"),
        "{stderr}"
    );
    drop(server);
    drop(unlistened);
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_task_message_is_rejected_and_reported() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 5);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    // The job cannot end before the backup of its stalled task, so the
    // junk is taken while it runs.
    let job = dist_job(&inp, &out)
        .backups(true, Duration::from_millis(500))
        .inject(Phase::Map, 0, Fault::Stop { at: 0 });
    let c = cluster.clone();
    let job = tokio::spawn(async move {
        job.run_on_with(&c, DistOptions::new().job_id("junk-test"))
            .await
    });
    let js = async_nats::jetstream::new(cluster.client().clone());
    wait_for_async_publish(&js, "fy.junk-test.task.m.99.a0", b"\xffnot a task").await;
    let report = job.await.unwrap().unwrap();
    assert_output(&out, &expected(&data));
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    assert!(
        matches!(
            report.rejected[0].reason,
            RejectReason::NotATask { bytes: 11, .. }
        ) && report.rejected[0].subject == "fy.junk-test.task.m.99.a0",
        "{:?}",
        report.rejected
    );
    drop(js);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

/// Publishes to the job's stream as soon as it exists (the coordinator
/// creates it).
async fn wait_for_async_publish(js: &async_nats::jetstream::Context, subject: &str, body: &[u8]) {
    forkyard_testkit::wait_for_async("the job's stream to accept a message", || async {
        match js.publish(subject.to_string(), body.to_vec().into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_calls_are_answered_by_a_node_and_honour_their_deadline() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(1) else { return };
    let cluster = rig.cluster_config().connect().await.unwrap();
    let caller = Caller::<CountWords>::new(&cluster).await.unwrap();
    for (line, n) in [("a b c", 3), ("", 0), ("  one  ", 1)] {
        let got = caller
            .call(&line.to_string(), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(got, n, "{line:?}");
    }
    // With the only node stopped, nobody answers: the deadline ends the call.
    rig.signal(0, Signal::STOP);
    let node = rig.nodes[0].id();
    wait_for("the node to be stopped", || {
        let stopped = std::fs::read_dir(format!("/proc/{node}/task"))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('T'))
                })
            });
        stopped.then_some(()).ok_or_else(|| "not yet".to_string())
    })
    .await;
    let err = caller
        .call(&"x".to_string(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Deadline { .. }), "{err:?}");
    drop(caller);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_exits_0_on_sigterm_and_leaves_no_process() {
    let base = Baseline::take().await;
    let Some(mut rig) = Rig::start(1) else { return };
    let node = rig.nodes[0].id();
    wait_for("the node's workers", || {
        (live_descendants(node).len() >= 2)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let workers = live_descendants(node);
    rig.signal(0, Signal::TERM);
    let status = rig.nodes[0].wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    forkyard_testkit::wait_all_dead(&workers, forkyard_testkit::DEADLINE).unwrap();
    rig.nodes.clear();
    rig.stop();
    base.assert_clean().await;
}
