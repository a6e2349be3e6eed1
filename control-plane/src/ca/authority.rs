//! The mesh certificate authority: a self-signed root and an intermediate
//! issuer, generated on first start under `<data-dir>/ca/` or loaded from
//! there (or from files the user gives). Leaves carry exactly one URI SAN,
//! the SPIFFE ID of the authenticated caller; nothing in the CSR but its
//! public key is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mycel_api::spiffe::SpiffeId;
use rcgen::{CertificateSigningRequestParams, DnType, KeyPair, SanType, SerialNumber};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use mycel_api::files::{ensure_private_dir, write_private};

mod anchor;
mod issuer;
mod rotate;
mod san;

pub use anchor::Labels;
pub use anchor::{chain_root, fingerprint, CaMaterial};
use anchor::{Checked, Root};
pub use issuer::RotateError;
use issuer::{Issuer, RootSigner};
pub(crate) use rotate::check_material;
pub use rotate::generate_material;
use rotate::new_root;

/// Leaves may not ask for less than this, so a proxy cannot make the CA
/// issue certificates that expire before they are installed.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// Certificates are backdated to tolerate clock skew between machines.
pub const BACKDATE: Duration = Duration::from_secs(60);
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of the intermediate that signs leaves (`--issuer-ttl`).
pub const DEFAULT_ISSUER_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of the controller's serving cert (`--serving-cert-ttl`).
pub const DEFAULT_SERVING_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

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
    /// The root the leaf chains to.
    pub root_fingerprint: String,
}

/// A CA checked for a rotation ([`Authority::check_new_ca`]), ready to be
/// installed.
pub struct NewCa(Checked);

impl NewCa {
    pub fn root_der(&self) -> &[u8] {
        &self.0.root.der
    }

    pub fn root_fingerprint(&self) -> &str {
        &self.0.root.fingerprint
    }
}

/// The controller's TLS identity, as PEM for the gRPC server.
#[derive(Clone, Debug)]
pub struct ServingCert {
    /// Leaf then issuer.
    pub chain_pem: String,
    pub key_pem: String,
    pub spiffe_id: SpiffeId,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

pub struct Authority {
    trust_domain: String,
    max_ttl: Duration,
    issuer_ttl: Duration,
    /// The root new leaves chain to. Its key is held only for a CA
    /// generated in the data dir (what lets the issuer be rotated); a
    /// user's own CA keeps its root key outside, and its issuer is theirs
    /// to renew. Replaced by a trust-anchor rotation.
    root: std::sync::Mutex<std::sync::Arc<Root>>,
    /// Roots trusted besides the current one while a trust-anchor rotation
    /// runs; they follow it in the trust bundle.
    also_trusted: std::sync::Mutex<Vec<Vec<u8>>>,
    /// The issuer new leaves are signed with. Swapped on rotation; leaves
    /// signed by the previous one stay valid, as they chain to the same root
    /// and carry their issuer in their chain.
    issuer: std::sync::Mutex<std::sync::Arc<Issuer>>,
    /// DNS names the serving certificate carries besides
    /// [`CONTROLLER_DNS_NAMES`] (e.g. the webhook Service in a cluster).
    serving_names: Vec<String>,
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

pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Serial numbers are positive DER integers; a clear top bit keeps them
    // so, and a set second bit keeps all 16 bytes significant.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

pub(crate) fn first_cert_der(path: &Path, pem: &str) -> Result<Vec<u8>, LoadError> {
    let first = CertificateDer::pem_slice_iter(pem.as_bytes()).next();
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

pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl Authority {
    /// Loads the CA from `<data_dir>/ca/`, generating it on first start,
    /// with the default issuer lifetime.
    pub fn load_or_generate(
        data_dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<Self, LoadError> {
        Self::load_or_generate_with(data_dir, trust_domain, max_ttl, DEFAULT_ISSUER_TTL)
    }

    /// Loads the CA from `<data_dir>/ca/`, generating it on first start;
    /// issuers it generates or rotates to live `issuer_ttl`.
    pub fn load_or_generate_with(
        data_dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
        issuer_ttl: Duration,
    ) -> Result<Self, LoadError> {
        check_trust_domain(trust_domain)?;
        let dir = data_dir.join("ca");
        issuer::finish_interrupted_rotation(&dir)?;
        let names = ["root.pem", "root.key", "issuer.pem", "issuer.key"];
        let present: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
        if present.iter().all(|p| *p) {
            issuer::replace_expired_issuer(&dir, trust_domain, issuer_ttl)?;
            let mut ca = Self::from_files(
                &CaFiles {
                    root_cert: dir.join("root.pem"),
                    issuer_cert: dir.join("issuer.pem"),
                    issuer_key: dir.join("issuer.key"),
                },
                trust_domain,
                max_ttl,
            )?;
            ca.issuer_ttl = issuer_ttl;
            let root_der = ca.root().der.clone();
            ca.set_signer(RootSigner::load(&dir, &root_der)?);
            return Ok(ca);
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
        Self::generate(&dir, trust_domain, max_ttl, issuer_ttl)
    }

    fn generate(
        dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
        issuer_ttl: Duration,
    ) -> Result<Self, LoadError> {
        let (root, root_key) = new_root(trust_domain)?;
        let issuer = Issuer::generate(trust_domain, issuer_ttl, &root, &root_key)
            .map_err(LoadError::Generate)?;

        ensure_private_dir(dir).map_err(|cause| LoadError::Write {
            path: dir.to_path_buf(),
            cause,
        })?;
        // Keys first: a crash leaves an incomplete directory that the next
        // start reports, never certificates whose keys are lost.
        for (name, contents) in [
            ("root.key", root_key.serialize_pem()),
            ("issuer.key", issuer.key.serialize_pem()),
            ("root.pem", root.pem()),
            ("issuer.pem", issuer.pem.clone()),
        ] {
            let path = dir.join(name);
            write_private(&path, contents.as_bytes())
                .map_err(|cause| LoadError::Write { path, cause })?;
        }
        tracing::info!(dir = %dir.display(), "generated a new mesh CA");
        let anchor = Root {
            der: root.der().to_vec(),
            pem: root.pem(),
            not_after: root.params().not_after,
            fingerprint: fingerprint(root.der()),
            signer: Some(RootSigner::new(dir.to_path_buf(), root, root_key)),
        };
        Ok(Self::assemble(
            trust_domain,
            max_ttl,
            issuer_ttl,
            Checked {
                root: anchor,
                issuer,
            },
        ))
    }

    /// Loads a CA from PEM files, checking that the issuer is a CA signed by
    /// the root and that the key belongs to the issuer certificate.
    pub fn from_files(
        files: &CaFiles,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<Self, LoadError> {
        check_trust_domain(trust_domain)?;
        let material = CaMaterial {
            root_pem: read(&files.root_cert)?,
            root_key_pem: None,
            issuer_pem: read(&files.issuer_cert)?,
            issuer_key_pem: read(&files.issuer_key)?,
        };
        let labels = Labels {
            root: &files.root_cert,
            root_key: &files.root_cert,
            issuer: &files.issuer_cert,
            issuer_key: &files.issuer_key,
        };
        let dir = files.root_cert.parent().unwrap_or(Path::new("."));
        let checked = anchor::check(&material, &labels, dir)?;
        Ok(Self::assemble(
            trust_domain,
            max_ttl,
            DEFAULT_ISSUER_TTL,
            checked,
        ))
    }

    fn assemble(trust_domain: &str, max_ttl: Duration, issuer_ttl: Duration, ca: Checked) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            max_ttl,
            issuer_ttl,
            root: std::sync::Mutex::new(std::sync::Arc::new(ca.root)),
            also_trusted: std::sync::Mutex::new(Vec::new()),
            issuer: std::sync::Mutex::new(std::sync::Arc::new(ca.issuer)),
            serving_names: Vec::new(),
        }
    }

    fn root(&self) -> std::sync::Arc<Root> {
        match self.root.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_signer(&mut self, signer: RootSigner) {
        let root = self.root.get_mut().unwrap_or_else(|p| p.into_inner());
        let current = std::sync::Arc::clone(root);
        *root = std::sync::Arc::new(Root {
            der: current.der.clone(),
            pem: current.pem.clone(),
            not_after: current.not_after,
            fingerprint: current.fingerprint.clone(),
            signer: Some(signer),
        });
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The current root (the one new leaves chain to), PEM.
    pub fn root_pem(&self) -> String {
        self.root().pem.clone()
    }

    /// The current root's SHA-256 fingerprint (hex).
    pub fn root_fingerprint(&self) -> String {
        self.root().fingerprint.clone()
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root().der.clone()
    }

    /// Whether the root key is held here (the issuer can be rotated).
    pub fn holds_root_key(&self) -> bool {
        self.root().signer.is_some()
    }

    /// The current issuer's certificate.
    pub fn issuer_pem(&self) -> String {
        self.current_issuer().pem.clone()
    }

    pub fn issuer_der(&self) -> Vec<u8> {
        self.current_issuer().der.clone()
    }

    pub fn issuer_not_after(&self) -> OffsetDateTime {
        self.current_issuer().not_after
    }

    pub fn root_not_after(&self) -> OffsetDateTime {
        self.root().not_after
    }

    pub fn issuer_ttl(&self) -> Duration {
        self.issuer_ttl
    }

    fn current_issuer(&self) -> std::sync::Arc<Issuer> {
        match self.issuer.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The trust anchors proxies accept peers from: the current root first
    /// (proxies renew early when their leaf does not chain to it), then any
    /// a rotation still trusts.
    pub fn trust_bundle_der(&self) -> Vec<Vec<u8>> {
        let current = self.root().der.clone();
        let also = match self.also_trusted.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut roots = vec![current.clone()];
        roots.extend(also.into_iter().filter(|r| *r != current));
        roots
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
        let issuer = self.issuer_for(ttl);
        let mut extra = Vec::new();
        if let Some(id) = token_id {
            let uri = format!("{}{id}", super::tokens::TOKEN_URI_PREFIX)
                .try_into()
                .map_err(SignError::Issue)?;
            extra.push(SanType::URI(uri));
        }
        let params = issuer.leaf_params(identity, ttl, &extra)?;
        let (not_before, not_after) = (params.not_before, params.not_after);
        let leaf = params
            .signed_by(&csr.public_key, &issuer.cert, &issuer.key)
            .map_err(SignError::Issue)?;
        Ok(Issued {
            chain_der: vec![leaf.der().to_vec(), issuer.der.clone()],
            spiffe_id: identity.clone(),
            not_before,
            not_after,
            root_fingerprint: issuer.root_fingerprint.clone(),
        })
    }

    /// Issues the controller's own serving certificate with a fresh key and
    /// the default lifetime.
    pub fn serving_cert(&self) -> Result<ServingCert, SignError> {
        self.serving_cert_for(DEFAULT_SERVING_TTL)
    }

    /// Issues the controller's own serving certificate with a fresh key,
    /// valid for `ttl`.
    /// Adds DNS names to every serving certificate issued from now on.
    pub fn add_serving_names(&mut self, names: impl IntoIterator<Item = String>) {
        self.serving_names.extend(names);
    }

    pub fn serving_cert_for(&self, ttl: Duration) -> Result<ServingCert, SignError> {
        let id = SpiffeId::new(
            &self.trust_domain,
            CONTROLLER_NAMESPACE,
            CONTROLLER_SERVICE_ACCOUNT,
        )
        .map_err(SignError::Identity)?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(SignError::Issue)?;
        let mut extra: Vec<SanType> = Vec::new();
        let names = CONTROLLER_DNS_NAMES
            .iter()
            .copied()
            .chain(self.serving_names.iter().map(String::as_str));
        for name in names {
            let dns = name.try_into().map_err(SignError::Issue)?;
            extra.push(SanType::DnsName(dns));
        }
        extra.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let issuer = self.issuer_for(ttl);
        let mut params = issuer.leaf_params(&id, ttl, &extra)?;
        params
            .distinguished_name
            .push(DnType::CommonName, CONTROLLER_SERVICE_ACCOUNT);
        let (not_before, not_after) = (params.not_before, params.not_after);
        let cert = params
            .signed_by(&key, &issuer.cert, &issuer.key)
            .map_err(SignError::Issue)?;
        Ok(ServingCert {
            chain_pem: format!("{}{}", cert.pem(), issuer.pem),
            key_pem: key.serialize_pem(),
            spiffe_id: id,
            not_before,
            not_after,
        })
    }

    /// The issuer to sign a leaf of lifetime `ttl` with: the current one,
    /// unless it would expire before the leaf does and can be rotated, so
    /// a leaf's life is never cut short by an issuer about to expire.
    fn issuer_for(&self, ttl: Duration) -> std::sync::Arc<Issuer> {
        let current = self.current_issuer();
        if current.not_after >= OffsetDateTime::now_utc() + ttl || !self.holds_root_key() {
            return current;
        }
        match self.rotate_issuer() {
            Ok(()) => self.current_issuer(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot rotate the issuer; signing with the old one");
                current
            }
        }
    }

    /// When the issuer should be replaced: once less than a quarter of the
    /// configured issuer lifetime is left (75% into a fresh issuer's life;
    /// counted back from the expiry, since `not_before` is backdated).
    /// `None` when this CA cannot rotate (no root key here).
    pub fn issuer_rotation_due(&self) -> Option<OffsetDateTime> {
        if !self.holds_root_key() {
            return None;
        }
        Some(self.current_issuer().not_after - self.issuer_ttl / 4)
    }

    /// Replaces the issuer by a new one signed by the same root, written to
    /// the data dir first so a restart keeps it.
    pub fn rotate_issuer(&self) -> Result<(), RotateError> {
        let mut guard = match self.issuer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let root = self.root();
        let signer = root.signer.as_ref().ok_or(RotateError::NoRootKey)?;
        let next = signer.rotate(&self.trust_domain, self.issuer_ttl)?;
        tracing::info!(
            serial = %hex::encode(&next.serial),
            not_after = %next.not_after,
            previous_not_after = %guard.not_after,
            "rotated the issuer CA"
        );
        *guard = std::sync::Arc::new(next);
        Ok(())
    }
}

/// PEM-encodes one DER certificate (LF line endings, as the files we write
/// and read use).
pub fn cert_pem(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests;
