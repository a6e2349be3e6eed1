//! Fixed TCP upstream ports: every connection accepted on a loopback port
//! becomes an HTTP/2 CONNECT tunnel to one service port.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::plan::destination;
use super::Outbound;
use crate::core::serve::Server;
use crate::metrics::{Direction, Flow};

pub(super) async fn serve_tcp(
    outbound: Arc<Outbound>,
    listener: TcpListener,
    service: String,
    port: u16,
    server: Server,
) {
    let service: Arc<str> = service.into();
    server
        .serve("tcp_upstream", listener, move |tcp, _, _| {
            let outbound = outbound.clone();
            let service = service.clone();
            async move {
                tunnel(&outbound, tcp, &service, port).await;
                tracing::debug!(%service, "outbound tcp: connection done");
            }
        })
        .await;
}

async fn tunnel(outbound: &Outbound, mut tcp: TcpStream, service: &str, port: u16) {
    let authority = format!("{service}:{port}");
    let opened = match destination(&authority, &outbound.namespace, &outbound.cluster_domain) {
        Ok(dest) => outbound.open_tunnel(&dest).await,
        Err(e) => Err(e.into()),
    };
    let (upgraded, _guard) = match opened {
        Ok(u) => u,
        Err(e) => {
            // The app sees the connection close; the reason is in the log.
            tracing::warn!(service = %authority, error = %e, "outbound tcp: tunnel failed");
            outbound.metrics.error(Direction::Outbound, e.kind());
            return;
        }
    };
    let mut upstream = TokioIo::new(upgraded);
    let opened = std::time::Instant::now();
    let piped = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    outbound
        .metrics
        .tcp_connection(Direction::Outbound, &authority, opened.elapsed());
    match piped {
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
