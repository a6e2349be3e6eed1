//! The deadline shared by every try of a request: the policy's request
//! timeout or the caller's own gRPC deadline, whichever ends first.

use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName};

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The caller's deadline from `grpc-timeout`: 1 to 8 digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illi-, `u` micro-, `n` nanoseconds).
/// Malformed values are None: the gRPC spec leaves them undefined, and
/// the request timeout still applies.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 99,999,999: no overflow in any unit below.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When the request must be answered by: the earlier of the two limits
/// counted from `now`, or None when neither is set. A limit too far away
/// to represent is no limit.
pub fn effective_deadline(
    now: Instant,
    request_timeout: Option<Duration>,
    grpc: Option<Duration>,
) -> Option<Instant> {
    let shortest = match (request_timeout, grpc) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    now.checked_add(shortest)
}

/// The limit of one try started at `now`: its own per-try timeout cut to
/// what is left before `deadline` (zero when it has passed).
pub fn try_timeout(
    per_try: Option<Duration>,
    deadline: Option<Instant>,
    now: Instant,
) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(now));
    match (per_try, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn grpc_timeout_values() {
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"1H", Some(Duration::from_secs(3600))),
            (b"2M", Some(Duration::from_secs(120))),
            (b"30S", Some(Duration::from_secs(30))),
            (b"250m", Some(Duration::from_millis(250))),
            (b"100u", Some(Duration::from_micros(100))),
            (b"5n", Some(Duration::from_nanos(5))),
            (b"0m", Some(Duration::ZERO)),
            (b"99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            (b"00000001S", Some(Duration::from_secs(1))),
            (b"123456789S", None),
            (b"S", None),
            (b"10", None),
            (b"10s", None),
            (b"10x", None),
            (b"-1S", None),
            (b"1.5S", None),
            (b" 1S", None),
            (b"", None),
            (b"\xff1S", None),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(GRPC_TIMEOUT, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                grpc_timeout(&h),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn deadline_is_the_earlier_limit() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            (None, None, None),
            (Some(s(15)), None, Some(now + s(15))),
            (None, Some(s(2)), Some(now + s(2))),
            (Some(s(15)), Some(s(2)), Some(now + s(2))),
            (Some(s(1)), Some(s(2)), Some(now + s(1))),
            (Some(Duration::MAX), None, None),
        ];
        for (request, grpc, want) in cases {
            assert_eq!(
                effective_deadline(now, request, grpc),
                want,
                "{request:?} {grpc:?}"
            );
        }
    }

    #[test]
    fn try_timeout_is_cut_to_the_deadline() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            (None, None, None),
            (Some(s(2)), None, Some(s(2))),
            (None, Some(now + s(5)), Some(s(5))),
            (Some(s(2)), Some(now + s(5)), Some(s(2))),
            (Some(s(10)), Some(now + s(5)), Some(s(5))),
            (Some(s(10)), Some(now), Some(Duration::ZERO)),
        ];
        for (per_try, deadline, want) in cases {
            assert_eq!(try_timeout(per_try, deadline, now), want);
        }
        assert_eq!(
            try_timeout(None, Some(now), now + s(1)),
            Some(Duration::ZERO)
        );
    }
}
