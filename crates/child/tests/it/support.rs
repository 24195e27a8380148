//! Shared helpers: fixtures as `Command`s and the leak check every test ends with.

use std::process::Command;
use std::time::Duration;

use forkyard_child::{Child, Input, Output};
use forkyard_testkit as tk;

/// How long a condition may take on a loaded CI machine before a test fails.
pub(crate) const DEADLINE: Duration = tk::DEADLINE;

pub(crate) fn fixture(sub: &str, args: &[&str]) -> Command {
    let mut cmd = tk::fixture(sub);
    cmd.args(args);
    cmd
}

/// Spawns a fixture with stdout streamed as lines, and waits for its `ready` line.
/// Returns the child and the lines before `ready`.
pub(crate) async fn spawn_ready(cmd: &mut Command) -> (Child, Vec<String>) {
    let mut child = Child::builder(cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .expect("spawn fixture");
    let lines = read_until_ready(&mut child).await;
    (child, lines)
}

pub(crate) async fn read_until_ready(child: &mut Child) -> Vec<String> {
    let mut before = Vec::new();
    let wait = async {
        while let Some(line) = child.next_line().await {
            let text = line.text().into_owned();
            if text.starts_with("ready") {
                return;
            }
            before.push(text);
        }
        panic!("fixture ended before printing `ready`; got {before:?}");
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("fixture did not become ready in time");
    before
}

pub(crate) use forkyard_testkit::{Baseline, wait_for};

pub(crate) use forkyard_testkit::cgroup_parent;
