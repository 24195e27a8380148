//! The demo's distributed part (run at the end of `examples/demo.rs` when
//! `nats-server` is on PATH): one server, a coordinator (this process) and
//! two node processes on loopback; the same word count as the local demo,
//! then one with a node SIGKILLed mid-map, then a few remote calls.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use forkyard_mapreduce::dist::{Caller, DistOptions};
use forkyard_mapreduce::jobs::{CountWords, WordCount};
use forkyard_mapreduce::{Fault, LineFiles, MapReduce, Phase};
use forkyard_testkit::{live_descendants, stat};
use rustix::process::Signal;

use crate::fault_dist::Rig;

/// Runs the distributed part over `corpus` (in splits of `split` bytes),
/// checking each output against the single-threaded count.
pub(crate) fn run(corpus: &std::path::Path, split: u64, say: impl Fn(&str)) -> Result<()> {
    let Some(mut rig) = Rig::start(2, 2)? else {
        say("\n(The distributed part is skipped: nats-server is not on PATH.)");
        return Ok(());
    };
    say(&format!(
        "\nAcross machines: a nats-server with JetStream on {} (store in a temporary directory), and two\n\
         node processes (`forkyard-mapreduce-node --serve --nats URL --workers 2`, pids {} and {}) pulling tasks from it.\n\
         This process is the coordinator: it publishes the tasks and writes the output.",
        rig.server.url(),
        rig.nodes[0].id(),
        rig.nodes[1].id()
    ));
    let reference = &crate::common::reference(&[corpus], None)?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cluster = rig.config().connect().await?;
        let job = |out: &std::path::Path| {
            MapReduce::new(WordCount::new())
                .input(LineFiles::new([corpus]))
                .out_dir(out)
                .reducers(4)
                .split_size(split)
                .progress(true)
        };

        say("\nD1. The word count on the two nodes.");
        let out = dir.path().join("d1");
        let started = Instant::now();
        let done = job(&out).run_on(&cluster).await?;
        println!("{}", done.report);
        crate::common::check_output(&out, reference, 4).map_err(anyhow::Error::msg)?;
        say(&format!(
            "Same output as the single-threaded count, in {:.2?}; nodes that committed: {}; {:.1} MB through the broker.",
            started.elapsed(),
            done.nodes.join(", "),
            done.broker_bytes as f64 / 1e6
        ));

        say("\nD2. Map task 1's worker stops itself mid-task; its node is then SIGKILLed.\n\
             The broker hands the task to the other node once the ack wait (1 s) passes.");
        let out = dir.path().join("d2");
        let run = job(&out)
            .backups(false, Duration::from_secs(600))
            .inject(Phase::Map, 1, Fault::Stop { at: 10 })
;
        let c = cluster.clone();
        let run = tokio::spawn(async move {
            run.run_on_with(&c, DistOptions::new().ack_wait(Duration::from_secs(1)))
                .await
        });
        let victim = loop {
            if run.is_finished() {
                bail!("the job ended before the fault landed");
            }
            let found = rig.nodes.iter().position(|n| {
                live_descendants(n.id())
                    .iter()
                    .any(|&d| stat(d).is_some_and(|s| s.state == 'T'))
            });
            if let Some(i) = found {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        say(&format!("   node {} holds the stalled task: SIGKILL.", rig.nodes[victim].id()));
        rig.signal(victim, Signal::KILL);
        let done = run.await.context("the job's task")??;
        println!("{}", done.report);
        crate::common::check_output(&out, reference, 4).map_err(anyhow::Error::msg)?;
        say(&format!(
            "Same output again: {} redelivered task(s), the stalled one among them; no duplicate commit (commits are KV creates: the first wins).",
            done.redeliveries
        ));
        rig.kill_node(victim);

        say("\nD3. Pool-style calls across machines: `count-words` served by the remaining node's workers.");
        let caller = Caller::<CountWords>::new(&cluster).await?;
        for line in ["the quick brown fox", "jumps over the lazy dog twice"] {
            let started = Instant::now();
            let n = caller.call(&line.to_string(), Duration::from_secs(5)).await?;
            say(&format!("   call({line:?}) = {n} words, {:.2?} round trip", started.elapsed()));
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
