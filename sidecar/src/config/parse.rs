//! Parsers for single flag values; each error names the flag and the value.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use mycel_api::names::{self, NameKind, ServiceKey};

use super::names::{APP_PORT, LABEL, ROUTE, TCP_UPSTREAM};
use super::ConfigError;
use crate::discovery::Protocol;

/// A port of the local app, from `--app-port name:port[:proto]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A loopback port tunnelled to one service port, from
/// `--tcp-upstream LISTEN_ADDR=svc.ns:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpUpstream {
    pub listen: SocketAddr,
    /// Service key, `<name>.<namespace>`.
    pub service: String,
    pub port: u16,
}

/// A gateway route, from `--route [HOST]/PREFIX=svc.ns:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayRoute {
    /// Matched against the request's host (without port); `None` = any host.
    pub host: Option<String>,
    /// Path prefix, always starting with `/`.
    pub prefix: String,
    /// Service key, `<name>.<namespace>`.
    pub service: String,
    pub port: u16,
}

/// Port names follow the Kubernetes rule for them (a DNS label).
fn valid_name(s: &str) -> bool {
    names::validate(NameKind::Service, s).is_ok()
}

/// Checks a name flag with the mesh-wide rule for its kind.
pub(super) fn name(flag: &'static str, kind: NameKind, raw: &str) -> Result<(), ConfigError> {
    names::validate(kind, raw).map_err(|e| ConfigError::value(flag, raw, e.to_string()))
}

pub(super) fn ip(flag: &'static str, raw: &str) -> Result<IpAddr, ConfigError> {
    raw.parse()
        .map_err(|_| ConfigError::value(flag, raw, "not an IP address"))
}

pub(super) fn socket_addr(flag: &'static str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse()
        .map_err(|_| ConfigError::value(flag, raw, "not an IP:PORT socket address"))
}

pub(super) fn host_port(flag: &'static str, raw: &str) -> Result<(), ConfigError> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::value(flag, raw, "expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(ConfigError::value(flag, raw, "host is empty"));
    }
    port_number(flag, raw, port)?;
    Ok(())
}

pub(super) fn ttl(flag: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw).map_err(|e| {
        ConfigError::value(flag, raw, format!("not a duration ({e}); e.g. 24h, 90m"))
    })?;
    if d < Duration::from_secs(1) {
        return Err(ConfigError::value(flag, raw, "must be at least 1s"));
    }
    Ok(d)
}

/// A timeout or interval: 100ms to 1 day.
pub(super) fn duration(flag: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw).map_err(|e| {
        ConfigError::value(flag, raw, format!("not a duration ({e}); e.g. 10s, 500ms"))
    })?;
    if !(Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&d) {
        return Err(ConfigError::value(
            flag,
            raw,
            "must be between 100ms and 24h",
        ));
    }
    Ok(d)
}

/// The shutdown grace: 0 (close at once) to 10 minutes.
pub(super) fn grace(flag: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| ConfigError::value(flag, raw, format!("not a duration ({e}); e.g. 5s")))?;
    if d > Duration::from_secs(600) {
        return Err(ConfigError::value(flag, raw, "must be at most 10m"));
    }
    Ok(d)
}

/// A count in `range`; `what` names it in the error.
fn count(
    flag: &'static str,
    raw: &str,
    range: std::ops::RangeInclusive<usize>,
    what: &str,
) -> Result<usize, ConfigError> {
    match raw.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::value(
            flag,
            raw,
            format!("not a {what} in {}..={}", range.start(), range.end()),
        )),
    }
}

/// Connections per listener: 1 to 1,000,000.
pub(super) fn max_connections(flag: &'static str, raw: &str) -> Result<usize, ConfigError> {
    count(flag, raw, 1..=1_000_000, "connection count")
}

/// A header list size in bytes: 1 KiB to 16 MiB.
pub(super) fn header_bytes(flag: &'static str, raw: &str) -> Result<usize, ConfigError> {
    count(flag, raw, 1024..=16 * 1024 * 1024, "byte count")
}

/// A worker thread count: 1 to 256.
pub(super) fn threads(flag: &'static str, raw: &str) -> Result<usize, ConfigError> {
    count(flag, raw, 1..=256, "thread count")
}

fn port_number(flag: &'static str, whole: &str, raw: &str) -> Result<u16, ConfigError> {
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(ConfigError::value(
            flag,
            whole,
            format!("port {raw:?} is not a number in 1..=65535"),
        )),
        Ok(p) => Ok(p),
    }
}

pub(super) fn label(raw: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| ConfigError::value(LABEL, raw, "expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(ConfigError::value(LABEL, raw, "label key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub(super) fn protocol(
    flag: &'static str,
    whole: &str,
    raw: &str,
) -> Result<Protocol, ConfigError> {
    match raw {
        "http" => Ok(Protocol::Http),
        "http2" => Ok(Protocol::Http2),
        "grpc" => Ok(Protocol::Grpc),
        "tcp" => Ok(Protocol::Tcp),
        other => Err(ConfigError::value(
            flag,
            whole,
            format!("protocol {other:?} is not one of http, http2, grpc, tcp"),
        )),
    }
}

pub(super) fn app_port(raw: &str) -> Result<AppPort, ConfigError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, port, proto) = match parts.as_slice() {
        [name, port] => (*name, *port, None),
        [name, port, proto] => (*name, *port, Some(*proto)),
        _ => {
            return Err(ConfigError::value(
                APP_PORT,
                raw,
                "expected NAME:PORT[:PROTOCOL]",
            ))
        }
    };
    if !valid_name(name) {
        return Err(ConfigError::value(
            APP_PORT,
            raw,
            format!("port name {name:?} is not a valid name"),
        ));
    }
    Ok(AppPort {
        name: name.to_string(),
        port: port_number(APP_PORT, raw, port)?,
        protocol: proto
            .map(|p| protocol(APP_PORT, raw, p))
            .transpose()?
            .unwrap_or(Protocol::Http),
    })
}

/// `svc.ns` → the service key, checked.
pub(super) fn service_key(flag: &'static str, raw: &str) -> Result<String, ConfigError> {
    ServiceKey::parse(raw)
        .map(ServiceKey::into_string)
        .map_err(|e| ConfigError::value(flag, raw, e.to_string()))
}

/// `svc.ns:port` → (service key, port).
fn service_port(flag: &'static str, whole: &str, raw: &str) -> Result<(String, u16), ConfigError> {
    let (key, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::value(flag, whole, "target must be SVC.NS:PORT"))?;
    ServiceKey::parse(key).map_err(|e| ConfigError::value(flag, whole, e.to_string()))?;
    Ok((key.to_string(), port_number(flag, whole, port)?))
}

pub(super) fn tcp_upstream(raw: &str) -> Result<TcpUpstream, ConfigError> {
    let (listen, target) = raw
        .split_once('=')
        .ok_or_else(|| ConfigError::value(TCP_UPSTREAM, raw, "expected LISTEN_ADDR=SVC.NS:PORT"))?;
    let listen = listen.parse().map_err(|_| {
        ConfigError::value(
            TCP_UPSTREAM,
            raw,
            format!("listen address {listen:?} is not IP:PORT"),
        )
    })?;
    let (service, port) = service_port(TCP_UPSTREAM, raw, target)?;
    Ok(TcpUpstream {
        listen,
        service,
        port,
    })
}

pub(super) fn route(raw: &str) -> Result<GatewayRoute, ConfigError> {
    let (matcher, target) = raw
        .rsplit_once('=')
        .ok_or_else(|| ConfigError::value(ROUTE, raw, "expected [HOST]/PREFIX=SVC.NS:PORT"))?;
    let slash = matcher.find('/').ok_or_else(|| {
        ConfigError::value(ROUTE, raw, "path prefix must start with '/' (e.g. /api)")
    })?;
    let (host, prefix) = matcher.split_at(slash);
    let host = if host.is_empty() {
        None
    } else {
        let h = host.to_ascii_lowercase();
        if h.contains(':') || h.contains('*') || !h.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::value(
                ROUTE,
                raw,
                format!("host {host:?} must be a plain host name without port"),
            ));
        }
        Some(h)
    };
    let (service, port) = service_port(ROUTE, raw, target)?;
    Ok(GatewayRoute {
        host,
        prefix: prefix.to_string(),
        service,
        port,
    })
}
