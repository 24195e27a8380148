//! Alert rules: a condition, a duration, and the pending -> firing ->
//! resolved life cycle of Prometheus's alerting rules.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What an alert rule watches. Each condition reads one figure of a pool or a
/// supervisor at every evaluation (every sample of the monitor).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Condition {
    /// A pool's failed tasks per second (every kind, over the last complete
    /// second) above `per_sec`.
    ErrorRateAbove {
        /// The threshold.
        per_sec: f64,
    },
    /// A pool's 99th percentile queue wait (over the last complete second)
    /// above `ms` milliseconds.
    QueueWaitP99Above {
        /// The threshold, in milliseconds.
        ms: f64,
    },
    /// More than `restarts` restarts within the last minute: a pool's
    /// replacement workers, or a supervisor's child restarts.
    RestartsPerMinuteAbove {
        /// The threshold.
        restarts: u64,
    },
    /// A circuit breaker is open: a pool that cannot start workers (degraded),
    /// or a supervised child whose breaker is open.
    BreakerOpen,
    /// A pool worker's resident memory above `bytes`.
    WorkerRssAbove {
        /// The threshold, in bytes.
        bytes: u64,
    },
}

impl Condition {
    /// The figure this condition reads from `obs` and whether it holds, or
    /// `None` when the subject has no such figure (a supervisor has no queue).
    pub(crate) fn eval(&self, obs: &Observation) -> Option<(bool, f64)> {
        match *self {
            Condition::ErrorRateAbove { per_sec } => obs.error_rate.map(|v| (v > per_sec, v)),
            Condition::QueueWaitP99Above { ms } => obs.queue_wait_p99_ms.map(|v| (v > ms, v)),
            Condition::RestartsPerMinuteAbove { restarts } => {
                obs.restarts_last_minute.map(|v| (v > restarts, v as f64))
            }
            Condition::BreakerOpen => obs.breaker_open.map(|v| (v, if v { 1.0 } else { 0.0 })),
            Condition::WorkerRssAbove { bytes } => {
                obs.max_worker_rss.map(|v| (v > bytes, v as f64))
            }
        }
    }

    /// The rule's expression in words, as shown on the page.
    pub fn describe(&self) -> String {
        match *self {
            Condition::ErrorRateAbove { per_sec } => format!("errors/s > {per_sec}"),
            Condition::QueueWaitP99Above { ms } => format!("p99 queue wait > {ms} ms"),
            Condition::RestartsPerMinuteAbove { restarts } => {
                format!("restarts in the last minute > {restarts}")
            }
            Condition::BreakerOpen => "breaker open".to_owned(),
            Condition::WorkerRssAbove { bytes } => {
                format!("worker RSS > {:.1} MiB", bytes as f64 / (1 << 20) as f64)
            }
        }
    }
}

/// An alerting rule: `condition` must hold at every evaluation for at least
/// `for_duration` before the alert fires (Prometheus's `for:`); until then it
/// is pending. It resolves at the first evaluation where the condition no
/// longer holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AlertRule {
    /// The rule's name (`alertname` in notifications), e.g. `HighErrorRate`.
    pub name: String,
    /// What it watches.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for_secs", serialize_with = "secs")]
    pub for_duration: Duration,
    /// Only this pool or supervisor (by name); every one when `None`.
    pub only: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl AlertRule {
    /// A rule that fires as soon as `condition` holds (a `for` of zero); see
    /// [`for_duration`](Self::for_duration).
    pub fn new(name: impl Into<String>, condition: Condition) -> AlertRule {
        AlertRule {
            name: name.into(),
            condition,
            for_duration: Duration::ZERO,
            only: None,
        }
    }

    /// How long the condition must hold before the alert fires.
    pub fn for_duration(mut self, d: Duration) -> AlertRule {
        self.for_duration = d;
        self
    }

    /// Watch only the pool or supervisor named `name`.
    pub fn only(mut self, name: impl Into<String>) -> AlertRule {
        self.only = Some(name.into());
        self
    }
}

/// The figures one subject (a pool or a supervisor) offers the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Observation {
    pub(crate) error_rate: Option<f64>,
    pub(crate) queue_wait_p99_ms: Option<f64>,
    pub(crate) restarts_last_minute: Option<u64>,
    pub(crate) breaker_open: Option<bool>,
    pub(crate) max_worker_rss: Option<u64>,
}

/// Where one alert (a rule on one subject) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, for less than the rule's duration so far.
    Pending,
    /// The condition has held for at least the rule's duration.
    Firing,
}

/// What one evaluation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Inactive -> pending.
    Pending,
    /// Pending (or inactive, with a zero duration) -> firing: notify.
    Fired,
    /// Pending -> inactive before it fired: nothing is sent (as in Prometheus).
    Cancelled,
    /// Firing -> inactive: notify that it resolved.
    Resolved,
}

/// The life cycle of one alert, as a pure state machine over evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracker {
    pub(crate) state: AlertState,
    /// Since when the condition has held (pending or firing).
    pub(crate) active_since: Option<Instant>,
}

impl Tracker {
    pub(crate) fn new() -> Tracker {
        Tracker {
            state: AlertState::Inactive,
            active_since: None,
        }
    }

    /// One evaluation at `now`: the condition holds (`active`) or not.
    pub(crate) fn step(
        &mut self,
        active: bool,
        now: Instant,
        for_duration: Duration,
    ) -> Option<Transition> {
        match (self.state, active) {
            (AlertState::Inactive, true) => {
                self.active_since = Some(now);
                if for_duration.is_zero() {
                    self.state = AlertState::Firing;
                    Some(Transition::Fired)
                } else {
                    self.state = AlertState::Pending;
                    Some(Transition::Pending)
                }
            }
            (AlertState::Pending, true) => {
                let since = self.active_since.unwrap_or(now);
                if now.saturating_duration_since(since) >= for_duration {
                    self.state = AlertState::Firing;
                    Some(Transition::Fired)
                } else {
                    None
                }
            }
            (AlertState::Pending, false) => {
                *self = Tracker::new();
                Some(Transition::Cancelled)
            }
            (AlertState::Firing, false) => {
                *self = Tracker::new();
                Some(Transition::Resolved)
            }
            (AlertState::Inactive, false) | (AlertState::Firing, true) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The laws of Prometheus's `for`: an alert fires only after its
        /// condition held at every evaluation for the whole duration, fires at
        /// the first evaluation where that is true, resolves (and notifies)
        /// only from firing, and a pending alert that stops holding never
        /// notified anyone.
        #[test]
        fn pending_firing_resolved_follow_the_condition(
            evals in proptest::collection::vec((any::<bool>(), 1u64..2_000), 1..80),
            for_ms in 0u64..3_000,
        ) {
            let start = Instant::now();
            let for_d = Duration::from_millis(for_ms);
            let mut t = Tracker::new();
            let mut now = start;
            let mut held_since: Option<Instant> = None;
            for (active, gap) in evals {
                now += Duration::from_millis(gap);
                let before = t.state;
                let tr = t.step(active, now, for_d);
                if active {
                    held_since.get_or_insert(now);
                } else {
                    held_since = None;
                }
                let held_long = held_since.is_some_and(|s| now - s >= for_d);
                prop_assert_eq!(t.state == AlertState::Firing, active && held_long);
                prop_assert_eq!(t.state == AlertState::Pending, active && !held_long);
                match tr {
                    Some(Transition::Fired) => prop_assert_ne!(before, AlertState::Firing),
                    Some(Transition::Resolved) => prop_assert_eq!(before, AlertState::Firing),
                    Some(Transition::Cancelled) => prop_assert_eq!(before, AlertState::Pending),
                    Some(Transition::Pending) => prop_assert_eq!(before, AlertState::Inactive),
                    None => prop_assert!(before == t.state),
                }
            }
        }
    }

    #[test]
    fn conditions_read_their_figure() {
        let obs = Observation {
            error_rate: Some(3.0),
            queue_wait_p99_ms: Some(12.0),
            restarts_last_minute: Some(4),
            breaker_open: Some(false),
            max_worker_rss: Some(100 << 20),
        };
        let table = [
            (
                Condition::ErrorRateAbove { per_sec: 2.0 },
                Some((true, 3.0)),
            ),
            (
                Condition::ErrorRateAbove { per_sec: 3.0 },
                Some((false, 3.0)),
            ),
            (
                Condition::QueueWaitP99Above { ms: 20.0 },
                Some((false, 12.0)),
            ),
            (
                Condition::RestartsPerMinuteAbove { restarts: 3 },
                Some((true, 4.0)),
            ),
            (Condition::BreakerOpen, Some((false, 0.0))),
            (
                Condition::WorkerRssAbove { bytes: 50 << 20 },
                Some((true, (100u64 << 20) as f64)),
            ),
        ];
        for (cond, want) in table {
            assert_eq!(cond.eval(&obs), want, "{}", cond.describe());
        }
        assert_eq!(Condition::BreakerOpen.eval(&Observation::default()), None);
    }
}
