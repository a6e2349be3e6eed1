//! An in-memory CA for tests: signs CSRs for one fixed identity with a
//! throwaway root, and can be told to fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mycel_api::spiffe::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use super::ca::{CaClient, CaError, Issued};

/// Why the fake CA could not issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum FakeCaError {
    #[error("bad CSR: {0}")]
    Csr(#[source] rcgen::Error),
    #[error("SPIFFE ID as URI: {0}")]
    Uri(#[source] rcgen::Error),
    #[error("signing: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("generating a key or CSR: {0}")]
    Key(#[source] rcgen::Error),
}

/// Cheap to clone; clones share the CA and its counters.
#[derive(Clone)]
pub struct FakeCa {
    inner: Arc<Inner>,
}

struct Inner {
    root: rcgen::Certificate,
    root_key: KeyPair,
    /// The identity written into every leaf (as a real CA takes it from the
    /// caller's credential, never from the CSR).
    identity: SpiffeId,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failing: bool,
    /// When set, every call is refused with this code.
    refusing: Option<tonic::Code>,
    calls: usize,
    call_times: Vec<tokio::time::Instant>,
    issued: usize,
    last_ttl: Option<Duration>,
}

/// PEM files of a certificate issued by [`FakeCa::issue_pem`].
pub struct IssuedPem {
    pub chain_pem: String,
    pub key_pem: String,
    pub root_pem: String,
}

impl FakeCa {
    /// Panics only if rcgen cannot make a P-256 root, which is a test setup bug.
    #[allow(clippy::expect_used)]
    pub fn new(identity: SpiffeId, ttl: Duration) -> Self {
        let root_key = KeyPair::generate().expect("generate root key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fake mycel root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&root_key).expect("self-sign root");
        Self {
            inner: Arc::new(Inner {
                root,
                root_key,
                identity,
                ttl,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While failing, every call answers `UNAVAILABLE`.
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// While set, every call is refused with `code` (as an unknown token
    /// or a bad CSR would be).
    pub fn set_refusing(&self, code: Option<tonic::Code>) {
        self.state().refusing = code;
    }

    /// Calls made, failed ones included.
    pub fn calls(&self) -> usize {
        self.state().calls
    }

    /// When each call was made (tokio time, so paused in tests).
    pub fn call_times(&self) -> Vec<tokio::time::Instant> {
        self.state().call_times.clone()
    }

    /// Certificates handed out.
    pub fn issued(&self) -> usize {
        self.state().issued
    }

    pub fn last_requested_ttl(&self) -> Option<Duration> {
        self.state().last_ttl
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.inner.root.der().clone()
    }

    /// Signs `csr_der` for `identity`, valid from now for `ttl`.
    pub fn sign(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<CertificateDer<'static>, FakeCaError> {
        Ok(self.sign_cert(csr_der, identity, ttl)?.der().clone())
    }

    fn sign_cert(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<rcgen::Certificate, FakeCaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(FakeCaError::Csr)?;
        let mut params = CertificateParams::default();
        let uri = identity.to_string().try_into().map_err(FakeCaError::Uri)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let now = SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + ttl).into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&csr.public_key, &self.inner.root, &self.inner.root_key)
            .map_err(FakeCaError::Sign)?;
        Ok(cert)
    }

    /// A fresh key and certificate for `identity`, as PEM (for static files).
    pub fn issue_pem(&self, identity: &SpiffeId, ttl: Duration) -> Result<IssuedPem, FakeCaError> {
        let key = KeyPair::generate().map_err(FakeCaError::Key)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(FakeCaError::Key)?;
        let cert = self.sign_cert(csr.der(), identity, ttl)?;
        Ok(IssuedPem {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            root_pem: self.inner.root.pem(),
        })
    }
}

impl CaClient for FakeCa {
    async fn certify(&self, csr_der: Vec<u8>, ttl: Option<Duration>) -> Result<Issued, CaError> {
        {
            let mut st = self.state();
            st.calls += 1;
            st.call_times.push(tokio::time::Instant::now());
            st.last_ttl = ttl;
            if let Some(code) = st.refusing {
                return Err(CaError::Rejected {
                    code,
                    message: "fake CA refuses".into(),
                });
            }
            if st.failing {
                return Err(CaError::Rejected {
                    code: tonic::Code::Unavailable,
                    message: "fake CA is failing".into(),
                });
            }
        }
        let leaf = self
            .sign(
                &csr_der,
                &self.inner.identity,
                ttl.unwrap_or(self.inner.ttl),
            )
            .map_err(|e| CaError::Rejected {
                code: tonic::Code::InvalidArgument,
                message: e.to_string(),
            })?;
        self.state().issued += 1;
        Ok(Issued {
            chain: vec![leaf],
            trust_bundle: vec![self.root_der()],
            spiffe_id: self.inner.identity.to_string(),
        })
    }
}
