//! `mycelctl`: the Mycel command line. `demo` runs the whole mesh on
//! loopback; `token create|list|revoke` manage join tokens; `inject` meshes
//! manifests offline; `install` and `check` install Mycel into a Kubernetes
//! cluster and check it; `cert inspect` shows a certificate chain (a PEM file
//! or what a TLS server presents) and whether it verifies; `authz explain`
//! says why a caller may or may not call a service; `proxy-config` shows
//! what one proxy holds.

mod authz;
mod ca;
mod cert;
mod check;
mod demo;
mod inject;
mod install;
mod kubeconfig;
mod meshpod;
mod podcerts;
mod proxy_config;
mod stat;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mycel_api::report;
use mycel_tokens::cli::TokenCommand;

#[derive(Debug, Parser)]
#[command(name = "mycelctl", version, about = "Mycel service mesh command line")]
struct Cli {
    /// Report errors with their full cause chain over several lines.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(flatten)]
    log_format: mycel_api::report::LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join tokens for proxies (local mode).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the demo shop on loopback: controller, sidecars, gateway, apps.
    Demo(DemoFlags),
    /// Add the mesh proxy to the pods of Kubernetes manifests (offline, as the webhook does).
    Inject(inject::InjectArgs),
    /// Print Mycel's Kubernetes manifests (the helm chart's, default values), or apply them.
    Install(install::InstallArgs),
    /// Check that Mycel is installed and healthy in a Kubernetes cluster (or, with --pre, that it can be).
    Check(check::CheckArgs),
    /// The mesh CA's trust-anchor rotation: status, and starting one (local mode).
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Inspect certificates: a PEM file, or what a TLS server presents.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Authorization: why a caller may or may not call a service.
    Authz {
        #[command(subcommand)]
        command: authz::AuthzCommand,
    },
    /// Show what one proxy holds (services, endpoints, policies, routes,
    /// authorization, certificate), read from its admin port.
    ///
    /// The proxy is named by its admin address, or in a Kubernetes cluster
    /// by deploy/NAME, pod/NAME, or a pod's NAME with -n, whose admin is
    /// read through the API server.
    ///
    /// Exit status: 1 when the proxy cannot be reached (in a cluster: no
    /// such pod or deployment, pod not meshed, proxy not ready, refused by
    /// the API server), its certificate cannot be read, or it is not synced
    /// with the controller (the tables are still printed); 2 for a TARGET
    /// in none of these forms.
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// Success rate, requests per second and latency percentiles per
    /// workload and per edge (caller → service), from every proxy's
    /// metrics read twice a window apart (like linkerd viz stat).
    ///
    /// Local mode with --controller-admin (the proxies it lists are read
    /// at their admin addresses); otherwise the meshed pods of the
    /// Kubernetes cluster, read through the API server.
    Stat(stat::StatArgs),
    /// The busiest edges and routes, measured again every window (like
    /// linkerd viz top), for --iterations rounds.
    Top(stat::TopArgs),
}

#[derive(Debug, clap::Args)]
struct DemoFlags {
    /// First of the ports the demo uses (it needs a block of 90).
    #[arg(long, value_name = "PORT", default_value_t = 17000)]
    base_port: u16,
    /// Where the CA, tokens, mesh.yaml and logs go (default: a temporary
    /// directory removed on exit).
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Where mycel-controller, mycel-proxy and mycel-demo are (default: next
    /// to mycelctl).
    #[arg(long, value_name = "PATH")]
    bin_dir: Option<PathBuf>,
    /// How long to wait for everything to become ready (a first start
    /// creates the PostgreSQL databases, a few seconds each).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Start no PostgreSQL, Redis or NATS: every service keeps its data in
    /// memory and orders publish no events. Without it the demo starts the
    /// stores whose servers are installed and names the others.
    #[arg(long)]
    in_memory: bool,
    /// Send the mesh's spans to this OTLP collector (e.g.
    /// http://127.0.0.1:4318) instead of the demo's own receiver, which
    /// shows the latest traces at http://127.0.0.1:<base-port + 4>/traces.
    #[arg(long, value_name = "URL", value_parser = parse_otlp_endpoint, conflicts_with = "no_traces")]
    otlp_endpoint: Option<String>,
    /// The OTLP transport of --otlp-endpoint.
    #[arg(long, value_name = "PROTOCOL", default_value = "http/protobuf",
          value_parser = ["http/protobuf", "grpc"], requires = "otlp_endpoint")]
    otlp_protocol: String,
    /// No traces: the proxies export no spans.
    #[arg(long)]
    no_traces: bool,
    #[command(flatten)]
    faults: FaultFlags,
}

/// An http(s) URL with a host.
fn parse_otlp_endpoint(raw: &str) -> Result<String, String> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("not a URL ({e}); e.g. http://127.0.0.1:4318"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(raw.to_string()),
        _ => {
            Err("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:4318".into())
        }
    }
}

/// Faults the demo apps inject, to watch the mesh under errors and delay.
/// Each applies to every app of its service (both reviews versions).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Faults")]
struct FaultFlags {
    /// Fraction of ratings requests failed with 503 (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    ratings_error_rate: Option<f64>,
    /// Delay before every ratings answer (e.g. 200ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ratings_latency: Option<Duration>,
    /// Fraction of reviews calls failed with UNAVAILABLE (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    reviews_error_rate: Option<f64>,
    /// Delay before every reviews answer.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    reviews_latency: Option<Duration>,
    /// Fraction of catalog requests failed with 503 (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    catalog_error_rate: Option<f64>,
    /// Delay before every catalog answer.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    catalog_latency: Option<Duration>,
    /// Fraction of frontend requests failed with 503 (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    frontend_error_rate: Option<f64>,
    /// Delay before every frontend answer.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    frontend_latency: Option<Duration>,
    /// Fraction of orders requests failed with 503 (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    orders_error_rate: Option<f64>,
    /// Delay before every orders answer.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    orders_latency: Option<Duration>,
    /// Fraction of notifications requests failed with 503 (0..1).
    #[arg(long, value_name = "RATE", value_parser = demo::plan::faults::parse_rate)]
    notifications_error_rate: Option<f64>,
    /// Delay before every notifications answer.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    notifications_latency: Option<Duration>,
    /// Seed of the apps' fault generators, so that runs repeat.
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,
    /// How long an app waits for another service before giving up
    /// (mycel-demo's default: 5s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    upstream_timeout: Option<Duration>,
}

impl FaultFlags {
    fn faults(&self) -> demo::plan::Faults {
        let per_service = [
            ("ratings", self.ratings_error_rate, self.ratings_latency),
            ("reviews", self.reviews_error_rate, self.reviews_latency),
            ("catalog", self.catalog_error_rate, self.catalog_latency),
            ("frontend", self.frontend_error_rate, self.frontend_latency),
            ("orders", self.orders_error_rate, self.orders_latency),
            (
                "notifications",
                self.notifications_error_rate,
                self.notifications_latency,
            ),
        ];
        demo::plan::Faults {
            services: per_service
                .into_iter()
                .filter(|(_, rate, latency)| rate.is_some() || latency.is_some())
                .map(|(service, rate, latency)| {
                    let fault = demo::plan::Fault {
                        error_rate: rate.unwrap_or(0.0),
                        latency: latency.unwrap_or_default(),
                    };
                    (service, fault)
                })
                .collect(),
            seed: self.fault_seed,
            upstream_timeout: self.upstream_timeout,
        }
    }
}

/// Environment variables mycelctl reads (for the reference page).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        report::LOG_ENV,
        "Log filter of mycelctl itself in tracing's EnvFilter syntax; RUST_LOG when unset (default: warn, without the Kubernetes client's log of each refused request).",
    ),
    (report::LOG_FORMAT_ENV, report::LOG_FORMAT_HELP),
];

const PROGRAM: report::Program = report::Program {
    name: "mycelctl",
    log_env: ENVIRONMENT[0].0,
    // kube logs every non-2xx answer at error level; check and install
    // report those themselves, as a line with a hint.
    default_log: "warn,kube_client::client::builder=off",
};

fn main() -> ExitCode {
    PROGRAM.main(parse, run)
}

fn parse(args: Vec<std::ffi::OsString>) -> Result<Cli, report::UsageError> {
    let cli = Cli::try_parse_from(args)?;
    // Whether proxy-config's TARGET is a pod depends on other flags, so
    // clap cannot refuse a bad one; it is still a bad command line.
    if let Command::ProxyConfig(args) = &cli.command {
        args.target()
            .map_err(|e| report::UsageError::Invalid(Box::new(e)))?;
    }
    let scope = match &cli.command {
        Command::Stat(a) => Some(&a.scope),
        Command::Top(a) => Some(&a.scope),
        _ => None,
    };
    if let Some(scope) = scope {
        scope
            .check()
            .map_err(|e| report::UsageError::Invalid(Box::new(e)))?;
    }
    Ok(cli)
}

// One thread: children ask the kernel to kill them when the thread that
// started them dies (PR_SET_PDEATHSIG), so that thread must live as long as
// mycelctl does.
#[tokio::main(flavor = "current_thread")]
async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token { command } => token::run(command),
        Command::Inject(args) => inject::run(args),
        Command::Install(args) => install::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Cert { command } => cert::run(command).await,
        Command::Authz { command } => authz::run(command).await,
        Command::ProxyConfig(args) => proxy_config::run(args).await,
        Command::Stat(args) => stat::run(args).await,
        Command::Top(args) => stat::run_top(args).await,
        Command::Ca { command } => ca::run(command).await,
        Command::Demo(flags) => {
            demo::run(demo::DemoArgs {
                base_port: flags.base_port,
                in_memory: flags.in_memory,
                data_dir: flags.data_dir,
                bin_dir: flags.bin_dir,
                ready_timeout: flags.ready_timeout,
                faults: flags.faults.faults(),
                traces: match (flags.no_traces, flags.otlp_endpoint) {
                    (true, _) => demo::Traces::Off,
                    (false, Some(url)) => demo::Traces::Endpoint {
                        url,
                        protocol: flags.otlp_protocol,
                    },
                    (false, None) => demo::Traces::Builtin,
                },
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["mycelctl", "demo"].iter().chain(args))
    }

    fn faults(args: &[&str]) -> demo::plan::Faults {
        match parse(args).map(|c| c.command) {
            Ok(Command::Demo(flags)) => flags.faults.faults(),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn fault_flags_table() {
        let f = faults(&[]);
        assert!(f.services.is_empty() && f.seed.is_none());
        let f = faults(&[
            "--ratings-error-rate",
            "0.5",
            "--catalog-latency",
            "200ms",
            "--orders-error-rate",
            "0.1",
        ]);
        assert_eq!(f.services["ratings"].error_rate, 0.5);
        assert_eq!(f.services["ratings"].latency, Duration::ZERO);
        assert_eq!(f.services["catalog"].latency, Duration::from_millis(200));
        assert_eq!(f.services["orders"].error_rate, 0.1);
        assert_eq!(f.services.len(), 3);
        let f = faults(&[
            "--reviews-latency",
            "1s",
            "--frontend-error-rate",
            "1",
            "--fault-seed",
            "9",
            "--upstream-timeout",
            "2s",
        ]);
        assert_eq!(f.services["reviews"].latency, Duration::from_secs(1));
        assert_eq!(f.services["frontend"].error_rate, 1.0);
        assert_eq!(f.seed, Some(9));
        assert_eq!(f.upstream_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bad_fault_values_are_refused_naming_the_flag() {
        for args in [
            ["--ratings-error-rate", "1.5"],
            ["--catalog-error-rate", "x"],
            ["--catalog-latency", "soon"],
        ] {
            let err = parse(&args)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(args[0]), "{args:?}: {err}");
        }
    }

    #[test]
    fn proxy_config_targets_are_checked_as_the_command_line() {
        let run = |args: &[&str]| {
            let all = ["mycelctl", "proxy-config"].iter().chain(args);
            super::parse(all.map(std::ffi::OsString::from).collect())
        };
        for ok in [
            &["127.0.0.1:15000"][..],
            &["pod/web-0"],
            &["-n", "shop", "web-0", "services"],
            &["--context", "kind", "deploy/web", "-o", "json"],
        ] {
            assert!(run(ok).is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            (&["web-0"][..], "a pod's NAME with -n NS"),
            (
                &["-n", "shop", "127.0.0.1:15000"],
                "is a proxy's admin address",
            ),
            (&["-n", "Shop", "web-0"], "not a valid namespace"),
            (&["svc/web"], "proxy-config does not read kind"),
        ] {
            match run(bad) {
                Err(report::UsageError::Invalid(e)) => {
                    assert!(e.to_string().contains(says), "{bad:?}: {e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    /// mycelctl does not link the controller, so its defaults are copies.
    #[test]
    fn controller_defaults_match_the_controller() {
        use mycel_control_plane::runtime;
        assert_eq!(authz::DEFAULT_CONTROLLER_ADMIN, runtime::DEFAULT_ADMIN_ADDR);
        assert_eq!(authz::DEFAULT_TRUST_DOMAIN, runtime::DEFAULT_TRUST_DOMAIN);
    }

    #[test]
    fn reference_page_matches_the_flags() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/mycelctl.md");
        let page = mycel_api::clidoc::Page {
            command: super::Cli::command(),
            env: super::ENVIRONMENT,
            test: "cargo test -p mycel-cli --bin mycelctl reference_page",
        };
        if let Err(e) = mycel_api::clidoc::check(&path, page) {
            panic!("{e}");
        }
    }
}
