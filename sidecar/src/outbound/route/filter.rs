//! What a rule's filters do to a request before it is forwarded (header
//! changes, URL rewrites) or instead (a redirect), and to the response.
//! Mirrors are decided in `backend::mirror_targets`; sending the copies is
//! the caller's.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::StatusCode;

use super::matching::prefix_matches;
use crate::core::directory::routes::{
    Filter, HeaderModifier, PathMatch, PathModifier, Redirect, RouteMatch, UrlRewrite,
};

#[cfg(test)]
mod tests;

/// Whether the request goes on to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterOutcome {
    Continue,
    /// Answer with this redirect; the request is not forwarded.
    Redirect(RedirectResponse),
}

/// The response a `RequestRedirect` filter answers with (no body needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectResponse {
    pub status: StatusCode,
    pub location: HeaderValue,
}

/// Applies the request filters of a rule (or backend) in order. `matched`
/// is the match that selected the rule: `ReplacePrefixMatch` replaces what
/// its prefix matched. A redirect ends the filters: nothing after it
/// matters to a request that is not forwarded.
pub fn apply_request_filters(
    filters: &[Filter],
    parts: &mut Parts,
    matched: &RouteMatch,
) -> FilterOutcome {
    for filter in filters {
        match filter {
            Filter::RequestHeaderModifier(m) => modify_headers(&mut parts.headers, m),
            Filter::RequestRedirect(r) => {
                return FilterOutcome::Redirect(redirect(r, parts, matched));
            }
            Filter::UrlRewrite(u) => rewrite(u, parts, matched),
            // Policies ran before the filters (`routed`).
            Filter::ResponseHeaderModifier(_)
            | Filter::RequestMirror(_)
            | Filter::Fault(_)
            | Filter::GatewayPolicy(_) => {}
        }
    }
    FilterOutcome::Continue
}

/// Applies the response header filters among `filters`, in order.
pub fn apply_response_filters(filters: &[Filter], headers: &mut HeaderMap) {
    for filter in filters {
        if let Filter::ResponseHeaderModifier(m) = filter {
            modify_headers(headers, m);
        }
    }
}

/// `set` replaces every value, `add` appends a field line (equivalent to
/// the spec's `foo,bar` by RFC 9110), `remove` deletes. Names are
/// `HeaderName`s, so case never matters. Removal goes first, as Envoy
/// does; validation keeps a name in one list only, so the order shows
/// only in configs it would refuse.
fn modify_headers(headers: &mut HeaderMap, m: &HeaderModifier) {
    for name in &m.remove {
        headers.remove(name);
    }
    for h in &m.set {
        headers.insert(h.name.clone(), h.value.clone());
    }
    for h in &m.add {
        headers.append(h.name.clone(), h.value.clone());
    }
}

/// The path `modifier` makes of `path`; None keeps it.
fn modified_path(path: &str, modifier: &PathModifier, matched: &RouteMatch) -> Option<String> {
    match modifier {
        PathModifier::ReplaceFullPath(p) => Some(p.clone()),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = match &matched.path {
                Some(PathMatch::PathPrefix(p)) => p.as_str(),
                // The default match is prefix `/`.
                None => "/",
                // Validation allows ReplacePrefixMatch only with a prefix
                // match; with anything else there is no prefix to replace.
                Some(PathMatch::Exact(_) | PathMatch::RegularExpression(_)) => return None,
            };
            replace_prefix(path, prefix, replacement)
        }
    }
}

/// Replaces the elements of `path` that `prefix` matched with
/// `replacement`, as the spec's table says: trailing `/` of the prefix and
/// of the replacement do not count, what followed the prefix is kept, and
/// an empty result is `/`. So `/api/x` under `/api` → `/v2` is `/v2/x`,
/// `/api/` is `/v2/`, and `/api` → `/` is `/`. None when the prefix does
/// not match (a caller passing the wrong match).
pub(super) fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> Option<String> {
    if !prefix_matches(prefix, path) {
        return None;
    }
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
    if joined.starts_with('/') {
        Some(joined)
    } else {
        Some(format!("/{joined}"))
    }
}

/// `uri` with its path replaced, its query kept; None when the result is
/// not a valid URI (validated route values never make one).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// The request as the client addressed it: the URI's authority (HTTP/2,
/// absolute form) or else the `Host` header, split into host and port.
fn request_host(parts: &Parts) -> Option<(&str, Option<u16>)> {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?,
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    // A `]` after the last `:` means the colon was inside an IPv6 literal.
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => Some((host, port.parse().ok())),
        _ => Some((authority, None)),
    }
    .filter(|(host, _)| !host.is_empty())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The redirect's `Location`, composed as the spec says: what the filter
/// leaves unset comes from the request. The port is the filter's, else
/// the well-known port of a scheme the filter sets, else the port the
/// client addressed (the listener's); it is left out when it is the
/// scheme's default.
///
/// The request's scheme is its URI's, else `http`: a caller that took the
/// request over TLS (the gateway's HTTPS listener) sets it on the URI.
fn redirect(r: &Redirect, parts: &Parts, matched: &RouteMatch) -> RedirectResponse {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or_else(|| parts.uri.scheme_str().unwrap_or("http"));
    let requested = request_host(parts);
    let host = r.hostname.as_deref().or(requested.map(|(h, _)| h));
    let port = r.port.or_else(|| {
        let asked = requested.and_then(|(_, p)| p);
        match &r.scheme {
            Some(s) => default_port(s).or(asked),
            None => asked,
        }
    });
    let port = port.filter(|p| Some(*p) != default_port(scheme));

    let request_path = match parts.uri.path() {
        p if p.starts_with('/') => p,
        // `*` or an authority-form target: there is no path to keep.
        _ => "/",
    };
    let path = r
        .path
        .as_ref()
        .and_then(|m| modified_path(request_path, m, matched))
        .unwrap_or_else(|| request_path.to_string());
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();

    let location = match host {
        Some(host) => {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        }
        // No host to send the client to: a relative reference (RFC 9110
        // allows one) keeps at least the path change.
        None => format!("{path}{query}"),
    };
    RedirectResponse {
        status: r.status_code,
        // Every part is visible ASCII (a parsed URI, a Host header read as
        // a str, validated route values), so this does not fail; if it
        // ever did, the root is a safe place to send a client.
        location: HeaderValue::try_from(location).unwrap_or(HeaderValue::from_static("/")),
    }
}

/// Rewrites host and path before forwarding. The host replaces the `Host`
/// header whole (port included, as the spec says) and the URI's
/// authority when it has one, since HTTP/2 carries the host there.
fn rewrite(u: &UrlRewrite, parts: &mut Parts, matched: &RouteMatch) {
    if let Some(hostname) = &u.hostname {
        if let Ok(value) = HeaderValue::try_from(hostname.as_str()) {
            parts.headers.insert(header::HOST, value);
        }
        if parts.uri.authority().is_some() {
            if let Ok(authority) = Authority::try_from(hostname.as_str()) {
                let mut uri = parts.uri.clone().into_parts();
                uri.authority = Some(authority);
                if let Ok(uri) = Uri::from_parts(uri) {
                    parts.uri = uri;
                }
            }
        }
    }
    if let Some(modifier) = &u.path {
        let new = modified_path(parts.uri.path(), modifier, matched);
        if let Some(uri) = new.and_then(|p| with_path(&parts.uri, &p)) {
            parts.uri = uri;
        }
    }
}
