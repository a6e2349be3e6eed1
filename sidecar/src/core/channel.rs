//! The TLS connection to the controller, used for both `Identity.Certify`
//! (server-authenticated for the first certificate; renewals present the
//! current certificate, which is what the controller authenticates them by)
//! and `Discovery.Stream` (mutual TLS with the current workload certificate).
//!
//! A connector of our own rather than tonic's TLS settings, so the client
//! certificate is read from [`IdentityState`] at handshake time instead of
//! being copied out (the private key is never exported from rustls).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use super::credentials::{IdentityState, TrustBundle, WorkloadCert};

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
    /// Certify only: the next handshake presents no certificate (the
    /// controller refused the last one; the join token is used instead).
    without_cert: Arc<AtomicBool>,
}

impl ControllerTls {
    /// `client` = the identity to present (discovery), or none (certify).
    /// `roots` come from `roots_file` (`--ca-root`), which is read again
    /// when the controller's certificate chains to none of the roots held
    /// (see [`ControllerRoots`]).
    pub fn new(
        address: &str,
        server_name: &str,
        roots: &[CertificateDer<'static>],
        roots_file: Option<&Path>,
        client: Option<Arc<IdentityState>>,
    ) -> Result<Self, ChannelError> {
        let builder = Self::builder(roots, roots_file, client.clone())?;
        let config = match client {
            Some(state) => builder.with_client_cert_resolver(Arc::new(StateResolver(state))),
            None => builder.with_no_client_auth(),
        };
        Self::finish(address, server_name, config, Arc::default())
    }

    fn builder(
        roots: &[CertificateDer<'static>],
        roots_file: Option<&Path>,
        identity: Option<Arc<IdentityState>>,
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, ChannelError>
    {
        let verifier = Arc::new(ControllerRoots::new(roots, roots_file, identity)?);
        let provider = verifier.provider.clone();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ChannelError::Roots)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        Ok(builder)
    }

    fn finish(
        address: &str,
        server_name: &str,
        mut config: ClientConfig,
        without_cert: Arc<AtomicBool>,
    ) -> Result<Self, ChannelError> {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| ChannelError::ServerName(server_name.to_string()))?;
        Ok(Self {
            address: address.to_string(),
            server_name,
            config: Arc::new(config),
            without_cert,
        })
    }

    /// For `Identity.Certify`: presents the current certificate while it is
    /// still valid (a renewal, authenticated by that certificate), none
    /// before the first one or after it expired (the join token is used).
    pub fn for_certify(
        address: &str,
        server_name: &str,
        roots: &[CertificateDer<'static>],
        roots_file: Option<&Path>,
        identity: Arc<IdentityState>,
    ) -> Result<Self, ChannelError> {
        let builder = Self::builder(roots, roots_file, Some(identity.clone()))?;
        let without_cert = Arc::new(AtomicBool::new(false));
        let mut config = builder.with_client_cert_resolver(Arc::new(ValidOnly {
            state: identity,
            without_cert: without_cert.clone(),
        }));
        // A resumed session carries the client identity of the session it
        // resumes (none, for the first Certify), so every Certify makes a
        // full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        Self::finish(address, server_name, config, without_cert)
    }

    /// Certify only: whether the next handshake goes without a certificate
    /// (`true`) or presents the current one while valid (`false`). A
    /// certificate the controller no longer trusts (its root was rotated
    /// out while this proxy could not follow) must give way to the join
    /// token, or the proxy could never renew.
    pub fn set_without_cert(&self, without: bool) {
        self.without_cert.store(without, Ordering::Relaxed);
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

/// The roots the controller's certificate must chain to: the mesh trust
/// bundle once the controller has sent one, the `--ca-root` file's before.
/// So a trust-anchor rotation, which moves the controller's own serving
/// certificate to the new root, needs no restart, and once the old root
/// leaves the bundle it is not trusted for the controller either.
///
/// A proxy cut off from the controller for a whole rotation holds a bundle
/// with only the old root; for it the `--ca-root` file is read again when
/// nothing held verifies the controller (the file an operator or the
/// chart keeps current: in a cluster, the mounted trust-bundle ConfigMap).
/// It is the same trust as at start, only fresher.
#[derive(Debug)]
struct ControllerRoots {
    bootstrap: Arc<WebPkiServerVerifier>,
    roots_file: Option<PathBuf>,
    identity: Option<Arc<IdentityState>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The verifier built for the last bundle seen.
    cache: std::sync::Mutex<Option<(Arc<TrustBundle>, Arc<WebPkiServerVerifier>)>>,
}

impl ControllerRoots {
    fn current(&self) -> Arc<WebPkiServerVerifier> {
        let Some(bundle) = self.identity.as_ref().map(|s| s.bundle()) else {
            return self.bootstrap.clone();
        };
        if bundle.roots.is_empty() {
            return self.bootstrap.clone();
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, verifier)) = cache.as_ref() {
            if Arc::ptr_eq(seen, &bundle) {
                return verifier.clone();
            }
        }
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(bundle.roots.iter().cloned());
        if added == 0 {
            return self.bootstrap.clone();
        }
        match WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
        {
            Ok(verifier) => {
                *cache = Some((bundle, verifier.clone()));
                verifier
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the trust bundle for the controller; using --ca-root");
                self.bootstrap.clone()
            }
        }
    }
}

impl ControllerRoots {
    fn new(
        roots: &[CertificateDer<'static>],
        roots_file: Option<&Path>,
        identity: Option<Arc<IdentityState>>,
    ) -> Result<Self, ChannelError> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone()).map_err(ChannelError::Roots)?;
        }
        if store.is_empty() {
            return Err(ChannelError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bootstrap =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| ChannelError::Roots(rustls::Error::General(e.to_string())))?;
        Ok(Self {
            bootstrap,
            roots_file: roots_file.map(Path::to_path_buf),
            identity,
            provider,
            cache: std::sync::Mutex::new(None),
        })
    }

    /// A verifier for the roots in the `--ca-root` file as it is now.
    fn reread(&self) -> Option<Arc<WebPkiServerVerifier>> {
        let path = self.roots_file.as_ref()?;
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
        let certs = match certs {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(file = ?path, error = %e, "cannot read --ca-root again");
                return None;
            }
        };
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return None;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
            .ok()
    }
}

impl ServerCertVerifier for ControllerRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let held = self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let Err(error) = held else {
            return held;
        };
        let Some(fresh) = self.reread() else {
            return Err(error);
        };
        let verified =
            fresh.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if verified.is_ok() {
            tracing::info!(file = ?self.roots_file, held = %error, "the controller's certificate chains to a root of the re-read --ca-root file only (trust anchors rotated while disconnected?)");
        }
        verified.map_err(|_| error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bootstrap.supported_verify_schemes()
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

/// Presents the current certificate only while it is valid (an expired one
/// would fail the handshake, and then the join token could not be used)
/// and the controller did not refuse it last time.
#[derive(Debug)]
struct ValidOnly {
    state: Arc<IdentityState>,
    without_cert: Arc<AtomicBool>,
}

impl ValidOnly {
    fn current(&self) -> Option<Arc<WorkloadCert>> {
        if self.without_cert.load(Ordering::Relaxed) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.state.cert().filter(|c| c.not_after_unix > now)
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

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    use super::*;

    /// A root, and a server certificate for `name` signed by it.
    fn root_and_server(name: &str) -> (rcgen::Certificate, CertificateDer<'static>) {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = root.self_signed(&root_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&server_key, &root, &root_key)
            .unwrap();
        (root, server.der().clone())
    }

    fn verify(roots: &ControllerRoots, server: &CertificateDer<'_>) -> bool {
        let name = ServerName::try_from("mycel-controller").unwrap();
        roots
            .verify_server_cert(server, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// a_proxy_cut_off_for_a_rotation_reads_its_ca_root_file_again: a
    /// controller certificate under a root the proxy does not hold yet is
    /// trusted once the `--ca-root` file names that root, and not before.
    #[test]
    fn the_ca_root_file_is_read_again_when_nothing_held_verifies_the_controller() {
        let (old_root, _) = root_and_server("mycel-controller");
        let (new_root, new_server) = root_and_server("mycel-controller");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.pem");
        std::fs::write(&file, old_root.pem()).unwrap();
        let held = [old_root.der().clone()];
        let roots = ControllerRoots::new(&held, Some(&file), None).unwrap();
        assert!(
            !verify(&roots, &new_server),
            "trusted before the file names the root"
        );
        std::fs::write(&file, format!("{}{}", old_root.pem(), new_root.pem())).unwrap();
        assert!(verify(&roots, &new_server));
        // A file that turned unreadable changes nothing.
        std::fs::write(&file, "not PEM").unwrap();
        assert!(!verify(&roots, &new_server));
        // Without a file, only what is held counts.
        let no_file = ControllerRoots::new(&held, None, None).unwrap();
        assert!(!verify(&no_file, &new_server));
    }
}
