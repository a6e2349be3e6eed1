//! The response headers of a decision, after the IETF "RateLimit header
//! fields for HTTP" draft (the form with separate fields):
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds),
//! `RateLimit-Policy` (`100;w=60`), and `Retry-After` (seconds) on a 429.
//!
//! All times are rounded up to whole seconds: a client that waits the
//! number it was given is never early.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{Decision, Limit};

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Sets the headers of `decision` under `limit` (replacing any already
/// there, e.g. from the upstream of an allowed request).
///
/// `RateLimit-Limit` is the burst, the most requests a client can make at
/// once, so that `Remaining` never exceeds it; the policy states the
/// sustained rate, with `burst` when it differs from the quota.
pub fn set_decision_headers(limit: &Limit, decision: &Decision, headers: &mut HeaderMap) {
    let (remaining, reset) = match *decision {
        Decision::Allowed { remaining, reset } => (remaining, reset),
        Decision::Limited { retry_after, reset } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(whole_seconds(retry_after)));
            (0, reset)
        }
    };
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit.burst()));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(whole_seconds(reset)));
    if let Ok(policy) = HeaderValue::try_from(policy(limit)) {
        headers.insert(RATELIMIT_POLICY, policy);
    }
}

/// Headers of the 503 answered when the limit could not be checked and the
/// policy fails closed: only `Retry-After: 1`, as nothing is known about
/// the quota.
pub fn set_unavailable_headers(headers: &mut HeaderMap) {
    headers.insert(RETRY_AFTER, HeaderValue::from(1u64));
}

/// `RateLimit-Policy`: `<quota>;w=<seconds>`, plus `;burst=<n>` when the
/// burst is not the quota. The draft's window is whole seconds: a period
/// that is not is stated as the quota over the period rounded up (10 per
/// 500 ms is `20;w=1`).
pub fn policy(limit: &Limit) -> String {
    let per = limit.per();
    let window = whole_seconds(per);
    let quota = if per == Duration::from_secs(window) {
        u64::from(limit.requests())
    } else {
        let scaled = u128::from(limit.requests()) * u128::from(window) * 1_000_000_000
            / per.as_nanos().max(1);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    };
    if u64::from(limit.burst()) == quota {
        format!("{quota};w={window}")
    } else {
        format!("{quota};w={window};burst={}", limit.burst())
    }
}

/// Seconds, rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn allowed_and_limited() {
        let limit = Limit::new(100, Duration::from_secs(60), None).unwrap();
        let mut h = HeaderMap::new();
        h.insert(RATELIMIT_REMAINING, HeaderValue::from_static("upstream's"));
        set_decision_headers(
            &limit,
            &Decision::Allowed {
                remaining: 99,
                reset: Duration::from_millis(600),
            },
            &mut h,
        );
        assert_eq!(get(&h, &RATELIMIT_LIMIT), Some("100"));
        assert_eq!(get(&h, &RATELIMIT_REMAINING), Some("99"));
        assert_eq!(get(&h, &RATELIMIT_RESET), Some("1"));
        assert_eq!(get(&h, &RATELIMIT_POLICY), Some("100;w=60"));
        assert_eq!(get(&h, &RETRY_AFTER), None);

        let mut h = HeaderMap::new();
        set_decision_headers(
            &limit,
            &Decision::Limited {
                retry_after: Duration::from_millis(1),
                reset: Duration::from_millis(59_001),
            },
            &mut h,
        );
        assert_eq!(get(&h, &RATELIMIT_REMAINING), Some("0"));
        assert_eq!(get(&h, &RATELIMIT_RESET), Some("60"));
        // Never 0: a client told 0 retries at once.
        assert_eq!(get(&h, &RETRY_AFTER), Some("1"));

        let mut h = HeaderMap::new();
        set_decision_headers(
            &limit,
            &Decision::Limited {
                retry_after: Duration::from_secs(2),
                reset: Duration::from_secs(60),
            },
            &mut h,
        );
        assert_eq!(get(&h, &RETRY_AFTER), Some("2"));
    }

    #[test]
    fn policies() {
        let l = |r, ms, b| Limit::new(r, Duration::from_millis(ms), b).unwrap();
        assert_eq!(policy(&l(100, 60_000, None)), "100;w=60");
        assert_eq!(policy(&l(10, 1000, Some(50))), "10;w=1;burst=50");
        assert_eq!(policy(&l(10, 500, None)), "20;w=1;burst=10");
        assert_eq!(policy(&l(3, 1500, Some(3))), "4;w=2;burst=3");
    }

    #[test]
    fn unavailable() {
        let mut h = HeaderMap::new();
        set_unavailable_headers(&mut h);
        assert_eq!(get(&h, &RETRY_AFTER), Some("1"));
        assert_eq!(get(&h, &RATELIMIT_LIMIT), None);
    }
}
