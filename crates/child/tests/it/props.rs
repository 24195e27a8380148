//! A property: any sequence of spawn / stop / kill / drop / wait ends every child
//! and leaves no process or fd behind.

use std::time::Duration;

use forkyard_child::{Child, Input, Output};
use forkyard_testkit as tk;
use proptest::prelude::*;

use crate::support::{Baseline, DEADLINE, fixture, read_until_ready};

#[derive(Debug, Clone)]
enum Op {
    /// Spawn a fixture of this kind.
    Spawn(Kind),
    /// Stop child `n % live` with a short grace.
    Stop(usize),
    /// Kill child `n % live`.
    Kill(usize),
    /// Drop child `n % live` without waiting.
    Drop(usize),
    /// Wait for child `n % live` if it exits by itself.
    Wait(usize),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Exit,
    Hang,
    IgnoreTerm,
    Tree,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![Just(Kind::Exit), Just(Kind::Hang), Just(Kind::IgnoreTerm), Just(Kind::Tree)].prop_map(Op::Spawn),
        1 => any::<usize>().prop_map(Op::Stop),
        1 => any::<usize>().prop_map(Op::Kill),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Wait),
    ]
}

async fn spawn(kind: Kind) -> (Child, Vec<u32>, bool) {
    let (mut cmd, exits_alone) = match kind {
        Kind::Exit => (fixture("exit-with", &["7"]), true),
        Kind::Hang => (fixture("hang", &[]), false),
        Kind::IgnoreTerm => (fixture("ignore-sigterm", &[]), false),
        Kind::Tree => (fixture("grandchild", &["--children", "1"]), false),
    };
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()
        .unwrap();
    let mut pids = vec![child.id()];
    if !exits_alone {
        pids.extend(tk::parse_pids(
            &read_until_ready(&mut child).await.join("\n"),
        ));
    }
    (child, pids, exits_alone)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn every_child_ends_and_nothing_is_left(ops in proptest::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let base = Baseline::take().await;
            let mut live: Vec<(Child, Vec<u32>, bool)> = Vec::new();
            let mut all_pids = Vec::new();
            for op in ops {
                match op {
                    Op::Spawn(kind) => {
                        let spawned = spawn(kind).await;
                        all_pids.extend(spawned.1.iter().copied());
                        live.push(spawned);
                    }
                    Op::Stop(n) | Op::Kill(n) | Op::Drop(n) | Op::Wait(n) if !live.is_empty() => {
                        let (mut child, pids, exits_alone) = live.remove(n % live.len());
                        match op {
                            Op::Stop(_) => { child.stop(Duration::from_millis(100)).await.unwrap(); }
                            Op::Kill(_) => { child.kill().await.unwrap(); }
                            Op::Drop(_) => {}
                            Op::Wait(_) if exits_alone => { assert_eq!(child.wait().await.unwrap().code(), Some(7)); }
                            Op::Wait(_) => { live.push((child, pids, exits_alone)); continue; }
                            Op::Spawn(_) => unreachable!(),
                        }
                        drop(child);
                        tk::wait_all_dead(&pids, DEADLINE).unwrap();
                    }
                    _ => {}
                }
            }
            drop(live);
            tk::wait_all_dead(&all_pids, DEADLINE).unwrap();
            base.assert_clean().await;
        });
    }
}
