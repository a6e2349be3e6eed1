//! A TCP app for the tunnel tests: every read is written back behind a
//! prefix, so a test can tell the app's answer from its own bytes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves on `addr` until the test ends, answering each read with
/// `prefix` followed by the bytes read.
pub async fn tcp_echo(addr: SocketAddr, prefix: &'static [u8]) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("echo app cannot bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = prefix.to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if conn.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}
