//! Jittered exponential backoff, shared by certificate renewal
//! (`identity`) and the discovery reconnect loop (`discovery`), each with
//! its own bounds. Pure: the caller passes the attempt number and
//! the random source.

use std::time::Duration;

use rand::Rng;

/// `min * 2^attempt`, capped at `max`, then drawn uniformly from its upper
/// half so many proxies that failed together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling for `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.gen_range(0..=jitter_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ceilings() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let cases = [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3200),
            (6, 5000),
            (40, 5000),
            (u32::MAX, 5000),
        ];
        for (attempt, ms) in cases {
            assert_eq!(
                b.ceiling(attempt),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn delays_stay_in_upper_half_of_ceiling() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..70 {
            let d = b.delay(attempt, &mut rng);
            let c = b.ceiling(attempt);
            assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
        }
        assert!(b.delay(100, &mut rng) <= Duration::from_secs(60));
    }
}
