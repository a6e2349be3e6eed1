//! Client side of a mesh connection: present our certificate, accept only
//! the identity the endpoint is supposed to have.

use std::net::SocketAddr;
use std::sync::Arc;

use mycel_api::spiffe::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::verify::{verify_peer, PeerVerifyError};
use super::{provider, TlsConfigError, ALPN_H2};
use crate::core::credentials::IdentityState;

#[derive(Debug)]
struct CurrentClientCert(Arc<IdentityState>);

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.cert().map(|c| c.certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        // A certificate may arrive after the config is built; the server
        // refuses us anyway if we end up sending none.
        true
    }
}

#[derive(Debug)]
struct MeshServerVerifier {
    identity: Arc<IdentityState>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.identity.bundle();
        let got = verify_peer(
            end_entity,
            intermediates,
            now,
            &bundle,
            webpki::KeyUsage::server_auth(),
        )?;
        if got != self.expected {
            return Err(PeerVerifyError::IdentityMismatch {
                expected: self.expected.clone(),
                got,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// TLS 1.3 client config that only completes a handshake with a server
/// proving `expected`.
pub fn client_config(
    identity: Arc<IdentityState>,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = MeshServerVerifier {
        identity: identity.clone(),
        expected,
        algs: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentClientCert(identity)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every handshake verifies the server against the current bundle and
    // expected identity; see `server_config` for why nothing is resumed.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name to dial a peer under. Names are not checked (identity is), so
/// the address itself is used, which also keeps SNI out of the handshake.
pub fn server_name_for(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}
