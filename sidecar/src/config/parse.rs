//! Value parsers for single flags, plugged into clap (`value_parser = ...`),
//! so a bad value is refused while parsing with clap's
//! `invalid value '<value>' for '--<flag> <VALUE>': <reason>`. The reasons
//! are [`ValueError`]s.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use mycel_api::names::{self, NameError, NameKind, ServiceKey, ServiceKeyError};

use mycel_api::protocol::Protocol;

use crate::gateway::route::GatewayRoute;

/// Why one flag value is refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("expected {0}")]
    Shape(&'static str),
    #[error("must not be empty")]
    Empty,
    #[error("host is empty")]
    EmptyHost,
    #[error("port {0:?} is not a number in 1..=65535")]
    Port(String),
    #[error("not a duration ({source}); e.g. {example}")]
    Duration {
        #[source]
        source: humantime::DurationError,
        example: &'static str,
    },
    /// `bounds` reads as "between 100ms and 24h", "at least 1s", ...
    #[error("must be {bounds}")]
    DurationOutOfRange { bounds: &'static str },
    #[error("must be {bounds}")]
    OutOfRange { bounds: &'static str },
    #[error("protocol {0:?} is not one of http, http2, grpc, tcp")]
    Protocol(String),
    #[error("port name {0:?} is not a valid name")]
    PortName(String),
    #[error("listen address {0:?} is not IP:PORT")]
    ListenAddr(String),
    #[error("path prefix must start with '/' (e.g. /api)")]
    PathPrefix,
    #[error("host {0:?} must be a plain host name without port")]
    RouteHost(String),
    #[error("target must be SVC.NS:PORT")]
    Target,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    ServiceKey(#[from] ServiceKeyError),
    #[error("{0:?} is not a number from 0 to 1")]
    Ratio(String),
    /// A value that is fine alone but repeats an earlier one.
    #[error("{what} given twice")]
    Duplicate { what: String },
}

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

/// A duration that may be switched off (`off`), e.g. `--request-timeout`.
/// A newtype, since clap reads an `Option` field as "flag may be absent".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switchable(pub Option<Duration>);

/// A name flag checked with the mesh-wide rule for its kind.
pub(super) fn name(
    kind: NameKind,
) -> impl Fn(&str) -> Result<String, ValueError> + Clone + Send + Sync + 'static {
    move |raw| {
        names::validate(kind, raw)?;
        Ok(raw.to_string())
    }
}

pub(super) fn non_empty(raw: &str) -> Result<String, ValueError> {
    if raw.is_empty() {
        return Err(ValueError::Empty);
    }
    Ok(raw.to_string())
}

/// `HOST:PORT` where the host may be a name (the controller's address).
pub(super) fn host_port(raw: &str) -> Result<String, ValueError> {
    let (host, port) = raw.rsplit_once(':').ok_or(ValueError::Shape("HOST:PORT"))?;
    if host.is_empty() {
        return Err(ValueError::EmptyHost);
    }
    port_number(port)?;
    Ok(raw.to_string())
}

fn humantime(raw: &str, example: &'static str) -> Result<Duration, ValueError> {
    humantime::parse_duration(raw).map_err(|source| ValueError::Duration { source, example })
}

/// A certificate lifetime or expiry: at least 1s.
pub(super) fn ttl(raw: &str) -> Result<Duration, ValueError> {
    let d = humantime(raw, "24h, 90m")?;
    if d < Duration::from_secs(1) {
        return Err(ValueError::DurationOutOfRange {
            bounds: "at least 1s",
        });
    }
    Ok(d)
}

/// A timeout or interval: 100ms to 1 day.
pub(super) fn timeout(raw: &str) -> Result<Duration, ValueError> {
    let d = humantime(raw, "10s, 500ms")?;
    if !(Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&d) {
        return Err(ValueError::DurationOutOfRange {
            bounds: "between 100ms and 24h",
        });
    }
    Ok(d)
}

/// A timeout, or `off` for none.
pub(super) fn switchable_timeout(raw: &str) -> Result<Switchable, ValueError> {
    if raw == "off" {
        return Ok(Switchable(None));
    }
    timeout(raw).map(|d| Switchable(Some(d)))
}

/// `--tls-cert CERT_PEM,KEY_PEM`.
pub(super) fn cert_files(raw: &str) -> Result<crate::gateway::tls::CertFiles, ValueError> {
    let (cert, key) = raw
        .split_once(',')
        .filter(|(c, k)| !c.trim().is_empty() && !k.trim().is_empty())
        .ok_or(ValueError::Shape("CERT_PEM,KEY_PEM"))?;
    Ok(crate::gateway::tls::CertFiles {
        cert: cert.trim().into(),
        key: key.trim().into(),
    })
}

/// `--cache-max-bytes`: 4 KiB (one small entry) to 16 GiB.
pub(super) fn cache_bytes(raw: &str) -> Result<usize, ValueError> {
    const MIN: usize = 4 * 1024;
    const MAX: usize = 16 << 30;
    let n: usize = raw
        .parse()
        .map_err(|_| ValueError::Shape("a number of bytes"))?;
    if !(MIN..=MAX).contains(&n) {
        return Err(ValueError::OutOfRange {
            bounds: "between 4096 and 17179869184",
        });
    }
    Ok(n)
}

/// `--tls-reload-interval`: from a second to an hour.
pub(super) fn reload_interval(raw: &str) -> Result<Duration, ValueError> {
    let d = humantime(raw, "5s")?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(ValueError::DurationOutOfRange {
            bounds: "between 1s and 1h",
        });
    }
    Ok(d)
}

/// The shutdown grace: 0 (close at once) to 10 minutes.
pub(super) fn grace(raw: &str) -> Result<Duration, ValueError> {
    let d = humantime(raw, "5s")?;
    if d > Duration::from_secs(600) {
        return Err(ValueError::DurationOutOfRange {
            bounds: "at most 10m",
        });
    }
    Ok(d)
}

/// A share from 0 to 1 (`0.25`); NaN and infinities are refused.
pub(super) fn ratio(raw: &str) -> Result<f64, ValueError> {
    match raw.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(ValueError::Ratio(raw.to_string())),
    }
}

/// `stdout`, or the path of a file to append to.
pub(super) fn access_log(raw: &str) -> Result<super::AccessLogTarget, ValueError> {
    match raw.trim() {
        "" => Err(ValueError::Empty),
        "stdout" | "-" => Ok(super::AccessLogTarget::Stdout),
        path => Ok(super::AccessLogTarget::File(path.into())),
    }
}

fn port_number(raw: &str) -> Result<u16, ValueError> {
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(ValueError::Port(raw.to_string())),
        Ok(p) => Ok(p),
    }
}

pub(super) fn label(raw: &str) -> Result<(String, String), ValueError> {
    let (k, v) = raw.split_once('=').ok_or(ValueError::Shape("KEY=VALUE"))?;
    if k.is_empty() {
        return Err(ValueError::Shape("KEY=VALUE with a non-empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn protocol(raw: &str) -> Result<Protocol, ValueError> {
    match raw {
        "http" => Ok(Protocol::Http),
        "http2" => Ok(Protocol::Http2),
        "grpc" => Ok(Protocol::Grpc),
        "tcp" => Ok(Protocol::Tcp),
        other => Err(ValueError::Protocol(other.to_string())),
    }
}

pub(super) fn app_port(raw: &str) -> Result<AppPort, ValueError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, port, proto) = match parts.as_slice() {
        [name, port] => (*name, *port, None),
        [name, port, proto] => (*name, *port, Some(*proto)),
        _ => return Err(ValueError::Shape("NAME:PORT[:PROTOCOL]")),
    };
    // Port names follow the Kubernetes rule for them (a DNS label).
    if names::validate(NameKind::Service, name).is_err() {
        return Err(ValueError::PortName(name.to_string()));
    }
    Ok(AppPort {
        name: name.to_string(),
        port: port_number(port)?,
        protocol: proto.map(protocol).transpose()?.unwrap_or(Protocol::Http),
    })
}

/// `svc.ns` → the service key, checked.
pub(super) fn service_key(raw: &str) -> Result<String, ValueError> {
    Ok(ServiceKey::parse(raw)?.into_string())
}

/// `svc.ns:port` → (service key, port).
fn service_port(raw: &str) -> Result<(String, u16), ValueError> {
    let (key, port) = raw.rsplit_once(':').ok_or(ValueError::Target)?;
    ServiceKey::parse(key)?;
    Ok((key.to_string(), port_number(port)?))
}

pub(super) fn tcp_upstream(raw: &str) -> Result<TcpUpstream, ValueError> {
    let (listen, target) = raw
        .split_once('=')
        .ok_or(ValueError::Shape("LISTEN_ADDR=SVC.NS:PORT"))?;
    let listen = listen
        .parse()
        .map_err(|_| ValueError::ListenAddr(listen.to_string()))?;
    let (service, port) = service_port(target)?;
    Ok(TcpUpstream {
        listen,
        service,
        port,
    })
}

pub(super) fn route(raw: &str) -> Result<GatewayRoute, ValueError> {
    let (matcher, target) = raw
        .rsplit_once('=')
        .ok_or(ValueError::Shape("[HOST]/PREFIX=SVC.NS:PORT"))?;
    let slash = matcher.find('/').ok_or(ValueError::PathPrefix)?;
    let (host, prefix) = matcher.split_at(slash);
    let host = if host.is_empty() {
        None
    } else {
        let h = host.to_ascii_lowercase();
        if h.contains(':') || h.contains('*') || !h.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValueError::RouteHost(host.to_string()));
        }
        Some(h)
    };
    let (service, port) = service_port(target)?;
    Ok(GatewayRoute {
        host,
        prefix: prefix.to_string(),
        service,
        port,
    })
}
