//! What a TLS server presents: connect, keep the certificate chain the
//! server sends, and tell whether the handshake went through. The chain is
//! judged by `describe` against the user's trust bundle, not here, so the
//! verifier below accepts any chain (it still checks the handshake
//! signature, so the peer proved it holds the leaf's key).
//!
//! A Mycel mesh port requires a client certificate, and we have none to
//! give. In TLS 1.3 the server's Certificate comes before the client has to
//! answer the CertificateRequest, so the chain is captured anyway; the
//! server's refusal arrives after our Finished, as an alert on the first read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{addr}: expected HOST:PORT")]
    Address { addr: String },
    #[error("{addr}: {name:?} is not a valid TLS server name")]
    ServerName { addr: String, name: String },
    #[error("{addr}: connecting")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {timeout:?} while {phase}")]
    Timeout {
        addr: String,
        phase: &'static str,
        timeout: Duration,
    },
    #[error("{addr}: TLS handshake failed before the server presented a certificate")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: setting up TLS")]
    Config {
        addr: String,
        #[source]
        source: rustls::Error,
    },
}

/// How the handshake went, for the report (`-o json`: `handshake`).
#[derive(Clone, Debug, Serialize)]
pub struct Handshake {
    pub address: String,
    pub server_name: String,
    /// `TLSv1_3` / `TLSv1_2`, when negotiated.
    pub protocol: Option<String>,
    /// The server asked for a client certificate (we sent none).
    pub client_certificate_requested: bool,
    /// The server accepted the handshake without a client certificate.
    pub completed: bool,
    /// Why it did not complete, in words.
    pub error: Option<String>,
    #[serde(skip)]
    pub chain: Vec<Vec<u8>>,
}

/// The chain the server at `addr` (`host:port`) presents under
/// `server_name` (default: the host), within `timeout` for connecting and
/// again for the handshake.
pub async fn capture(
    addr: &str,
    server_name: Option<&str>,
    timeout: Duration,
) -> Result<Handshake, HandshakeError> {
    let host = host_of(addr).ok_or_else(|| HandshakeError::Address { addr: addr.into() })?;
    let name = server_name.unwrap_or(host).to_string();
    let sni = ServerName::try_from(name.clone()).map_err(|_| HandshakeError::ServerName {
        addr: addr.into(),
        name: name.clone(),
    })?;
    let timed_out = |phase| HandshakeError::Timeout {
        addr: addr.into(),
        phase,
        timeout,
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connecting"))?
        .map_err(|source| HandshakeError::Connect {
            addr: addr.into(),
            source,
        })?;
    let seen = Arc::new(Seen::default());
    let config = client_config(seen.clone()).map_err(|source| HandshakeError::Config {
        addr: addr.into(),
        source,
    })?;
    let result = tokio::time::timeout(timeout, TlsConnector::from(config).connect(sni, tcp))
        .await
        .map_err(|_| timed_out("in the TLS handshake"))?;
    let chain = seen.chain.lock().map(|c| c.clone()).unwrap_or_default();
    let requested = seen
        .client_cert_requested
        .lock()
        .map(|r| *r)
        .unwrap_or(false);
    let mut report = Handshake {
        address: addr.into(),
        server_name: name,
        protocol: None,
        client_certificate_requested: requested,
        completed: false,
        error: None,
        chain,
    };
    match result {
        Ok(mut tls) => {
            report.protocol = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}"));
            report.completed = true;
            if requested {
                // TLS 1.3: the client is done after its Finished; a server
                // that wanted a certificate says no only now. Wait briefly
                // for that alert; silence means it accepted us.
                let mut byte = [0u8; 1];
                let wait = timeout.min(Duration::from_secs(2));
                match tokio::time::timeout(wait, tls.read(&mut byte)).await {
                    Ok(Err(e)) => {
                        report.completed = false;
                        report.error = Some(format!(
                            "server requires a client certificate (it refused the handshake without one: {e})"
                        ));
                    }
                    Ok(Ok(0)) => {
                        report.completed = false;
                        report.error = Some(
                            "server requires a client certificate (it closed the connection without one)"
                                .into(),
                        );
                    }
                    Ok(Ok(_)) | Err(_) => {}
                }
            }
        }
        Err(source) if report.chain.is_empty() => {
            return Err(HandshakeError::Tls {
                addr: addr.into(),
                source,
            })
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    Ok(report)
}

/// The host of `host:port` (`[v6]:port` too), without brackets.
fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// What the handshake showed, written by rustls' callbacks.
#[derive(Debug, Default)]
struct Seen {
    chain: Mutex<Vec<Vec<u8>>>,
    client_cert_requested: Mutex<bool>,
}

/// Keeps the presented chain and accepts it: judging it is `describe`'s job,
/// against the trust bundle the user chose.
#[derive(Debug)]
struct Capture {
    seen: Arc<Seen>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        if let Ok(mut seen) = self.seen.chain.lock() {
            *seen = chain;
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

/// Has no certificate; notes that the server asked for one.
#[derive(Debug)]
struct NoClientCert(Arc<Seen>);

impl ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if let Ok(mut r) = self.0.client_cert_requested.lock() {
            *r = true;
        }
        None
    }

    fn has_certs(&self) -> bool {
        // rustls prepares for client authentication only when this says
        // yes; the server's request must reach `resolve` so we can note it
        // (and then answer with no certificate).
        true
    }
}

fn client_config(seen: Arc<Seen>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Capture {
        seen: seen.clone(),
        algs: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(NoClientCert(seen)));
    // A fresh handshake every time: a resumed session shows no certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_table() {
        for (addr, want) in [
            ("127.0.0.1:15006", Some("127.0.0.1")),
            ("example.test:443", Some("example.test")),
            ("[::1]:443", Some("::1")),
            ("nohost", None),
            (":443", None),
            ("host:port", None),
        ] {
            assert_eq!(host_of(addr), want, "{addr}");
        }
    }
}
