//! Trust anchors: the root the CA signs under, the material of a new CA
//! (a root and an issuer, as PEM) and the checks every CA passes before it
//! is used, whether it is loaded at start or given for a rotation.

use std::path::Path;

use rcgen::KeyPair;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::issuer::{Issuer, RootSigner};
use super::{first_cert_der, invalid, LoadError};

/// A root certificate the CA signs under.
pub(crate) struct Root {
    pub(crate) der: Vec<u8>,
    pub(crate) pem: String,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) fingerprint: String,
    /// Held only when the root key is here (a CA generated in the data
    /// dir): it is what lets the issuer be rotated.
    pub(crate) signer: Option<RootSigner>,
}

/// SHA-256 of a certificate's DER, lower-case hex: how roots are named in
/// status output and in the rotation state.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A CA given as PEM text: a root, optionally its key, and an issuer (an
/// intermediate signed by the root) with its key.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct CaMaterial {
    pub root_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key_pem: Option<String>,
    pub issuer_pem: String,
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("root_key", &self.root_key_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// What each PEM is called in errors: file paths at start, the flag or
/// field names for material given to a rotation.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub root: &'a Path,
    pub root_key: &'a Path,
    pub issuer: &'a Path,
    pub issuer_key: &'a Path,
}

/// The labels of material given to a rotation (the CLI flags' names).
pub(crate) fn given() -> Labels<'static> {
    Labels {
        root: Path::new("--root-cert"),
        root_key: Path::new("--root-key"),
        issuer: Path::new("--issuer-cert"),
        issuer_key: Path::new("--issuer-key"),
    }
}

/// A checked CA, ready to sign.
pub(crate) struct Checked {
    pub(crate) root: Root,
    pub(crate) issuer: Issuer,
}

/// Checks a parsed certificate is a CA certificate valid now.
fn check_ca_cert(
    path: &Path,
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<(), LoadError> {
    if !cert.is_ca() {
        return Err(invalid(
            path,
            "is not a CA certificate (basicConstraints CA:TRUE missing)",
        ));
    }
    if !cert.validity().is_valid() {
        return Err(invalid(
            path,
            format!(
                "is not valid now (valid from {} to {})",
                cert.validity().not_before,
                cert.validity().not_after
            ),
        ));
    }
    Ok(())
}

/// Checks `material` as a CA: both certificates are CA certificates valid
/// now, the root is self-signed, the issuer is signed by it, and each key
/// belongs to its certificate. `signer_dir` is where a rotated issuer would
/// be written when the root key is given.
pub(crate) fn check(
    material: &CaMaterial,
    labels: &Labels<'_>,
    signer_dir: &Path,
) -> Result<Checked, LoadError> {
    let root_der = first_cert_der(labels.root, &material.root_pem)?;
    let issuer_der = first_cert_der(labels.issuer, &material.issuer_pem)?;
    let issuer_key = KeyPair::from_pem(&material.issuer_key_pem).map_err(|e| {
        invalid(
            labels.issuer_key,
            format!("is not a usable PKCS#8 private key (BEGIN PRIVATE KEY): {e}"),
        )
    })?;
    let (_, root) = x509_parser::parse_x509_certificate(&root_der)
        .map_err(|e| invalid(labels.root, format!("cannot parse certificate: {e}")))?;
    let (_, issuer_x509) = x509_parser::parse_x509_certificate(&issuer_der)
        .map_err(|e| invalid(labels.issuer, format!("cannot parse certificate: {e}")))?;
    check_ca_cert(labels.root, &root)?;
    check_ca_cert(labels.issuer, &issuer_x509)?;
    if root.verify_signature(None).is_err() {
        return Err(invalid(
            labels.root,
            "is not a self-signed root certificate",
        ));
    }
    let chained = issuer_x509.issuer().as_raw() == root.subject().as_raw()
        && issuer_x509
            .verify_signature(Some(root.public_key()))
            .is_ok();
    if !chained {
        return Err(LoadError::NotChained {
            issuer: labels.issuer.to_path_buf(),
            root: labels.root.to_path_buf(),
        });
    }
    if issuer_x509.public_key().subject_public_key.data.as_ref() != issuer_key.public_key_raw() {
        return Err(LoadError::KeyMismatch {
            key: labels.issuer_key.to_path_buf(),
            cert: labels.issuer.to_path_buf(),
        });
    }
    let fingerprint = fingerprint(&root_der);
    let signer = match &material.root_key_pem {
        None => None,
        Some(key) => Some(RootSigner::from_pem(
            signer_dir,
            &root_der,
            key,
            labels.root_key,
            labels.root,
        )?),
    };
    let issuer_not_after = issuer_x509.validity().not_after.to_datetime();
    let issuer = Issuer::from_der(
        issuer_der,
        issuer_key,
        issuer_not_after,
        fingerprint.clone(),
    )
    .map_err(|e| invalid(labels.issuer, format!("cannot be used to sign: {e}")))?;
    Ok(Checked {
        root: Root {
            pem: super::cert_pem(&root_der),
            not_after: root.validity().not_after.to_datetime(),
            der: root_der,
            fingerprint,
            signer,
        },
        issuer,
    })
}

/// The fingerprint of the root `chain` (leaf first, then its issuer)
/// chains to among `roots`, found by checking signatures, not names.
pub fn chain_root<'a>(chain: &[Vec<u8>], roots: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let top = chain.get(1).or_else(|| chain.first())?;
    let (_, top) = x509_parser::parse_x509_certificate(top).ok()?;
    roots.iter().map(Vec::as_slice).find(|root| {
        x509_parser::parse_x509_certificate(root)
            .map(|(_, r)| top.verify_signature(Some(r.public_key())).is_ok())
            .unwrap_or(false)
    })
}
