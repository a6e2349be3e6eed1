//! Every setting of `mycel-proxy`, read once at start from flags (clap) and
//! the environment (through [`Env`], so tests pass a map and never touch the
//! process environment).
//!
//! The flag names are a contract other code already uses; they live in
//! [`names`] and nowhere else. Values are parsed into typed settings here, so
//! the rest of the proxy never sees a raw string, and a bad value is reported
//! naming the flag and the value.

mod parse;
#[cfg(test)]
mod tests;

use mycel_api::names::NameKind;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

pub use parse::{AppPort, GatewayRoute, TcpUpstream};

/// Flag and environment names, in one place.
pub mod names {
    pub const MODE: &str = "mode";
    pub const CONTROLLER: &str = "controller";
    pub const CONTROLLER_NAME: &str = "controller-name";
    pub const CA_ROOT: &str = "ca-root";
    pub const TOKEN_FILE: &str = "token-file";
    pub const STATIC_CONFIG: &str = "static-config";
    pub const WORKLOAD: &str = "workload";
    pub const NAMESPACE: &str = "namespace";
    pub const SERVICE_ACCOUNT: &str = "service-account";
    pub const LABEL: &str = "label";
    pub const APP_PORT: &str = "app-port";
    pub const ADDRESS: &str = "address";
    pub const APP_HOST: &str = "app-host";
    pub const INBOUND: &str = "inbound";
    pub const OUTBOUND: &str = "outbound";
    pub const TCP_UPSTREAM: &str = "tcp-upstream";
    pub const ADMIN: &str = "admin";
    pub const CERT_TTL: &str = "cert-ttl";
    pub const TRUST_DOMAIN: &str = "trust-domain";
    pub const CLUSTER_DOMAIN: &str = "cluster-domain";
    pub const ZONE: &str = "zone";
    pub const LISTEN: &str = "listen";
    pub const ROUTE: &str = "route";
    pub const TRANSPARENT_OUTBOUND: &str = "transparent-outbound";
    pub const INBOUND_CAPTURE: &str = "inbound-capture";
    pub const MTLS_MODE: &str = "mtls-mode";
    pub const UNKNOWN_DESTINATION: &str = "unknown-destination";
    pub const SUBSCRIBE: &str = "subscribe";
    pub const OPAQUE_PORT: &str = "opaque-port";
    pub const WORKER_THREADS: &str = "worker-threads";
    pub const MAX_SUBSCRIPTIONS: &str = "max-subscriptions";
    pub const SUBSCRIPTION_IDLE: &str = "subscription-idle";
    pub const CAPTURE_ALL_PORTS: &str = "capture-all-ports";
    pub const MAX_CONNECTIONS: &str = "max-connections";
    pub const MAX_HEADER_BYTES: &str = "max-header-bytes";
    pub const HEADER_READ_TIMEOUT: &str = "header-read-timeout";
    pub const IDLE_TIMEOUT: &str = "idle-timeout";
    pub const REQUEST_TIMEOUT: &str = "request-timeout";
    pub const MESH_KEEPALIVE: &str = "mesh-keepalive";
    pub const APP_POOL_IDLE_TIMEOUT: &str = "app-pool-idle-timeout";
    pub const SHUTDOWN_GRACE: &str = "shutdown-grace";

    /// Join token (or service-account token) when no `--token-file` is given.
    pub const ENV_TOKEN: &str = "MYCEL_TOKEN";
    /// Log filter (tracing `EnvFilter` syntax).
    pub const ENV_LOG: &str = "MYCEL_LOG";

    pub const DEFAULT_CONTROLLER_NAME: &str = "mycel-controller.mycel-system.svc";
    pub const DEFAULT_DOMAIN: &str = "cluster.local";
}

/// Where configuration strings come from; a trait so tests use a map.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed environment, for tests and embedding.
#[derive(Clone, Debug, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown flag, missing value, `--help`, `--version`: clap's own report.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("--{flag} {value:?}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
}

impl ConfigError {
    pub(crate) fn value(flag: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self::Value {
            flag,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sidecar,
    Gateway,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sidecar => "sidecar",
            Mode::Gateway => "gateway",
        }
    }
}

/// What the inbound capture listener does with plaintext from clients
/// outside the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Refused: only mesh (mTLS) traffic reaches the app.
    Strict,
    /// Passed to the app and counted as plaintext.
    Permissive,
}

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

/// Transparent mode (iptables capture by `mycel-proxy init`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransparentConfig {
    /// Listener for captured outbound connections.
    pub outbound: Option<SocketAddr>,
    /// Listener for captured inbound (non-mesh) connections.
    pub inbound_capture: Option<SocketAddr>,
    pub mtls_mode: MtlsMode,
    pub unknown_destination: UnknownDestination,
    /// Services subscribed at start, so their addresses (VIPs) are known
    /// before the app's first connection names only an IP.
    pub subscribe: Vec<String>,
    /// Ports whose traffic is tunnelled as opaque TCP without sniffing.
    pub opaque_ports: Vec<u16>,
    /// Permissive inbound capture passes any port, not only declared app
    /// ports.
    pub capture_all_ports: bool,
}

/// Connection-level limits and timeouts, the same for every listener (see
/// the "Limits and timeouts" table in docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Connections one listener serves at once; more wait to be accepted.
    pub max_connections: usize,
    /// Largest request header list (HTTP/2 measure: names, values and 32
    /// bytes per field) a first hop lets in; larger gets 431.
    pub max_header_bytes: usize,
    /// An HTTP/1 client must send a whole request head within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed
    /// (gracefully: requests in progress finish).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time for the response headers of a request (app or peer); the body
    /// after them is not limited, so streams and tunnels are not cut.
    /// `None`: no limit.
    #[serde(with = "humantime_opt")]
    pub request_timeout: Option<Duration>,
    /// HTTP/2 PING interval on pooled mesh connections; a peer that does
    /// not answer within the same time is dropped.
    #[serde(with = "humantime_serde")]
    pub mesh_keepalive: Duration,
    /// Idle pooled connections to the app are closed after this.
    #[serde(with = "humantime_serde")]
    pub app_pool_idle_timeout: Duration,
    /// On SIGTERM, how long in-flight requests and tunnels may finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Some(Duration::from_secs(60)),
            mesh_keepalive: Duration::from_secs(20),
            app_pool_idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Where the join token comes from. A file is re-read on every request, so
/// a rotated (projected) token is picked up without a restart.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl Serialize for TokenSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenSource::File(p) => s.collect_str(&format_args!("file:{}", p.display())),
            TokenSource::Value(_) => s.serialize_str(&format!("env:{}", names::ENV_TOKEN)),
        }
    }
}

impl TokenSource {
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            TokenSource::File(p) => Ok(std::fs::read_to_string(p)?.trim().to_string()),
            TokenSource::Value(v) => Ok(v.clone()),
        }
    }
}

/// Where the certificate and the service view come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Controller {
        /// `HOST:PORT`.
        address: String,
        /// TLS name the controller's certificate must carry.
        server_name: String,
        ca_root: PathBuf,
        token: TokenSource,
    },
    Static {
        path: PathBuf,
    },
}

/// Who this proxy speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadConfig {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub app_ports: Vec<AppPort>,
    /// Advertised to peers as where the mesh port is reached.
    pub address: IpAddr,
    pub zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    pub mode: Mode,
    pub source: Source,
    pub workload: WorkloadConfig,
    pub app_host: IpAddr,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub tcp_upstreams: Vec<TcpUpstream>,
    pub admin: Option<SocketAddr>,
    /// Requested certificate lifetime; `None` leaves it to the controller.
    #[serde(with = "humantime_opt")]
    pub cert_ttl: Option<Duration>,
    pub trust_domain: String,
    pub cluster_domain: String,
    pub listen: Option<SocketAddr>,
    pub routes: Vec<GatewayRoute>,
    pub transparent: TransparentConfig,
    /// Runtime worker threads: one for a sidecar unless asked (a request
    /// that stays on one thread wakes no other; measured in
    /// docs/benchmarks.md), every core for a gateway.
    pub worker_threads: usize,
    /// Cap and idle expiry of on-demand discovery subscriptions.
    pub subscriptions: crate::discovery::SubscriptionLimits,
    pub limits: Limits,
}

mod humantime_serde {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }
}

mod humantime_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

/// The command line as typed; [`Config::from_args`] turns it into settings.
#[derive(Debug, Parser)]
#[command(
    name = "mycel-proxy",
    version,
    about = "Mycel sidecar proxy and ingress gateway",
    after_help = "Transparent mode: `mycel-proxy init --help` programs the pod's iptables."
)]
struct Args {
    #[arg(long = names::MODE, value_enum, default_value = "sidecar")]
    mode: Mode,
    #[arg(long = names::CONTROLLER, value_name = "HOST:PORT")]
    controller: Option<String>,
    #[arg(long = names::CONTROLLER_NAME, value_name = "NAME", default_value = names::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    #[arg(long = names::CA_ROOT, value_name = "PATH")]
    ca_root: Option<PathBuf>,
    #[arg(long = names::TOKEN_FILE, value_name = "PATH")]
    token_file: Option<PathBuf>,
    #[arg(long = names::STATIC_CONFIG, value_name = "PATH")]
    static_config: Option<PathBuf>,
    #[arg(long = names::WORKLOAD, value_name = "NAME")]
    workload: String,
    #[arg(long = names::NAMESPACE, value_name = "NS")]
    namespace: String,
    #[arg(long = names::SERVICE_ACCOUNT, value_name = "SA")]
    service_account: String,
    #[arg(long = names::LABEL, value_name = "K=V")]
    label: Vec<String>,
    #[arg(long = names::APP_PORT, value_name = "NAME:PORT[:PROTO]")]
    app_port: Vec<String>,
    #[arg(long = names::ADDRESS, value_name = "IP")]
    address: Option<String>,
    #[arg(long = names::APP_HOST, value_name = "IP")]
    app_host: Option<String>,
    #[arg(long = names::INBOUND, value_name = "ADDR")]
    inbound: Option<String>,
    #[arg(long = names::OUTBOUND, value_name = "ADDR")]
    outbound: Option<String>,
    #[arg(long = names::TCP_UPSTREAM, value_name = "LISTEN_ADDR=SVC.NS:PORT")]
    tcp_upstream: Vec<String>,
    #[arg(long = names::ADMIN, value_name = "ADDR")]
    admin: Option<String>,
    #[arg(long = names::CERT_TTL, value_name = "DURATION")]
    cert_ttl: Option<String>,
    #[arg(long = names::TRUST_DOMAIN, default_value = names::DEFAULT_DOMAIN)]
    trust_domain: String,
    #[arg(long = names::CLUSTER_DOMAIN, default_value = names::DEFAULT_DOMAIN)]
    cluster_domain: String,
    #[arg(long = names::ZONE)]
    zone: Option<String>,
    #[arg(long = names::LISTEN, value_name = "ADDR")]
    listen: Option<String>,
    #[arg(long = names::ROUTE, value_name = "[HOST]/PREFIX=SVC.NS:PORT")]
    route: Vec<String>,
    #[arg(long = names::TRANSPARENT_OUTBOUND, value_name = "ADDR")]
    transparent_outbound: Option<String>,
    #[arg(long = names::INBOUND_CAPTURE, value_name = "ADDR")]
    inbound_capture: Option<String>,
    #[arg(long = names::MTLS_MODE, value_enum, default_value = "permissive")]
    mtls_mode: MtlsMode,
    #[arg(long = names::UNKNOWN_DESTINATION, value_enum, default_value = "passthrough")]
    unknown_destination: UnknownDestination,
    #[arg(long = names::SUBSCRIBE, value_name = "SVC.NS")]
    subscribe: Vec<String>,
    #[arg(long = names::OPAQUE_PORT, value_name = "PORT")]
    opaque_port: Vec<u16>,
    #[arg(long = names::WORKER_THREADS, value_name = "N")]
    worker_threads: Option<String>,
    #[arg(long = names::MAX_SUBSCRIPTIONS, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_subscriptions: u32,
    #[arg(long = names::SUBSCRIPTION_IDLE, value_name = "DURATION", default_value = "10m")]
    subscription_idle: String,
    #[arg(long = names::CAPTURE_ALL_PORTS)]
    capture_all_ports: bool,
    /// Connections each listener serves at once [default: 4096].
    #[arg(long = names::MAX_CONNECTIONS, value_name = "N")]
    max_connections: Option<String>,
    /// Largest request header list in bytes [default: 65536].
    #[arg(long = names::MAX_HEADER_BYTES, value_name = "BYTES")]
    max_header_bytes: Option<String>,
    /// Time for an HTTP/1 client to send a request head [default: 10s].
    #[arg(long = names::HEADER_READ_TIMEOUT, value_name = "DURATION")]
    header_read_timeout: Option<String>,
    /// Close connections idle this long [default: 60s].
    #[arg(long = names::IDLE_TIMEOUT, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Time for response headers, or `off` [default: 60s].
    #[arg(long = names::REQUEST_TIMEOUT, value_name = "DURATION|off")]
    request_timeout: Option<String>,
    /// HTTP/2 PING interval on mesh connections [default: 20s].
    #[arg(long = names::MESH_KEEPALIVE, value_name = "DURATION")]
    mesh_keepalive: Option<String>,
    /// Close idle pooled app connections after this [default: 30s].
    #[arg(long = names::APP_POOL_IDLE_TIMEOUT, value_name = "DURATION")]
    app_pool_idle_timeout: Option<String>,
    /// On SIGTERM, time for in-flight requests to finish [default: 5s].
    #[arg(long = names::SHUTDOWN_GRACE, value_name = "DURATION")]
    shutdown_grace: Option<String>,
}

impl Config {
    /// Parses a full argument vector (program name first) and the environment.
    pub fn from_args<I, T>(args: I, env: &dyn Env) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        build(args, env)
    }

    /// The mesh (inbound) port peers dial, 0 when there is none (gateway).
    pub fn mesh_port(&self) -> u16 {
        self.inbound.map(|a| a.port()).unwrap_or(0)
    }

    pub fn is_static(&self) -> bool {
        matches!(self.source, Source::Static { .. })
    }
}

fn build(a: Args, env: &dyn Env) -> Result<Config, ConfigError> {
    use names::*;
    let limits = limits(&a)?;
    let source = match (a.controller, a.static_config) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Conflict(format!(
                "--{CONTROLLER} and --{STATIC_CONFIG} exclude each other; give exactly one"
            )))
        }
        (None, None) => {
            return Err(ConfigError::Missing(format!(
                "one of --{CONTROLLER} or --{STATIC_CONFIG} is required"
            )))
        }
        (None, Some(path)) => Source::Static { path },
        (Some(address), None) => {
            parse::host_port(CONTROLLER, &address)?;
            let ca_root = a.ca_root.ok_or_else(|| {
                ConfigError::Missing(format!(
                    "--{CA_ROOT} is required with --{CONTROLLER} (the controller's certificate is issued by the mesh CA)"
                ))
            })?;
            let token = match (a.token_file, env.get(ENV_TOKEN)) {
                (Some(path), _) => TokenSource::File(path),
                (None, Some(v)) if !v.trim().is_empty() => TokenSource::Value(v.trim().to_string()),
                _ => {
                    return Err(ConfigError::Missing(format!(
                        "--{TOKEN_FILE} or the environment variable {ENV_TOKEN} is required with --{CONTROLLER}"
                    )))
                }
            };
            if a.controller_name.is_empty() {
                return Err(ConfigError::value(CONTROLLER_NAME, "", "must not be empty"));
            }
            Source::Controller {
                address,
                server_name: a.controller_name,
                ca_root,
                token,
            }
        }
    };

    parse::name(WORKLOAD, NameKind::Workload, &a.workload)?;
    parse::name(NAMESPACE, NameKind::Namespace, &a.namespace)?;
    parse::name(
        SERVICE_ACCOUNT,
        NameKind::ServiceAccount,
        &a.service_account,
    )?;
    parse::name(TRUST_DOMAIN, NameKind::TrustDomain, &a.trust_domain)?;
    if let Some(zone) = &a.zone {
        if zone.is_empty() {
            return Err(ConfigError::value(ZONE, zone, "must not be empty"));
        }
    }

    let mut labels = BTreeMap::new();
    for raw in &a.label {
        let (k, v) = parse::label(raw)?;
        if labels.insert(k.clone(), v).is_some() {
            return Err(ConfigError::value(
                LABEL,
                raw,
                format!("label {k:?} given twice"),
            ));
        }
    }
    let mut app_ports: Vec<AppPort> = Vec::new();
    for raw in &a.app_port {
        let p = parse::app_port(raw)?;
        if app_ports
            .iter()
            .any(|o| o.name == p.name || o.port == p.port)
        {
            return Err(ConfigError::value(
                APP_PORT,
                raw,
                "port name or number given twice",
            ));
        }
        app_ports.push(p);
    }
    let default_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let address = opt(ADDRESS, a.address.as_deref(), parse::ip)?.unwrap_or(default_ip);
    let app_host = opt(APP_HOST, a.app_host.as_deref(), parse::ip)?.unwrap_or(default_ip);
    let inbound = opt(INBOUND, a.inbound.as_deref(), parse::socket_addr)?;
    let outbound = opt(OUTBOUND, a.outbound.as_deref(), parse::socket_addr)?;
    let admin = opt(ADMIN, a.admin.as_deref(), parse::socket_addr)?;
    let listen = opt(LISTEN, a.listen.as_deref(), parse::socket_addr)?;
    let cert_ttl = opt(CERT_TTL, a.cert_ttl.as_deref(), parse::ttl)?;
    let tcp_upstreams = a
        .tcp_upstream
        .iter()
        .map(|r| parse::tcp_upstream(r))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = a
        .route
        .iter()
        .map(|r| parse::route(r))
        .collect::<Result<Vec<_>, _>>()?;

    let transparent = TransparentConfig {
        outbound: opt(
            TRANSPARENT_OUTBOUND,
            a.transparent_outbound.as_deref(),
            parse::socket_addr,
        )?,
        inbound_capture: opt(
            INBOUND_CAPTURE,
            a.inbound_capture.as_deref(),
            parse::socket_addr,
        )?,
        mtls_mode: a.mtls_mode,
        unknown_destination: a.unknown_destination,
        subscribe: a
            .subscribe
            .iter()
            .map(|k| parse::service_key(SUBSCRIBE, k))
            .collect::<Result<Vec<_>, _>>()?,
        opaque_ports: a.opaque_port,
        capture_all_ports: a.capture_all_ports,
    };
    let subscriptions = crate::discovery::SubscriptionLimits {
        max: a.max_subscriptions as usize,
        idle: parse::ttl(SUBSCRIPTION_IDLE, &a.subscription_idle)?,
    };

    let worker_threads = match opt(WORKER_THREADS, a.worker_threads.as_deref(), parse::threads)? {
        Some(n) => n,
        None if a.mode == Mode::Gateway => {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
        None => 1,
    };

    match a.mode {
        Mode::Sidecar if inbound.is_none() => {
            return Err(ConfigError::Missing(format!(
                "--{INBOUND} is required in sidecar mode"
            )))
        }
        Mode::Gateway if listen.is_none() => {
            return Err(ConfigError::Missing(format!(
                "--{LISTEN} is required in gateway mode"
            )))
        }
        Mode::Gateway if routes.is_empty() => {
            return Err(ConfigError::Missing(format!(
                "at least one --{ROUTE} is required in gateway mode"
            )))
        }
        _ => {}
    }

    Ok(Config {
        mode: a.mode,
        source,
        workload: WorkloadConfig {
            name: a.workload,
            namespace: a.namespace,
            service_account: a.service_account,
            labels,
            app_ports,
            address,
            zone: a.zone,
        },
        app_host,
        inbound,
        outbound,
        tcp_upstreams,
        admin,
        cert_ttl,
        trust_domain: a.trust_domain,
        cluster_domain: a.cluster_domain,
        listen,
        routes,
        transparent,
        worker_threads,
        subscriptions,
        limits,
    })
}

fn limits(a: &Args) -> Result<Limits, ConfigError> {
    use names::*;
    let d = Limits::default();
    let dur = |flag, raw: &Option<String>, default| {
        opt(flag, raw.as_deref(), parse::duration).map(|v| v.unwrap_or(default))
    };
    Ok(Limits {
        max_connections: opt(
            MAX_CONNECTIONS,
            a.max_connections.as_deref(),
            parse::max_connections,
        )?
        .unwrap_or(d.max_connections),
        max_header_bytes: opt(
            MAX_HEADER_BYTES,
            a.max_header_bytes.as_deref(),
            parse::header_bytes,
        )?
        .unwrap_or(d.max_header_bytes),
        header_read_timeout: dur(
            HEADER_READ_TIMEOUT,
            &a.header_read_timeout,
            d.header_read_timeout,
        )?,
        idle_timeout: dur(IDLE_TIMEOUT, &a.idle_timeout, d.idle_timeout)?,
        request_timeout: match a.request_timeout.as_deref() {
            Some("off") => None,
            Some(raw) => Some(parse::duration(REQUEST_TIMEOUT, raw)?),
            None => d.request_timeout,
        },
        mesh_keepalive: dur(MESH_KEEPALIVE, &a.mesh_keepalive, d.mesh_keepalive)?,
        app_pool_idle_timeout: dur(
            APP_POOL_IDLE_TIMEOUT,
            &a.app_pool_idle_timeout,
            d.app_pool_idle_timeout,
        )?,
        shutdown_grace: opt(SHUTDOWN_GRACE, a.shutdown_grace.as_deref(), parse::grace)?
            .unwrap_or(d.shutdown_grace),
    })
}

fn opt<T>(
    flag: &'static str,
    raw: Option<&str>,
    f: fn(&'static str, &str) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    raw.map(|r| f(flag, r)).transpose()
}
