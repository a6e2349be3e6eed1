//! `Identity.Certify`: authenticate the caller, then sign its CSR for the
//! identity it stands for. A first certificate is bought with a join token;
//! a renewal is authenticated by the caller's current certificate (presented
//! as its TLS client certificate), which names the identity and the token
//! it was issued for, so the token is not needed again and a revoked
//! token's certificates cannot renew. On Kubernetes a Pod's proxy pays with
//! its projected service-account token instead, at every call, and the
//! identity is the one the API server's `TokenReview` names. Calls are rate
//! limited per source IP and globally before any lookup.

use std::sync::Arc;

use mycel_api::spiffe::SpiffeId;
use mycel_api::v1::identity_server::Identity;
use mycel_api::v1::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use super::ratelimit::{CertifyLimits, Limited, RateLimiter};
use crate::ca::authority::SignError;
use crate::ca::rotation::leaves::{serial_hex, LeafTracker};
use crate::ca::tokens::{token_id_from_cert_der, AuthError, TokenStore};
use crate::ca::Authority;
use crate::metrics::Metrics;
use crate::sources::k8s::review::{ReviewError, TokenReviewer};

pub struct IdentityService {
    authority: Arc<Authority>,
    tokens: Arc<TokenStore>,
    reviewer: Option<TokenReviewer>,
    metrics: Arc<Metrics>,
    limiter: RateLimiter,
    leaves: Option<Arc<LeafTracker>>,
}

/// Whether a token is a JWT (a service-account token) rather than a join
/// token: three base64url parts.
fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl IdentityService {
    pub fn new(authority: Arc<Authority>, tokens: Arc<TokenStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            authority,
            tokens,
            reviewer: None,
            metrics,
            limiter: RateLimiter::new(CertifyLimits::default()),
            leaves: None,
        }
    }

    /// Records every leaf issued and the leaf it renews, so a rotation
    /// knows which root each proxy's current leaf chains to.
    pub fn with_leaf_tracker(mut self, leaves: Arc<LeafTracker>) -> Self {
        self.leaves = Some(leaves);
        self
    }

    /// Accepts Kubernetes service-account tokens, reviewed by the API
    /// server, next to join tokens.
    pub fn with_token_review(mut self, reviewer: TokenReviewer) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    pub fn with_limits(mut self, limits: CertifyLimits) -> Self {
        self.limiter = RateLimiter::new(limits);
        self
    }

    /// The identity and token id to issue for: those of the caller's
    /// current certificate when it presents one that carries a token id
    /// (the TLS layer verified it chains to the mesh root), else those of
    /// the join token in the request.
    async fn who(
        &self,
        leaf: Option<&[u8]>,
        token: &str,
    ) -> Result<(SpiffeId, Option<String>), CertifyError> {
        let current = leaf.and_then(|der| {
            Some((
                SpiffeId::from_cert_der(der).ok()?,
                token_id_from_cert_der(der)?,
            ))
        });
        let trust_domain = self.authority.trust_domain();
        if let Some((id, token_id)) = current {
            if id.trust_domain() != trust_domain {
                return Err(CertifyError::Identity(format!(
                    "client certificate {id} is not in trust domain {trust_domain}"
                )));
            }
            let rec = self
                .tokens
                .by_id(&token_id)
                .await
                .map_err(CertifyError::Auth)?;
            if rec.namespace != id.namespace() || rec.service_account != id.service_account() {
                return Err(CertifyError::Identity(format!(
                    "client certificate {id} does not match join token {token_id}"
                )));
            }
            return Ok((id, Some(token_id)));
        }
        if let Some(reviewer) = self.reviewer.as_ref().filter(|_| is_jwt(token)) {
            let reviewed = reviewer.review(token).await.map_err(CertifyError::Review)?;
            if reviewed.identity.trust_domain() != trust_domain {
                return Err(CertifyError::Identity(format!(
                    "{} is not in trust domain {trust_domain}",
                    reviewed.identity
                )));
            }
            return Ok((reviewed.identity, None));
        }
        let rec = self
            .tokens
            .authenticate(token)
            .await
            .map_err(CertifyError::Auth)?;
        let id = SpiffeId::new(trust_domain, &rec.namespace, &rec.service_account)
            .map_err(|e| CertifyError::Identity(e.to_string()))?;
        Ok((id, Some(rec.id().to_string())))
    }

    async fn certify_inner(
        &self,
        leaf: Option<&[u8]>,
        req: &CertifyRequest,
    ) -> Result<CertifyResponse, CertifyError> {
        let (id, token_id) = self.who(leaf, &req.token).await?;
        if req.csr_der.is_empty() {
            return Err(CertifyError::EmptyCsr);
        }
        let issued = self
            .authority
            .sign_csr_for_token(
                &req.csr_der,
                &id,
                req.requested_ttl_seconds,
                token_id.as_deref(),
            )
            .map_err(CertifyError::Sign)?;
        if let Some(leaves) = &self.leaves {
            let issued_serial = issued.chain_der.first().and_then(|d| serial_hex(d));
            if let Some(serial) = issued_serial {
                leaves.record(
                    leaf.and_then(serial_hex).as_deref(),
                    &serial,
                    &issued.root_fingerprint,
                    issued.not_after.unix_timestamp(),
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                );
            }
        }
        Ok(CertifyResponse {
            chain_der: issued.chain_der,
            trust_bundle_der: self.authority.trust_bundle_der(),
            spiffe_id: issued.spiffe_id.to_string(),
            not_before_unix: issued.not_before.unix_timestamp(),
            not_after_unix: issued.not_after.unix_timestamp(),
        })
    }
}

/// Why a Certify call failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(transparent)]
    Auth(AuthError),
    #[error(transparent)]
    Review(ReviewError),
    #[error(transparent)]
    Limited(Limited),
    #[error("{0}")]
    Identity(String),
    #[error("csr_der is empty: send a DER PKCS#10 CSR")]
    EmptyCsr,
    #[error(transparent)]
    Sign(SignError),
}

impl CertifyError {
    /// The `result` label of the certificates-issued metric (a fixed set).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Malformed) => "unauthenticated",
            Self::Auth(AuthError::Unknown | AuthError::UnknownId(_)) => "unknown_token",
            Self::Auth(AuthError::Expired { .. }) => "expired",
            Self::Auth(AuthError::Revoked(_)) => "revoked",
            Self::Review(e) if e.is_refusal() => "unauthenticated",
            Self::Review(_) => "error",
            Self::Limited(_) => "rate_limited",
            Self::Identity(_) => "permission_denied",
            Self::EmptyCsr | Self::Sign(SignError::Csr(_)) => "invalid_csr",
            Self::Auth(AuthError::Store(_)) | Self::Sign(_) => "error",
        }
    }
}

impl From<CertifyError> for Status {
    fn from(e: CertifyError) -> Self {
        let msg = e.to_string();
        match e {
            CertifyError::Auth(AuthError::Missing | AuthError::Malformed) => {
                Status::unauthenticated(msg)
            }
            CertifyError::Auth(
                AuthError::Unknown
                | AuthError::UnknownId(_)
                | AuthError::Expired { .. }
                | AuthError::Revoked(_),
            )
            | CertifyError::Identity(_) => Status::permission_denied(msg),
            CertifyError::Auth(AuthError::Store(_)) => Status::unavailable(msg),
            CertifyError::Review(e) if e.is_refusal() => Status::unauthenticated(msg),
            CertifyError::Review(_) => Status::unavailable(msg),
            CertifyError::Limited(_) => Status::resource_exhausted(msg),
            CertifyError::EmptyCsr | CertifyError::Sign(SignError::Csr(_)) => {
                Status::invalid_argument(msg)
            }
            CertifyError::Sign(_) => Status::internal(msg),
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let started = std::time::Instant::now();
        let remote = request.remote_addr().map(|a| a.ip());
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        let req = request.into_inner();
        let span = tracing::info_span!(
            "csr",
            remote = ?remote,
            renewal = leaf.is_some(),
            result = tracing::field::Empty,
        );
        let result = match self.limiter.check(remote, tokio::time::Instant::now()) {
            Err(limited) => Err(CertifyError::Limited(limited)),
            Ok(()) => {
                tracing::Instrument::instrument(
                    self.certify_inner(leaf.as_deref(), &req),
                    span.clone(),
                )
                .await
            }
        };
        span.record(
            "result",
            match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            },
        );
        match result {
            Ok(resp) => {
                self.metrics.certificate("ok", started.elapsed());
                tracing::info!(spiffe_id = %resp.spiffe_id, not_after = resp.not_after_unix, "certificate issued");
                Ok(Response::new(resp))
            }
            Err(e) => {
                let label = e.label();
                self.metrics.certificate(label, started.elapsed());
                let status = Status::from(e);
                // Floods (unknown tokens, rate limited) are counted in the
                // metric, not logged one line each.
                if matches!(label, "unknown_token" | "rate_limited") {
                    tracing::debug!(code = ?status.code(), message = status.message(), ?remote, "certify refused");
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), ?remote, "certify refused");
                }
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod jwt_tests {
    #[test]
    fn service_account_tokens_are_told_from_join_tokens() {
        assert!(super::is_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"));
        for not in [
            "",
            "a.b",
            "a..c",
            "a.b.c.d",
            "mycel-abc.def",
            "a b.c.d",
            "a.b.c==",
        ] {
            assert!(!super::is_jwt(not), "{not}");
        }
    }
}
