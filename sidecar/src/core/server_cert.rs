//! A certificate the gateway serves to HTTPS clients, from its PEM chain
//! and private key: checked (a chain, a leaf with DNS names, a key of a
//! supported type that belongs to the leaf) and turned into what rustls
//! serves, with the names SNI picks it by and its expiry.
//!
//! One implementation for both places certificates come from: the
//! `--tls-cert` files (`gateway::tls`, which names the file in its errors)
//! and the certificates a Gateway's listeners carry, pushed by the
//! controller (`discovery`, which NACKs naming the Secret). Kept in `core`
//! so neither imports the other.

use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What is wrong with a certificate or its key. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum ServerCertError {
    #[error("no CERTIFICATE block found")]
    NoCertificate,
    #[error("bad certificate PEM: {0}")]
    CertificatePem(String),
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("the certificate names no DNS host (subjectAltName dNSName)")]
    NoNames,
    #[error("no PRIVATE KEY block found")]
    NoKey,
    #[error("bad private key PEM: {0}")]
    KeyPem(String),
    // Not a `#[source]`: the message carries it already, and a report
    // that walks the chain would say it twice.
    #[error("unusable private key: {0}")]
    Key(rustls::Error),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
}

impl ServerCertError {
    /// Whether the key (rather than the certificate chain) is at fault,
    /// or a key that belongs to another certificate, so a caller can name
    /// the right file or field.
    pub fn is_key(&self) -> bool {
        matches!(
            self,
            ServerCertError::NoKey
                | ServerCertError::KeyPem(_)
                | ServerCertError::Key(_)
                | ServerCertError::KeyMismatch
        )
    }
}

/// A usable server certificate and what it answers for.
#[derive(Clone)]
pub struct ServerCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's DNS names, lower-case, without a trailing dot;
    /// `*.example.com` for a wildcard.
    pub names: Vec<String>,
    pub not_after_unix: i64,
}

/// Names and expiry only: the private key stays out of every log line and
/// debug dump.
impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("names", &self.names)
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

/// Compared by chain and names: a key that belongs to the same leaf is the
/// same certificate for every purpose here.
impl PartialEq for ServerCert {
    fn eq(&self, other: &Self) -> bool {
        self.key.cert == other.key.cert
            && self.names == other.names
            && self.not_after_unix == other.not_after_unix
    }
}

impl ServerCert {
    /// From PEM bytes: `chain_pem` the certificates, leaf first;
    /// `key_pem` the leaf's key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerCert, ServerCertError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                pem::Error::NoItemsFound => ServerCertError::NoCertificate,
                e => ServerCertError::CertificatePem(e.to_string()),
            })?;
        // Checked before the key: a chain that is wrong says so even when
        // the key is wrong too.
        if chain.is_empty() {
            return Err(ServerCertError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => ServerCertError::NoKey,
            e => ServerCertError::KeyPem(e.to_string()),
        })?;
        Self::from_der(chain, key)
    }

    /// From DER: the checks every certificate passes, wherever it came from.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerCert, ServerCertError> {
        let leaf = chain.first().ok_or(ServerCertError::NoCertificate)?;
        let (names, not_after_unix) = names_of(leaf)?;
        let signing_key =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(ServerCertError::Key)?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|_| ServerCertError::KeyMismatch)?;
        Ok(ServerCert {
            key: Arc::new(certified),
            names,
            not_after_unix,
        })
    }

    /// True once the certificate's validity has ended.
    pub fn expired(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after_unix < now
    }
}

/// The DNS names of a leaf certificate, lower-case, and its expiry.
pub fn names_of(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), ServerCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| ServerCertError::Parse(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err(ServerCertError::NoNames);
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(hosts: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_gives_its_names_and_expiry() {
        let (cert, key) = pair(&["Shop.Example.", "*.api.example"]);
        let c = ServerCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(c.names, ["shop.example", "*.api.example"]);
        assert!(c.not_after_unix > 0 && !c.expired());
        let shown = format!("{c:?}");
        assert!(
            shown.contains("shop.example") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn each_fault_is_named() {
        let (cert, key) = pair(&["shop.example"]);
        let (_, other_key) = pair(&["other.example"]);
        let (no_dns, no_dns_key) = pair(&[]);
        let cases: [(&str, &str, &str, bool); 6] = [
            ("", &key, "no CERTIFICATE block", false),
            ("garbage", &key, "no CERTIFICATE block", false),
            (&cert, "", "no PRIVATE KEY block", true),
            (&cert, &other_key, "does not belong", true),
            (&no_dns, &no_dns_key, "names no DNS host", false),
            (
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "unusable private key",
                true,
            ),
        ];
        for (chain, key, want, is_key) in cases {
            let e = ServerCert::from_pem(chain.as_bytes(), key.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
            assert_eq!(e.is_key(), is_key, "{e}");
        }
    }
}
