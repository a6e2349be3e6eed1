//! The command line of `mycel-proxy` as clap sees it: every flag with its
//! help, its typed value parser and its group (`help_heading`). The
//! reference page `docs/reference/mycel-proxy.md` is rendered from this.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use mycel_api::names::NameKind;

use super::names::*;
use super::parse::{self, AppPort, Switchable, TcpUpstream};
use super::{Mode, MtlsMode, UnknownDestination};
use crate::gateway::route::GatewayRoute;

/// Help headings, one per mode or concern.
mod heading {
    pub const IDENTITY: &str = "Identity and controller";
    pub const WORKLOAD: &str = "Workload";
    pub const SIDECAR: &str = "Sidecar mode";
    pub const GATEWAY: &str = "Gateway mode";
    pub const TRANSPARENT: &str = "Transparent mode";
    pub const LIMITS: &str = "Limits and timeouts";
    pub const TELEMETRY: &str = "Traces and access logs";
}

/// The command line as typed; `config::build` turns it into settings.
#[derive(Debug, Parser)]
#[command(
    name = "mycel-proxy",
    version,
    about = "Mycel sidecar proxy and ingress gateway",
    long_about = "Mycel sidecar proxy and ingress gateway.\n\nA sidecar (the default) gets a certificate \
                  from the controller (or reads a static config), serves the mesh port for its app and \
                  an outbound proxy for it. With --mode gateway it is the mesh's front door.",
    after_long_help = "Environment:\n  MYCEL_TOKEN  the join token when no --token-file is given\n  \
                       MYCEL_LOG    log filter (tracing EnvFilter syntax; default info)",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
// Flags clap requires are `Option`s: `init` parses without them.
pub(super) struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// Report a fatal error with its full cause chain over several lines.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(flatten)]
    pub log_format: mycel_api::report::LogFormatArg,

    /// What this proxy is: a sidecar beside one app, or the ingress gateway.
    #[arg(long = MODE, value_enum, default_value = "sidecar")]
    pub mode: Mode,

    /// The controller's gRPC address (certificates and discovery).
    #[arg(long = CONTROLLER, value_name = "HOST:PORT", value_parser = parse::host_port,
          conflicts_with = "static_config", help_heading = heading::IDENTITY)]
    pub controller: Option<String>,
    /// TLS name the controller's certificate must carry.
    #[arg(long = CONTROLLER_NAME, value_name = "NAME", default_value = DEFAULT_CONTROLLER_NAME,
          value_parser = parse::non_empty, help_heading = heading::IDENTITY)]
    pub controller_name: String,
    /// The mesh root certificate (PEM), to trust the controller; needed with --controller.
    #[arg(long = CA_ROOT, value_name = "PATH", help_heading = heading::IDENTITY)]
    pub ca_root: Option<PathBuf>,
    /// File holding the join token, re-read at every request (rotated tokens
    /// need no restart); else the environment variable MYCEL_TOKEN.
    #[arg(long = TOKEN_FILE, value_name = "PATH", help_heading = heading::IDENTITY)]
    pub token_file: Option<PathBuf>,
    /// Run without a controller: certificate and services from this YAML
    /// file (tests and benchmarks).
    #[arg(long = STATIC_CONFIG, value_name = "PATH", help_heading = heading::IDENTITY)]
    pub static_config: Option<PathBuf>,
    /// Requested certificate lifetime, e.g. 1h (default: the controller's).
    #[arg(long = CERT_TTL, value_name = "DURATION", value_parser = parse::ttl,
          help_heading = heading::IDENTITY)]
    pub cert_ttl: Option<Duration>,
    /// Trust domain of the SPIFFE identities.
    #[arg(long = TRUST_DOMAIN, value_name = "DOMAIN", default_value = DEFAULT_DOMAIN,
          value_parser = parse::name(NameKind::TrustDomain), help_heading = heading::IDENTITY)]
    pub trust_domain: String,

    /// Name of this workload (instance), registered with the controller.
    #[arg(long = WORKLOAD, value_name = "NAME", required = true, value_parser = parse::name(NameKind::Workload),
          help_heading = heading::WORKLOAD)]
    pub workload: Option<String>,
    /// Namespace of the workload.
    #[arg(long = NAMESPACE, value_name = "NS", required = true, value_parser = parse::name(NameKind::Namespace),
          help_heading = heading::WORKLOAD)]
    pub namespace: Option<String>,
    /// Service account of the workload: with the namespace, its SPIFFE identity.
    #[arg(long = SERVICE_ACCOUNT, value_name = "SA", required = true,
          value_parser = parse::name(NameKind::ServiceAccount), help_heading = heading::WORKLOAD)]
    pub service_account: Option<String>,
    /// A label of the workload; services select endpoints by labels.
    #[arg(long = LABEL, value_name = "KEY=VALUE", value_parser = parse::label,
          help_heading = heading::WORKLOAD)]
    pub label: Vec<(String, String)>,
    /// Address peers dial to reach this proxy's mesh port.
    #[arg(long = ADDRESS, value_name = "IP", default_value = "127.0.0.1",
          help_heading = heading::WORKLOAD)]
    pub address: IpAddr,
    /// Zone (locality) of the workload, reported to the controller.
    #[arg(long = ZONE, value_name = "ZONE", value_parser = parse::non_empty,
          help_heading = heading::WORKLOAD)]
    pub zone: Option<String>,
    /// Cluster DNS suffix: `svc.ns.svc.<domain>` names a service.
    #[arg(long = CLUSTER_DOMAIN, value_name = "DOMAIN", default_value = DEFAULT_DOMAIN,
          help_heading = heading::WORKLOAD)]
    pub cluster_domain: String,

    /// The mesh port: mTLS from peer sidecars (required in sidecar mode).
    #[arg(long = INBOUND, value_name = "ADDR", help_heading = heading::SIDECAR)]
    pub inbound: Option<SocketAddr>,
    /// Explicit outbound HTTP proxy for the app (HTTP/1.1 or h2c), on loopback.
    #[arg(long = OUTBOUND, value_name = "ADDR", help_heading = heading::SIDECAR)]
    pub outbound: Option<SocketAddr>,
    /// A port of the app; PROTO is http (default), http2, grpc or tcp.
    #[arg(long = APP_PORT, value_name = "NAME:PORT[:PROTO]", value_parser = parse::app_port,
          help_heading = heading::SIDECAR)]
    pub app_port: Vec<AppPort>,
    /// Where the app listens.
    #[arg(long = APP_HOST, value_name = "IP", default_value = "127.0.0.1",
          help_heading = heading::SIDECAR)]
    pub app_host: IpAddr,
    /// A local TCP port tunnelled to one service port over mTLS.
    #[arg(long = TCP_UPSTREAM, value_name = "LISTEN_ADDR=SVC.NS:PORT",
          value_parser = parse::tcp_upstream, help_heading = heading::SIDECAR)]
    pub tcp_upstream: Vec<TcpUpstream>,

    /// The gateway's public HTTP listener (required in gateway mode).
    #[arg(long = LISTEN, value_name = "ADDR", help_heading = heading::GATEWAY)]
    pub listen: Option<SocketAddr>,
    /// A route (at least one in gateway mode): requests for HOST
    /// (any host if empty) under PREFIX go to the service port; the longest
    /// prefix wins.
    #[arg(long = ROUTE, value_name = "[HOST]/PREFIX=SVC.NS:PORT", value_parser = parse::route,
          help_heading = heading::GATEWAY)]
    pub route: Vec<GatewayRoute>,
    /// The Gateway (Gateway API, in --namespace) whose HTTPRoutes and
    /// GRPCRoutes this gateway serves, sent by the controller; instead of
    /// --route.
    #[arg(long = GATEWAY, value_name = "NAME", conflicts_with_all = ["route", "static_config"],
          help_heading = heading::GATEWAY)]
    pub gateway: Option<String>,
    /// The gateway's HTTPS listener: TLS 1.2 and 1.3, ALPN h2 and
    /// http/1.1, then the same routes as --listen.
    #[arg(long = TLS_LISTEN, value_name = "ADDR", help_heading = heading::GATEWAY)]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate (PEM chain, leaf first) and its key for --tls-listen,
    /// served to clients whose SNI one of its DNS names matches (wildcards
    /// match one label); the first given also to all other clients. Files
    /// are read again when they change. With --gateway, the certificates of
    /// the Gateway's HTTPS listeners are served after these, and none is
    /// required.
    #[arg(long = TLS_CERT, value_name = "CERT_PEM,KEY_PEM", value_parser = parse::cert_files,
          help_heading = heading::GATEWAY)]
    pub tls_cert: Vec<crate::gateway::tls::CertFiles>,
    /// Clients of --tls-listen must present a certificate issued by a CA
    /// in this PEM file (mTLS for partners).
    #[arg(long = TLS_CLIENT_CA, value_name = "PEM", help_heading = heading::GATEWAY)]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the --tls-cert files are checked for changes.
    #[arg(long = TLS_RELOAD_INTERVAL, value_name = "DURATION", default_value = "5s",
          value_parser = parse::reload_interval, help_heading = heading::GATEWAY)]
    pub tls_reload_interval: Duration,
    /// --listen answers every request with a permanent redirect (308) to the
    /// same host and path on --tls-listen.
    #[arg(long = HTTPS_REDIRECT, help_heading = heading::GATEWAY)]
    pub https_redirect: bool,
    /// Redis that global rate limits (GatewayPolicy `scope: Global`) are
    /// counted in, shared by every replica of this gateway. Without it a
    /// global limit answers as its policy says Redis failures do.
    #[arg(long = RATE_LIMIT_REDIS, value_name = "HOST:PORT", value_parser = parse::host_port,
          help_heading = heading::GATEWAY)]
    pub rate_limit_redis: Option<String>,
    /// Memory of the gateway's response cache (GatewayPolicy `cache`), in
    /// bytes: stored responses, each at most 1 MiB (or the whole cache if
    /// smaller).
    #[arg(long = CACHE_MAX_BYTES, value_name = "BYTES", default_value = "67108864",
          value_parser = parse::cache_bytes, help_heading = heading::GATEWAY)]
    pub cache_max_bytes: usize,

    /// Listener for outbound connections captured by iptables (`mycel-proxy init`).
    #[arg(long = TRANSPARENT_OUTBOUND, value_name = "ADDR", help_heading = heading::TRANSPARENT)]
    pub transparent_outbound: Option<SocketAddr>,
    /// Listener for captured inbound connections from outside the mesh.
    #[arg(long = INBOUND_CAPTURE, value_name = "ADDR", help_heading = heading::TRANSPARENT)]
    pub inbound_capture: Option<SocketAddr>,
    /// What the inbound capture does with plaintext from outside the mesh
    /// where no PeerAuthentication policy sets a mode for the port.
    #[arg(long = MTLS_MODE, value_enum, default_value = "permissive",
          help_heading = heading::TRANSPARENT)]
    pub mtls_mode: MtlsMode,
    /// Where captured connections to destinations outside the mesh go.
    #[arg(long = UNKNOWN_DESTINATION, value_enum, default_value = "passthrough",
          help_heading = heading::TRANSPARENT)]
    pub unknown_destination: UnknownDestination,
    /// A service subscribed at start and never dropped, so its
    /// addresses are known before the app's first connection.
    #[arg(long = SUBSCRIBE, value_name = "SVC.NS", value_parser = parse::service_key,
          help_heading = heading::TRANSPARENT)]
    pub subscribe: Vec<String>,
    /// A destination port tunnelled as opaque TCP without protocol detection.
    #[arg(long = OPAQUE_PORT, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::TRANSPARENT)]
    pub opaque_port: Vec<u16>,
    /// Permissive inbound capture passes every port, not only declared app ports.
    #[arg(long = CAPTURE_ALL_PORTS, help_heading = heading::TRANSPARENT)]
    pub capture_all_ports: bool,

    /// Runtime worker threads [default: 1 for a sidecar, one per core for a gateway].
    #[arg(long = WORKER_THREADS, value_name = "N",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=256),
          help_heading = heading::LIMITS)]
    pub worker_threads: Option<usize>,
    /// Services followed on demand at once; a request for one more gets 503.
    #[arg(long = MAX_SUBSCRIPTIONS, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000), help_heading = heading::LIMITS)]
    pub max_subscriptions: u32,
    /// An on-demand subscription unused this long is dropped.
    #[arg(long = SUBSCRIPTION_IDLE, value_name = "DURATION", default_value = "10m",
          value_parser = parse::ttl, help_heading = heading::LIMITS)]
    pub subscription_idle: Duration,
    /// How often heap memory freed since is given back to the system (a burst of connections
    /// otherwise leaves its memory with the process).
    #[arg(long = MEMORY_RELEASE_INTERVAL, value_name = "DURATION", default_value = "30s",
          value_parser = parse::timeout, help_heading = heading::LIMITS)]
    pub memory_release_interval: Duration,
    /// Connections each listener serves at once; more wait in the backlog.
    #[arg(long = MAX_CONNECTIONS, value_name = "N", default_value = "4096",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000),
          help_heading = heading::LIMITS)]
    pub max_connections: usize,
    /// Largest request header list in bytes (1024..=16777216); larger gets 431.
    #[arg(long = MAX_HEADER_BYTES, value_name = "BYTES", default_value = "65536",
          value_parser = RangedU64ValueParser::<usize>::new().range(1024..=16 * 1024 * 1024),
          help_heading = heading::LIMITS)]
    pub max_header_bytes: usize,
    /// Time for an HTTP/1 client to send a whole request head.
    #[arg(long = HEADER_READ_TIMEOUT, value_name = "DURATION", default_value = "10s",
          value_parser = parse::timeout, help_heading = heading::LIMITS)]
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way this long is closed.
    #[arg(long = IDLE_TIMEOUT, value_name = "DURATION", default_value = "60s",
          value_parser = parse::timeout, help_heading = heading::LIMITS)]
    pub idle_timeout: Duration,
    /// Time until a request's response headers, or `off`; gets 504 when exceeded.
    #[arg(long = REQUEST_TIMEOUT, value_name = "DURATION|off", default_value = "60s",
          value_parser = parse::switchable_timeout, help_heading = heading::LIMITS)]
    pub request_timeout: Switchable,
    /// HTTP/2 PING interval on pooled mesh connections; no answer within it drops the peer.
    #[arg(long = MESH_KEEPALIVE, value_name = "DURATION", default_value = "20s",
          value_parser = parse::timeout, help_heading = heading::LIMITS)]
    pub mesh_keepalive: Duration,
    /// Idle pooled connections to the app are closed after this.
    #[arg(long = APP_POOL_IDLE_TIMEOUT, value_name = "DURATION", default_value = "30s",
          value_parser = parse::timeout, help_heading = heading::LIMITS)]
    pub app_pool_idle_timeout: Duration,
    /// On SIGTERM, time for in-flight requests and tunnels to finish (0s to 10m).
    #[arg(long = SHUTDOWN_GRACE, value_name = "DURATION", default_value = "5s",
          value_parser = parse::grace, help_heading = heading::LIMITS)]
    pub shutdown_grace: Duration,

    /// Admin HTTP listener: /live, /ready, /metrics, /config_dump, /certs.
    #[arg(long = ADMIN, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Share (0 to 1) of requests without a caller's trace context for which
    /// this proxy starts a trace; default 1 for a gateway, 0 for a sidecar
    /// (a caller's sampling decision is always followed). Spans are sent
    /// only when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long = TRACE_SAMPLING, value_name = "RATIO", value_parser = parse::ratio,
          help_heading = heading::TELEMETRY)]
    pub trace_sampling: Option<f64>,
    /// Write one JSON line per request to `stdout` or to a file (appended).
    #[arg(long = ACCESS_LOG, value_name = "stdout|PATH", value_parser = parse::access_log,
          help_heading = heading::TELEMETRY)]
    pub access_log: Option<super::AccessLogTarget>,
    /// Access log lines per second at most; more are dropped and counted in
    /// mycel_access_log_lines_dropped_total.
    #[arg(long = ACCESS_LOG_RATE, value_name = "N", default_value = "1000",
          value_parser = RangedU64ValueParser::<u32>::new().range(1..=1_000_000),
          help_heading = heading::TELEMETRY)]
    pub access_log_rate: u32,
}

#[derive(Debug, Subcommand)]
pub(super) enum Sub {
    /// Program the pod's iptables so its TCP goes through the sidecar
    /// (transparent mode; run once, as an init container).
    Init(crate::init::InitArgs),
}
