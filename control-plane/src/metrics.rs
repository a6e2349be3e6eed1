//! Controller metrics, in Prometheus text format.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type ResultLabels = Vec<(&'static str, &'static str)>;
type HistogramFamily = Family<ResultLabels, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds, the same as the proxies' request histogram
/// so dashboards can put both on one scale: a CSR signed in memory takes
/// well under a millisecond, a push to a proxy across a cluster can take
/// seconds when the proxy is slow to apply it.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.into_iter())
}

/// How a proxy answered a discovery response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushAnswer {
    Ack,
    Nack,
}

impl PushAnswer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nack => "nack",
        }
    }
}

/// Every metric the controller exports. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub connected_proxies: Gauge,
    certificates_issued: Family<ResultLabels, Counter>,
    pub discovery_pushes: Counter,
    pub discovery_nacks: Counter,
    pub index_services: Gauge,
    pub index_endpoints: Gauge,
    serving_cert_expiry: Gauge,
    issuer_cert_expiry: Gauge,
    root_cert_expiry: Gauge,
    pub grpc_connections_refused: Counter,
    push_ack_duration: HistogramFamily,
    csr_duration: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mycel_controller");
        let connected_proxies = Gauge::default();
        let certificates_issued = Family::<ResultLabels, Counter>::default();
        let discovery_pushes = Counter::default();
        let discovery_nacks = Counter::default();
        let index_services = Gauge::default();
        let index_endpoints = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies with an open discovery stream",
            connected_proxies.clone(),
        );
        registry.register(
            "certificates_issued",
            "Certify requests by result (ok, unauthenticated, unknown_token, expired, revoked, rate_limited, permission_denied, invalid_csr, error)",
            certificates_issued.clone(),
        );
        registry.register(
            "discovery_pushes",
            "Discovery responses sent to proxies",
            discovery_pushes.clone(),
        );
        registry.register(
            "discovery_nacks",
            "Discovery responses proxies rejected",
            discovery_nacks.clone(),
        );
        registry.register(
            "index_services",
            "Services in the mesh index",
            index_services.clone(),
        );
        registry.register(
            "index_endpoints",
            "Ready endpoints summed over all services",
            index_endpoints.clone(),
        );
        let serving_cert_expiry = Gauge::default();
        let issuer_cert_expiry = Gauge::default();
        let root_cert_expiry = Gauge::default();
        let grpc_connections_refused = Counter::default();
        registry.register(
            "serving_cert_expiry_timestamp_seconds",
            "When the gRPC serving certificate expires (unix seconds)",
            serving_cert_expiry.clone(),
        );
        registry.register(
            "issuer_cert_expiry_timestamp_seconds",
            "When the issuer (intermediate) signing new certificates expires (unix seconds)",
            issuer_cert_expiry.clone(),
        );
        registry.register(
            "root_cert_expiry_timestamp_seconds",
            "When the mesh root certificate expires (unix seconds)",
            root_cert_expiry.clone(),
        );
        registry.register(
            "grpc_connections_refused",
            "gRPC connections closed at accept because the connection limit was reached",
            grpc_connections_refused.clone(),
        );
        let push_ack_duration = HistogramFamily::new_with_constructor(latency_histogram);
        let csr_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "push_ack_duration_seconds",
            "Time from sending a discovery response to the proxy's ACK or NACK of its nonce, by result (ack, nack) and type (the resource kind the response carried: service, endpoints, trust_bundle, service_vips, traffic_policy, routes, gateway_routes, inbound_policy, gateway_certificates; mixed for several, empty for none)",
            push_ack_duration.clone(),
        );
        registry.register(
            "csr_duration_seconds",
            "Time to answer a Certify request, by result (the values of certificates_issued)",
            csr_duration.clone(),
        );
        Self {
            push_ack_duration,
            csr_duration,
            serving_cert_expiry,
            issuer_cert_expiry,
            root_cert_expiry,
            grpc_connections_refused,
            registry,
            connected_proxies,
            certificates_issued,
            discovery_pushes,
            discovery_nacks,
            index_services,
            index_endpoints,
        }
    }

    /// One answered Certify call. `result` comes from a fixed set
    /// (`CertifyError::label` or "ok"), which keeps the label set bounded.
    pub fn certificate(&self, result: &'static str, elapsed: Duration) {
        let labels = vec![("result", result)];
        self.certificates_issued.get_or_create(&labels).inc();
        self.csr_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A proxy answered a response sent `elapsed` ago. `kind` is one of the
    /// fixed resource kind names, "mixed" or "empty".
    pub fn push_answered(&self, answer: PushAnswer, kind: &'static str, elapsed: Duration) {
        self.push_ack_duration
            .get_or_create(&vec![("result", answer.as_str()), ("type", kind)])
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_serving_expiry(&self, unix: i64) {
        self.serving_cert_expiry.set(unix);
    }

    pub fn set_issuer_expiry(&self, unix: i64) {
        self.issuer_cert_expiry.set(unix);
    }

    pub fn set_root_expiry(&self, unix: i64) {
        self.root_cert_expiry.set(unix);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::new();
        m.certificate("ok", Duration::from_micros(300));
        m.certificate("ok", Duration::from_millis(2));
        m.discovery_pushes.inc();
        m.connected_proxies.set(3);
        m.set_serving_expiry(1_900_000_000);
        m.set_issuer_expiry(1_900_000_001);
        m.set_root_expiry(1_900_000_002);
        let text = m.encode();
        for want in [
            "mycel_controller_certificates_issued_total{result=\"ok\"} 2",
            "mycel_controller_connected_proxies 3",
            "mycel_controller_discovery_pushes_total 1",
            "mycel_controller_discovery_nacks_total 0",
            "mycel_controller_index_services 0",
            "mycel_controller_index_endpoints 0",
            "mycel_controller_serving_cert_expiry_timestamp_seconds 1900000000",
            "mycel_controller_issuer_cert_expiry_timestamp_seconds 1900000001",
            "mycel_controller_root_cert_expiry_timestamp_seconds 1900000002",
            "mycel_controller_grpc_connections_refused_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    /// The value of the sample line starting with `prefix` (labels and
    /// all), so a test does not depend on how the encoder orders labels
    /// beyond what it asserts.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn csr_latency_is_bucketed_by_result() {
        let m = Metrics::new();
        m.certificate("ok", Duration::from_micros(300));
        m.certificate("ok", Duration::from_millis(2));
        m.certificate("rate_limited", Duration::from_secs(20));
        let text = m.encode();
        assert!(text.contains("# TYPE mycel_controller_csr_duration_seconds histogram"));
        let ok = |le: &str| {
            sample(
                &text,
                &format!(
                    "mycel_controller_csr_duration_seconds_bucket{{le=\"{le}\",result=\"ok\"}}"
                ),
            )
        };
        // 300 µs lands in the 0.0005 bucket, 2 ms in the 0.0025 one.
        assert_eq!(ok("0.00025"), Some(0.0));
        assert_eq!(ok("0.0005"), Some(1.0));
        assert_eq!(ok("0.0025"), Some(2.0));
        assert_eq!(ok("+Inf"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                "mycel_controller_csr_duration_seconds_count{result=\"ok\"}"
            ),
            Some(2.0)
        );
        // Beyond the last bucket still counts, in +Inf only.
        let limited = |le: &str| {
            sample(
                &text,
                &format!(
                    "mycel_controller_csr_duration_seconds_bucket{{le=\"{le}\",result=\"rate_limited\"}}"
                ),
            )
        };
        assert_eq!(limited("10.0"), Some(0.0));
        assert_eq!(limited("+Inf"), Some(1.0));
        assert!(
            text.contains("mycel_controller_certificates_issued_total{result=\"rate_limited\"} 1")
        );
    }

    #[test]
    fn push_ack_latency_has_result_and_type() {
        let m = Metrics::new();
        m.push_answered(PushAnswer::Ack, "endpoints", Duration::from_millis(4));
        m.push_answered(PushAnswer::Nack, "routes", Duration::from_millis(40));
        let text = m.encode();
        assert!(text.contains("# TYPE mycel_controller_push_ack_duration_seconds histogram"));
        let ack = |le: &str| {
            sample(
                &text,
                &format!(
                    "mycel_controller_push_ack_duration_seconds_bucket{{le=\"{le}\",result=\"ack\",type=\"endpoints\"}}"
                ),
            )
        };
        assert_eq!(ack("0.0025"), Some(0.0));
        assert_eq!(ack("0.005"), Some(1.0));
        let nack =
            "mycel_controller_push_ack_duration_seconds_sum{result=\"nack\",type=\"routes\"}";
        let sum = sample(&text, nack).unwrap();
        assert!((sum - 0.04).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn buckets_span_sub_millisecond_to_ten_seconds() {
        assert!(LATENCY_BUCKETS.first().is_some_and(|&b| b < 0.001));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&10.0));
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
