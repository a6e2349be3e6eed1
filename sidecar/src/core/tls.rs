//! Mutual TLS between sidecars.
//!
//! Both ends read the proxy's [`IdentityState`](crate::core::credentials::IdentityState)
//! on every handshake: a renewed certificate or trust bundle applies to the
//! next connection without touching open ones. Peers are authenticated by
//! chain (to the current bundle) and by their single SPIFFE URI SAN; DNS
//! names play no part, mesh certificates carry none.

mod client;
mod server;
mod verify;

pub use client::{client_config, server_name_for};
pub use server::server_config;
pub use verify::{failure_reason, peer_identity, rejection, PeerVerifyError};

/// The only application protocol spoken between sidecars.
pub const ALPN_H2: &[u8] = b"h2";

/// Building a TLS configuration failed (a bug or a broken crypto provider,
/// never a peer's doing).
#[derive(Debug, thiserror::Error)]
#[error("cannot build TLS configuration: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
