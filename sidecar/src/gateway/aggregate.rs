//! Response aggregation: a gateway rule that answers one request by asking
//! several backends at once and merging their JSON answers into one object
//! (the demo's product page: `GET /api/product-view/{id}` is the product,
//! its reviews and its rating in one call).
//!
//! - [`Aggregation`] and [`Part`]: the configuration, plain data checked by
//!   [`Aggregation::check`]; each part's path comes from a
//!   [`PathTemplate`] rendered from the client's request ([`template`]
//!   says what a client may not inject through it).
//! - [`Fetch`]: how a part is asked, the only I/O; the wiring implements it
//!   over the mesh's outbound pool (and adds the identity headers the
//!   gateway sets), tests with a fake.
//! - [`aggregate`]: the fan-out and the merge.
//!
//! The parts run concurrently in the request's task (polled together, not
//! spawned: nothing outlives the request), each under its own timeout,
//! which covers its headers and its whole body, so the answer never takes
//! longer than the largest part timeout; a required part failing decides
//! the answer at once and the others are dropped, not waited for. Each body is read up to
//! [`Aggregation::max_body_bytes`] and abandoned beyond it, never buffered
//! whole, so the merged answer is bounded by the sum of the caps.
//!
//! A part counts when it answers 2xx with JSON (`application/json`, a
//! `+json` type, or no content type and a body that parses). The answer is
//! `{"<name>": <the part's JSON, byte for byte>, ...}` in the
//! configuration's order; a failed optional part is `null` and listed in
//! `"_partial": [{"part": .., "error": ..}]` (present only when something
//! failed; part names start with a letter, so no part can be called
//! `_partial`). A failed required part fails the whole answer: `504` when
//! it timed out, `502` otherwise, and `400` when the client's path could
//! not be rendered into it (the request's fault, not the backend's). The
//! header `mycel-aggregate` says `complete` or `partial`.
//!
//! What reaches the client about a failure is a short reason (`timeout`,
//! `status 404`, `too large`, `not json`, `unavailable`, `path refused`):
//! the fetch error's detail (addresses, workload names) goes to the log
//! only, as for every other answer the gateway makes to an external caller.
//!
//! Headers: a part gets only [`FORWARDED_HEADERS`] from the client's
//! request (trace context, language) plus `accept: application/json`. Not
//! `authorization` or cookies: the parts are other services than the one
//! the client meant to give a credential to, and the gateway's policy has
//! authenticated the request before it gets here; what identity the parts
//! see is the wiring's business, set in its [`Fetch`].
//!
//! Not done: methods other than GET and HEAD (405: merging the answers to a
//! write has no meaning), nested or renamed fields, caching of parts
//! (the gateway cache can hold the merged answer), retries (a part's
//! timeout is its whole budget), streaming the merged answer.

pub mod template;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::core::budget::{ByteBudget, Reservation};
use crate::core::http::{empty, Body};
pub use template::{PathTemplate, RenderError, TemplateError};

/// Most parts one aggregation may have: each is a concurrent request per
/// client request, so the fan-out is an amplification to bound.
pub const MAX_PARTS: usize = 16;
/// Default cap on one part's body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Largest cap a configuration may set: the merged answer is held in
/// memory, up to [`MAX_PARTS`] times this.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Room for part bodies the gateway holds at once, across every
/// aggregation (64 MiB).
pub const ROOM_TOTAL: usize = 64 << 20;
/// How far ahead of a part's body room is taken.
const ROOM_STEP: usize = 64 << 10;
/// Longest part timeout: longer is a job, not a page.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest part name (the regex `[a-z][a-z0-9_]{0,62}`).
pub const MAX_NAME_LEN: usize = 63;

/// Response header: `complete` or `partial`.
pub const AGGREGATE_HEADER: HeaderName = HeaderName::from_static("mycel-aggregate");

/// The client's headers a part gets: trace context, so the parts' spans
/// join the request's trace, and the language the client reads.
pub const FORWARDED_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    header::ACCEPT_LANGUAGE,
];

/// How one route answers by aggregation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub parts: Vec<Part>,
    /// Cap on each part's body ([`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// Headers of the request that every part gets besides
    /// [`FORWARDED_HEADERS`]: the identity the gateway's policy set (a
    /// token's forwarded claims, an API key's name), which the gateway
    /// put there itself after removing any copy the client sent.
    pub identity_headers: Vec<HeaderName>,
}

/// One backend asked, and the key its answer is merged under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// JSON key, `[a-z][a-z0-9_]{0,62}`.
    pub name: String,
    /// `<name>.<namespace>`.
    pub service: String,
    pub port: u16,
    pub path: PathTemplate,
    /// For the headers and the whole body.
    pub timeout: Duration,
    /// Without it the whole answer fails; otherwise it is `null` and
    /// listed in `_partial`.
    pub required: bool,
}

/// Why a configuration is refused; names the part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("an aggregation needs at least one part")]
    NoParts,
    #[error("{0} parts, more than the maximum {MAX_PARTS}")]
    TooManyParts(usize),
    #[error("part {index}: name {name:?} is not [a-z][a-z0-9_]{{0,62}}")]
    BadName { index: usize, name: String },
    #[error("part {0:?} is named twice")]
    DuplicateName(String),
    #[error("part {part:?}: service {service:?} is not <name>.<namespace>")]
    BadService { part: String, service: String },
    #[error("part {part:?}: port 0")]
    ZeroPort { part: String },
    #[error("part {part:?}: timeout {timeout:?} is not between 1ms and {MAX_TIMEOUT:?}")]
    BadTimeout { part: String, timeout: Duration },
    #[error("max_body_bytes is {0}, not between 1 and {MAX_BODY_BYTES}")]
    BadBodyCap(usize),
}

impl Aggregation {
    /// Parts with the default body cap.
    pub fn new(parts: Vec<Part>) -> Aggregation {
        Aggregation {
            parts,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            identity_headers: Vec::new(),
        }
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.parts.is_empty() {
            return Err(ConfigError::NoParts);
        }
        if self.parts.len() > MAX_PARTS {
            return Err(ConfigError::TooManyParts(self.parts.len()));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::BadBodyCap(self.max_body_bytes));
        }
        for (index, part) in self.parts.iter().enumerate() {
            if !valid_name(&part.name) {
                return Err(ConfigError::BadName {
                    index,
                    name: part.name.clone(),
                });
            }
            if self.parts[..index].iter().any(|p| p.name == part.name) {
                return Err(ConfigError::DuplicateName(part.name.clone()));
            }
            if !valid_service(&part.service) {
                return Err(ConfigError::BadService {
                    part: part.name.clone(),
                    service: part.service.clone(),
                });
            }
            if part.port == 0 {
                return Err(ConfigError::ZeroPort {
                    part: part.name.clone(),
                });
            }
            if part.timeout < Duration::from_millis(1) || part.timeout > MAX_TIMEOUT {
                return Err(ConfigError::BadTimeout {
                    part: part.name.clone(),
                    timeout: part.timeout,
                });
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Two DNS labels.
fn valid_service(service: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    matches!(service.split_once('.'), Some((name, ns)) if label(name) && label(ns))
}

/// A part could not be asked (no endpoints, connection refused, ...); the
/// message is for the log, never for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// How a part is asked: a GET of `path_and_query` on the part's service
/// and port with `headers`. The wiring implements it over the mesh.
pub trait Fetch: Send + Sync {
    fn get(
        &self,
        part: &Part,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, FetchError>> + Send + '_>>;
}

/// Why one part did not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("the request path cannot be used for this part: {0}")]
    Render(#[from] RenderError),
    #[error("fetch failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("timed out")]
    Timeout,
    #[error("body over {0} bytes")]
    TooLarge(usize),
    /// The gateway holds as many part bodies as its budget allows.
    #[error("no room to hold the body (gateway busy)")]
    Busy,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body could not be read: {0}")]
    Body(String),
}

impl PartError {
    /// The metric label of this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            PartError::Render(_) => "path_refused",
            PartError::Fetch(_) | PartError::Body(_) => "unavailable",
            PartError::Status(_) => "status",
            PartError::Timeout => "timeout",
            PartError::TooLarge(_) => "too_large",
            PartError::NotJson(_) => "not_json",
            PartError::Busy => "busy",
        }
    }

    /// What the client may read: no addresses, no workload names.
    pub fn reason(&self) -> String {
        match self {
            PartError::Render(_) => "path refused".into(),
            PartError::Fetch(_) | PartError::Body(_) => "unavailable".into(),
            PartError::Status(s) => format!("status {}", s.as_u16()),
            PartError::Timeout => "timeout".into(),
            PartError::TooLarge(_) => "too large".into(),
            PartError::NotJson(_) => "not json".into(),
            PartError::Busy => "gateway busy".into(),
        }
    }

    /// The status of the whole answer when a required part failed so.
    fn status(&self) -> StatusCode {
        match self {
            PartError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            PartError::Render(_) => StatusCode::BAD_REQUEST,
            PartError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Answers `request` by asking every part of `agg` through `fetch`.
/// `agg` is expected to have passed [`Aggregation::check`]. Part bodies
/// take their room from `room` as they arrive and keep it until the
/// merged answer is sent: past it a part fails as [`PartError::Busy`].
/// `observe` hears each part's result (`ok` or [`PartError::kind`]) as it
/// is known; parts still pending when a required one failed are not
/// heard (they were cancelled).
pub async fn aggregate(
    agg: &Aggregation,
    fetch: &dyn Fetch,
    request: &http::request::Parts,
    room: &ByteBudget,
    observe: &(dyn Fn(&Part, &'static str) + Sync),
) -> Response<Body> {
    let head = request.method == Method::HEAD;
    if request.method != Method::GET && !head {
        let mut res = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body("method not allowed", None, None),
            false,
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let headers = &forwarded(&request.headers, &agg.identity_headers);
    let path = request.uri.path();
    let query = request.uri.query();
    let mut pending: FuturesUnordered<_> = agg
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| async move {
            let answer = ask(part, fetch, path, query, headers, agg.max_body_bytes, room).await;
            (i, answer)
        })
        .collect();
    let mut answers = Vec::with_capacity(agg.parts.len());
    let mut held = Vec::with_capacity(agg.parts.len());
    while let Some((i, answer)) = pending.next().await {
        let answer = answer.map(|(json, reserved)| {
            held.push(reserved);
            json
        });
        let part = &agg.parts[i];
        observe(part, answer.as_ref().map_or_else(PartError::kind, |_| "ok"));
        if let Err(e) = &answer {
            tracing::info!(
                part = %part.name,
                service = %part.service,
                error = %e,
                "gateway aggregation: part failed"
            );
            if part.required {
                // The answer is decided: the other parts are dropped
                // (cancelled) rather than waited for.
                let reason = e.reason();
                let body = error_body("required part failed", Some(&part.name), Some(&reason));
                return json_response(e.status(), body, head);
            }
        }
        answers.push((i, answer));
    }
    answers.sort_unstable_by_key(|(i, _)| *i);

    let mut merged = Vec::new();
    let mut failed = Vec::new();
    merged.push(b'{');
    for (i, answer) in answers {
        let part = &agg.parts[i];
        if merged.len() > 1 {
            merged.push(b',');
        }
        // Checked names need no escaping; an unchecked one still makes
        // valid JSON.
        merged.extend_from_slice(
            serde_json::Value::from(part.name.as_str())
                .to_string()
                .as_bytes(),
        );
        merged.push(b':');
        match answer {
            Ok(json) => merged.extend_from_slice(&json),
            Err(e) => {
                merged.extend_from_slice(b"null");
                failed.push(serde_json::json!({"part": part.name, "error": e.reason()}));
            }
        }
    }
    let complete = failed.is_empty();
    if !complete {
        merged.extend_from_slice(b",\"_partial\":");
        merged.extend_from_slice(&serde_json::Value::Array(failed).to_string().into_bytes());
    }
    merged.push(b'}');
    // The merged copy takes the parts' place: their room is given back
    // once the answer is sent (or dropped).
    let mut res = json_response(StatusCode::OK, Bytes::from(merged), head)
        .map(|body| crate::core::http::hold(body, held));
    res.headers_mut().insert(
        AGGREGATE_HEADER,
        HeaderValue::from_static(if complete { "complete" } else { "partial" }),
    );
    res
}

/// The request's headers a part gets.
fn forwarded(client: &HeaderMap, identity: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_HEADERS.iter().chain(identity) {
        for value in client.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    out
}

/// One part, under its timeout: its JSON as the backend sent it, and the
/// room it holds.
async fn ask(
    part: &Part,
    fetch: &dyn Fetch,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    cap: usize,
    room: &ByteBudget,
) -> Result<(Bytes, Reservation), PartError> {
    let path_and_query = part.path.render(path, query)?;
    let fetched = async {
        let res = fetch.get(part, &path_and_query, headers).await?;
        if !res.status().is_success() {
            return Err(PartError::Status(res.status()));
        }
        // No content type at all: the body decides.
        if res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| !is_json_type(v))
        {
            return Err(PartError::NotJson("content type is not JSON".into()));
        }
        let (body, reserved) = read_capped(res.into_body(), cap, room).await?;
        // Validated without building a tree: the bytes are merged as
        // they came, so numbers keep their precision.
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|e| PartError::NotJson(e.to_string()))?;
        Ok((body, reserved))
    };
    tokio::time::timeout(part.timeout, fetched)
        .await
        .map_err(|_| PartError::Timeout)?
}

/// `application/json` or `application/<anything>+json`, any parameters.
fn is_json_type(value: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else {
        return false;
    };
    let media = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The body, or [`PartError::TooLarge`] as soon as it goes over `cap`
/// (the rest is never read: the body is dropped), or [`PartError::Busy`]
/// as soon as `room` has none left for it.
async fn read_capped(
    mut body: Body,
    cap: usize,
    room: &ByteBudget,
) -> Result<(Bytes, Reservation), PartError> {
    // A declared length over the cap fails before any byte is read.
    if http_body::Body::size_hint(&body).lower() > cap as u64 {
        return Err(PartError::TooLarge(cap));
    }
    let mut buf = BytesMut::new();
    let mut reserved = Reservation::empty();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| PartError::Body(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > cap {
                return Err(PartError::TooLarge(cap));
            }
            // Room is taken a step ahead, not per frame, so small frames
            // do not each cost a reservation.
            let needed = buf.len() + data.len();
            if needed > reserved.bytes()
                && !reserved.grow_to(room, needed.max(reserved.bytes() + ROOM_STEP).min(cap))
            {
                return Err(PartError::Busy);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok((buf.freeze(), reserved))
}

fn error_body(error: &str, part: Option<&str>, reason: Option<&str>) -> Bytes {
    let mut v = serde_json::json!({ "error": error });
    if let Some(part) = part {
        v["part"] = part.into();
    }
    if let Some(reason) = reason {
        v["reason"] = reason.into();
    }
    Bytes::from(v.to_string())
}

/// A JSON answer; for HEAD the same headers and no body.
fn json_response(status: StatusCode, body: Bytes, head: bool) -> Response<Body> {
    let len = body.len();
    let body = if head {
        empty()
    } else {
        Full::new(body).map_err(|never| match never {}).boxed()
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    res
}
