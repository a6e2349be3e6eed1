//! What a trust-anchor rotation needs from the CA: a new CA generated or
//! checked, installed in place of the current one, and the roots trusted
//! besides it (`crate::ca::rotation` decides when).

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::issuer::Issuer;
use super::{
    anchor, check_trust_domain, invalid, random_serial, Authority, CaMaterial, Labels, LoadError,
    NewCa, BACKDATE, ROOT_LIFETIME,
};

/// A fresh self-signed root for `trust_domain`, with its key.
pub(super) fn new_root(trust_domain: &str) -> Result<(rcgen::Certificate, KeyPair), LoadError> {
    let now = OffsetDateTime::now_utc();
    let root_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(LoadError::Generate)?;
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = DistinguishedName::new();
    root_params
        .distinguished_name
        .push(DnType::OrganizationName, "Mycel");
    root_params.distinguished_name.push(
        DnType::CommonName,
        format!("Mycel Root CA ({trust_domain})"),
    );
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    root_params.not_before = now - BACKDATE;
    root_params.not_after = now + ROOT_LIFETIME;
    root_params.serial_number = Some(random_serial());
    let root = root_params
        .self_signed(&root_key)
        .map_err(LoadError::Generate)?;
    Ok((root, root_key))
}

/// A new CA (root with its key, and an issuer) to rotate to, as PEM.
pub fn generate_material(
    trust_domain: &str,
    issuer_ttl: Duration,
) -> Result<CaMaterial, LoadError> {
    check_trust_domain(trust_domain)?;
    let (root, root_key) = new_root(trust_domain)?;
    let issuer = Issuer::generate(trust_domain, issuer_ttl, &root, &root_key)
        .map_err(LoadError::Generate)?;
    Ok(CaMaterial {
        root_pem: root.pem(),
        root_key_pem: Some(root_key.serialize_pem()),
        issuer_pem: issuer.pem.clone(),
        issuer_key_pem: issuer.key.serialize_pem(),
    })
}

impl Authority {
    /// Sets the roots trusted besides the current one.
    pub fn set_also_trusted(&self, roots: Vec<Vec<u8>>) {
        let mut g = self.also_trusted.lock().unwrap_or_else(|p| p.into_inner());
        *g = roots;
    }

    /// Checks `material` as a new CA to rotate to: everything a CA loaded
    /// at start must pass, the same trust domain's use, and a root that is
    /// not the current one. Nothing changes here.
    pub fn check_new_ca(
        &self,
        material: &CaMaterial,
        signer_dir: &Path,
    ) -> Result<NewCa, LoadError> {
        let labels = anchor::given();
        let checked = anchor::check(material, &labels, signer_dir)?;
        if checked.root.fingerprint == self.root().fingerprint {
            return Err(invalid(
                labels.root,
                "is the current root already; a rotation needs a new root",
            ));
        }
        Ok(NewCa(checked))
    }

    /// Makes `next` the CA new leaves are signed by; the previous root is
    /// returned (the caller keeps trusting it for the overlap).
    pub fn install(&self, next: NewCa) -> Vec<u8> {
        // Issuer first, held while the root changes, so an issuer rotation
        // cannot run between the two under the wrong root.
        let mut issuer = self.issuer.lock().unwrap_or_else(|p| p.into_inner());
        let mut root = self.root.lock().unwrap_or_else(|p| p.into_inner());
        let previous = root.der.clone();
        *issuer = std::sync::Arc::new(next.0.issuer);
        *root = std::sync::Arc::new(next.0.root);
        previous
    }
}

/// Checks `material` as a CA (everything a CA loaded at start must pass),
/// naming each PEM as `labels` says; the current root is not compared, so
/// this also checks the CA a Kubernetes Secret holds while it is in use.
pub(crate) fn check_material(
    material: &CaMaterial,
    labels: &Labels<'_>,
    signer_dir: &Path,
) -> Result<NewCa, LoadError> {
    anchor::check(material, labels, signer_dir).map(NewCa)
}

impl Authority {
    /// A CA made of PEM text (kept in a Kubernetes Secret), checked as a CA
    /// loaded at start; a root key, when given, is what lets the issuer be
    /// rotated, into `signer_dir`.
    pub(crate) fn from_material(
        material: &CaMaterial,
        labels: &Labels<'_>,
        trust_domain: &str,
        max_ttl: Duration,
        issuer_ttl: Duration,
        signer_dir: &Path,
    ) -> Result<Self, LoadError> {
        check_trust_domain(trust_domain)?;
        let checked = anchor::check(material, labels, signer_dir)?;
        Ok(Self::assemble(trust_domain, max_ttl, issuer_ttl, checked))
    }

    /// The CA signing now, as PEM: root, issuer and the issuer's key. The
    /// root key is left out: whoever gets this may sign leaves, not issuers.
    pub fn material(&self) -> CaMaterial {
        let issuer = self.current_issuer();
        CaMaterial {
            root_pem: self.root_pem(),
            root_key_pem: None,
            issuer_pem: issuer.pem.clone(),
            issuer_key_pem: issuer.key.serialize_pem(),
        }
    }

    /// Makes `next`'s issuer the one new leaves are signed by, when `next`
    /// has the current root (a renewed intermediate); leaves of the
    /// previous issuer stay valid, as with an issuer rotation.
    pub fn replace_issuer(&self, next: NewCa) -> Result<(), LoadError> {
        let mut issuer = self.issuer.lock().unwrap_or_else(|p| p.into_inner());
        if next.0.root.fingerprint != self.root().fingerprint {
            return Err(invalid(
                Path::new("issuer"),
                "is not signed by the current root; a new root needs a rotation",
            ));
        }
        *issuer = std::sync::Arc::new(next.0.issuer);
        Ok(())
    }

    /// The current issuer's certificate fingerprint.
    pub fn issuer_fingerprint(&self) -> String {
        anchor::fingerprint(&self.current_issuer().der)
    }
}
