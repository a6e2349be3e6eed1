//! Which outcomes of one try are worth another try, per a policy's
//! [`RetryOn`].
//!
//! Failures the proxy saw itself (connect, refused stream, reset, per-try
//! timeout) are retried when their own flag is on, and also under
//! `server_error` and `gateway_error`: the proxy would have answered them
//! with a 502/503/504 of its own, so a policy that retries gateway errors
//! expects them retried too (as Envoy's `5xx` and `gateway-error` do). A
//! per-try timeout has no flag of its own and is retried only that way.
//! The reason reported is always the precise failure, for metrics.
//!
//! gRPC: only a trailers-only answer carries `grpc-status` in the response
//! headers; a status that arrives in trailers after a body is not seen
//! here, because by then the response is already on its way to the caller.

use http::header::{HeaderMap, HeaderName};
use http::{Method, StatusCode};

use crate::core::directory::policy::RetryOn;
use crate::core::http::is_grpc;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A try that ended without response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryFailure {
    /// No connection to the endpoint (TCP connect, TLS, HTTP/2 handshake).
    Connect,
    /// The peer refused the stream before processing it (REFUSED_STREAM).
    RefusedStream,
    /// The connection or stream broke after the request was sent.
    Reset,
    /// The per-try timeout elapsed before response headers.
    Timeout,
}

impl TryFailure {
    /// True when the peer cannot have acted on the request, so even a
    /// non-idempotent one may be sent again.
    pub fn request_unprocessed(self) -> bool {
        matches!(self, TryFailure::Connect | TryFailure::RefusedStream)
    }
}

/// How one try ended.
#[derive(Clone, Copy, Debug)]
pub enum TryResult<'a> {
    Response {
        status: StatusCode,
        headers: &'a HeaderMap,
    },
    Failed(TryFailure),
}

/// Why a try is retried. A closed set: it becomes a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    ConnectFailure,
    RefusedStream,
    Reset,
    Timeout,
    ServerError,
    GatewayError,
    Retriable4xx,
    Status,
    Grpc,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect_failure",
            RetryReason::RefusedStream => "refused_stream",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::ServerError => "5xx",
            RetryReason::GatewayError => "gateway_error",
            RetryReason::Retriable4xx => "retriable_4xx",
            RetryReason::Status => "status",
            RetryReason::Grpc => "grpc",
        }
    }
}

/// The reason to retry `result` under `on`, or None when it stands.
/// Whether the method may be retried at all is the caller's question
/// ([`is_idempotent`], [`TryFailure::request_unprocessed`]).
pub fn should_retry(on: &RetryOn, result: TryResult<'_>) -> Option<RetryReason> {
    match result {
        TryResult::Failed(failure) => failure_reason(on, failure),
        TryResult::Response { status, headers } => response_reason(on, status, headers),
    }
}

fn failure_reason(on: &RetryOn, failure: TryFailure) -> Option<RetryReason> {
    let (own_flag, reason) = match failure {
        TryFailure::Connect => (on.connect_failure, RetryReason::ConnectFailure),
        TryFailure::RefusedStream => (on.refused_stream, RetryReason::RefusedStream),
        TryFailure::Reset => (on.reset, RetryReason::Reset),
        TryFailure::Timeout => (false, RetryReason::Timeout),
    };
    (own_flag || on.server_error || on.gateway_error).then_some(reason)
}

fn response_reason(on: &RetryOn, status: StatusCode, headers: &HeaderMap) -> Option<RetryReason> {
    let code = status.as_u16();
    if on.gateway_error && matches!(code, 502..=504) {
        return Some(RetryReason::GatewayError);
    }
    if on.server_error && status.is_server_error() {
        return Some(RetryReason::ServerError);
    }
    if on.retriable_4xx && code == 409 {
        return Some(RetryReason::Retriable4xx);
    }
    if on.statuses.contains(&code) {
        return Some(RetryReason::Status);
    }
    if !on.grpc_codes.is_empty() && is_grpc(headers) {
        let grpc = headers
            .get(&GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        if grpc.is_some_and(|c| on.grpc_codes.contains(&c)) {
            return Some(RetryReason::Grpc);
        }
    }
    None
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderValue, CONTENT_TYPE};

    use super::*;

    fn on(f: impl FnOnce(&mut RetryOn)) -> RetryOn {
        let mut on = RetryOn::default();
        f(&mut on);
        on
    }

    fn status(code: u16, on: &RetryOn) -> Option<RetryReason> {
        let headers = HeaderMap::new();
        let status = StatusCode::from_u16(code).unwrap();
        should_retry(
            on,
            TryResult::Response {
                status,
                headers: &headers,
            },
        )
    }

    fn grpc(content_type: &str, grpc_status: &str, on: &RetryOn) -> Option<RetryReason> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers.insert(GRPC_STATUS, HeaderValue::from_str(grpc_status).unwrap());
        should_retry(
            on,
            TryResult::Response {
                status: StatusCode::OK,
                headers: &headers,
            },
        )
    }

    #[test]
    fn statuses_by_flag() {
        use RetryReason::*;
        let none = RetryOn::default();
        let five = on(|o| o.server_error = true);
        let gw = on(|o| o.gateway_error = true);
        let both = on(|o| {
            o.server_error = true;
            o.gateway_error = true;
        });
        let conflict = on(|o| o.retriable_4xx = true);
        let listed = on(|o| o.statuses = vec![429, 500]);
        let cases: &[(u16, &RetryOn, Option<RetryReason>)] = &[
            (200, &five, None),
            (503, &none, None),
            (500, &five, Some(ServerError)),
            (599, &five, Some(ServerError)),
            (503, &five, Some(ServerError)),
            (499, &five, None),
            (500, &gw, None),
            (501, &gw, None),
            (502, &gw, Some(GatewayError)),
            (503, &gw, Some(GatewayError)),
            (504, &gw, Some(GatewayError)),
            (505, &gw, None),
            (503, &both, Some(GatewayError)),
            (500, &both, Some(ServerError)),
            (409, &conflict, Some(Retriable4xx)),
            (408, &conflict, None),
            (409, &five, None),
            (429, &listed, Some(Status)),
            (500, &listed, Some(Status)),
            (503, &listed, None),
        ];
        for &(code, on, want) in cases {
            assert_eq!(status(code, on), want, "{code} under {on:?}");
        }
    }

    #[test]
    fn failures_by_flag() {
        use TryFailure::*;
        type R = RetryReason;
        let none = RetryOn::default();
        let connect = on(|o| o.connect_failure = true);
        let refused = on(|o| o.refused_stream = true);
        let reset = on(|o| o.reset = true);
        let gw = on(|o| o.gateway_error = true);
        let five = on(|o| o.server_error = true);
        let cases: &[(TryFailure, &RetryOn, Option<RetryReason>)] = &[
            (Connect, &none, None),
            (Connect, &connect, Some(R::ConnectFailure)),
            (Connect, &refused, None),
            (Connect, &gw, Some(R::ConnectFailure)),
            (Connect, &five, Some(R::ConnectFailure)),
            (RefusedStream, &refused, Some(R::RefusedStream)),
            (RefusedStream, &reset, None),
            (RefusedStream, &gw, Some(R::RefusedStream)),
            (Reset, &reset, Some(R::Reset)),
            (Reset, &connect, None),
            (Reset, &five, Some(R::Reset)),
            (Timeout, &connect, None),
            (Timeout, &reset, None),
            (Timeout, &gw, Some(R::Timeout)),
            (Timeout, &five, Some(R::Timeout)),
        ];
        for &(failure, on, want) in cases {
            assert_eq!(
                should_retry(on, TryResult::Failed(failure)),
                want,
                "{failure:?} under {on:?}"
            );
        }
        assert!(Connect.request_unprocessed());
        assert!(RefusedStream.request_unprocessed());
        assert!(!Reset.request_unprocessed());
        assert!(!Timeout.request_unprocessed());
    }

    #[test]
    fn grpc_status_in_trailers_only_answers() {
        let unavailable = on(|o| o.grpc_codes = vec![14, 4]);
        let cases = [
            ("application/grpc", "14", Some(RetryReason::Grpc)),
            ("application/grpc+proto", "4", Some(RetryReason::Grpc)),
            ("application/grpc", " 14 ", Some(RetryReason::Grpc)),
            ("application/grpc", "0", None),
            ("application/grpc", "13", None),
            ("application/grpc", "fourteen", None),
            ("application/grpc", "-14", None),
            // Not gRPC: a grpc-status header means nothing.
            ("application/json", "14", None),
        ];
        for (ct, code, want) in cases {
            assert_eq!(grpc(ct, code, &unavailable), want, "{ct} {code}");
        }
        assert_eq!(grpc("application/grpc", "14", &RetryOn::default()), None);
        let mut no_status = HeaderMap::new();
        no_status.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let result = TryResult::Response {
            status: StatusCode::OK,
            headers: &no_status,
        };
        assert_eq!(should_retry(&unavailable, result), None);
    }

    #[test]
    fn reasons_are_a_closed_set_of_labels() {
        use RetryReason::*;
        let all = [
            ConnectFailure,
            RefusedStream,
            Reset,
            Timeout,
            ServerError,
            GatewayError,
            Retriable4xx,
            Status,
            Grpc,
        ];
        let labels: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "connect_failure",
                "refused_stream",
                "reset",
                "timeout",
                "5xx",
                "gateway_error",
                "retriable_4xx",
                "status",
                "grpc"
            ]
        );
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(
                is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(
                !is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }
}
