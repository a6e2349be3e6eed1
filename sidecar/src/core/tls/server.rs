//! Server side of the mesh port: present the current certificate, require a
//! client certificate from the mesh.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use super::verify::verify_peer;
use super::{provider, TlsConfigError, ALPN_H2};
use crate::core::credentials::IdentityState;

/// Reads the certificate at every handshake, so renewal needs no restart.
#[derive(Debug)]
struct CurrentCert(Arc<IdentityState>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No certificate yet: rustls fails the handshake, which is right,
        // there is nothing to authenticate as.
        self.0.cert().map(|c| c.certified_key.clone())
    }
}

#[derive(Debug)]
struct MeshClientVerifier {
    identity: Arc<IdentityState>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Sidecars hold exactly one certificate; hints would not change
        // what they send.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.identity.bundle();
        verify_peer(
            end_entity,
            intermediates,
            now,
            &bundle,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
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

/// TLS 1.3 server config for the mesh port: mTLS required, ALPN `h2`.
pub fn server_config(identity: Arc<IdentityState>) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = MeshClientVerifier {
        identity: identity.clone(),
        algs: provider.signature_verification_algorithms,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentCert(identity)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No session resumption (neither a stateful cache nor tickets): a
    // resumed TLS 1.3 session skips the peer certificate check, so a peer
    // would keep getting in after the trust bundle dropped its root, or
    // after its own certificate expired. Dropping the cache on every bundle
    // change would not cover the expiry case. Mesh connections are pooled
    // HTTP/2 connections, so full handshakes are rare and resumption would
    // save little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
