//! Validators: the conditional request that revalidates a stale entry
//! (RFC 9111 §4.3.1), the update of a stored response by a 304 (§4.3.4,
//! §3.2), and the client's own conditional requests answered from a fresh
//! entry (§4.3.2, RFC 9110 §13.1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::freshness::http_date;

/// Stored fields a 304 never replaces: the body they describe did not
/// change (RFC 9111 §3.2 names Content-Length; the encoding and range of
/// the stored body are equally its own), and hop-by-hop fields describe
/// the 304's connection, not the response.
const KEPT_ON_UPDATE: [HeaderName; 9] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// Fields a 304 built from a stored response carries (RFC 9110 §15.4.5),
/// with `Last-Modified`, which lets the client update its own copy.
const SENT_WITH_304: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// The validators of a stored response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag`, when it is one well-formed entity-tag.
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

impl Validators {
    pub fn of(headers: &HeaderMap) -> Validators {
        let etag = headers
            .get(header::ETAG)
            .filter(|v| {
                let tags = entity_tags(v.as_bytes());
                tags.as_ref().is_some_and(|t| t.len() == 1)
            })
            .cloned();
        Validators {
            etag,
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
        }
    }

    pub fn any(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// The headers that make the request for a stale entry conditional:
    /// `If-None-Match` with the stored ETag, `If-Modified-Since` with the
    /// stored Last-Modified.
    pub fn conditional(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(etag) = &self.etag {
            h.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = &self.last_modified {
            h.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
        h
    }

    /// Whether a 304 is about this stored response: when both carry an
    /// ETag, they must be the same (weak comparison, as `If-None-Match`
    /// is evaluated); a 304 without one is about what the request asked.
    pub fn confirmed_by(&self, not_modified: &HeaderMap) -> bool {
        match (&self.etag, not_modified.get(header::ETAG)) {
            (Some(ours), Some(theirs)) => weak_eq(ours.as_bytes(), theirs.as_bytes()),
            _ => true,
        }
    }

    /// Whether the client's own conditional request is satisfied by this
    /// stored response, so a 304 answers it: `If-None-Match` (weak
    /// comparison; `*` matches anything stored), or when absent
    /// `If-Modified-Since` no earlier than the stored `Last-Modified`.
    pub fn not_modified_for(&self, req: &HeaderMap) -> bool {
        let mut if_none_match = req.get_all(header::IF_NONE_MATCH).iter().peekable();
        if if_none_match.peek().is_some() {
            let Some(etag) = self.etag.as_ref() else {
                return false;
            };
            return if_none_match.any(|v| {
                if trim_ows(v.as_bytes()) == b"*" {
                    return true;
                }
                entity_tags(v.as_bytes())
                    .unwrap_or_default()
                    .iter()
                    .any(|tag| weak_eq(tag, etag.as_bytes()))
            });
        }
        let (Some(since), Some(lm)) = (
            req.get(header::IF_MODIFIED_SINCE).and_then(http_date),
            self.last_modified.as_ref().and_then(http_date),
        ) else {
            return false;
        };
        lm <= since
    }
}

/// The stored fields updated by a 304's (RFC 9111 §3.2): each field the 304
/// carries replaces the stored lines of that name, except
/// [`KEPT_ON_UPDATE`].
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if KEPT_ON_UPDATE.contains(name) {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// The fields of a 304 answered from a stored response's fields.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in SENT_WITH_304 {
        for value in stored.get_all(&name) {
            h.append(name.clone(), value.clone());
        }
    }
    h
}

/// Weak comparison (RFC 9110 §8.8.3.2): the opaque tags are equal,
/// whether either is weak or not.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let opaque = |t: &[u8]| {
        let t = trim_ows(t);
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    opaque(a) == opaque(b)
}

/// The entity-tags of a list (`"a", W/"b"`), each with its `W/` and
/// quotes; `None` when the list is malformed. An entity-tag may hold
/// commas, so the list is split after each closing quote.
fn entity_tags(list: &[u8]) -> Option<Vec<&[u8]>> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = trim_ows(rest);
        while let Some(r) = rest.strip_prefix(b",") {
            rest = trim_ows(r);
        }
        if rest.is_empty() {
            return Some(tags);
        }
        let start = rest;
        let after_w = rest.strip_prefix(b"W/").unwrap_or(rest);
        let body = after_w.strip_prefix(b"\"")?;
        let close = body.iter().position(|b| *b == b'"')?;
        let len = (start.len() - after_w.len()) + 1 + close + 1;
        tags.push(&start[..len]);
        rest = &start[len..];
        let next = trim_ows(rest);
        if !next.is_empty() && !next.starts_with(b",") {
            return None;
        }
    }
}

fn trim_ows(b: &[u8]) -> &[u8] {
    super::directives::trim(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn entity_tag_lists() {
        assert_eq!(
            entity_tags(br#""a", W/"b" ,"c,d""#),
            Some(vec![&br#""a""#[..], br#"W/"b""#, br#""c,d""#])
        );
        assert_eq!(entity_tags(b""), Some(vec![]));
        assert_eq!(entity_tags(b"abc"), None);
        assert_eq!(entity_tags(br#""a"x"#), None);
        assert_eq!(entity_tags(br#""unterminated"#), None);
    }

    #[test]
    fn a_malformed_etag_is_no_validator() {
        let v = Validators::of(&headers(&[("etag", "v1")]));
        assert_eq!(v.etag, None);
        assert!(!v.any());
        let v = Validators::of(&headers(&[("etag", r#""a", "b""#)]));
        assert_eq!(v.etag, None);
        let v = Validators::of(&headers(&[("etag", r#"W/"v1""#)]));
        assert!(v.any());
    }

    #[test]
    fn conditional_headers_carry_the_stored_validators() {
        let v = Validators::of(&headers(&[
            ("etag", r#""v1""#),
            ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ]));
        let c = v.conditional();
        assert_eq!(c[header::IF_NONE_MATCH], r#""v1""#);
        assert_eq!(
            c[header::IF_MODIFIED_SINCE],
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert!(Validators::default().conditional().is_empty());
    }

    #[test]
    fn client_conditionals() {
        let v = Validators::of(&headers(&[
            ("etag", r#"W/"v1""#),
            ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ]));
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("if-none-match", r#""v1""#)], true),
            (&[("if-none-match", r#""v0", W/"v1""#)], true),
            (
                &[("if-none-match", r#""v0""#), ("if-none-match", r#""v1""#)],
                true,
            ),
            (&[("if-none-match", "*")], true),
            (&[("if-none-match", r#""v2""#)], false),
            (&[("if-none-match", "garbage")], false),
            // If-None-Match present: If-Modified-Since is not looked at.
            (
                &[
                    ("if-none-match", r#""v2""#),
                    ("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT"),
                ],
                false,
            ),
            (
                &[("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Mon, 13 Nov 2023 00:00:00 GMT")],
                false,
            ),
            (&[("if-modified-since", "yesterday")], false),
            (&[], false),
        ];
        for (h, want) in cases {
            assert_eq!(v.not_modified_for(&headers(h)), *want, "{h:?}");
        }
        let no_etag = Validators::default();
        assert!(!no_etag.not_modified_for(&headers(&[("if-none-match", "*")])));
    }

    #[test]
    fn a_304_updates_stored_fields_but_not_the_body_s() {
        let stored = headers(&[
            ("content-length", "5"),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=10"),
            ("etag", r#""v1""#),
            ("x-old", "1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ]);
        let not_modified = headers(&[
            ("content-length", "0"),
            ("cache-control", "max-age=60"),
            ("x-new", "2"),
            ("x-multi", "c"),
            ("connection", "close"),
        ]);
        let merged = merge_not_modified(&stored, &not_modified);
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["content-type"], "text/plain");
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["x-old"], "1");
        assert_eq!(merged["x-new"], "2");
        let multi: Vec<_> = merged.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["c"]);
        assert!(!merged.contains_key("connection"));
    }

    #[test]
    fn a_304_naming_another_etag_is_not_about_the_stored_response() {
        let v = Validators::of(&headers(&[("etag", r#""v1""#)]));
        assert!(v.confirmed_by(&headers(&[("etag", r#"W/"v1""#)])));
        assert!(v.confirmed_by(&headers(&[])));
        assert!(!v.confirmed_by(&headers(&[("etag", r#""v2""#)])));
    }
}
