//! `GET /debug/authz/explain?from=..&to=..`: the HTTP side of
//! [`crate::authz::explain`]. Reads the query, gathers the service and the
//! workloads behind it from the index, and answers JSON: the explanation
//! (200), or `{"error": ..}` naming what is wrong with the question (400)
//! or that the service is unknown (404).
//!
//! Query: `from` (a SPIFFE ID, or `unauthenticated`), `to` (a service key
//! `<name>.<namespace>`), and optionally `port` (a service port), `path`,
//! `method`, `host`, `source_ip`, and `header=<name>:<value>` (repeated).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use mycel_api::names::ServiceKey;
use mycel_api::spiffe::SpiffeId;

use super::{AdminState, Reply};
use crate::authz::explain::{explain, Backend, Question};

pub const PATH: &str = "/debug/authz/explain";

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("missing query parameter {0:?}")]
    Missing(&'static str),
    #[error("query parameter {name:?}: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("the query is not valid percent-encoded UTF-8")]
    Encoding,
}

pub fn reply(state: &AdminState, method: &Method, query: Option<&str>) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
    }
    let (key, q) = match parse(query.unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let ix = state.index.lock();
    let Some(service) = ix.service(&key) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no service {key} in the controller's config"),
        );
    };
    let workloads = ix.workloads_behind(service);
    let backends: Vec<Backend<'_>> = workloads
        .iter()
        .map(|w| Backend {
            name: &w.name,
            namespace: &w.namespace,
            labels: &w.labels,
            ready: w.ready,
        })
        .collect();
    match explain(ix.authorization(), service, &backends, &q) {
        Ok(answer) => match serde_json::to_string_pretty(&answer) {
            Ok(json) => Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: json + "\n",
            },
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode: {e}"),
            ),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: serde_json::json!({ "error": message }).to_string() + "\n",
    }
}

fn parse(query: &str) -> Result<(ServiceKey, Question), QueryError> {
    let mut from = None;
    let mut to = None;
    let mut q = Question {
        method: "GET".into(),
        path: "/".into(),
        ..Question::default()
    };
    let mut headers = HeaderMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match decode(name)?.as_str() {
            "from" => from = Some(value),
            "to" => to = Some(value),
            "port" => {
                q.port = Some(value.parse().map_err(|_| QueryError::Invalid {
                    name: "port",
                    problem: format!("{value:?} is not a port number"),
                })?)
            }
            "path" if value.starts_with('/') => q.path = value,
            "path" => {
                return Err(QueryError::Invalid {
                    name: "path",
                    problem: format!("{value:?} does not start with /"),
                })
            }
            "method" if !value.is_empty() => q.method = value.to_ascii_uppercase(),
            "host" if !value.is_empty() => q.host = Some(value),
            "source_ip" => {
                q.source_ip = Some(value.parse::<IpAddr>().map_err(|_| QueryError::Invalid {
                    name: "source_ip",
                    problem: format!("{value:?} is not an IP address"),
                })?)
            }
            "header" => {
                let (name, value) = header(&value)?;
                headers.append(name, value);
            }
            other => {
                return Err(QueryError::Invalid {
                    name: "query",
                    problem: format!(
                        "unknown parameter {other:?} (from, to, port, path, method, host, source_ip, header)"
                    ),
                })
            }
        }
    }
    q.headers = headers;
    let from = from.ok_or(QueryError::Missing("from"))?;
    q.caller = match from.as_str() {
        "unauthenticated" => None,
        id => Some(id.parse::<SpiffeId>().map_err(|e| QueryError::Invalid {
            name: "from",
            problem: e.to_string(),
        })?),
    };
    let to = to.ok_or(QueryError::Missing("to"))?;
    let key = ServiceKey::parse(&to).map_err(|e| QueryError::Invalid {
        name: "to",
        problem: e.to_string(),
    })?;
    Ok((key, q))
}

/// `<name>:<value>`.
fn header(text: &str) -> Result<(HeaderName, HeaderValue), QueryError> {
    let invalid = |problem: String| QueryError::Invalid {
        name: "header",
        problem,
    };
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| invalid(format!("{text:?} is not <name>:<value>")))?;
    let name = HeaderName::try_from(name.trim())
        .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
    let value = HeaderValue::try_from(value.trim())
        .map_err(|_| invalid(format!("{value:?} is not a header value")))?;
    Ok((name, value))
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(QueryError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| QueryError::Encoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| QueryError::Encoding)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding)
}

#[cfg(test)]
mod tests;
