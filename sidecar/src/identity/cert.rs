//! Turning DER/PEM certificates and keys into the [`WorkloadCert`] the TLS
//! stacks use, checking on the way that the leaf names the identity this
//! proxy expects and carries the key this proxy holds.

use std::path::Path;
use std::sync::Arc;

use mycel_api::spiffe::{SpiffeId, SpiffeIdError};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::core::credentials::{TrustBundle, WorkloadCert};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the certificate chain is empty")]
    EmptyChain,
    #[error("the trust bundle is empty")]
    EmptyBundle,
    #[error("{what}: cannot parse certificate: {source}")]
    Parse {
        what: String,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("leaf certificate identity: {0}")]
    SpiffeId(#[from] SpiffeIdError),
    #[error("leaf certificate is for {got}, but this proxy is {expected}")]
    Mismatch { expected: String, got: String },
    #[error("private key: {0}")]
    Key(#[source] rustls::Error),
    #[error("leaf certificate does not match the private key: {0}")]
    KeyMismatch(#[source] rustls::Error),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// What the admin page shows of one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub serial_hex: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

pub fn summary(what: &str, der: &[u8]) -> Result<CertSummary, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|source| CertError::Parse {
            what: what.to_string(),
            source,
        })?;
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        serial_hex: hex::encode(cert.raw_serial()),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// Builds the certificate the TLS stacks serve. `chain` is leaf first.
pub fn workload_cert(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    expected: &SpiffeId,
) -> Result<WorkloadCert, CertError> {
    let leaf = chain.first().ok_or(CertError::EmptyChain)?;
    let info = summary("leaf", leaf)?;
    let spiffe_id = SpiffeId::from_cert_der(leaf)?;
    if &spiffe_id != expected {
        return Err(CertError::Mismatch {
            expected: expected.to_string(),
            got: spiffe_id.to_string(),
        });
    }
    for (i, der) in chain.iter().enumerate().skip(1) {
        summary(&format!("chain certificate {i}"), der)?;
    }
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertError::Key)?;
    let certified_key = CertifiedKey::new(chain.clone(), signing_key);
    certified_key.keys_match().map_err(CertError::KeyMismatch)?;
    Ok(WorkloadCert {
        spiffe_id,
        chain,
        certified_key: Arc::new(certified_key),
        serial_hex: info.serial_hex,
        not_before_unix: info.not_before_unix,
        not_after_unix: info.not_after_unix,
    })
}

pub fn trust_bundle(roots: Vec<CertificateDer<'static>>) -> Result<TrustBundle, CertError> {
    if roots.is_empty() {
        return Err(CertError::EmptyBundle);
    }
    for (i, der) in roots.iter().enumerate() {
        summary(&format!("trust bundle root {i}"), der)?;
    }
    Ok(TrustBundle::new(roots))
}

fn file_err(path: &Path, reason: impl ToString) -> CertError {
    CertError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl From<crate::core::pem_files::PemFileError> for CertError {
    fn from(e: crate::core::pem_files::PemFileError) -> Self {
        CertError::File {
            path: e.path.display().to_string(),
            reason: e.reason,
        }
    }
}

/// Every certificate in a PEM file; an error when there is none.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    Ok(crate::core::pem_files::read_certs(path)?)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    Ok(crate::core::pem_files::read_key(path)?)
}

/// Static mode: the certificate chain, key and trust bundle from PEM files,
/// with the same checks as a certificate from the CA.
pub fn load_static(
    cert: &Path,
    key: &Path,
    bundle: &Path,
    expected: &SpiffeId,
) -> Result<(WorkloadCert, TrustBundle), CertError> {
    let chain = read_pem_certs(cert)?;
    let key = read_pem_key(key)?;
    let cert = workload_cert(chain, key, expected).map_err(|e| file_err(cert, e))?;
    let bundle = trust_bundle(read_pem_certs(bundle)?).map_err(|e| file_err(bundle, e))?;
    Ok((cert, bundle))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::fake::FakeCa;

    #[test]
    fn static_files_load_and_are_checked() {
        let me: SpiffeId = "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap();
        let ca = FakeCa::new(me.clone(), Duration::from_secs(3600));
        let pem = ca.issue_pem(&me, Duration::from_secs(3600)).unwrap();
        let other = ca.issue_pem(&me, Duration::from_secs(3600)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str, text: &str| {
            let path = dir.path().join(n);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (cert, key, bundle) = (
            p("c.pem", &pem.chain_pem),
            p("k.pem", &pem.key_pem),
            p("b.pem", &pem.root_pem),
        );
        let (wc, tb) = load_static(&cert, &key, &bundle, &me).unwrap();
        assert_eq!(wc.spiffe_id, me);
        assert_eq!(tb.roots.len(), 1);

        let them: SpiffeId = "spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap();
        let err = load_static(&cert, &key, &bundle, &them)
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.pem") && err.contains("sa/reviews"), "{err}");

        let wrong_key = p("k2.pem", &other.key_pem);
        let err = load_static(&cert, &wrong_key, &bundle, &me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match the private key"), "{err}");

        let empty = p("e.pem", "");
        let err = load_static(&cert, &key, &empty, &me)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = load_static(&cert, &empty, &bundle, &me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PRIVATE KEY"), "{err}");
    }
}
