//! Wires the proxy: identity and discovery sources, the admin server, and
//! the data-path listeners, which start serving only once a certificate is
//! held (the data path also refuses handshakes without one).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mycel_api::spiffe::SpiffeId;
use mycel_api::v1 as pb;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState};
use crate::config::{names, Config, Mode, Source, TcpUpstream};
use crate::core::channel::ControllerTls;
use crate::core::directory::{Discovery, Snapshot, Subscriptions};
use crate::core::orig_dst::SockOpt;
use crate::core::serve::{ConnMetrics, Server, Shutdown};
use crate::discovery::readiness::Withdrawal;
use crate::discovery::{
    readiness, static_file, DiscoveryClient, DiscoveryMetrics, DiscoveryStatus, HelloParams,
};
use crate::identity::cert::{load_static, read_pem_certs};
use crate::identity::{GrpcCaClient, IdentityManager, IdentityMetrics, IdentityState};
use crate::metrics::ProxyMetrics;
use crate::observe::{AccessLog, Observer, Tracing};
use crate::outbound::pool::PoolSettings;
use crate::outbound::transparent::TransparentOptions;
use crate::outbound::{Outbound, OutboundContext};
use crate::{gateway, inbound};

/// How long a stopping proxy waits for its "not ready" to be on the
/// discovery stream, and how long it then keeps accepting so that peers
/// can drop it from their endpoint lists before it refuses connections.
/// Both are short so a controller that is away never holds up a stop.
const WITHDRAW_SEND_WAIT: Duration = Duration::from_secs(1);
const WITHDRAW_SETTLE: Duration = Duration::from_millis(500);

/// Every listener, bound before anything is reported ready.
struct Listeners {
    admin: Option<TcpListener>,
    inbound: Option<TcpListener>,
    outbound: Option<TcpListener>,
    listen: Option<TcpListener>,
    https: Option<TcpListener>,
    tcp: Vec<(TcpUpstream, TcpListener)>,
    transparent_outbound: Option<TcpListener>,
    inbound_capture: Option<TcpListener>,
}

async fn bind(flag: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --{flag} {addr}"))
}

async fn bind_opt(flag: &str, addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(a) => Ok(Some(bind(flag, a).await?)),
        None => Ok(None),
    }
}

async fn bind_all(config: &Config) -> anyhow::Result<Listeners> {
    let mut tcp = Vec::with_capacity(config.tcp_upstreams.len());
    for up in &config.tcp_upstreams {
        tcp.push((up.clone(), bind(names::TCP_UPSTREAM, up.listen).await?));
    }
    Ok(Listeners {
        admin: bind_opt(names::ADMIN, config.admin).await?,
        inbound: bind_opt(names::INBOUND, config.inbound).await?,
        outbound: bind_opt(names::OUTBOUND, config.outbound).await?,
        listen: bind_opt(names::LISTEN, config.listen).await?,
        https: bind_opt(names::TLS_LISTEN, config.https.as_ref().map(|h| h.listen)).await?,
        tcp,
        transparent_outbound: bind_opt(names::TRANSPARENT_OUTBOUND, config.transparent.outbound)
            .await?,
        inbound_capture: bind_opt(names::INBOUND_CAPTURE, config.transparent.inbound_capture)
            .await?,
    })
}

/// `mycel-proxy ready admin=<addr> inbound=<addr> outbound=<addr>`, with
/// actual bound addresses (port 0 resolved) and absent ones left out.
fn ready_line(l: &Listeners) -> String {
    let mut line = String::from("mycel-proxy ready");
    for (name, listener) in [
        ("admin", &l.admin),
        ("inbound", &l.inbound),
        ("outbound", &l.outbound),
        ("listen", &l.listen),
        ("https", &l.https),
        ("transparent_outbound", &l.transparent_outbound),
        ("inbound_capture", &l.inbound_capture),
    ] {
        if let Some(addr) = listener.as_ref().and_then(|x| x.local_addr().ok()) {
            line.push_str(&format!(" {name}={addr}"));
        }
    }
    line
}

/// What this proxy tells the controller in `Hello`: its workload, and a
/// proxy ID unique to this process (the name plus a random suffix), stable
/// across reconnects.
fn hello_params(config: &Config) -> HelloParams {
    let w = &config.workload;
    let suffix: u32 = rand::random();
    HelloParams {
        proxy_id: format!("{}-{suffix:08x}", w.name),
        workload: pb::Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            service_account: w.service_account.clone(),
            labels: w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            address: w.address.to_string(),
            mesh_port: u32::from(config.mesh_port()),
            ports: w
                .app_ports
                .iter()
                .map(|p| pb::WorkloadPort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: p.protocol.to_proto() as i32,
                })
                .collect(),
            ready: false,
            zone: w.zone.clone().unwrap_or_default(),
        },
        register: config.mode == Mode::Sidecar,
        mode: config.mode.as_str().to_string(),
        gateway: config.gateway.clone().unwrap_or_default(),
    }
}

async fn wait_for_cert(identity: &IdentityState) {
    let mut changes = identity.changes();
    while !identity.has_cert() {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the proxy until a `shutdown()` future completes (then drains for
/// at most the shutdown grace, or until a second one completes) or a part
/// of it fails.
pub async fn run<F: Future<Output = ()>>(
    config: Config,
    shutdown: impl Fn() -> F,
) -> anyhow::Result<()> {
    tracing::info!(
        config = %serde_json::to_string(&config).unwrap_or_default(),
        "mycel-proxy starting"
    );
    let config = Arc::new(config);
    let expected = SpiffeId::new(
        &config.trust_domain,
        &config.workload.namespace,
        &config.workload.service_account,
    )
    .context("this proxy's SPIFFE ID")?;

    let mut registry = Registry::default();
    let proxy_metrics = ProxyMetrics::new(&mut registry);
    let identity_metrics = IdentityMetrics::new(&mut registry);
    let discovery_metrics = DiscoveryMetrics::new(&mut registry);
    let conn_metrics = ConnMetrics::new(&mut registry);
    let observer = observer(&config, &proxy_metrics, &mut registry)?;
    let registry = Arc::new(registry);
    let drain = Shutdown::default();
    let server = Server::new(config.limits.clone(), conn_metrics, drain.drain_handle())
        .with_observer(observer);

    let identity = IdentityState::new();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let subscriptions = Subscriptions::new(config.subscriptions);
    // Transparent mode meets services by address only; these are known
    // (with their VIPs) before the app's first connection.
    for key in &config.transparent.subscribe {
        subscriptions.pin(key);
    }
    let discovery = Discovery::new(snap_rx, subscriptions.clone());
    let status = Arc::new(DiscoveryStatus::default());
    let mut tasks = JoinSet::new();
    // Set when the proxy reports to a controller as an endpoint.
    let mut withdrawal: Option<Withdrawal> = None;
    let (admin_tx, admin_rx) = tokio::sync::oneshot::channel::<Option<SocketAddr>>();
    let mut admin_rx = Some(admin_rx);
    // A first certificate refused for good ends the proxy with that reason.
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();

    // Sources first: a bad file or root fails before any port is taken.
    // The static snapshot's sender is kept so the data path's watch stays open.
    let _static_sender = match &config.source {
        Source::Static { path } => {
            let file = static_file::load(path)?;
            let ids = &file.identity;
            let (cert, bundle) = load_static(&ids.cert, &ids.key, &ids.bundle, &expected)?;
            identity_metrics.loaded(cert.not_after_unix);
            identity.set_bundle(bundle);
            identity.set_cert(cert);
            snap_tx.send_replace(Arc::new(file.snapshot));
            status.mark_synced();
            Some(snap_tx)
        }
        Source::Controller {
            address,
            server_name,
            ca_root,
            token,
        } => {
            let roots = read_pem_certs(ca_root).context("--ca-root")?;
            // A token that cannot be read now will not be readable on retry
            // either; say so before reporting ready.
            match token.read() {
                Ok(t) if t.is_empty() => anyhow::bail!("the join token is empty ({token:?})"),
                Ok(_) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading the join token {token:?}"))
                }
            }
            let ca_tls = ControllerTls::for_certify(
                address,
                server_name,
                &roots,
                Some(ca_root),
                identity.clone(),
            )?;
            let manager = IdentityManager::new(
                GrpcCaClient::new(ca_tls, token.clone()),
                identity.clone(),
                expected,
                config.cert_ttl,
                identity_metrics,
            );
            tasks.spawn(async move {
                if let Err(e) = manager.run().await {
                    let _ =
                        fatal_tx.send(anyhow::Error::new(e).context("getting a first certificate"));
                    // Keep this task alive: the proxy ends through `fatal_rx`.
                    std::future::pending::<()>().await;
                }
            });

            let stream_tls = ControllerTls::new(
                address,
                server_name,
                &roots,
                Some(ca_root),
                Some(identity.clone()),
            )?;
            let app_ports = config.workload.app_ports.iter().map(|p| p.port).collect();
            let ready = readiness::watch_app(config.app_host, app_ports, identity.clone());
            let hello = hello_params(&config);
            let leave = Withdrawal::default();
            if hello.register {
                withdrawal = Some(leave.clone());
            }
            let client = DiscoveryClient::new(
                stream_tls,
                hello,
                snap_tx,
                subscriptions,
                identity.clone(),
                ready,
                status.clone(),
                discovery_metrics,
            )
            .with_withdrawal(leave);
            let id = identity.clone();
            let admin = admin_rx.take();
            // The stream authenticates with the workload certificate.
            tasks.spawn(async move {
                // The admin port is known only once bound (port 0 resolved),
                // which happens after this task is spawned.
                let admin = match admin {
                    Some(rx) => rx.await.ok().flatten(),
                    None => None,
                };
                wait_for_cert(&id).await;
                client.with_admin(admin).run().await;
            });
            None
        }
    };

    // Certificates are read before anything listens: a bad file stops the
    // start, naming it.
    let https = match &config.https {
        Some(h) => {
            let https = gateway::https::Https::load(h)
                .context("gateway HTTPS (--tls-cert, --tls-client-ca)")?;
            tasks.spawn(https.watch(proxy_metrics.clone()));
            // A Gateway's HTTPS listeners bring their own certificates,
            // served after the files.
            if let Some(key) = &config.gateway {
                tasks.spawn(https.follow_gateway(
                    discovery.clone(),
                    key.as_str().into(),
                    proxy_metrics.clone(),
                ));
            }
            Some(https)
        }
        None => None,
    };
    let cache = gateway::cache::Cache::new(gateway::cache::CacheConfig {
        max_bytes: config.cache_max_bytes,
        max_entry_bytes: config
            .cache_max_bytes
            .min(gateway::cache::DEFAULT_MAX_ENTRY_BYTES),
    })
    .context("gateway response cache (--cache-max-bytes)")?;
    let mut listeners = bind_all(&config).await?;
    let ready = ready_line(&listeners);
    let _ = admin_tx.send(listeners.admin.as_ref().and_then(|l| l.local_addr().ok()));
    if let Some(l) = listeners.admin.take() {
        let state = Arc::new(AdminState {
            config: config.clone(),
            identity: identity.clone(),
            discovery: discovery.clone(),
            status: status.clone(),
            registry,
        });
        tasks.spawn(admin::serve(l, state, server.clone()));
    }
    eprintln!("{ready}");
    tasks.spawn(crate::core::trim::release_freed_memory(
        config.memory_release_interval,
    ));

    tasks.spawn(serve_data_path(
        config.clone(),
        listeners,
        GatewayParts { https, cache },
        identity,
        discovery,
        proxy_metrics,
        server,
    ));

    tokio::select! {
        () = shutdown() => {
            if let Some(w) = &withdrawal {
                tokio::select! {
                    () = withdraw(w, &status) => {}
                    () = shutdown() => {
                        tracing::warn!("second stop signal; closing every connection");
                        return Ok(());
                    }
                }
            }
            let grace = config.limits.shutdown_grace;
            tracing::info!(?grace, "shutting down: no new connections; in-flight requests may finish");
            tokio::select! {
                drained = drain.drain(grace) => if drained {
                    tracing::info!("drained");
                } else {
                    tracing::warn!(?grace, "shutdown grace elapsed; closing the connections left");
                },
                () = shutdown() => tracing::warn!("second stop signal; closing the connections left"),
            }
            // Spans of the last requests are sent before the exit.
            mycel_telemetry::traces::flush(Duration::from_secs(2));
            Ok(())
        }
        Ok(e) = fatal_rx => Err(e),
        Some(ended) = tasks.join_next() => match ended {
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("a proxy task panicked: {e}")),
            _ => Err(anyhow::anyhow!("a proxy task stopped unexpectedly")),
        },
    }
}

/// Per-request telemetry: metrics always; spans when an OTLP endpoint is
/// set; an access log when asked for.
fn observer(
    config: &Config,
    metrics: &ProxyMetrics,
    registry: &mut Registry,
) -> anyhow::Result<Arc<Observer>> {
    mycel_telemetry::traces::stats().register(registry);
    let dropped = prometheus_client::metrics::counter::Counter::default();
    registry.register(
        "mycel_access_log_lines_dropped",
        "Access log lines not written: over --access-log-rate, or the writer was behind",
        dropped.clone(),
    );
    // The workload's name is the service a trace shows for its proxy.
    let service_name = match config.mode {
        Mode::Gateway => format!("{}-gateway", config.workload.name),
        Mode::Sidecar => format!("{}-proxy", config.workload.name),
    };
    let tracing = mycel_telemetry::traces::start("mycel-proxy", &service_name)
        .context("OpenTelemetry trace export (OTEL_* variables)")?
        .map(|tracer| Tracing::new(tracer, config.telemetry.trace_sampling));
    let access_log = match &config.telemetry.access_log {
        None => None,
        Some(target) => Some(
            AccessLog::open(target, config.telemetry.access_log_rate, dropped)
                .context("--access-log")?,
        ),
    };
    Ok(Observer::new(metrics.clone(), tracing, access_log))
}

/// Tells the controller this proxy is no longer a ready endpoint and, once
/// that is sent, gives peers a moment to hear of it; the listeners keep
/// accepting meanwhile, so a peer that still picks this proxy is served.
async fn withdraw(withdrawal: &Withdrawal, status: &DiscoveryStatus) {
    if !status.state().connected {
        // The controller unregistered this proxy when the stream ended, and
        // a stream that connects from now on says not ready.
        withdrawal.ask();
        return;
    }
    match withdrawal.withdraw(WITHDRAW_SEND_WAIT).await {
        Some(true) => {
            tracing::info!(settle = ?WITHDRAW_SETTLE, "reported not ready; letting peers drop this endpoint");
            tokio::time::sleep(WITHDRAW_SETTLE).await;
        }
        Some(false) => {}
        None => tracing::warn!(
            wait = ?WITHDRAW_SEND_WAIT,
            "could not report not ready to the controller; draining anyway"
        ),
    }
}

/// Waits for a certificate, then serves every data-path listener.
/// What the gateway's listeners are built with, made before anything
/// listens so a bad file or setting stops the start.
struct GatewayParts {
    https: Option<gateway::https::Https>,
    cache: gateway::cache::Cache,
}

async fn serve_data_path(
    config: Arc<Config>,
    l: Listeners,
    gateway_parts: GatewayParts,
    identity: Arc<IdentityState>,
    discovery: Discovery,
    metrics: ProxyMetrics,
    server: Server,
) {
    tokio::select! {
        () = wait_for_cert(&identity) => {}
        () = server.drain().signaled() => return,
    }
    tracing::info!("certificate held; serving mesh traffic");
    let mut set = JoinSet::new();
    if let Some(listener) = l.inbound {
        set.spawn(inbound::serve(
            listener,
            inbound::InboundContext {
                identity: identity.clone(),
                app_host: config.app_host,
                app_ports: config.workload.app_ports.iter().map(|p| p.port).collect(),
                metrics: metrics.clone(),
                app_pool_idle_timeout: config.limits.app_pool_idle_timeout,
                discovery: discovery.clone(),
            },
            server.clone(),
        ));
    }
    if let Some(listener) = l.inbound_capture {
        set.spawn(inbound::capture::serve(
            listener,
            inbound::capture::CaptureContext {
                mode: config.transparent.mtls_mode,
                app_ports: config.workload.app_ports.iter().map(|p| p.port).collect(),
                all_ports: config.transparent.capture_all_ports,
                metrics: metrics.clone(),
                orig: Arc::new(SockOpt),
                discovery: discovery.clone(),
            },
            server.clone(),
        ));
    }
    let outbound = Arc::new(Outbound::new(OutboundContext {
        identity,
        discovery,
        namespace: config.workload.namespace.clone(),
        cluster_domain: config.cluster_domain.clone(),
        metrics,
        pool: PoolSettings::from_limits(&config.limits),
        zone: config.workload.zone.clone().unwrap_or_default(),
    }));
    if let Some(listener) = l.outbound {
        set.spawn(outbound.clone().serve_http(listener, server.clone()));
    }
    if let Some(listener) = l.transparent_outbound {
        set.spawn(outbound.clone().serve_transparent(
            listener,
            Arc::new(SockOpt),
            TransparentOptions {
                unknown: config.transparent.unknown_destination,
                opaque_ports: config.transparent.opaque_ports.clone(),
            },
            server.clone(),
        ));
    }
    for (up, listener) in l.tcp {
        set.spawn(
            outbound
                .clone()
                .serve_tcp(listener, up.service, up.port, server.clone()),
        );
    }
    if config.mode == Mode::Gateway {
        let routes = match &config.gateway {
            Some(key) => gateway::RouteSource::Gateway(key.as_str().into()),
            None => gateway::RouteSource::Static(config.routes.clone().into()),
        };
        let https_port = l
            .https
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let redis = config.rate_limit_redis.as_ref().map(|addr| {
            gateway::ratelimit::GlobalLimiter::new(gateway::ratelimit::RedisConfig::new(addr))
        });
        let GatewayParts { https, cache } = gateway_parts;
        let gw = gateway::Gateway::with(routes, outbound.clone(), redis, cache);
        if let (Some(listener), Some(https)) = (l.https, &https) {
            set.spawn(gateway::https::serve(
                listener,
                https,
                gw.clone(),
                server.clone(),
            ));
        }
        match (l.listen, https_port) {
            (Some(listener), Some(port)) if config.https.as_ref().is_some_and(|h| h.redirect) => {
                set.spawn(gateway::https::redirect(
                    listener,
                    port,
                    outbound,
                    server.clone(),
                ));
            }
            (Some(listener), _) => {
                set.spawn(gateway::serve(listener, gw, server.clone()));
            }
            (None, _) => {}
        }
    }
    // The listeners run until the proxy drains; one ending before is logged.
    while let Some(ended) = set.join_next().await {
        if !server.drain().is_draining() {
            tracing::error!(result = ?ended.err(), "a data-path listener stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["mycel-proxy", "--static-config=/unused"];
        all.extend_from_slice(args);
        Config::from_args(all, &MapEnv::default()).unwrap()
    }

    #[test]
    fn hello_names_the_workload_and_registers_a_sidecar() {
        let c = config(&[
            "--workload=catalog",
            "--namespace=shop",
            "--service-account=catalog",
            "--inbound=127.0.0.1:15006",
            "--app-port=http:8080",
            "--label=app=catalog",
        ]);
        let h = hello_params(&c);
        assert!(h.proxy_id.starts_with("catalog-"), "{}", h.proxy_id);
        assert_ne!(h.proxy_id, hello_params(&c).proxy_id, "one ID per process");
        assert!(h.register);
        assert_eq!(h.mode, "sidecar");
        let w = &h.workload;
        assert_eq!((w.name.as_str(), w.namespace.as_str()), ("catalog", "shop"));
        assert_eq!(w.service_account, "catalog");
        assert_eq!(w.labels.get("app").map(String::as_str), Some("catalog"));
        assert_eq!(w.mesh_port, 15006);
        assert_eq!(w.ports.len(), 1);
        assert_eq!((w.ports[0].name.as_str(), w.ports[0].port), ("http", 8080));
        assert!(!w.ready);
    }
}
