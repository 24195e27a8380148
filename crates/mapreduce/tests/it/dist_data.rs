//! The distributed engine's data paths: inputs uploaded to the object
//! store, and bad records met on the cluster (a real `nats-server` and
//! node processes, as in `dist.rs`).

use std::path::Path;
use std::process::Command;

use forkyard_mapreduce::dist::{DistError, DistOptions, jobs_on};
use forkyard_mapreduce::{Error, JobEvent, Phase};

use crate::dist::{Rig, dist_job, input};
use crate::support::*;

/// Asserts that `a` and `b` hold the same 3 part files, byte for byte.
fn assert_same_parts(a: &Path, b: &Path) {
    for r in 0..3 {
        let name = format!("part-{r:05}");
        let x = std::fs::read(a.join(&name)).unwrap();
        let y = std::fs::read(b.join(&name)).unwrap();
        assert!(x == y, "{name} differs between {a:?} and {b:?}");
    }
}

/// The uploaded inputs (`in.*`) in every job's object store on the server.
async fn uploaded_inputs(js: &async_nats::jetstream::Context) -> Vec<String> {
    use futures::StreamExt;
    let mut found = Vec::new();
    let mut streams = js.stream_names();
    let mut stores = Vec::new();
    while let Some(name) = streams.next().await {
        if let Some(store) = name.unwrap().strip_prefix("OBJ_") {
            stores.push(store.to_string());
        }
    }
    for store in stores {
        let os = js.get_object_store(&store).await.unwrap();
        let mut list = os.list().await.unwrap();
        while let Some(info) = list.next().await {
            let info = info.unwrap();
            if info.name.starts_with("in.") {
                found.push(info.name);
            }
        }
    }
    found
}

/// Renames `from` to `to` when the map phase starts: after the coordinator
/// has planned (and, with uploads, uploaded), before any task is
/// published, so no node can have read the input by its path.
fn move_input_when_map_starts(
    from: &Path,
    to: &Path,
) -> impl Fn(&JobEvent) + Send + Sync + 'static {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    move |e| {
        if matches!(
            e,
            JobEvent::PhaseStarted {
                phase: Phase::Map,
                ..
            }
        ) {
            std::fs::rename(&from, &to).expect("move the input away");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_inputs_are_read_from_the_object_store_not_from_the_path() {
    let base = Baseline::take().await;
    let Some(rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 11);
    let moved = dir.path().join("moved.txt");
    let exe = node_bin();
    dist_job(&inp, &dir.path().join("local"))
        .workers(2)
        .worker_command(move || Command::new(&exe))
        .run()
        .await
        .unwrap();
    let cluster = rig.cluster_config().connect().await.unwrap();

    // Control: read by path, a job whose input moved away fails.
    let err = dist_job(&inp, &dir.path().join("by-path"))
        .max_failures(2)
        .on_event(move_input_when_map_starts(&inp, &moved))
        .run_on(&cluster)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DistError::Job(Error::TaskFailed { .. })),
        "{err:?}"
    );
    std::fs::rename(&moved, &inp).unwrap();

    // Uploaded: the nodes never need the path. When the reduce phase
    // starts, the job's object store holds no uploaded input any more.
    let js = async_nats::jetstream::new(cluster.client().clone());
    let inputs_at_reduce = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<String>>));
    let mover = move_input_when_map_starts(&inp, &moved);
    let seen = inputs_at_reduce.clone();
    let done = dist_job(&inp, &dir.path().join("dist"))
        .on_event(move |e| {
            mover(e);
            if matches!(
                e,
                JobEvent::PhaseStarted {
                    phase: Phase::Reduce,
                    ..
                }
            ) {
                let js = js.clone();
                let names = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(uploaded_inputs(&js))
                });
                *seen.lock().unwrap() = Some(names);
            }
        })
        .run_on_with(&cluster, DistOptions::new().upload_inputs(true))
        .await
        .unwrap();
    assert!(!inp.exists() && moved.exists(), "the input was moved away");
    assert_eq!(
        inputs_at_reduce.lock().unwrap().take(),
        Some(Vec::new()),
        "uploaded inputs left when the reduce phase started"
    );
    assert_same_parts(&dir.path().join("local"), &dir.path().join("dist"));
    assert!(done.report.map.tasks > 3, "several splits: {}", done.report);
    // Every input byte went up once (and the splits' shares a byte more).
    assert!(
        done.broker_bytes >= data.len() as u64,
        "{} bytes through the broker for {} input bytes",
        done.broker_bytes,
        data.len()
    );
    // The objects went with the job.
    assert_eq!(jobs_on(&cluster).await.unwrap(), Vec::<String>::new());
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_on_the_cluster_is_skipped_and_past_the_limit_the_job_fails_naming_it() {
    use forkyard_mapreduce::jobs::WordCount;
    use forkyard_mapreduce::{LineFiles, MapReduce};

    let base = Baseline::take().await;
    let Some(rig) = Rig::start(2) else { return };
    let dir = tempfile::tempdir().unwrap();
    // Two lines that make the map function panic, in different splits.
    let first = b"POISON a b\n".to_vec();
    let middle = text(31, 1500, 200);
    let second = b"c POISON\n".to_vec();
    let data = [first.clone(), middle.clone(), second, text(32, 1500, 200)].concat();
    let inp = write(dir.path(), "in.txt", &data);
    let positions = vec![0u64, (first.len() + middle.len()) as u64];
    let job = |out: &Path, limit: usize| {
        MapReduce::new(WordCount::poisoned_by("POISON"))
            .input(LineFiles::new([&inp]))
            .out_dir(out)
            .reducers(3)
            .split_size(8 << 10)
            .max_skipped(limit)
    };
    let cluster = rig.cluster_config().connect().await.unwrap();

    let out = dir.path().join("out");
    let done = job(&out, 10).run_on(&cluster).await.unwrap();
    let want = expected_parts(&counts_as_rows(&reference_count(&data, Some("POISON"))), 3);
    assert_output(&out, &want);
    let mut skipped: Vec<u64> = done.report.skipped.iter().map(|s| s.position).collect();
    skipped.sort();
    assert_eq!(skipped, positions, "{:?}", done.report.skipped);
    assert!(
        done.report
            .skipped
            .iter()
            .all(|s| s.message.contains("poison record") && s.source.ends_with("in.txt")),
        "{:?}",
        done.report.skipped
    );

    // Past the limit: the job fails, naming the records it found.
    let err = job(&dir.path().join("limited"), 1)
        .run_on(&cluster)
        .await
        .unwrap_err();
    match &err {
        DistError::Job(Error::TooManyBadRecords {
            count: 2,
            limit: 1,
            records,
        }) => {
            for p in &positions {
                assert!(records.contains(&format!("in.txt@{p}")), "{records}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(jobs_on(&cluster).await.unwrap(), Vec::<String>::new());
    cluster.close().await;
    rig.stop();
    base.assert_clean().await;
}
