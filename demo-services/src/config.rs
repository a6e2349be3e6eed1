//! Command line of `mycel-demo` and the typed configuration of one service.
//! Two shapes: `mycel-demo <service> --listen ADDR [...]` runs a shop
//! service ([`Cli`]), `mycel-demo fetch URL [...]` is a client
//! ([`FetchArgs`]); [`command`] is the one clap definition of both.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::faults::FaultConfig;
use crate::fetch::FetchUrl;
use crate::upstream::{Fallback, Target, TargetError, Upstreams};

/// Which shop service a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    Frontend,
    Catalog,
    Reviews,
    Ratings,
    Orders,
    Notifications,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Frontend => "frontend",
            ServiceKind::Catalog => "catalog",
            ServiceKind::Reviews => "reviews",
            ServiceKind::Ratings => "ratings",
            ServiceKind::Orders => "orders",
            ServiceKind::Notifications => "notifications",
        }
    }
}

/// Behaviour version; only `reviews` behaves differently (v2 asks ratings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Version {
    #[default]
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Environment variables `mycel-demo` reads (for the reference page).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RUST_LOG",
        "Log filter in tracing's EnvFilter syntax (default: info).",
    ),
    (
        mycel_api::report::LOG_FORMAT_ENV,
        mycel_api::report::LOG_FORMAT_HELP,
    ),
];

/// Bad values on the command line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--error-rate must be between 0 and 1, got {0}")]
    ErrorRate(f64),
    #[error("--direct wants NAME=ADDR (like catalog=127.0.0.1:8080 or catalog=catalog.shop:80), got {0:?}")]
    DirectSyntax(String),
    #[error("--direct {name}: {addr:?}: {reason}")]
    DirectAddr {
        name: String,
        addr: String,
        reason: TargetError,
    },
    #[error("--direct {0} given twice")]
    DirectTwice(String),
    #[error("--{flag}: {addr:?}: {reason}")]
    StoreAddr {
        flag: &'static str,
        addr: String,
        reason: TargetError,
    },
    #[error("{service} does not use --{flag} (stores: catalog --postgres [--nats], orders --postgres [--nats], ratings --redis, notifications --redis --nats)")]
    StoreNotUsed {
        service: &'static str,
        flag: &'static str,
    },
    #[error("orders publishes events from its outbox table: --nats needs --postgres")]
    NatsWithoutPostgres,
    #[error("--max-pending-events bounds orders' outbox: only orders with --nats takes it")]
    PendingWithoutOutbox,
}

/// `mycel-demo <service> --listen ADDR [...]`.
#[derive(Debug, Parser)]
#[command(name = "mycel-demo", about = "The Mycel demo shop services")]
pub struct Cli {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: ServiceKind,
    #[command(flatten)]
    pub log_format: mycel_api::report::LogFormatArg,
    /// Address to serve on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The sidecar's explicit outbound proxy; other services are reached through it by name.
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<SocketAddr>,
    /// Reach other services at their own name and port (catalog:80, reviews:9090), looked up at
    /// each connection: Kubernetes Service names, which a transparent sidecar captures.
    #[arg(long, conflicts_with = "proxy")]
    pub dns: bool,
    /// Reach service NAME at ADDR (IP:PORT, or HOST:PORT looked up at each connection),
    /// bypassing --proxy or --dns (repeatable; for running without a mesh).
    #[arg(long = "direct", value_name = "NAME=ADDR")]
    pub direct: Vec<String>,
    /// Also answer GET /healthz over HTTP/1.1 on this address: a readiness probe for reviews,
    /// whose own port speaks only gRPC.
    #[arg(long, value_name = "ADDR")]
    pub health: Option<SocketAddr>,
    /// Sleep this long before answering each request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Fail this fraction of requests (0..1) with 503 / UNAVAILABLE.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Behaviour version (reviews v2 includes stars from ratings).
    #[arg(long, value_enum, default_value_t = Version::V1)]
    pub version: Version,
    /// Seed of the fault random generator (default: from the OS).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Give up on a call to another service after this long.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub upstream_timeout_ms: u64,
    /// Keep the data in PostgreSQL at HOST:PORT (catalog, orders; database = the service's name,
    /// made if missing). Without it: in memory.
    #[arg(long, value_name = "HOST:PORT")]
    pub postgres: Option<String>,
    /// The PostgreSQL user (no password: the demo's server trusts loopback, the mesh decides who
    /// reaches it).
    #[arg(long, value_name = "NAME", default_value = crate::store::command::POSTGRES_SUPERUSER)]
    pub postgres_user: String,
    /// Keep the data in Redis at HOST:PORT (ratings, notifications). Without it: in memory.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis: Option<String>,
    /// NATS JetStream at HOST:PORT: orders publishes OrderPlaced there, catalog and
    /// notifications consume it. Without it: no events.
    #[arg(long, value_name = "HOST:PORT")]
    pub nats: Option<String>,
    /// Orders with --nats: stop taking orders (503) while this many events wait in the outbox
    /// for the broker, so an outage does not pile up without bound [default: 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_events: Option<u32>,
}

/// `mycel-demo fetch URL [--count N] [--every MS] [--timeout MS]`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct FetchArgs {
    /// The URL to GET: http://HOST[:PORT][/PATH], HOST an IP address or a name looked up at each
    /// request (the pod's DNS).
    #[arg(value_name = "URL", value_parser = FetchUrl::parse)]
    pub url: FetchUrl,
    /// How many requests to make, one after another.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Start a request at most this often; a slower request delays the next one.
    #[arg(long = "every", value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_FETCH_MS))]
    pub every_ms: u64,
    /// Give up on one request (lookup, connect, answer and body) after this long.
    #[arg(long = "timeout", value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_FETCH_MS))]
    pub timeout_ms: u64,
}

/// Longest `--every` and `--timeout`, a day: anything longer is a typo, and
/// a bound keeps instants computed from them from overflowing.
const MAX_FETCH_MS: u64 = 24 * 3600 * 1000;

// The client commands, which take the place of a service name. (A `///`
// comment here would become the about text of `mycel-demo` itself.)
#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// GET a URL over plain HTTP/1.1 and print one JSON line per request.
    ///
    /// Each line is printed as its request ends: {"status":200,"ms":3.1}, or {"error":"...","ms":2000.3} when no complete answer came
    /// (refused, reset, timed out, a body over 1 MiB). The exit status is 0 only if every request
    /// got a 2xx answer, 1 otherwise. For pods whose image has no shell or curl: kubectl exec POD
    /// -- mycel-demo fetch URL.
    Fetch(FetchArgs),
    /// Run one of the shop's stores (PostgreSQL, Redis, NATS) in the foreground.
    ///
    /// The server runs as this process's child with its data in --dir; SIGTERM and SIGINT are passed
    /// on and the exit status is the server's. PostgreSQL: initdb first when --dir has no cluster
    /// (superuser shop, trust authentication, the unix socket in --dir); as root it runs as the
    /// postgres system user. A missing server binary exits 3 naming the Debian package to install.
    Store(crate::store::StoreArgs),
    /// Serve the shop's token issuer: the public keys at GET /jwks.json over plain HTTP.
    ///
    /// The signing key (ES256, P-256) is kept in --key-dir, made there when missing. The gateway's
    /// GatewayPolicies name http://<this address>/jwks.json as their jwks.url; `mycel-demo token`
    /// signs tokens with the same key.
    Issuer(crate::issuer::IssuerArgs),
    /// Print a token signed with the key of a running `mycel-demo issuer`.
    ///
    /// Issuer https://demo.mycel.local, audience shop, as the gateway's GatewayPolicies check. In a
    /// cluster: kubectl -n shop exec deploy/issuer -- mycel-demo token --key-dir=/var/lib/issuer.
    Token(crate::issuer::TokenArgs),
}

/// What one `mycel-demo` process does.
#[derive(Debug)]
pub enum Invocation {
    Serve(Cli),
    Fetch(FetchArgs),
    Store(crate::store::StoreArgs),
    Issuer(crate::issuer::IssuerArgs),
    Token(crate::issuer::TokenArgs),
}

/// The whole command line: [`Cli`] with `fetch` beside the service names.
/// A subcommand stands in for the service and its required flags, and
/// service flags do not mix with it.
pub fn command() -> clap::Command {
    ClientCommand::augment_subcommands(Cli::command())
        .subcommand_negates_reqs(true)
        .args_conflicts_with_subcommands(true)
}

/// Reads the command line (program name first).
pub fn parse_args(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Invocation, clap::Error> {
    let matches: ArgMatches = command().try_get_matches_from(args)?;
    if matches.subcommand().is_some() {
        Ok(match ClientCommand::from_arg_matches(&matches)? {
            ClientCommand::Fetch(args) => Invocation::Fetch(args),
            ClientCommand::Store(args) => Invocation::Store(args),
            ClientCommand::Issuer(args) => Invocation::Issuer(args),
            ClientCommand::Token(args) => Invocation::Token(args),
        })
    } else {
        Ok(Invocation::Serve(Cli::from_arg_matches(&matches)?))
    }
}

/// Everything one service needs to run.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub listen: SocketAddr,
    /// Where GET /healthz is answered besides `listen`, if anywhere.
    pub health: Option<SocketAddr>,
    pub upstreams: Upstreams,
    pub faults: FaultConfig,
    pub version: Version,
    pub upstream_timeout: Duration,
    pub stores: Stores,
}

/// Where a service keeps its data and sends its events; `None` is in
/// memory (no events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stores {
    pub postgres: Option<Target>,
    pub postgres_user: String,
    pub redis: Option<Target>,
    pub nats: Option<Target>,
    /// Orders: events the outbox may hold for the broker before orders
    /// are refused.
    pub max_pending_events: u32,
}

/// `--max-pending-events`' default: about an hour of a busy demo's orders.
pub const MAX_PENDING_EVENTS: u32 = 10_000;

impl Default for Stores {
    fn default() -> Self {
        Stores {
            postgres: None,
            postgres_user: crate::store::command::POSTGRES_SUPERUSER.to_string(),
            redis: None,
            nats: None,
            max_pending_events: MAX_PENDING_EVENTS,
        }
    }
}

impl Stores {
    fn of(cli: &Cli) -> Result<Self, ConfigError> {
        let parse = |flag: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|addr| {
                    Target::parse(addr).map_err(|reason| ConfigError::StoreAddr {
                        flag,
                        addr: addr.to_string(),
                        reason,
                    })
                })
                .transpose()
        };
        let stores = Stores {
            postgres: parse("postgres", &cli.postgres)?,
            postgres_user: cli.postgres_user.clone(),
            redis: parse("redis", &cli.redis)?,
            nats: parse("nats", &cli.nats)?,
            max_pending_events: cli.max_pending_events.unwrap_or(MAX_PENDING_EVENTS),
        };
        let service = cli.service;
        let (postgres, redis, nats) = match service {
            ServiceKind::Catalog => (true, false, true),
            ServiceKind::Orders => (true, false, true),
            ServiceKind::Ratings => (false, true, false),
            ServiceKind::Notifications => (false, true, true),
            ServiceKind::Frontend | ServiceKind::Reviews => (false, false, false),
        };
        for (used, given, flag) in [
            (postgres, stores.postgres.is_some(), "postgres"),
            (redis, stores.redis.is_some(), "redis"),
            (nats, stores.nats.is_some(), "nats"),
        ] {
            if given && !used {
                return Err(ConfigError::StoreNotUsed {
                    service: service.name(),
                    flag,
                });
            }
        }
        if service == ServiceKind::Orders && stores.nats.is_some() && stores.postgres.is_none() {
            return Err(ConfigError::NatsWithoutPostgres);
        }
        if cli.max_pending_events.is_some()
            && (service != ServiceKind::Orders || stores.nats.is_none())
        {
            return Err(ConfigError::PendingWithoutOutbox);
        }
        Ok(stores)
    }
}

impl ServiceConfig {
    /// A service with no faults, no upstreams, version v1.
    pub fn new(kind: ServiceKind, listen: SocketAddr) -> Self {
        ServiceConfig {
            kind,
            listen,
            health: None,
            upstreams: Upstreams::default(),
            faults: FaultConfig::default(),
            version: Version::V1,
            upstream_timeout: Duration::from_secs(5),
            stores: Stores::default(),
        }
    }
}

impl TryFrom<Cli> for ServiceConfig {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&cli.error_rate) {
            return Err(ConfigError::ErrorRate(cli.error_rate));
        }
        let stores = Stores::of(&cli)?;
        Ok(ServiceConfig {
            stores,
            kind: cli.service,
            listen: cli.listen,
            health: cli.health,
            upstreams: Upstreams {
                // clap refuses --proxy with --dns.
                fallback: match (cli.proxy, cli.dns) {
                    (Some(addr), _) => Fallback::Proxy(addr),
                    (None, true) => Fallback::Dns,
                    (None, false) => Fallback::None,
                },
                direct: parse_direct(&cli.direct)?,
            },
            faults: FaultConfig {
                latency: Duration::from_millis(cli.latency_ms),
                error_rate: cli.error_rate,
                seed: cli.seed,
            },
            version: cli.version,
            upstream_timeout: Duration::from_millis(cli.upstream_timeout_ms),
        })
    }
}

/// Parses `--direct NAME=ADDR` values into a map; a name may appear once.
pub fn parse_direct(values: &[String]) -> Result<BTreeMap<String, Target>, ConfigError> {
    let mut out = BTreeMap::new();
    for value in values {
        let (name, addr) = value
            .split_once('=')
            .filter(|(n, a)| !n.is_empty() && !a.is_empty())
            .ok_or_else(|| ConfigError::DirectSyntax(value.clone()))?;
        let parsed = Target::parse(addr).map_err(|reason| ConfigError::DirectAddr {
            name: name.to_string(),
            addr: addr.to_string(),
            reason,
        })?;
        if out.insert(name.to_string(), parsed).is_some() {
            return Err(ConfigError::DirectTwice(name.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<ServiceConfig, ConfigError> {
        let mut full = vec!["mycel-demo"];
        full.extend_from_slice(args);
        ServiceConfig::try_from(Cli::parse_from(full))
    }

    #[test]
    fn parses_full_command_line() {
        let c = cli(&[
            "reviews",
            "--listen",
            "127.0.0.1:9000",
            "--proxy",
            "127.0.0.1:9001",
            "--latency-ms",
            "20",
            "--error-rate",
            "0.5",
            "--version",
            "v2",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(c.kind, ServiceKind::Reviews);
        assert_eq!(c.version, Version::V2);
        assert_eq!(
            c.upstreams.fallback,
            Fallback::Proxy("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(c.health, None);
        assert_eq!(c.faults.latency, Duration::from_millis(20));
        assert_eq!(c.faults.error_rate, 0.5);
        assert_eq!(c.faults.seed, Some(7));
    }

    #[test]
    fn reference_page_matches_the_flags() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/reference/mycel-demo.md");
        let page = mycel_api::clidoc::Page {
            command: command(),
            env: ENVIRONMENT,
            test: "cargo test -p mycel-demo --lib reference_page",
        };
        if let Err(e) = mycel_api::clidoc::check(&path, page) {
            panic!("{e}");
        }
    }

    /// The command line of the Kubernetes manifests (demo-services/k8s/).
    #[test]
    fn parses_the_kubernetes_command_line() {
        let c = cli(&[
            "reviews",
            "--listen=0.0.0.0:9090",
            "--dns",
            "--health=0.0.0.0:8081",
            "--version=v2",
        ])
        .unwrap();
        assert_eq!(c.upstreams.fallback, Fallback::Dns);
        assert!(c.upstreams.direct.is_empty());
        assert_eq!(c.health, Some("0.0.0.0:8081".parse().unwrap()));
        let route = c.upstreams.route("ratings", 80).unwrap();
        assert_eq!(route.connect.to_string(), "ratings:80");
    }

    fn invocation(args: &[&str]) -> Result<Invocation, clap::Error> {
        parse_args(std::iter::once("mycel-demo").chain(args.iter().copied()))
    }

    fn fetch(args: &[&str]) -> Result<FetchArgs, String> {
        let mut full = vec!["fetch"];
        full.extend_from_slice(args);
        match invocation(&full) {
            Ok(Invocation::Fetch(f)) => Ok(f),
            Ok(other) => panic!("{args:?}: {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn fetch_defaults_and_flags() {
        let f = fetch(&["http://catalog/products"]).unwrap();
        assert_eq!((f.count, f.every_ms, f.timeout_ms), (1, 0, 2000));
        assert_eq!(f.url.authority, "catalog");
        assert_eq!(f.url.path, "/products");
        let f = fetch(&[
            "http://127.0.0.1:8080/",
            "--count=5",
            "--every",
            "250",
            "--timeout=500",
        ])
        .unwrap();
        assert_eq!((f.count, f.every_ms, f.timeout_ms), (5, 250, 500));
        // Flags may come before the URL too.
        let f = fetch(&["--count", "2", "http://ratings/ratings/1"]).unwrap();
        assert_eq!((f.count, f.url.path.as_str()), (2, "/ratings/1"));
    }

    #[test]
    fn fetch_refuses_bad_values_naming_them() {
        for (args, want) in [
            (&["https://catalog/"][..], "only http://"),
            (&["http://cat_alog/"], "not a host name"),
            (&["http://catalog/", "--count=0"], "--count"),
            (&["http://catalog/", "--count=-1"], "--count"),
            (&["http://catalog/", "--timeout=0"], "--timeout"),
            (&["http://catalog/", "--every=86400001"], "--every"),
            (
                &["http://catalog/", "--timeout=18446744073709551615"],
                "--timeout",
            ),
            (&["http://catalog/", "--every=soon"], "--every"),
            (&[], "<URL>"),
            // Service flags are not fetch's.
            (&["http://catalog/", "--listen=127.0.0.1:1"], "--listen"),
        ] {
            let err = fetch(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn services_parse_as_before_beside_fetch() {
        let argv = ["frontend", "--listen=0.0.0.0:8080", "--dns"];
        let Ok(Invocation::Serve(cli)) = invocation(&argv) else {
            panic!("{argv:?} is not a service");
        };
        let config = ServiceConfig::try_from(cli).unwrap();
        assert_eq!(config.kind, ServiceKind::Frontend);
        assert_eq!(config.upstreams.fallback, Fallback::Dns);
        // The same as the service-only parser (the manifests' test uses it).
        let alone = Cli::try_parse_from(std::iter::once("mycel-demo").chain(argv)).unwrap();
        assert_eq!(
            format!("{alone:?}"),
            format!("{:?}", {
                let Ok(Invocation::Serve(cli)) = invocation(&argv) else {
                    unreachable!()
                };
                cli
            })
        );
        // Still required without fetch.
        let err = invocation(&["catalog"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
        let err = invocation(&[]).unwrap_err().to_string();
        assert!(err.contains("<SERVICE>"), "{err}");
        // fetch is not a flag value or a second positional of a service.
        assert!(invocation(&["catalog", "--listen=127.0.0.1:1", "fetch"]).is_err());
        assert!(invocation(&["--listen=127.0.0.1:1", "fetch", "http://a/"]).is_err());
    }

    #[test]
    fn proxy_and_dns_exclude_each_other() {
        let r = Cli::try_parse_from([
            "mycel-demo",
            "frontend",
            "--listen=127.0.0.1:1",
            "--proxy=127.0.0.1:2",
            "--dns",
        ]);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("--dns") && err.contains("--proxy"), "{err}");
    }

    #[test]
    fn rejects_error_rate_out_of_range() {
        for rate in ["1.5", "-0.1", "NaN"] {
            let flag = format!("--error-rate={rate}");
            let r = cli(&["catalog", "--listen", "127.0.0.1:1", &flag]);
            assert!(matches!(r, Err(ConfigError::ErrorRate(_))), "{rate}: {r:?}");
        }
    }

    #[test]
    fn direct_table() {
        let cases: &[(&[&str], Result<usize, &str>)] = &[
            (&["catalog=127.0.0.1:1"], Ok(1)),
            (&["catalog=127.0.0.1:1", "ratings=[::1]:2"], Ok(2)),
            (&["catalog"], Err("NAME=ADDR")),
            (&["=127.0.0.1:1"], Err("NAME=ADDR")),
            (&["catalog=catalog:80", "reviews=reviews.shop:9090"], Ok(2)),
            (&["catalog=nowhere"], Err("no port")),
            (&["catalog=no_where:80"], Err("not a host name")),
            (&["catalog=catalog:0"], Err("not a port")),
            (&["a=127.0.0.1:1", "a=127.0.0.1:2"], Err("given twice")),
        ];
        for (input, want) in cases {
            let values: Vec<String> = input.iter().map(|s| s.to_string()).collect();
            match (parse_direct(&values), want) {
                (Ok(map), Ok(n)) => assert_eq!(map.len(), *n, "{input:?}"),
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{input:?}: {e}"),
                (got, _) => panic!("{input:?}: unexpected {got:?}"),
            }
        }
    }
}
