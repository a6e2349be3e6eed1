//! Wiring: CA → serving certificate → gRPC server (Identity, Discovery) →
//! local mesh config source → index → admin server. The only module that
//! knows every other one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mycel_api::v1::discovery_server::DiscoveryServer;
use mycel_api::v1::identity_server::IdentityServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;

use crate::admin::{self, AdminState};
use crate::ca::rotation::leaves::LeafTracker;
use crate::ca::rotation::store;
use crate::ca::tokens::TokenStore;
use crate::ca::CaFiles;
use crate::grpc::{DiscoveryService, IdentityService};
use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;
use crate::registry::ProxyRegistry;
use crate::rotation::{DriverParts, RotationDriver};
use crate::serving::{self, ClientRoots, Limits, ServingCerts};
use crate::sources::admission::{ClusterPolicy, RegistrationPolicy, TokenPolicy};
use crate::sources::k8s::owner::{self, Ownership};
use crate::sources::k8s::{self, review::TokenReviewer, Cluster, ClusterSettings};
use crate::sources::local::{self, MeshConfigWatcher, Poll};

pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:15010";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15014";
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a graceful shutdown waits for connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the controller needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub trust_domain: String,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Serve `/dashboard` on the admin port.
    pub dashboard: bool,
    pub mesh_config: Option<PathBuf>,
    pub cert_ttl: Duration,
    /// A user-given CA; `None` generates (or reloads) one in the data dir.
    pub ca_files: Option<CaFiles>,
    /// Lifetime of the gRPC serving certificate, renewed at 70%.
    pub serving_cert_ttl: Duration,
    /// Lifetime of each issuer (intermediate), rotated at 75%.
    pub issuer_ttl: Duration,
    /// How long a trust-anchor rotation keeps both roots trusted after
    /// new leaves switch to the new root.
    pub rotation_overlap: Duration,
    /// Limits of the gRPC port.
    pub limits: Limits,
    /// Certify rate limits (global and per source IP).
    pub certify_limits: crate::grpc::ratelimit::CertifyLimits,
    /// On-demand subscriptions one proxy may hold.
    pub max_subscriptions: usize,
    /// Who may call a workload no ALLOW policy selects.
    pub default_inbound_policy: mycel_api::authz::DefaultPolicy,
    /// The namespaces a proxy may discover besides its own.
    pub discovery_namespaces: crate::index::Namespaces,
    /// Follow a Kubernetes API server (in-cluster config or KUBECONFIG).
    pub kubernetes: Option<KubernetesConfig>,
}

/// The Kubernetes source's settings.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// The mesh (mTLS) port of every injected proxy.
    pub proxy_mesh_port: u16,
    /// A kubeconfig file; `None` infers (in-cluster, KUBECONFIG, ~/.kube).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace the controller runs in (its Services' DNS names).
    pub namespace: String,
    /// Serve the sidecar-injection webhook here (HTTPS, path `/inject`).
    pub webhook_addr: Option<SocketAddr>,
    /// MutatingWebhookConfiguration whose caBundle is kept on the mesh CA,
    /// and which owns the objects the controller creates.
    pub webhook_config: Option<String>,
    /// What the injector writes into Pods.
    pub inject: mycel_inject::InjectConfig,
    /// Keep the mesh CA in this Secret (shared by every replica).
    pub ca_secret: Option<SecretRef>,
    /// How often the CA Secret is read while running (a new root there
    /// starts a rotation).
    pub ca_secret_poll: Duration,
    /// The CA Secret is the user's: never owned, so uninstalling keeps it.
    pub keep_ca_secret: bool,
    /// Publish the trust bundle into meshed namespaces.
    pub trust_bundle: Option<TrustBundleConfig>,
    /// Create this GatewayClass when it is missing.
    pub gateway_class: Option<String>,
}

/// A namespaced object's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// Where the trust bundle is published.
#[derive(Clone, Debug)]
pub struct TrustBundleConfig {
    /// The ConfigMap's name in every meshed namespace.
    pub configmap: String,
    /// A namespace is meshed when it has this label with value `enabled`.
    pub namespace_label: String,
}

impl Config {
    /// The defaults of the CLI for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 15010)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 15014)),
            dashboard: false,
            mesh_config: None,
            cert_ttl: DEFAULT_CERT_TTL,
            ca_files: None,
            serving_cert_ttl: crate::ca::authority::DEFAULT_SERVING_TTL,
            issuer_ttl: crate::ca::authority::DEFAULT_ISSUER_TTL,
            rotation_overlap: crate::ca::rotation::DEFAULT_OVERLAP,
            limits: Limits::default(),
            certify_limits: Default::default(),
            max_subscriptions: crate::grpc::discovery::DEFAULT_MAX_SUBSCRIPTIONS,
            default_inbound_policy: Default::default(),
            discovery_namespaces: crate::index::Namespaces::All,
            kubernetes: None,
        }
    }
}

/// Binds `addr`, naming it in the error.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!("{what}: address {addr} already in use"),
        _ => anyhow::anyhow!("{what}: cannot listen on {addr}: {e}"),
    })
}

pub struct Controller;

/// Who owns the objects the controller creates, as the API server has it
/// at start: nothing to own them without `--webhook-config`. While the
/// configuration is absent or cannot be read, a CA Secret created then gets
/// its owner at the next start, and trust bundles wait for
/// [`owner::follow_owner`] to find it (warned).
async fn initial_ownership(k8s: &KubernetesConfig, client: &kube::Client) -> Ownership {
    let Some(name) = &k8s.webhook_config else {
        return Ownership::Leave;
    };
    match owner::current(client, name).await {
        Ok(Ownership::Absent(_)) => {
            tracing::warn!(webhook_config = %name, "MutatingWebhookConfiguration not found: a CA Secret created now gets no owner until a restart; trust bundles wait for it");
            Ownership::Absent(name.clone())
        }
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "a CA Secret created now gets no owner until a restart; trust bundles wait for the webhook configuration");
            Ownership::Absent(name.clone())
        }
    }
}

/// Starts the injection webhook (and the namespace watch it reads) and the
/// task that keeps its configuration's caBundle on the live trust bundle
/// (`roots`), telling `applied` when it holds them.
async fn start_webhook(
    k8s: &KubernetesConfig,
    client: &kube::Client,
    roots: &watch::Receiver<String>,
    applied: watch::Sender<Option<String>>,
    certs: Arc<ServingCerts>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    let mut tasks = Vec::new();
    if let Some(name) = &k8s.webhook_config {
        tasks.push(tokio::spawn(crate::webhook::ca_bundle::keep_ca_bundle(
            client.clone(),
            name.clone(),
            roots.clone(),
            Duration::from_secs(60),
            shutdown.clone(),
            applied,
        )));
    }
    let Some(addr) = k8s.webhook_addr else {
        return Ok(tasks);
    };
    mycel_inject::check_config(&k8s.inject).context("--inject-config")?;
    let (namespaces, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(
            kube::Api::<Namespace>::all(client.clone()),
            Default::default(),
        ),
    )
    .default_backoff();
    let mut stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        tokio::pin!(stream);
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Err(e)) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                    Some(Ok(_)) => {}
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }));
    let listener = bind(addr, "webhook").await?;
    let tls = serving::webhook_server_config(certs).context("configuring webhook TLS")?;
    let state = Arc::new(crate::webhook::serve::WebhookState {
        config: k8s.inject.clone(),
        namespaces,
    });
    tracing::info!(webhook_addr = %listener.local_addr()?, "injection webhook serving");
    tasks.push(tokio::spawn(crate::webhook::serve(
        listener,
        TlsAcceptor::from(tls),
        state,
        crate::webhook::WebhookLimits::default(),
        shutdown.clone(),
    )));
    Ok(tasks)
}

/// A running controller.
pub struct RunningController {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    root_pem: String,
    index: SharedIndex,
    registry: Arc<ProxyRegistry>,
    shutdown: watch::Sender<bool>,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Starts every part and returns once both ports listen.
    pub async fn start(config: Config) -> anyhow::Result<RunningController> {
        // tonic clients in the same process (tests) use the default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if config.cert_ttl < crate::ca::authority::MIN_TTL {
            bail!(
                "--cert-ttl {} is shorter than the minimum of {}",
                humantime::format_duration(config.cert_ttl),
                humantime::format_duration(crate::ca::authority::MIN_TTL)
            );
        }
        if config.serving_cert_ttl < crate::ca::authority::MIN_TTL {
            bail!(
                "--serving-cert-ttl {} is shorter than the minimum of {}",
                humantime::format_duration(config.serving_cert_ttl),
                humantime::format_duration(crate::ca::authority::MIN_TTL)
            );
        }
        // An issuer must outlive the leaves it signs, or every leaf would be
        // cut short at its expiry.
        if config.issuer_ttl <= config.cert_ttl.max(config.serving_cert_ttl) {
            bail!(
                "--issuer-ttl {} must be longer than --cert-ttl {} and --serving-cert-ttl {}",
                humantime::format_duration(config.issuer_ttl),
                humantime::format_duration(config.cert_ttl),
                humantime::format_duration(config.serving_cert_ttl)
            );
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;

        // The client comes first: with --ca-secret, the CA itself is read
        // from (or stored into) the API server.
        let kube_client = match &config.kubernetes {
            Some(k8s) => Some(k8s::client(k8s.kubeconfig.as_deref()).await?),
            None => None,
        };
        let ca_secret = config
            .kubernetes
            .as_ref()
            .and_then(|k| k.ca_secret.as_ref());
        // Known before the CA Secret is written, so that a new one is
        // created owned; followed afterwards (owner.rs).
        let ownership = match (&config.kubernetes, &kube_client) {
            (Some(k8s), Some(client)) => initial_ownership(k8s, client).await,
            _ => Ownership::Leave,
        };
        let rotation_state;
        let mut authority = match (&config.ca_files, ca_secret, &kube_client) {
            (Some(files), _, _) => {
                let (authority, state) = store::load_ca(&store::LoadSettings {
                    data_dir: &config.data_dir,
                    trust_domain: &config.trust_domain,
                    cert_ttl: config.cert_ttl,
                    issuer_ttl: config.issuer_ttl,
                    files: Some(files),
                })
                .context("loading the CA")?;
                rotation_state = state;
                authority
            }
            (None, Some(secret), Some(client)) => {
                let secret_ownership = match &config.kubernetes {
                    Some(k8s) => k8s::ca_secret::ownership(
                        k8s.webhook_config.as_deref(),
                        k8s.keep_ca_secret,
                        &ownership,
                    ),
                    None => Ownership::Leave,
                };
                let source = k8s::ca_secret::sync_ca_secret(
                    client.clone(),
                    &k8s::ca_secret::CaSecretConfig {
                        namespace: &secret.namespace,
                        name: &secret.name,
                        data_dir: &config.data_dir,
                        trust_domain: &config.trust_domain,
                        cert_ttl: config.cert_ttl,
                        issuer_ttl: config.issuer_ttl,
                        ownership: &secret_ownership,
                        poll: config
                            .kubernetes
                            .as_ref()
                            .map_or(k8s::ca_secret::follow::DEFAULT_POLL, |k| k.ca_secret_poll),
                        overlap: config.rotation_overlap,
                    },
                )
                .await?;
                tracing::info!(origin = ?source.origin, secret = %format!("{}/{}", secret.namespace, secret.name), "mesh CA loaded");
                rotation_state = source.resume;
                source.authority
            }
            _ => {
                let (authority, state) = store::load_ca(&store::LoadSettings {
                    data_dir: &config.data_dir,
                    trust_domain: &config.trust_domain,
                    cert_ttl: config.cert_ttl,
                    issuer_ttl: config.issuer_ttl,
                    files: None,
                })
                .context("loading the CA")?;
                rotation_state = state;
                authority
            }
        };
        if let Some(k8s) = &config.kubernetes {
            // The API server calls the webhook by its Service's name.
            authority.add_serving_names([
                format!("mycel-controller.{}.svc", k8s.namespace),
                format!("mycel-webhook.{}.svc", k8s.namespace),
            ]);
        }
        let authority = Arc::new(authority);
        // The live trust bundle, for what publishes it to Kubernetes.
        let (roots_tx, roots_rx) =
            watch::channel(crate::rotation::bundle_pem(&authority.trust_bundle_der()));
        let (configmaps_tx, configmaps_rx) = watch::channel(None);
        let (webhook_tx, webhook_rx) = watch::channel(None);
        let serving = authority
            .serving_cert_for(config.serving_cert_ttl)
            .context("issuing the controller's serving certificate")?;
        let tokens = Arc::new(TokenStore::new(&config.data_dir).context("loading join tokens")?);

        let index = SharedIndex::new(Index::new());
        index.lock().set_max_subscriptions(config.max_subscriptions);
        index
            .lock()
            .set_discovery_namespaces(config.discovery_namespaces.clone());
        index.lock().set_authorization(crate::authz::Authorization {
            default: config.default_inbound_policy,
            // In a cluster, policies in the controller's own namespace
            // apply mesh-wide.
            root_namespace: config.kubernetes.as_ref().map_or_else(
                || crate::authz::DEFAULT_ROOT_NAMESPACE.to_string(),
                |k| k.namespace.clone(),
            ),
            policies: Vec::new(),
            peer: Vec::new(),
        });
        index.lock().set_trust_bundle(authority.trust_bundle_der());
        let metrics = Arc::new(Metrics::new());
        metrics.set_serving_expiry(serving.not_after.unix_timestamp());
        metrics.set_issuer_expiry(authority.issuer_not_after().unix_timestamp());
        metrics.set_root_expiry(authority.root_not_after().unix_timestamp());
        let registry = Arc::new(ProxyRegistry::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        if let Some(path) = &config.mesh_config {
            let mut watcher = MeshConfigWatcher::new(path);
            match watcher.poll() {
                Poll::Changed(Ok(services)) => {
                    local::apply(&index, services)
                        .with_context(|| format!("mesh config {}", path.display()))?;
                }
                Poll::Changed(Err(e)) => return Err(e.into()),
                Poll::Unchanged => bail!("mesh config {}: cannot read it", path.display()),
            }
            tasks.push(tokio::spawn(local::run(
                watcher,
                index.clone(),
                shutdown_rx.clone(),
            )));
        }

        let mut reviewer = None;
        let mut synced = None;
        if let (Some(k8s), Some(client)) = (&config.kubernetes, &kube_client) {
            let (tx, rx) = watch::channel(false);
            let cluster = Cluster::new(ClusterSettings {
                trust_domain: config.trust_domain.clone(),
                mesh_port: k8s.proxy_mesh_port,
            });
            let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
            let (route_status_tx, route_status_rx) = tokio::sync::mpsc::unbounded_channel();
            let (authz_status_tx, authz_status_rx) = tokio::sync::mpsc::unbounded_channel();
            let (peer_status_tx, peer_status_rx) = tokio::sync::mpsc::unbounded_channel();
            let (gateway_policy_status_tx, gateway_policy_status_rx) =
                tokio::sync::mpsc::unbounded_channel();
            tasks.push(tokio::spawn(k8s::watch::run(
                client.clone(),
                cluster,
                index.clone(),
                k8s::watch::StatusSinks {
                    policies: status_tx,
                    routes: route_status_tx,
                    authz: authz_status_tx,
                    peer_auth: peer_status_tx,
                    gateway_policies: gateway_policy_status_tx,
                },
                tx,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(k8s::policies::write::run::<
                mycel_crds::TrafficPolicy,
                _,
            >(
                client.clone(),
                status_rx,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(k8s::policies::write::run::<
                mycel_crds::AuthorizationPolicy,
                _,
            >(
                client.clone(),
                authz_status_rx,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(k8s::policies::write::run::<
                mycel_crds::PeerAuthentication,
                _,
            >(
                client.clone(),
                peer_status_rx,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(k8s::policies::write::run::<
                mycel_crds::GatewayPolicy,
                _,
            >(
                client.clone(),
                gateway_policy_status_rx,
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(k8s::routes::write::run(
                client.clone(),
                route_status_rx,
                shutdown_rx.clone(),
            )));
            reviewer = Some(TokenReviewer::new(client.clone(), &config.trust_domain));
            synced = Some(rx);
            let (owner_tx, owner_rx) = watch::channel(ownership);
            if let Some(name) = &k8s.webhook_config {
                tasks.push(tokio::spawn(owner::follow_owner(
                    client.clone(),
                    name.clone(),
                    owner_tx,
                    owner::DEFAULT_RESYNC,
                    shutdown_rx.clone(),
                )));
            }
            if let Some(class) = &k8s.gateway_class {
                tasks.push(tokio::spawn(k8s::gateway_class::keep(
                    client.clone(),
                    class.clone(),
                    owner_rx.clone(),
                    shutdown_rx.clone(),
                )));
            }
            if let Some(bundle) = &k8s.trust_bundle {
                let (client, bundle) = (client.clone(), bundle.clone());
                // Every root proxies must trust, as the stream pushes them.
                let channels = k8s::trust_bundle::Channels {
                    roots: roots_rx.clone(),
                    owner: owner_rx,
                    shutdown: shutdown_rx.clone(),
                    published: configmaps_tx,
                };
                tasks.push(tokio::spawn(async move {
                    let at = k8s::trust_bundle::Publish {
                        configmap: &bundle.configmap,
                        namespace_label: &bundle.namespace_label,
                        resync: k8s::trust_bundle::DEFAULT_RESYNC,
                    };
                    k8s::trust_bundle::publish_live_trust_bundle(client, &at, channels).await;
                }));
            }
        }

        let grpc_listener = bind(config.grpc_addr, "gRPC").await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let certs = ServingCerts::new(&serving).context("the serving certificate")?;
        let client_roots =
            ClientRoots::new(&authority.trust_bundle_der()).context("configuring gRPC TLS")?;
        let tls = serving::server_config_with(certs.clone(), client_roots.clone())
            .context("configuring gRPC TLS")?;
        let leaves = Arc::new(LeafTracker::default());
        // With a CA kept in a Kubernetes Secret the replicas share the
        // rotation through it; the driver follows (ca_secret::follow).
        let rotation = RotationDriver::new(
            DriverParts {
                data_dir: config.data_dir.clone(),
                issuer_ttl: config.issuer_ttl,
                serving_ttl: config.serving_cert_ttl,
                overlap: config.rotation_overlap,
                authority: authority.clone(),
                index: index.clone(),
                registry: registry.clone(),
                leaves: leaves.clone(),
                certs: certs.clone(),
                client_roots,
                metrics: metrics.clone(),
                roots: roots_tx,
                shared: ca_secret.map(|s| format!("{}/{}", s.namespace, s.name)),
            },
            rotation_state,
        );
        tasks.push(tokio::spawn(rotation.clone().run(shutdown_rx.clone())));
        tasks.push(tokio::spawn(serving::renew_serving_cert(
            authority.clone(),
            certs.clone(),
            serving.not_after,
            config.serving_cert_ttl,
            metrics.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(serving::rotate_issuer(
            authority.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        )));
        if let (Some(k8s), Some(client)) = (&config.kubernetes, &kube_client) {
            let published = k8s::ca_secret::follow::Published {
                configmaps: k8s.trust_bundle.as_ref().map(|_| configmaps_rx),
                webhook: k8s.webhook_config.as_ref().map(|_| webhook_rx),
            };
            tasks.extend(
                start_webhook(
                    k8s,
                    client,
                    &roots_rx,
                    webhook_tx,
                    certs.clone(),
                    &shutdown_rx,
                )
                .await?,
            );
            if let Some(secret) = ca_secret {
                tasks.push(tokio::spawn(k8s::ca_secret::follow::follow_ca_secret(
                    client.clone(),
                    k8s::ca_secret::follow::FollowConfig {
                        namespace: secret.namespace.clone(),
                        name: secret.name.clone(),
                        poll: k8s.ca_secret_poll,
                        overlap: config.rotation_overlap,
                    },
                    rotation.clone(),
                    published,
                    shutdown_rx.clone(),
                )));
            }
        }
        let mut identity = IdentityService::new(authority.clone(), tokens.clone(), metrics.clone())
            .with_limits(config.certify_limits)
            .with_leaf_tracker(leaves);
        if let Some(reviewer) = reviewer {
            identity = identity.with_token_review(reviewer);
        }
        let policy: Arc<dyn RegistrationPolicy> = match config.kubernetes {
            Some(_) => Arc::new(ClusterPolicy::new(tokens)),
            None => Arc::new(TokenPolicy::new(tokens)),
        };
        let discovery = DiscoveryService::new(
            index.clone(),
            registry.clone(),
            metrics.clone(),
            &config.trust_domain,
            policy,
        )
        .with_shutdown(shutdown_rx.clone());
        let limits = &config.limits;
        let router = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .timeout(limits.request_timeout)
            .add_service(IdentityServer::new(identity))
            .add_service(DiscoveryServer::new(discovery));
        let mut grpc_shutdown = shutdown_rx.clone();
        let incoming = serving::incoming(
            grpc_listener,
            TlsAcceptor::from(tls),
            limits,
            metrics.clone(),
            shutdown_rx.clone(),
        );
        let grpc = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_shutdown.wait_for(|s| *s).await;
                })
                .await
        });

        let ready = Arc::new(AtomicBool::new(false));
        let admin_listener = bind(config.admin_addr, "admin").await?;
        let admin_addr = admin_listener.local_addr()?;
        let state = Arc::new(AdminState {
            metrics,
            registry: registry.clone(),
            index: index.clone(),
            ready: ready.clone(),
            rotation: Some(admin::RotationAdmin { driver: rotation }),
            dashboard: config
                .dashboard
                .then(|| Arc::new(crate::dashboard::Dashboard::new(registry.clone()))),
        });
        tasks.push(tokio::spawn(admin::serve(
            admin_listener,
            state,
            admin::AdminLimits::default(),
            shutdown_rx.clone(),
        )));
        let shutdown_rx_admin = shutdown_rx;
        match synced {
            // Ready once every watch has listed its objects: before that the
            // index would tell proxies services have no endpoints.
            Some(mut synced) => {
                let mut stop = shutdown_rx_admin.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        r = synced.wait_for(|s| *s) => {
                            if r.is_ok() {
                                tracing::info!("kubernetes objects listed; ready");
                                ready.store(true, Ordering::Release);
                            }
                        }
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }));
            }
            None => ready.store(true, Ordering::Release),
        }
        tracing::info!(%grpc_addr, %admin_addr, trust_domain = %config.trust_domain, "controller serving");

        Ok(RunningController {
            grpc_addr,
            admin_addr,
            root_pem: authority.root_pem(),
            index,
            registry,
            shutdown: shutdown_tx,
            grpc: Some(grpc),
            tasks,
        })
    }
}

impl RunningController {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The trust anchor clients pin to reach the gRPC port.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The live index (for tests and diagnostics).
    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    pub fn registry(&self) -> &Arc<ProxyRegistry> {
        &self.registry
    }

    /// Stops accepting, ends discovery streams, and waits (bounded) for
    /// connections to drain.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let result = match self.grpc {
            None => Ok(()),
            Some(mut grpc) => match tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc).await {
                Ok(joined) => joined.context("gRPC server task")?.context("gRPC server"),
                Err(_) => {
                    grpc.abort();
                    tracing::warn!("gRPC connections did not drain in time; closed them");
                    Ok(())
                }
            },
        };
        for t in self.tasks {
            if tokio::time::timeout(DRAIN_TIMEOUT, t).await.is_err() {
                tracing::warn!("a background task did not stop in time");
            }
        }
        result
    }

    /// Waits until the gRPC server stops by itself (an error), which a
    /// healthy controller never does.
    pub async fn wait_for_failure(&mut self) -> anyhow::Result<()> {
        let Some(grpc) = self.grpc.as_mut() else {
            return std::future::pending().await;
        };
        let joined = grpc.await;
        self.grpc = None;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e).context("gRPC server"),
            Err(e) => Err(e).context("gRPC server task"),
        }
    }
}
