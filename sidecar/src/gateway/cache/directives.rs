//! `Cache-Control` directives (RFC 9111 §5.2), the few a shared cache acts
//! on, parsed from every field line of a request or a response.
//!
//! The header is a comma-separated list of `name` or `name=value`, where a
//! value is a token or a quoted string that may itself hold commas
//! (`private="set-cookie, x-user"`), so the list is split outside quotes
//! only. Names are case-insensitive. Unknown directives are ignored, as RFC
//! 9111 §5.2.3 requires.
//!
//! Where the RFC leaves a choice, the parse takes the one that stores less
//! or revalidates more:
//! - `no-cache="field"` and `private="field"` (the qualified forms) count
//!   as the unqualified ones: honouring them would mean storing a response
//!   with some fields removed, and nothing here needs that.
//! - An invalid delta-seconds (`max-age=soon`, `max-age=-1`) counts as 0:
//!   stale at once (§4.2.1 allows treating an invalid value as stale).
//! - A directive given twice keeps its first value (§4.2.1).

use std::time::Duration;

use http::header::{self, HeaderMap};

/// The largest delta-seconds (RFC 9111 §1.2.2: 2^31); larger values, which
/// are legal, mean this. Also the largest `Age` the cache sends.
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The directives of one message that the cache acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
}

impl Directives {
    /// The directives of every `Cache-Control` field line of `headers`.
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            for (name, arg) in split(value.as_bytes()) {
                d.apply(name, arg);
            }
        }
        d
    }

    /// A request's directives: [`Directives::of`], plus `Pragma: no-cache`
    /// as `no-cache` when the request has no `Cache-Control` at all (RFC
    /// 9111 §5.4: HTTP/1.0 clients ask for a fresh answer that way).
    pub fn of_request(headers: &HeaderMap) -> Directives {
        let mut d = Directives::of(headers);
        if !headers.contains_key(header::CACHE_CONTROL) {
            d.no_cache |= headers
                .get_all(header::PRAGMA)
                .iter()
                .flat_map(|v| split(v.as_bytes()))
                .any(|(name, _)| name.eq_ignore_ascii_case(b"no-cache"));
        }
        d
    }

    fn apply(&mut self, name: &[u8], arg: Option<Vec<u8>>) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            self.no_cache = true;
        } else if is("private") {
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("max-age") {
            self.max_age.get_or_insert(delta_seconds(arg.as_deref()));
        } else if is("s-maxage") {
            self.s_maxage.get_or_insert(delta_seconds(arg.as_deref()));
        }
    }
}

/// A delta-seconds argument; 0 when missing or invalid (see the module
/// doc), [`MAX_DELTA_SECONDS`] when larger.
pub fn delta_seconds(arg: Option<&[u8]>) -> Duration {
    let Some(digits) = arg.filter(|a| !a.is_empty() && a.iter().all(u8::is_ascii_digit)) else {
        return Duration::ZERO;
    };
    let mut secs: u64 = 0;
    for d in digits {
        secs = secs.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Duration::from_secs(secs.min(MAX_DELTA_SECONDS))
}

/// The directives of one field line: `(name, argument)`, the argument
/// unquoted. Empty list elements are skipped.
fn split(value: &[u8]) -> Vec<(&[u8], Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        // The element ends at the first comma outside a quoted string.
        let mut end = rest.len();
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let element = trim(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or_default();
        if element.is_empty() {
            continue;
        }
        match element.iter().position(|&b| b == b'=') {
            None => out.push((element, None)),
            Some(eq) => {
                let name = trim(&element[..eq]);
                let arg = unquote(trim(&element[eq + 1..]));
                out.push((name, Some(arg)));
            }
        }
    }
    out
}

/// A token as it is; a quoted string without its quotes and escapes.
fn unquote(arg: &[u8]) -> Vec<u8> {
    let Some(inner) = arg.strip_prefix(b"\"").and_then(|a| a.strip_suffix(b"\"")) else {
        return arg.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if !escaped && b == b'\\' {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// Without leading and trailing spaces and tabs (HTTP's OWS).
pub fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn cc(lines: &[&str]) -> Directives {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        Directives::of(&h)
    }

    const fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn directives_table() {
        let cases: &[(&[&str], Directives)] = &[
            (&[], Directives::default()),
            (
                &["public, max-age=60"],
                Directives {
                    public: true,
                    max_age: secs(60),
                    ..Default::default()
                },
            ),
            (
                &["Max-Age=60", "S-MAXAGE=120", "MUST-REVALIDATE"],
                Directives {
                    max_age: secs(60),
                    s_maxage: secs(120),
                    must_revalidate: true,
                    ..Default::default()
                },
            ),
            // Quoted arguments, the qualified forms counted as unqualified.
            (
                &[r#"private="set-cookie, x-user", no-cache="x-a""#],
                Directives {
                    private: true,
                    no_cache: true,
                    ..Default::default()
                },
            ),
            // A comma inside quotes does not start a directive.
            (
                &[r#"x-ext="a, no-store", max-age="30""#],
                Directives {
                    max_age: secs(30),
                    ..Default::default()
                },
            ),
            // The first of two values wins.
            (
                &["max-age=10", "max-age=999"],
                Directives {
                    max_age: secs(10),
                    ..Default::default()
                },
            ),
            // Invalid values are stale at once.
            (
                &["max-age=soon, s-maxage=-1"],
                Directives {
                    max_age: secs(0),
                    s_maxage: secs(0),
                    ..Default::default()
                },
            ),
            (
                &["max-age"],
                Directives {
                    max_age: secs(0),
                    ..Default::default()
                },
            ),
            // Huge values are capped rather than overflowing.
            (
                &["max-age=99999999999999999999999999"],
                Directives {
                    max_age: secs(MAX_DELTA_SECONDS),
                    ..Default::default()
                },
            ),
            (
                &[" , ,no-store,, proxy-revalidate ,"],
                Directives {
                    no_store: true,
                    proxy_revalidate: true,
                    ..Default::default()
                },
            ),
        ];
        for (lines, want) in cases {
            assert_eq!(cc(lines), *want, "{lines:?}");
        }
    }

    #[test]
    fn an_unterminated_quote_swallows_the_rest_without_panicking() {
        let d = cc(&[r#"x="unterminated, no-store"#]);
        assert!(!d.no_store);
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(Directives::of_request(&h).no_cache);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!Directives::of_request(&h).no_cache);
    }

    #[test]
    fn trim_strips_ows_only() {
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
