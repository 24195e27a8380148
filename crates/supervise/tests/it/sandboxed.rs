//! A supervised service under forkyard-secure: each start is a sandboxed, audited run of
//! one policy's program, made by `SecureCommand::into_launch`.

use std::time::Duration;

use forkyard_secure::audit::{self, AuditLog};
use forkyard_secure::{Layout, Limits, Policy, ProgramRule, Sandbox, Value};
use forkyard_supervise::{Backoff, ChildSpec, EventKind, Supervisor};

use crate::Watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_service_is_restarted_with_backoff_and_the_audit_log_has_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let policy = Policy::builder()
        .program(
            "service",
            ProgramRule::path(forkyard_testkit::fixture_path())
                .operands(Value::text())
                .layout(Layout::AsGiven),
        )
        .limits(Limits::default())
        .sandbox(Sandbox::strict())
        .audit(AuditLog::open(&log).unwrap())
        .build()
        .unwrap();
    // A service that crashes as soon as it starts.
    let builder = Supervisor::builder().child(
        ChildSpec::new("service", move || {
            policy
                .command("service", ["exit-with", "3"])
                .expect("the policy allows it")
                .into_launch()
        })
        .backoff(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        )),
    );
    let mut watch = Watch::new(builder.subscribe());
    let sup = crate::bounded(builder.start()).await.expect("start");
    // Two restarts, each after a backoff that grows.
    let mut delays = Vec::new();
    while delays.len() < 2 {
        let event = watch
            .child("service", "a restart", |k| {
                matches!(k, EventKind::Restarting { .. })
            })
            .await;
        if let EventKind::Restarting { after, .. } = event.kind {
            delays.push(after);
        }
    }
    assert!(delays[1] > delays[0], "backoff grows: {delays:?}");
    crate::bounded(sup.shutdown()).await.unwrap();
    watch.stopped().await;

    let verification = audit::verify(&log).unwrap();
    assert!(verification.is_intact(), "{:?}", verification.findings);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exits: Vec<_> = records.iter().filter(|r| r["kind"] == "exit").collect();
    let decisions = records.iter().filter(|r| r["kind"] == "decision").count();
    // Every start was decided and every run recorded: at least the two crashed runs
    // the restarts above followed (a third may have started before the shutdown).
    assert!(exits.len() >= 2, "{records:#?}");
    assert_eq!(decisions, exits.len(), "{records:#?}");
    for exit in &exits[..2] {
        assert_eq!(exit["cause"], "exit", "{exit}");
        assert_eq!(exit["code"], 3, "{exit}");
        let applied = exit["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["status"] == "applied")
            .count();
        assert!(
            applied >= 5,
            "the layers are confirmed in the record: {exit}"
        );
    }
}
