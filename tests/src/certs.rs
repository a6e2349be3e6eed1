//! Certificates made inside tests: leaves signed by the mesh's own issuer
//! (positive controls) and by a foreign CA (negative ones).

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

pub struct Issuer {
    pub cert: Certificate,
    pub key: KeyPair,
    /// PEM of the issuer as the chain should carry it (the original file).
    pub chain_pem: String,
}

/// The mesh CA's intermediate, loaded from the controller's data dir.
pub fn mesh_issuer(data_dir: &Path) -> Issuer {
    let cert_pem = std::fs::read_to_string(data_dir.join("ca/issuer.pem")).expect("issuer.pem");
    let key_pem = std::fs::read_to_string(data_dir.join("ca/issuer.key")).expect("issuer.key");
    let key = KeyPair::from_pem(&key_pem).expect("issuer key");
    let params = CertificateParams::from_ca_cert_pem(&cert_pem).expect("issuer params");
    // Re-signing the parsed params keeps the issuer's name and key, which is
    // all a leaf's signature and issuer field depend on.
    let cert = params.self_signed(&key).expect("issuer cert");
    Issuer {
        cert,
        key,
        chain_pem: cert_pem,
    }
}

/// A CA nobody in the mesh trusts.
pub fn foreign_ca() -> Issuer {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "foreign test CA");
    let cert = params.self_signed(&key).expect("ca");
    let chain_pem = cert.pem();
    Issuer {
        cert,
        key,
        chain_pem,
    }
}

/// A workload leaf for `spiffe_id`: (chain PEM, key PEM).
pub fn leaf(issuer: &Issuer, spiffe_id: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().expect("uri"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("sign leaf");
    (
        format!("{}{}", cert.pem(), issuer.chain_pem),
        key.serialize_pem(),
    )
}
