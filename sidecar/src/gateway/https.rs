//! The gateway's HTTPS listener (TLS terminated here, then routed as on
//! the plaintext listener) and the plaintext listener's redirect to it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::{self, CertStore, TlsFileError};
use super::{handle, Gateway, FORWARDED_CLIENT_CERT, FORWARDED_PROTO};
use crate::core::directory::gateway_certs::GatewayCertificates;
use crate::core::directory::routes::GatewaySocket;
use crate::core::directory::Discovery;
use crate::core::http::{empty, proxy_error, Body, Caller};
use crate::core::serve::{HttpMode, Server};
use crate::metrics::{Direction, ErrorKind, ProxyMetrics};
use crate::outbound::{request_authority, Outbound};

/// The gateway's HTTPS listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpsConfig {
    pub listen: SocketAddr,
    /// Served by SNI; the first also to clients no certificate names.
    /// Empty when every certificate comes from the Gateway (`--gateway`).
    pub certs: Vec<tls::CertFiles>,
    /// When set, clients must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
    #[serde(with = "crate::core::limits::humantime_serde")]
    pub reload_interval: Duration,
    /// The plaintext listener answers every request with a redirect here.
    pub redirect: bool,
}

/// The loaded certificates and the TLS configuration serving them.
pub struct Https {
    acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    reload_interval: Duration,
}

impl Https {
    /// Loads the certificates (and the client CA): a bad file stops the
    /// start with its name and what is wrong.
    pub fn load(config: &HttpsConfig) -> Result<Https, TlsFileError> {
        let store = CertStore::load(config.certs.clone())?;
        let server = tls::server_config(store.clone(), config.client_ca.as_deref())?;
        Ok(Https {
            acceptor: TlsAcceptor::from(server),
            store,
            reload_interval: config.reload_interval,
        })
    }

    /// Follows changes of the certificate files until dropped, keeping the
    /// expiry gauges and reload counts.
    pub fn watch(&self, metrics: ProxyMetrics) -> impl Future<Output = ()> {
        publish(&metrics, &self.store);
        let store = self.store.clone();
        let every = self.reload_interval;
        let watched = store.clone();
        async move {
            watched
                .watch(every, move |ok| {
                    metrics.cert_reload(ok);
                    if ok {
                        publish(&metrics, &store);
                    }
                })
                .await;
        }
    }

    /// Serves the certificates of the Gateway `key` that the controller
    /// pushes, after the files: each new set replaces the last whole (new
    /// handshakes get it, open connections keep theirs). Runs until
    /// dropped.
    pub fn follow_gateway(
        &self,
        discovery: Discovery,
        key: Arc<str>,
        metrics: ProxyMetrics,
    ) -> impl Future<Output = ()> {
        let store = self.store.clone();
        async move {
            let mut changes = discovery.changes();
            // The set last applied; snapshots are rebuilt for every change
            // of any resource, and the same `Arc` means the same set.
            let mut applied: Option<Arc<GatewayCertificates>> = None;
            loop {
                let now = changes
                    .borrow_and_update()
                    .gateway_certificates
                    .get(&*key)
                    .cloned();
                let same = match (&applied, &now) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    let set = now.clone().unwrap_or_default();
                    store.set_pushed(&set);
                    tracing::info!(
                        gateway = %key,
                        certificates = set.certificates.len(),
                        "gateway: serving the Gateway's HTTPS certificates"
                    );
                    publish(&metrics, &store);
                    applied = now;
                }
                if changes.changed().await.is_err() {
                    // No source any more (a proxy stopping): keep what is
                    // served, and do not end, which would stop the proxy.
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// The expiry gauge of every served certificate, by its first DNS name;
/// when two share one, the certificate served for it (the first) counts.
fn publish(metrics: &ProxyMetrics, store: &CertStore) {
    let mut certs: Vec<(String, i64)> = Vec::new();
    for c in store.summary() {
        if let Some(name) = c.names.first() {
            if !certs.iter().any(|(n, _)| n == name) {
                certs.push((name.clone(), c.not_after_unix));
            }
        }
    }
    metrics.served_certs(&certs);
}

/// Why a handshake failed, for the failure counter. A store with no
/// certificate at all fails every handshake in rustls with a general
/// error; that is `no_certificate`, not the client's protocol fault.
fn handshake_failure(e: &std::io::Error, store: &CertStore) -> &'static str {
    let general = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::General(_)));
    if general && store.is_empty() {
        "no_certificate"
    } else {
        crate::core::tls::failure_reason(e)
    }
}

/// Serves HTTPS on `listener`: the handshake (bounded in time, failures
/// counted by reason), then the same routing as the plaintext listener.
pub fn serve(
    listener: TcpListener,
    https: &Https,
    gateway: Arc<Gateway>,
    server: Server,
) -> impl Future<Output = ()> {
    let acceptor = https.acceptor.clone();
    let store = https.store.clone();
    server.serve("gateway_https", listener, move |tcp, remote, conn| {
        let (gateway, acceptor) = (gateway.clone(), acceptor.clone());
        let store = store.clone();
        let outbound = gateway.outbound.clone();
        async move {
            // A handshake is bounded as a request's headers are: a client
            // that opens connections and says nothing holds no slot long.
            let limit = conn.limits().header_read_timeout;
            let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    let reason = handshake_failure(&e, &store);
                    tracing::debug!(%remote, reason, error = %e, "gateway: TLS handshake failed");
                    outbound
                        .metrics()
                        .handshake_failure(Direction::Gateway, reason);
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "gateway: TLS handshake timed out");
                    outbound
                        .metrics()
                        .handshake_failure(Direction::Gateway, "timeout");
                    return;
                }
            };
            // Read once per connection: every request on it comes from
            // the same verified client.
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| client_cert_header(leaf));
            conn.serve_http(tls, HttpMode::FirstHop, move |mut req| {
                let gateway = gateway.clone();
                let client_cert = client_cert.clone();
                async move {
                    let headers = req.headers_mut();
                    headers.insert(FORWARDED_PROTO, HeaderValue::from_static("https"));
                    match client_cert {
                        Some(v) => headers.insert(FORWARDED_CLIENT_CERT, v),
                        None => headers.remove(FORWARDED_CLIENT_CERT),
                    };
                    handle(&gateway, req, GatewaySocket::Tls).await
                }
            })
            .await;
        }
    })
}

/// `Hash=<sha256 of the DER>;Subject="<DN>";DNS=<name>...` for a partner's
/// verified client certificate, the shape of the de facto
/// `x-forwarded-client-cert` header; None if it cannot be a header value.
fn client_cert_header(leaf: &rustls::pki_types::CertificateDer<'_>) -> Option<HeaderValue> {
    use sha2::{Digest, Sha256};
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let subject = cert.subject().to_string().replace('"', "\\\"");
    let mut value = format!(
        "Hash={};Subject=\"{subject}\"",
        hex::encode(Sha256::digest(leaf))
    );
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    value.push_str(&format!(";DNS={d}"));
                }
                x509_parser::extensions::GeneralName::URI(u) => {
                    value.push_str(&format!(";URI={u}"));
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&value).ok()
}

/// Serves the plaintext listener as a redirect: every request is answered
/// 308 with the same host and path on the HTTPS listener's port.
pub fn redirect(
    listener: TcpListener,
    https_port: u16,
    outbound: Arc<Outbound>,
    server: Server,
) -> impl Future<Output = ()> {
    server.serve("gateway", listener, move |tcp, _, conn| {
        let outbound = outbound.clone();
        async move {
            conn.serve_http(tcp, HttpMode::FirstHop, move |req| {
                let outbound = outbound.clone();
                async move { redirect_one(&outbound, https_port, &req) }
            })
            .await;
        }
    })
}

fn redirect_one(outbound: &Outbound, https_port: u16, req: &Request<Incoming>) -> Response<Body> {
    match location(req, https_port) {
        Some(location) => {
            let mut res = Response::new(empty());
            *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
            res.headers_mut().insert(LOCATION, location);
            res
        }
        None => {
            outbound
                .metrics()
                .error(Direction::Gateway, ErrorKind::BadRequest);
            proxy_error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "the request names no host to redirect to HTTPS",
                Caller::of(req.headers(), true),
            )
        }
    }
}

/// `https://<host>[:port]<path?query>` for `req`, None without a host.
fn location<B>(req: &Request<B>, https_port: u16) -> Option<HeaderValue> {
    let authority = request_authority(req)?;
    let host = super::route::host_only(&authority);
    if host.is_empty() {
        return None;
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    HeaderValue::from_str(&url).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_client_certificate_is_described_by_hash_subject_and_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["acme.partner".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Acme \"Ltd\"");
        let cert = params.self_signed(&key).unwrap();
        let v = client_cert_header(cert.der()).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("Hash="), "{v}");
        assert_eq!(
            v.split(';').next().unwrap().len(),
            "Hash=".len() + 64,
            "{v}"
        );
        assert!(
            v.contains(r#"Subject="CN=Acme \"Ltd\"""#),
            "quotes escaped: {v}"
        );
        assert!(v.ends_with(";DNS=acme.partner"), "{v}");
    }

    #[test]
    fn redirects_keep_host_path_and_query_on_the_https_port() {
        let cases = [
            (
                "/a/b?x=1",
                Some("shop.example"),
                443,
                Some("https://shop.example/a/b?x=1"),
            ),
            (
                "/",
                Some("shop.example:8080"),
                8443,
                Some("https://shop.example:8443/"),
            ),
            ("/p", Some("[::1]:80"), 8443, Some("https://[::1]:8443/p")),
            (
                "http://abs.example/q",
                None,
                443,
                Some("https://abs.example/q"),
            ),
            ("/", None, 443, None),
        ];
        for (uri, host, port, want) in cases {
            let got = location(&req(uri, host), port);
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                want,
                "{uri} {host:?} {port}"
            );
        }
    }
}
