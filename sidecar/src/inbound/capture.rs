//! The inbound capture listener: plaintext connections from clients outside
//! the mesh, redirected here by `mycel-proxy init`'s iptables rules. Mesh
//! traffic never comes here; it arrives on the mesh port, which the rules
//! leave alone.
//!
//! The port's peer-authentication mode decides first (a `PeerAuthentication`
//! policy from the controller, else the sidecar's `--mtls-mode`): STRICT
//! refuses them; PERMISSIVE and DISABLE hand them to authorization as an
//! unauthenticated caller, and what it allows goes to the address it was
//! addressed to (the pod IP, never loopback: a server bound to 127.0.0.1
//! inside the pod is not for other pods) on a declared app port (any port
//! with `--capture-all-ports`), counted as plaintext.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::authorize::{Authorizer, PlaintextRefused};
use crate::core::directory::Discovery;
use crate::core::orig_dst::OrigDst;
use crate::core::serve::Server;
use crate::metrics::{Direction, ErrorKind, Flow, ProxyMetrics};
use serde::Serialize;

/// What the inbound capture listener does with plaintext from clients
/// outside the mesh, where no `PeerAuthentication` policy says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Refused: only mesh (mTLS) traffic reaches the app.
    Strict,
    /// Passed to authorization as an unauthenticated caller.
    Permissive,
}

impl From<MtlsMode> for mycel_api::authz::MtlsMode {
    fn from(m: MtlsMode) -> Self {
        match m {
            MtlsMode::Strict => Self::Strict,
            MtlsMode::Permissive => Self::Permissive,
        }
    }
}

/// What the capture listener needs.
pub struct CaptureContext {
    /// The mode where no policy sets one.
    pub mode: MtlsMode,
    /// The declared app ports: the only ones permissive capture passes.
    pub app_ports: Vec<u16>,
    /// Pass every port, declared or not.
    pub all_ports: bool,
    pub metrics: ProxyMetrics,
    pub orig: Arc<dyn OrigDst>,
    /// Where the workload's peer authentication and authorization come
    /// from.
    pub discovery: Discovery,
}

/// What to do with one captured plaintext connection. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To the app at this address: the original destination itself.
    Allow(SocketAddr),
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Addressed to the capture port itself: not redirected, nowhere to go.
    CapturePort,
    /// Not a declared app port.
    UndeclaredPort,
    /// An unspecified destination (0.0.0.0): no address to dial.
    Unspecified,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::CapturePort => "addressed to the capture port",
            Refusal::UndeclaredPort => "not a declared app port",
            Refusal::Unspecified => "unspecified destination",
        }
    }
}

pub fn verdict(ctx: &CaptureContext, dst: SocketAddr, local: Option<SocketAddr>) -> Verdict {
    target(&ctx.app_ports, ctx.all_ports, dst, local)
}

/// Where a captured connection to `dst` could go, if anywhere, before
/// peer authentication and authorization have their say.
pub fn target(
    app_ports: &[u16],
    all_ports: bool,
    dst: SocketAddr,
    local: Option<SocketAddr>,
) -> Verdict {
    if local.is_some_and(|l| l.port() == dst.port()) {
        return Verdict::Refuse(Refusal::CapturePort);
    }
    if dst.ip().is_unspecified() {
        return Verdict::Refuse(Refusal::Unspecified);
    }
    if !all_ports && !app_ports.contains(&dst.port()) {
        return Verdict::Refuse(Refusal::UndeclaredPort);
    }
    Verdict::Allow(dst)
}

pub async fn serve(listener: TcpListener, ctx: CaptureContext, server: Server) {
    let authz = Authorizer::new(ctx.discovery.clone(), ctx.metrics.clone());
    let ctx = Arc::new((ctx, authz));
    let local = listener.local_addr().ok();
    server
        .serve("inbound_capture", listener, move |tcp, remote, _| {
            let ctx = ctx.clone();
            async move { connection(&ctx.0, &ctx.1, tcp, remote, local).await }
        })
        .await;
}

async fn connection(
    ctx: &CaptureContext,
    authz: &Authorizer,
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
    // Only declared ports become labels: the rest share port 0.
    let port_label = if ctx.app_ports.contains(&dst.port()) {
        dst.port()
    } else {
        0
    };
    let refused = || {
        ctx.metrics
            .captured(Direction::Inbound, "refused", "plaintext", port_label)
    };
    let addr = match verdict(ctx, dst, local) {
        Verdict::Refuse(why) => {
            if authz.may_log() {
                tracing::info!(%remote, %dst, reason = why.as_str(), "inbound capture: plaintext connection refused");
            }
            refused();
            return;
        }
        Verdict::Allow(addr) => addr,
    };
    // Decided at accept, before the app is dialled: a refused caller never
    // reaches it. The authorizer logs (within its budget) and counts.
    if let Err(e) = authz.admit_plaintext(remote.ip(), addr.port(), ctx.mode.into()) {
        if let PlaintextRefused::Forbidden(_) = e {
            ctx.metrics.error(Direction::Inbound, ErrorKind::Forbidden);
        }
        refused();
        return;
    }
    let port = addr.port();
    ctx.metrics
        .captured(Direction::Inbound, "allowed", "plaintext", port);
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
    let opened = std::time::Instant::now();
    let piped = tokio::io::copy_bidirectional(&mut tcp, &mut app).await;
    ctx.metrics
        .tcp_connection(Direction::Inbound, &label, opened.elapsed());
    match piped {
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
    fn captured_traffic_goes_to_the_pod_ip_on_declared_ports_only() {
        let local: SocketAddr = "0.0.0.0:15008".parse().unwrap();
        let ports = [8080];
        let allow = |a: &str| Verdict::Allow(a.parse().unwrap());
        let cases = [
            (false, "198.18.0.3:8080", allow("198.18.0.3:8080")),
            (
                false,
                "198.18.0.3:15008",
                Verdict::Refuse(Refusal::CapturePort),
            ),
            // permissive_capture_does_not_reach_localhost_only_server: a
            // server on 127.0.0.1:6000 in the pod is not a declared port...
            (
                false,
                "198.18.0.3:6000",
                Verdict::Refuse(Refusal::UndeclaredPort),
            ),
            // ...and even when every port is allowed, the connection goes
            // to the pod IP, where a loopback-only server does not listen.
            (true, "198.18.0.3:6000", allow("198.18.0.3:6000")),
            (false, "0.0.0.0:8080", Verdict::Refuse(Refusal::Unspecified)),
        ];
        for (all, dst, want) in cases {
            assert_eq!(
                target(&ports, all, dst.parse().unwrap(), Some(local)),
                want,
                "all={all} {dst}"
            );
        }
    }
}
