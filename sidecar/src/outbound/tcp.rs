//! Fixed TCP upstream ports: every connection accepted on a loopback port
//! becomes an HTTP/2 CONNECT tunnel to one service port.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::plan::destination;
use super::Outbound;
use crate::metrics::{Direction, Flow};

pub(super) async fn serve_tcp(
    outbound: Arc<Outbound>,
    listener: TcpListener,
    service: String,
    port: u16,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "outbound tcp: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let outbound = outbound.clone();
        let service = service.clone();
        tokio::spawn(async move {
            tunnel(&outbound, tcp, &service, port).await;
            tracing::debug!(%remote, %service, "outbound tcp: connection done");
        });
    }
}

async fn tunnel(outbound: &Outbound, mut tcp: TcpStream, service: &str, port: u16) {
    let _ = tcp.set_nodelay(true);
    let authority = format!("{service}:{port}");
    let opened = match destination(&authority, &outbound.namespace, &outbound.cluster_domain) {
        Ok(dest) => outbound.open_tunnel(&dest).await,
        Err(e) => Err(e.into()),
    };
    let upgraded = match opened {
        Ok(u) => u,
        Err(e) => {
            // The app sees the connection close; the reason is in the log.
            tracing::warn!(service = %authority, error = %e, "outbound tcp: tunnel failed");
            outbound.metrics.error(Direction::Outbound, e.kind());
            return;
        }
    };
    let mut upstream = TokioIo::new(upgraded);
    match tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await {
        Ok((sent, received)) => {
            outbound.metrics.tunnel_bytes(
                Direction::Outbound,
                &authority,
                Flow::ClientToServer,
                sent,
            );
            outbound.metrics.tunnel_bytes(
                Direction::Outbound,
                &authority,
                Flow::ServerToClient,
                received,
            );
        }
        Err(e) => {
            tracing::debug!(service = %authority, error = %e, "outbound tcp: tunnel ended with error")
        }
    }
}
