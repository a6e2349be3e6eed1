//! Which app port (and protocol) an inbound request is for. Pure: the rules
//! that keep a peer from reaching ports the workload never declared.

use http::header::HeaderMap;
use http::Method;

use crate::core::http::{APP_PROTOCOL, DST_PORT};

/// How the sidecar talks to the app on that port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (gRPC and other h2 apps).
    H2c,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppTarget {
    pub port: u16,
    pub protocol: AppProtocol,
}

/// A request the inbound side refuses before touching the app.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("missing mycel-dst-port header")]
    MissingPort,
    #[error("mycel-dst-port {0:?} is not a port number")]
    BadPort(String),
    #[error("CONNECT target {0:?} is not <address>:<port>")]
    BadConnect(String),
    #[error("port {0} is not a port of this workload")]
    Refused(u16),
}

impl TargetError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            TargetError::Refused(_) => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The app port of a forwarded HTTP request, from its headers.
pub fn http_target(headers: &HeaderMap, app_ports: &[u16]) -> Result<AppTarget, TargetError> {
    let raw = headers.get(DST_PORT).ok_or(TargetError::MissingPort)?;
    let text = String::from_utf8_lossy(raw.as_bytes()).into_owned();
    let port: u16 = text
        .trim()
        .parse()
        .map_err(|_| TargetError::BadPort(text.clone()))?;
    let port = allowed(port, app_ports)?;
    let protocol = match headers.get(APP_PROTOCOL) {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"h2") => AppProtocol::H2c,
        _ => AppProtocol::Http1,
    };
    Ok(AppTarget { port, protocol })
}

/// The app port of a CONNECT tunnel, from its `<address>:<port>` authority.
/// The address is the client's view of ours; only the port matters.
pub fn connect_target(
    method: &Method,
    authority: Option<&str>,
    app_ports: &[u16],
) -> Result<u16, TargetError> {
    debug_assert_eq!(method, Method::CONNECT);
    let authority = authority.unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| TargetError::BadConnect(authority.to_string()))?;
    allowed(port, app_ports)
}

fn allowed(port: u16, app_ports: &[u16]) -> Result<u16, TargetError> {
    if app_ports.contains(&port) {
        Ok(port)
    } else {
        Err(TargetError::Refused(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn http_targets() {
        let ports = [8080, 9090];
        type Case = (
            Vec<(&'static str, &'static str)>,
            Result<AppTarget, TargetError>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("mycel-dst-port", "8080")],
                Ok(AppTarget {
                    port: 8080,
                    protocol: AppProtocol::Http1,
                }),
            ),
            (
                vec![("mycel-dst-port", "9090"), ("mycel-app-protocol", "h2")],
                Ok(AppTarget {
                    port: 9090,
                    protocol: AppProtocol::H2c,
                }),
            ),
            (
                vec![
                    ("mycel-dst-port", "9090"),
                    ("mycel-app-protocol", "http/1.1"),
                ],
                Ok(AppTarget {
                    port: 9090,
                    protocol: AppProtocol::Http1,
                }),
            ),
            (vec![], Err(TargetError::MissingPort)),
            (
                vec![("mycel-dst-port", "eighty")],
                Err(TargetError::BadPort("eighty".into())),
            ),
            (
                vec![("mycel-dst-port", "70000")],
                Err(TargetError::BadPort("70000".into())),
            ),
            (
                vec![("mycel-dst-port", "22")],
                Err(TargetError::Refused(22)),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(http_target(&headers(&h), &ports), want, "{h:?}");
        }
    }

    #[test]
    fn connect_targets() {
        let ports = [5432];
        let cases = [
            (Some("10.0.0.1:5432"), Ok(5432)),
            (Some("[::1]:5432"), Ok(5432)),
            (Some("10.0.0.1:22"), Err(TargetError::Refused(22))),
            (
                Some("10.0.0.1"),
                Err(TargetError::BadConnect("10.0.0.1".into())),
            ),
            (Some(":5432"), Err(TargetError::BadConnect(":5432".into()))),
            (None, Err(TargetError::BadConnect(String::new()))),
        ];
        for (authority, want) in cases {
            assert_eq!(
                connect_target(&Method::CONNECT, authority, &ports),
                want,
                "{authority:?}"
            );
        }
    }
}
