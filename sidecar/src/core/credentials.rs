//! The proxy's current certificate and trust bundle, read by every TLS
//! handshake and swapped in place on renewal or bundle update, so no open
//! connection is dropped.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use mycel_api::spiffe::SpiffeId;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use tokio::sync::watch;

/// A certificate this proxy holds, with its key ready for rustls.
#[derive(Debug)]
pub struct WorkloadCert {
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub certified_key: Arc<CertifiedKey>,
    pub serial_hex: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

/// Roots peers must chain to.
#[derive(Debug, Default)]
pub struct TrustBundle {
    pub roots: Vec<CertificateDer<'static>>,
    /// The roots read once as trust anchors, when the bundle is made, not
    /// at every handshake. A root that does not parse is left out: one
    /// bad entry must not take down authentication against the others.
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    pub fn new(roots: Vec<CertificateDer<'static>>) -> TrustBundle {
        let anchors = roots
            .iter()
            .filter_map(|root| webpki::anchor_from_trusted_cert(root).ok())
            .map(|anchor| anchor.to_owned())
            .collect();
        TrustBundle { roots, anchors }
    }

    /// The roots that parse, as webpki checks chains against them.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

/// Shared by the identity manager (writer) and TLS configs (readers).
#[derive(Debug)]
pub struct IdentityState {
    cert: ArcSwapOption<WorkloadCert>,
    bundle: ArcSwap<TrustBundle>,
    /// Bumps on every change, so waiters (readiness, tests) can await one.
    generation: watch::Sender<u64>,
    /// Someone (the discovery stream) found the certificate unusable with
    /// the controller and asks for a renewal before its schedule.
    renewal: tokio::sync::Notify,
}

impl Default for IdentityState {
    fn default() -> Self {
        Self {
            cert: ArcSwapOption::empty(),
            bundle: ArcSwap::from_pointee(TrustBundle::default()),
            generation: watch::channel(0).0,
            renewal: tokio::sync::Notify::new(),
        }
    }
}

impl IdentityState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn cert(&self) -> Option<Arc<WorkloadCert>> {
        self.cert.load_full()
    }

    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }

    pub fn has_cert(&self) -> bool {
        self.cert.load().is_some()
    }

    pub fn set_cert(&self, cert: WorkloadCert) {
        self.cert.store(Some(Arc::new(cert)));
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Arc::new(bundle));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes whenever the certificate or the bundle does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Asks the identity manager for a renewal now (it decides how often it
    /// listens). One pending ask is kept; more add nothing.
    pub fn ask_renewal(&self) {
        self.renewal.notify_one();
    }

    /// Returns at the next [`Self::ask_renewal`] (or a pending one).
    pub async fn renewal_asked(&self) {
        self.renewal.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_anchors_are_read_once_and_a_bad_root_is_left_out() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).unwrap();
        let bundle = TrustBundle::new(vec![
            CertificateDer::from(b"not a certificate".to_vec()),
            root.der().clone(),
        ]);
        assert_eq!(bundle.roots.len(), 2, "kept as sent");
        assert_eq!(bundle.anchors().len(), 1, "only the root that parses");
        assert!(TrustBundle::default().anchors().is_empty());
    }
}
