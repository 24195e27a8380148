//! What a user sees: tracing events for each lifecycle step, and error messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkyard_pool::{PoolError, ShutdownMode};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::job::Job;
use crate::support::{Baseline, builder};

/// Collects each event as `message field=value ...` (fields sorted).
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

struct Fields(Vec<(String, String)>, String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = format!("{value:?}");
        } else {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Vec::new(), String::new());
        event.record(&mut fields);
        fields.0.sort();
        let names: Vec<String> = fields.0.iter().map(|(k, _)| k.clone()).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("{} [{}]", fields.1, names.join(",")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_step_is_a_tracing_event_with_worker_pid_and_task() {
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry()
        .with(collect.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let base = Baseline::take().await;
    let pool = builder(&[])
        .workers(1)
        .recycle_after_tasks(2)
        .build()
        .await
        .unwrap();
    pool.call(Job::Echo(1)).await.unwrap();
    assert!(matches!(
        pool.call(Job::Crash).await,
        Err(PoolError::WorkerCrashed { .. })
    ));
    pool.call(Job::Echo(2)).await.unwrap();
    pool.call(Job::Echo(3)).await.unwrap();
    pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(10),
    })
    .await;
    base.assert_clean().await;
    let seen = collect.0.lock().unwrap().clone();
    for expected in [
        "worker spawned [pid,restart,worker]",
        "worker ready [pid,worker]",
        "task dispatched [pid,task,worker]",
        "worker crashed [exit,pid,worker]",
        "recycling worker [pid,reason,worker]",
        "pool shutting down [mode,queued,running]",
        "pool shut down [tasks]",
    ] {
        assert!(
            seen.iter().any(|e| e == expected),
            "no `{expected}` event in {seen:#?}"
        );
    }
}

#[test]
fn error_messages() {
    let errors = [
        PoolError::TimedOut {
            after: Duration::from_secs(30),
        },
        PoolError::Cancelled,
        PoolError::QueueFull,
        PoolError::ShuttingDown,
        PoolError::Task("bad input".into()),
        PoolError::Protocol(Arc::new(Plain(
            "reply for task 7, which it was not running",
        ))),
        PoolError::Unavailable(Arc::new(std::io::Error::other(Plain("program not found")))),
    ];
    // Each with its causes, as `{:#}` shows them.
    let messages: Vec<String> = errors.iter().map(|e| crate::support::chain(e)).collect();
    insta::assert_debug_snapshot!(messages);
}

/// A cause with just a message.
#[derive(Debug)]
struct Plain(&'static str);

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Plain {}
