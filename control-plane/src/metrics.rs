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
        Self {
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
        let text = m.encode();
        for want in [
            "mycel_controller_certificates_issued_total{result=\"ok\"} 2",
            "mycel_controller_connected_proxies 3",
            "mycel_controller_discovery_pushes_total 1",
            "mycel_controller_discovery_nacks_total 0",
            "mycel_controller_index_services 0",
            "mycel_controller_index_endpoints 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
