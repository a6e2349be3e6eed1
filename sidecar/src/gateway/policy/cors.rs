//! CORS (the Fetch standard) for a rule's GatewayPolicy: the gateway
//! answers preflights itself, so they never reach a backend nor need a
//! credential, and marks the responses of allowed origins. An origin that
//! is not allowed gets no CORS header at all: the browser then keeps the
//! response from the script, which is the refusal CORS has.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::core::directory::gateway_policy::{AllowOrigins, Cors};
use crate::core::http::{empty, text, Body};

/// Methods a preflight may ask for when the policy names none: the ones
/// a simple request may use anyway.
const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

pub enum Outcome {
    /// No `Origin`: not a cross-origin request.
    NotCors,
    /// A preflight, answered here.
    Preflight(Response<Body>),
    /// A cross-origin request going on; these headers go on its response.
    Actual(HeaderMap),
}

pub fn check(c: &Cors, parts: &Parts) -> Outcome {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return Outcome::NotCors;
    };
    let allowed = match &c.allow_origins {
        AllowOrigins::Any => true,
        AllowOrigins::List(list) => origin
            .to_str()
            .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o))),
    };
    let preflight = parts.method == Method::OPTIONS
        && parts.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let mut headers = HeaderMap::new();
    // The answer depends on the origin unless every origin gets "*".
    let echo = !matches!(c.allow_origins, AllowOrigins::Any) || c.allow_credentials;
    if echo {
        headers.append(VARY, HeaderValue::from_static("origin"));
    }
    if !preflight {
        if allowed {
            allow_origin(c, origin, echo, &mut headers);
            if !c.expose_headers.is_empty() {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, join(&c.expose_headers));
            }
        }
        return Outcome::Actual(headers);
    }
    headers.append(
        VARY,
        HeaderValue::from_static("access-control-request-method, access-control-request-headers"),
    );
    let methods: &[Method] = if c.allow_methods.is_empty() {
        &DEFAULT_METHODS
    } else {
        &c.allow_methods
    };
    let method_ok = parts
        .headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .is_some_and(|m| methods.contains(&m));
    let headers_ok = parts
        .headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .all(|h| {
            c.allow_headers
                .iter()
                .any(|a| a.as_str().eq_ignore_ascii_case(h))
        });
    if !(allowed && method_ok && headers_ok) {
        let why = if !allowed {
            "origin not allowed"
        } else if !method_ok {
            "method not allowed"
        } else {
            "a request header not allowed"
        };
        let mut res = text(
            StatusCode::FORBIDDEN,
            format!("CORS preflight refused: {why}"),
        );
        res.headers_mut().extend(headers);
        return Outcome::Preflight(res);
    }
    allow_origin(c, origin, echo, &mut headers);
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, join(methods));
    if !c.allow_headers.is_empty() {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, join(&c.allow_headers));
    }
    if let Some(age) = c.max_age {
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age.as_secs()));
    }
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    *res.headers_mut() = headers;
    Outcome::Preflight(res)
}

fn allow_origin(c: &Cors, origin: &HeaderValue, echo: bool, headers: &mut HeaderMap) {
    let value = if echo {
        origin.clone()
    } else {
        HeaderValue::from_static("*")
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if c.allow_credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// `a, b, c`; every item is a token, so the list is a valid value.
fn join<T: AsRef<str>>(items: &[T]) -> HeaderValue {
    let text = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
