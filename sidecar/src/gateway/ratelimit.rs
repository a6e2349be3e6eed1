//! Rate limiting at the gateway: the limiters a GatewayPolicy's
//! `rateLimit` is counted in ([`super::policy`] builds and calls them).
//!
//! - [`local`]: limits held in this process, per key ([`LocalLimiter`]).
//! - [`redis`]: limits shared by every gateway replica through Redis
//!   ([`GlobalLimiter`]), with a [`FailureMode`] for when Redis does not
//!   answer.
//! - [`headers`]: the `RateLimit-*` and `Retry-After` headers of a decision.
//!
//! Keys are strings the caller derives (client IP, a header, the JWT
//! subject); the limiters never look at requests.
//!
//! The algorithm on both sides is GCRA (the generic cell rate algorithm): a
//! token bucket with continuous refill, stated as one number per key, the
//! "theoretical arrival time" (TAT) at which the bucket would be full again.
//! One number instead of a token count and a refill timestamp means one
//! Redis value updated by one `SET`, and a key whose TAT has passed is
//! exactly a full bucket: it can be dropped (local eviction, Redis expiry)
//! without changing any later decision.

mod conn;
pub mod headers;
pub mod local;
pub mod redis;
mod resp;

#[cfg(test)]
mod testing;

use std::borrow::Cow;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use local::{LocalConfig, LocalLimiter};
pub use redis::{
    FailureCounters, FailureCounts, FailureMode, GlobalLimiter, GlobalPolicy, Outcome,
    PolicyNameError, RedisConfig, RedisError,
};

/// Most requests a limit may allow per period.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Largest burst a limit may allow.
pub const MAX_BURST: u32 = 1_000_000;
/// Shortest period: below it timer and clock resolution dominate.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// Longest period, and the longest time a full burst may take to refill
/// (so the longest a key is remembered, here and in Redis).
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest time between two requests at the sustained rate: Redis keeps
/// time in microseconds.
const MIN_INTERVAL: Duration = Duration::from_micros(1);

/// A validated limit: `requests` per `per`, at most `burst` at once
/// (`requests` when not given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    requests: u32,
    per: Duration,
    burst: u32,
    /// `per / requests`: how often one request's worth comes back.
    interval: Duration,
}

/// Why a limit is refused; names the value and the bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("requests must be at least 1 (a limit of 0 allows nothing: do not route the traffic instead)")]
    ZeroRequests,
    #[error("requests is {0}, more than the maximum {MAX_REQUESTS}")]
    TooManyRequests(u32),
    #[error("period {0:?} is shorter than the minimum {MIN_PERIOD:?}")]
    PeriodTooShort(Duration),
    #[error("period {0:?} is longer than the maximum {MAX_PERIOD:?}")]
    PeriodTooLong(Duration),
    #[error("burst must be at least 1 (leave it out to default to requests)")]
    ZeroBurst,
    #[error("burst is {0}, more than the maximum {MAX_BURST}")]
    BurstTooLarge(u32),
    #[error("{requests} requests per {per:?} is more than one request per microsecond")]
    RateTooHigh { requests: u32, per: Duration },
    #[error(
        "a burst of {burst} at {requests} per {per:?} takes longer than {MAX_PERIOD:?} to refill"
    )]
    BurstTooSlow {
        burst: u32,
        requests: u32,
        per: Duration,
    },
}

impl Limit {
    pub fn new(requests: u32, per: Duration, burst: Option<u32>) -> Result<Limit, LimitError> {
        if requests == 0 {
            return Err(LimitError::ZeroRequests);
        }
        if requests > MAX_REQUESTS {
            return Err(LimitError::TooManyRequests(requests));
        }
        if per < MIN_PERIOD {
            return Err(LimitError::PeriodTooShort(per));
        }
        if per > MAX_PERIOD {
            return Err(LimitError::PeriodTooLong(per));
        }
        let burst = match burst {
            Some(0) => return Err(LimitError::ZeroBurst),
            Some(b) if b > MAX_BURST => return Err(LimitError::BurstTooLarge(b)),
            Some(b) => b,
            None => requests,
        };
        let interval = per / requests;
        if interval < MIN_INTERVAL {
            return Err(LimitError::RateTooHigh { requests, per });
        }
        // Bounded: interval <= 1 day and burst <= 10^6, far from overflow.
        if interval.saturating_mul(burst) > MAX_PERIOD {
            return Err(LimitError::BurstTooSlow {
                burst,
                requests,
                per,
            });
        }
        Ok(Limit {
            requests,
            per,
            burst,
            interval,
        })
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn per(&self) -> Duration {
        self.per
    }

    /// The most requests allowed at once (a full bucket).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Time for one request's worth to come back at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Time for an empty bucket to fill: `burst × interval`.
    pub fn capacity(&self) -> Duration {
        self.interval * self.burst
    }
}

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through; `remaining` more would be allowed right now, and the
    /// bucket is full again after `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Answer 429; one request is allowed again after `retry_after`, all of
    /// the burst after `reset`.
    Limited {
        retry_after: Duration,
        reset: Duration,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// Client keys up to this length are kept as they are; longer ones are
/// replaced by a digest, so a huge header costs neither memory here nor a
/// huge Redis key.
pub const MAX_KEY_LEN: usize = 64;

/// The key as stored: itself when at most [`MAX_KEY_LEN`] bytes, else `#`
/// and the hex SHA-256 of it. The digest form is one byte longer than any
/// key kept as it is, so a client cannot send a key that collides with
/// another's digest.
pub(crate) fn stored_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_LEN {
        return Cow::Borrowed(key);
    }
    let digest = Sha256::digest(key.as_bytes());
    Cow::Owned(format!("#{}", hex::encode(digest)))
}

/// One GCRA step in integer time units (nanoseconds here, microseconds in
/// the Redis script, which does the same arithmetic). `tat` is the stored
/// value (absent for a new key), `interval` and `capacity` the limit's.
/// Returns the decision in those units and, when allowed, the TAT to store.
pub(crate) fn gcra(tat: Option<u64>, now: u64, interval: u64, capacity: u64) -> Step {
    let tat = tat.unwrap_or(now).max(now);
    // How far ahead of now the bucket is once this request is counted.
    let ahead = tat.saturating_add(interval) - now;
    if ahead > capacity {
        Step::Limited {
            retry_after: ahead - capacity,
            reset: tat - now,
        }
    } else {
        Step::Allowed {
            remaining: (capacity - ahead) / interval,
            reset: ahead,
            new_tat: now + ahead,
        }
    }
}

/// [`gcra`]'s result, in its time units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Allowed {
        remaining: u64,
        reset: u64,
        new_tat: u64,
    },
    Limited {
        retry_after: u64,
        reset: u64,
    },
}

impl Step {
    /// The decision, with `unit` the duration of one time unit.
    pub(crate) fn decision(self, unit: fn(u64) -> Duration) -> Decision {
        match self {
            Step::Allowed {
                remaining, reset, ..
            } => Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: unit(reset),
            },
            Step::Limited { retry_after, reset } => Decision::Limited {
                retry_after: unit(retry_after),
                reset: unit(reset),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn limits_are_validated() {
        assert_eq!(Limit::new(0, S, None), Err(LimitError::ZeroRequests));
        assert_eq!(
            Limit::new(MAX_REQUESTS + 1, S, None),
            Err(LimitError::TooManyRequests(MAX_REQUESTS + 1))
        );
        assert_eq!(
            Limit::new(1, Duration::from_micros(999), None),
            Err(LimitError::PeriodTooShort(Duration::from_micros(999)))
        );
        assert_eq!(
            Limit::new(1, MAX_PERIOD + S, None),
            Err(LimitError::PeriodTooLong(MAX_PERIOD + S))
        );
        assert_eq!(Limit::new(1, S, Some(0)), Err(LimitError::ZeroBurst));
        assert_eq!(
            Limit::new(1, S, Some(MAX_BURST + 1)),
            Err(LimitError::BurstTooLarge(MAX_BURST + 1))
        );
        assert!(matches!(
            Limit::new(1_000_000, Duration::from_millis(100), None),
            Err(LimitError::RateTooHigh { .. })
        ));
        assert!(matches!(
            Limit::new(1, Duration::from_secs(3600), Some(25)),
            Err(LimitError::BurstTooSlow { .. })
        ));
        // The error says what to change.
        let msg = Limit::new(1, Duration::from_secs(3600), Some(25))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("burst of 25"), "{msg}");

        let l = Limit::new(100, Duration::from_secs(60), None).unwrap();
        assert_eq!(l.burst(), 100);
        assert_eq!(l.interval(), Duration::from_millis(600));
        assert_eq!(l.capacity(), Duration::from_secs(60));
        let l = Limit::new(1_000_000, S, Some(1_000_000)).unwrap();
        assert_eq!(l.interval(), Duration::from_micros(1));
    }

    #[test]
    fn long_keys_are_digested_and_cannot_collide_with_short_ones() {
        assert_eq!(stored_key("10.0.0.1"), "10.0.0.1");
        let exact = "k".repeat(MAX_KEY_LEN);
        assert_eq!(stored_key(&exact), exact.as_str());
        let long = "k".repeat(100_000);
        let stored = stored_key(&long);
        assert_eq!(stored.len(), MAX_KEY_LEN + 1);
        assert!(stored.starts_with('#'));
        assert_ne!(stored_key(&format!("{long}x")), stored);
        // A client sending the digest form itself gets it digested again.
        assert_ne!(stored_key(&stored), stored);
    }

    #[test]
    fn gcra_steps() {
        // 3 at once, one more every 10 units.
        let (i, c) = (10, 30);
        let s = gcra(None, 100, i, c);
        assert_eq!(
            s,
            Step::Allowed {
                remaining: 2,
                reset: 10,
                new_tat: 110
            }
        );
        let s = gcra(Some(110), 100, i, c);
        assert_eq!(
            s,
            Step::Allowed {
                remaining: 1,
                reset: 20,
                new_tat: 120
            }
        );
        let s = gcra(Some(120), 100, i, c);
        assert_eq!(
            s,
            Step::Allowed {
                remaining: 0,
                reset: 30,
                new_tat: 130
            }
        );
        assert_eq!(
            gcra(Some(130), 100, i, c),
            Step::Limited {
                retry_after: 10,
                reset: 30
            }
        );
        assert_eq!(
            gcra(Some(130), 105, i, c),
            Step::Limited {
                retry_after: 5,
                reset: 25
            }
        );
        // A TAT in the past is a full bucket.
        assert_eq!(gcra(Some(5), 100, i, c), gcra(None, 100, i, c));
    }
}
