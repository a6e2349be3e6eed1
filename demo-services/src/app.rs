//! Wiring: builds one service from its config and serves it.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::Catalog;
use crate::config::{ServiceConfig, ServiceKind};
use crate::faults::Faults;
use crate::frontend::Frontend;
use crate::orders::Orders;
use crate::ratings::Ratings;
use crate::reviews::ReviewsService;

/// Binds `config.listen` and serves until Ctrl-C or SIGTERM.
pub async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run_with_listener(config, listener, shutdown_signal()).await
}

/// Serves on an already bound listener until `shutdown` completes; for tests
/// that bind port 0 first. `config.listen` is not used; `config.health`,
/// when set, is bound here.
pub async fn run_with_listener(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Both servers stop on the one signal.
    let shutdown = shutdown.shared();
    let health = match config.health {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--health)"))?;
            tracing::info!(service = config.kind.name(), listen = %addr, "serving /healthz");
            let stop = shutdown.clone();
            async move {
                crate::http::serve(listener, Arc::new(crate::http::Healthz), stop)
                    .await
                    .context("health server")
            }
            .boxed()
        }
        None => async { anyhow::Ok(()) }.boxed(),
    };
    let service = serve_service(config, listener, shutdown);
    tokio::try_join!(service, health)?;
    Ok(())
}

async fn serve_service(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("listener address")?;
    let faults = Arc::new(Faults::new(&config.faults));
    tracing::info!(
        service = config.kind.name(),
        version = config.version.as_str(),
        listen = %local,
        upstreams = ?config.upstreams.fallback,
        direct = ?config.upstreams.direct,
        latency = ?config.faults.latency,
        error_rate = config.faults.error_rate,
        "serving"
    );
    match config.kind {
        ServiceKind::Catalog => {
            crate::http::serve(listener, Arc::new(Catalog::new(faults)), shutdown).await?
        }
        ServiceKind::Ratings => {
            crate::http::serve(listener, Arc::new(Ratings::new(faults)), shutdown).await?
        }
        ServiceKind::Orders => {
            crate::http::serve(listener, Arc::new(Orders::new(faults)), shutdown).await?
        }
        ServiceKind::Frontend => {
            let frontend = Frontend::new(faults, config.upstreams, config.upstream_timeout)
                .context("frontend upstreams")?;
            crate::http::serve(listener, Arc::new(frontend), shutdown).await?
        }
        ServiceKind::Reviews => {
            let service = ReviewsService::new(
                config.version,
                faults,
                config.upstreams,
                config.upstream_timeout,
            );
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
                .context("gRPC server")?
        }
    }
    tracing::info!(service = config.kind.name(), "stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
