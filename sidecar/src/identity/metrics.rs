//! Identity metrics: renewals by result, and when the current certificate
//! expires.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct IdentityMetrics {
    renewals: Family<Labels, Counter>,
    expiry: Gauge,
}

impl IdentityMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("mycel_identity");
        sub.register(
            "cert_renewals",
            "Certificate requests to the CA, by result",
            m.renewals.clone(),
        );
        sub.register(
            "cert_expiry_timestamp_seconds",
            "Unix time at which the current workload certificate expires",
            m.expiry.clone(),
        );
        m
    }

    pub fn renewed(&self, not_after_unix: i64) {
        self.renewals
            .get_or_create(&vec![("result", "success")])
            .inc();
        self.expiry.set(not_after_unix);
    }

    pub fn failed(&self) {
        self.renewals
            .get_or_create(&vec![("result", "failure")])
            .inc();
    }

    /// A certificate loaded from a file (static mode).
    pub fn loaded(&self, not_after_unix: i64) {
        self.expiry.set(not_after_unix);
    }
}
