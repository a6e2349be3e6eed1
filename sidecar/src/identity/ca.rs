//! The certificate authority as the proxy sees it: one call that turns a
//! CSR into a certificate chain. A trait so the identity manager can be
//! tested with [`super::fake::FakeCa`] and paused time.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::{CertifyRequest, CertifyResponse};
use rustls_pki_types::CertificateDer;
use serde::Serialize;

use crate::core::channel::{ChannelError, ControllerTls};

/// The environment variable a join token may come from.
pub const ENV_TOKEN: &str = "MYCEL_TOKEN";

/// Where the join token comes from. A file is re-read on every request, so
/// a rotated (projected) token is picked up without a restart.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl Serialize for TokenSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenSource::File(p) => s.collect_str(&format_args!("file:{}", p.display())),
            TokenSource::Value(_) => s.serialize_str(&format!("env:{}", ENV_TOKEN)),
        }
    }
}

/// What the CA answered.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub trust_bundle: Vec<CertificateDer<'static>>,
    pub spiffe_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading the join token: {0}")]
    Token(#[source] std::io::Error),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("the CA refused: {code:?}: {message}")]
    Rejected { code: tonic::Code, message: String },
    #[error("the CA answered without a certificate chain")]
    EmptyAnswer,
}

pub trait CaClient: Send + Sync + 'static {
    /// Asks for a certificate for the key behind `csr_der` (PKCS#10, DER).
    /// `ttl` = requested lifetime, `None` for the CA's default.
    fn certify(
        &self,
        csr_der: Vec<u8>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Issued, CaError>> + Send;
}

/// `Identity.Certify` on the controller, over server-authenticated TLS,
/// authenticated by the join token.
pub struct GrpcCaClient {
    tls: ControllerTls,
    token: TokenSource,
}

impl GrpcCaClient {
    pub fn new(tls: ControllerTls, token: TokenSource) -> Self {
        Self { tls, token }
    }

    /// Read per call: a projected token file is rotated under us. A
    /// renewal is authenticated by the current certificate, so it works
    /// even when the token file is gone.
    fn token_for_call(&self) -> Result<String, CaError> {
        match self.token.read() {
            Ok(token) => Ok(token),
            Err(_) if self.tls.presents_cert() => Ok(String::new()),
            Err(e) => Err(CaError::Token(e)),
        }
    }

    async fn call(&self, request: CertifyRequest) -> Result<CertifyResponse, CaError> {
        let channel = self.tls.connect().await?;
        Ok(IdentityClient::new(channel)
            .certify(request)
            .await
            .map_err(|s| CaError::Rejected {
                code: s.code(),
                message: s.message().to_string(),
            })?
            .into_inner())
    }
}

impl CaClient for GrpcCaClient {
    async fn certify(&self, csr_der: Vec<u8>, ttl: Option<Duration>) -> Result<Issued, CaError> {
        let request = |token: String| CertifyRequest {
            token,
            csr_der: csr_der.clone(),
            requested_ttl_seconds: ttl.map(|d| d.as_secs()).unwrap_or(0),
        };
        let renewal = self.tls.presents_cert();
        let answer = match self.call(request(self.token_for_call()?)).await {
            Ok(a) => a,
            // The controller may have refused the certificate itself: its
            // root was rotated out while this proxy could not follow. The
            // join token proves who we are without it; if the token works,
            // renewals go back to the certificate once a new one is held.
            Err(first) if renewal => {
                self.tls.set_without_cert(true);
                let token = match self.token.read() {
                    Ok(t) => t,
                    Err(_) => {
                        self.tls.set_without_cert(false);
                        return Err(first);
                    }
                };
                tracing::info!(error = %first, "renewal with the current certificate failed; trying the join token");
                let retried = self.call(request(token)).await;
                self.tls.set_without_cert(false);
                retried?
            }
            Err(e) => return Err(e),
        };
        if answer.chain_der.is_empty() {
            return Err(CaError::EmptyAnswer);
        }
        Ok(Issued {
            chain: answer
                .chain_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            trust_bundle: answer
                .trust_bundle_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            spiffe_id: answer.spiffe_id,
        })
    }
}
