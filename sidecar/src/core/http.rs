//! HTTP plumbing shared by every listener: one body type, the error
//! responses the proxy makes itself (plain text or gRPC, always with a
//! `mycel-proxy-error` header) and hop-by-hop header removal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use mycel_api::headers;

use crate::metrics::ErrorKind;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends: streamed from a peer or made up locally.
pub type Body = BoxBody<Bytes, BoxError>;

/// Header naming the app port a request is for, set by the client sidecar.
pub const DST_PORT: HeaderName = HeaderName::from_static(headers::DST_PORT);
/// Set to `h2` by the client sidecar when the app speaks HTTP/2 (gRPC).
pub const APP_PROTOCOL: HeaderName = HeaderName::from_static(headers::APP_PROTOCOL);
/// The authenticated SPIFFE ID of the calling workload, for the app.
pub const PEER_ID: HeaderName = HeaderName::from_static(headers::PEER_ID);

/// On every response the proxy made itself: the [`ErrorKind`] in dashes.
pub const PROXY_ERROR: HeaderName = HeaderName::from_static(headers::PROXY_ERROR);

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Who reads an error the proxy makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Sent `content-type: application/grpc*`: answered as gRPC.
    pub grpc: bool,
    /// Outside the mesh (gateway): gets a generic message, never internal
    /// addresses, workload names, service keys or SPIFFE IDs; the detail
    /// goes to the log.
    pub external: bool,
}

impl Caller {
    pub fn of(headers: &HeaderMap, external: bool) -> Caller {
        Caller {
            grpc: is_grpc(headers),
            external,
        }
    }
}

/// True for gRPC requests (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for an HTTP status, as gRPC itself maps them when a
/// proxy answers instead of the server.
pub fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 | 405 => 12,             // UNIMPLEMENTED
        431 | 413 => 8,              // RESOURCE_EXHAUSTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// A message an external caller may read: the status and the kind only.
pub fn public_message(status: StatusCode, kind: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    format!("{reason} ({kind})")
}

/// `grpc-message` is percent-encoded outside printable ASCII (and `%`).
fn grpc_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("proxy error"))
}

/// An error response made by the proxy: plain text (or a trailers-only gRPC
/// answer for gRPC callers) carrying `mycel-proxy-error: <kind>`. `detail`
/// is the body for mesh callers; external ones get [`public_message`].
pub fn proxy_error(
    status: StatusCode,
    kind: ErrorKind,
    detail: impl std::fmt::Display,
    caller: Caller,
) -> Response<Body> {
    let kind_value = kind.header_value();
    let message = if caller.external {
        public_message(status, kind_value)
    } else {
        detail.to_string()
    };
    let mut res = if caller.grpc {
        let mut res = Response::new(empty());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        // The proxy knows it ran out of time: the caller's deadline (or
        // the policy's) passed, which gRPC calls DEADLINE_EXCEEDED rather
        // than the UNAVAILABLE a bare 504 maps to.
        let code = match kind {
            ErrorKind::Timeout => 4,
            _ => grpc_code(status),
        };
        h.insert(GRPC_STATUS, HeaderValue::from(code));
        h.insert(GRPC_MESSAGE, grpc_message(&message));
        res
    } else {
        text(status, message)
    };
    res.headers_mut()
        .insert(PROXY_ERROR, HeaderValue::from_static(kind_value));
    res
}

/// For external callers: replaces the detail of an error another proxy
/// made (a peer sidecar's `app unreachable at <address>`) with the generic
/// message; the status and kind stay. Application responses pass as they are.
pub fn redact_proxy_error(res: Response<Body>, caller: Caller) -> Response<Body> {
    let Some(kind) = res.headers().get(&PROXY_ERROR).cloned() else {
        return res;
    };
    let kind_text = kind.to_str().unwrap_or("error").to_string();
    let (mut parts, _body) = res.into_parts();
    if parts.headers.contains_key(&GRPC_STATUS) {
        parts.headers.insert(
            GRPC_MESSAGE,
            grpc_message(&public_message(StatusCode::SERVICE_UNAVAILABLE, &kind_text)),
        );
        return Response::from_parts(parts, empty());
    }
    // Only the body and headers are redacted: what the proxy noted about
    // the request for its own telemetry stays.
    let extensions = std::mem::take(&mut parts.extensions);
    let mut fresh = if caller.grpc {
        let mut r = Response::new(empty());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r.headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(grpc_code(parts.status)));
        r.headers_mut().insert(
            GRPC_MESSAGE,
            grpc_message(&public_message(parts.status, &kind_text)),
        );
        r
    } else {
        text(parts.status, public_message(parts.status, &kind_text))
    };
    fresh.headers_mut().insert(PROXY_ERROR, kind);
    // What tells the client how to go on (authenticate, wait, which
    // origins may read the answer) is no detail of the mesh: it stays.
    for (name, value) in &parts.headers {
        if kept_on_redaction(name) {
            fresh.headers_mut().append(name.clone(), value.clone());
        }
    }
    *fresh.extensions_mut() = extensions;
    fresh
}

fn kept_on_redaction(name: &HeaderName) -> bool {
    let n = name.as_str();
    name == header::WWW_AUTHENTICATE
        || name == header::RETRY_AFTER
        || name == header::VARY
        || n.starts_with("ratelimit-")
        || n.starts_with("access-control-")
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pin_project_lite::pin_project! {
    /// A body that keeps `guard` alive until the body is dropped (its end
    /// or its abandonment), e.g. a circuit breaker permit for a response
    /// still streaming.
    pub struct Held<G> {
        #[pin]
        inner: Body,
        guard: G,
    }
}

impl<G> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body cut off after `left` bytes: the frame that goes over
    /// ends the body with an error and sets `over`, so whoever forwarded it
    /// can answer 413 instead of the upstream failure the cut causes.
    pub struct CappedBody {
        #[pin]
        inner: Body,
        left: u64,
        over: Arc<AtomicBool>,
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                let n = data.len() as u64;
                if n > *this.left {
                    this.over.store(true, Ordering::Release);
                    return std::task::Poll::Ready(Some(Err("request body over the limit".into())));
                }
                *this.left -= n;
            }
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body` cut off after `max` bytes, and the flag saying it was.
pub fn cap_body(body: Body, max: u64) -> (Body, Arc<AtomicBool>) {
    let over = Arc::new(AtomicBool::new(false));
    let capped = CappedBody {
        inner: body,
        left: max,
        over: over.clone(),
    };
    (BodyExt::boxed(capped), over)
}

/// `body`, holding `guard` until it is dropped.
pub fn hold<G: Send + Sync + 'static>(body: Body, guard: G) -> Body {
    BodyExt::boxed(Held { inner: body, guard })
}

pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A plain-text response; `message` ends up as the body with a newline.
pub fn text(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Removes headers that describe one connection rather than the message
/// (RFC 9110 §7.6.1), including any the `Connection` header names. `TE:
/// trailers` survives: gRPC servers require it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(&name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "close"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip, trailers"),
            ("x-keep", "yes"),
            ("content-type", "application/grpc"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["content-type=application/grpc", "te=trailers", "x-keep=yes"]
        );
    }

    fn body_text(res: Response<Body>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(res.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn proxy_errors_carry_their_kind_and_hide_detail_from_external_callers() {
        let detail = "no ready endpoints for catalog.shop (catalog-1 at 127.0.0.3:15006)";
        let mesh = Caller {
            grpc: false,
            external: false,
        };
        let res = proxy_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoEndpoints,
            detail,
            mesh,
        );
        assert_eq!(res.headers()[PROXY_ERROR], "no-endpoints");
        assert_eq!(body_text(res), format!("{detail}\n"));

        let external = Caller {
            grpc: false,
            external: true,
        };
        let res = proxy_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoEndpoints,
            detail,
            external,
        );
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_text(res), "Service Unavailable (no-endpoints)\n");
    }

    #[test]
    fn grpc_callers_get_a_grpc_status() {
        let caller = Caller {
            grpc: true,
            external: false,
        };
        let res = proxy_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoEndpoints,
            "no endpoints: 100%",
            caller,
        );
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["grpc-message"], "no endpoints: 100%25");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        let late = proxy_error(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Timeout,
            "late",
            caller,
        );
        assert_eq!(late.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
        assert_eq!(grpc_code(StatusCode::NOT_FOUND), 12);
        assert_eq!(grpc_code(StatusCode::FORBIDDEN), 7);
        assert_eq!(grpc_code(StatusCode::BAD_GATEWAY), 14);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
    }

    #[test]
    fn peer_errors_are_redacted_for_external_callers() {
        let peer = proxy_error(
            StatusCode::BAD_GATEWAY,
            ErrorKind::AppConnect,
            "app unreachable at 127.0.0.9:8080",
            Caller {
                grpc: false,
                external: false,
            },
        );
        let out = redact_proxy_error(
            peer,
            Caller {
                grpc: false,
                external: true,
            },
        );
        assert_eq!(out.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(out.headers()[PROXY_ERROR], "app-connect");
        assert_eq!(body_text(out), "Bad Gateway (app-connect)\n");

        let app = text(StatusCode::BAD_GATEWAY, "the app's own 502 at 10.0.0.1");
        let out = redact_proxy_error(
            app,
            Caller {
                grpc: false,
                external: true,
            },
        );
        assert_eq!(body_text(out), "the app's own 502 at 10.0.0.1\n");
    }

    /// A 401 or 429 whose challenge or retry advice were dropped on
    /// redaction would leave the client nothing to act on.
    #[test]
    fn redaction_keeps_what_tells_the_client_how_to_go_on() {
        let mut refusal = proxy_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimited,
            "rate limit of shop/api reached",
            Caller {
                grpc: false,
                external: true,
            },
        );
        let h = refusal.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mycel\""),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        h.insert("x-upstream-detail", HeaderValue::from_static("10.0.0.7"));
        let out = redact_proxy_error(
            refusal,
            Caller {
                grpc: false,
                external: true,
            },
        );
        let h = out.headers();
        assert_eq!(h[header::RETRY_AFTER], "3");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer realm=\"mycel\"");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert!(!h.contains_key("x-upstream-detail"), "{h:?}");
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
