//! How long to wait before a retry: full-jitter exponential backoff, or
//! longer when the server asked for it with `Retry-After`, and never past
//! the request's deadline.

use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderMap, RETRY_AFTER};
use rand::Rng;

use crate::core::directory::policy::RetryPolicy;

/// The longest `Retry-After` taken at its word. Longer ones are cut to
/// this rather than ignored: the server asked us to stay away, and any
/// request deadline is shorter, so the retry is given up either way.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait before retry number `retry` (1 for the first retry): uniform
/// in `[0, min(base * 2^(retry-1), max)]`. Full jitter rather than a floor
/// of half the cap: callers that failed together spread out the most, and
/// the budget, not the wait, is what protects the service.
pub fn backoff(policy: &RetryPolicy, retry: u32, rng: &mut impl Rng) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    let cap = policy
        .backoff_base
        .saturating_mul(1u32 << doublings)
        .min(policy.backoff_max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=cap_nanos))
}

/// The wait a `Retry-After` header asks for (RFC 9110 §10.2.3): delay
/// seconds, or an HTTP date measured from `now` (zero when already past).
/// Anything unparsable is None, as if absent; waits beyond
/// [`MAX_RETRY_AFTER`] are cut to it.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still a valid, absurdly long wait.
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The wait before the next try, the larger of `backoff` and the server's
/// `retry_after`; None when the try would start at or after `deadline`,
/// which means giving up now and returning the last answer.
pub fn retry_delay(
    backoff: Duration,
    retry_after: Option<Duration>,
    now: Instant,
    deadline: Option<Instant>,
) -> Option<Duration> {
    let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
    match deadline {
        Some(deadline) if now.checked_add(wait).is_none_or(|start| start >= deadline) => None,
        _ => Some(wait),
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::core::directory::policy::{RetryBudget, RetryOn};

    fn policy(base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            budget: RetryBudget::default(),
            max_body_bytes: 1024,
            non_idempotent: false,
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let p = policy(25, 1000);
        let mut rng = StdRng::seed_from_u64(42);
        let caps = [
            (0, 25),
            (1, 25),
            (2, 50),
            (3, 100),
            (6, 800),
            (7, 1000),
            (40, 1000),
        ];
        for (retry, cap_ms) in caps {
            let cap = Duration::from_millis(cap_ms);
            let draws: Vec<Duration> = (0..200).map(|_| backoff(&p, retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= cap), "retry {retry}");
            // Full jitter: the draws cover the range, low and high.
            assert!(draws.iter().any(|d| *d < cap / 4), "retry {retry}");
            assert!(draws.iter().any(|d| *d > cap * 3 / 4), "retry {retry}");
        }
    }

    #[test]
    fn backoff_never_overflows() {
        let mut rng = StdRng::seed_from_u64(1);
        let huge = RetryPolicy {
            backoff_base: Duration::MAX,
            backoff_max: Duration::MAX,
            ..policy(0, 0)
        };
        for retry in [1, 31, 32, 64, u32::MAX] {
            let _ = backoff(&huge, retry, &mut rng);
            assert!(backoff(&policy(10, 500), retry, &mut rng) <= Duration::from_millis(500));
        }
        assert_eq!(backoff(&policy(0, 0), 5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = |d: SystemTime| httpdate::fmt_http_date(d);
        let cases = [
            ("0".to_string(), Some(0)),
            ("120".to_string(), Some(120)),
            (" 7 ".to_string(), Some(7)),
            ("3601".to_string(), Some(3600)),
            ("99999999999999999999999".to_string(), Some(3600)),
            (date(now + Duration::from_secs(30)), Some(30)),
            (date(now - Duration::from_secs(30)), Some(0)),
            (date(now + Duration::from_secs(86_400)), Some(3600)),
            // RFC 850 and asctime forms are obsolete but still HTTP-dates.
            ("Tuesday, 14-Nov-23 22:13:50 GMT".to_string(), Some(30)),
            ("Tue Nov 14 22:13:50 2023".to_string(), Some(30)),
            ("-5".to_string(), None),
            ("1.5".to_string(), None),
            ("".to_string(), None),
            ("soon".to_string(), None),
            ("Tue, 31 Feb 2023 00:00:00 GMT".to_string(), None),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
            assert_eq!(
                retry_after(&h, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff10").unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn delay_respects_retry_after_and_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let deadline = Some(now + ms(1000));
        let cases = [
            (ms(100), None, None, Some(ms(100))),
            (ms(100), Some(ms(300)), None, Some(ms(300))),
            (ms(500), Some(ms(300)), None, Some(ms(500))),
            (ms(100), None, deadline, Some(ms(100))),
            (ms(999), None, deadline, Some(ms(999))),
            (ms(1000), None, deadline, None),
            (ms(100), Some(ms(2000)), deadline, None),
            (ms(0), None, Some(now), None),
            (Duration::MAX, None, deadline, None),
            (Duration::MAX, None, None, Some(Duration::MAX)),
        ];
        for (backoff, retry_after, deadline, want) in cases {
            assert_eq!(
                retry_delay(backoff, retry_after, now, deadline),
                want,
                "{backoff:?} {retry_after:?} {deadline:?}"
            );
        }
    }
}
