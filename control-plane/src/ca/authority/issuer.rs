//! The intermediate that signs leaves, and its rotation: a new issuer signed
//! by the same root, written to the data dir before it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mycel_api::spiffe::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::{invalid, random_serial, read, san, LoadError, SignError, BACKDATE};
use mycel_api::files::write_private;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the root key is not held by this controller (a user-provided CA); renew the issuer files and restart")]
    NoRootKey,
    #[error("cannot generate the new issuer: {0}")]
    Generate(rcgen::Error),
    #[error("cannot write the new issuer to {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// One issuing CA, ready to sign.
pub(crate) struct Issuer {
    /// Holds the issuer's name and key identifier, which rcgen needs to
    /// sign; for a loaded issuer it is a re-encoding that is never sent.
    pub(crate) cert: rcgen::Certificate,
    pub(crate) key: KeyPair,
    pub(crate) der: Vec<u8>,
    pub(crate) pem: String,
    pub(crate) serial: Vec<u8>,
    pub(crate) not_after: OffsetDateTime,
    /// The root this issuer is signed by, so each leaf is known to chain to
    /// it (rotation status) without parsing it again.
    pub(crate) root_fingerprint: String,
}

impl Issuer {
    /// A fresh issuer for `trust_domain` living `ttl`, signed by the root.
    pub(crate) fn generate(
        trust_domain: &str,
        ttl: Duration,
        root: &rcgen::Certificate,
        root_key: &KeyPair,
    ) -> Result<Self, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Mycel");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Mycel Issuer CA ({trust_domain})"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, root, root_key)?;
        Ok(Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial: serial.to_bytes(),
            not_after: now + ttl,
            root_fingerprint: super::anchor::fingerprint(root.der()),
            cert,
            key,
        })
    }

    /// An issuer from its certificate and key (already checked to match).
    pub(crate) fn from_der(
        der: Vec<u8>,
        key: KeyPair,
        not_after: OffsetDateTime,
        root_fingerprint: String,
    ) -> Result<Self, rcgen::Error> {
        let params = CertificateParams::from_ca_cert_der(&der.clone().into())?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.to_bytes())
            .unwrap_or_default();
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: super::cert_pem(&der),
            der,
            key,
            serial,
            not_after,
            root_fingerprint,
            cert,
        })
    }

    /// The parameters of a leaf for `id` living `ttl` (cut at this issuer's
    /// expiry, which rotation keeps far away).
    pub(crate) fn leaf_params(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        extra_sans: &[SanType],
    ) -> Result<CertificateParams, SignError> {
        let now = OffsetDateTime::now_utc();
        let uri = id.to_string().try_into().map_err(SignError::Issue)?;
        let mut sans = vec![SanType::URI(uri)];
        sans.extend(extra_sans.iter().cloned());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // The SAN extension is written by hand, marked critical: a leaf's
        // subject is empty, and RFC 5280 (4.2.1.6) then requires it.
        params.custom_extensions = vec![san::critical_extension(&sans)];
        params.not_before = now - BACKDATE;
        params.not_after = (now + ttl).min(self.not_after);
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// The root, with its key, for a CA generated in the data dir.
pub(crate) struct RootSigner {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

const NEXT_PEM: &str = "issuer-next.pem";
const NEXT_KEY: &str = "issuer-next.key";

impl RootSigner {
    pub(crate) fn new(dir: PathBuf, cert: rcgen::Certificate, key: KeyPair) -> Self {
        Self { dir, cert, key }
    }

    /// Loads `root.key` from `dir`, checking it belongs to `root_der`.
    pub(crate) fn load(dir: &Path, root_der: &[u8]) -> Result<Self, LoadError> {
        let key_path = dir.join("root.key");
        Self::from_pem(
            dir,
            root_der,
            &read(&key_path)?,
            &key_path,
            &dir.join("root.pem"),
        )
    }

    /// The root `root_der` with its key `key_pem`, checked to belong to it;
    /// rotated issuers are written to `dir`.
    pub(crate) fn from_pem(
        dir: &Path,
        root_der: &[u8],
        key_pem: &str,
        key_label: &Path,
        root_label: &Path,
    ) -> Result<Self, LoadError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(key_label, format!("is not a usable private key: {e}")))?;
        let (_, root) = x509_parser::parse_x509_certificate(root_der)
            .map_err(|e| invalid(root_label, format!("cannot parse: {e}")))?;
        if root.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(LoadError::KeyMismatch {
                key: key_label.to_path_buf(),
                cert: root_label.to_path_buf(),
            });
        }
        let cert = CertificateParams::from_ca_cert_der(&root_der.to_vec().into())
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| invalid(root_label, format!("cannot sign: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cert,
            key,
        })
    }

    /// A new issuer, on disk before it is returned. Both files are written
    /// under temporary names and then renamed key first; a crash between
    /// the two renames is completed at the next start.
    pub(crate) fn rotate(&self, trust_domain: &str, ttl: Duration) -> Result<Issuer, RotateError> {
        let next = Issuer::generate(trust_domain, ttl, &self.cert, &self.key)
            .map_err(RotateError::Generate)?;
        let write = |name: &str, contents: &[u8]| {
            let path = self.dir.join(name);
            write_private(&path, contents).map_err(|cause| RotateError::Write { path, cause })
        };
        write(NEXT_KEY, next.key.serialize_pem().as_bytes())?;
        write(NEXT_PEM, next.pem.as_bytes())?;
        let rename = |from: &str, to: &str| {
            std::fs::rename(self.dir.join(from), self.dir.join(to)).map_err(|cause| {
                RotateError::Write {
                    path: self.dir.join(to),
                    cause,
                }
            })
        };
        rename(NEXT_KEY, "issuer.key")?;
        rename(NEXT_PEM, "issuer.pem")?;
        Ok(next)
    }
}

/// Replaces an issuer that expired while the controller was down (or is
/// about to), so a restart recovers instead of refusing to start; the root
/// key in `dir` signs the new one. Anything unreadable is left for the
/// regular load to report.
pub(crate) fn replace_expired_issuer(
    dir: &Path,
    trust_domain: &str,
    ttl: Duration,
) -> Result<(), LoadError> {
    let Ok(pem) = std::fs::read_to_string(dir.join("issuer.pem")) else {
        return Ok(());
    };
    let Ok(root_pem) = std::fs::read_to_string(dir.join("root.pem")) else {
        return Ok(());
    };
    let (Ok(der), Ok(root_der)) = (
        super::first_cert_der(&dir.join("issuer.pem"), &pem),
        super::first_cert_der(&dir.join("root.pem"), &root_pem),
    ) else {
        return Ok(());
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Ok(());
    };
    if cert.validity().not_after.to_datetime() > OffsetDateTime::now_utc() {
        return Ok(());
    }
    let signer = RootSigner::load(dir, &root_der)?;
    signer
        .rotate(trust_domain, ttl)
        .map_err(|e| invalid(&dir.join("issuer.pem"), e.to_string()))?;
    tracing::warn!(
        expired = %cert.validity().not_after,
        "the issuer had expired; replaced it with a new one from the same root"
    );
    Ok(())
}

/// Completes or discards a rotation a crash interrupted: the new
/// certificate alone left over means its key is already `issuer.key`; both
/// left over means neither was installed and the old pair still matches.
pub(crate) fn finish_interrupted_rotation(dir: &Path) -> Result<(), LoadError> {
    let (pem, key) = (dir.join(NEXT_PEM), dir.join(NEXT_KEY));
    let result = match (pem.exists(), key.exists()) {
        (true, false) => std::fs::rename(&pem, dir.join("issuer.pem")),
        (true, true) => std::fs::remove_file(&pem).and_then(|()| std::fs::remove_file(&key)),
        (false, true) => std::fs::remove_file(&key),
        (false, false) => Ok(()),
    };
    result.map_err(|cause| LoadError::Write {
        path: dir.join("issuer.pem"),
        cause,
    })
}

#[cfg(test)]
impl RootSigner {
    pub(crate) fn cert_for_test(&self) -> rcgen::Certificate {
        // rcgen certificates are not Clone; re-sign the same parameters.
        let params = CertificateParams::from_ca_cert_der(self.cert.der())
            .and_then(|p| p.self_signed(&self.key));
        match params {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    pub(crate) fn key_for_test(&self) -> &KeyPair {
        &self.key
    }
}
