//! Peak-EWMA latency estimate of one endpoint.
//!
//! A sample above the estimate replaces it at once, so an endpoint that
//! turns slow is avoided from its first slow answer; samples below it pull
//! it down gradually, so one lucky fast answer does not undo that. Between
//! samples the estimate decays towards zero: an endpoint that looked slow
//! and was therefore left alone is tried again after a while instead of
//! being starved forever on old evidence.

use std::time::{Duration, Instant};

/// Decay times below this are treated as this, so a zero from a policy
/// cannot turn the arithmetic into NaN.
const MIN_DECAY: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug)]
pub(super) struct PeakEwma {
    /// Nanoseconds as of `stamp`.
    estimate: f64,
    stamp: Instant,
    /// False until the first answer: an endpoint without one has no
    /// estimate, and the balancer compares it as a typical endpoint.
    measured: bool,
}

impl PeakEwma {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            estimate: 0.0,
            stamp: now,
            measured: false,
        }
    }

    /// Whether an answer has been seen.
    pub(super) fn measured(&self) -> bool {
        self.measured
    }

    /// The estimate at `now`, in nanoseconds.
    pub(super) fn value(&self, now: Instant, decay: Duration) -> f64 {
        self.estimate * weight_of_past(now.saturating_duration_since(self.stamp), decay)
    }

    pub(super) fn observe(&mut self, sample: Duration, now: Instant, decay: Duration) {
        let sample = nanos(sample);
        let w = weight_of_past(now.saturating_duration_since(self.stamp), decay);
        let decayed = self.estimate * w;
        self.estimate = if !self.measured || sample >= decayed {
            sample
        } else {
            decayed + sample * (1.0 - w)
        };
        // A sample finishing "before" the last one (callers' clocks are
        // per task) must not move the stamp back and re-decay the past.
        self.stamp = self.stamp.max(now);
        self.measured = true;
    }
}

fn weight_of_past(elapsed: Duration, decay: Duration) -> f64 {
    (-elapsed.as_secs_f64() / decay.max(MIN_DECAY).as_secs_f64()).exp()
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const DECAY: Duration = Duration::from_secs(10);

    fn ms(v: f64) -> f64 {
        v / 1e6
    }

    #[test]
    fn the_first_sample_is_the_estimate() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        assert!(!e.measured());
        e.observe(MS, t0 + MS, DECAY);
        assert!((ms(e.value(t0 + MS, DECAY)) - 1.0).abs() < 1e-9);
        assert!(e.measured());
    }

    #[test]
    fn peaks_at_once_and_comes_down_slowly() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(MS, t0, DECAY);
        e.observe(100 * MS, t0 + MS, DECAY);
        assert!((ms(e.value(t0 + MS, DECAY)) - 100.0).abs() < 1e-9);
        // One fast answer 100 ms later: weight of the past e^-0.01, so the
        // estimate barely moves.
        e.observe(MS, t0 + 101 * MS, DECAY);
        let v = ms(e.value(t0 + 101 * MS, DECAY));
        assert!(v > 98.0 && v < 99.5, "{v}");
    }

    #[test]
    fn idle_estimate_decays_towards_zero() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(Duration::from_secs(1), t0, DECAY);
        let cases = [(0u64, 1000.0), (10, 367.88), (20, 135.34), (69, 1.01)];
        for (secs, want_ms) in cases {
            let v = ms(e.value(t0 + Duration::from_secs(secs), DECAY));
            assert!((v - want_ms).abs() < 0.01 * want_ms + 0.01, "{secs}s: {v}");
        }
    }

    #[test]
    fn steady_samples_converge_to_the_sample() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(50 * MS, t0, DECAY);
        // Time constant 10 s: 40 ms too high at first, 40·e^-6 after 60 s.
        for k in 1..=6000u32 {
            e.observe(10 * MS, t0 + k * 10 * MS, DECAY);
        }
        let v = ms(e.value(t0 + 60_000 * MS, DECAY));
        assert!((v - 10.1).abs() < 0.05, "{v}");
    }

    #[test]
    fn zero_decay_is_no_nan() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(5 * MS, t0 + MS, Duration::ZERO);
        e.observe(MS, t0 + 2 * MS, Duration::ZERO);
        assert!(e.value(t0 + 3 * MS, Duration::ZERO).is_finite());
    }
}
