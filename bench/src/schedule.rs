//! When each request of an open-loop run is meant to be sent.
//!
//! The offsets are computed from the request's index, never by adding an
//! interval to the previous time, so rounding never drifts the rate; and the
//! latency of a request is measured from its intended time, so a stalled
//! server is charged for every request it delayed (no coordinated omission).

use std::time::Duration;

/// A fixed-rate schedule of `count` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub rate_per_s: u64,
    pub count: u64,
}

impl Schedule {
    /// `rate_per_s` requests a second for `duration` (at least one request).
    pub fn new(rate_per_s: u64, duration: Duration) -> Schedule {
        let rate = rate_per_s.max(1);
        let count = (u128::from(rate) * duration.as_nanos() / 1_000_000_000).max(1);
        Schedule {
            rate_per_s: rate,
            count: u64::try_from(count).unwrap_or(u64::MAX),
        }
    }

    /// Offset of request `i` from the start of the run.
    pub fn offset(&self, i: u64) -> Duration {
        let ns = u128::from(i) * 1_000_000_000 / u128::from(self.rate_per_s.max(1));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How long the whole schedule takes to send.
    pub fn span(&self) -> Duration {
        self.offset(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_offsets() {
        let cases = [
            // rate, duration ms, count, offset of request 1, offset of last
            (1000, 2000, 2000, 1_000_000u64, 1_999_000_000u64),
            (500, 1000, 500, 2_000_000, 998_000_000),
            (3, 1000, 3, 333_333_333, 666_666_666),
            (2000, 1, 2, 500_000, 500_000),
            (0, 100, 1, 1_000_000_000, 0),
        ];
        for (rate, ms, count, first, last) in cases {
            let s = Schedule::new(rate, Duration::from_millis(ms));
            assert_eq!(s.count, count, "rate {rate} for {ms} ms");
            if count > 1 {
                assert_eq!(s.offset(1), Duration::from_nanos(first), "rate {rate}");
            }
            assert_eq!(
                s.offset(count - 1),
                Duration::from_nanos(last),
                "rate {rate}"
            );
        }
    }

    #[test]
    fn no_drift_over_many_requests() {
        // 3 per second cannot be represented exactly; the millionth request
        // still lands within a nanosecond of i / rate.
        let s = Schedule::new(3, Duration::from_secs(1_000_000));
        let i = 1_000_000u64;
        let exact = i as f64 / 3.0 * 1e9;
        let got = s.offset(i).as_nanos() as f64;
        assert!((got - exact).abs() < 1.0, "{got} vs {exact}");
        assert_eq!(s.span(), Duration::from_secs(1_000_000));
    }
}
