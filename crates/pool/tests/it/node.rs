//! Workers in Node on the `forkyard-pool` module (`crates/pool/node`), over the
//! JSON-lines codec: the scenarios of `python.rs`, run against
//! `node/test/worker.js` with the machine's `node`.

use std::process::Command;
use std::sync::Arc;

use serde_json::json;

use crate::python::{
    Cmd, Stack, Work, answers_and_typed_errors, cancel_kills_a_handler_that_goes_on,
    cancel_stops_a_running_handler, crashes_fail_or_rerun, drain_answers_tasks_in_flight,
    garbage_is_a_protocol_error, hangs_time_out_and_are_replaced, map_answers_each_item,
    map_reruns_only_unanswered_items_after_a_crash, map_streams_finished_items_while_one_waits,
    pool_of, tasks_overlap, unicode_errors_keep_the_worker, wire_cancel_stops_async_work,
    wire_chunk_results_go_out_before_a_crash, wire_chunks_answer_every_item_once,
    wire_drain_answers_tasks_in_flight, wire_unreadable_message_exits_1,
};
use crate::support::Baseline;

const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node");

/// `node node/test/worker.js`, loading the module from `module` (default:
/// the source directory).
fn node_with(module: Option<std::path::PathBuf>) -> Cmd {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/test/worker.js");
    Arc::new(move || {
        let mut cmd = Command::new("node");
        cmd.arg(script);
        cmd.env_remove("NODE_OPTIONS");
        match &module {
            Some(path) => cmd.env("FORKYARD_POOL_NODE_MODULE", path),
            None => cmd.env_remove("FORKYARD_POOL_NODE_MODULE"),
        };
        cmd
    })
}

fn node() -> Cmd {
    node_with(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_answers_and_typed_errors() {
    answers_and_typed_errors(&node(), "TypeError", Stack::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_unicode_errors_keep_the_worker() {
    unicode_errors_keep_the_worker(&node(), "TypeError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_crashes_fail_or_rerun() {
    crashes_fail_or_rerun(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_hangs_time_out_and_are_replaced() {
    hangs_time_out_and_are_replaced(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_garbage_is_a_protocol_error() {
    garbage_is_a_protocol_error(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_async_handlers_run_concurrently() {
    tasks_overlap(&node(), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_answers_tasks_in_flight() {
    drain_answers_tasks_in_flight(&node()).await;
    wire_drain_answers_tasks_in_flight(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_chunks_answer_every_item_once() {
    wire_chunks_answer_every_item_once(&node(), "TypeError", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_chunk_results_go_out_before_a_crash() {
    wire_chunk_results_go_out_before_a_crash(&node()).await;
}

/// The handler's `AbortSignal` aborts on `Cancel`: a handler that honours it
/// answers `Cancelled`; a chunk starts none of its remaining items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cancel_aborts_the_handlers_signal() {
    wire_cancel_stops_async_work(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_unreadable_message_is_named_and_exits_1() {
    wire_unreadable_message_exits_1(&node()).await;
}

/// `npm install` of the module from its directory into a fresh project
/// (offline: a local folder needs no registry), then a worker that loads it
/// from that project's `node_modules`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_module_installs_with_npm_and_serves() {
    let base = Baseline::take().await;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("app");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"app","private":true}"#,
    )
    .unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            "--install-links",
        ])
        .args(["--cache", dir.path().join("npm-cache").to_str().unwrap()])
        .arg(NODE_DIR)
        .current_dir(&project)
        .env("npm_config_update_notifier", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "npm install: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = project.join("node_modules/forkyard-pool");
    assert!(
        !installed.is_symlink(),
        "a copy, as from a registry, not a link"
    );
    let pool = pool_of(&node_with(Some(installed.clone())))
        .workers(1)
        .build()
        .await
        .unwrap();
    let module = pool.call(Work::Module).await.unwrap();
    let module = std::path::PathBuf::from(module.as_str().unwrap());
    assert!(
        module.starts_with(&installed),
        "loaded from the install: {}",
        module.display()
    );
    assert_eq!(
        pool.call(Work::Echo(json!({"a": 1}))).await.unwrap(),
        json!({"a": 1})
    );
    pool.shutdown(forkyard_pool::ShutdownMode::Drain {
        grace: std::time::Duration::from_secs(10),
    })
    .await;
    drop(dir);
    base.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_map_answers_each_item() {
    map_answers_each_item(&node(), "TypeError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_map_streams_finished_items_while_one_waits() {
    map_streams_finished_items_while_one_waits(&node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_map_reruns_only_unanswered_items_after_a_crash() {
    map_reruns_only_unanswered_items_after_a_crash(&node()).await;
}

/// A handler that rejects when its signal aborts answers `Cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cancel_stops_a_handler_that_honours_its_signal() {
    cancel_stops_a_running_handler(&node()).await;
}

/// A handler that ignores its signal: the pool's grace, then a new worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cancel_kills_a_handler_that_ignores_its_signal() {
    cancel_kills_a_handler_that_goes_on(&node()).await;
}
