//! What a stored response is found by (RFC 9111 §4.1, §2):
//!
//! - the primary key, [`primary`]: scheme, host, port and the path and
//!   query exactly as sent, the same for GET and HEAD (HEAD is answered
//!   from a stored GET);
//! - the secondary key, [`Vary`]: the request's values of the headers the
//!   response's `Vary` names, kept with the entry; a later request matches
//!   only with the same values.
//!
//! The host is lowercased and the scheme's default port dropped, since
//! those spellings name the same resource; the path and query are not
//! rewritten (percent-encoding, parameter order): equivalent spellings
//! then miss, which costs a request, where a wrong rewrite could serve one
//! resource for another.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::uri::Authority;

use super::directives::trim;
use crate::gateway::FORWARDED_PROTO;

/// Most header names a stored response may vary on. Real responses name
/// one to three (`Accept-Encoding`, `Accept`, `Origin`); each name is
/// compared on every lookup of each variant, so the bound keeps lookups
/// short whatever a backend sends.
pub const MAX_VARY_FIELDS: usize = 8;

/// Why a request has no primary key (it is then not cached).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the request names no host")]
    NoHost,
    #[error("the request's host is not a valid authority")]
    BadHost,
    #[error("the request's scheme is neither http nor https")]
    BadScheme,
}

/// Why a response's `Vary` does not allow storing it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VaryError {
    /// `Vary: *`: the response depends on more than the request's headers.
    #[error("Vary: * (varies on more than headers)")]
    Star,
    #[error("Vary names {0} headers, more than {MAX_VARY_FIELDS}")]
    TooMany(usize),
    #[error("Vary names something that is not a header name")]
    BadName,
}

/// The primary key of a request: `scheme://host[:port]/path?query`.
///
/// The scheme comes from the URI (HTTP/2's `:scheme`) or else from
/// `x-forwarded-proto`, which the gateway's listeners set on every request
/// (replacing any a client sent); without either, `http`. The host comes
/// from the URI's authority or else from `Host`.
pub fn primary(req: &Parts) -> Result<String, KeyError> {
    let scheme = match req.uri.scheme_str() {
        Some(s) => s.to_ascii_lowercase(),
        None => match req.headers.get(FORWARDED_PROTO) {
            Some(v) => String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase(),
            None => "http".to_string(),
        },
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(KeyError::BadScheme),
    };
    let authority = match req.uri.authority() {
        Some(a) => a.clone(),
        None => {
            let host = req.headers.get(header::HOST).ok_or(KeyError::NoHost)?;
            Authority::try_from(host.as_bytes()).map_err(|_| KeyError::BadHost)?
        }
    };
    let host = authority.host();
    if host.is_empty() {
        return Err(KeyError::NoHost);
    }
    let path = match req.uri.path_and_query().map(|pq| pq.as_str()) {
        Some(pq) if !pq.is_empty() => pq,
        _ => "/",
    };
    let mut key = String::with_capacity(scheme.len() + 3 + host.len() + 6 + path.len());
    key.push_str(&scheme);
    key.push_str("://");
    key.push_str(&host.to_ascii_lowercase());
    if let Some(port) = authority.port_u16().filter(|p| *p != default_port) {
        key.push(':');
        key.push_str(&port.to_string());
    }
    key.push_str(path);
    Ok(key)
}

/// The header names a response's `Vary` lists, lowercased (as
/// [`HeaderName`]s are), sorted and without repeats, so that two
/// responses varying on the same headers give equal lists.
pub fn vary_names(res: &HeaderMap) -> Result<Vec<HeaderName>, VaryError> {
    let mut names = Vec::new();
    for value in res.get_all(header::VARY) {
        for name in value.as_bytes().split(|b| *b == b',') {
            let name = trim(name);
            if name.is_empty() {
                continue;
            }
            if name == b"*" {
                return Err(VaryError::Star);
            }
            let name = HeaderName::from_bytes(name).map_err(|_| VaryError::BadName)?;
            if !names.contains(&name) {
                if names.len() == MAX_VARY_FIELDS {
                    return Err(VaryError::TooMany(MAX_VARY_FIELDS + 1));
                }
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(names)
}

/// The secondary key of a stored response: for each header its `Vary`
/// names, the request's value, normalized (each field line trimmed, field
/// lines joined with `, `), or `None` when the request had none (which is
/// not the same as an empty value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vary {
    fields: Box<[Field]>,
}

/// A header name and the request's normalized value.
type Field = (HeaderName, Option<Box<[u8]>>);

impl Vary {
    /// The values of `names` in the request headers `req`.
    pub fn capture(names: Vec<HeaderName>, req: &HeaderMap) -> Vary {
        let fields = names
            .into_iter()
            .map(|name| {
                let value = normalized(req, &name);
                (name, value)
            })
            .collect();
        Vary { fields }
    }

    /// Whether the request headers `req` select this variant. Compares in
    /// place, without allocating (this runs under the store's lock).
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.fields
            .iter()
            .all(|(name, stored)| normalized_eq(req, name, stored.as_deref()))
    }

    /// Bytes held: names and values, each field counted as `field_overhead`
    /// more.
    pub fn size(&self, field_overhead: usize) -> usize {
        self.fields
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, |v| v.len()) + field_overhead)
            .sum()
    }
}

fn normalized(req: &HeaderMap, name: &HeaderName) -> Option<Box<[u8]>> {
    let mut values = req.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(trim(v.as_bytes()));
    }
    Some(out.into_boxed_slice())
}

/// `normalized(req, name).as_deref() == stored`, without building it.
fn normalized_eq(req: &HeaderMap, name: &HeaderName, stored: Option<&[u8]>) -> bool {
    let mut values = req.get_all(name).iter().peekable();
    let Some(mut rest) = stored else {
        return values.peek().is_none();
    };
    if values.peek().is_none() {
        return false;
    }
    for (i, v) in values.enumerate() {
        if i > 0 {
            match rest.strip_prefix(b", ") {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(trim(v.as_bytes())) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

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
    fn primary_keys() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Result<&'a str, KeyError>);
        let cases: &[Case] = &[
            (
                "/a?b=1",
                &[("host", "Shop.Example")],
                Ok("http://shop.example/a?b=1"),
            ),
            (
                "/a",
                &[("host", "shop.example:80")],
                Ok("http://shop.example/a"),
            ),
            (
                "/a",
                &[("host", "shop.example:8080")],
                Ok("http://shop.example:8080/a"),
            ),
            (
                "/a",
                &[("host", "shop.example:443"), ("x-forwarded-proto", "https")],
                Ok("https://shop.example/a"),
            ),
            (
                "/a",
                &[("host", "shop.example:80"), ("x-forwarded-proto", "https")],
                Ok("https://shop.example:80/a"),
            ),
            // The URI's authority (HTTP/2, absolute form) wins over Host.
            (
                "https://API.example:443/x?q",
                &[("host", "other.example")],
                Ok("https://api.example/x?q"),
            ),
            ("http://[::1]:80/", &[], Ok("http://[::1]/")),
            // The query exactly as sent: order and encoding kept.
            (
                "/s?b=2&a=1&c=%41",
                &[("host", "h")],
                Ok("http://h/s?b=2&a=1&c=%41"),
            ),
            ("/a", &[], Err(KeyError::NoHost)),
            ("/a", &[("host", "bad host")], Err(KeyError::BadHost)),
            (
                "/a",
                &[("host", "h"), ("x-forwarded-proto", "gopher")],
                Err(KeyError::BadScheme),
            ),
        ];
        for (uri, h, want) in cases {
            let got = primary(&parts(uri, h));
            assert_eq!(got.as_deref(), want.as_deref(), "{uri} {h:?}");
        }
    }

    #[test]
    fn vary_names_are_normalized() {
        let h = headers(&[
            ("vary", "Accept-Encoding, accept"),
            ("vary", " ACCEPT-ENCODING ,, Origin"),
        ]);
        let names: Vec<_> = vary_names(&h).unwrap();
        let names: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-encoding", "origin"]);
        assert_eq!(
            vary_names(&headers(&[("vary", "accept, *")])),
            Err(VaryError::Star)
        );
        assert_eq!(
            vary_names(&headers(&[("vary", "a b")])),
            Err(VaryError::BadName)
        );
    }

    #[test]
    fn a_vary_naming_many_headers_is_refused() {
        let many: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
        let h = headers(&[("vary", &many.join(","))]);
        assert_eq!(vary_names(&h), Err(VaryError::TooMany(MAX_VARY_FIELDS + 1)));
        let exactly: Vec<String> = (0..MAX_VARY_FIELDS).map(|i| format!("x-h{i}")).collect();
        let h = headers(&[("vary", &exactly.join(",")), ("vary", "x-h0")]);
        assert_eq!(vary_names(&h).unwrap().len(), MAX_VARY_FIELDS);
    }

    #[test]
    fn vary_values_match_after_normalization_only() {
        let names = || vec![HeaderName::from_static("accept-encoding")];
        let stored = Vary::capture(names(), &headers(&[("accept-encoding", " gzip, br ")]));
        assert!(stored.matches(&headers(&[("accept-encoding", "gzip, br")])));
        // Several field lines are joined.
        assert!(stored.matches(&headers(&[
            ("accept-encoding", "gzip"),
            ("accept-encoding", " br")
        ])));
        assert!(!stored.matches(&headers(&[("accept-encoding", "gzip")])));
        assert!(!stored.matches(&headers(&[("accept-encoding", "gzip, br, zstd")])));
        assert!(!stored.matches(&headers(&[])));
        // Absent is not empty.
        let absent = Vary::capture(names(), &headers(&[]));
        assert!(absent.matches(&headers(&[])));
        assert!(!absent.matches(&headers(&[("accept-encoding", "")])));
        let empty = Vary::capture(names(), &headers(&[("accept-encoding", "")]));
        assert!(empty.matches(&headers(&[("accept-encoding", " ")])));
        assert!(!empty.matches(&headers(&[])));
    }
}
