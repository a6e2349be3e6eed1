//! Fixed TCP upstream ports: every connection accepted on a loopback port
//! becomes an HTTP/2 CONNECT tunnel to one service port.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::plan::destination;
use super::transparent::pipe;
use super::Outbound;
use crate::core::serve::{Conn, Server};
use crate::metrics::Direction;
use crate::observe::TunnelEnd;

pub(super) async fn serve_tcp(
    outbound: Arc<Outbound>,
    listener: TcpListener,
    service: String,
    port: u16,
    server: Server,
) {
    let service: Arc<str> = service.into();
    server
        .serve("tcp_upstream", listener, move |tcp, _, conn| {
            let outbound = outbound.clone();
            let service = service.clone();
            async move {
                tunnel(&outbound, tcp, &service, port, &conn).await;
                tracing::debug!(%service, "outbound tcp: connection done");
            }
        })
        .await;
}

async fn tunnel(outbound: &Outbound, tcp: TcpStream, service: &str, port: u16, conn: &Conn) {
    let authority = format!("{service}:{port}");
    let mut span = conn.tunnel_span(&authority);
    let opened = match destination(&authority, &outbound.namespace, &outbound.cluster_domain) {
        Ok(dest) => outbound.open_tunnel(&dest, span.as_mut()).await,
        Err(e) => Err(e.into()),
    };
    let (upgraded, _guard) = match opened {
        Ok(u) => u,
        Err(e) => {
            // The app sees the connection close; the reason is in the log.
            tracing::warn!(service = %authority, error = %e, "outbound tcp: tunnel failed");
            outbound.metrics.error(Direction::Outbound, e.kind());
            if let Some(span) = span {
                span.end(TunnelEnd::Failed(&e));
            }
            return;
        }
    };
    pipe(outbound, tcp, TokioIo::new(upgraded), &authority, span).await;
}
