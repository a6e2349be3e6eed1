//! The mesh certificate authority: a self-signed root and an intermediate
//! issuer, generated on first start under `<data-dir>/ca/` or loaded from
//! there (or from files the user gives). Leaves carry exactly one URI SAN,
//! the SPIFFE ID of the authenticated caller; nothing in the CSR but its
//! public key is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mycel_api::spiffe::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::files::{ensure_private_dir, write_private};

/// Leaves may not ask for less than this, so a proxy cannot make the CA
/// issue certificates that expire before they are installed.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// Certificates are backdated to tolerate clock skew between machines.
pub const BACKDATE: Duration = Duration::from_secs(60);
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The identity of the controller's own serving certificate.
pub const CONTROLLER_NAMESPACE: &str = "mycel-system";
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "mycel-controller";
pub const CONTROLLER_DNS_NAMES: &[&str] = &[
    "localhost",
    "mycel-controller",
    "mycel-controller.mycel-system.svc",
];

/// PEM files of a CA the user provides instead of a generated one.
#[derive(Clone, Debug)]
pub struct CaFiles {
    pub root_cert: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("CA directory {dir} is incomplete: {missing} is missing (remove the directory to generate a new CA, or restore the file)")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("issuer certificate {issuer} is not signed by root certificate {root}")]
    NotChained { issuer: PathBuf, root: PathBuf },
    #[error("issuer key {key} does not match issuer certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("cannot generate the CA: {0}")]
    Generate(rcgen::Error),
    #[error("invalid trust domain: {0}")]
    TrustDomain(mycel_api::spiffe::SpiffeIdError),
}

fn check_trust_domain(trust_domain: &str) -> Result<(), LoadError> {
    SpiffeId::new(
        trust_domain,
        CONTROLLER_NAMESPACE,
        CONTROLLER_SERVICE_ACCOUNT,
    )
    .map(|_| ())
    .map_err(LoadError::TrustDomain)
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is not valid DER PKCS#10 with a correct self-signature, or uses an unsupported extension or algorithm ({0})")]
    Csr(rcgen::Error),
    #[error("cannot issue the certificate: {0}")]
    Issue(rcgen::Error),
    #[error("invalid identity: {0}")]
    Identity(mycel_api::spiffe::SpiffeIdError),
}

/// A signed leaf.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then the issuer.
    pub chain_der: Vec<Vec<u8>>,
    pub spiffe_id: SpiffeId,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The controller's TLS identity, as PEM for the gRPC server.
#[derive(Clone, Debug)]
pub struct ServingCert {
    /// Leaf then issuer.
    pub chain_pem: String,
    pub key_pem: String,
    pub spiffe_id: SpiffeId,
}

pub struct Authority {
    trust_domain: String,
    max_ttl: Duration,
    root_der: Vec<u8>,
    root_pem: String,
    issuer_der: Vec<u8>,
    issuer_pem: String,
    /// Holds the issuer's name and key identifier, which rcgen needs to sign.
    issuer: rcgen::Certificate,
    issuer_key: KeyPair,
    issuer_not_after: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// The lifetime a leaf gets: the default when none (0) is asked, what is
/// asked when shorter, never less than [`MIN_TTL`] nor more than `max`.
pub fn effective_ttl(max: Duration, requested_secs: u64) -> Duration {
    if requested_secs == 0 {
        return max;
    }
    Duration::from_secs(requested_secs).clamp(MIN_TTL.min(max), max)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Serial numbers are positive DER integers; a clear top bit keeps them
    // so, and a set second bit keeps all 16 bytes significant.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn first_cert_der(path: &Path, pem: &str) -> Result<Vec<u8>, LoadError> {
    let mut reader = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(LoadError::Invalid {
            path: path.to_path_buf(),
            problem: format!("bad PEM: {e}"),
        }),
        None => Err(LoadError::Invalid {
            path: path.to_path_buf(),
            problem: "contains no CERTIFICATE block".into(),
        }),
    }
}

fn invalid(path: &Path, problem: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
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

impl Authority {
    /// Loads the CA from `<data_dir>/ca/`, generating it on first start.
    pub fn load_or_generate(
        data_dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<Self, LoadError> {
        check_trust_domain(trust_domain)?;
        let dir = data_dir.join("ca");
        let names = ["root.pem", "root.key", "issuer.pem", "issuer.key"];
        let present: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
        if present.iter().all(|p| *p) {
            return Self::from_files(
                &CaFiles {
                    root_cert: dir.join("root.pem"),
                    issuer_cert: dir.join("issuer.pem"),
                    issuer_key: dir.join("issuer.key"),
                },
                trust_domain,
                max_ttl,
            );
        }
        if let Some(i) = present.iter().position(|p| *p) {
            let missing = names
                .iter()
                .zip(&present)
                .find(|(_, p)| !**p)
                .map(|(n, _)| n.to_string())
                .unwrap_or_default();
            tracing::debug!(found = names[i], "partial CA directory");
            return Err(LoadError::Incomplete { dir, missing });
        }
        Self::generate(&dir, trust_domain, max_ttl)
    }

    fn generate(dir: &Path, trust_domain: &str, max_ttl: Duration) -> Result<Self, LoadError> {
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

        let issuer_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(LoadError::Generate)?;
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = DistinguishedName::new();
        issuer_params
            .distinguished_name
            .push(DnType::OrganizationName, "Mycel");
        issuer_params.distinguished_name.push(
            DnType::CommonName,
            format!("Mycel Issuer CA ({trust_domain})"),
        );
        issuer_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuer_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        issuer_params.not_before = now - BACKDATE;
        issuer_params.not_after = now + ISSUER_LIFETIME;
        issuer_params.serial_number = Some(random_serial());
        issuer_params.use_authority_key_identifier_extension = true;
        let issuer = issuer_params
            .signed_by(&issuer_key, &root, &root_key)
            .map_err(LoadError::Generate)?;

        ensure_private_dir(dir).map_err(|cause| LoadError::Write {
            path: dir.to_path_buf(),
            cause,
        })?;
        // Keys first: a crash leaves an incomplete directory that the next
        // start reports, never certificates whose keys are lost.
        for (name, contents) in [
            ("root.key", root_key.serialize_pem()),
            ("issuer.key", issuer_key.serialize_pem()),
            ("root.pem", root.pem()),
            ("issuer.pem", issuer.pem()),
        ] {
            let path = dir.join(name);
            write_private(&path, contents.as_bytes())
                .map_err(|cause| LoadError::Write { path, cause })?;
        }
        tracing::info!(dir = %dir.display(), "generated a new mesh CA");
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            max_ttl,
            root_der: root.der().to_vec(),
            root_pem: root.pem(),
            issuer_der: issuer.der().to_vec(),
            issuer_pem: issuer.pem(),
            issuer_not_after: issuer_params_not_after(&issuer),
            issuer,
            issuer_key,
        })
    }

    /// Loads a CA from PEM files, checking that the issuer is a CA signed by
    /// the root and that the key belongs to the issuer certificate.
    pub fn from_files(
        files: &CaFiles,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<Self, LoadError> {
        check_trust_domain(trust_domain)?;
        let root_pem_text = read(&files.root_cert)?;
        let issuer_pem_text = read(&files.issuer_cert)?;
        let key_pem = read(&files.issuer_key)?;
        let root_der = first_cert_der(&files.root_cert, &root_pem_text)?;
        let issuer_der = first_cert_der(&files.issuer_cert, &issuer_pem_text)?;
        let issuer_key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                &files.issuer_key,
                format!("is not a usable PKCS#8 private key (BEGIN PRIVATE KEY): {e}"),
            )
        })?;

        let (_, root) = x509_parser::parse_x509_certificate(&root_der)
            .map_err(|e| invalid(&files.root_cert, format!("cannot parse certificate: {e}")))?;
        let (_, issuer_x509) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|e| invalid(&files.issuer_cert, format!("cannot parse certificate: {e}")))?;
        check_ca_cert(&files.root_cert, &root)?;
        check_ca_cert(&files.issuer_cert, &issuer_x509)?;
        if root.verify_signature(None).is_err() {
            return Err(invalid(
                &files.root_cert,
                "is not a self-signed root certificate",
            ));
        }
        let chained = issuer_x509.issuer().as_raw() == root.subject().as_raw()
            && issuer_x509
                .verify_signature(Some(root.public_key()))
                .is_ok();
        if !chained {
            return Err(LoadError::NotChained {
                issuer: files.issuer_cert.clone(),
                root: files.root_cert.clone(),
            });
        }
        if issuer_x509.public_key().subject_public_key.data.as_ref() != issuer_key.public_key_raw()
        {
            return Err(LoadError::KeyMismatch {
                key: files.issuer_key.clone(),
                cert: files.issuer_cert.clone(),
            });
        }
        let issuer_not_after = issuer_x509.validity().not_after.to_datetime();
        // rcgen signs with the issuer's name and key identifier taken from
        // its certificate; the re-encoded certificate itself is never sent.
        let issuer = CertificateParams::from_ca_cert_der(&issuer_der.clone().into())
            .and_then(|p| p.self_signed(&issuer_key))
            .map_err(|e| invalid(&files.issuer_cert, format!("cannot be used to sign: {e}")))?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            max_ttl,
            root_pem: cert_pem(&root_der),
            issuer_pem: cert_pem(&issuer_der),
            root_der,
            issuer_der,
            issuer,
            issuer_key,
            issuer_not_after,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn issuer_pem(&self) -> &str {
        &self.issuer_pem
    }

    /// The trust anchors proxies accept peers from.
    pub fn trust_bundle_der(&self) -> Vec<Vec<u8>> {
        vec![self.root_der.clone()]
    }

    /// Signs a leaf for `identity`, using only the CSR's public key.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        requested_ttl_secs: u64,
    ) -> Result<Issued, SignError> {
        self.sign_csr_for_token(csr_der, identity, requested_ttl_secs, None)
    }

    /// [`Self::sign_csr`] for a join token: `token_id` (the join token the leaf is issued for) is added as a
    /// second URI SAN `urn:mycel:token:<id>`, so the controller can tie
    /// registrations and renewals back to the token record.
    pub fn sign_csr_for_token(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        requested_ttl_secs: u64,
        token_id: Option<&str>,
    ) -> Result<Issued, SignError> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(SignError::Csr)?;
        let ttl = effective_ttl(self.max_ttl, requested_ttl_secs);
        let mut extra = Vec::new();
        if let Some(id) = token_id {
            let uri = format!("{}{id}", super::tokens::TOKEN_URI_PREFIX)
                .try_into()
                .map_err(SignError::Issue)?;
            extra.push(SanType::URI(uri));
        }
        let params = self.leaf_params(identity, ttl, &extra)?;
        let (not_before, not_after) = (params.not_before, params.not_after);
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer, &self.issuer_key)
            .map_err(SignError::Issue)?;
        Ok(Issued {
            chain_der: vec![leaf.der().to_vec(), self.issuer_der.clone()],
            spiffe_id: identity.clone(),
            not_before,
            not_after,
        })
    }

    /// Issues the controller's own serving certificate with a fresh key.
    pub fn serving_cert(&self) -> Result<ServingCert, SignError> {
        let id = SpiffeId::new(
            &self.trust_domain,
            CONTROLLER_NAMESPACE,
            CONTROLLER_SERVICE_ACCOUNT,
        )
        .map_err(SignError::Identity)?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(SignError::Issue)?;
        let mut extra: Vec<SanType> = Vec::new();
        for name in CONTROLLER_DNS_NAMES {
            let dns = (*name).try_into().map_err(SignError::Issue)?;
            extra.push(SanType::DnsName(dns));
        }
        extra.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let mut params = self.leaf_params(&id, SERVING_LIFETIME, &extra)?;
        params
            .distinguished_name
            .push(DnType::CommonName, CONTROLLER_SERVICE_ACCOUNT);
        let cert = params
            .signed_by(&key, &self.issuer, &self.issuer_key)
            .map_err(SignError::Issue)?;
        Ok(ServingCert {
            chain_pem: format!("{}{}", cert.pem(), self.issuer_pem),
            key_pem: key.serialize_pem(),
            spiffe_id: id,
        })
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        extra_sans: &[SanType],
    ) -> Result<CertificateParams, SignError> {
        let now = OffsetDateTime::now_utc();
        let uri = id.to_string().try_into().map_err(SignError::Issue)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.subject_alt_names.extend(extra_sans.iter().cloned());
        params.not_before = now - BACKDATE;
        params.not_after = (now + ttl).min(self.issuer_not_after);
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

fn issuer_params_not_after(cert: &rcgen::Certificate) -> OffsetDateTime {
    cert.params().not_after
}

/// PEM-encodes one DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so the chunk is valid UTF-8.
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
