//! Bad input and bad output directories: a clear error or a correct result,
//! never a panic or a hang.

use crate::jobs::Count;
use crate::support::*;
use forkyard_mapreduce::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let err = job(
        Count::default(),
        std::slice::from_ref(&missing),
        &dir.path().join("out"),
    )
    .run()
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Input { ref path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("missing.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_as_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = job(
        Count::default(),
        &[dir.path().to_path_buf()],
        &dir.path().join("out"),
    )
    .run()
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotAFile { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_input_is_an_error_unless_we_are_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "secret.txt", b"x y\n");
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = dir.path().join("out");
    match job(Count::default(), std::slice::from_ref(&input), &out)
        .run()
        .await
    {
        Err(Error::Input { path, .. }) => assert_eq!(path, input),
        // root reads it anyway: then the result must be right.
        Ok(_) => assert!(rustix::process::geteuid().is_root()),
        Err(e) => panic!("wrong error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_is_counted_like_any_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..50_000).map(|_| rng.u8(..)).collect();
    let inputs = [write(dir.path(), "garbage.bin", &data)];
    let out = dir.path().join("out");
    job(Count::default(), &inputs, &out).run().await.unwrap();
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_input_gives_empty_parts() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [write(dir.path(), "empty.txt", b"")];
    let out = dir.path().join("out");
    let report = job(Count::default(), &inputs, &out).run().await.unwrap();
    assert_eq!(
        (report.records(), report.distinct_keys(), report.map.tasks),
        (0, 0, 0)
    );
    assert_output(&out, &[Vec::new(), Vec::new(), Vec::new()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_single_line_is_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::with_capacity(6 << 20);
    let mut rng = fastrand::Rng::with_seed(8);
    while data.len() < 6 << 20 {
        data.extend_from_slice(format!("w{} ", rng.u32(0..5000)).as_bytes());
    }
    let inputs = [write(dir.path(), "line.txt", &data)];
    let out = dir.path().join("out");
    // Small splits: the line starts in the first and runs through all the others.
    let report = job(Count::default(), &inputs, &out)
        .split_size(512 << 10)
        .run()
        .await
        .unwrap();
    assert_eq!(report.records(), 1);
    let counts = reference_count(&data, None);
    assert_output(&out, &expected_parts(&counts_as_rows(&counts), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_dir_with_another_jobs_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [write(dir.path(), "in.txt", b"a b\n")];
    let other = [write(dir.path(), "other.txt", b"c d\n")];
    let out = dir.path().join("out");
    job(Count::default(), &inputs, &out).run().await.unwrap();
    let err = job(Count::default(), &other, &out).run().await.unwrap_err();
    assert!(matches!(err, Error::ForeignOutput { .. }), "{err}");
    let err = job(Count::default(), &inputs, &out)
        .reducers(2)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignOutput { .. }), "{err}");
    // Part files that no forkyard job wrote.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    std::fs::write(stranger.join("part-00000"), b"x\t1\n").unwrap();
    let err = job(Count::default(), &inputs, &stranger)
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another job's output"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_dir_that_cannot_be_created_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [write(dir.path(), "in.txt", b"a b\n")];
    let file = write(dir.path(), "a-file", b"");
    let err = job(Count::default(), &inputs, &file.join("out"))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutputDir { .. }), "{err}");
}
