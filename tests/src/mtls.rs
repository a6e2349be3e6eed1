//! A hand-rolled mesh client: speaks to a sidecar's mesh port directly with
//! whatever certificate a test gives it, to probe what the port accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_test_support::tls::accept_any_client;
use mycel_test_support::Leaf;
use rustls::pki_types::ServerName;

/// GET `path` over HTTP/2 + mTLS on a mesh port, presenting `cert`; the
/// server is not checked (these probes test the server's checks, not ours).
/// Returns (status, body).
pub async fn get(
    mesh: SocketAddr,
    cert: &Leaf,
    path: &str,
    dst_port: u16,
) -> Result<(u16, String)> {
    let config = accept_any_client(Some(cert), &[b"h2"]);
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(mesh).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("mesh").context("name")?, tcp)
            .await
            .context("TLS handshake")?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .context("h2 handshake")?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://mesh{path}"))
            .header(mycel_api::headers::DST_PORT, dst_port.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await.context("request")?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .context("mesh request timed out")?
}
