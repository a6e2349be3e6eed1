//! Traffic policy of a service as the data path uses it: how to pick an
//! endpoint, when to retry, how long to wait, when to shed load and when to
//! eject a failing endpoint.
//!
//! Filled from the `TRAFFIC_POLICY` discovery resource (validated in
//! `discovery::convert`, so every value here is in range) or left at
//! [`PolicyRules::default`] when a service has none. Defaults are what a
//! service without a policy gets, so they are chosen to be safe for any
//! service: P2C over peak-EWMA latency, no retries beyond the one the pool
//! makes for a request it never sent, no circuit breaker, no ejection.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The policy attached to one service.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficPolicy {
    /// `<namespace>/<name>` of the policy object, for log lines.
    pub source: String,
    /// Rules for every port of the service.
    pub rules: PolicyRules,
    /// Rules for one service port (by port number), replacing `rules`
    /// whole for that port.
    pub ports: BTreeMap<u16, PolicyRules>,
}

impl TrafficPolicy {
    /// The rules that apply to service port `port`.
    pub fn for_port(&self, port: u16) -> &PolicyRules {
        self.ports.get(&port).unwrap_or(&self.rules)
    }
}

/// Everything a policy can say about one port of a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PolicyRules {
    pub load_balancer: LoadBalancer,
    pub retry: Option<RetryPolicy>,
    pub timeouts: Timeouts,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub outlier_detection: Option<OutlierDetection>,
    pub fault: Option<Fault>,
}

/// How an endpoint is chosen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadBalancer {
    pub algorithm: Algorithm,
    /// A new endpoint's share of traffic grows linearly from a tenth to
    /// its full share over this time, so a cold process is not flooded.
    pub slow_start: Option<Duration>,
    /// Prefer endpoints in the caller's zone while enough of them are
    /// healthy; fall back to all zones otherwise.
    pub locality: bool,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::PeakEwma {
                decay: DEFAULT_EWMA_DECAY,
            },
            slow_start: None,
            locality: false,
        }
    }
}

/// Decay time of the peak-EWMA latency estimate.
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Algorithm {
    /// Power of two choices, comparing peak-EWMA latency times
    /// outstanding requests; errors (5xx, 429, connect failures) count as
    /// slow answers.
    PeakEwma {
        decay: Duration,
    },
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastRequest,
    /// Consistent hashing on a ring of virtual nodes.
    RingHash {
        key: HashKey,
        min_ring_size: u32,
    },
    /// Consistent hashing with a Maglev lookup table.
    Maglev {
        key: HashKey,
    },
}

/// What a consistent hash is computed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
pub enum HashKey {
    /// A request header (lowercase name); requests without it are spread
    /// as by round-robin.
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// The caller's IP address.
    SourceIp,
}

/// When and how a failed request is tried again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Tries in total, the first included (2..=10).
    pub attempts: u32,
    /// Each try's limit from sending to response headers.
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// First backoff; doubles each retry up to `backoff_max`, with full
    /// jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget: RetryBudget,
    /// A request body larger than this is not retried (it is streamed, not
    /// kept).
    pub max_body_bytes: usize,
    /// Retry POST, PATCH and other non-idempotent methods too.
    pub non_idempotent: bool,
}

/// Which failures are retried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// The connection to the endpoint could not be made (connect, TLS).
    pub connect_failure: bool,
    /// The peer refused the stream before processing it (HTTP/2
    /// REFUSED_STREAM).
    pub refused_stream: bool,
    /// The connection or stream broke before response headers.
    pub reset: bool,
    /// Any 5xx answer.
    pub server_error: bool,
    /// 502, 503 and 504.
    pub gateway_error: bool,
    /// 409 Conflict.
    pub retriable_4xx: bool,
    /// Further HTTP status codes that are retried.
    pub statuses: Vec<u16>,
    /// gRPC status codes that are retried (e.g. 14 UNAVAILABLE).
    pub grpc_codes: Vec<u32>,
}

/// Caps retries so that they can never multiply load: at any time, retries
/// may be at most `ratio` of the requests of the last `window`, plus
/// `min_per_second`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Default limit of a request body kept for a retry.
pub const DEFAULT_RETRY_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// From the request to the response headers, all tries and backoff
    /// included. None: the proxy's `--request-timeout`.
    pub request: Option<Duration>,
    /// Dialing an endpoint (TCP connect). None: 5 s.
    pub connect: Option<Duration>,
    /// A pooled connection to an endpoint of this service with no request
    /// for this long is closed. None: kept while the peer answers PINGs.
    pub idle: Option<Duration>,
}

/// Load shedding: beyond these limits a request is answered at once with
/// `503` and `mycel-proxy-error: overflow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CircuitBreaker {
    /// Open TCP tunnels to the service.
    pub max_connections: u32,
    /// Requests waiting for a connection to an endpoint to be dialed.
    pub max_pending_requests: u32,
    /// Requests in flight to the service.
    pub max_requests: u32,
    /// Requests in flight to any one endpoint (0: no limit).
    pub max_requests_per_endpoint: u32,
}

/// Ejects endpoints that keep failing from the balancer for a while.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (or connect failures) that eject (0: off).
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures that eject (0: off).
    pub consecutive_gateway_errors: u32,
    /// How often success rates are compared.
    pub interval: Duration,
    /// First ejection time; the n-th ejection in a row lasts n times as
    /// long, up to `max_ejection_time`.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share of a service's endpoints is ejected at once
    /// (at least one when the service has several).
    pub max_ejection_percent: u32,
    pub success_rate: Option<SuccessRate>,
}

/// Ejects endpoints whose success rate is far below the others'.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuccessRate {
    /// Endpoints with at least `request_volume` requests in the interval
    /// needed for the check to run.
    pub minimum_hosts: u32,
    pub request_volume: u32,
    /// Ejected below mean - stdev * factor / 1000 (1900 = 1.9 stdev).
    pub stdev_factor: u32,
}

/// Faults injected on purpose, to test how callers cope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultDelay {
    pub delay: Duration,
    /// Share of requests delayed, 0.0..=100.0.
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultAbort {
    /// HTTP status answered (gRPC callers get it mapped to a gRPC status).
    pub status: u16,
    pub percent: f64,
}
