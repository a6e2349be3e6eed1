//! Peer certificate checks shared by both sides of a mesh connection.

use std::sync::Arc;

use mycel_api::spiffe::{SpiffeId, SpiffeIdError};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{CertificateError, CommonState, OtherError};
use webpki::KeyUsage;

use crate::core::credentials::TrustBundle;

/// Why a peer certificate was refused, beyond what rustls names itself.
#[derive(Debug, thiserror::Error)]
pub enum PeerVerifyError {
    #[error("no trust bundle yet; cannot authenticate peers")]
    NoBundle,
    #[error("peer certificate does not chain to the mesh trust bundle: {0}")]
    Chain(#[source] webpki::Error),
    #[error("peer certificate has no usable SPIFFE ID: {0}")]
    Spiffe(#[source] SpiffeIdError),
    #[error("identity mismatch: expected {expected}, got {got}")]
    IdentityMismatch { expected: SpiffeId, got: SpiffeId },
}

impl From<PeerVerifyError> for rustls::Error {
    fn from(e: PeerVerifyError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Verifies `end_entity` (with the peer's `intermediates`) against the roots
/// of `bundle` for `usage`, then reads its single SPIFFE ID.
pub(super) fn verify_peer(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    bundle: &TrustBundle,
    usage: KeyUsage,
) -> Result<SpiffeId, rustls::Error> {
    if bundle.roots.is_empty() {
        return Err(PeerVerifyError::NoBundle.into());
    }
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(chain_error)?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(chain_error)?;
    SpiffeId::from_cert_der(end_entity).map_err(|e| PeerVerifyError::Spiffe(e).into())
}

fn chain_error(e: webpki::Error) -> rustls::Error {
    let known = match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => return PeerVerifyError::Chain(other).into(),
    };
    rustls::Error::InvalidCertificate(known)
}

/// The SPIFFE ID of the peer of an established connection (its certificate
/// was verified during the handshake).
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    SpiffeId::from_cert_der(leaf).ok()
}

/// Our own refusal of a peer, if that is why a handshake `err` failed
/// (rustls reports handshake failures as `io::Error` wrapping its error).
pub fn rejection(err: &std::io::Error) -> Option<&PeerVerifyError> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerVerifyError>()
        }
        _ => None,
    }
}

/// Why a handshake failed, from a closed set (a metric label): the
/// certificate's fault (`untrusted`, `expired`, `no_spiffe_id`,
/// `identity_mismatch`, `no_certificate`, `bad_certificate`), the peer's
/// refusal (`alert`), a peer speaking something else (`protocol`), or the
/// connection (`eof`, `reset`, `io`).
pub fn failure_reason(err: &std::io::Error) -> &'static str {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => "reset",
            std::io::ErrorKind::InvalidData => "protocol",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<PeerVerifyError>() {
                Some(PeerVerifyError::NoBundle) => "no_trust_bundle",
                Some(PeerVerifyError::Chain(webpki::Error::CertExpired { .. })) => "expired",
                Some(PeerVerifyError::Chain(_)) => "untrusted",
                Some(PeerVerifyError::Spiffe(_)) => "no_spiffe_id",
                Some(PeerVerifyError::IdentityMismatch { .. }) => "identity_mismatch",
                None => "bad_certificate",
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => "expired",
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => "untrusted",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::AlertReceived(_) => "alert",
        _ => "protocol",
    }
}
