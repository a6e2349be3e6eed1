//! Traffic metrics of the data path, registered once at start and shared by
//! every listener (cloning is cheap: the families are reference counted).

mod requests;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use requests::{CodeClass, RequestHandles, RequestKey, RequestMetrics, LATENCY_BUCKETS};

/// Which listener saw the traffic.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    Gateway,
}

/// Why a request or connection failed; one value per failure the data path
/// can name, so dashboards can tell "no such service" from "peer is down".
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host is not a mesh name, or the controller says it does not exist.
    UnknownService,
    /// The controller did not answer for the service in time.
    NoAnswer,
    /// The service has no such port, or none could be chosen.
    BadPort,
    NoEndpoints,
    /// TCP connect to a peer sidecar failed.
    Connect,
    /// The peer presented a valid certificate for another workload.
    IdentityMismatch,
    TlsHandshake,
    /// The request failed on an established mesh connection.
    Upstream,
    /// The local application could not be reached.
    AppConnect,
    /// The inbound side refused an app port the workload did not declare.
    PortRefused,
    /// A request the proxy cannot interpret (no host, bad header).
    BadRequest,
    /// The gateway has no route for the request.
    NoRoute,
    /// The host names no valid service key (breaks the name rules).
    BadHost,
    /// This proxy holds as many on-demand subscriptions as it may.
    SubscriptionLimit,
    /// A method the listener does not serve (CONNECT on the gateway).
    MethodNotAllowed,
    /// A request path the gateway refuses to route (encoded slash, a
    /// dot-segment above the root).
    BadPath,
    /// An HTTP/1.1 upgrade (WebSocket) could not be carried.
    Upgrade,
    /// The request's header list is larger than `--max-header-bytes`.
    HeaderTooLarge,
    /// No response headers came within `--request-timeout`.
    Timeout,
    /// The app's response header list is larger than `--max-header-bytes`,
    /// more than the mesh carries back to the caller.
    ResponseHeaderTooLarge,
    /// A circuit breaker limit of the service's traffic policy was reached.
    Overflow,
    /// The service's traffic policy injected an abort on purpose.
    Fault,
    /// An authorization policy (or the default) refused the caller; at the
    /// gateway, a token without the claims its route requires.
    Forbidden,
    /// The gateway found no valid credential (JWT, API key) for a route
    /// that requires one.
    Unauthenticated,
    /// A GatewayPolicy's rate limit refused the request.
    RateLimited,
    /// The request body is over a GatewayPolicy's limit.
    BodyTooLarge,
    /// A global rate limit could not be checked (Redis down) and fails
    /// closed; or a GatewayPolicy the gateway cannot apply.
    PolicyUnavailable,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Flow {
    /// Bytes from the side that opened the tunnel.
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Gateway => "gateway",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::NoAnswer => "no_answer",
            ErrorKind::BadPort => "bad_port",
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::Connect => "connect",
            ErrorKind::IdentityMismatch => "identity_mismatch",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::Upstream => "upstream",
            ErrorKind::AppConnect => "app_connect",
            ErrorKind::PortRefused => "port_refused",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::BadHost => "bad_host",
            ErrorKind::SubscriptionLimit => "subscription_limit",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::BadPath => "bad_path",
            ErrorKind::Upgrade => "upgrade",
            ErrorKind::HeaderTooLarge => "header_too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ResponseHeaderTooLarge => "response_header_too_large",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Fault => "fault",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::PolicyUnavailable => "policy_unavailable",
        }
    }

    /// The value of the `mycel-proxy-error` header on a response the proxy
    /// made itself: the metric label with dashes.
    pub fn header_value(self) -> &'static str {
        match self {
            ErrorKind::UnknownService => "unknown-service",
            ErrorKind::NoAnswer => "no-answer",
            ErrorKind::BadPort => "bad-port",
            ErrorKind::NoEndpoints => "no-endpoints",
            ErrorKind::Connect => "connect",
            ErrorKind::IdentityMismatch => "identity-mismatch",
            ErrorKind::TlsHandshake => "tls-handshake",
            ErrorKind::Upstream => "upstream",
            ErrorKind::AppConnect => "app-connect",
            ErrorKind::PortRefused => "port-refused",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::NoRoute => "no-route",
            ErrorKind::BadHost => "bad-host",
            ErrorKind::SubscriptionLimit => "subscription-limit",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
            ErrorKind::BadPath => "bad-path",
            ErrorKind::Upgrade => "upgrade",
            ErrorKind::HeaderTooLarge => "header-too-large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ResponseHeaderTooLarge => "response-header-too-large",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Fault => "fault",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::BodyTooLarge => "body-too-large",
            ErrorKind::PolicyUnavailable => "policy-unavailable",
        }
    }
}

impl EncodeLabelValue for ErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::ClientToServer => "client_to_server",
            Flow::ServerToClient => "server_to_client",
        }
    }
}

impl EncodeLabelValue for Flow {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: Direction,
    pub kind: ErrorKind,
}

/// A label value shared with the connection it describes: finding a
/// request's series copies a reference count, not the caller's identity.
/// (prometheus-client encodes `Arc<T>` only for sized `T`, so not
/// `Arc<str>` itself.)
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SharedLabel(pub Arc<str>);

impl EncodeLabelValue for SharedLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: SharedLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRequestLabels {
    pub peer: SharedLabel,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    pub direction: Direction,
    pub service: String,
    pub flow: Flow,
}

/// A connection taken by a transparent (iptables-captured) listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaptureLabels {
    pub direction: Direction,
    /// Outbound: `service`, `endpoint`, `passthrough`, `denied` or `error`;
    /// inbound: `allowed` or `refused`.
    pub target: String,
    /// Outbound: `http` or `opaque`; inbound: `plaintext`.
    pub protocol: String,
    /// The original destination port.
    pub port: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceReasonLabels {
    /// A service key known to discovery.
    pub service: String,
    /// From a closed set (retry reasons, ejection reasons, limits, faults).
    pub reason: &'static str,
}

/// One authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `allow`, `deny`, or `audit` (a DENY-like AUDIT policy matched; the
    /// request went through).
    pub decision: &'static str,
    /// `<namespace>/<name>` of the deciding policy, or `default:<mode>`, or
    /// `no-allow-match`: bounded by the policies selecting the workload.
    pub policy: String,
    /// `http` or `tcp`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionServiceLabels {
    pub direction: Direction,
    pub service: String,
}

/// A TLS handshake that failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: Direction,
    /// From a closed set: see [`crate::core::tls::failure_reason`].
    pub reason: &'static str,
}

/// A reload of the gateway's certificate files.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// A certificate the gateway serves, by the first DNS name it holds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertNameLabels {
    pub name: String,
}

/// Connection durations, from a millisecond to a day.
const CONNECTION_BUCKETS: [f64; 12] = [
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

fn connection_histogram() -> Histogram {
    Histogram::new(CONNECTION_BUCKETS.into_iter())
}

/// Handles to every data-path metric family.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    requests: RequestMetrics,
    tcp_duration: Family<DirectionServiceLabels, Histogram, fn() -> Histogram>,
    handshake_failures: Family<HandshakeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    inbound_connections: Family<PeerLabels, Counter>,
    inbound_requests: Family<PeerRequestLabels, Counter>,
    tunnel_bytes: Family<TunnelLabels, Counter>,
    captured: Family<CaptureLabels, Counter>,
    retries: Family<ServiceReasonLabels, Counter>,
    budget_exhausted: Family<ServiceLabels, Counter>,
    ejections: Family<ServiceReasonLabels, Counter>,
    overflow: Family<ServiceReasonLabels, Counter>,
    faults: Family<ServiceReasonLabels, Counter>,
    mirrors: Family<ServiceReasonLabels, Counter>,
    authz: Family<AuthzLabels, Counter>,
    cert_reloads: Family<ReloadLabels, Counter>,
    cert_expiry: Family<CertNameLabels, prometheus_client::metrics::gauge::Gauge>,
    policy_decisions: Family<PolicyDecisionLabels, Counter>,
    cache_lookups: Family<CacheLookupLabels, Counter>,
    aggregate_parts: Family<AggregatePartLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregatePartLabels {
    pub policy: String,
    pub part: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLookupLabels {
    pub policy: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyDecisionLabels {
    /// `<namespace>/<name>` of the GatewayPolicy (bounded: configuration).
    pub policy: String,
    pub decision: &'static str,
}

impl ProxyMetrics {
    pub fn new(registry: &mut Registry) -> ProxyMetrics {
        let m = ProxyMetrics {
            requests: RequestMetrics::new(registry),
            tcp_duration: Family::new_with_constructor(connection_histogram as fn() -> Histogram),
            handshake_failures: Family::default(),
            errors: Family::default(),
            inbound_connections: Family::default(),
            inbound_requests: Family::default(),
            tunnel_bytes: Family::default(),
            captured: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            ejections: Family::default(),
            overflow: Family::default(),
            faults: Family::default(),
            mirrors: Family::default(),
            authz: Family::default(),
            cert_reloads: Family::default(),
            cert_expiry: Family::default(),
            policy_decisions: Family::default(),
            cache_lookups: Family::default(),
            aggregate_parts: Family::default(),
        };
        registry.register(
            "mycel_gateway_aggregate_parts",
            "Parts asked by GatewayPolicy aggregations, by policy, part and result (ok, timeout, status, unavailable, too_large, not_json, path_refused, busy; a required part's failure fails the whole answer, an optional one's leaves it partial)",
            m.aggregate_parts.clone(),
        );
        registry.register(
            "mycel_gateway_cache_lookups",
            "Response cache lookups of the requests a GatewayPolicy with cache admitted, by policy and result (hit: answered from the cache; miss; revalidate: asked the backend whether the stored response still holds; bypass: not cacheable, e.g. no-store or not GET)",
            m.cache_lookups.clone(),
        );
        registry.register(
            "mycel_gateway_policy_decisions",
            "Requests a GatewayPolicy decided at the gateway, by policy and decision (allowed, unauthenticated, forbidden, rate_limited, limiter_failed_open, limiter_failed_closed, invalid)",
            m.policy_decisions.clone(),
        );
        registry.register(
            "mycel_gateway_certificate_reloads",
            "Reloads of the gateway's HTTPS certificate files after they changed, by result (error: the previous certificates are still served)",
            m.cert_reloads.clone(),
        );
        registry.register(
            "mycel_gateway_certificate_expiry_timestamp_seconds",
            "When each certificate the gateway's HTTPS listener serves expires (Unix time), by its first DNS name",
            m.cert_expiry.clone(),
        );
        registry.register(
            "mycel_tcp_connection_duration_seconds",
            "How long TCP connections carried through the mesh (opaque ports, tunnels) lasted, by listener and service",
            m.tcp_duration.clone(),
        );
        registry.register(
            "mycel_tls_handshake_failures",
            "Mesh TLS handshakes that failed, by side (inbound: a caller's; outbound: to a peer) and reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "mycel_errors",
            "Requests and connections the proxy failed, by listener and cause",
            m.errors.clone(),
        );
        registry.register(
            "mycel_inbound_connections",
            "Accepted mTLS connections on the mesh port, by peer SPIFFE ID",
            m.inbound_connections.clone(),
        );
        registry.register(
            "mycel_inbound_requests",
            "Requests received on the mesh port, by peer SPIFFE ID and status code",
            m.inbound_requests.clone(),
        );
        registry.register(
            "mycel_tcp_tunnel_bytes",
            "Bytes carried by TCP tunnels (HTTP/2 CONNECT)",
            m.tunnel_bytes.clone(),
        );
        registry.register(
            "mycel_captured_connections",
            "Connections taken by the transparent listeners, by what they were found to be",
            m.captured.clone(),
        );
        registry.register(
            "mycel_retries",
            "Requests tried again by the client sidecar, by service and the failure retried",
            m.retries.clone(),
        );
        registry.register(
            "mycel_retry_budget_exhausted",
            "Retries not made because the service's retry budget was spent",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "mycel_outlier_ejections",
            "Endpoints taken out of load balancing by outlier detection, by service and reason",
            m.ejections.clone(),
        );
        registry.register(
            "mycel_overflow",
            "Requests shed by a circuit breaker, by service and the limit reached",
            m.overflow.clone(),
        );
        registry.register(
            "mycel_faults_injected",
            "Requests delayed or aborted on purpose by a traffic policy's fault",
            m.faults.clone(),
        );
        registry.register(
            "mycel_mirrored_requests",
            "Request copies a route's mirror filter sent, or skipped (body too large to copy, too many copies in flight)",
            m.mirrors.clone(),
        );
        registry.register(
            "mycel_authz_decisions",
            "Inbound authorization decisions, by decision, deciding policy and protocol (denials and audits always; allows only when a policy decided)",
            m.authz.clone(),
        );
        m
    }

    pub fn authz(&self, decision: &'static str, policy: String, protocol: &'static str) {
        self.authz
            .get_or_create(&AuthzLabels {
                decision,
                policy,
                protocol,
            })
            .inc();
    }

    pub fn authz_count(&self, decision: &'static str, policy: &str, protocol: &'static str) -> u64 {
        self.authz
            .get_or_create(&AuthzLabels {
                decision,
                policy: policy.to_string(),
                protocol,
            })
            .get()
    }

    fn service_reason(
        family: &Family<ServiceReasonLabels, Counter>,
        service: &str,
        reason: &'static str,
    ) -> Counter {
        family
            .get_or_create(&ServiceReasonLabels {
                service: service.to_string(),
                reason,
            })
            .clone()
    }

    pub fn retry(&self, service: &str, reason: &'static str) {
        Self::service_reason(&self.retries, service, reason).inc();
    }

    pub fn retry_budget_exhausted(&self, service: &str) {
        self.budget_exhausted
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .inc();
    }

    pub fn ejection(&self, service: &str, reason: &'static str) {
        Self::service_reason(&self.ejections, service, reason).inc();
    }

    pub fn overflow(&self, service: &str, limit: &'static str) {
        Self::service_reason(&self.overflow, service, limit).inc();
    }

    pub fn fault(&self, service: &str, kind: &'static str) {
        Self::service_reason(&self.faults, service, kind).inc();
    }

    /// Counts a mirror copy of a request to `service` (the mirror target):
    /// `sent`, `body_too_large` or `busy`.
    pub fn mirror(&self, service: &str, result: &'static str) {
        Self::service_reason(&self.mirrors, service, result).inc();
    }

    /// Counts one captured connection (transparent mode).
    pub fn captured(&self, direction: Direction, target: &str, protocol: &str, port: u16) {
        self.captured
            .get_or_create(&CaptureLabels {
                direction,
                target: target.to_string(),
                protocol: protocol.to_string(),
                port,
            })
            .inc();
    }

    /// Counts a request no listener saw (a mirror copy) in
    /// `mycel_requests_total`; a listener's requests are counted by
    /// [`crate::observe`] with their latency.
    pub fn request(&self, direction: Direction, service: &str, code: u16) {
        self.requests.count(direction, service, code);
    }

    /// The per-request series (counter, histogram, gRPC statuses).
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Records how long a TCP connection or tunnel lasted.
    pub fn tcp_connection(&self, direction: Direction, service: &str, lasted: Duration) {
        self.tcp_duration
            .get_or_create(&DirectionServiceLabels {
                direction,
                service: service.to_string(),
            })
            .observe(lasted.as_secs_f64());
    }

    /// The counter of one policy's decision, resolved once per policy (the
    /// gateway keeps it) rather than per request.
    pub fn policy_decision(&self, policy: &str, decision: &'static str) -> Counter {
        self.policy_decisions
            .get_or_create(&PolicyDecisionLabels {
                policy: policy.to_string(),
                decision,
            })
            .clone()
    }

    /// Counts one aggregation part's result.
    pub fn aggregate_part(&self, policy: &str, part: &str, result: &'static str) {
        self.aggregate_parts
            .get_or_create(&AggregatePartLabels {
                policy: policy.to_string(),
                part: part.to_string(),
                result,
            })
            .inc();
    }

    /// The counter of one policy's cache lookup result, resolved once.
    pub fn cache_lookup(&self, policy: &str, result: &'static str) -> Counter {
        self.cache_lookups
            .get_or_create(&CacheLookupLabels {
                policy: policy.to_string(),
                result,
            })
            .clone()
    }

    pub fn cert_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.cert_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// The expiry of every certificate now served, replacing the last set.
    pub fn served_certs(&self, certs: &[(String, i64)]) {
        self.cert_expiry.clear();
        for (name, not_after) in certs {
            self.cert_expiry
                .get_or_create(&CertNameLabels { name: name.clone() })
                .set(*not_after);
        }
    }

    pub fn handshake_failure(&self, direction: Direction, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { direction, reason })
            .inc();
    }

    pub fn error(&self, direction: Direction, kind: ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels { direction, kind })
            .inc();
    }

    pub fn inbound_connection(&self, peer: &Arc<str>) {
        self.inbound_connections
            .get_or_create(&PeerLabels {
                peer: SharedLabel(peer.clone()),
            })
            .inc();
    }

    pub fn inbound_request(&self, peer: &Arc<str>, code: u16) {
        self.inbound_requests
            .get_or_create(&PeerRequestLabels {
                peer: SharedLabel(peer.clone()),
                code,
            })
            .inc();
    }

    pub fn tunnel_bytes(&self, direction: Direction, service: &str, flow: Flow, bytes: u64) {
        self.tunnel_bytes
            .get_or_create(&TunnelLabels {
                direction,
                service: service.to_string(),
                flow,
            })
            .inc_by(bytes);
    }

    /// Current value of the error counter, for tests and diagnostics.
    pub fn error_count(&self, direction: Direction, kind: ErrorKind) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels { direction, kind })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::new(&mut registry);
        m.request(Direction::Outbound, "catalog.shop", 200);
        m.error(Direction::Inbound, ErrorKind::AppConnect);
        m.inbound_connection(&"spiffe://cluster.local/ns/shop/sa/frontend".into());
        m.tunnel_bytes(Direction::Outbound, "db.shop", Flow::ClientToServer, 42);
        m.captured(Direction::Inbound, "allowed", "plaintext", 8080);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for want in [
            r#"mycel_requests_total{direction="outbound",service="catalog.shop",code="200"} 1"#,
            r#"mycel_errors_total{direction="inbound",kind="app_connect"} 1"#,
            r#"mycel_inbound_connections_total{peer="spiffe://cluster.local/ns/shop/sa/frontend"} 1"#,
            r#"mycel_tcp_tunnel_bytes_total{direction="outbound",service="db.shop",flow="client_to_server"} 42"#,
            r#"mycel_captured_connections_total{direction="inbound",target="allowed",protocol="plaintext",port="8080"} 1"#,
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        assert_eq!(m.error_count(Direction::Inbound, ErrorKind::AppConnect), 1);
    }

    /// docs/observability.md promises to list every metric: a family added
    /// here without a line there fails.
    #[test]
    fn every_family_is_in_the_observability_docs() {
        let docs = include_str!("../../docs/observability.md");
        let mut registry = Registry::default();
        let _m = ProxyMetrics::new(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let mut missing = Vec::new();
        for line in out.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let exposed = if kind == "counter" {
                format!("`{name}_total`")
            } else {
                format!("`{name}`")
            };
            if !docs.contains(&exposed) {
                missing.push(exposed);
            }
        }
        assert!(out.contains("# TYPE"), "nothing rendered:\n{out}");
        assert!(
            missing.is_empty(),
            "not in docs/observability.md: {missing:?}"
        );
    }
}
