//! The shared test CA's leaves as the proxy holds them: `IdentityState`s
//! loaded through the product's own `cert::workload_cert`, as the identity
//! manager loads what the controller issues.

use std::sync::Arc;

use mycel_sidecar::identity::cert::workload_cert;
use mycel_sidecar::identity::{IdentityState, TrustBundle, WorkloadCert};
pub use mycel_test_support::TestCa;

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{sa}")
}

/// What the data-path tests need of a [`TestCa`].
pub trait ProxyIdentity {
    /// A leaf for `spiffe_id`, as the proxy serves it.
    fn workload_cert(&self, spiffe_id: &str) -> WorkloadCert;
    /// An identity with no certificate that trusts this CA.
    fn trusting(&self) -> Arc<IdentityState>;
    /// An identity holding a leaf for `spiffe_id` and trusting this CA.
    fn identity(&self, spiffe_id: &str) -> Arc<IdentityState> {
        let state = self.trusting();
        state.set_cert(self.workload_cert(spiffe_id));
        state
    }
}

impl ProxyIdentity for TestCa {
    fn workload_cert(&self, spiffe_id: &str) -> WorkloadCert {
        let leaf = self.leaf(spiffe_id);
        workload_cert(
            leaf.chain.clone(),
            leaf.key_der(),
            &spiffe_id.parse().unwrap(),
        )
        .unwrap_or_else(|e| panic!("test leaf for {spiffe_id}: {e}"))
    }

    fn trusting(&self) -> Arc<IdentityState> {
        let state = IdentityState::new();
        state.set_bundle(TrustBundle::new(vec![self.root_der()]));
        state
    }
}
