//! Command line of `mycel-demo` and the typed configuration of one service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::faults::FaultConfig;
use crate::upstream::{Fallback, Target, TargetError, Upstreams};

/// Which shop service a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    Frontend,
    Catalog,
    Reviews,
    Ratings,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Frontend => "frontend",
            ServiceKind::Catalog => "catalog",
            ServiceKind::Reviews => "reviews",
            ServiceKind::Ratings => "ratings",
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
pub const ENVIRONMENT: &[(&str, &str)] = &[(
    "RUST_LOG",
    "Log filter in tracing's EnvFilter syntax (default: info).",
)];

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
}

/// `mycel-demo <service> --listen ADDR [...]`.
#[derive(Debug, Parser)]
#[command(name = "mycel-demo", about = "The Mycel demo shop services")]
pub struct Cli {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: ServiceKind,
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
        }
    }
}

impl TryFrom<Cli> for ServiceConfig {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&cli.error_rate) {
            return Err(ConfigError::ErrorRate(cli.error_rate));
        }
        Ok(ServiceConfig {
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
        use clap::CommandFactory;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/reference/mycel-demo.md");
        let page = mycel_api::clidoc::Page {
            command: Cli::command(),
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
