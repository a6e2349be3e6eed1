//! The TLS connection to the controller, used for both `Identity.Certify`
//! (server-authenticated for the first certificate; renewals present the
//! current certificate, which is what the controller authenticates them by)
//! and `Discovery.Stream` (mutual TLS with the current workload certificate).
//!
//! A connector of our own rather than tonic's TLS settings, so the client
//! certificate is read from [`IdentityState`] at handshake time instead of
//! being copied out (the private key is never exported from rustls).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use super::credentials::{IdentityState, WorkloadCert};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("controller root certificates: {0}")]
    Roots(#[source] rustls::Error),
    #[error("controller root certificates: no root certificate given")]
    NoRoots,
    #[error("controller name {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("controller address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to the controller at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How to reach and authenticate the controller.
#[derive(Clone)]
pub struct ControllerTls {
    address: String,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl ControllerTls {
    /// `client` = the identity to present (discovery), or none (certify).
    pub fn new(
        address: &str,
        server_name: &str,
        roots: &[CertificateDer<'static>],
        client: Option<Arc<IdentityState>>,
    ) -> Result<Self, ChannelError> {
        let builder = Self::builder(roots)?;
        let config = match client {
            Some(state) => builder.with_client_cert_resolver(Arc::new(StateResolver(state))),
            None => builder.with_no_client_auth(),
        };
        Self::finish(address, server_name, config)
    }

    fn builder(
        roots: &[CertificateDer<'static>],
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, ChannelError>
    {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone()).map_err(ChannelError::Roots)?;
        }
        if store.is_empty() {
            return Err(ChannelError::NoRoots);
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(ChannelError::Roots)?
                .with_root_certificates(store);
        Ok(builder)
    }

    fn finish(
        address: &str,
        server_name: &str,
        mut config: ClientConfig,
    ) -> Result<Self, ChannelError> {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| ChannelError::ServerName(server_name.to_string()))?;
        Ok(Self {
            address: address.to_string(),
            server_name,
            config: Arc::new(config),
        })
    }

    /// For `Identity.Certify`: presents the current certificate while it is
    /// still valid (a renewal, authenticated by that certificate), none
    /// before the first one or after it expired (the join token is used).
    pub fn for_certify(
        address: &str,
        server_name: &str,
        roots: &[CertificateDer<'static>],
        identity: Arc<IdentityState>,
    ) -> Result<Self, ChannelError> {
        let builder = Self::builder(roots)?;
        let mut config = builder.with_client_cert_resolver(Arc::new(ValidOnly(identity)));
        // A resumed session carries the client identity of the session it
        // resumes (none, for the first Certify), so every Certify makes a
        // full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        Self::finish(address, server_name, config)
    }

    /// Whether a handshake now would present a client certificate (for
    /// Certify: a renewal, which needs no join token).
    pub fn presents_cert(&self) -> bool {
        self.config.client_auth_cert_resolver.has_certs()
    }

    /// A gRPC channel over this TLS connection (connects now, so an
    /// unreachable controller is reported here).
    pub async fn connect(&self) -> Result<Channel, ChannelError> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|source| ChannelError::Address {
                address: self.address.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        endpoint
            .connect_with_connector(Connector(self.clone()))
            .await
            .map_err(|source| ChannelError::Connect {
                address: self.address.clone(),
                source,
            })
    }
}

#[derive(Debug)]
struct StateResolver(Arc<IdentityState>);

impl ResolvesClientCert for StateResolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.cert().map(|c| c.certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.has_cert()
    }
}

/// Presents the current certificate only while it is valid: an expired one
/// would fail the handshake, and then the join token could not be used.
#[derive(Debug)]
struct ValidOnly(Arc<IdentityState>);

impl ValidOnly {
    fn current(&self) -> Option<Arc<WorkloadCert>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.0.cert().filter(|c| c.not_after_unix > now)
    }
}

impl ResolvesClientCert for ValidOnly {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current().map(|c| c.certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}

#[derive(Clone)]
struct Connector(ControllerTls);

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&tls.address).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}
