//! Workers in Python on the `forkyard_pool` package (`crates/pool/python`),
//! over the JSON-lines codec: same pool, same guarantees.
//!
//! The scenarios are written once here for any worker that serves [`Work`]
//! (`python/tests/worker.py`, `node/test/worker.js`); `node.rs` runs them
//! against Node.

use std::path::Path;
use std::time::Duration;

use forkyard_ipc::Codec;
use forkyard_pool::{Builder, Outcome, Pool, PoolError, ShutdownMode};
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
    /// other name through the package's `TaskError`.
    Fail { kind: String, message: String },
    /// A barrier: waits until `n` tasks are in the handler at once on this
    /// worker, then answers `n`; a task that waits longer than `within_ms`
    /// leaves and fails with `TimeoutError: k of n tasks ran at once` (so a
    /// worker running tasks one at a time fails it: evidence of overlap
    /// without measuring time).
    Meet { n: u64, within_ms: u64 },
    /// Waits (up to 20 s) until the file exists; answers whether it does.
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
    /// Answers the worker's pid.
    Pid,
    /// Answers where the worker package was loaded from.
    Module,
}

pub(crate) type WorkPool = Pool<Work, Value>;

/// The package's source directory, put on `PYTHONPATH` by the tests that run
/// it uninstalled.
const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// A pool of `python3 python/tests/worker.py <mode...>` workers, the package
/// taken from the source tree.
fn python(mode: &'static [&'static str]) -> Builder<Work, Value> {
    python_with("python3", Some(PYTHON_DIR), mode)
}

fn python_with(
    interpreter: &str,
    pythonpath: Option<&'static str>,
    mode: &'static [&'static str],
) -> Builder<Work, Value> {
    let interpreter = interpreter.to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/tests/worker.py");
    Pool::<Work, Value>::builder()
        .command(move || {
            let mut cmd = std::process::Command::new(&interpreter);
            cmd.arg(script).args(mode);
            cmd.env_remove("PYTHONPATH");
            if let Some(path) = pythonpath {
                cmd.env("PYTHONPATH", path);
            }
            cmd
        })
        .codec(Codec::JsonLines)
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
    match result {
        Err(PoolError::Task(message)) => message,
        other => panic!("expected a task error, got {other:?}"),
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

/// Answers of any JSON shape; errors come back typed (`Kind: message`) as
/// `PoolError::Task`, not as a crash, and the worker lives on.
pub(crate) async fn answers_and_typed_errors(builder: Builder<Work, Value>, builtin: &str) {
    let base = Baseline::take().await;
    let pool = builder.workers(1).build().await.unwrap();
    let first = pid(&pool).await;
    let value = json!({"name": "ünïcode", "list": [1, 2.5, null, true], "nested": {"a": "b"}});
    assert_eq!(call(&pool, Work::Echo(value.clone())).await.unwrap(), value);
    assert_eq!(
        call(&pool, Work::Echo(json!(u64::MAX))).await.unwrap(),
        json!(u64::MAX)
    );
    assert_eq!(
        task_error(call(&pool, fail(builtin, "bad input")).await),
        format!("{builtin}: bad input")
    );
    assert_eq!(
        task_error(call(&pool, fail("Refused", "not today")).await),
        "Refused: not today"
    );
    assert_eq!(
        task_error(call(&pool, fail("NotFound", "no such user")).await),
        "NotFound: no such user"
    );
    let unserializable = task_error(call(&pool, Work::Unserializable).await);
    assert!(
        unserializable.starts_with("TypeError: the response is not JSON"),
        "{unserializable}"
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
        Some(&4)
    );
    drain(pool).await;
    base.assert_clean().await;
}

/// A worker that dies mid-task fails that task with `WorkerCrashed` (its
/// exit says how), or re-runs it when it has retries left; never loses it.
pub(crate) async fn crashes_fail_or_rerun(builder: Builder<Work, Value>) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = builder.workers(2).retries(1).build().await.unwrap();
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
pub(crate) async fn hangs_time_out_and_are_replaced(builder: Builder<Work, Value>) {
    let base = Baseline::take().await;
    let pool = builder
        .workers(1)
        .task_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let before = pid(&pool).await;
    match call(&pool, Work::Hang).await {
        Err(PoolError::TimedOut { after }) => assert_eq!(after, Duration::from_secs(1)),
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
pub(crate) async fn garbage_is_a_protocol_error(builder: Builder<Work, Value>) {
    let base = Baseline::take().await;
    let pool = builder.workers(1).build().await.unwrap();
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
pub(crate) async fn tasks_overlap(builder: Builder<Work, Value>, n: u64) {
    let base = Baseline::take().await;
    let pool = builder
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
pub(crate) async fn drain_answers_tasks_in_flight(builder: Builder<Work, Value>) {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let pool = builder
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

// ---- Python ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_answers_and_typed_errors() {
    answers_and_typed_errors(python(&["async"]), "ValueError").await;
    answers_and_typed_errors(python(&["threads", "1"]), "ValueError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_crashes_fail_or_rerun() {
    crashes_fail_or_rerun(python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hangs_time_out_and_are_replaced() {
    hangs_time_out_and_are_replaced(python(&["threads", "1"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_garbage_is_a_protocol_error() {
    garbage_is_a_protocol_error(python(&["async"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_async_handlers_run_concurrently() {
    tasks_overlap(python(&["async"]), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sync_handlers_run_on_a_thread_pool() {
    tasks_overlap(python(&["threads", "4"]), 4).await;
}

/// `threads=1`: two tasks in flight on one worker still run one at a time,
/// so neither sees the other in the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sync_handlers_run_one_at_a_time_by_default() {
    let base = Baseline::take().await;
    let pool = python(&["threads", "1"])
        .workers(1)
        .max_in_flight_per_worker(2)
        .build()
        .await
        .unwrap();
    let meet = || Work::Meet {
        n: 2,
        within_ms: 200,
    };
    let (a, b) = tokio::join!(pool.call(meet()), pool.call(meet()));
    for result in [a, b] {
        assert_eq!(task_error(result), "TimeoutError: 1 of 2 tasks ran at once");
    }
    drain(pool).await;
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drain_answers_tasks_in_flight() {
    drain_answers_tasks_in_flight(python(&["async"])).await;
    drain_answers_tasks_in_flight(python(&["threads", "3"])).await;
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
    let pool = python_with(python.to_str().unwrap(), None, &["async"])
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
        Err(PoolError::Task(message)) => assert_eq!(message, "ValueError: bad input"),
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
