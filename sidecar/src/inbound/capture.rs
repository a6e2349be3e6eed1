//! The inbound capture listener: plaintext connections from clients outside
//! the mesh, redirected here by `mycel-proxy init`'s iptables rules. Mesh
//! traffic never comes here; it arrives on the mesh port, which the rules
//! leave alone.
//!
//! Strict mTLS refuses them; permissive passes them to the app port they
//! were addressed to and counts them as plaintext.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::config::MtlsMode;
use crate::core::serve::Server;
use crate::metrics::{Direction, ErrorKind, Flow, ProxyMetrics};
use crate::outbound::transparent::orig_dst::OrigDst;

/// What the capture listener needs.
pub struct CaptureContext {
    pub app_host: IpAddr,
    pub mode: MtlsMode,
    pub metrics: ProxyMetrics,
    pub orig: Arc<dyn OrigDst>,
}

/// What to do with one captured plaintext connection. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To the app at this port.
    Allow(u16),
    Refuse,
}

pub fn verdict(mode: MtlsMode, dst: SocketAddr, local: Option<SocketAddr>) -> Verdict {
    // Addressed to the capture port itself: not redirected, nowhere to go.
    if local.is_some_and(|l| l.port() == dst.port()) {
        return Verdict::Refuse;
    }
    match mode {
        MtlsMode::Strict => Verdict::Refuse,
        MtlsMode::Permissive => Verdict::Allow(dst.port()),
    }
}

pub async fn serve(listener: TcpListener, ctx: CaptureContext, server: Server) {
    let ctx = Arc::new(ctx);
    let local = listener.local_addr().ok();
    server
        .serve("inbound_capture", listener, move |tcp, remote, _| {
            let ctx = ctx.clone();
            async move { connection(&ctx, tcp, remote, local).await }
        })
        .await;
}

async fn connection(
    ctx: &CaptureContext,
    mut tcp: TcpStream,
    remote: SocketAddr,
    local: Option<SocketAddr>,
) {
    let dst = match ctx.orig.original_dst(&tcp) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "inbound capture: no original destination");
            ctx.metrics
                .captured(Direction::Inbound, "error", "plaintext", 0);
            return;
        }
    };
    let port = match verdict(ctx.mode, dst, local) {
        Verdict::Refuse => {
            tracing::info!(%remote, %dst, "inbound capture: plaintext connection refused (strict mTLS)");
            ctx.metrics
                .captured(Direction::Inbound, "refused", "plaintext", dst.port());
            return;
        }
        Verdict::Allow(port) => port,
    };
    ctx.metrics
        .captured(Direction::Inbound, "allowed", "plaintext", port);
    let addr = SocketAddr::new(ctx.app_host, port);
    let mut app = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%remote, %addr, error = %e, "inbound capture: app unreachable");
            ctx.metrics.error(Direction::Inbound, ErrorKind::AppConnect);
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let label = format!("plaintext:{port}");
    match tokio::io::copy_bidirectional(&mut tcp, &mut app).await {
        Ok((to_app, from_app)) => {
            let m = &ctx.metrics;
            m.tunnel_bytes(Direction::Inbound, &label, Flow::ClientToServer, to_app);
            m.tunnel_bytes(Direction::Inbound, &label, Flow::ServerToClient, from_app);
        }
        Err(e) => tracing::debug!(%remote, error = %e, "inbound capture: pipe ended with error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let local: SocketAddr = "0.0.0.0:15008".parse().unwrap();
        let cases = [
            (
                MtlsMode::Permissive,
                "198.18.0.3:8080",
                Verdict::Allow(8080),
            ),
            (MtlsMode::Strict, "198.18.0.3:8080", Verdict::Refuse),
            (MtlsMode::Permissive, "198.18.0.3:15008", Verdict::Refuse),
        ];
        for (mode, dst, want) in cases {
            assert_eq!(
                verdict(mode, dst.parse().unwrap(), Some(local)),
                want,
                "{mode:?} {dst}"
            );
        }
    }
}
