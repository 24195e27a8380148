//! A coordinator killed mid-job (SIGKILL, by pid): running the same job
//! again resumes it from the commits in the job's KV bucket.

use std::path::Path;
use std::process::{Command, Stdio};

use forkyard_mapreduce::dist::{DistError, DistOptions, jobs_on, remove_job};
use forkyard_testkit::wait_for_async;

use crate::dist::{Rig, dist_job, expected, input};
use crate::support::*;

const ID: &str = "resume-test";

/// The map tasks committed in job `ID`'s bucket, of its `maps`: each
/// task's commit key read (one request each), not the bucket listed, whose
/// listing can wait for ever on nats-server 2.9 (nats-server#3481).
async fn map_commits(kv: &async_nats::jetstream::kv::Store, maps: usize) -> Result<usize, String> {
    let mut n = 0;
    for i in 0..maps {
        if kv
            .get(format!("commit.m.{i:05}"))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            n += 1;
        }
    }
    Ok(n)
}

/// The map tasks of `dist_job` over `input` (8 KiB splits).
fn maps_of(input: &Path) -> usize {
    std::fs::metadata(input).unwrap().len().div_ceil(8 << 10) as usize
}

/// A coordinator process (the dist fixture, killed by the test) running
/// job `id` over `input` into `out` on `rig`'s nodes, its map task 0
/// stalled for good: its map phase cannot end while the test watches.
fn coordinator(rig: &Rig, input: &Path, out: &Path, id: &str) -> KillOnDrop {
    KillOnDrop::spawn(
        Command::new(env!("CARGO_BIN_EXE_forkyard-mapreduce-dist-fixture"))
            .arg(rig.server.url())
            .arg(input)
            .arg(out)
            .args([id, "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_job_is_resumed_by_running_the_job_again() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 21);
    let out = dir.path().join("out");
    let cluster = rig.cluster_config().connect().await.unwrap();
    let js = async_nats::jetstream::new(cluster.client().clone());

    // A coordinator process whose map task 0 stalls for good: its map
    // phase cannot end while the test watches the commits pile up.
    let mut coordinator = coordinator(&rig, &inp, &out, ID);
    let kv = wait_for_async("the job's KV bucket", || async {
        js.get_key_value(format!("FY_{ID}"))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let maps = maps_of(&inp);
    wait_for_async("3 map commits", || async {
        match map_commits(&kv, maps).await? {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} so far")),
        }
    })
    .await;
    coordinator.kill();
    let committed = map_commits(&kv, maps).await.unwrap();
    // What it left on the server.
    assert_eq!(jobs_on(&cluster).await.unwrap(), vec![ID.to_string()]);

    // The same job, the same output directory: the id comes from the job
    // directory, and what committed is not run again.
    // The killed coordinator's lease (three of its 1 s ack waits) is
    // refused until it expires.
    let refused = std::sync::atomic::AtomicU32::new(0);
    let (inp_ref, out_ref, cluster_ref, refused_ref) = (&inp, &out, &cluster, &refused);
    let done = wait_for_async("the killed coordinator's lease to expire", || async move {
        match dist_job(inp_ref, out_ref)
            .backups(false, std::time::Duration::from_secs(600))
            .run_on_with(
                cluster_ref,
                DistOptions::new().deadline(std::time::Duration::from_secs(50)),
            )
            .await
        {
            Err(DistError::CoordinatorLive { id, .. }) if id == ID => {
                refused_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err("refused".to_string())
            }
            other => Ok(other.unwrap()),
        }
    })
    .await;
    assert!(
        refused.into_inner() > 0,
        "taken over while the killed coordinator's lease was fresh"
    );
    assert_eq!(done.job_id, ID);
    assert_output(&out, &expected(&data));
    let map = &done.report.map;
    assert!(
        map.resumed >= committed && map.resumed < map.tasks,
        "{committed} committed before the kill: {}",
        done.report
    );
    // Nothing committed was run again: at most one attempt for each task
    // left (fewer when an attempt of the killed run, still running on a
    // node, committed first: the node then skips this run's copy).
    assert!(
        map.attempts as usize <= map.tasks - map.resumed,
        "{}",
        done.report
    );
    assert_eq!(
        done.report.records(),
        data.iter().filter(|&&b| b == b'\n').count() as u64
    );
    // The resumed job cleaned up after itself.
    assert_eq!(jobs_on(&cluster).await.unwrap(), Vec::<String>::new());

    // Run again: nothing to do.
    let again = dist_job(&inp, &out).run_on(&cluster).await.unwrap();
    assert_eq!(again.report.map.resumed, again.report.map.tasks);
    assert_eq!(again.report.reduce.resumed, 3);
    assert_eq!(again.report.map.attempts + again.report.reduce.attempts, 0);
    assert_output(&out, &expected(&data));
    assert!(
        !remove_job(&cluster, ID).await.unwrap(),
        "nothing left to remove"
    );

    // A coordinator killed after its reduce markers and before deleting the
    // job's infra left the job on the server: the run that finds the job
    // complete removes it.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("FY_{ID}"),
        subjects: vec![format!("fy.{ID}.task.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(jobs_on(&cluster).await.unwrap(), vec![ID.to_string()]);
    let again = dist_job(&inp, &out).run_on(&cluster).await.unwrap();
    assert_eq!(again.report.map.attempts + again.report.reduce.attempts, 0);
    assert_eq!(
        again.report.records(),
        data.iter().filter(|&&b| b == b'\n').count() as u64
    );
    assert_eq!(jobs_on(&cluster).await.unwrap(), Vec::<String>::new());

    drop((kv, js));
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinators_leftovers_are_listed_and_removed() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, _) = input(dir.path(), 22);
    let cluster = rig.cluster_config().connect().await.unwrap();
    let js = async_nats::jetstream::new(cluster.client().clone());
    let mut coordinator = coordinator(&rig, &inp, &dir.path().join("out"), "leftover");
    // Killed once its object store (the last thing it creates) and its
    // identity are there.
    wait_for_async("the job's object store", || async {
        js.get_object_store("FY_leftover")
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    wait_for_async("the job's identity", || async {
        let kv = js
            .get_key_value("FY_leftover")
            .await
            .map_err(|e| e.to_string())?;
        match kv.get("job").await.map_err(|e| e.to_string())? {
            Some(_) => Ok(()),
            None => Err("not yet".to_string()),
        }
    })
    .await;
    coordinator.kill();
    // The same id for another job (other input) is refused, and what the
    // killed run left is untouched.
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let (other, _) = input(&dir.path().join("other"), 23);
    let err = dist_job(&other, &dir.path().join("out2"))
        .run_on_with(&cluster, DistOptions::new().job_id("leftover"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DistError::OtherJob { id } if id == "leftover"),
        "{err:?}"
    );
    assert_eq!(
        jobs_on(&cluster).await.unwrap(),
        vec!["leftover".to_string()]
    );
    // The node program lists and removes it.
    let node = |args: &[&str]| {
        let out = Command::new(node_bin())
            .args(["--nats", &rig.server.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(node(&["--list-jobs"]), "leftover\n");
    assert_eq!(
        node(&["--remove-job", "leftover"]),
        "removed job leftover\n"
    );
    assert_eq!(jobs_on(&cluster).await.unwrap(), Vec::<String>::new());
    assert_eq!(node(&["--list-jobs"]), "");
    assert!(!remove_job(&cluster, "leftover").await.unwrap());
    let err = remove_job(&cluster, "no.such>").await.unwrap_err();
    assert!(
        err.to_string().contains("use letters, digits and '-'"),
        "{err}"
    );
    drop(js);
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}
