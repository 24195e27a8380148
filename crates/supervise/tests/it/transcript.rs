//! The event transcript of a real crash loop, pids and run times redacted.

use std::time::Duration;

use forkyard_supervise::{Backoff, ChildSpec, EventKind, Supervisor};

use crate::{Watch, assert_all_dead, fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_transcript() {
    let builder = Supervisor::builder()
        .intensity(4, Duration::from_secs(60))
        .seed(1)
        .child(ChildSpec::new("steady", || fixture(&["hang"])))
        .child(
            ChildSpec::new("crashy", || fixture(&["exit-with", "7"])).backoff(
                Backoff::exponential(Duration::from_millis(10), Duration::from_millis(40))
                    .jitter(0.0),
            ),
        );
    let mut watch = Watch::new(builder.subscribe());
    let sup = builder.spawn().unwrap();
    let err = crate::bounded(sup.wait()).await.expect_err("gives up");
    watch.stopped().await;
    let transcript = watch
        .seen
        .iter()
        .map(|e| {
            format!(
                "{}/{}: {}",
                e.supervisor,
                e.child.as_deref().unwrap_or("*"),
                e.kind
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::with_settings!({filters => vec![
        (r"pid \d+", "pid [pid]"),
        (r"after \d+(\.\d+)?(us|ms|s)\b", "after [uptime]"),
    ]}, {
        insta::assert_snapshot!(format!("{transcript}\n\nresult: {err}"));
    });
    assert!(
        watch
            .seen
            .iter()
            .all(|e| !matches!(e.kind, EventKind::Lagged { .. }))
    );
    assert_all_dead(&watch.pids());
}
