//! The client side of the mesh: the explicit HTTP proxy and TCP upstream
//! ports apps call on loopback, routed by discovery to peer sidecars over
//! pooled mTLS HTTP/2 connections.

pub mod balance;
pub mod breaker;
mod call;
mod forward;
mod listener;
pub mod plan;
pub mod pool;
pub mod retry;
pub mod route;
mod routed;
mod tcp;
pub mod transparent;
mod upgrade;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use forward::{ForwardError, TunnelGuard, RESOLVE_WAIT, UNKNOWN_SERVICE_LABEL};
pub use listener::request_authority;
pub use routed::{Admission, Parent, Passed, PolicyGuard, ResponseHook, Routed};

use crate::core::budget::ByteBudget;
use crate::core::credentials::IdentityState;
use crate::core::directory::Discovery;
use crate::core::serve::Server;
use crate::metrics::ProxyMetrics;

/// What the outbound side needs.
pub struct OutboundContext {
    pub identity: Arc<IdentityState>,
    pub discovery: Discovery,
    /// This workload's namespace, for bare service names.
    pub namespace: String,
    /// e.g. `cluster.local`, for fully qualified service names.
    pub cluster_domain: String,
    pub metrics: ProxyMetrics,
    /// Settings of pooled mesh connections.
    pub pool: pool::PoolSettings,
    /// This workload's zone, for locality-aware load balancing ("" if
    /// unknown).
    pub zone: String,
}

/// Shared by every outbound listener (and the gateway): one pool of mesh
/// connections, one balancer.
pub struct Outbound {
    discovery: Discovery,
    namespace: String,
    cluster_domain: String,
    metrics: ProxyMetrics,
    pool: pool::Pool,
    balancer: balance::Balancer,
    budgets: retry::Budgets,
    breakers: breaker::Breakers,
    /// Room for request bodies kept for retries and mirrors.
    retry_buffers: ByteBudget,
    /// Room for request bodies a gateway policy's body limit reads whole
    /// (see `routed`); apart from retries', so a flood of slow uploads
    /// cannot take retries away from other callers.
    held_bodies: ByteBudget,
    /// Mirror copies in flight (see `routed`).
    mirrors: Arc<tokio::sync::Semaphore>,
    zone: String,
}

impl Outbound {
    pub fn new(ctx: OutboundContext) -> Outbound {
        Outbound {
            discovery: ctx.discovery,
            namespace: ctx.namespace,
            cluster_domain: ctx.cluster_domain,
            metrics: ctx.metrics.clone(),
            balancer: balance::Balancer::new(Arc::new(EjectionLog {
                metrics: ctx.metrics.clone(),
            })),
            pool: pool::Pool::new(ctx.identity, ctx.pool),
            budgets: retry::Budgets::default(),
            breakers: breaker::Breakers::default(),
            retry_buffers: ByteBudget::new(call::RETRY_BUFFER_TOTAL),
            held_bodies: ByteBudget::new(routed::HELD_BODY_TOTAL),
            mirrors: Arc::new(tokio::sync::Semaphore::new(routed::MIRRORS_IN_FLIGHT)),
            zone: ctx.zone,
        }
    }

    /// Serves the explicit HTTP proxy on `listener` until the task is dropped.
    pub fn serve_http(
        self: Arc<Self>,
        listener: TcpListener,
        server: Server,
    ) -> impl Future<Output = ()> {
        listener::serve_http(self, listener, server)
    }

    /// Tunnels every connection on `listener` to `service` (`<name>.<ns>`
    /// or any host form) port `port`.
    pub fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        service: String,
        port: u16,
        server: Server,
    ) -> impl Future<Output = ()> {
        tcp::serve_tcp(self, listener, service, port, server)
    }

    /// Serves captured connections (transparent mode) on `listener`,
    /// reading each one's original destination with `orig`.
    pub fn serve_transparent(
        self: Arc<Self>,
        listener: TcpListener,
        orig: Arc<dyn crate::core::orig_dst::OrigDst>,
        opts: transparent::TransparentOptions,
        server: Server,
    ) -> impl Future<Output = ()> {
        transparent::serve(self, listener, orig, Arc::new(opts), server)
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// What discovery knows now.
    pub fn snapshot(&self) -> Arc<crate::core::directory::Snapshot> {
        self.discovery.snapshot()
    }
}

/// Logs and counts what outlier detection does.
struct EjectionLog {
    metrics: ProxyMetrics,
}

impl balance::BalanceObserver for EjectionLog {
    fn ejected(
        &self,
        service: &str,
        endpoint: &crate::core::directory::Endpoint,
        reason: balance::EjectReason,
        duration: std::time::Duration,
    ) {
        tracing::warn!(%service, endpoint = %forward::endpoint_name(endpoint), reason = reason.as_str(), ?duration, "outlier detection ejected an endpoint");
        self.metrics.ejection(service, reason.as_str());
    }

    fn returned(&self, service: &str, endpoint: &crate::core::directory::Endpoint) {
        tracing::info!(%service, endpoint = %forward::endpoint_name(endpoint), "endpoint back in load balancing after its ejection");
    }
}
