//! Trace context in request headers: W3C Trace Context (`traceparent`,
//! `tracestate`) and B3, single (`b3`) and multi (`x-b3-*`) header forms.
//!
//! A proxy that makes a span passes on the caller's trace with its own
//! span as the parent, in the formats the request came with, so an app
//! that only knows B3 keeps working. `tracestate` is passed on untouched:
//! its entries belong to the vendors that wrote them.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which formats a request carried (and so which to write back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_single: bool,
    pub b3_multi: bool,
}

impl Formats {
    /// What a proxy writes when it starts a trace.
    pub const NEW_TRACE: Formats = Formats {
        w3c: true,
        b3_single: true,
        b3_multi: false,
    };
}

/// What the caller said about the trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// No usable trace context.
    None,
    /// A trace whose caller chose not to record it (`sampled` unset, or
    /// `b3: 0`): passed on untouched, no span made.
    NotSampled,
    /// A recorded trace to continue.
    Sampled {
        parent: SpanContext,
        formats: Formats,
    },
}

/// Reads the caller's context: `traceparent` first (the standard), then
/// `b3`, then the `x-b3-*` headers. An invalid header is ignored, as if
/// absent (a caller cannot make the proxy fail with a bad trace header).
pub fn extract(headers: &HeaderMap) -> Incoming {
    let mut formats = Formats {
        w3c: headers.contains_key(TRACEPARENT),
        b3_single: headers.contains_key(B3),
        b3_multi: headers.contains_key(B3_TRACE_ID),
    };
    let parsed = header_str(headers, &TRACEPARENT)
        .and_then(|v| parse_traceparent(v, header_str(headers, &TRACESTATE)))
        .or_else(|| header_str(headers, &B3).and_then(parse_b3_single))
        .or_else(|| parse_b3_multi(headers));
    match parsed {
        None => Incoming::None,
        Some(Parsed::Deny) => Incoming::NotSampled,
        Some(Parsed::Context(cx)) if !cx.is_sampled() => Incoming::NotSampled,
        Some(Parsed::Context(parent)) => {
            // A header that did not parse is rewritten like the others, so
            // the next hop never sees two disagreeing parents.
            if !(formats.w3c || formats.b3_single || formats.b3_multi) {
                formats = Formats::NEW_TRACE;
            }
            Incoming::Sampled { parent, formats }
        }
    }
}

/// Writes `cx` (the proxy's own span) as the parent for the next hop.
pub fn inject(headers: &mut HeaderMap, cx: &SpanContext, formats: Formats) {
    let trace = cx.trace_id().to_string();
    let span = cx.span_id().to_string();
    let sampled = if cx.is_sampled() { "1" } else { "0" };
    if formats.w3c {
        let flags = if cx.is_sampled() { "01" } else { "00" };
        if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{span}-{flags}")) {
            headers.insert(TRACEPARENT, v);
        }
    }
    if formats.b3_single {
        if let Ok(v) = HeaderValue::from_str(&format!("{trace}-{span}-{sampled}")) {
            headers.insert(B3, v);
        }
    }
    if formats.b3_multi {
        for (name, value) in [
            (B3_TRACE_ID, trace.as_str()),
            (B3_SPAN_ID, span.as_str()),
            (B3_SAMPLED, sampled),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        // The proxy's span is the new parent; the caller's parent id would
        // now be wrong, and debug is a caller's choice already carried.
        headers.remove(B3_PARENT_SPAN_ID);
    }
}

enum Parsed {
    Context(SpanContext),
    /// B3's "do not sample" with no ids.
    Deny,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn context(
    trace: [u8; 16],
    span: [u8; 8],
    sampled: bool,
    state: TraceState,
) -> Option<SpanContext> {
    let (trace, span) = (TraceId::from_bytes(trace), SpanId::from_bytes(span));
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(trace, span, flags, true, state))
}

/// `version-traceid-parentid-flags`; a later version may append fields.
fn parse_traceparent(v: &str, state: Option<&str>) -> Option<Parsed> {
    let mut parts = v.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !(lower_hex(trace) && lower_hex(span) && flags.len() == 2 && lower_hex(flags)) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = state
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    context(hex_id(trace)?, hex_id(span)?, flags & 1 == 1, state).map(Parsed::Context)
}

/// A 64-bit B3 trace id is the low half of a 128-bit one.
fn b3_trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex_id::<16>(s),
        16 => {
            let low = hex_id::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// `{trace}-{span}[-{sampling}[-{parent}]]`, or just the sampling state.
fn parse_b3_single(v: &str) -> Option<Parsed> {
    let parts: Vec<&str> = v.splitn(5, '-').collect();
    match parts.as_slice() {
        ["0"] => Some(Parsed::Deny),
        // Sampling only, no ids: nothing to continue.
        [_] => None,
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let sampled = match rest.first() {
                None => true,
                Some(&"1") | Some(&"d") => true,
                Some(&"0") => false,
                Some(_) => return None,
            };
            b3_context(trace, span, sampled)
        }
        _ => None,
    }
}

/// B3 carries no trace state.
fn b3_context(trace: &str, span: &str, sampled: bool) -> Option<Parsed> {
    context(
        b3_trace_id(trace)?,
        hex_id(span)?,
        sampled,
        TraceState::default(),
    )
    .map(Parsed::Context)
}

fn parse_b3_multi(headers: &HeaderMap) -> Option<Parsed> {
    let trace = header_str(headers, &B3_TRACE_ID)?;
    let span = header_str(headers, &B3_SPAN_ID)?;
    let debug = header_str(headers, &B3_FLAGS) == Some("1");
    let sampled = match header_str(headers, &B3_SAMPLED) {
        None => true,
        Some("1") | Some("true") => true,
        Some("0") | Some("false") => debug,
        Some(_) => return None,
    } || debug;
    b3_context(trace, span, sampled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn sampled(h: &HeaderMap) -> (String, String, Formats) {
        match extract(h) {
            Incoming::Sampled { parent, formats } => (
                parent.trace_id().to_string(),
                parent.span_id().to_string(),
                formats,
            ),
            other => panic!("not sampled: {other:?}"),
        }
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_traceparent_is_read_with_its_flags() {
        let h = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        let (t, s, f) = sampled(&h);
        assert_eq!((t.as_str(), s.as_str()), (TRACE, SPAN));
        assert!(f.w3c && !f.b3_single && !f.b3_multi);
        let h = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
        assert_eq!(extract(&h), Incoming::NotSampled);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            format!("00-{TRACE}-{SPAN}"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-{TRACE}x-{SPAN}-01"),
            "x".repeat(4000),
        ] {
            assert_eq!(
                extract(&headers(&[("traceparent", &bad)])),
                Incoming::None,
                "{bad}"
            );
        }
        // A later version may carry more fields.
        let h = headers(&[("traceparent", &format!("01-{TRACE}-{SPAN}-01-more"))]);
        assert_eq!(sampled(&h).0, TRACE);
    }

    #[test]
    fn b3_single_and_multi_are_read() {
        let h = headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))]);
        let (t, s, f) = sampled(&h);
        assert_eq!((t.as_str(), s.as_str()), (TRACE, SPAN));
        assert!(f.b3_single && !f.w3c);
        assert_eq!(extract(&headers(&[("b3", "0")])), Incoming::NotSampled);
        assert_eq!(
            extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-0"))])),
            Incoming::NotSampled
        );
        // 64-bit trace ids are widened.
        let h = headers(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", SPAN)]);
        let (t, _, f) = sampled(&h);
        assert_eq!(t, "0000000000000000a3ce929d0e0e4736");
        assert!(f.b3_multi);
        let h = headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        assert_eq!(sampled(&h).0, TRACE, "debug forces sampling");
    }

    #[test]
    fn traceparent_wins_over_b3_and_both_are_rewritten() {
        let other = "a3ce929d0e0e47364bf92f3577b34da6";
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("b3", &format!("{other}-{SPAN}-1")),
        ]);
        let (t, _, f) = sampled(&h);
        assert_eq!(t, TRACE);
        assert!(f.w3c && f.b3_single);
    }

    #[test]
    fn inject_writes_the_formats_the_request_came_with() {
        let cx = SpanContext::new(
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut h = headers(&[
            ("tracestate", "vendor=opaque"),
            ("x-b3-parentspanid", "2222222222222222"),
        ]);
        inject(
            &mut h,
            &cx,
            Formats {
                w3c: true,
                b3_single: false,
                b3_multi: true,
            },
        );
        assert_eq!(
            h["traceparent"],
            format!("00-{TRACE}-1111111111111111-01").as_str()
        );
        assert_eq!(h["tracestate"], "vendor=opaque");
        assert_eq!(h["x-b3-traceid"], TRACE);
        assert_eq!(h["x-b3-spanid"], "1111111111111111");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert!(!h.contains_key("b3"));
    }
}
