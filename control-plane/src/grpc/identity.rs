//! `Identity.Certify`: authenticate the caller's credential, then sign its
//! CSR for the identity that credential stands for.

use std::sync::Arc;

use mycel_api::spiffe::SpiffeId;
use mycel_api::v1::identity_server::Identity;
use mycel_api::v1::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::ca::authority::SignError;
use crate::ca::tokens::{AuthError, Authenticator};
use crate::ca::Authority;
use crate::metrics::Metrics;

pub struct IdentityService {
    authority: Arc<Authority>,
    authenticator: Arc<dyn Authenticator>,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    pub fn new(
        authority: Arc<Authority>,
        authenticator: Arc<dyn Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            authority,
            authenticator,
            metrics,
        }
    }

    fn certify_inner(&self, req: &CertifyRequest) -> Result<CertifyResponse, CertifyError> {
        let (namespace, service_account) = self
            .authenticator
            .authenticate(&req.token)
            .map_err(CertifyError::Auth)?;
        let id = SpiffeId::new(self.authority.trust_domain(), &namespace, &service_account)
            .map_err(|e| CertifyError::Identity(e.to_string()))?;
        if req.csr_der.is_empty() {
            return Err(CertifyError::EmptyCsr);
        }
        let issued = self
            .authority
            .sign_csr(&req.csr_der, &id, req.requested_ttl_seconds)
            .map_err(CertifyError::Sign)?;
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
    #[error("token maps to an invalid identity: {0}")]
    Identity(String),
    #[error("csr_der is empty: send a DER PKCS#10 CSR")]
    EmptyCsr,
    #[error(transparent)]
    Sign(SignError),
}

impl CertifyError {
    /// The `result` label of the certificates-issued metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Malformed) => "unauthenticated",
            Self::Auth(AuthError::Unknown) => "permission_denied",
            Self::EmptyCsr | Self::Sign(SignError::Csr(_)) => "invalid_csr",
            Self::Auth(AuthError::Store(_)) | Self::Identity(_) | Self::Sign(_) => "error",
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
            CertifyError::Auth(AuthError::Unknown) => Status::permission_denied(msg),
            CertifyError::Auth(AuthError::Store(_)) => Status::unavailable(msg),
            CertifyError::EmptyCsr | CertifyError::Sign(SignError::Csr(_)) => {
                Status::invalid_argument(msg)
            }
            CertifyError::Identity(_) | CertifyError::Sign(_) => Status::internal(msg),
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let req = request.into_inner();
        match self.certify_inner(&req) {
            Ok(resp) => {
                self.metrics.certificate("ok");
                tracing::info!(spiffe_id = %resp.spiffe_id, not_after = resp.not_after_unix, "certificate issued");
                Ok(Response::new(resp))
            }
            Err(e) => {
                self.metrics.certificate(e.label());
                let status = Status::from(e);
                tracing::warn!(code = ?status.code(), message = status.message(), "certify refused");
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn auth_errors_map_to_codes() {
        for (e, code, label) in [
            (AuthError::Missing, Code::Unauthenticated, "unauthenticated"),
            (
                AuthError::Malformed,
                Code::Unauthenticated,
                "unauthenticated",
            ),
            (
                AuthError::Unknown,
                Code::PermissionDenied,
                "permission_denied",
            ),
            (AuthError::Store("x".into()), Code::Unavailable, "error"),
        ] {
            let e = CertifyError::Auth(e);
            assert_eq!(e.label(), label);
            assert_eq!(Status::from(e).code(), code);
        }
        assert_eq!(
            Status::from(CertifyError::Auth(AuthError::Missing)).message(),
            "missing join token"
        );
    }

    struct Fixed;
    impl Authenticator for Fixed {
        fn authenticate(&self, token: &str) -> Result<(String, String), AuthError> {
            match token {
                "" => Err(AuthError::Missing),
                "good" => Ok(("shop".into(), "catalog".into())),
                _ => Err(AuthError::Unknown),
            }
        }
    }

    fn service(dir: &std::path::Path) -> IdentityService {
        let ca =
            Authority::load_or_generate(dir, "cluster.local", std::time::Duration::from_secs(3600))
                .unwrap();
        IdentityService::new(Arc::new(ca), Arc::new(Fixed), Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn certify_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["x.example".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let call = |token: &str, csr: Vec<u8>| {
            svc.certify(Request::new(CertifyRequest {
                token: token.into(),
                csr_der: csr,
                requested_ttl_seconds: 0,
            }))
        };
        let ok = call("good", csr.clone()).await.unwrap().into_inner();
        assert_eq!(ok.spiffe_id, "spiffe://cluster.local/ns/shop/sa/catalog");
        assert_eq!(ok.chain_der.len(), 2);
        assert_eq!(ok.trust_bundle_der.len(), 1);
        assert!(ok.not_after_unix > ok.not_before_unix);

        let e = call("", csr.clone()).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "missing join token")
        );
        let e = call("bad", csr.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = call("good", vec![]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("csr_der is empty"));
        let e = call("good", vec![1, 2, 3]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("CSR"), "{}", e.message());
        let text = svc.metrics.encode();
        assert!(text.contains("result=\"ok\"} 1"), "{text}");
        assert!(text.contains("result=\"invalid_csr\"} 2"), "{text}");
    }
}
