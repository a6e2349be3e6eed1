//! Wiring: builds one service from its config and serves it.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::Catalog;
use crate::config::{ServiceConfig, ServiceKind, Stores};
use crate::events;
use crate::faults::Faults;
use crate::frontend::Frontend;
use crate::notifications::Notifications;
use crate::orders::Orders;
use crate::pg;
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
        postgres = ?config.stores.postgres.as_ref().map(ToString::to_string),
        redis = ?config.stores.redis.as_ref().map(ToString::to_string),
        nats = ?config.stores.nats.as_ref().map(ToString::to_string),
        "serving"
    );
    // Background tasks (event consumers, the outbox publisher) end with
    // the service: aborted when this returns.
    let mut tasks = tokio::task::JoinSet::new();
    let stores = &config.stores;
    match config.kind {
        ServiceKind::Catalog => {
            use crate::catalog::store::{MemoryApply, PostgresApply, Store};
            let connector = postgres(stores, "catalog", crate::catalog::MIGRATIONS);
            let store = Arc::new(match &connector {
                Some(c) => Store::Postgres(pg::Shared::new(c.clone())),
                None => Store::memory(),
            });
            if let Some(client) = nats(stores, "catalog").await? {
                match connector {
                    Some(c) => tasks.spawn(events::consume(
                        client,
                        "catalog",
                        PostgresApply(pg::Dedicated::new(c)),
                    )),
                    None => tasks.spawn(events::consume(
                        client,
                        "catalog",
                        MemoryApply(store.clone()),
                    )),
                };
            }
            let catalog = Catalog::with_store(faults, store);
            crate::http::serve(listener, Arc::new(catalog), shutdown).await?
        }
        ServiceKind::Ratings => {
            let ratings = match &stores.redis {
                Some(target) => {
                    Ratings::with_redis(faults, crate::kv::Redis::new(target, "ratings")?)
                }
                None => Ratings::new(faults),
            };
            crate::http::serve(listener, Arc::new(ratings), shutdown).await?
        }
        ServiceKind::Orders => {
            let orders = match postgres(stores, "orders", crate::orders::MIGRATIONS) {
                None => Orders::new(faults),
                Some(connector) => {
                    // config refuses --nats without --postgres for orders.
                    let wake = match nats(stores, "orders").await? {
                        Some(client) => {
                            let wake = Arc::new(tokio::sync::Notify::new());
                            tasks.spawn(crate::orders::outbox::run(
                                pg::Dedicated::new(connector.clone()),
                                client,
                                wake.clone(),
                            ));
                            Some(wake)
                        }
                        None => None,
                    };
                    let db = crate::orders::db::OrdersDb::new(
                        pg::Shared::new(connector),
                        wake,
                        stores.max_pending_events,
                    );
                    Orders::with_db(faults, db)
                }
            };
            crate::http::serve(listener, Arc::new(orders), shutdown).await?
        }
        ServiceKind::Notifications => {
            use crate::notifications::{Recorder, Store};
            let store = Arc::new(match &stores.redis {
                Some(target) => Store::Redis(crate::kv::Redis::new(target, "notifications")?),
                None => Store::memory(),
            });
            if let Some(client) = nats(stores, "notifications").await? {
                tasks.spawn(events::consume(
                    client,
                    "notifications",
                    Recorder(store.clone()),
                ));
            }
            let service = Notifications::new(faults, store);
            crate::http::serve(listener, Arc::new(service), shutdown).await?
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
    tasks.abort_all();
    tracing::info!(service = config.kind.name(), "stopped");
    Ok(())
}

fn postgres(
    stores: &Stores,
    database: &'static str,
    migrations: &'static [pg::migrate::Migration],
) -> Option<Arc<pg::Connector>> {
    stores.postgres.as_ref().map(|target| {
        Arc::new(pg::Connector::new(
            target.clone(),
            stores.postgres_user.clone(),
            database,
            migrations,
        ))
    })
}

/// The NATS client, when events are on; it connects in the background.
async fn nats(
    stores: &Stores,
    service: &'static str,
) -> anyhow::Result<Option<async_nats::Client>> {
    match &stores.nats {
        None => Ok(None),
        Some(target) => events::connect(target, service)
            .await
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--nats {target}: {e}")),
    }
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
