//! Exponential backoff as pure values.
//!
//! [`Backoff`] is a policy (how long to wait before the n-th consecutive retry) and
//! [`BackoffState`] is the small counter that applies it: it counts consecutive failures and
//! forgets them once the thing has stayed up for the stability window. Neither reads a clock:
//! the caller passes `now`, so both work the same under real and virtual time.
//!
//! The growth follows systemd's `RestartSteps=` / `RestartMaxDelaySec=`
//! (`service_restart_usec_next` in `src/core/service.c`): for the i-th consecutive retry,
//!
//! ```text
//! delay(i) = initial                                    if i <= 1
//!          = max                                        if i > steps
//!          = initial * (max / initial) ^ ((i - 1) / steps)   otherwise
//! ```
//!
//! so `initial = 10 s, max = 160 s, steps = 4` gives 10, 20, 40, 80, 160, 160 ... seconds.
//! The stability reset is PM2's (`exp_backoff_restart_delay` forgets after 30 s of uptime);
//! systemd never forgets by uptime, which makes a service that crashes once a day wait the
//! maximum delay forever.
//!
//! Jitter is subtractive: a jittered delay lies in `[(1 - jitter) * delay(i), delay(i)]`, so the
//! cap stays a hard cap. It is derived from a seed and the attempt number, never from a random
//! source, so a test (or a replay of an incident) sees the same delays every time.

use std::time::{Duration, Instant};

/// How long to wait before each consecutive retry: exponential growth with a cap, jitter, and a
/// stability window after which the count starts again.
///
/// ```
/// use std::time::Duration;
/// use forkyard_supervise::Backoff;
///
/// let ms = Duration::from_millis;
/// // systemd's example: RestartSec=10s, RestartSteps=4, RestartMaxDelaySec=160s.
/// let b = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(160)).steps(4);
/// let secs: Vec<u64> = (1..=6).map(|i| b.delay(i).as_secs()).collect();
/// assert_eq!(secs, [10, 20, 40, 80, 160, 160]);
///
/// // Without `steps`, the delay roughly doubles until it reaches the cap.
/// let b = Backoff::exponential(ms(100), ms(800));
/// assert_eq!(b.delay(1), ms(100));
/// assert_eq!(b.delay(4), ms(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    steps: u32,
    jitter: f64,
    stable_after: Duration,
}

/// Default stability window: uptime after which the failure count starts again (PM2's value).
const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);
/// Default jitter fraction: enough to spread a herd of identical children apart.
const DEFAULT_JITTER: f64 = 0.1;

impl Backoff {
    /// Exponential backoff from `initial` up to `max`, roughly doubling each time (the number of
    /// steps is `ceil(log2(max / initial))`, so the sequence reaches `max` exactly).
    ///
    /// `max` below `initial` is raised to `initial`; an `initial` of zero is raised to 1 ms
    /// when `max` is larger (a ratio needs a non-zero start). Jitter defaults to 10 % and the
    /// stability window to 30 s.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        let initial = if initial.is_zero() && !max.is_zero() {
            Duration::from_millis(1).min(max)
        } else {
            initial
        };
        Backoff {
            initial,
            max,
            steps: doubling_steps(initial, max),
            jitter: DEFAULT_JITTER,
            stable_after: DEFAULT_STABLE_AFTER,
        }
    }

    /// The same delay before every retry (no growth, no jitter).
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            steps: 0,
            jitter: 0.0,
            stable_after: DEFAULT_STABLE_AFTER,
        }
    }

    /// Retry immediately, every time.
    pub fn none() -> Self {
        Backoff::fixed(Duration::ZERO)
    }

    /// Reach `max` after `steps` retries (systemd's `RestartSteps=`). Zero means no growth:
    /// every delay is `initial`.
    pub fn steps(mut self, steps: u32) -> Self {
        self.steps = steps;
        self
    }

    /// Subtract up to this fraction of each delay, chosen deterministically from the seed and
    /// the attempt number. Clamped to `0.0..=1.0`; NaN counts as zero.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// After this much uptime the failure count starts again from the first delay.
    pub fn stable_after(mut self, window: Duration) -> Self {
        self.stable_after = window;
        self
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap: no delay is ever longer.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The stability window.
    pub fn stability_window(&self) -> Duration {
        self.stable_after
    }

    /// The jitter fraction.
    pub fn jitter_fraction(&self) -> f64 {
        self.jitter
    }

    /// The delay before the `attempt`-th consecutive retry, without jitter (attempts count
    /// from 1; attempt 0 waits nothing). Never decreases as `attempt` grows, never exceeds
    /// [`max`](Self::max).
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        if attempt <= 1 || self.steps == 0 || self.initial >= self.max {
            return self.initial;
        }
        if attempt > self.steps {
            return self.max;
        }
        let r0 = self.initial.as_secs_f64();
        let ratio = self.max.as_secs_f64() / r0;
        let exponent = f64::from(attempt - 1) / f64::from(self.steps);
        let secs = r0 * ratio.powf(exponent);
        // Floating point may land a hair outside [initial, max]; the clamp keeps both laws.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .clamp(self.initial, self.max)
    }

    /// The delay before the `attempt`-th retry with jitter applied, derived from `seed`: the
    /// same `(seed, attempt)` always gives the same value, in
    /// `[(1 - jitter) * delay(attempt), delay(attempt)]`.
    pub fn jittered(&self, attempt: u32, seed: u64) -> Duration {
        let base = self.delay(attempt);
        if self.jitter == 0.0 || base.is_zero() {
            return base;
        }
        let unit = unit_interval(splitmix64(
            seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let cut = base.mul_f64(self.jitter * unit);
        base.saturating_sub(cut)
    }
}

/// `ceil(log2(max / initial))`: the number of doublings from `initial` to `max`.
fn doubling_steps(initial: Duration, max: Duration) -> u32 {
    if initial.is_zero() || max <= initial {
        return 0;
    }
    let ratio = max.as_secs_f64() / initial.as_secs_f64();
    // ratio > 1 and finite here; the cast saturates for absurd ratios.
    ratio.log2().ceil().max(1.0) as u32
}

/// SplitMix64: a tiny, well-mixed hash, enough to make jitter look random yet reproducible.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Map 64 random bits to `[0, 1)` using the top 53 bits.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A [`Backoff`] applied over time: counts consecutive failures and starts again after the
/// stability window.
///
/// Call [`up`](Self::up) when the thing becomes healthy (for a supervised child: when it is
/// ready) and [`failed`](Self::failed) when it fails; `failed` returns how long to wait.
///
/// ```
/// use std::time::{Duration, Instant};
/// use forkyard_supervise::{Backoff, BackoffState};
///
/// let ms = Duration::from_millis;
/// let policy = Backoff::exponential(ms(100), ms(800)).jitter(0.0).stable_after(ms(5_000));
/// let mut state = BackoffState::new(policy, 0);
/// let t0 = Instant::now();
///
/// state.up(t0);
/// assert_eq!(state.failed(t0 + ms(10)), ms(100)); // first crash
/// state.up(t0 + ms(200));
/// assert_eq!(state.failed(t0 + ms(300)), ms(200)); // crashed again quickly: doubled
/// state.up(t0 + ms(600));
/// // Stayed up for the whole stability window: the count starts again.
/// assert_eq!(state.failed(t0 + ms(6_000)), ms(100));
/// ```
#[derive(Debug, Clone)]
pub struct BackoffState {
    policy: Backoff,
    seed: u64,
    attempt: u32,
    up_since: Option<Instant>,
}

impl BackoffState {
    /// A fresh state: the next failure waits the first delay. `seed` picks the jitter.
    pub fn new(policy: Backoff, seed: u64) -> Self {
        BackoffState {
            policy,
            seed,
            attempt: 0,
            up_since: None,
        }
    }

    /// The policy this state applies.
    pub fn policy(&self) -> &Backoff {
        &self.policy
    }

    /// Consecutive failures counted so far (0 after a reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The thing is up (healthy) from `now`: starts the stability clock.
    pub fn up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// The thing failed at `now`: returns how long to wait before the next try. If it had been
    /// up for at least the stability window, the count starts again first.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.up_since.take()
            && now.saturating_duration_since(since) >= self.policy.stable_after
        {
            self.attempt = 0;
        }
        self.attempt = self.attempt.saturating_add(1);
        self.policy.jittered(self.attempt, self.seed)
    }

    /// Forget all failures (an operator's manual start does this, as in systemd).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.up_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn systemd_example_sequence() {
        let b = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(160)).steps(4);
        let got: Vec<Duration> = (0..=6).map(|i| b.delay(i)).collect();
        let want: Vec<Duration> = [0, 10, 20, 40, 80, 160, 160]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn table_of_policies() {
        // (policy, attempts 1..=5 in ms)
        let cases: &[(Backoff, [u64; 5])] = &[
            (Backoff::fixed(ms(250)), [250, 250, 250, 250, 250]),
            (Backoff::none(), [0, 0, 0, 0, 0]),
            (
                Backoff::exponential(ms(100), ms(800)),
                [100, 200, 400, 800, 800],
            ),
            (
                Backoff::exponential(ms(100), ms(100)),
                [100, 100, 100, 100, 100],
            ),
            (
                Backoff::exponential(ms(100), ms(800)).steps(0),
                [100, 100, 100, 100, 100],
            ),
            (
                Backoff::exponential(ms(100), ms(300)).steps(1),
                [100, 300, 300, 300, 300],
            ),
            (
                Backoff::exponential(ms(500), ms(100)),
                [500, 500, 500, 500, 500],
            ),
            (Backoff::exponential(ms(0), ms(4)), [1, 2, 4, 4, 4]),
        ];
        for (policy, want) in cases {
            let got: Vec<u64> = (1..=5)
                .map(|i| policy.delay(i).as_millis() as u64)
                .collect();
            assert_eq!(&got[..], &want[..], "{policy:?}");
        }
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let b = Backoff::exponential(ms(100), ms(10_000)).jitter(0.5);
        for attempt in 1..20 {
            let a = b.jittered(attempt, 42);
            assert_eq!(a, b.jittered(attempt, 42));
            assert!(a <= b.delay(attempt));
            assert!(a >= b.delay(attempt) / 2);
        }
        // Different seeds spread a herd apart.
        let spread: std::collections::BTreeSet<Duration> =
            (0..16).map(|seed| b.jittered(3, seed)).collect();
        assert!(spread.len() > 8, "{spread:?}");
    }

    #[test]
    fn jitter_fraction_is_clamped() {
        let b = Backoff::fixed(ms(100));
        assert_eq!(b.jitter(f64::NAN).jitter_fraction(), 0.0);
        assert_eq!(b.jitter(-1.0).jitter_fraction(), 0.0);
        assert_eq!(b.jitter(7.0).jitter_fraction(), 1.0);
    }

    #[test]
    fn stability_window_edge_is_inclusive() {
        let policy = Backoff::exponential(ms(100), ms(800))
            .jitter(0.0)
            .stable_after(ms(1_000));
        let t0 = Instant::now();
        let mut s = BackoffState::new(policy, 1);
        s.up(t0);
        assert_eq!(s.failed(t0), ms(100));
        s.up(t0);
        // One millisecond short of the window: still counting.
        assert_eq!(s.failed(t0 + ms(999)), ms(200));
        s.up(t0);
        // Exactly the window: forgotten.
        assert_eq!(s.failed(t0 + ms(1_000)), ms(100));
        assert_eq!(s.attempt(), 1);
        // A failure without an `up` in between (failed start) keeps counting.
        assert_eq!(s.failed(t0 + ms(50_000)), ms(200));
        s.reset();
        assert_eq!(s.attempt(), 0);
        assert_eq!(s.failed(t0), ms(100));
    }

    proptest! {
        #[test]
        fn delays_are_monotone_capped_and_start_at_initial(
            initial_ms in 0u64..10_000,
            extra_ms in 0u64..1_000_000,
            steps in proptest::option::of(0u32..40),
        ) {
            let mut b = Backoff::exponential(ms(initial_ms), ms(initial_ms + extra_ms));
            if let Some(steps) = steps {
                b = b.steps(steps);
            }
            prop_assert_eq!(b.delay(1), b.initial());
            let mut last = Duration::ZERO;
            for attempt in 0..64 {
                let d = b.delay(attempt);
                prop_assert!(d >= last, "attempt {attempt}: {d:?} < {last:?}");
                prop_assert!(d <= b.max());
                last = d;
            }
            prop_assert_eq!(b.delay(u32::MAX), if b.steps == 0 { b.initial() } else { b.max() });
        }

        #[test]
        fn jittered_delay_stays_in_its_band(
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..1_000_000,
            jitter in 0.0f64..=1.0,
            seed: u64,
            attempt in 0u32..100,
        ) {
            let b = Backoff::exponential(ms(initial_ms), ms(initial_ms + extra_ms)).jitter(jitter);
            let base = b.delay(attempt);
            let j = b.jittered(attempt, seed);
            prop_assert!(j <= base);
            prop_assert!(j >= base.mul_f64(1.0 - jitter).saturating_sub(Duration::from_nanos(1)));
        }
    }
}
