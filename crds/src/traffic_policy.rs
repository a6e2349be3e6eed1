//! `TrafficPolicy`: how clients reach one Service: load balancing, retries,
//! timeouts, circuit breaking, outlier detection and fault injection.
//!
//! Namespaced, attached to a Service of its own namespace (optionally one
//! port of it), in the manner of Gateway API policy attachment. The same
//! kind is read from `mesh.yaml` in local mode, where no API server checks
//! the schema, so [`TrafficPolicySpec::validate`] repeats every rule the
//! schema and its CEL rules hold, naming the field the same way.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{parse_duration, DURATION_PATTERN};

/// The policy of one Service (`kubectl get trafficpolicy -n shop`).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "mycel.io",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    plural = "trafficpolicies",
    singular = "trafficpolicy",
    shortname = "tp",
    category = "mycel",
    namespaced,
    status = "TrafficPolicyStatus",
    derive = "PartialEq",
    doc = "How clients in the mesh reach one Service: load balancing, retries, timeouts, circuit breaking, outlier detection, fault injection.",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.targetRef.port"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// The Service (in the policy's namespace) this policy applies to.
    pub target_ref: TargetRef,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// The Service a policy is attached to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// The core API group: empty.
    #[serde(default)]
    #[schemars(length(max = 0))]
    pub group: String,
    pub kind: TargetKind,
    /// Name of a Service in the policy's namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// One port of the Service; absent: every port. A port policy replaces
    /// the Service-wide one for that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Service,
}

/// How an endpoint is chosen for each request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.algorithm == 'RingHash' || self.algorithm == 'Maglev') == has(self.hashOn)")
        .message("hashOn is required by RingHash and Maglev and allowed only with them")
        .field_path(".hashOn")
        .reason(Reason::FieldValueInvalid)
)]
pub struct LoadBalancer {
    #[serde(default)]
    pub algorithm: Algorithm,
    /// PeakEWMA: how fast the latency estimate forgets (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub ewma_decay: Option<String>,
    /// RingHash and Maglev: what the hash is computed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// RingHash: virtual nodes on the ring (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 65536))]
    pub min_ring_size: Option<u32>,
    /// A new endpoint's share of requests ramps up over this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub slow_start: Option<String>,
    /// Prefer endpoints in the caller's zone while any is healthy.
    #[serde(default)]
    pub locality: bool,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Power of two choices over peak-EWMA latency (the default).
    #[default]
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
    RoundRobin,
    LeastRequest,
    RingHash,
    Maglev,
}

/// Exactly one of the three.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.header), has(self.cookie), has(self.sourceIP) && self.sourceIP].filter(x, x).size() == 1")
        .message("hashOn needs exactly one of header, cookie or sourceIP: true")
        .reason(Reason::FieldValueInvalid)
)]
pub struct HashOn {
    /// A request header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: Option<String>,
    /// A cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub cookie: Option<String>,
    /// The caller's IP address.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
}

/// When a failed request is tried again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Tries in total, the first included.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 2, max = 10))]
    pub attempts: u32,
    /// Limit of each try until response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub per_try_timeout: Option<String>,
    /// Failures that are retried (default: connect-failure, refused-stream,
    /// reset, gateway-error, unavailable).
    #[serde(default = "default_retry_on")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub retry_on: Vec<RetryOn>,
    /// HTTP statuses retried besides those `retryOn` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub retriable_status_codes: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Request bodies up to this size are kept for a retry; a larger body is
    /// sent once (default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4194304))]
    pub max_body_bytes: Option<u32>,
    /// Retry POST, PATCH and other methods that are not idempotent too.
    #[serde(default)]
    pub retry_non_idempotent: bool,
}

fn default_attempts() -> u32 {
    3
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Reset,
        RetryOn::GatewayError,
        RetryOn::Unavailable,
    ]
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum RetryOn {
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    #[serde(rename = "refused-stream")]
    RefusedStream,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "5xx")]
    ServerError,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// gRPC CANCELLED (1).
    #[serde(rename = "cancelled")]
    Cancelled,
    /// gRPC DEADLINE_EXCEEDED (4).
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// gRPC RESOURCE_EXHAUSTED (8).
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// gRPC INTERNAL (13).
    #[serde(rename = "internal")]
    Internal,
    /// gRPC UNAVAILABLE (14).
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl RetryOn {
    /// The gRPC status code of a gRPC condition.
    pub fn grpc_code(self) -> Option<u32> {
        match self {
            RetryOn::Cancelled => Some(1),
            RetryOn::DeadlineExceeded => Some(4),
            RetryOn::ResourceExhausted => Some(8),
            RetryOn::Internal => Some(13),
            RetryOn::Unavailable => Some(14),
            _ => None,
        }
    }
}

/// Exponential backoff with full jitter between tries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.base) <= duration(self.max)")
        .message("backoff base must not be longer than max")
        .field_path(".base")
        .reason(Reason::FieldValueInvalid)
)]
pub struct Backoff {
    /// Default 25ms.
    #[serde(default = "default_backoff_base")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub base: String,
    /// Default 250ms.
    #[serde(default = "default_backoff_max")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max: String,
}

fn default_backoff_base() -> String {
    "25ms".into()
}

fn default_backoff_max() -> String {
    "250ms".into()
}

/// Retries may add at most `percent` of the requests of the last `window`,
/// plus `minPerSecond`: in an outage they cannot multiply the load.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Default 20.
    #[serde(default = "default_budget_percent")]
    #[schemars(range(max = 100))]
    pub percent: u32,
    /// Default 10.
    #[serde(default = "default_min_per_second")]
    #[schemars(range(max = 10000))]
    pub min_per_second: u32,
    /// Default 10s; 1s to 60s.
    #[serde(default = "default_budget_window")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub window: String,
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_per_second() -> u32 {
    10
}

fn default_budget_window() -> String {
    "10s".into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// From the request to the response headers, every try included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub request: Option<String>,
    /// Dialing an endpoint (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub connect: Option<String>,
    /// A pooled connection to an endpoint idle this long is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub idle: Option<String>,
}

/// Beyond these, requests are answered at once with 503
/// (`mycel-proxy-error: overflow`). Absent limits are unlimited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Open TCP connections (tunnels) to the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection to an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<u32>,
    /// Requests in flight to one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests_per_endpoint: Option<u32>,
}

/// Takes endpoints that keep failing out of the balancer for a while.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.baseEjectionTime) <= duration(self.maxEjectionTime)")
        .message("baseEjectionTime must not be longer than maxEjectionTime")
        .field_path(".baseEjectionTime")
        .reason(Reason::FieldValueInvalid)
)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers or connection failures that eject (0: off;
    /// default 5).
    #[serde(default = "default_consecutive_5xx", rename = "consecutive5xx")]
    #[schemars(range(max = 1000))]
    pub consecutive_5xx: u32,
    /// Consecutive 502, 503, 504 or connection failures that eject (0: off).
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub consecutive_gateway_errors: u32,
    /// How often success rates are compared (default 10s).
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: String,
    /// The first ejection's length; the n-th in a row lasts n times as long
    /// (default 30s).
    #[serde(default = "default_base_ejection")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub base_ejection_time: String,
    /// Default 300s.
    #[serde(default = "default_max_ejection")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max_ejection_time: String,
    /// At most this share of the endpoints is ejected at once, but at least
    /// one (default 10).
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
}

fn default_consecutive_5xx() -> u32 {
    5
}

fn default_interval() -> String {
    "10s".into()
}

fn default_base_ejection() -> String {
    "30s".into()
}

fn default_max_ejection() -> String {
    "300s".into()
}

fn default_max_ejection_percent() -> u32 {
    10
}

/// Ejects endpoints whose success rate is far below the others'.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SuccessRate {
    /// Endpoints with enough requests needed for a comparison (default 5).
    #[serde(default = "default_minimum_hosts")]
    #[schemars(range(min = 1, max = 1000))]
    pub minimum_hosts: u32,
    /// Requests an endpoint needs in the interval to be compared (default
    /// 100).
    #[serde(default = "default_request_volume")]
    #[schemars(range(min = 1))]
    pub request_volume: u32,
    /// Ejected below mean − stdev × factor / 1000 (default 1900).
    #[serde(default = "default_stdev_factor")]
    #[schemars(range(min = 1, max = 100000))]
    pub stdev_factor: u32,
}

fn default_minimum_hosts() -> u32 {
    5
}

fn default_request_volume() -> u32 {
    100
}

fn default_stdev_factor() -> u32 {
    1900
}

/// Faults injected on purpose into a share of requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.delay) || has(self.abort)")
        .message("fault needs a delay, an abort or both")
        .reason(Reason::FieldValueInvalid)
)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub fixed_delay: String,
    #[schemars(range(max = 100))]
    pub percentage: u32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    #[schemars(range(min = 200, max = 599))]
    pub http_status: u16,
    #[schemars(range(max = 100))]
    pub percentage: u32,
}

/// What the controller reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: True when applied; False with reason `Invalid` (the
    /// message names the field), `TargetNotFound` or `Conflicted` (an older
    /// policy has the same target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A spec value the API server's schema would refuse, with the field path
/// as the API server names it (`spec.retry.attempts`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: format!("spec.{field}"),
        message: message.into(),
    }
}

pub(crate) fn duration_field(field: &str, raw: &str) -> Result<Duration, FieldError> {
    if raw.len() > 32 || !crate::duration::matches_pattern(raw) {
        return Err(field_error(
            field,
            format!("{raw:?} is not a duration such as 250ms, 5s, 1m or 1h30m (pattern {DURATION_PATTERN})"),
        ));
    }
    parse_duration(raw).map_err(|e| field_error(field, e.to_string()))
}

fn opt_duration(field: &str, raw: &Option<String>) -> Result<Option<Duration>, FieldError> {
    raw.as_deref().map(|r| duration_field(field, r)).transpose()
}

pub(crate) fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), FieldError> {
    if value < min || value > max {
        return Err(field_error(
            field,
            format!("{value} is out of range ({min}-{max})"),
        ));
    }
    Ok(())
}

fn header_token(field: &str, raw: &str) -> Result<(), FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= 256
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{raw:?} is not a header or cookie name (1-256 token characters)"),
        ))
    }
}

impl TrafficPolicySpec {
    /// Every rule of the CRD schema and its CEL rules, for `mesh.yaml`
    /// where no API server applies them. The first violation is returned.
    pub fn validate(&self) -> Result<(), FieldError> {
        let t = &self.target_ref;
        if !t.group.is_empty() {
            return Err(field_error(
                "targetRef.group",
                format!("{:?}: a Service's group is the core group, \"\"", t.group),
            ));
        }
        if mycel_name_invalid(&t.name) {
            return Err(field_error(
                "targetRef.name",
                format!(
                    "{:?} is not a Service name (a DNS label starting with a letter)",
                    t.name
                ),
            ));
        }
        if t.port == Some(0) {
            return Err(field_error("targetRef.port", "0 is out of range (1-65535)"));
        }
        if let Some(lb) = &self.load_balancer {
            opt_duration("loadBalancer.ewmaDecay", &lb.ewma_decay)?;
            opt_duration("loadBalancer.slowStart", &lb.slow_start)?;
            if let Some(n) = lb.min_ring_size {
                in_range("loadBalancer.minRingSize", n.into(), 64, 65536)?;
            }
            let hashing = matches!(lb.algorithm, Algorithm::RingHash | Algorithm::Maglev);
            match (&lb.hash_on, hashing) {
                (None, true) | (Some(_), false) => {
                    return Err(field_error(
                        "loadBalancer.hashOn",
                        "hashOn is required by RingHash and Maglev and allowed only with them",
                    ))
                }
                (Some(h), true) => {
                    let set = [
                        h.header.is_some(),
                        h.cookie.is_some(),
                        h.source_ip == Some(true),
                    ];
                    if set.iter().filter(|x| **x).count() != 1 {
                        return Err(field_error(
                            "loadBalancer.hashOn",
                            "hashOn needs exactly one of header, cookie or sourceIP: true",
                        ));
                    }
                    if let Some(name) = &h.header {
                        header_token("loadBalancer.hashOn.header", name)?;
                    }
                    if let Some(name) = &h.cookie {
                        header_token("loadBalancer.hashOn.cookie", name)?;
                    }
                }
                (None, false) => {}
            }
        }
        if let Some(r) = &self.retry {
            in_range("retry.attempts", r.attempts.into(), 2, 10)?;
            opt_duration("retry.perTryTimeout", &r.per_try_timeout)?;
            if r.retry_on.len() > 16 {
                return Err(field_error("retry.retryOn", "at most 16 conditions"));
            }
            if r.retriable_status_codes.len() > 16 {
                return Err(field_error(
                    "retry.retriableStatusCodes",
                    "at most 16 codes",
                ));
            }
            for (i, code) in r.retriable_status_codes.iter().enumerate() {
                in_range(
                    &format!("retry.retriableStatusCodes[{i}]"),
                    (*code).into(),
                    400,
                    599,
                )?;
            }
            if let Some(b) = &r.backoff {
                let base = duration_field("retry.backoff.base", &b.base)?;
                let max = duration_field("retry.backoff.max", &b.max)?;
                if base > max {
                    return Err(field_error(
                        "retry.backoff.base",
                        "backoff base must not be longer than max",
                    ));
                }
            }
            if let Some(b) = &r.budget {
                in_range("retry.budget.percent", b.percent.into(), 0, 100)?;
                in_range(
                    "retry.budget.minPerSecond",
                    b.min_per_second.into(),
                    0,
                    10000,
                )?;
                let w = duration_field("retry.budget.window", &b.window)?;
                if w < Duration::from_secs(1) || w > Duration::from_secs(60) {
                    return Err(field_error(
                        "retry.budget.window",
                        format!("{:?} is out of range (1s-60s)", b.window),
                    ));
                }
            }
            if let Some(n) = r.max_body_bytes {
                in_range("retry.maxBodyBytes", n.into(), 0, 4 * 1024 * 1024)?;
            }
        }
        if let Some(t) = &self.timeouts {
            opt_duration("timeouts.request", &t.request)?;
            opt_duration("timeouts.connect", &t.connect)?;
            opt_duration("timeouts.idle", &t.idle)?;
        }
        if let Some(c) = &self.circuit_breaker {
            for (field, v) in [
                ("circuitBreaker.maxConnections", c.max_connections),
                ("circuitBreaker.maxPendingRequests", c.max_pending_requests),
                ("circuitBreaker.maxRequests", c.max_requests),
                (
                    "circuitBreaker.maxRequestsPerEndpoint",
                    c.max_requests_per_endpoint,
                ),
            ] {
                if let Some(v) = v {
                    in_range(field, v.into(), 1, u32::MAX.into())?;
                }
            }
        }
        if let Some(o) = &self.outlier_detection {
            in_range(
                "outlierDetection.consecutive5xx",
                o.consecutive_5xx.into(),
                0,
                1000,
            )?;
            in_range(
                "outlierDetection.consecutiveGatewayErrors",
                o.consecutive_gateway_errors.into(),
                0,
                1000,
            )?;
            duration_field("outlierDetection.interval", &o.interval)?;
            let base = duration_field("outlierDetection.baseEjectionTime", &o.base_ejection_time)?;
            let max = duration_field("outlierDetection.maxEjectionTime", &o.max_ejection_time)?;
            if base > max {
                return Err(field_error(
                    "outlierDetection.baseEjectionTime",
                    "baseEjectionTime must not be longer than maxEjectionTime",
                ));
            }
            in_range(
                "outlierDetection.maxEjectionPercent",
                o.max_ejection_percent.into(),
                0,
                100,
            )?;
            if let Some(s) = &o.success_rate {
                in_range(
                    "outlierDetection.successRate.minimumHosts",
                    s.minimum_hosts.into(),
                    1,
                    1000,
                )?;
                in_range(
                    "outlierDetection.successRate.requestVolume",
                    s.request_volume.into(),
                    1,
                    u32::MAX.into(),
                )?;
                in_range(
                    "outlierDetection.successRate.stdevFactor",
                    s.stdev_factor.into(),
                    1,
                    100000,
                )?;
            }
        }
        if let Some(f) = &self.fault {
            if f.delay.is_none() && f.abort.is_none() {
                return Err(field_error(
                    "fault",
                    "fault needs a delay, an abort or both",
                ));
            }
            if let Some(d) = &f.delay {
                duration_field("fault.delay.fixedDelay", &d.fixed_delay)?;
                in_range("fault.delay.percentage", d.percentage.into(), 0, 100)?;
            }
            if let Some(a) = &f.abort {
                in_range("fault.abort.httpStatus", a.http_status.into(), 200, 599)?;
                in_range("fault.abort.percentage", a.percentage.into(), 0, 100)?;
            }
        }
        Ok(())
    }
}

/// A Service name as the schema's pattern admits it (RFC 1035 label).
fn mycel_name_invalid(name: &str) -> bool {
    let b = name.as_bytes();
    b.is_empty()
        || b.len() > 63
        || !b[0].is_ascii_lowercase()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests;
