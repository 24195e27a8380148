//! The exit matrix: how each ending is handled under each restart type.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use forkyard_supervise::{Backoff, ChildSpec, EventKind, Restart, Supervisor};
use rustix::process::Signal;

use crate::{Watch, assert_all_dead, fixture, kill};

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The first instance runs this fixture.
    Runs(&'static [&'static str]),
    /// The first instance hangs and the test sends it this signal.
    Killed(Signal),
}

/// Runs one child whose first instance ends as told and whose later instances hang; returns
/// whether the supervisor restarted it.
async fn restarted(ending: Ending, restart: Restart) -> bool {
    let starts = Arc::new(AtomicUsize::new(0));
    let counter = starts.clone();
    let spec = ChildSpec::new("w", move || {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        match (first, ending) {
            (true, Ending::Runs(args)) => fixture(args),
            _ => fixture(&["hang"]),
        }
    })
    .restart(restart)
    .clean_exit_codes([0, 3])
    .backoff(Backoff::none());
    let builder = Supervisor::builder().child(spec);
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    let first = watch
        .child("w", "first spawn", |k| {
            matches!(k, EventKind::Spawned { .. })
        })
        .await;
    if let (Ending::Killed(signal), EventKind::Spawned { pid }) = (ending, &first.kind) {
        kill(*pid, signal);
    }
    watch
        .child("w", "its exit", |k| matches!(k, EventKind::Exited { .. }))
        .await;
    let decision = watch
        .child("w", "restart or down", |k| {
            matches!(k, EventKind::Restarting { .. } | EventKind::Down { .. })
        })
        .await;
    let restarted = matches!(decision.kind, EventKind::Restarting { .. });
    if restarted {
        watch
            .child("w", "second spawn", |k| {
                matches!(k, EventKind::Spawned { .. })
            })
            .await;
    }
    crate::bounded(sup.shutdown()).await.expect("shutdown");
    watch.stopped().await;
    assert_all_dead(&watch.pids());
    restarted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_matrix_by_restart_type() {
    let endings = [
        ("exit 0", Ending::Runs(&["exit-with", "0"])),
        ("exit 3 (listed clean)", Ending::Runs(&["exit-with", "3"])),
        ("exit 1 (unlisted)", Ending::Runs(&["exit-with", "1"])),
        ("SIGSEGV", Ending::Runs(&["crash", "segv"])),
        ("external SIGTERM", Ending::Killed(Signal::TERM)),
        ("external SIGKILL", Ending::Killed(Signal::KILL)),
    ];
    let mut got = Vec::new();
    for (name, ending) in endings {
        let mut row = format!("{name:<22}");
        for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
            let r = restarted(ending, restart).await;
            row.push_str(&format!(
                " {restart}={}",
                if r { "restart" } else { "down" }
            ));
        }
        got.push(row);
    }
    let want = [
        "exit 0                 permanent=restart transient=down temporary=down",
        "exit 3 (listed clean)  permanent=restart transient=down temporary=down",
        "exit 1 (unlisted)      permanent=restart transient=restart temporary=down",
        "SIGSEGV                permanent=restart transient=restart temporary=down",
        "external SIGTERM       permanent=restart transient=down temporary=down",
        "external SIGKILL       permanent=restart transient=restart temporary=down",
    ];
    assert_eq!(got, want);
}
