//! The pool-size sweep: one row per size, and the knee rule.

use forkyard_perf::{Sweep, SweepConfig, sweep};

use crate::job::Job;
use crate::support::{Baseline, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_measures_every_size_and_leaves_nothing_behind() {
    let base = Baseline::take().await;
    let s = sweep(SweepConfig::new(1..=3, 200), builder, |i| Job::Slow {
        key: i,
        ms: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        s.rows.iter().map(|r| r.workers).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        s.rows
            .iter()
            .all(|r| r.errors == 0 && r.calls_per_sec > 0.0)
    );
    assert!((1..=3).contains(&s.knee));
    assert!(s.to_string().contains("knee"));
    base.assert_clean().await;
}

#[test]
fn the_knee_is_the_smallest_size_within_ten_percent_of_the_best() {
    let rows = |tps: &[f64]| -> Vec<forkyard_perf::SweepRow> {
        tps.iter()
            .enumerate()
            .map(|(i, &t)| forkyard_perf::SweepRow::new(i + 1, t, 1, 1))
            .collect()
    };
    for (tps, knee) in [
        (&[100.0, 195.0, 198.0, 190.0][..], 2),
        (&[100.0, 200.0, 300.0, 400.0][..], 4),
        (&[100.0, 95.0, 90.0][..], 1),
        (&[100.0, 170.0, 185.0][..], 2),
        (&[100.0, 160.0, 185.0][..], 3),
    ] {
        assert_eq!(Sweep::knee_of(&rows(tps)), knee, "{tps:?}");
    }
}
