//! The controller's gRPC port below tonic: TCP accept with a connection
//! limit, a bounded TLS handshake, and a serving certificate read from an
//! [`ArcSwap`] at every handshake, so it is renewed while the server runs.
//! tonic gets the finished TLS streams (`serve_with_incoming`); it knows how
//! to read the peer certificates and address from them.

#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::ca::{Authority, ServingCert};
use crate::metrics::Metrics;

/// Limits of the gRPC port; every one applies before authentication.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
    /// Open connections (handshaking or established); more are closed at
    /// once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval; a peer that does not answer within
    /// `keepalive_timeout` is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Time until a call's response starts. Discovery answers its stream as
    /// soon as the Hello arrives, so its long life is not cut by this.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_concurrent_streams: 64,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("serving certificate: {0}")]
    Cert(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The serving certificate every new handshake presents.
#[derive(Debug)]
pub struct ServingCerts {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCerts {
    pub fn new(cert: &ServingCert) -> Result<Arc<Self>, ServingError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(certified_key(cert)?),
        }))
    }

    /// Installs `cert` for the next handshakes; open connections keep theirs.
    pub fn set(&self, cert: &ServingCert) -> Result<(), ServingError> {
        self.current.store(Arc::new(certified_key(cert)?));
        Ok(())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ServingCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: &ServingCert) -> Result<CertifiedKey, ServingError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ServingError::Cert(format!("chain: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => ServingError::Cert("no private key".into()),
        e => ServingError::Cert(format!("key: {e}")),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ServingError::Cert(format!("key: {e}")))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// TLS for the gRPC port: the current serving certificate; a client
/// certificate is optional (Certify callers have none yet) and, when sent,
/// must chain to the mesh roots.
pub fn server_config(
    certs: Arc<ServingCerts>,
    roots: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, ServingError> {
    server_config_with(certs, ClientRoots::new(roots)?)
}

/// [`server_config`] with client certificates checked against `roots`,
/// which a trust-anchor rotation changes while the server runs.
pub fn server_config_with(
    certs: Arc<ServingCerts>,
    roots: Arc<ClientRoots>,
) -> Result<Arc<ServerConfig>, ServingError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(roots)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed session skips the client
    // certificate check, so a proxy whose root was rotated out (or whose
    // certificate expired) would keep opening discovery streams on a
    // session from before. Proxies hold one long stream; full handshakes
    // are rare.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The roots client certificates must chain to, replaceable in place: each
/// handshake reads the current verifier, open connections are untouched.
pub struct ClientRoots {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ClientRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRoots").finish_non_exhaustive()
    }
}

impl ClientRoots {
    pub fn new(roots: &[Vec<u8>]) -> Result<Arc<Self>, ServingError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(Self::verifier(roots)?),
        }))
    }

    /// Replaces the roots; on error the previous ones stay.
    pub fn set(&self, roots: &[Vec<u8>]) -> Result<(), ServingError> {
        self.current.store(Arc::new(Self::verifier(roots)?));
        Ok(())
    }

    fn verifier(roots: &[Vec<u8>]) -> Result<Arc<dyn ClientCertVerifier>, ServingError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(CertificateDer::from(root.clone()))?;
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServingError::Cert(format!("client verifier: {e}")))
    }

    fn load(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.load())
    }
}

impl ClientCertVerifier for ClientRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // No CA names in the request: they change with rotation, and our
    // clients send their one certificate whatever the hint.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.load().supported_verify_schemes()
    }
}

/// TLS for the injection webhook: the same serving certificate, no client
/// certificate (the API server does not present one), HTTP/1.1.
pub fn webhook_server_config(certs: Arc<ServingCerts>) -> Result<Arc<ServerConfig>, ServingError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted TLS connection holding its slot under the connection limit.
pub struct Conn {
    inner: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Logs the connection limit being hit once per episode, not per refused
/// connection (which would let a flood fill the log too).
#[derive(Default)]
struct LimitLog(AtomicBool);

impl LimitLog {
    fn hit(&self, limit: usize) {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit,
                "gRPC connection limit reached; closing new connections until some end"
            );
        }
    }

    fn clear(&self) {
        if self.0.swap(false, Ordering::Relaxed) {
            tracing::info!("gRPC connections below the limit again");
        }
    }
}

/// Accepts connections on `listener` and hands tonic those that finish
/// the TLS handshake in time. Stops when tonic drops the stream or
/// `shutdown` turns true.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: &Limits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (max, handshake_timeout) = (limits.max_connections, limits.handshake_timeout);
    let log = Arc::new(LimitLog::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                log.hit(max);
                metrics.grpc_connections_refused.inc();
                drop(tcp);
                continue;
            };
            log.clear();
            // Unary replies are small; Nagle plus delayed ACKs would hold
            // each back ~40 ms.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx.send(Ok(Conn { inner, _slot: slot })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out; closed"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// How long until a certificate issued now and expiring at `not_after`
/// should be replaced: at 70% of the life it has from now.
pub fn renew_after(not_after: time::OffsetDateTime) -> Duration {
    let left = (not_after - time::OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    Duration::try_from(left * 0.7).unwrap_or(Duration::ZERO)
}

/// How long to wait after a failed renewal or rotation.
const RETRY: Duration = Duration::from_secs(5);
/// How often the issuer expiry gauge is brought up to date.
const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// Renews the serving certificate at 70% of its life until `shutdown`.
pub async fn renew_serving_cert(
    authority: Arc<Authority>,
    certs: Arc<ServingCerts>,
    first_not_after: time::OffsetDateTime,
    ttl: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = renew_after(first_not_after);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let renewed = authority
            .serving_cert_for(ttl)
            .map_err(|e| e.to_string())
            .and_then(|c| certs.set(&c).map(|()| c).map_err(|e| e.to_string()));
        wait = match renewed {
            Ok(cert) => {
                metrics.set_serving_expiry(cert.not_after.unix_timestamp());
                tracing::info!(not_after = %cert.not_after, "renewed the serving certificate");
                renew_after(cert.not_after)
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?RETRY, "cannot renew the serving certificate");
                RETRY
            }
        };
    }
}

/// Rotates the issuer when it is due until `shutdown`; returns at once for
/// a CA that cannot rotate (logging when its issuer expires).
pub async fn rotate_issuer(
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // The issuer may also be rotated by a signing request (see
        // `Authority::issuer_for`); refreshing the gauge on every pass keeps
        // it true either way.
        metrics.set_issuer_expiry(authority.issuer_not_after().unix_timestamp());
        let Some(due) = authority.issuer_rotation_due() else {
            tracing::info!(
                issuer_not_after = %authority.issuer_not_after(),
                "the issuer is user-provided; it is not rotated here"
            );
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        if due > now {
            let wait = Duration::try_from(due - now).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait.min(GAUGE_REFRESH)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            continue;
        }
        if let Err(e) = authority.rotate_issuer() {
            tracing::warn!(error = %e, retry_in = ?RETRY, "cannot rotate the issuer");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
