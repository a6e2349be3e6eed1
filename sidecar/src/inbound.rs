//! The mesh port: mTLS from peer sidecars, HTTP/2 inside, forwarded to the
//! local app in plaintext on the ports the workload declared.

mod app;
mod authorize;
pub mod capture;
mod handle;
pub mod target;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::core::credentials::IdentityState;
use crate::core::directory::Discovery;
use crate::core::serve::{Conn, HttpMode, Server};
use crate::metrics::{Direction, ErrorKind, ProxyMetrics};

/// A peer that opens a connection and stays silent must not hold a task
/// forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the mesh port needs.
pub struct InboundContext {
    pub identity: Arc<IdentityState>,
    /// Where the app listens (usually loopback).
    pub app_host: IpAddr,
    /// The only app ports peers may reach.
    pub app_ports: Vec<u16>,
    pub metrics: ProxyMetrics,
    /// Idle pooled app connections are closed after this.
    pub app_pool_idle_timeout: Duration,
    /// Where the workload's authorization policy comes from.
    pub discovery: Discovery,
}

/// Accepts mesh connections until the proxy drains; each connection runs
/// on its own task.
pub async fn serve(listener: TcpListener, ctx: InboundContext, server: Server) {
    let tls = match crate::core::tls::server_config(ctx.identity.clone()) {
        Ok(c) => TlsAcceptor::from(c),
        Err(e) => {
            tracing::error!(error = %e, "inbound: cannot serve the mesh port");
            return;
        }
    };
    let shared = Shared {
        tls,
        app: app::AppClient::new(ctx.app_host, ctx.app_pool_idle_timeout),
        app_ports: ctx.app_ports.into(),
        authz: Arc::new(authorize::Authorizer::new(
            ctx.discovery,
            ctx.metrics.clone(),
        )),
        metrics: ctx.metrics,
    };
    let shared = Arc::new(shared);
    server
        .serve("inbound", listener, move |tcp, remote, conn| {
            let shared = shared.clone();
            async move {
                if let Err(e) = connection(&shared, tcp, remote, conn).await {
                    tracing::info!(error = %e, "inbound: connection refused");
                    shared
                        .metrics
                        .error(Direction::Inbound, ErrorKind::TlsHandshake);
                    shared
                        .metrics
                        .handshake_failure(Direction::Inbound, e.reason());
                }
            }
        })
        .await;
}

struct Shared {
    tls: TlsAcceptor,
    app: app::AppClient,
    app_ports: Arc<[u16]>,
    authz: Arc<authorize::Authorizer>,
    metrics: ProxyMetrics,
}

/// A mesh connection failed before any request.
#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer certificate carries no SPIFFE ID")]
    NoPeerId,
}

impl AcceptError {
    fn reason(&self) -> &'static str {
        match self {
            AcceptError::Handshake(e) => crate::core::tls::failure_reason(e),
            AcceptError::Timeout(_) => "timeout",
            AcceptError::NoPeerId => "no_spiffe_id",
        }
    }
}

async fn connection(
    shared: &Shared,
    tcp: TcpStream,
    remote: SocketAddr,
    conn: Conn,
) -> Result<(), AcceptError> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, shared.tls.accept(tcp))
        .await
        .map_err(|_| AcceptError::Timeout(HANDSHAKE_TIMEOUT))?
        .map_err(AcceptError::Handshake)?;
    // The verifier already required exactly one SPIFFE ID; reading it again
    // cannot fail for a connection that got this far.
    let peer_id = crate::core::tls::peer_identity(tls.get_ref().1).ok_or(AcceptError::NoPeerId)?;
    let peer: Arc<str> = peer_id.to_string().into();
    tracing::Span::current().record("peer", &*peer);
    shared.metrics.inbound_connection(&peer);
    let peer = Arc::new(handle::Conn {
        peer,
        peer_id,
        source_ip: remote.ip(),
        authz: shared.authz.clone(),
        app: shared.app.clone(),
        app_ports: shared.app_ports.clone(),
        metrics: shared.metrics.clone(),
        max_header_bytes: conn.limits().max_header_bytes,
        observer: conn.observer().cloned(),
    });
    conn.serve_http(tls, HttpMode::Mesh, move |req| {
        handle::handle(peer.clone(), req)
    })
    .await;
    Ok(())
}
