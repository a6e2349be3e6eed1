//! Keeps this proxy holding a valid certificate: a fresh P-256 key and CSR
//! per request (the key never leaves the process), renewal at 70% of the
//! certificate's life, jittered retries while the CA fails, and the old
//! certificate kept in service until a new one arrives.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mycel_api::spiffe::SpiffeId;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;

use super::ca::{CaClient, CaError};
use super::cert::{trust_bundle, workload_cert, CertError};
use super::metrics::IdentityMetrics;
use crate::core::backoff::Backoff;
use crate::core::credentials::{IdentityState, TrustBundle};

/// The least time between two renewals asked for out of schedule.
const ASKED_INTERVAL: Duration = Duration::from_secs(10);

/// Share of a certificate's life (in percent) after which it is renewed.
const REFRESH_PERCENT: i128 = 70;

/// Certificate requests: from 1 s up to 1 min between attempts.
pub const CERT_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("generating the key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("the CA says it issued {got}, but this proxy is {expected}")]
    Mismatch { expected: String, got: String },
    #[error("certificate from the CA: {0}")]
    Cert(#[from] CertError),
}

impl IdentityError {
    /// Whether asking again cannot help: the credential is missing or
    /// refused, or the CA names someone else. Only the first certificate
    /// treats these as fatal; later, the old certificate stays in service.
    pub fn is_permanent(&self) -> bool {
        match self {
            IdentityError::Ca(CaError::Token(_)) | IdentityError::Mismatch { .. } => true,
            IdentityError::Ca(CaError::Rejected { code, .. }) => matches!(
                code,
                tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
            ),
            _ => false,
        }
    }
}

/// The current time on both clocks: certificate validity is wall time,
/// sleeping is monotonic (and paused in tests).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Now {
    pub fn current() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

/// When to renew a certificate valid from `not_before` to `not_after` (unix
/// seconds), called when it arrives: at 70% of the life it has left from
/// `not_before` or from now, whichever is later. CAs backdate `not_before`
/// to absorb clock skew; counting from it would make a short-lived
/// certificate look already 70% spent and renew in a loop.
pub fn refresh_at(not_before_unix: i64, not_after_unix: i64, now: Now) -> Instant {
    let now_ms = match now.wall.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        Err(_) => 0,
    };
    let start_ms = (i128::from(not_before_unix) * 1000).max(now_ms);
    let life_ms = (i128::from(not_after_unix) * 1000 - start_ms).max(0);
    let target_ms = start_ms + life_ms * REFRESH_PERCENT / 100;
    let wait_ms = u64::try_from((target_ms - now_ms).max(0)).unwrap_or(u64::MAX);
    now.mono + Duration::from_millis(wait_ms)
}

/// Whether the certificate chain `chain` (leaf first) chains to the first
/// root of `bundle`. The controller lists the root it signs with first, so
/// a leaf that does not is one a trust-anchor rotation is replacing.
pub fn chains_to_first_root(
    chain: &[rustls_pki_types::CertificateDer<'_>],
    bundle: &TrustBundle,
) -> bool {
    let (Some(top), Some(root)) = (chain.get(1).or_else(|| chain.first()), bundle.roots.first())
    else {
        return true;
    };
    let (Ok((_, top)), Ok((_, root))) = (
        x509_parser::parse_x509_certificate(top),
        x509_parser::parse_x509_certificate(root),
    ) else {
        return true;
    };
    top.verify_signature(Some(root.public_key())).is_ok()
}

pub struct IdentityManager<C> {
    ca: C,
    state: Arc<IdentityState>,
    expected: SpiffeId,
    ttl: Option<Duration>,
    metrics: IdentityMetrics,
}

impl<C: CaClient> IdentityManager<C> {
    pub fn new(
        ca: C,
        state: Arc<IdentityState>,
        expected: SpiffeId,
        ttl: Option<Duration>,
        metrics: IdentityMetrics,
    ) -> Self {
        Self {
            ca,
            state,
            expected,
            ttl,
            metrics,
        }
    }

    pub fn state(&self) -> &Arc<IdentityState> {
        &self.state
    }

    /// One request to the CA; on success the new certificate (and bundle,
    /// if it changed) is in [`IdentityState`].
    pub async fn renew(&self) -> Result<(), IdentityError> {
        let result = self.request().await;
        match &result {
            Ok(not_after) => self.metrics.renewed(*not_after),
            Err(_) => self.metrics.failed(),
        }
        result.map(|_| ())
    }

    async fn request(&self) -> Result<i64, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        // The CA takes the identity from our credential, so the CSR carries
        // only the public key.
        let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
        let issued = self.ca.certify(csr.der().to_vec(), self.ttl).await?;
        let expected = self.expected.to_string();
        if !issued.spiffe_id.is_empty() && issued.spiffe_id != expected {
            return Err(IdentityError::Mismatch {
                expected,
                got: issued.spiffe_id,
            });
        }
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let cert = workload_cert(issued.chain, key_der, &self.expected)?;
        let bundle = trust_bundle(issued.trust_bundle)?;
        let not_after = cert.not_after_unix;
        if self.state.bundle().roots != bundle.roots {
            self.state.set_bundle(bundle);
        }
        tracing::info!(
            spiffe_id = %cert.spiffe_id,
            serial = %cert.serial_hex,
            not_after = cert.not_after_unix,
            "workload certificate installed"
        );
        self.state.set_cert(cert);
        Ok(not_after)
    }

    /// Whether the trust bundle now names a signing root the current leaf
    /// does not chain to (a rotation), and this bundle has not already
    /// caused a renewal.
    fn bundle_asks_renewal(&self, acted_on: &mut Option<Arc<TrustBundle>>) -> bool {
        let bundle = self.state.bundle();
        if acted_on.as_ref().is_some_and(|b| Arc::ptr_eq(b, &bundle)) {
            return false;
        }
        let Some(cert) = self.state.cert() else {
            return false;
        };
        if chains_to_first_root(&cert.chain, &bundle) {
            return false;
        }
        *acted_on = Some(bundle);
        true
    }

    /// Returns once a trust bundle change asks for an early renewal; never
    /// when the state is gone.
    async fn new_root_announced(
        &self,
        changes: &mut tokio::sync::watch::Receiver<u64>,
        acted_on: &mut Option<Arc<TrustBundle>>,
    ) {
        loop {
            if self.bundle_asks_renewal(acted_on) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Returns at an ask for renewal made at least [`ASKED_INTERVAL`] after
    /// the last attempt (earlier asks are dropped): a controller that is
    /// simply down must not make the proxy hammer it with requests.
    async fn renewal_asked(&self, last_attempt: Option<Instant>) {
        loop {
            self.state.renewal_asked().await;
            if last_attempt.is_none_or(|t| t.elapsed() >= ASKED_INTERVAL) {
                return;
            }
        }
    }

    fn next_refresh(&self) -> Option<Instant> {
        self.state
            .cert()
            .map(|c| refresh_at(c.not_before_unix, c.not_after_unix, Now::current()))
    }

    /// Runs for the life of the proxy: gets a first certificate (retrying
    /// transient failures until it does), then renews each one at 70% of
    /// its life. Returns only when the first certificate is refused for
    /// good (see [`IdentityError::is_permanent`]): a proxy that can never
    /// join the mesh should say so and stop, not retry forever.
    pub async fn run(self) -> Result<(), IdentityError> {
        let mut rng = StdRng::from_entropy();
        let mut failures: u32 = 0;
        // When the next request is due; `None` = now. After a failure this is
        // the backoff, not the old certificate's schedule, which has passed.
        let mut next = self.next_refresh();
        let mut changes = self.state.changes();
        // The bundle that last triggered an early renewal: one renewal per
        // bundle, so a CA that keeps signing under the old root (or a bundle
        // listed in another order) cannot make the proxy renew in a loop.
        let mut acted_on: Option<Arc<TrustBundle>> = None;
        let mut last_attempt: Option<Instant> = None;
        loop {
            let mut asked = false;
            if let Some(at) = next {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.new_root_announced(&mut changes, &mut acted_on) => {
                        tracing::info!("the trust bundle names a new signing root; renewing the certificate now");
                    }
                    () = self.renewal_asked(last_attempt) => {
                        tracing::info!("the controller refuses the discovery stream; renewing the certificate now");
                        asked = true;
                    }
                }
            }
            last_attempt = Some(Instant::now());
            match self.renew().await {
                Ok(()) => {
                    failures = 0;
                    next = self.next_refresh();
                }
                Err(e) if e.is_permanent() && !self.state.has_cert() => return Err(e),
                // An early attempt that failed leaves the schedule of the
                // certificate held as it was.
                Err(e) if asked && self.state.has_cert() => {
                    tracing::warn!(error = %e, "early certificate renewal failed; keeping the current one");
                    next = self.next_refresh();
                }
                Err(e) => {
                    let delay = CERT_BACKOFF.delay(failures, &mut rng);
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = %e,
                        retry_in = ?delay,
                        keeping_old_cert = self.state.has_cert(),
                        "certificate request failed"
                    );
                    next = Some(Instant::now() + delay);
                }
            }
        }
    }
}
