//! How long a stored response stays fresh and how old it is (RFC 9111
//! §4.2), as pure functions of its headers and three times: when the
//! request was sent (`request_time`), when the response's head arrived
//! (`response_time`) and now.
//!
//! Only explicit freshness counts: `s-maxage`, else `max-age`, else
//! `Expires` minus `Date`. Heuristic freshness (§4.2.2, a fraction of the
//! time since `Last-Modified`) is not used: a response without explicit
//! freshness but with a validator is stored already stale, so every use
//! revalidates it, and a backend that wants caching says so.
//!
//! Wall-clock times come from the caller (`SystemTime`), so tests pass
//! whatever time they need; a clock that steps back counts as no time
//! passing, never as a negative age.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};

use super::directives::{delta_seconds, Directives, MAX_DELTA_SECONDS};

/// The freshness lifetime (§4.2.1) of a response received at
/// `response_time`, or `None` when it has no explicit one. An invalid
/// `Expires` (e.g. `0`) means already expired, as §5.3 says.
pub fn lifetime(
    directives: &Directives,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> Option<Duration> {
    if let Some(s) = directives.s_maxage {
        return Some(s);
    }
    if let Some(m) = directives.max_age {
        return Some(m);
    }
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    let date = date(headers).unwrap_or(response_time);
    Some(since(expires, date))
}

/// The times of a stored response that its age is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    /// The response's `Date`, when valid.
    pub date: Option<SystemTime>,
    /// The response's `Age` (set by caches before this one), 0 if absent
    /// or invalid.
    pub age_value: Duration,
}

impl Timing {
    pub fn of(headers: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Timing {
        let age_value = headers
            .get(header::AGE)
            .map_or(Duration::ZERO, |v| delta_seconds(Some(v.as_bytes())));
        Timing {
            request_time,
            response_time,
            date: date(headers),
            age_value,
        }
    }

    /// The current age (§4.2.3): the age the response had on arrival (the
    /// larger of what `Date` shows and what `Age` says plus the time the
    /// request took), plus the time it has been stored.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let apparent_age = self
            .date
            .map_or(Duration::ZERO, |d| since(self.response_time, d));
        let response_delay = since(self.response_time, self.request_time);
        let corrected_age_value = self.age_value.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = since(now, self.response_time);
        corrected_initial_age.saturating_add(resident_time)
    }
}

/// The value of an `Age` header for `age`: whole seconds, at most
/// [`MAX_DELTA_SECONDS`].
pub fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(MAX_DELTA_SECONDS))
}

/// `later - earlier`, or zero when `later` is not later.
fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

fn date(headers: &HeaderMap) -> Option<SystemTime> {
    headers.get(header::DATE).and_then(http_date)
}

/// An HTTP-date (RFC 9110 §5.6.7, all three formats).
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn date_value(time: SystemTime) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(time)).unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, HeaderValue)]) -> HeaderMap {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn lifetimes() {
        let cc = |s: &str| {
            Directives::of(&headers(&[(
                header::CACHE_CONTROL,
                HeaderValue::from_str(s).unwrap(),
            )]))
        };
        let none = HeaderMap::new();
        let expires_in_100 = headers(&[
            (header::DATE, date_value(t(0))),
            (header::EXPIRES, date_value(t(100))),
        ]);
        let cases: &[(Directives, &HeaderMap, Option<u64>)] = &[
            (cc("max-age=60, s-maxage=5"), &none, Some(5)),
            (cc("max-age=60"), &expires_in_100, Some(60)),
            (Directives::default(), &expires_in_100, Some(100)),
            (Directives::default(), &none, None),
        ];
        for (d, h, want) in cases {
            assert_eq!(
                lifetime(d, h, t(0)),
                want.map(Duration::from_secs),
                "{d:?} {h:?}"
            );
        }
        // Expires without Date: counted from the arrival.
        let h = headers(&[(header::EXPIRES, date_value(t(100)))]);
        assert_eq!(
            lifetime(&Directives::default(), &h, t(40)),
            Some(Duration::from_secs(60))
        );
        // Invalid or past Expires: already expired.
        let h = headers(&[(header::EXPIRES, HeaderValue::from_static("0"))]);
        assert_eq!(
            lifetime(&Directives::default(), &h, t(0)),
            Some(Duration::ZERO)
        );
        let h = headers(&[
            (header::DATE, date_value(t(100))),
            (header::EXPIRES, date_value(t(50))),
        ]);
        assert_eq!(
            lifetime(&Directives::default(), &h, t(0)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn current_age_adds_resident_time_to_the_age_on_arrival() {
        let timing = |h: &HeaderMap, req: u64, res: u64| Timing::of(h, t(req), t(res));
        // No Date, no Age: the time the request took, then resident time.
        let plain = timing(&HeaderMap::new(), 0, 2);
        assert_eq!(plain.current_age(t(2)), Duration::from_secs(2));
        assert_eq!(plain.current_age(t(12)), Duration::from_secs(12));
        // Age from an upstream cache.
        let aged = timing(
            &headers(&[(header::AGE, HeaderValue::from_static("30"))]),
            0,
            0,
        );
        assert_eq!(aged.current_age(t(5)), Duration::from_secs(35));
        // Date older than the arrival (the backend's clock, or a cache
        // upstream that sent no Age).
        let dated = timing(&headers(&[(header::DATE, date_value(t(0)))]), 50, 50);
        assert_eq!(dated.current_age(t(60)), Duration::from_secs(60));
        // A Date in the future and a clock that steps back: never negative.
        let future = timing(&headers(&[(header::DATE, date_value(t(500)))]), 0, 0);
        assert_eq!(future.current_age(t(0)), Duration::ZERO);
        assert_eq!(future.current_age(SystemTime::UNIX_EPOCH), Duration::ZERO);
        // Invalid Age is ignored.
        let bad = timing(
            &headers(&[(header::AGE, HeaderValue::from_static("-3"))]),
            0,
            0,
        );
        assert_eq!(bad.current_age(t(1)), Duration::from_secs(1));
    }

    #[test]
    fn age_header_is_capped() {
        assert_eq!(age_header(Duration::from_millis(1999)), "1");
        assert_eq!(
            age_header(Duration::from_secs(u64::MAX)),
            MAX_DELTA_SECONDS.to_string().as_str()
        );
    }
}
