//! The limits and timeouts the proxy runs under: parsed from flags by
//! `config`, applied by `serve` (every listener), the outbound pool and
//! discovery. They live here so that those parts and `config` depend on one
//! small module rather than on each other. Defaults and flags are in the
//! "Limits and timeouts" table of docs/architecture.md.

use std::time::Duration;

use serde::Serialize;

/// Connection-level limits and timeouts, the same for every listener (see
/// the "Limits and timeouts" table in docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Connections one listener serves at once; more wait to be accepted.
    pub max_connections: usize,
    /// Largest request header list (HTTP/2 measure: names, values and 32
    /// bytes per field) a first hop lets in; larger gets 431.
    pub max_header_bytes: usize,
    /// An HTTP/1 client must send a whole request head within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed
    /// (gracefully: requests in progress finish).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time for the response headers of a request (app or peer); the body
    /// after them is not limited, so streams and tunnels are not cut.
    /// `None`: no limit.
    #[serde(with = "humantime_opt")]
    pub request_timeout: Option<Duration>,
    /// HTTP/2 PING interval on pooled mesh connections; a peer that does
    /// not answer within the same time is dropped.
    #[serde(with = "humantime_serde")]
    pub mesh_keepalive: Duration,
    /// Idle pooled connections to the app are closed after this.
    #[serde(with = "humantime_serde")]
    pub app_pool_idle_timeout: Duration,
    /// On SIGTERM, how long in-flight requests and tunnels may finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Some(Duration::from_secs(60)),
            mesh_keepalive: Duration::from_secs(20),
            app_pool_idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How many services a proxy follows on demand, and for how long unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriptionLimits {
    /// On-demand subscriptions at most; a request for one more service is
    /// refused (503 `subscription-limit`) without subscribing.
    pub max: usize,
    /// A subscription no request used for this long is dropped (and
    /// unsubscribed from the controller).
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for SubscriptionLimits {
    fn default() -> Self {
        Self {
            max: 1000,
            idle: Duration::from_secs(600),
        }
    }
}

/// `Duration` as humantime text (`1m 30s`) in `/config_dump`.
pub(crate) mod humantime_serde {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }
}

/// `Option<Duration>` as humantime text, `null` for none.
pub(crate) mod humantime_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}
