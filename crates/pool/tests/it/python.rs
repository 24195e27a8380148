//! Workers in Python on the `forkyard_pool` package (`crates/pool/python`),
//! over the JSON-lines codec: same pool, same guarantees.
//!
//! The scenarios are written once here for any worker that serves [`Work`]
//! (`python/tests/worker.py`, `node/test/worker.js`); `node.rs` runs them
//! against Node.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use forkyard_ipc::Codec;
use forkyard_pool::protocol::{FromWorker, ToWorker};
use forkyard_pool::{
    Builder, CallOptions, MapOptions, Outcome, Pool, PoolError, ShutdownMode, TaskError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::Job;
use crate::support::{Baseline, chain, wait_for};

/// The requests the Python and Node test workers serve. Answers are JSON
/// values of any shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Work {
    /// Answers the value.
    Echo(Value),
    /// Fails with an error of this kind: a builtin class of the language
    /// (`ValueError`, `TypeError`), the worker's own class `Refused`, or any
    /// other name through the package's `TaskError` (`Detailed`: with the
    /// detail "given by the handler" instead of the trace; `Undecodable`:
    /// the language's builtin error, `ValueError` or `TypeError`, its message
    /// followed by a lone surrogate: Python's `surrogateescape` of the byte
    /// 0xff, Node's `'\ud83d'`).
    Fail { kind: String, message: String },
    /// Recurses `depth` calls deep (two functions in turn, so no line
    /// repeats and Python's tracebacks do not fold them; Node keeps every
    /// frame), then fails with `Refused: message`: a traceback or stack of
    /// tens of KiB.
    Deep { depth: u64, message: String },
    /// A barrier: waits until `n` tasks are in the handler at once on this
    /// worker, then answers `n`; a task that waits longer than `within_ms`
    /// leaves and fails with `TimeoutError: k of n tasks ran at once` (so a
    /// worker running tasks one at a time fails it: evidence of overlap
    /// without measuring time).
    Meet { n: u64, within_ms: u64 },
    /// Creates `<path>.started`, then waits (up to 20 s) until `path`
    /// exists; answers whether it does.
    WaitFile(String),
    /// The process aborts (SIGABRT) mid-task.
    Crash,
    /// Aborts if the marker file does not exist yet (creating it); answers
    /// "survived" if it does: a task that crashes its first worker only.
    CrashOnce { marker: String },
    /// The process exits with status 0 mid-task.
    Exit0,
    /// The handler never returns.
    Hang,
    /// The handler writes a line that is not JSON into the channel.
    Garbage,
    /// The handler returns a value that has no JSON form.
    Unserializable,
    /// The handler returns a string holding a lone surrogate (as `Fail`'s
    /// `Undecodable`), which JSON can only escape and the pool cannot read.
    LoneSurrogate,
    /// Answers the worker's pid.
    Pid,
    /// Answers where the worker package was loaded from.
    Module,
    /// Answers a string of this many `x`s (for answers near the frame limit).
    Big(u64),
    /// Counts itself in the handler, creates `<path>.started`, waits (up to
    /// 20 s) until `path` exists, leaves, and answers the most tasks that were
    /// in the handler at once on this worker so far (Python only).
    Peak(String),
    /// Creates this file, failing if it exists: an item that must never run twice.
    Once(String),
    /// Creates `<path>.started`, then never returns, ignoring cancellation
    /// (it swallows `CancelledError`, never looks at its `AbortSignal`).
    Deaf(String),
}

pub(crate) type WorkPool = Pool<Work, Value>;

/// How to start one test worker (a language and a mode).
pub(crate) type Cmd = Arc<dyn Fn() -> Command + Send + Sync>;

/// A pool builder for workers started with `cmd`, over JSON lines.
pub(crate) fn pool_of(cmd: &Cmd) -> Builder<Work, Value> {
    let cmd = cmd.clone();
    Pool::<Work, Value>::builder()
        .command(move || cmd())
        .codec(Codec::JsonLines)
}

/// The package's source directory, put on `PYTHONPATH` by the tests that run
/// it uninstalled.
const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// `python3 python/tests/worker.py <mode...>`, the package taken from the
/// source tree.
fn python(mode: &'static [&'static str]) -> Cmd {
    python_with("python3".into(), Some(PYTHON_DIR), mode)
}

fn python_with(
    interpreter: std::path::PathBuf,
    pythonpath: Option<&'static str>,
    mode: &'static [&'static str],
) -> Cmd {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/tests/worker.py");
    Arc::new(move || {
        let mut cmd = Command::new(&interpreter);
        cmd.arg(script).args(mode);
        // No __pycache__ in the source tree.
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd.env_remove("PYTHONPATH");
        if let Some(path) = pythonpath {
            cmd.env("PYTHONPATH", path);
        }
        cmd
    })
}

async fn call(pool: &WorkPool, work: Work) -> Result<Value, PoolError> {
    pool.call(work).await
}

fn fail(kind: &str, message: &str) -> Work {
    Work::Fail {
        kind: kind.into(),
        message: message.into(),
    }
}

/// The text of a task error, or a panic naming what came instead.
fn task_error(result: Result<Value, PoolError>) -> String {
    typed_error(result).to_string()
}

/// A task error, or a panic naming what came instead.
fn typed_error(result: Result<Value, PoolError>) -> TaskError {
    match result {
        Err(PoolError::Task(error)) => error,
        other => panic!("expected a task error, got {other:?}"),
    }
}

/// What a language's worker puts in an error's detail.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stack {
    /// A Python traceback: `Traceback (most recent call last):`, frames,
    /// then `Kind: message` last.
    Python,
    /// A Node `err.stack`: `name: message` first, then `    at` frames.
    Node,
}

impl Stack {
    /// Checks `detail` is this language's trace of an error reading
    /// `Kind: message`, and gives its first and last lines.
    fn check(self, detail: Option<&str>, shown: &str) -> (String, String) {
        let detail = detail.unwrap_or_else(|| panic!("no detail for {shown}"));
        let first = detail.lines().next().unwrap_or_default().to_owned();
        let last = detail
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        match self {
            Stack::Python => {
                assert_eq!(first, "Traceback (most recent call last):", "{detail}");
                assert_eq!(last, shown, "{detail}");
            }
            Stack::Node => {
                // `name: message` as the error had them when made: a subclass
                // that leaves `name` alone reads `Error: ...` here.
                let (_, message) = shown.split_once(": ").unwrap();
                assert!(first.ends_with(&format!(": {message}")), "{detail}");
                assert!(last.starts_with("    at "), "{detail}");
                // Where in Node's internals the stack ends varies by version.
                return (first, "    at [a frame]".into());
            }
        }
        (first, last)
    }
}

async fn pid(pool: &WorkPool) -> u64 {
    call(pool, Work::Pid).await.unwrap().as_u64().unwrap()
}

/// Waits until the pool has `n` ready workers and nothing else.
async fn wait_full(pool: &WorkPool, n: usize) {
    wait_for(&format!("{n} ready workers"), || {
        let stats = pool.stats();
        let ready = stats.workers.iter().filter(|w| w.state.is_ready()).count();
        if ready == n && stats.workers.len() == n {
            Ok(())
        } else {
            Err(format!("{:?}", stats.workers))
        }
    })
    .await
}

/// Drains the pool and checks every worker exited 0.
async fn drain(pool: WorkPool) -> forkyard_pool::ShutdownReport {
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(10),
        })
        .await;
    for end in &report.workers {
        assert!(end.exit.success(), "a drained worker exits 0: {}", end.exit);
    }
    report
}

// ---- the scenarios, for any language -----------------------------------------

/// Answers of any JSON shape; errors come back typed as `PoolError::Task`
/// (kind, message, the language's traceback or stack as detail; displayed
/// `Kind: message`), not as a crash, and the worker lives on. A trace of
/// tens of KiB arrives cut to `TaskError::DETAIL_MAX`, its end kept.
pub(crate) async fn answers_and_typed_errors(cmd: &Cmd, builtin: &str, stack: Stack) {
    let base = Baseline::take().await;
    let pool = pool_of(cmd).workers(1).build().await.unwrap();
    let first = pid(&pool).await;
    let value = json!({"name": "ünïcode", "list": [1, 2.5, null, true], "nested": {"a": "b"}});
    assert_eq!(call(&pool, Work::Echo(value.clone())).await.unwrap(), value);
    // The largest integer a JSON number keeps exactly in every language
    // (Node's are doubles).
    let big = json!((1u64 << 53) - 1);
    assert_eq!(call(&pool, Work::Echo(big.clone())).await.unwrap(), big);
    assert_eq!(
        task_error(call(&pool, fail(builtin, "bad input")).await),
        format!("{builtin}: bad input")
    );
    // The worker's own error class: its name is the kind.
    let refused = typed_error(call(&pool, fail("Refused", "not today")).await);
    assert_eq!(
        (refused.kind(), refused.message()),
        (Some("Refused"), "not today")
    );
    let (head, tail) = stack.check(refused.detail(), "Refused: not today");
    insta::assert_debug_snapshot!(
        format!("typed_error_{stack:?}"),
        (
            refused.kind(),
            refused.message(),
            refused.to_string(),
            head,
            tail
        )
    );
    // The package's TaskError: any kind.
    let not_found = typed_error(call(&pool, fail("NotFound", "no such user")).await);
    assert_eq!(
        (not_found.kind(), not_found.message()),
        (Some("NotFound"), "no such user")
    );
    assert_eq!(not_found.to_string(), "NotFound: no such user");
    // A detail of the handler's choosing instead of the trace.
    let detailed = typed_error(call(&pool, fail("Detailed", "see detail")).await);
    assert_eq!(
        (detailed.kind(), detailed.detail()),
        (Some("Detailed"), Some("given by the handler"))
    );
    let deep = Work::Deep {
        depth: 400,
        message: "deep down".into(),
    };
    let deep = typed_error(call(&pool, deep).await);
    assert_eq!(deep.kind(), Some("Refused"));
    let detail = deep.detail().unwrap();
    assert!(
        detail.len() <= TaskError::DETAIL_MAX && detail.contains(" bytes cut ...]"),
        "cut to DETAIL_MAX: {} bytes",
        detail.len()
    );
    stack.check(Some(detail), "Refused: deep down");
    let unserializable = typed_error(call(&pool, Work::Unserializable).await);
    assert!(
        unserializable.is_unsendable()
            && unserializable
                .message()
                .starts_with("the response is not JSON"),
        "{unserializable:?}"
    );
    assert_eq!(
        pid(&pool).await,
        first,
        "errors are not crashes: same worker"
    );
    let stats = pool.stats();
    assert_eq!(stats.crashes, 0);
    assert_eq!(
        stats.failed.get(&forkyard_pool::FailureKind::Task),
        Some(&6)
    );
    drain(pool).await;
    base.assert_clean().await;
}

/// Error texts that are not plain ASCII: a message of emoji long enough that
/// the detail's cut falls inside one (one of two lengths puts it between the
/// two halves of a UTF-16 surrogate pair, whatever comes before the message
/// in the trace), and a message ending in a lone surrogate (not Unicode; JSON
/// can only escape it). Each call fails with its typed error, the lone
/// surrogate read as U+FFFD (a result holding one fails `Unsendable`: data
/// is not mended), and the worker lives on: a task it had in flight
/// all along is answered. (A line the pool cannot read would be a protocol
/// error, which costs the worker and every task on it.)
pub(crate) async fn unicode_errors_keep_the_worker(cmd: &Cmd, builtin: &str) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let pool = pool_of(cmd)
        .workers(1)
        .max_in_flight_per_worker(4)
        .build()
        .await
        .unwrap();
    let first = pid(&pool).await;
    let emoji: Vec<String> = (0..2)
        .map(|lead| format!("{}{}", "x".repeat(lead), "\u{1F600}".repeat(5000)))
        .collect();
    let failing = async {
        let errors = futures::future::join_all([
            call(&pool, fail(builtin, &emoji[0])),
            call(&pool, fail(builtin, &emoji[1])),
            call(&pool, fail("Undecodable", "bad name ")),
            call(&pool, Work::LoneSurrogate),
        ])
        .await;
        // Only now may the task in flight on the same worker end.
        std::fs::write(&release, b"").unwrap();
        errors
    };
    let waiting = call(&pool, Work::WaitFile(release.to_str().unwrap().into()));
    let (errors, waited) = tokio::join!(failing, waiting);
    let mut errors: Vec<TaskError> = errors.into_iter().map(typed_error).collect();
    // A result is not mended: the task fails, as for any value with no JSON form.
    let lone = errors.pop().unwrap();
    assert!(
        lone.is_unsendable() && lone.message().starts_with("the response is not JSON"),
        "{lone:?}"
    );
    for (error, message) in errors.iter().zip(&emoji) {
        assert_eq!(
            (error.kind(), error.message()),
            (Some(builtin), message.as_str())
        );
        let detail = error.detail().unwrap();
        assert!(
            detail.len() <= TaskError::DETAIL_MAX && detail.contains(" bytes cut ...]"),
            "cut to DETAIL_MAX: {} bytes",
            detail.len()
        );
    }
    assert_eq!(
        (errors[2].kind(), errors[2].message()),
        (Some(builtin), "bad name \u{FFFD}")
    );
    assert_eq!(
        waited.unwrap(),
        json!(true),
        "the task in flight is answered"
    );
    assert_eq!(pid(&pool).await, first, "same worker");
    let stats = pool.stats();
    assert_eq!((stats.crashes, stats.restarts), (0, 0));
    assert_eq!(
        stats.failed.get(&forkyard_pool::FailureKind::Task),
        Some(&4)
    );
    drain(pool).await;
    base.assert_clean().await;
}

/// A worker that dies mid-task fails that task with `WorkerCrashed` (its
/// exit says how), or re-runs it when it has retries left; never loses it.
pub(crate) async fn crashes_fail_or_rerun(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_of(cmd).workers(2).retries(1).build().await.unwrap();
    // With a retry left, the task re-runs on a fresh worker, once.
    let marker = dir.path().join("crashed-once");
    let survived = call(
        &pool,
        Work::CrashOnce {
            marker: marker.to_str().unwrap().into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(survived, json!("survived"));
    assert!(marker.exists(), "the first run crashed its worker");
    assert_eq!(pool.stats().retried, 1);
    // Without retries left (it crashes every worker), WorkerCrashed with the
    // last exit: a signal, or a clean-looking exit(0) mid-task.
    match call(&pool, Work::Crash).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => {
            assert_eq!(exit.signal(), Some(forkyard_child::Signal::ABRT), "{exit}")
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    match call(&pool, Work::Exit0).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => assert_eq!(exit.code(), Some(0), "{exit}"),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!(
        stats.crashes, 5,
        "one crash-once, two runs of each of the others"
    );
    // The replacements answer.
    wait_full(&pool, 2).await;
    assert_eq!(call(&pool, Work::Echo(json!(7))).await.unwrap(), json!(7));
    drain(pool).await;
    base.assert_clean().await;
}

/// A task that never returns is timed out: its worker is killed and replaced.
pub(crate) async fn hangs_time_out_and_are_replaced(cmd: &Cmd) {
    let base = Baseline::take().await;
    let pool = pool_of(cmd)
        .workers(1)
        .task_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let before = pid(&pool).await;
    match call(&pool, Work::Hang).await {
        Err(PoolError::TimedOut { after }) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    wait_full(&pool, 1).await;
    assert_ne!(pid(&pool).await, before, "the hung worker was replaced");
    drain(pool).await;
    base.assert_clean().await;
}

/// A handler that writes garbage into the channel: its task fails with
/// `Protocol` (a clear error naming the bytes), the worker is replaced, and
/// the pool goes on.
pub(crate) async fn garbage_is_a_protocol_error(cmd: &Cmd) {
    let base = Baseline::take().await;
    let pool = pool_of(cmd).workers(1).build().await.unwrap();
    let before = pid(&pool).await;
    match call(&pool, Work::Garbage).await {
        Err(PoolError::Protocol(cause)) => {
            let text = chain(&*cause);
            assert!(text.contains("undecodable"), "{text}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    wait_full(&pool, 1).await;
    assert_ne!(pid(&pool).await, before, "the worker was replaced");
    assert_eq!(
        call(&pool, Work::Echo(json!("on"))).await.unwrap(),
        json!("on")
    );
    pool.shutdown(ShutdownMode::Cancel {
        grace: Duration::from_secs(5),
    })
    .await;
    base.assert_clean().await;
}

/// `n` tasks sent to one worker at once all run at once: each waits in the
/// handler until it sees all `n` there (a worker running them one at a time
/// would fail every one of them).
pub(crate) async fn tasks_overlap(cmd: &Cmd, n: u64) {
    let base = Baseline::take().await;
    let pool = pool_of(cmd)
        .workers(1)
        .max_in_flight_per_worker(n as usize)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.call(Work::Meet {
                    n,
                    within_ms: 10_000,
                })
                .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!(n));
    }
    drain(pool).await;
    base.assert_clean().await;
}

/// A shutdown in drain mode lets the tasks in flight finish and answer; then
/// the worker gets `Drain` and exits 0.
pub(crate) async fn drain_answers_tasks_in_flight(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let pool = pool_of(cmd)
        .workers(1)
        .max_in_flight_per_worker(3)
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            let path = release.to_str().unwrap().to_owned();
            tokio::spawn(async move { pool.call(Work::WaitFile(path)).await })
        })
        .collect();
    wait_for("3 tasks running", || match pool.stats().running {
        3 => Ok(()),
        n => Err(format!("{n} running")),
    })
    .await;
    // Polled once, the shutdown has begun (new calls are refused); the tasks
    // are still waiting for the file.
    let mut shutdown = std::pin::pin!(drain(pool.clone()));
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    assert!(matches!(
        pool.call(Work::Echo(json!(1))).await,
        Err(PoolError::ShuttingDown)
    ));
    std::fs::write(&release, b"").unwrap();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!(true));
    }
    let report = shutdown.await;
    assert_eq!(report.count(Outcome::Completed), 3, "{:?}", report.tasks);
    assert_eq!(report.workers.len(), 1);
    drop(pool);
    base.assert_clean().await;
}

/// `Pool::map` over workers in this language: one outcome per item in the
/// items' order (a failing item fails alone), and `map_unordered` gives the
/// same outcomes by index.
pub(crate) async fn map_answers_each_item(cmd: &Cmd, builtin: &str) {
    let base = Baseline::take().await;
    let pool = pool_of(cmd)
        .workers(2)
        .max_in_flight_per_worker(2)
        .build()
        .await
        .unwrap();
    let mut items: Vec<Work> = (0..500).map(echo).collect();
    items[250] = fail(builtin, "item 250");
    items[251] = fail("Refused", "item 251");
    let options = MapOptions {
        chunk_size: Some(32),
        ..MapOptions::default()
    };
    let ordered: Vec<_> = pool.map_with(items.clone(), options).collect().await;
    let unordered: BTreeMap<usize, _> = pool.map_unordered(items).collect().await;
    assert_eq!(ordered.len(), 500);
    assert_eq!(unordered.len(), 500);
    for (i, (a, (j, b))) in ordered.into_iter().zip(unordered).enumerate() {
        assert_eq!(i, j);
        for result in [a, b] {
            match (i, result) {
                (250, Err(PoolError::Task(error))) => {
                    assert_eq!(error.kind(), Some(builtin));
                    assert_eq!(error.to_string(), format!("{builtin}: item 250"))
                }
                (251, Err(PoolError::Task(error))) => {
                    assert_eq!(
                        (error.kind(), error.message()),
                        (Some("Refused"), "item 251")
                    );
                    assert!(error.detail().is_some_and(|d| d.contains("item 251")));
                }
                (i, Ok(value)) if i != 250 && i != 251 => assert_eq!(value, json!(i)),
                (i, other) => panic!("item {i}: {other:?}"),
            }
        }
    }
    drain(pool).await;
    base.assert_clean().await;
}

/// A chunk's finished items reach the caller while a later item waits: the
/// test creates the file item 2 waits for only once it has items 0 and 1
/// (a deadline against a stuck worker, no timing).
pub(crate) async fn map_streams_finished_items_while_one_waits(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let pool = pool_of(cmd).workers(1).build().await.unwrap();
    let items = vec![
        echo(0),
        echo(1),
        Work::WaitFile(release.to_str().unwrap().into()),
        echo(3),
    ];
    let options = MapOptions {
        chunk_size: Some(4),
        ..MapOptions::default()
    };
    let mut stream = pool.map_with(items, options);
    for i in 0..2 {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(value))) => assert_eq!(value, json!(i)),
            other => panic!("expected item {i} while item 2 waits, got {other:?}"),
        }
    }
    std::fs::write(&release, b"").unwrap();
    let rest: Vec<Value> = stream.map(Result::unwrap).collect().await;
    assert_eq!(rest, [json!(true), json!(3)]);
    drain(pool).await;
    base.assert_clean().await;
}

/// A worker that dies in the middle of a chunk: the pool re-runs the items
/// that got no result on another worker, and none that did (each `Once`
/// item would fail if it ran twice).
///
/// Item 10 waits for a file the test creates only once the stream has given
/// it items 0 to 9, so they were answered before item 11 crashes the worker,
/// whatever the machine's load.
pub(crate) async fn map_reruns_only_unanswered_items_after_a_crash(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let pool = pool_of(cmd).workers(2).retries(1).build().await.unwrap();
    let once = |i: usize| Work::Once(dir.path().join(i.to_string()).to_str().unwrap().into());
    let mut items: Vec<Work> = (0..20).map(once).collect();
    items[10] = Work::WaitFile(release.to_str().unwrap().into());
    items[11] = Work::CrashOnce {
        marker: dir.path().join("crashed").to_str().unwrap().into(),
    };
    let options = MapOptions {
        chunk_size: Some(20),
        ..MapOptions::default()
    };
    let mut stream = pool.map_with(items, options);
    let mut results = Vec::new();
    while results.len() < 10 {
        // A deadline against a stuck worker, not a timing.
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(result)) => results.push(result),
            other => panic!("expected items 0 to 9 before item 10 ends, got {other:?}"),
        }
    }
    std::fs::write(&release, b"").unwrap();
    results.extend(stream.collect::<Vec<_>>().await);
    wait_full(&pool, 2).await; // the crashed worker's replacement, before the drain
    for (i, result) in results.iter().enumerate() {
        let value = result
            .as_ref()
            .unwrap_or_else(|e| panic!("item {i}: {e:?}"));
        match i {
            // Answered before the crash, or re-run (it is harmless to).
            10 => assert_eq!(value, &json!(true)),
            11 => assert_eq!(value, &json!("survived")),
            i => assert_eq!(
                value,
                &json!(dir.path().join(i.to_string()).to_str().unwrap())
            ),
        }
    }
    assert_eq!(results.len(), 20);
    assert_eq!(pool.stats().crashes, 1);
    drain(pool).await;
    base.assert_clean().await;
}

/// Cancelling a running task whose handler stops: the worker answers
/// `Cancelled` and keeps serving (it is not killed, though the cancel grace
/// would allow it only after two minutes).
pub(crate) async fn cancel_stops_a_running_handler(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let pool = pool_of(cmd)
        .workers(1)
        .cancel_grace(Duration::from_secs(120))
        .build()
        .await
        .unwrap();
    let before = pid(&pool).await;
    let wait = Work::WaitFile(never.to_str().unwrap().into());
    let handle = pool.start(wait, CallOptions::default()).await.unwrap();
    started(&never).await;
    handle.cancel();
    assert!(matches!(handle.await, Err(PoolError::Cancelled)));
    wait_for("the worker idle again", || {
        let workers = pool.stats().workers;
        match workers.as_slice() {
            [w] if w.in_flight == 0 && w.state.is_ready() => Ok(()),
            _ => Err(format!("{workers:?}")),
        }
    })
    .await;
    assert_eq!(pid(&pool).await, before, "the same worker");
    assert_eq!(pool.stats().crashes, 0);
    drain(pool).await;
    base.assert_clean().await;
}

/// Cancelling a running task whose handler cannot be stopped: past the
/// cancel grace the pool kills the worker and starts another.
pub(crate) async fn cancel_kills_a_handler_that_goes_on(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deaf");
    let pool = pool_of(cmd)
        .workers(1)
        .cancel_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let before = pid(&pool).await;
    let deaf = Work::Deaf(path.to_str().unwrap().into());
    let handle = pool.start(deaf, CallOptions::default()).await.unwrap();
    started(&path).await;
    handle.cancel();
    assert!(matches!(handle.await, Err(PoolError::Cancelled)));
    wait_for("a new worker", || {
        let workers = pool.stats().workers;
        match workers.as_slice() {
            [w] if w.state.is_ready() && w.pid != Some(before as u32) => Ok(()),
            _ => Err(format!("{workers:?}")),
        }
    })
    .await;
    assert_eq!(call(&pool, echo(5)).await.unwrap(), json!(5));
    drain(pool).await;
    base.assert_clean().await;
}

// ---- the wire, spoken by the test itself -------------------------------------

/// One worker with a bare channel to it: the test plays the pool, message by
/// message, to check the worker keeps the protocol's rules exactly.
struct Wire {
    child: forkyard_child::Child,
    tx: forkyard_ipc::Sender<ToWorker<Work>>,
    rx: forkyard_ipc::Receiver<FromWorker<Value>>,
}

impl Wire {
    async fn start(cmd: &Cmd) -> Wire {
        let mut command = cmd();
        let (child, channel) = forkyard_ipc::spawn_with(
            forkyard_child::Child::builder(&mut command),
            forkyard_ipc::Config::new().codec(Codec::JsonLines),
        )
        .unwrap();
        let (tx, mut rx) = channel.split();
        assert_eq!(next(&mut rx).await, FromWorker::Ready);
        Wire { child, tx, rx }
    }

    async fn send(&mut self, messages: impl IntoIterator<Item = ToWorker<Work>>) {
        for message in messages {
            self.tx.feed(&message).await.unwrap();
        }
        self.tx.flush().await.unwrap();
    }

    async fn next(&mut self) -> FromWorker<Value> {
        next(&mut self.rx).await
    }

    /// Sends `Drain`; the worker must answer nothing more, close, and exit 0.
    async fn drain(mut self) {
        self.send([ToWorker::Drain]).await;
        let end = tokio::time::timeout(Duration::from_secs(20), self.rx.recv()).await;
        assert!(
            matches!(end, Ok(Ok(None))),
            "expected the channel closed, got {end:?}"
        );
        let exit = self.child.wait().await.unwrap();
        assert!(exit.success(), "a drained worker exits 0: {exit}");
    }
}

/// The next message (a deadline against a stuck worker, not a timing).
async fn next<T: forkyard_ipc::Message + std::fmt::Debug>(rx: &mut forkyard_ipc::Receiver<T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        Ok(Ok(Some(message))) => message,
        other => panic!("expected a message from the worker, got {other:?}"),
    }
}

fn task(id: u64, req: Work) -> ToWorker<Work> {
    ToWorker::Task { id, req }
}

fn echo(i: u64) -> Work {
    Work::Echo(json!(i))
}

/// Collects the results of chunk `chunk` until all `len` items are answered,
/// checking none is answered twice; other messages go to `others`.
async fn chunk_results(
    wire: &mut Wire,
    chunk: u64,
    len: usize,
    others: &mut Vec<FromWorker<Value>>,
) -> (BTreeMap<u32, Result<Value, TaskError>>, usize) {
    let mut results = BTreeMap::new();
    let mut messages = 0;
    while results.len() < len {
        match wire.next().await {
            FromWorker::Items { id, results: part } if id == chunk => {
                messages += 1;
                for (index, result) in part {
                    assert!((index as usize) < len, "index {index} out of range");
                    assert!(
                        results.insert(index, result).is_none(),
                        "item {index} answered twice"
                    );
                }
            }
            FromWorker::Done { id, .. } | FromWorker::Cancelled { id } if id == chunk => {
                panic!("a chunk gets only Items")
            }
            other => others.push(other),
        }
    }
    (results, messages)
}

/// A chunk's items each get exactly one result (a failing item fails alone),
/// next to a task. With `frames`, also: answers that together exceed a frame
/// come in several `Items`, and one that alone exceeds it is an error, not a
/// broken frame (about 45 MiB of answers: once per language is enough).
pub(crate) async fn wire_chunks_answer_every_item_once(cmd: &Cmd, builtin: &str, frames: bool) {
    let base = Baseline::take().await;
    let mut wire = Wire::start(cmd).await;
    let mut items: Vec<Work> = (0..200).map(echo).collect();
    items[7] = fail(builtin, "item 7");
    wire.send([
        ToWorker::Chunk { id: 1, items },
        task(2, Work::Echo(json!("alone"))),
    ])
    .await;
    let mut others = Vec::new();
    let (results, _) = chunk_results(&mut wire, 1, 200, &mut others).await;
    for (index, result) in &results {
        match index {
            7 => assert_eq!(
                result.as_ref().map_err(|e| e.to_string()),
                Err(format!("{builtin}: item 7"))
            ),
            i => assert_eq!(result, &Ok(json!(i))),
        }
    }
    if others.is_empty() {
        others.push(wire.next().await);
    }
    assert_eq!(
        others,
        [FromWorker::Done {
            id: 2,
            result: Ok(json!("alone"))
        }]
    );
    if !frames {
        wire.drain().await;
        base.assert_clean().await;
        return;
    }
    // Three answers of 9 MiB each: no two fit in one 16 MiB frame.
    const MIB: u64 = 1 << 20;
    let items = vec![
        Work::Big(9 * MIB),
        Work::Big(9 * MIB),
        Work::Big(9 * MIB),
        Work::Big(17 * MIB),
    ];
    wire.send([ToWorker::Chunk { id: 3, items }]).await;
    let (results, messages) = chunk_results(&mut wire, 3, 4, &mut Vec::new()).await;
    assert!(
        messages >= 3,
        "split into frames that fit: {messages} Items"
    );
    for index in 0..3 {
        let text = results[&index].as_ref().unwrap();
        assert_eq!(text.as_str().map(str::len), Some(9 * MIB as usize));
    }
    let too_large = results[&3].as_ref().unwrap_err();
    assert!(
        too_large.is_unsendable() && too_large.message().contains("over the frame limit"),
        "{too_large:?}"
    );
    wire.drain().await;
    base.assert_clean().await;
}

/// `Cancel` stops async work at its `await`: the task answers `Cancelled`
/// (never `Done`), a chunk starts none of its remaining items, and a cancel
/// for an unknown id is ignored.
pub(crate) async fn wire_cancel_stops_async_work(cmd: &Cmd) {
    let base = Baseline::take().await;
    let mut wire = Wire::start(cmd).await;
    wire.send([
        task(1, Work::Hang),
        task(2, echo(2)),
        ToWorker::Cancel { id: 1 },
        ToWorker::Cancel { id: 99 },
    ])
    .await;
    let mut got = vec![wire.next().await, wire.next().await];
    got.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        got,
        [
            FromWorker::Cancelled { id: 1 },
            FromWorker::Done {
                id: 2,
                result: Ok(json!(2))
            }
        ]
    );
    // Item 0 answers, item 1 hangs: cancel then, and items 2 and 3 never run.
    let items = vec![echo(0), Work::Hang, echo(2), echo(3)];
    wire.send([ToWorker::Chunk { id: 3, items }]).await;
    assert_eq!(
        wire.next().await,
        FromWorker::Items {
            id: 3,
            results: vec![(0, Ok(json!(0)))]
        }
    );
    wire.send([ToWorker::Cancel { id: 3 }]).await;
    assert_eq!(wire.next().await, FromWorker::Cancelled { id: 3 });
    // Nothing more for 3: the next answer is this task's.
    wire.send([task(4, echo(4))]).await;
    assert_eq!(
        wire.next().await,
        FromWorker::Done {
            id: 4,
            result: Ok(json!(4))
        }
    );
    wire.drain().await;
    base.assert_clean().await;
}

/// Sync handlers on one thread: a queued task is cancelled (it never starts);
/// a running one cannot be, so the worker says nothing and answers it when
/// it ends; a running chunk stops before its next item.
pub(crate) async fn wire_cancel_in_threads(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let wait = |p: &Path| Work::WaitFile(p.to_str().unwrap().into());
    let mut wire = Wire::start(cmd).await;
    wire.send([task(1, wait(&a))]).await;
    started(&a).await;
    wire.send([
        task(2, echo(2)),
        ToWorker::Cancel { id: 2 },
        ToWorker::Cancel { id: 1 },
    ])
    .await;
    assert_eq!(wire.next().await, FromWorker::Cancelled { id: 2 });
    std::fs::write(&a, b"").unwrap();
    assert_eq!(
        wire.next().await,
        FromWorker::Done {
            id: 1,
            result: Ok(json!(true))
        },
        "a running sync handler is not claimed cancelled"
    );
    let items = vec![wait(&b), echo(1), echo(2)];
    wire.send([ToWorker::Chunk { id: 3, items }]).await;
    started(&b).await;
    wire.send([ToWorker::Cancel { id: 3 }]).await;
    std::fs::write(&b, b"").unwrap();
    let mut answered = Vec::new();
    loop {
        match wire.next().await {
            FromWorker::Items { id: 3, results } => answered.extend(results),
            FromWorker::Cancelled { id: 3 } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, [(0, Ok(json!(true)))], "items 1 and 2 never ran");
    wire.drain().await;
    base.assert_clean().await;
}

/// Waits until a `WaitFile(path)` handler has begun (it made `<path>.started`).
async fn started(path: &Path) {
    let mut marker = path.as_os_str().to_owned();
    marker.push(".started");
    wait_for("the handler started", || {
        if Path::new(&marker).exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await
}

/// A worker that dies in the middle of a chunk has already sent the results
/// of the items it finished before the one it is in (results go out every
/// 20 ms while a chunk runs), so the pool re-runs only the rest.
///
/// Item 2 waits for a file the test creates only once items 0 and 1 are in;
/// item 3 crashes the worker right after it.
pub(crate) async fn wire_chunk_results_go_out_before_a_crash(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let mut wire = Wire::start(cmd).await;
    let wait = Work::WaitFile(release.to_str().unwrap().into());
    let items = vec![echo(0), echo(1), wait, Work::Crash, echo(4)];
    wire.send([ToWorker::Chunk { id: 1, items }]).await;
    let mut answered = Vec::new();
    while answered.len() < 2 {
        match wire.next().await {
            FromWorker::Items { id: 1, results } => answered.extend(results),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        answered,
        [(0, Ok(json!(0))), (1, Ok(json!(1)))],
        "items 0 and 1 go out while item 2 runs"
    );
    std::fs::write(&release, b"").unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), wire.rx.recv()).await {
            Ok(Ok(Some(FromWorker::Items { id: 1, results }))) => answered.extend(results),
            Ok(Ok(None) | Err(_)) => break, // the worker died
            other => panic!("unexpected {other:?}"),
        }
    }
    // Item 2 may or may not have gone out in the instant before the crash;
    // item 3 crashed the worker, and item 4 never ran.
    let before_crash = [(0, Ok(json!(0))), (1, Ok(json!(1)))];
    let with_item_2 = [(0, Ok(json!(0))), (1, Ok(json!(1))), (2, Ok(json!(true)))];
    assert!(
        answered == before_crash || answered == with_item_2,
        "{answered:?}"
    );
    let exit = wire.child.wait().await.unwrap();
    assert_eq!(exit.signal(), Some(forkyard_child::Signal::ABRT), "{exit}");
    drop(wire);
    base.assert_clean().await;
}

/// `Drain` with tasks in flight: they finish and answer, then the worker exits 0.
pub(crate) async fn wire_drain_answers_tasks_in_flight(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let wait = Work::WaitFile(release.to_str().unwrap().into());
    let mut wire = Wire::start(cmd).await;
    wire.send([task(1, wait.clone()), task(2, wait), ToWorker::Drain])
        .await;
    std::fs::write(&release, b"").unwrap();
    let mut got = vec![wire.next().await, wire.next().await];
    got.sort_by_key(|m| format!("{m:?}"));
    let done = |id| FromWorker::Done {
        id,
        result: Ok(json!(true)),
    };
    assert_eq!(got, [done(1), done(2)]);
    let end = tokio::time::timeout(Duration::from_secs(20), wire.rx.recv()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    assert!(wire.child.wait().await.unwrap().success());
    drop(wire);
    base.assert_clean().await;
}

/// A message the worker cannot read: it answers what it has, names the
/// message on stderr, and exits 1 (the pool then sees a crash, never garbage).
pub(crate) async fn wire_unreadable_message_exits_1(cmd: &Cmd) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let mut command = cmd();
    let (child, channel) = forkyard_ipc::spawn_with::<Value, FromWorker<Value>>(
        forkyard_child::Child::builder(&mut command)
            .stderr(forkyard_child::Output::capture(64 << 10)),
        forkyard_ipc::Config::new().codec(Codec::JsonLines),
    )
    .unwrap();
    let (mut tx, mut rx) = channel.split();
    assert_eq!(next(&mut rx).await, FromWorker::Ready);
    tx.feed(&json!({"Task": {"id": 1, "req": {"WaitFile": release.to_str().unwrap()}}}))
        .await
        .unwrap();
    tx.feed(&json!({"Bogus": {"id": 2}})).await.unwrap();
    tx.flush().await.unwrap();
    std::fs::write(&release, b"").unwrap();
    assert_eq!(
        next(&mut rx).await,
        FromWorker::Done {
            id: 1,
            result: Ok(json!(true))
        }
    );
    drop((tx, rx));
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.exit.code(), Some(1), "{}", output.exit);
    let stderr = output.stderr.text();
    assert!(
        stderr.contains("does not know") && stderr.contains("Bogus"),
        "{stderr}"
    );
    base.assert_clean().await;
}

// ---- Python ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_answers_and_typed_errors() {
    answers_and_typed_errors(&python(&["async"]), "ValueError", Stack::Python).await;
    answers_and_typed_errors(&python(&["threads", "1"]), "ValueError", Stack::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_unicode_errors_keep_the_worker() {
    unicode_errors_keep_the_worker(&python(&["async"]), "ValueError").await;
    unicode_errors_keep_the_worker(&python(&["threads", "1"]), "ValueError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_crashes_fail_or_rerun() {
    crashes_fail_or_rerun(&python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hangs_time_out_and_are_replaced() {
    hangs_time_out_and_are_replaced(&python(&["threads", "1"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_garbage_is_a_protocol_error() {
    garbage_is_a_protocol_error(&python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_async_handlers_run_concurrently() {
    tasks_overlap(&python(&["async"]), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sync_handlers_run_on_a_thread_pool() {
    tasks_overlap(&python(&["threads", "4"]), 4).await;
}

/// `threads=1`: two tasks in flight on one worker still run one at a time:
/// the second enters the handler only once the first has left it. Each task
/// waits in the handler for its own file, released one at a time, and
/// answers the most tasks that were ever in the handler at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sync_handlers_run_one_at_a_time_by_default() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let pool = pool_of(&python(&["threads", "1"]))
        .workers(1)
        .max_in_flight_per_worker(2)
        .build()
        .await
        .unwrap();
    let peak = |p: &Path| Work::Peak(p.to_str().unwrap().into());
    let calls = [peak(&a), peak(&b)].map(|work| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call(work).await })
    });
    // Both tasks are on the worker, and one is in the handler.
    wait_for("both tasks sent to the worker", || {
        let workers = pool.stats().workers;
        match workers.as_slice() {
            [w] if w.in_flight == 2 => Ok(()),
            _ => Err(format!("{workers:?}")),
        }
    })
    .await;
    let is_started = |p: &Path| {
        let mut marker = p.as_os_str().to_owned();
        marker.push(".started");
        Path::new(&marker).exists()
    };
    wait_for("a task in the handler", || {
        if is_started(&a) || is_started(&b) {
            Ok(())
        } else {
            Err("none yet".into())
        }
    })
    .await;
    let (first, second) = if is_started(&a) { (&a, &b) } else { (&b, &a) };
    std::fs::write(first, b"").unwrap();
    started(second).await;
    std::fs::write(second, b"").unwrap();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            json!(1),
            "never two tasks in the handler at once"
        );
    }
    drain(pool).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drain_answers_tasks_in_flight() {
    drain_answers_tasks_in_flight(&python(&["async"])).await;
    drain_answers_tasks_in_flight(&python(&["threads", "3"])).await;
}

/// `pip install` of the package into a fresh venv (offline: no index, no
/// build isolation, the in-tree backend), then a worker that imports it from
/// there, not from the source tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_package_installs_with_pip_and_serves() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    run(std::process::Command::new("python3")
        .args(["-m", "venv", "--system-site-packages", "--without-pip"])
        .arg(&venv));
    let python = venv.join("bin/python");
    // --system-site-packages lends the venv the interpreter's own pip.
    run(std::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-index"])
        .args([
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .arg(PYTHON_DIR)
        .env("PIP_NO_INPUT", "1"));
    let pool = pool_of(&python_with(python.clone(), None, &["async"]))
        .workers(1)
        .build()
        .await
        .unwrap();
    let module = call(&pool, Work::Module).await.unwrap();
    let module = Path::new(module.as_str().unwrap());
    assert!(
        module.starts_with(&venv),
        "imported from the venv: {}",
        module.display()
    );
    assert_eq!(
        call(&pool, Work::Echo(json!([1]))).await.unwrap(),
        json!([1])
    );
    drain(pool).await;
    drop(dir);
    base.assert_clean().await;
}

/// Runs a setup command to its end; panics with its output if it fails.
fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The old example script (`python/pool_worker.py`, now a shim over the
/// package) still serves the fixture's `Job` requests, one at a time, as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_worker_script_still_serves_jobs() {
    let base = Baseline::take().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pool_worker.py");
    let pool = Pool::<Job, u64>::builder()
        .command(move || {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg(script).env_remove("PYTHONPATH");
            cmd
        })
        .codec(Codec::JsonLines)
        .workers(2)
        .build()
        .await
        .unwrap();
    assert_eq!(pool.call(Job::Echo(42)).await.unwrap(), 42);
    assert_eq!(pool.call(Job::Sleep { ms: 5, value: 7 }).await.unwrap(), 7);
    match pool.call(Job::Fail("bad input".into())).await {
        Err(PoolError::Task(error)) => assert_eq!(error.to_string(), "ValueError: bad input"),
        other => panic!("expected a task error, got {other:?}"),
    }
    match pool.call(Job::Crash).await {
        Err(PoolError::WorkerCrashed { exit, .. }) => {
            assert_eq!(exit.signal(), Some(forkyard_child::Signal::ABRT))
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    // Many in flight: every answer comes back to its caller.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(Job::Echo(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    // The crashed worker's replacement must be up before the drain, or the
    // shutdown kills it while it is still starting.
    crate::support::wait_full(&pool, 2).await;
    let report = pool
        .shutdown(ShutdownMode::Drain {
            grace: Duration::from_secs(10),
        })
        .await;
    assert!(report.workers.iter().all(|w| w.exit.success()));
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_chunks_answer_every_item_once() {
    wire_chunks_answer_every_item_once(&python(&["async"]), "ValueError", true).await;
    wire_chunks_answer_every_item_once(&python(&["threads", "2"]), "ValueError", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_chunk_results_go_out_before_a_crash() {
    wire_chunk_results_go_out_before_a_crash(&python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_stops_async_handlers() {
    wire_cancel_stops_async_work(&python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_with_sync_handlers_stops_only_what_has_not_started() {
    wire_cancel_in_threads(&python(&["threads", "1"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drain_on_the_wire_answers_tasks_in_flight() {
    wire_drain_answers_tasks_in_flight(&python(&["async"])).await;
    wire_drain_answers_tasks_in_flight(&python(&["threads", "2"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_unreadable_message_is_named_and_exits_1() {
    wire_unreadable_message_exits_1(&python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_map_answers_each_item() {
    map_answers_each_item(&python(&["async"]), "ValueError").await;
    map_answers_each_item(&python(&["threads", "1"]), "ValueError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_map_streams_finished_items_while_one_waits() {
    map_streams_finished_items_while_one_waits(&python(&["async"])).await;
    map_streams_finished_items_while_one_waits(&python(&["threads", "1"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_map_reruns_only_unanswered_items_after_a_crash() {
    map_reruns_only_unanswered_items_after_a_crash(&python(&["async"])).await;
}

/// An async handler is cancelled at its `await` (`CancelledError`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_stops_a_running_async_handler() {
    cancel_stops_a_running_handler(&python(&["async"])).await;
}

/// A sync handler in a thread cannot be stopped; nor can an async one that
/// swallows `CancelledError`: the pool's grace, then a new worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_kills_handlers_that_cannot_stop() {
    cancel_kills_a_handler_that_goes_on(&python(&["async"])).await;
    cancel_kills_a_handler_that_goes_on(&python(&["threads", "1"])).await;
}
