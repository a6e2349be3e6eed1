//! A throwaway mesh CA for data-path tests: root → issuer → leaf with a
//! SPIFFE URI SAN, loaded into `IdentityState`s as the identity manager would.

// Test scaffolding: a failure here is a broken test setup, best shown as a panic.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mycel_sidecar::identity::{IdentityState, TrustBundle, WorkloadCert};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

pub struct TestCa {
    pub root_der: CertificateDer<'static>,
    issuer: rcgen::Certificate,
    issuer_key: KeyPair,
}

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{sa}")
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.distinguished_name
            .push(DnType::CommonName, format!("{name} root"));
        let root = root.self_signed(&root_key).unwrap();

        let issuer_key = KeyPair::generate().unwrap();
        let mut issuer = CertificateParams::new(Vec::<String>::new()).unwrap();
        issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuer.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        issuer
            .distinguished_name
            .push(DnType::CommonName, format!("{name} issuer"));
        let issuer = issuer.signed_by(&issuer_key, &root, &root_key).unwrap();
        Self {
            root_der: root.der().clone(),
            issuer,
            issuer_key,
        }
    }

    /// A leaf for `spiffe_id` with its chain (leaf, issuer).
    pub fn leaf(&self, spiffe_id: &str) -> WorkloadCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer, &self.issuer_key)
            .unwrap();
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        WorkloadCert {
            spiffe_id: spiffe_id.parse().unwrap(),
            chain: chain.clone(),
            certified_key: Arc::new(CertifiedKey::new(chain, signing)),
            serial_hex: hex_serial(&cert),
            not_before_unix: 0,
            not_after_unix: 0,
        }
    }

    /// An identity holding a leaf for `spiffe_id` and trusting this CA.
    pub fn identity(&self, spiffe_id: &str) -> Arc<IdentityState> {
        let state = self.trusting();
        state.set_cert(self.leaf(spiffe_id));
        state
    }

    /// An identity with no certificate that trusts this CA.
    pub fn trusting(&self) -> Arc<IdentityState> {
        let state = IdentityState::new();
        state.set_bundle(TrustBundle {
            roots: vec![self.root_der.clone()],
        });
        state
    }
}

fn hex_serial(cert: &rcgen::Certificate) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    parsed.tbs_certificate.raw_serial_as_string()
}
