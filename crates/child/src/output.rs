//! Stdout and stderr: capture with a byte cap, line streaming, and no deadlock.
//!
//! # The hazard
//!
//! A child writing to a pipe blocks once the pipe buffer (64 KiB by default) is
//! full. A parent that reads stdout to the end before it reads stderr deadlocks
//! with a child that fills stderr first: each waits for the other. And a parent
//! that collects everything a child prints can be made to use unbounded memory.
//!
//! # The approach
//!
//! Each captured stream gets its own reader task on the tokio runtime, so both
//! pipes are always drained concurrently. A capture keeps the first `cap`
//! bytes, counts the rest, and discards it (reporting `truncated`), so memory is
//! bounded by the cap, never by the child. Line streaming splits at `\n`, with
//! a maximum line length, into one bounded channel shared by both streams.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::Reason;
use crate::process::Shared;

/// What to do with a child's stdout or stderr.
///
/// ```
/// use forkyard_child::Output;
/// let keep_first_mib = Output::capture(1 << 20);
/// let stream_lines = Output::lines();
/// let both = Output::capture(64 << 10).with_lines();
/// let strict = Output::capture(1 << 20).kill_on_overflow();
/// # let _ = (keep_first_mib, stream_lines, both, strict);
/// ```
#[derive(Debug, Clone)]
pub struct Output {
    pub(crate) kind: OutputKind,
    pub(crate) cap: usize,
    pub(crate) lines: bool,
    pub(crate) max_line: usize,
    pub(crate) kill_on_overflow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    Inherit,
    Null,
    /// A raw pipe the caller takes with `take_stdout` / `take_stderr`.
    Piped,
    /// Read by forkyard: captured and/or split into lines.
    Collected,
}

/// The default maximum line length for line streaming: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

impl Output {
    fn of(kind: OutputKind) -> Output {
        Output {
            kind,
            cap: 0,
            lines: false,
            max_line: DEFAULT_MAX_LINE,
            kill_on_overflow: false,
        }
    }

    /// The child writes to the parent's own stream (the default).
    pub fn inherit() -> Output {
        Output::of(OutputKind::Inherit)
    }

    /// The child writes to `/dev/null`.
    pub fn null() -> Output {
        Output::of(OutputKind::Null)
    }

    /// A raw pipe, taken with [`Child::take_stdout`](crate::Child::take_stdout) or
    /// [`Child::take_stderr`](crate::Child::take_stderr). Reading it is then the
    /// caller's job, including the deadlock hazard this module's docs describe.
    pub fn piped() -> Output {
        Output::of(OutputKind::Piped)
    }

    /// Keep the first `cap` bytes; count and discard the rest.
    pub fn capture(cap: usize) -> Output {
        Output {
            cap,
            ..Output::of(OutputKind::Collected)
        }
    }

    /// Stream lines through [`Child::next_line`](crate::Child::next_line), capturing nothing.
    pub fn lines() -> Output {
        Output {
            lines: true,
            ..Output::of(OutputKind::Collected)
        }
    }

    /// Also stream lines, in addition to capturing.
    pub fn with_lines(mut self) -> Output {
        self.kind = OutputKind::Collected;
        self.lines = true;
        self
    }

    /// Lines longer than `max` bytes are cut at `max` and marked truncated
    /// (default [`DEFAULT_MAX_LINE`]).
    pub fn max_line(mut self, max: usize) -> Output {
        self.max_line = max.max(1);
        self
    }

    /// Kill the child's group (reason [`Reason::OutputLimit`]) as soon as it
    /// writes more than the capture cap, instead of discarding the excess.
    pub fn kill_on_overflow(mut self) -> Output {
        self.kill_on_overflow = true;
        self
    }
}

/// What to connect to a child's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Input {
    /// The parent's own stdin (the default, as with `std::process::Command`).
    #[default]
    Inherit,
    /// `/dev/null`: reads return end-of-file at once.
    Null,
    /// A pipe, taken with [`Child::take_stdin`](crate::Child::take_stdin).
    Piped,
}

/// Which of the child's output streams a line or capture came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a child's output, without its `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Line {
    /// Which stream it came from.
    pub stream: Stream,
    /// The bytes of the line (at most the maximum line length).
    pub bytes: Vec<u8>,
    /// Whether the line was longer than the maximum and was cut.
    pub truncated: bool,
}

impl Line {
    /// The line as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// Output captured from one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Captured {
    /// The first bytes the child wrote, at most the cap.
    pub bytes: Vec<u8>,
    /// How many bytes the child wrote in all.
    pub total: u64,
    /// Whether `total` exceeded the cap, so `bytes` is not everything.
    pub truncated: bool,
}

impl Captured {
    /// The captured bytes as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// Everything a child left behind: how it ended and what it wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChildOutput {
    /// How the child ended.
    pub exit: crate::Exit,
    /// Captured stdout (empty when stdout was not captured).
    pub stdout: Captured,
    /// Captured stderr (empty when stderr was not captured).
    pub stderr: Captured,
}

/// Drains one pipe to its end: captures up to the cap, splits lines, never blocks
/// the child for longer than it takes to copy a chunk (unless line streaming is on
/// and nobody reads the lines: then the bounded line channel applies backpressure).
pub(crate) async fn drain(
    mut pipe: pipe::Receiver,
    stream: Stream,
    cfg: Output,
    lines: Option<mpsc::Sender<Line>>,
    shared: Arc<Shared>,
) -> std::io::Result<Captured> {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut splitter = cfg.lines.then(|| LineSplitter::new(stream, cfg.max_line));
    let mut lines = lines;
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let room = cfg.cap.saturating_sub(captured.bytes.len());
        captured.bytes.extend_from_slice(&chunk[..room.min(n)]);
        captured.total += n as u64;
        if captured.total > cfg.cap as u64 && !captured.truncated {
            captured.truncated = true;
            if cfg.kill_on_overflow
                && let Err(e) = shared.terminate(Reason::OutputLimit, crate::Signal::KILL)
            {
                tracing::warn!(pid = shared.pid, error = %e, "cannot kill a child over its output cap");
            }
        }
        if let (Some(splitter), Some(tx)) = (splitter.as_mut(), lines.as_ref()) {
            for line in splitter.push(chunk) {
                if tx.send(line).await.is_err() {
                    // Nobody listens any more; keep draining so the child never blocks.
                    lines = None;
                    break;
                }
            }
        }
    }
    if let (Some(splitter), Some(tx)) = (splitter.as_mut(), lines.as_ref())
        && let Some(last) = splitter.finish()
    {
        let _ = tx.send(last).await;
    }
    Ok(captured)
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: Stream,
    max: usize,
    partial: Vec<u8>,
    /// The current line overflowed and was already emitted; skip to the next `\n`.
    skipping: bool,
}

impl LineSplitter {
    pub(crate) fn new(stream: Stream, max: usize) -> LineSplitter {
        LineSplitter {
            stream,
            max,
            partial: Vec::new(),
            skipping: false,
        }
    }

    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (piece, rest, complete) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            if !self.skipping {
                let room = self.max - self.partial.len();
                self.partial
                    .extend_from_slice(&piece[..room.min(piece.len())]);
                if piece.len() > room {
                    out.push(Line {
                        stream: self.stream,
                        bytes: std::mem::take(&mut self.partial),
                        truncated: true,
                    });
                    self.skipping = true;
                }
            }
            if complete {
                if self.skipping {
                    self.skipping = false;
                } else {
                    out.push(Line {
                        stream: self.stream,
                        bytes: std::mem::take(&mut self.partial),
                        truncated: false,
                    });
                }
            }
            chunk = rest;
        }
        out
    }

    pub(crate) fn finish(&mut self) -> Option<Line> {
        let skipping = std::mem::replace(&mut self.skipping, false);
        (!self.partial.is_empty() && !skipping).then(|| Line {
            stream: self.stream,
            bytes: std::mem::take(&mut self.partial),
            truncated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new(Stream::Stdout, max);
        let mut lines: Vec<Line> = chunks.iter().flat_map(|c| s.push(c)).collect();
        lines.extend(s.finish());
        lines.into_iter().map(|l| (l.bytes, l.truncated)).collect()
    }

    /// (chunks as read, maximum line length, lines expected with their truncated flag)
    type Case = (
        &'static [&'static [u8]],
        usize,
        &'static [(&'static [u8], bool)],
    );

    #[test]
    fn lines_table() {
        let cases: &[Case] = &[
            (&[b"a\nb\n"], 10, &[(b"a", false), (b"b", false)]),
            (&[b"ab", b"c\nd"], 10, &[(b"abc", false), (b"d", false)]),
            (&[b"\n\n"], 10, &[(b"", false), (b"", false)]),
            (&[b"abcdef\nxy\n"], 3, &[(b"abc", true), (b"xy", false)]),
            (
                &[b"abc", b"def", b"\nz"],
                3,
                &[(b"abc", true), (b"z", false)],
            ),
            (&[b"abc\n"], 3, &[(b"abc", false)]),
        ];
        for (chunks, max, want) in cases {
            let got = split_all(chunks, *max);
            let want: Vec<(Vec<u8>, bool)> = want.iter().map(|(b, t)| (b.to_vec(), *t)).collect();
            assert_eq!(got, want, "chunks {chunks:?} max {max}");
        }
    }

    proptest! {
        /// Splitting is independent of how the stream is chunked, and when no line
        /// exceeds the maximum, joining the lines gives back the input.
        #[test]
        fn chunking_does_not_matter(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..400),
                                    cuts in proptest::collection::vec(0usize..400, 0..8),
                                    max in 1usize..50) {
            let whole = split_all(&[&data], max);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&data[last..c]); last = c; }
            chunks.push(&data[last..]);
            prop_assert_eq!(split_all(&chunks, max), whole.clone());
            prop_assert!(whole.iter().all(|(l, _)| l.len() <= max && !l.contains(&b'\n')));
            if whole.iter().all(|(_, t)| !t) {
                let mut joined: Vec<u8> = whole.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>().join(&b'\n');
                if data.last() == Some(&b'\n') { joined.push(b'\n'); }
                prop_assert_eq!(joined, data);
            }
        }
    }
}
