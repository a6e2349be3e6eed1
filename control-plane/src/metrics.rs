//! Controller metrics, in Prometheus text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type ResultLabels = Vec<(&'static str, &'static str)>;

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
        Self {
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

    pub fn certificate(&self, result: &'static str) {
        self.certificates_issued
            .get_or_create(&vec![("result", result)])
            .inc();
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
        m.certificate("ok");
        m.certificate("ok");
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
}
