//! Fault knobs: every request first sleeps `latency`, then fails with
//! probability `error_rate`. A seeded generator makes a run repeatable.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Text every injected failure carries, so nobody mistakes it for a bug.
pub const INJECTED_FAULT: &str = "injected fault (mycel-demo --error-rate)";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub latency: Duration,
    /// Between 0 and 1 (checked when parsing flags).
    pub error_rate: f64,
    pub seed: Option<u64>,
}

/// The request was chosen to fail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{INJECTED_FAULT}")]
pub struct InjectedFault;

/// Shared by all requests of one service.
#[derive(Debug)]
pub struct Faults {
    latency: Duration,
    error_rate: f64,
    rng: Mutex<StdRng>,
}

impl Faults {
    pub fn new(config: &FaultConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Faults {
            latency: config.latency,
            error_rate: config.error_rate,
            rng: Mutex::new(rng),
        }
    }

    /// Sleeps the configured latency, then decides whether this request fails.
    pub async fn apply(&self) -> Result<(), InjectedFault> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        // A poisoned lock only means another request panicked mid-draw; the
        // generator state is still usable.
        let fail = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            should_fail(&mut *rng, self.error_rate)
        };
        if fail {
            Err(InjectedFault)
        } else {
            Ok(())
        }
    }
}

/// Whether one request fails. Rates at the ends never draw, so 0 and 1 are exact.
pub fn should_fail(rng: &mut impl Rng, error_rate: f64) -> bool {
    if error_rate <= 0.0 || error_rate.is_nan() {
        false
    } else if error_rate >= 1.0 {
        true
    } else {
        rng.gen::<f64>() < error_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_exact() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(!should_fail(&mut rng, 0.0));
            assert!(should_fail(&mut rng, 1.0));
        }
    }

    #[test]
    fn seeded_rate_is_repeatable_and_roughly_right() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..1000)
                .map(|_| should_fail(&mut rng, 0.3))
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        let failures = a.iter().filter(|f| **f).count();
        assert!((200..400).contains(&failures), "{failures}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_slept_before_deciding() {
        let faults = Faults::new(&FaultConfig {
            latency: Duration::from_millis(250),
            error_rate: 1.0,
            seed: Some(3),
        });
        let start = tokio::time::Instant::now();
        assert_eq!(faults.apply().await, Err(InjectedFault));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn message_says_injected() {
        assert!(InjectedFault.to_string().contains("injected fault"));
    }
}
