//! Helpers: a job on fixture workers, a single-threaded reference, and the
//! comparison of an output directory with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use forkyard_mapreduce::{Job, LineFiles, MapReduce, partition};

pub(crate) use forkyard_testkit::Baseline;

pub(crate) fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkyard-mapreduce-fixture"))
}

/// The node program (the crate's `[[bin]]`, built by cargo for the tests):
/// it serves the library's jobs and calls (`forkyard_mapreduce::jobs`).
pub(crate) fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkyard-mapreduce-node"))
}

/// The node program serving the server at `url` with 2 workers
/// (`--serve --nats URL --workers 2`), stdin and stdout null. Its stderr is
/// null too, unless `FORKYARD_NODE_LOG=1` is in the environment: then it
/// runs `--verbose` and prints a line per task attempt to the test's stderr
/// (shown when the test fails).
pub(crate) fn node_command(url: &str) -> Command {
    let mut cmd = Command::new(node_bin());
    cmd.args(["--serve", "--nats", url, "--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if std::env::var_os("FORKYARD_NODE_LOG").is_some() {
        cmd.arg("--verbose").stderr(Stdio::inherit());
    } else {
        cmd.stderr(Stdio::null());
    }
    cmd
}

/// A job over `inputs` into `out`, on 2 fixture workers, 3 reducers, small splits.
pub(crate) fn job<J: Job>(job: J, inputs: &[PathBuf], out: &Path) -> MapReduce<J> {
    let exe = fixture();
    MapReduce::new(job)
        .input(LineFiles::new(inputs))
        .out_dir(out)
        .workers(2)
        .reducers(3)
        .split_size(4 << 10)
        .worker_command(move || std::process::Command::new(&exe))
}

/// Words of `data` (maximal runs of non-ASCII-whitespace bytes) with counts,
/// skipping lines that contain `skip`.
pub(crate) fn reference_count(data: &[u8], skip: Option<&str>) -> BTreeMap<Vec<u8>, u64> {
    let mut counts = BTreeMap::new();
    for line in data.split(|&b| b == b'\n') {
        if skip.is_some_and(|s| line.windows(s.len()).any(|w| w == s.as_bytes())) {
            continue;
        }
        for w in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(w.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// The part files a job with `reducers` partitions must write for `rows`
/// (already in key order): each row in the partition of its key.
pub(crate) fn expected_parts(rows: &BTreeMap<Vec<u8>, String>, reducers: u32) -> Vec<Vec<u8>> {
    let mut parts = vec![Vec::new(); reducers as usize];
    for (k, v) in rows {
        let p = &mut parts[partition(k, reducers) as usize];
        p.extend_from_slice(k);
        p.push(b'\t');
        p.extend_from_slice(v.as_bytes());
        p.push(b'\n');
    }
    parts
}

pub(crate) fn counts_as_rows(counts: &BTreeMap<Vec<u8>, u64>) -> BTreeMap<Vec<u8>, String> {
    counts
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// Asserts `out` holds exactly the part files `want`.
pub(crate) fn assert_output(out: &Path, want: &[Vec<u8>]) {
    for (r, want) in want.iter().enumerate() {
        let path = out.join(format!("part-{r:05}"));
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            got == *want,
            "{} differs: got {} bytes, want {}\n got: {:?}\nwant: {:?}",
            path.display(),
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[..got.len().min(300)]),
            String::from_utf8_lossy(&want[..want.len().min(300)]),
        );
    }
    let parts = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .count();
    assert_eq!(parts, want.len(), "part files in {}", out.display());
    let stray: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// A text of `lines` lines over a vocabulary of `words` words, from `seed`.
pub(crate) fn text(seed: u64, lines: usize, words: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    for _ in 0..lines {
        let n = rng.usize(0..10);
        for i in 0..n {
            if i > 0 {
                out.push(if rng.u8(0..8) == 0 { b'\t' } else { b' ' });
            }
            // Skewed: low word numbers are much more common.
            let w = rng.usize(0..words).min(rng.usize(0..words));
            out.extend_from_slice(format!("w{w}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

pub(crate) fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// A child process killed (SIGKILL, by its pid) and reaped when dropped,
/// so a test that panics leaves no process behind. `kill` and `stop` end it
/// earlier, on purpose.
pub(crate) struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    pub(crate) fn spawn(cmd: &mut std::process::Command) -> Self {
        KillOnDrop(Some(cmd.spawn().expect("spawn a test process")))
    }

    /// SIGKILL by pid, then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(child.id() as i32).expect("a child pid"),
                rustix::process::Signal::KILL,
            );
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, then waits for it to exit (as long as it takes: the
    /// caller's test checks what it exits with).
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("a running child");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).expect("a child pid"),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM the child");
        child.wait().expect("wait for the child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
