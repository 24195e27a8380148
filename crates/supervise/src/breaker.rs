//! A circuit breaker as a pure value.
//!
//! Closed: every call is admitted and failures are counted over a sliding time window; when
//! `failures` of them fall within `window`, the breaker opens. Open: nothing is admitted until
//! `open_for` has passed. Half-open: exactly `trials` calls are admitted; one failure opens the
//! breaker again, `trials` successes close it.
//!
//! This is Hystrix's and Polly's shape with a count threshold instead of a failure *rate*: a
//! supervised process or a pool's worker start fails or succeeds a few times a minute, far too
//! few calls for a rate over a minimum throughput (resilience4j's default needs 100 calls) to
//! mean anything.
//!
//! The breaker never reads a clock: every method takes `now`, and the state only changes inside
//! those calls (an open breaker whose time is up reports `Open` until the next
//! [`admit`](CircuitBreaker::admit)).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings of a [`CircuitBreaker`].
///
/// ```
/// use std::time::Duration;
/// use forkyard_supervise::BreakerConfig;
///
/// // Open after 3 failures within 10 s, stay open 30 s, then admit 1 trial.
/// let config = BreakerConfig::new(3, Duration::from_secs(10))
///     .open_for(Duration::from_secs(30))
///     .trials(1);
/// assert_eq!(config.failures(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    failures: u32,
    window: Duration,
    open_for: Duration,
    trials: u32,
}

impl BreakerConfig {
    /// Open after `failures` failures within `window` (a threshold of zero counts as one).
    /// Stays open 30 s and admits one trial unless told otherwise.
    pub fn new(failures: u32, window: Duration) -> Self {
        BreakerConfig {
            failures: failures.max(1),
            window,
            open_for: Duration::from_secs(30),
            trials: 1,
        }
    }

    /// How long the breaker stays open before it admits trials.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// How many calls the half-open breaker admits, and how many successes close it (zero
    /// counts as one).
    pub fn trials(mut self, trials: u32) -> Self {
        self.trials = trials.max(1);
        self
    }

    /// The failure threshold.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The window the failures are counted over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The open duration.
    pub fn open_duration(&self) -> Duration {
        self.open_for
    }

    /// The number of half-open trials.
    pub fn trial_count(&self) -> u32 {
        self.trials
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls are admitted; failures are being counted.
    Closed,
    /// Nothing is admitted before `until`.
    Open {
        /// When the breaker starts admitting trials.
        until: Instant,
    },
    /// A limited number of trial calls are admitted.
    HalfOpen {
        /// Trials admitted so far.
        admitted: u32,
        /// Trials that succeeded so far.
        succeeded: u32,
    },
}

/// Closed / open / half-open circuit breaker with a failure threshold over a time window.
///
/// ```
/// use std::time::{Duration, Instant};
/// use forkyard_supervise::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let s = Duration::from_secs;
/// let mut breaker = CircuitBreaker::new(BreakerConfig::new(2, s(10)).open_for(s(5)).trials(1));
/// let t0 = Instant::now();
///
/// assert!(breaker.admit(t0));
/// breaker.record_failure(t0);
/// breaker.record_failure(t0 + s(1));
/// assert_eq!(breaker.state(), BreakerState::Open { until: t0 + s(6) });
/// assert!(!breaker.admit(t0 + s(2))); // open: rejected
///
/// assert!(breaker.admit(t0 + s(6))); // time is up: one trial
/// assert!(!breaker.admit(t0 + s(6))); // and only one
/// breaker.record_success(t0 + s(7));
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: VecDeque<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            failures: VecDeque::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (as of the last call; time alone does not change it).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Failures counted in the current window (as of the last recorded failure).
    pub fn recent_failures(&self) -> u32 {
        u32::try_from(self.failures.len()).unwrap_or(u32::MAX)
    }

    /// May a call go ahead at `now`? Closed: yes. Open: no, until its time is up, when the
    /// breaker turns half-open. Half-open: yes for the first `trials` calls, then no until the
    /// results are in.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } => {
                if now < until {
                    return false;
                }
                self.state = BreakerState::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                true
            }
            BreakerState::HalfOpen {
                admitted,
                succeeded,
            } => {
                if admitted >= self.config.trials {
                    return false;
                }
                self.state = BreakerState::HalfOpen {
                    admitted: admitted + 1,
                    succeeded,
                };
                true
            }
        }
    }

    /// A call succeeded. Half-open: counts towards closing (after `trials` successes). Closed
    /// or open: nothing changes (a late result from before the breaker opened is ignored).
    pub fn record_success(&mut self, _now: Instant) {
        if let BreakerState::HalfOpen {
            admitted,
            succeeded,
        } = self.state
        {
            let succeeded = succeeded + 1;
            if succeeded >= self.config.trials {
                self.state = BreakerState::Closed;
                self.failures.clear();
            } else {
                self.state = BreakerState::HalfOpen {
                    admitted: admitted.max(succeeded),
                    succeeded,
                };
            }
        }
    }

    /// A call failed. Closed: counted; reaching the threshold within the window opens the
    /// breaker. Half-open: opens it again at once. Open: ignored.
    pub fn record_failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed => {
                let window = self.config.window;
                while let Some(&first) = self.failures.front() {
                    if now.saturating_duration_since(first) > window {
                        self.failures.pop_front();
                    } else {
                        break;
                    }
                }
                self.failures.push_back(now);
                if self.failures.len() >= self.config.failures as usize {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen { .. } => self.open(now),
            BreakerState::Open { .. } => {}
        }
    }

    /// Close the breaker and forget all failures (an operator's override).
    pub fn reset(&mut self) {
        self.state = BreakerState::Closed;
        self.failures.clear();
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.config.open_for,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Admit,
        Ok,
        Fail,
        Wait(u64),
    }

    /// Runs a script against a fresh breaker and returns one line per step.
    fn run(config: BreakerConfig, script: &[Op]) -> Vec<String> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = CircuitBreaker::new(config);
        script
            .iter()
            .map(|op| {
                let what = match *op {
                    Op::Admit => format!("admit={}", b.admit(now)),
                    Op::Ok => {
                        b.record_success(now);
                        "ok".to_string()
                    }
                    Op::Fail => {
                        b.record_failure(now);
                        "fail".to_string()
                    }
                    Op::Wait(n) => {
                        now += ms(n);
                        format!("+{n}ms")
                    }
                };
                let state = match b.state() {
                    BreakerState::Closed => "closed".to_string(),
                    BreakerState::Open { until } => {
                        format!("open until {}ms", (until - t0).as_millis())
                    }
                    BreakerState::HalfOpen {
                        admitted,
                        succeeded,
                    } => format!("half-open {admitted}/{succeeded}"),
                };
                format!("{what} -> {state}")
            })
            .collect()
    }

    #[test]
    fn opens_at_threshold_within_window_only() {
        use Op::*;
        let config = BreakerConfig::new(3, ms(100)).open_for(ms(50));
        // Failures spread wider than the window never open it.
        let spread = run(
            config,
            &[Fail, Wait(60), Fail, Wait(60), Fail, Wait(60), Fail],
        );
        assert!(spread.iter().all(|l| l.ends_with("closed")), "{spread:#?}");
        // Three within 100 ms (edge inclusive) do.
        let tight = run(config, &[Fail, Wait(50), Fail, Wait(50), Fail]);
        assert_eq!(tight.last().unwrap(), "fail -> open until 150ms");
    }

    #[test]
    fn half_open_transcript() {
        use Op::*;
        let config = BreakerConfig::new(1, ms(100)).open_for(ms(50)).trials(2);
        let lines = run(
            config,
            &[
                Fail,
                Admit,
                Wait(49),
                Admit,
                Wait(1),
                Admit,
                Admit,
                Admit,
                Ok,
                Admit,
                Ok,
                Admit,
                Fail,
                Fail,
                Wait(50),
                Admit,
                Fail,
            ],
        );
        let expected = [
            "fail -> open until 50ms",
            "admit=false -> open until 50ms",
            "+49ms -> open until 50ms",
            "admit=false -> open until 50ms",
            "+1ms -> open until 50ms",
            "admit=true -> half-open 1/0",
            "admit=true -> half-open 2/0",
            "admit=false -> half-open 2/0",
            "ok -> half-open 2/1",
            "admit=false -> half-open 2/1",
            "ok -> closed",
            "admit=true -> closed",
            "fail -> open until 100ms",
            "fail -> open until 100ms",
            "+50ms -> open until 100ms",
            "admit=true -> half-open 1/0",
            "fail -> open until 150ms",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn reset_closes_and_forgets() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::new(2, ms(100)));
        b.record_failure(t0);
        b.reset();
        b.record_failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.recent_failures(), 1);
    }

    proptest! {
        /// Law: once open and its time is up, the breaker admits exactly `trials` calls before
        /// any result comes back, whatever the timing of the calls.
        #[test]
        fn half_open_admits_exactly_n_trials(
            trials in 1u32..20,
            threshold in 1u32..5,
            calls in 1usize..60,
            gaps in proptest::collection::vec(0u64..10, 60),
        ) {
            let config = BreakerConfig::new(threshold, ms(1_000)).open_for(ms(100)).trials(trials);
            let mut b = CircuitBreaker::new(config);
            let t0 = Instant::now();
            for i in 0..threshold {
                b.record_failure(t0 + ms(u64::from(i)));
            }
            let opened = matches!(b.state(), BreakerState::Open { .. });
            prop_assert!(opened);
            let mut now = t0 + ms(100 + u64::from(threshold));
            let mut admitted = 0u32;
            for gap in gaps.iter().take(calls) {
                now += ms(*gap);
                if b.admit(now) {
                    admitted += 1;
                }
            }
            prop_assert_eq!(admitted, trials.min(calls as u32));
        }

        /// Law: the breaker never admits while open, and a closed breaker always admits.
        #[test]
        fn admission_matches_state(ops in proptest::collection::vec(0u8..4, 1..200)) {
            let mut b = CircuitBreaker::new(BreakerConfig::new(3, ms(50)).open_for(ms(30)).trials(2));
            let mut now = Instant::now();
            for op in ops {
                match op {
                    0 => {
                        let before = b.state();
                        let admitted = b.admit(now);
                        match before {
                            BreakerState::Closed => prop_assert!(admitted),
                            BreakerState::Open { until } => prop_assert_eq!(admitted, now >= until),
                            BreakerState::HalfOpen { admitted: a, .. } => prop_assert_eq!(admitted, a < 2),
                        }
                    }
                    1 => b.record_success(now),
                    2 => b.record_failure(now),
                    _ => now += ms(7),
                }
            }
        }
    }
}
