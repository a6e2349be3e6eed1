//! The transparent outbound listener: connections the app made to any
//! address, redirected here by `mycel-proxy init`'s iptables rules.
//!
//! The original destination decides: a service VIP is routed and balanced
//! as in explicit mode (per request when the client speaks HTTP, else one
//! CONNECT tunnel); a meshed endpoint's address goes to that endpoint over
//! mTLS; anything else passes through as plain TCP or is denied.

pub mod classify;
pub mod detect;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use self::classify::{classify, Target};
use self::detect::{protocol_label, read_and_detect, should_detect, Detected, DETECT_TIMEOUT};
use super::plan::Destination;
use super::{request_authority, ForwardError, Outbound, RESOLVE_WAIT};
use crate::core::directory::{Endpoint, ServicePort, ServiceState, Snapshot};
use crate::core::http::boxed;
use crate::core::orig_dst::OrigDst;
use crate::core::prefixed::Prefixed;
use crate::core::serve::{Conn, HttpMode, Server};
use crate::metrics::{Direction, Flow};
use crate::observe::{TunnelEnd, TunnelSpan};

/// Where the transparent outbound listener sends a destination that is
/// neither a service address nor a meshed endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDestination {
    /// Plain TCP to the original destination, as without the mesh.
    Passthrough,
    /// The connection is closed.
    Deny,
}

const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The metric label of every passthrough connection.
const PASSTHROUGH_LABEL: &str = "passthrough";

/// Settings of the transparent outbound listener.
#[derive(Clone, Debug)]
pub struct TransparentOptions {
    pub unknown: UnknownDestination,
    /// Ports tunnelled without protocol detection.
    pub opaque_ports: Vec<u16>,
}

pub(super) async fn serve(
    outbound: Arc<Outbound>,
    listener: TcpListener,
    orig: Arc<dyn OrigDst>,
    opts: Arc<TransparentOptions>,
    server: Server,
) {
    let local = listener.local_addr().ok();
    server
        .serve("transparent_outbound", listener, move |tcp, _, conn| {
            let (outbound, orig, opts) = (outbound.clone(), orig.clone(), opts.clone());
            async move {
                connection(&outbound, tcp, orig.as_ref(), &opts, local, &conn).await;
                tracing::debug!("transparent outbound: connection done");
            }
        })
        .await;
}

/// A connection addressed to the listener itself was not redirected (or
/// would loop): it has no destination to go to.
fn is_self(dst: SocketAddr, local: Option<SocketAddr>) -> bool {
    local.is_some_and(|l| {
        dst == l || (dst.port() == l.port() && (l.ip().is_unspecified() || dst.ip().is_loopback()))
    })
}

/// The snapshot to classify `dst` with. A VIP of a service this proxy has
/// not subscribed to is in the mesh-wide VIP table: subscribe on demand and
/// wait for its first answer, as the explicit proxy does for a host name.
async fn snapshot_for(outbound: &Outbound, dst: SocketAddr) -> Arc<Snapshot> {
    let snapshot = outbound.discovery.snapshot();
    let Some(key) = snapshot.vip_owner(dst.ip()).map(str::to_string) else {
        return snapshot;
    };
    if matches!(snapshot.service(&key), Some(ServiceState::Known { .. })) {
        return snapshot;
    }
    if let Err(e) = outbound.discovery.resolve(&key, RESOLVE_WAIT).await {
        // Classified with what is known; the VIP's service stays unknown.
        tracing::warn!(service = %key, error = %e, "transparent outbound: not subscribing");
    }
    outbound.discovery.snapshot()
}

async fn connection(
    outbound: &Arc<Outbound>,
    tcp: TcpStream,
    orig: &dyn OrigDst,
    opts: &TransparentOptions,
    local: Option<SocketAddr>,
    conn: &Conn,
) {
    let metrics = outbound.metrics.clone();
    let dst = match orig.original_dst(&tcp) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "transparent outbound: no original destination");
            metrics.captured(Direction::Outbound, "error", "opaque", 0);
            return;
        }
    };
    if is_self(dst, local) {
        tracing::warn!(%dst, "transparent outbound: connection to the capture port itself refused");
        metrics.captured(Direction::Outbound, "denied", "opaque", dst.port());
        return;
    }
    let snapshot = snapshot_for(outbound, dst).await;
    let target = classify(&snapshot, dst);
    let (route, protocol) = match target {
        Target::Service {
            key,
            port,
            protocol,
        } => (
            HttpRoute::Service(Destination {
                host: dst.ip().to_string(),
                service_key: key,
                port: Some(port),
            }),
            protocol,
        ),
        Target::Endpoint {
            endpoint,
            port,
            service,
        } => {
            // Dialing an endpoint is a use of its service: the subscription
            // that made the endpoint known must not expire under it.
            outbound.discovery.subscriptions().touch(&service);
            let protocol = port.protocol;
            (
                HttpRoute::Endpoint(Box::new((endpoint, port, service))),
                protocol,
            )
        }
        Target::Unknown => {
            match opts.unknown {
                UnknownDestination::Deny => {
                    tracing::info!(%dst, "transparent outbound: unknown destination denied");
                    metrics.captured(Direction::Outbound, "denied", "opaque", dst.port());
                }
                UnknownDestination::Passthrough => {
                    metrics.captured(Direction::Outbound, "passthrough", "opaque", dst.port());
                    passthrough(outbound, tcp, dst).await;
                }
            }
            return;
        }
    };
    let skipped = !should_detect(dst.port(), protocol, &opts.opaque_ports);
    let mut tcp = tcp;
    let (detected, read) = if skipped {
        (Detected::Opaque, Vec::new())
    } else {
        read_and_detect(&mut tcp, DETECT_TIMEOUT).await
    };
    let label = protocol_label(skipped, detected, read.len());
    // Whoever serves the connection sees it from its first byte.
    let tcp = Prefixed::new(read, tcp);
    metrics.captured(Direction::Outbound, route.target(), label, dst.port());
    if detected.is_http() {
        serve_http(outbound, tcp, route, dst, conn).await;
        return;
    }
    let name = match &route {
        HttpRoute::Service(dest) => &dest.service_key,
        HttpRoute::Endpoint(ep) => &ep.2,
    };
    let mut span = conn.tunnel_span(name);
    let (opened, _guard) = match &route {
        HttpRoute::Service(dest) => match outbound.open_tunnel(dest, span.as_mut()).await {
            Ok((io, guard)) => (Ok(io), Some(guard)),
            Err(e) => (Err(e), None),
        },
        HttpRoute::Endpoint(ep) => (
            outbound
                .tunnel_to(&ep.0, ep.1.target_port, span.as_mut())
                .await,
            None,
        ),
    };
    pipe_or_log(outbound, tcp, opened, name, span).await;
}

/// Where the requests of a captured HTTP connection go.
enum HttpRoute {
    /// Routed and balanced per request, as in explicit mode.
    Service(Destination),
    /// The one endpoint the app dialed, for this service port (of this
    /// service).
    Endpoint(Box<(Endpoint, ServicePort, String)>),
}

impl HttpRoute {
    fn target(&self) -> &'static str {
        match self {
            HttpRoute::Service(_) => "service",
            HttpRoute::Endpoint(_) => "endpoint",
        }
    }
}

/// Serves the app's HTTP on this connection, each request routed on its
/// own (to the service as in explicit mode, or to the endpoint dialed).
async fn serve_http(
    outbound: &Arc<Outbound>,
    tcp: Prefixed<TcpStream>,
    route: HttpRoute,
    dst: SocketAddr,
    conn: &Conn,
) {
    let route = Arc::new(route);
    let outbound = outbound.clone();
    let service = move |req: http::Request<hyper::body::Incoming>| {
        let route = route.clone();
        let outbound = outbound.clone();
        async move {
            let authority = request_authority(&req).unwrap_or_else(|| dst.to_string());
            let (parts, body) = req.into_parts();
            let req = http::Request::from_parts(parts, boxed(body));
            let res = match &*route {
                HttpRoute::Service(dest) => {
                    outbound
                        .forward(Direction::Outbound, dest, &authority, req)
                        .await
                }
                HttpRoute::Endpoint(ep) => {
                    outbound
                        .forward_to(Direction::Outbound, &ep.0, &ep.1, &ep.2, &authority, req)
                        .await
                }
            };
            res
        }
    };
    conn.serve_http(tcp, HttpMode::FirstHop, service).await;
}

async fn pipe_or_log(
    outbound: &Outbound,
    tcp: Prefixed<TcpStream>,
    opened: Result<hyper::upgrade::Upgraded, ForwardError>,
    label: &str,
    span: Option<TunnelSpan>,
) {
    match opened {
        Ok(upgraded) => pipe(outbound, tcp, TokioIo::new(upgraded), label, span).await,
        Err(e) => {
            // The app sees the connection close; the reason is in the log.
            tracing::warn!(destination = %label, error = %e, "transparent outbound: tunnel failed");
            outbound.metrics.error(Direction::Outbound, e.kind());
            if let Some(span) = span {
                span.end(TunnelEnd::Failed(&e));
            }
        }
    }
}

async fn passthrough(outbound: &Outbound, tcp: TcpStream, dst: SocketAddr) {
    let upstream = match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(dst))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%dst, error = %e, "transparent outbound: passthrough connect failed");
            return;
        }
        Err(_) => {
            tracing::info!(%dst, "transparent outbound: passthrough connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    // Any address may be dialed: never a metric label.
    pipe(outbound, tcp, upstream, PASSTHROUGH_LABEL, None).await;
}

/// Pipes the app's connection to its upstream until both close, counted
/// under `label` and ending the tunnel's span.
pub(super) async fn pipe<C, S>(
    outbound: &Outbound,
    mut tcp: C,
    mut upstream: S,
    label: &str,
    span: Option<TunnelSpan>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let opened = std::time::Instant::now();
    let piped = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    outbound
        .metrics
        .tcp_connection(Direction::Outbound, label, opened.elapsed());
    match &piped {
        Ok((sent, received)) => {
            let m = &outbound.metrics;
            m.tunnel_bytes(Direction::Outbound, label, Flow::ClientToServer, *sent);
            m.tunnel_bytes(Direction::Outbound, label, Flow::ServerToClient, *received);
        }
        Err(e) => {
            tracing::debug!(destination = %label, error = %e, "outbound: tunnel ended with error")
        }
    }
    if let Some(span) = span {
        span.end_piped(&piped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_connections() {
        let l: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:15001".parse().unwrap();
        let cases = [
            ("127.0.0.1:15001", Some(l), true),
            ("127.0.0.5:15001", Some(l), true),
            ("198.18.0.2:15001", Some(any), true),
            ("198.18.0.2:15001", Some(l), false),
            ("127.0.0.1:8080", Some(l), false),
            ("127.0.0.1:15001", None, false),
        ];
        for (dst, local, want) in cases {
            assert_eq!(
                is_self(dst.parse().unwrap(), local),
                want,
                "{dst} {local:?}"
            );
        }
    }
}
