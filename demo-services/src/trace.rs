//! Trace context passed from a request a service serves to the calls it
//! makes for it. The apps make no spans of their own: the sidecars do, and
//! an app's only part is to carry the context across, as every app in a
//! mesh must for its requests to form one trace.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers of W3C Trace Context and of B3 (single and multi).
const NAMES: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The trace headers of one incoming request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeaders(Vec<(HeaderName, HeaderValue)>);

impl TraceHeaders {
    /// No context: the call starts no trace.
    pub const NONE: TraceHeaders = TraceHeaders(Vec::new());
}

/// No context, borrowed for as long as needed.
pub static NO_TRACE: TraceHeaders = TraceHeaders::NONE;

impl TraceHeaders {
    pub fn of(headers: &HeaderMap) -> Self {
        TraceHeaders(
            NAMES
                .iter()
                .filter_map(|name| {
                    let value = headers.get(*name)?;
                    Some((HeaderName::from_static(name), value.clone()))
                })
                .collect(),
        )
    }

    /// Of a gRPC request (its metadata is the request's headers).
    pub fn of_grpc<T>(req: &tonic::Request<T>) -> Self {
        Self::of(&req.metadata().clone().into_headers())
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// A gRPC request carrying this context.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut headers = HeaderMap::new();
        self.apply(&mut headers);
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        req
    }
}

/// The trace id of a request: from W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`), else B3 (`b3: <id>-...` or
/// `x-b3-traceid`); `None` when absent or malformed, so nothing a client
/// sends unchecked reaches the page.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hex = |s: &str, lens: &[usize]| {
        lens.contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && s.bytes().any(|b| b != b'0')
    };
    if let Some(tp) = text("traceparent") {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [version, id, span, flags, ..] = parts[..] {
            if version.len() == 2 && hex(id, &[32]) && hex(span, &[16]) && flags.len() == 2 {
                return Some(id.to_ascii_lowercase());
            }
        }
    }
    let b3 = text("b3").and_then(|v| v.split('-').next());
    [b3, text("x-b3-traceid")]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|id| hex(id, &[16, 32]))
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_table() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Headers, Option<&str>); 8] = [
            (
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
                Some(id),
            ),
            (
                &[(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                )],
                Some(id),
            ),
            (
                &[(
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                )],
                None,
            ),
            (&[("traceparent", "00-<script>-00f067aa0ba902b7-01")], None),
            (
                &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")],
                Some(id),
            ),
            (
                &[("x-b3-traceid", "a3ce929d0e0e4736")],
                Some("a3ce929d0e0e4736"),
            ),
            (&[("x-b3-traceid", "xyz")], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            assert_eq!(trace_id(&map).as_deref(), want, "{headers:?}");
        }
    }

    #[test]
    fn trace_headers_are_carried_and_others_are_not() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        incoming.insert("x-b3-sampled", HeaderValue::from_static("1"));
        incoming.insert("authorization", HeaderValue::from_static("secret"));
        let trace = TraceHeaders::of(&incoming);
        let mut out = HeaderMap::new();
        trace.apply(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out["traceparent"], incoming["traceparent"]);
        assert!(!out.contains_key("authorization"));
        let req = trace.grpc_request(());
        assert_eq!(req.metadata().get("x-b3-sampled").unwrap(), "1");
    }
}
