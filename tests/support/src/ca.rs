//! The one test CA: a root and an issuer under it that signs workload
//! leaves with a SPIFFE URI SAN, the shape of the mesh's own CA. A fresh
//! [`TestCa::new`] is trusted by nobody (negative controls, in-process
//! proxies); [`TestCa::from_data_dir`] signs with a running controller's
//! issuer (positive controls against real proxies).
//!
//! Test setup only: a failure here is a broken test, so it panics with what
//! went wrong.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    root_pem: String,
    issuer: Certificate,
    issuer_key: KeyPair,
    /// The issuer as every leaf's chain carries it, after the leaf.
    issuer_chain: Vec<CertificateDer<'static>>,
    issuer_chain_pem: String,
}

/// A leaf and its key, in the forms the tests hand to rustls, tonic and the
/// proxy's files.
pub struct Leaf {
    /// Leaf first, then the issuer.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub chain_pem: String,
    pub key_pem: String,
}

impl Leaf {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn ca_params(common_name: String, path_len: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(path_len);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn pem_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("test CA: bad certificate PEM: {e}"))
}

impl TestCa {
    /// A CA of its own (`<name> root` → `<name> issuer`).
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate().expect("test CA: root key");
        let root = ca_params(format!("{name} root"), BasicConstraints::Unconstrained)
            .self_signed(&root_key)
            .expect("test CA: self-sign root");
        let issuer_key = KeyPair::generate().expect("test CA: issuer key");
        let issuer = ca_params(format!("{name} issuer"), BasicConstraints::Constrained(0))
            .signed_by(&issuer_key, &root, &root_key)
            .expect("test CA: sign issuer");
        Self {
            root_pem: root.pem(),
            issuer_chain: vec![issuer.der().clone()],
            issuer_chain_pem: issuer.pem(),
            issuer,
            issuer_key,
        }
    }

    /// The issuer of a controller whose data dir is `data_dir` (its
    /// `ca/issuer.pem`, `ca/issuer.key` and `ca/root.pem`): leaves it signs
    /// are leaves the mesh itself could have issued.
    pub fn from_data_dir(data_dir: &Path) -> Self {
        let read = |name: &str| {
            let path = data_dir.join("ca").join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("test CA: read {}: {e}", path.display()))
        };
        let issuer_pem = read("issuer.pem");
        let issuer_key = KeyPair::from_pem(&read("issuer.key")).expect("test CA: issuer key");
        let params = CertificateParams::from_ca_cert_pem(&issuer_pem).expect("test CA: issuer");
        // Signing the parsed params again keeps the issuer's name and key,
        // which is all a leaf's issuer field and signature depend on; the
        // chain carries the original certificate.
        let issuer = params
            .self_signed(&issuer_key)
            .expect("test CA: issuer cert");
        Self {
            root_pem: read("root.pem"),
            issuer_chain: pem_chain(&issuer_pem),
            issuer_chain_pem: issuer_pem,
            issuer,
            issuer_key,
        }
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The issuer certificate (PEM), for a test that hands this CA to a
    /// controller as its own (`--issuer-cert`).
    pub fn issuer_pem(&self) -> &str {
        &self.issuer_chain_pem
    }

    /// The issuer's private key (PKCS#8 PEM, `--issuer-key`).
    pub fn issuer_key_pem(&self) -> String {
        self.issuer_key.serialize_pem()
    }

    /// Writes `root.pem`, `issuer.pem` and `issuer.key` into `dir` and
    /// returns the controller flags naming them (no root key: it stays
    /// offline).
    pub fn write_user_ca(&self, dir: &Path) -> Vec<String> {
        std::fs::create_dir_all(dir).expect("test CA: create dir");
        let mut flags = Vec::new();
        for (flag, name, text) in [
            ("--root-cert", "root.pem", self.root_pem.clone()),
            ("--issuer-cert", "issuer.pem", self.issuer_chain_pem.clone()),
            ("--issuer-key", "issuer.key", self.issuer_key_pem()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("test CA: write");
            flags.push(flag.to_string());
            flags.push(path.display().to_string());
        }
        flags
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        pem_chain(&self.root_pem)
            .into_iter()
            .next()
            .expect("test CA: a root certificate")
    }

    /// A workload leaf for `spiffe_id`, good for server and client auth.
    pub fn leaf(&self, spiffe_id: &str) -> Leaf {
        let uri = spiffe_id
            .try_into()
            .unwrap_or_else(|e| panic!("test CA: {spiffe_id:?} as a URI SAN: {e}"));
        self.leaf_for(vec![SanType::URI(uri)])
    }

    /// A web leaf for DNS `hosts` (wildcards allowed), good for server and
    /// client auth.
    pub fn host_leaf(&self, hosts: &[&str]) -> Leaf {
        let sans = hosts
            .iter()
            .map(|h| {
                SanType::DnsName(
                    (*h).try_into()
                        .unwrap_or_else(|e| panic!("test CA: {h:?} as a DNS SAN: {e}")),
                )
            })
            .collect();
        self.leaf_for(sans)
    }

    fn leaf_for(&self, sans: Vec<SanType>) -> Leaf {
        let key = KeyPair::generate().expect("test CA: leaf key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer, &self.issuer_key)
            .expect("test CA: sign leaf");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.issuer_chain.iter().cloned());
        Leaf {
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain_pem: format!("{}{}", cert.pem(), self.issuer_chain_pem),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate signing request with a fresh key, as a proxy sends to the
/// controller's Certify.
pub struct Csr {
    pub der: Vec<u8>,
    pub key_pem: String,
}

impl Csr {
    /// A CSR that asks for nothing in particular (the controller decides
    /// the identity from the token).
    pub fn new() -> Self {
        Self::from_params(CertificateParams::default())
    }

    /// A CSR that asks for `uri` as its SAN and its subject's common name,
    /// to check that the controller ignores both.
    pub fn asking_for(uri: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, uri);
        let san = uri
            .try_into()
            .unwrap_or_else(|e| panic!("CSR: {uri:?} as a URI SAN: {e}"));
        params.subject_alt_names = vec![SanType::URI(san)];
        Self::from_params(params)
    }

    fn from_params(params: CertificateParams) -> Self {
        let key = KeyPair::generate().expect("CSR: key");
        let csr = params.serialize_request(&key).expect("CSR: serialize");
        Self {
            der: csr.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for Csr {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_chain_is_leaf_then_issuer_in_both_forms() {
        let ca = TestCa::new("t");
        let leaf = ca.leaf("spiffe://cluster.local/ns/shop/sa/a");
        assert_eq!(leaf.chain.len(), 2);
        assert_eq!(pem_chain(&leaf.chain_pem), leaf.chain);
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert_ne!(ca.root_der(), leaf.chain[1]);
    }
}
