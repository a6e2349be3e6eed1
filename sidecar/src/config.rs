//! Every setting of `mycel-proxy`, read once at start from flags (clap) and
//! the environment (through [`Env`], so tests pass a map and never touch the
//! process environment).
//!
//! The flag names are a contract other code already uses; they live in
//! [`names`] and nowhere else. Values are parsed into typed settings here, so
//! the rest of the proxy never sees a raw string, and a bad value is reported
//! naming the flag and the value.

mod args;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde::Serialize;

use args::Args;

pub use crate::core::limits::{Limits, SubscriptionLimits};
pub use parse::{AppPort, Switchable, TcpUpstream, ValueError};
// Value types the parts own; flags parse into them here.
pub use crate::gateway::https::HttpsConfig;
pub use crate::gateway::route::GatewayRoute;
pub use crate::identity::ca::TokenSource;
pub use crate::inbound::capture::MtlsMode;
pub use crate::outbound::transparent::UnknownDestination;

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
    pub const GATEWAY: &str = "gateway";
    pub const TLS_LISTEN: &str = "tls-listen";
    pub const TLS_CERT: &str = "tls-cert";
    pub const TLS_CLIENT_CA: &str = "tls-client-ca";
    pub const TLS_RELOAD_INTERVAL: &str = "tls-reload-interval";
    pub const HTTPS_REDIRECT: &str = "https-redirect";
    pub const RATE_LIMIT_REDIS: &str = "rate-limit-redis";
    pub const CACHE_MAX_BYTES: &str = "cache-max-bytes";
    pub const TRANSPARENT_OUTBOUND: &str = "transparent-outbound";
    pub const INBOUND_CAPTURE: &str = "inbound-capture";
    pub const MTLS_MODE: &str = "mtls-mode";
    pub const UNKNOWN_DESTINATION: &str = "unknown-destination";
    pub const SUBSCRIBE: &str = "subscribe";
    pub const OPAQUE_PORT: &str = "opaque-port";
    pub const WORKER_THREADS: &str = "worker-threads";
    pub const MAX_SUBSCRIPTIONS: &str = "max-subscriptions";
    pub const SUBSCRIPTION_IDLE: &str = "subscription-idle";
    pub const MEMORY_RELEASE_INTERVAL: &str = "memory-release-interval";
    pub const CAPTURE_ALL_PORTS: &str = "capture-all-ports";
    pub const MAX_CONNECTIONS: &str = "max-connections";
    pub const MAX_HEADER_BYTES: &str = "max-header-bytes";
    pub const HEADER_READ_TIMEOUT: &str = "header-read-timeout";
    pub const IDLE_TIMEOUT: &str = "idle-timeout";
    pub const REQUEST_TIMEOUT: &str = "request-timeout";
    pub const MESH_KEEPALIVE: &str = "mesh-keepalive";
    pub const APP_POOL_IDLE_TIMEOUT: &str = "app-pool-idle-timeout";
    pub const SHUTDOWN_GRACE: &str = "shutdown-grace";
    pub const TRACE_SAMPLING: &str = "trace-sampling";
    pub const ACCESS_LOG: &str = "access-log";
    pub const ACCESS_LOG_RATE: &str = "access-log-rate";

    /// Join token (or service-account token) when no `--token-file` is given.
    pub const ENV_TOKEN: &str = crate::identity::ca::ENV_TOKEN;
    /// Log filter (tracing `EnvFilter` syntax).
    pub const ENV_LOG: &str = mycel_api::report::LOG_ENV;
    /// The app's probe targets (JSON), set by the injector.
    pub const ENV_APP_PROBES: &str = mycel_api::probes::ENV_APP_PROBES;

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
    /// Unknown flag, bad or missing value, conflicting flags, `--help`,
    /// `--version`: clap's own report, which names the flag and the value.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// A value fine alone but not beside the others (given twice).
    #[error("--{flag} {value:?}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: ValueError,
    },
    /// A setting the other flags (or the mode) make necessary.
    #[error("{needed} is required{when}")]
    Missing { needed: Needed, when: When },
    /// An environment variable whose value cannot be used (it names itself).
    #[error(transparent)]
    Env(#[from] mycel_api::probes::ProbesError),
}

/// What is missing, in [`ConfigError::Missing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    Flag(&'static str),
    OneOf(&'static str, &'static str),
    AtLeastOne(&'static str),
    FlagOrEnv {
        flag: &'static str,
        env: &'static str,
    },
}

/// Why it is needed, in [`ConfigError::Missing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    With {
        flag: &'static str,
        because: Option<&'static str>,
    },
    InMode(Mode),
}

impl std::fmt::Display for Needed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Needed::Flag(flag) => write!(f, "--{flag}"),
            Needed::OneOf(a, b) => write!(f, "one of --{a} or --{b}"),
            Needed::AtLeastOne(flag) => write!(f, "at least one --{flag}"),
            Needed::FlagOrEnv { flag, env } => {
                write!(f, "--{flag} or the environment variable {env}")
            }
        }
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::Always => Ok(()),
            When::With {
                flag,
                because: None,
            } => write!(f, " with --{flag}"),
            When::With {
                flag,
                because: Some(why),
            } => write!(f, " with --{flag} ({why})"),
            When::InMode(mode) => write!(f, " in {} mode", mode.as_str()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Beside one app: the mesh port, an outbound proxy, captures.
    Sidecar,
    /// The ingress gateway: a public listener and routes into the mesh.
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

#[derive(Clone, Debug, PartialEq, Serialize)]
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
    #[serde(with = "crate::core::limits::humantime_opt")]
    pub cert_ttl: Option<Duration>,
    pub trust_domain: String,
    pub cluster_domain: String,
    pub listen: Option<SocketAddr>,
    pub routes: Vec<GatewayRoute>,
    /// Gateway mode: `<name>.<namespace>` of the Gateway (Gateway API)
    /// whose routes the controller sends, in place of `routes`.
    pub gateway: Option<String>,
    /// Gateway mode: the HTTPS listener.
    pub https: Option<HttpsConfig>,
    /// Gateway mode: `host:port` of the Redis global rate limits use.
    pub rate_limit_redis: Option<String>,
    /// Gateway mode: the response cache's memory.
    pub cache_max_bytes: usize,
    pub transparent: TransparentConfig,
    /// Runtime worker threads: one for a sidecar unless asked (a request
    /// that stays on one thread wakes no other; measured in
    /// docs/benchmarks.md), every core for a gateway.
    pub worker_threads: usize,
    /// Cap and idle expiry of on-demand discovery subscriptions.
    pub subscriptions: SubscriptionLimits,
    pub limits: Limits,
    /// How often heap memory freed since is given back to the system.
    pub memory_release_interval: Duration,
    /// App probes served under `/app-health/` (from `MYCEL_APP_PROBES`);
    /// only their paths are shown, since headers may hold credentials.
    #[serde(serialize_with = "probe_paths")]
    pub app_probes: mycel_api::probes::AppProbes,
    pub telemetry: TelemetryConfig,
}

/// Traces and access logs (metrics are always on).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TelemetryConfig {
    /// The share of requests without a caller's trace for which this proxy
    /// starts one (0 to 1); a caller's decision is always followed.
    pub trace_sampling: f64,
    /// Where access log lines go; None: no access log.
    pub access_log: Option<AccessLogTarget>,
    /// Access log lines per second at most; more are dropped and counted.
    pub access_log_rate: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AccessLogTarget {
    Stdout,
    File(std::path::PathBuf),
}

fn probe_paths<S: serde::Serializer>(
    v: &mycel_api::probes::AppProbes,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.keys())
}

/// What a command line asks for: run the proxy, or program iptables.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Init(crate::init::InitCommand),
}

impl Invocation {
    /// Parses a full argument vector (program name first) and the environment.
    pub fn from_args<I, T>(args: I, env: &dyn Env) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        match args.command {
            Some(args::Sub::Init(init)) => Ok(Invocation::Init(init.into())),
            None => build(args, env).map(|c| Invocation::Run(Box::new(c))),
        }
    }
}

/// The whole command line, subcommands included, for help and the
/// generated reference (docs/reference/mycel-proxy.md).
pub fn command() -> clap::Command {
    Args::command()
}

/// Environment variables the proxy reads, for the reference.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        names::ENV_TOKEN,
        "Join token (or service-account token) when no --token-file is given.",
    ),
    (
        names::ENV_LOG,
        "Log filter in tracing's EnvFilter syntax, e.g. `info` or `mycel_sidecar=debug`; RUST_LOG when unset (default: info).",
    ),
    (
        mycel_api::report::LOG_FORMAT_ENV,
        mycel_api::report::LOG_FORMAT_HELP,
    ),
    (
        mycel_api::report::OTLP_ENDPOINT_ENV,
        mycel_api::report::OTLP_HELP,
    ),
    (
        names::ENV_APP_PROBES,
        "The app's HTTP probes the admin port forwards under /app-health/<container>/<livez|readyz|startupz>: JSON set by the injector (Kubernetes).",
    ),
];

impl Config {
    /// Parses a command line that runs the proxy (no subcommand).
    pub fn from_args<I, T>(args: I, env: &dyn Env) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match Invocation::from_args(args, env)? {
            Invocation::Run(config) => Ok(*config),
            Invocation::Init(_) => Err(ConfigError::Cli(clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                "a proxy configuration was expected, not `init`",
            ))),
        }
    }

    /// The mesh (inbound) port peers dial, 0 when there is none (gateway).
    pub fn mesh_port(&self) -> u16 {
        self.inbound.map(|a| a.port()).unwrap_or(0)
    }

    pub fn is_static(&self) -> bool {
        matches!(self.source, Source::Static { .. })
    }
}

/// Checks what depends on several flags (or the environment) and builds the
/// settings; single values were checked by clap.
/// The HTTPS listener's flags, checked together: each of them needs
/// --tls-listen, which needs a certificate (unless a Gateway followed with
/// --gateway may bring them all); the redirect needs --listen.
fn https_config(a: &Args) -> Result<Option<HttpsConfig>, ConfigError> {
    use names::*;
    let with = |flag| When::With {
        flag,
        because: None,
    };
    let Some(listen) = a.tls_listen else {
        let needing = [
            (!a.tls_cert.is_empty(), TLS_CERT),
            (a.tls_client_ca.is_some(), TLS_CLIENT_CA),
            (a.https_redirect, HTTPS_REDIRECT),
        ];
        if let Some((_, flag)) = needing.into_iter().find(|(given, _)| *given) {
            return Err(ConfigError::Missing {
                needed: Needed::Flag(TLS_LISTEN),
                when: with(flag),
            });
        }
        return Ok(None);
    };
    // A gateway following a Gateway gets the certificates of its HTTPS
    // listeners from the controller; until some arrive, handshakes fail
    // (counted as `no_certificate`).
    let certs_may_be_pushed = a.mode == Mode::Gateway && a.gateway.is_some();
    if a.tls_cert.is_empty() && !certs_may_be_pushed {
        return Err(ConfigError::Missing {
            needed: Needed::AtLeastOne(TLS_CERT),
            when: with(TLS_LISTEN),
        });
    }
    if a.https_redirect && a.listen.is_none() {
        return Err(ConfigError::Missing {
            needed: Needed::Flag(LISTEN),
            when: When::With {
                flag: HTTPS_REDIRECT,
                because: Some("it is the listener that redirects"),
            },
        });
    }
    Ok(Some(HttpsConfig {
        listen,
        certs: a.tls_cert.clone(),
        client_ca: a.tls_client_ca.clone(),
        reload_interval: a.tls_reload_interval,
        redirect: a.https_redirect,
    }))
}

fn build(a: Args, env: &dyn Env) -> Result<Config, ConfigError> {
    use names::*;
    let https = https_config(&a)?;
    let source = match (a.controller, a.static_config) {
        // Both at once is refused by clap (`conflicts_with`).
        (_, Some(path)) => Source::Static { path },
        (None, None) => {
            return Err(ConfigError::Missing {
                needed: Needed::OneOf(CONTROLLER, STATIC_CONFIG),
                when: When::Always,
            })
        }
        (Some(address), None) => {
            let with_controller = |because| When::With {
                flag: CONTROLLER,
                because,
            };
            let ca_root = a.ca_root.ok_or(ConfigError::Missing {
                needed: Needed::Flag(CA_ROOT),
                when: with_controller(Some(
                    "the controller's certificate is issued by the mesh CA",
                )),
            })?;
            let token = match (a.token_file, env.get(ENV_TOKEN)) {
                (Some(path), _) => TokenSource::File(path),
                (None, Some(v)) if !v.trim().is_empty() => TokenSource::Value(v.trim().to_string()),
                _ => {
                    return Err(ConfigError::Missing {
                        needed: Needed::FlagOrEnv {
                            flag: TOKEN_FILE,
                            env: ENV_TOKEN,
                        },
                        when: with_controller(None),
                    })
                }
            };
            Source::Controller {
                address,
                server_name: a.controller_name,
                ca_root,
                token,
            }
        }
    };

    // Required by clap unless a subcommand is given, which is not built here.
    let required = |v: Option<String>, flag| {
        v.ok_or(ConfigError::Missing {
            needed: Needed::Flag(flag),
            when: When::Always,
        })
    };
    let name = required(a.workload, WORKLOAD)?;
    let namespace = required(a.namespace, NAMESPACE)?;
    let service_account = required(a.service_account, SERVICE_ACCOUNT)?;

    let mut labels = BTreeMap::new();
    for (k, v) in a.label {
        if labels.contains_key(&k) {
            return Err(ConfigError::Value {
                flag: LABEL,
                value: format!("{k}={v}"),
                reason: ValueError::Duplicate {
                    what: format!("label {k:?}"),
                },
            });
        }
        labels.insert(k, v);
    }
    let mut app_ports: Vec<AppPort> = Vec::new();
    for p in a.app_port {
        if app_ports
            .iter()
            .any(|o| o.name == p.name || o.port == p.port)
        {
            return Err(ConfigError::Value {
                flag: APP_PORT,
                value: format!("{}:{}", p.name, p.port),
                reason: ValueError::Duplicate {
                    what: "port name or number".into(),
                },
            });
        }
        app_ports.push(p);
    }

    let worker_threads = match a.worker_threads {
        Some(n) => n,
        None if a.mode == Mode::Gateway => {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
        None => 1,
    };

    let app_probes = match env.get(ENV_APP_PROBES) {
        Some(raw) => mycel_api::probes::parse(&raw).map_err(ConfigError::Env)?,
        None => mycel_api::probes::AppProbes::new(),
    };

    let in_mode = When::InMode(a.mode);
    match a.mode {
        Mode::Sidecar if a.inbound.is_none() => {
            return Err(ConfigError::Missing {
                needed: Needed::Flag(INBOUND),
                when: in_mode,
            })
        }
        Mode::Gateway if a.listen.is_none() && a.tls_listen.is_none() => {
            return Err(ConfigError::Missing {
                needed: Needed::OneOf(LISTEN, TLS_LISTEN),
                when: in_mode,
            })
        }
        Mode::Gateway if a.route.is_empty() && a.gateway.is_none() => {
            return Err(ConfigError::Missing {
                needed: Needed::OneOf(ROUTE, GATEWAY),
                when: in_mode,
            })
        }
        // Policies come with a Gateway's routes only.
        _ if a.rate_limit_redis.is_some() && a.gateway.is_none() => {
            return Err(ConfigError::Missing {
                needed: Needed::Flag(GATEWAY),
                when: When::With {
                    flag: RATE_LIMIT_REDIS,
                    because: Some(
                        "rate limits are set by the GatewayPolicies of a Gateway's routes",
                    ),
                },
            })
        }
        _ => {}
    }

    let gateway_key = match &a.gateway {
        Some(name) => Some(
            mycel_api::names::ServiceKey::new(name, &namespace)
                .map_err(|e| ConfigError::Value {
                    flag: GATEWAY,
                    value: name.clone(),
                    reason: ValueError::Name(e),
                })?
                .into_string(),
        ),
        None => None,
    };
    Ok(Config {
        mode: a.mode,
        source,
        workload: WorkloadConfig {
            name,
            namespace,
            service_account,
            labels,
            app_ports,
            address: a.address,
            zone: a.zone,
        },
        app_host: a.app_host,
        inbound: a.inbound,
        outbound: a.outbound,
        tcp_upstreams: a.tcp_upstream,
        admin: a.admin,
        telemetry: TelemetryConfig {
            // The gateway is where traces start; a sidecar continues them.
            trace_sampling: a.trace_sampling.unwrap_or(if a.mode == Mode::Gateway {
                1.0
            } else {
                0.0
            }),
            access_log: a.access_log,
            access_log_rate: a.access_log_rate,
        },
        cert_ttl: a.cert_ttl,
        trust_domain: a.trust_domain,
        cluster_domain: a.cluster_domain,
        listen: a.listen,
        routes: a.route,
        gateway: gateway_key,
        https,
        rate_limit_redis: a.rate_limit_redis,
        cache_max_bytes: a.cache_max_bytes,
        transparent: TransparentConfig {
            outbound: a.transparent_outbound,
            inbound_capture: a.inbound_capture,
            mtls_mode: a.mtls_mode,
            unknown_destination: a.unknown_destination,
            subscribe: a.subscribe,
            opaque_ports: a.opaque_port,
            capture_all_ports: a.capture_all_ports,
        },
        worker_threads,
        subscriptions: SubscriptionLimits {
            max: a.max_subscriptions as usize,
            idle: a.subscription_idle,
        },
        limits: Limits {
            max_connections: a.max_connections,
            max_header_bytes: a.max_header_bytes,
            header_read_timeout: a.header_read_timeout,
            idle_timeout: a.idle_timeout,
            request_timeout: a.request_timeout.0,
            mesh_keepalive: a.mesh_keepalive,
            app_pool_idle_timeout: a.app_pool_idle_timeout,
            shutdown_grace: a.shutdown_grace,
        },
        memory_release_interval: a.memory_release_interval,
        app_probes,
    })
}
