//! `Launch`: an owned description of a start, storable and sendable, with hooks
//! run after the spawn and after the exit.

use std::sync::{Arc, Mutex};

use forkyard_child::{Error, Launch};
use forkyard_testkit as tk;

use crate::support::{Baseline, DEADLINE, fixture};

/// A factory, as a pool or a supervisor keeps one: a fresh `Launch` per start.
fn factory(log: Arc<Mutex<Vec<String>>>) -> impl Fn() -> Launch + Send + Sync + 'static {
    move || {
        let (a, b, c) = (log.clone(), log.clone(), log.clone());
        Launch::new(fixture("exit-with", &["3"]))
            .on_spawn(move |child| a.lock().unwrap().push(format!("spawned {}", child.id())))
            .on_spawn(move |_| b.lock().unwrap().push("second hook".into()))
            .on_exit(move |exit| c.lock().unwrap().push(format!("exit {:?}", exit.code())))
    }
}

#[tokio::test]
async fn a_launch_is_made_anywhere_spawned_elsewhere_and_its_hooks_run_once_in_order() {
    let base = Baseline::take().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let make = factory(log.clone());
    for round in 0..2 {
        // Made on one task, spawned on another: a Launch is Send.
        let launch = make();
        let mut child = tokio::spawn(async move { launch.spawn() })
            .await
            .unwrap()
            .unwrap();
        let exit = child.wait().await.unwrap();
        assert_eq!(exit.code(), Some(3));
        // A second wait returns the same exit and runs no hook again.
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        let got = std::mem::take(&mut *log.lock().unwrap());
        assert_eq!(
            got,
            [
                format!("spawned {}", child.id()),
                "second hook".to_string(),
                "exit Some(3)".to_string()
            ],
            "round {round}"
        );
    }
    base.assert_clean().await;
}

#[tokio::test]
async fn a_panicking_on_spawn_hook_fails_the_spawn_and_ends_the_child() {
    let base = Baseline::take().await;
    let pid = Arc::new(Mutex::new(None));
    let seen = pid.clone();
    let result = Launch::new(fixture("hang", &[]))
        .on_spawn(move |child| {
            *seen.lock().unwrap() = Some(child.id());
            panic!("the hook refuses");
        })
        .spawn();
    match result {
        Err(Error::Hook { message, .. }) => assert_eq!(message, "the hook refuses"),
        other => panic!("expected a hook error, got {other:?}"),
    }
    let pid = pid.lock().unwrap().expect("the hook saw the child");
    tk::wait_all_dead(&[pid], DEADLINE).unwrap();
    base.assert_clean().await;
}

#[tokio::test]
async fn the_builder_is_the_same_options_over_a_borrowed_command() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let mut cmd = fixture("exit-with", &["5"]);
    let mut child = forkyard_child::Child::builder(&mut cmd)
        .on_exit(move |exit| seen.lock().unwrap().push(exit.code()))
        .spawn()
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(5));
    assert_eq!(*log.lock().unwrap(), [Some(5)]);
}
