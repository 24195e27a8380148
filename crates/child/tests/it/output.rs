//! Output: capped capture, line streaming, and no deadlock when both pipes flood.

use std::time::Duration;

use forkyard_child::{Child, Output, Reason, Signal, Stream};

use crate::support::{Baseline, fixture};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_both_pipes_with_a_cap_finishes_in_bounded_memory() {
    let base = Baseline::take().await;
    let flood = 256 * MIB as u64;
    let rss_before = forkyard_testkit::rss_bytes(std::process::id()).unwrap();
    let mut cmd = fixture("flood", &[&flood.to_string(), &flood.to_string()]);
    let out = Child::builder(&mut cmd)
        .stdout(Output::capture(MIB))
        .stderr(Output::capture(MIB))
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert!(out.exit.success(), "{}", out.exit);
    for (name, c) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert_eq!(c.total, flood, "{name} total");
        assert_eq!(c.bytes.len(), MIB, "{name} kept exactly the cap");
        assert!(c.truncated, "{name} reports truncation");
    }
    assert!(out.stdout.bytes.iter().all(|&b| b == b'o' || b == b'\n'));
    assert!(out.stderr.bytes.iter().all(|&b| b == b'e' || b == b'\n'));
    // 512 MiB went through; we kept 2 MiB plus buffers.
    let grown = forkyard_testkit::rss_bytes(std::process::id())
        .unwrap()
        .saturating_sub(rss_before);
    assert!(
        grown < 64 * MIB as u64,
        "RSS grew by {grown} bytes while capturing with a 1 MiB cap"
    );
    base.assert_clean().await;
}

#[tokio::test]
async fn small_output_is_captured_whole() {
    let base = Baseline::take().await;
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "printf out; printf err >&2"]);
    let out = Child::builder(&mut cmd)
        .stdout(Output::capture(100))
        .stderr(Output::capture(100))
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert_eq!(
        (
            out.stdout.text().as_ref(),
            out.stdout.total,
            out.stdout.truncated
        ),
        ("out", 3, false)
    );
    assert_eq!(
        (
            out.stderr.text().as_ref(),
            out.stderr.total,
            out.stderr.truncated
        ),
        ("err", 3, false)
    );
    base.assert_clean().await;
}

#[tokio::test]
async fn lines_stream_from_both_streams_with_a_maximum_length() {
    let base = Baseline::take().await;
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "echo one; echo two >&2; echo 0123456789abcdef; printf tail",
    ]);
    let mut child = Child::builder(&mut cmd)
        .stdout(Output::lines().max_line(10))
        .stderr(Output::capture(100).with_lines())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    while let Some(line) = child.next_line().await {
        lines.push((line.stream, line.text().into_owned(), line.truncated));
    }
    let mut stdout: Vec<_> = lines
        .iter()
        .filter(|l| l.0 == Stream::Stdout)
        .cloned()
        .collect();
    stdout.sort_by_key(|l| l.1.clone());
    assert_eq!(
        stdout,
        vec![
            (Stream::Stdout, "0123456789".into(), true),
            (Stream::Stdout, "one".into(), false),
            (Stream::Stdout, "tail".into(), false),
        ]
    );
    assert!(lines.contains(&(Stream::Stderr, "two".into(), false)));
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.stderr.text(),
        "two\n",
        "stderr was captured as well as streamed"
    );
    base.assert_clean().await;
}

#[tokio::test]
async fn kill_on_overflow_ends_the_child_with_reason_output_limit() {
    let base = Baseline::take().await;
    let mut cmd = fixture("flood", &["100000000", "0"]);
    let out = Child::builder(&mut cmd)
        .stdout(Output::capture(4096).kill_on_overflow())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let t = out.exit.ended_by().expect("we ended it");
    assert_eq!((t.reason, t.signal), (Reason::OutputLimit, Signal::KILL));
    assert_eq!(out.stdout.bytes.len(), 4096);
    assert!(out.stdout.truncated);
    assert!(
        out.stdout.total < 100_000_000,
        "killed before it wrote everything"
    );
    base.assert_clean().await;
}

#[tokio::test]
async fn piped_stdio_is_the_callers_to_use() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = Baseline::take().await;
    let mut cmd = fixture("echo", &[]);
    let mut child = Child::builder(&mut cmd)
        .stdin(forkyard_child::Input::Piped)
        .stdout(Output::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.take_stdin().unwrap();
    let mut stdout = child.take_stdout().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    drop(stdin);
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "ping\n");
    assert!(child.wait().await.unwrap().success());
    drop((child, stdout));
    base.assert_clean().await;
}
