//! The restart budget: OTP's restart intensity.
//!
//! `supervisor:add_restart/3` keeps the times of recent restarts, drops those older than
//! `period`, adds the new one, and gives up if more than `intensity` remain. We do the same
//! with exact monotonic instants instead of OTP's whole seconds. A restart at exactly
//! `now - period` still counts (OTP keeps `T >= Now - Period`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart intensity: at most `intensity` restarts within any `period`.
#[derive(Debug, Clone)]
pub(crate) struct RestartBudget {
    intensity: u32,
    period: Duration,
    restarts: VecDeque<Instant>,
}

/// The restart that would have gone over the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub(crate) restarts: u32,
}

impl RestartBudget {
    pub(crate) fn new(intensity: u32, period: Duration) -> Self {
        RestartBudget {
            intensity,
            period,
            restarts: VecDeque::new(),
        }
    }

    pub(crate) fn intensity(&self) -> u32 {
        self.intensity
    }

    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// Restarts counted within the period ending at the last recorded one.
    pub(crate) fn used(&self) -> u32 {
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }

    /// Count a restart at `now`. `Ok(n)`: allowed, `n` restarts now in the period.
    /// `Err`: this restart is one more than the intensity allows.
    pub(crate) fn record(&mut self, now: Instant) -> Result<u32, Exceeded> {
        let period = self.period;
        self.restarts
            .retain(|&t| now.saturating_duration_since(t) <= period);
        self.restarts.push_back(now);
        let n = self.used();
        if n > self.intensity {
            Err(Exceeded { restarts: n })
        } else {
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (intensity, period ms, restart times ms, index of the first refused restart)
    #[test]
    fn table() {
        let cases: &[(u32, u64, &[u64], Option<usize>)] = &[
            // Exactly `intensity` restarts within the period are fine ...
            (3, 1_000, &[0, 100, 200], None),
            // ... one more is not.
            (3, 1_000, &[0, 100, 200, 300], Some(3)),
            // The edge `now - period` is inclusive: the restart at 0 still counts at 1000.
            (2, 1_000, &[0, 500, 1_000], Some(2)),
            // One millisecond later it has left the window.
            (2, 1_000, &[0, 500, 1_001], None),
            // intensity 0: the first restart already gives up (OTP).
            (0, 1_000, &[0], Some(0)),
            // A slow loop under the rate never gives up.
            (1, 1_000, &[0, 1_001, 2_002, 3_003, 4_004], None),
        ];
        for &(intensity, period, times, refused) in cases {
            let t0 = Instant::now();
            let mut b = RestartBudget::new(intensity, ms(period));
            let got = times.iter().position(|&t| b.record(t0 + ms(t)).is_err());
            assert_eq!(
                got, refused,
                "intensity {intensity} period {period} times {times:?}"
            );
        }
    }

    proptest! {
        /// Law: up to the refusal, no window of length `period` ever holds more than
        /// `intensity` allowed restarts.
        #[test]
        fn budget_never_exceeded(
            intensity in 0u32..8,
            period in 1u64..2_000,
            gaps in proptest::collection::vec(0u64..500, 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = RestartBudget::new(intensity, ms(period));
            let mut allowed: Vec<u64> = Vec::new();
            let mut t = 0;
            for gap in gaps {
                t += gap;
                let in_window = allowed.iter().filter(|&&a| t - a <= period).count() as u32;
                match b.record(t0 + ms(t)) {
                    Ok(n) => {
                        prop_assert_eq!(n, in_window + 1);
                        prop_assert!(n <= intensity);
                        allowed.push(t);
                    }
                    Err(e) => {
                        prop_assert_eq!(e.restarts, in_window + 1);
                        prop_assert!(in_window + 1 > intensity);
                        break;
                    }
                }
            }
        }
    }
}
