//! `mycel-controller`: runs the control plane, or creates a join token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mycel_control_plane::ca::CaFiles;
use mycel_control_plane::index::Namespaces;
use mycel_control_plane::runtime::{
    Config, Controller, KubernetesConfig, SecretRef, TrustBundleConfig,
};
use mycel_control_plane::serving::Limits;
use mycel_tokens::cli::{self as token_cli, TokenCommand};

#[derive(Parser)]
#[command(
    name = "mycel-controller",
    version,
    about = "Mycel control plane: CA, mesh index, discovery"
)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Report errors with their full cause chain over several lines.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(flatten)]
    log_format: mycel_api::report::LogFormatArg,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Manage join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Directory for the CA and the join tokens.
    #[arg(long, value_name = "PATH", required = true)]
    data_dir: Option<PathBuf>,
    /// Trust domain of the SPIFFE identities it issues.
    #[arg(long, value_name = "DOMAIN", default_value = mycel_control_plane::runtime::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// gRPC over TLS (Identity, Discovery) for the proxies.
    #[arg(long, value_name = "ADDR", default_value = mycel_control_plane::runtime::DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,
    /// Admin HTTP: /live, /ready, /metrics, /debug/proxies.
    #[arg(long, value_name = "ADDR", default_value = mycel_control_plane::runtime::DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,
    /// Serve a web dashboard on the admin port (/dashboard): services,
    /// live edges and every proxy's state, from the proxies' metrics,
    /// which the controller then scrapes (on demand, every few seconds at
    /// most).
    #[arg(long)]
    dashboard: bool,
    /// mesh.yaml with Kubernetes-style Service documents; polled for changes.
    #[arg(long, value_name = "PATH", conflicts_with = "kubernetes")]
    mesh_config: Option<PathBuf>,
    /// Follow a Kubernetes API server (in-cluster config, else KUBECONFIG):
    /// Services, EndpointSlices and meshed Pods; Pods' proxies authenticate
    /// with service-account tokens (TokenReview).
    #[arg(long)]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes (default: in-cluster config, else
    /// KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// The namespace the controller runs in (its Services' DNS names);
    /// default: POD_NAMESPACE, else mycel-system.
    #[arg(long, value_name = "NS", requires = "kubernetes")]
    controller_namespace: Option<String>,
    /// Serve the sidecar-injection webhook (HTTPS, path /inject) here.
    #[arg(long, value_name = "ADDR", requires = "kubernetes")]
    webhook_addr: Option<SocketAddr>,
    /// MutatingWebhookConfiguration whose caBundle the controller keeps on
    /// the mesh CA. It also owns what the controller creates (the CA
    /// Secret, the trust-bundle ConfigMaps), so deleting it (helm
    /// uninstall) garbage-collects them.
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    webhook_config: Option<String>,
    /// What the injector writes into Pods (YAML with the fields of the
    /// chart's inject.yaml); default: the built-in settings.
    #[arg(long, value_name = "PATH", requires = "webhook_addr")]
    inject_config: Option<PathBuf>,
    /// Keep the mesh CA in this Secret (NAMESPACE/NAME): the Secret's CA is
    /// used when present (Mycel's own keys, or cert-manager-style tls.crt,
    /// tls.key, ca.crt); otherwise the data dir's CA is stored in it.
    #[arg(long, value_name = "NS/NAME", requires = "kubernetes", conflicts_with = "root_cert", value_parser = parse_secret_ref)]
    ca_secret: Option<SecretRef>,
    /// The --ca-secret is the user's (the chart's ca.existingSecret): it is
    /// never owned by the --webhook-config, and an owner reference to it is
    /// removed, so uninstalling keeps the CA.
    #[arg(long, requires = "ca_secret")]
    keep_ca_secret: bool,
    /// How often every replica reads the --ca-secret while running: a new
    /// root there starts a trust-anchor rotation to it, which the replicas
    /// carry out together through the Secret.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_poll, requires = "ca_secret")]
    ca_secret_poll: Duration,
    /// Publish the trust bundle (the mesh's root certificates) as a
    /// ConfigMap of this name in every meshed namespace.
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    trust_bundle_configmap: Option<String>,
    /// Create this GatewayClass (controllerName mycel.io/gateway-controller)
    /// when the Gateway API CRDs are installed and it is missing; "" for
    /// none.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "mycel",
        requires = "kubernetes"
    )]
    gateway_class: String,
    /// The label that marks a namespace as meshed (value `enabled`).
    #[arg(long, value_name = "KEY", default_value = mycel_control_plane::sources::k8s::trust_bundle::NAMESPACE_LABEL, requires = "trust_bundle_configmap")]
    namespace_label: String,
    /// The mesh (mTLS) port of injected proxies, which endpoints are dialled on.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 15006,
        requires = "kubernetes"
    )]
    proxy_mesh_port: u16,
    /// Maximum (and default) lifetime of workload certificates.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    cert_ttl: Duration,
    /// Root certificate of a user-provided CA (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["issuer_cert", "issuer_key"])]
    root_cert: Option<PathBuf>,
    /// Intermediate certificate that signs workload certificates (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["root_cert", "issuer_key"])]
    issuer_cert: Option<PathBuf>,
    /// Private key of the intermediate (PKCS#8 PEM).
    #[arg(long, value_name = "PATH", requires_all = ["root_cert", "issuer_cert"])]
    issuer_key: Option<PathBuf>,
    /// Lifetime of the gRPC serving certificate; renewed at 70% of it.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = humantime::parse_duration)]
    serving_cert_ttl: Duration,
    /// Lifetime of each issuer (intermediate) generated here; a new one is
    /// rotated in at 75% of it.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    issuer_ttl: Duration,
    /// Trust-anchor rotation: how long both the old and the new root stay
    /// trusted after new leaves switch to the new root (and at least until
    /// every connected proxy holds a new-root leaf). Local mode starts one
    /// with `mycelctl ca rotate`; with --ca-secret, a new root put in the
    /// Secret does.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    rotation_overlap: Duration,
    /// Most open gRPC connections; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    grpc_max_connections: usize,
    /// A gRPC client must finish its TLS handshake within this.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    grpc_handshake_timeout: Duration,
    /// HTTP/2 streams per gRPC connection.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_concurrent_streams)]
    grpc_max_concurrent_streams: u32,
    /// Time until a gRPC call's response starts (not the discovery stream's
    /// life).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    grpc_request_timeout: Duration,
    /// HTTP/2 keepalive PING interval on gRPC connections.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    grpc_keepalive_interval: Duration,
    #[command(flatten)]
    admission: AdmissionArgs,
}

/// Limits on Certify and on what one proxy may subscribe to.
#[derive(Args)]
struct AdmissionArgs {
    /// Certify calls per second accepted from one source IP.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 20.0)]
    certify_rate_per_ip: f64,
    /// Certify calls one source IP may make at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = 50)]
    certify_burst_per_ip: u32,
    /// Certify calls per second accepted in total.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 100.0)]
    certify_rate: f64,
    /// Certify calls accepted at once in total before the rate applies.
    #[arg(long, value_name = "N", default_value_t = 200)]
    certify_burst: u32,
    /// Subscriptions one proxy may hold; more are refused one by one.
    #[arg(long, value_name = "N", default_value_t = mycel_control_plane::index::DEFAULT_MAX_SUBSCRIPTIONS)]
    max_subscriptions_per_proxy: usize,
    /// Who may call a workload that no ALLOW AuthorizationPolicy selects:
    /// allow-all, mesh-authenticated (callers with a mesh identity), or deny.
    #[arg(long, value_name = "MODE", default_value = "mesh-authenticated", value_parser = |s: &str| s.parse::<mycel_api::authz::DefaultPolicy>())]
    default_inbound_policy: mycel_api::authz::DefaultPolicy,
    /// Namespaces whose services a proxy may discover besides its own
    /// (comma list, repeatable; `*` or none: every namespace). A workload
    /// may narrow it with its mycel.io/discovery-namespaces annotation (a
    /// cluster) or label (local mode); a service out of scope is answered
    /// as not found.
    #[arg(long, value_name = "NS[,NS...]", value_parser = parse_discovery_namespace)]
    discovery_namespaces: Vec<String>,
}

impl AdmissionArgs {
    fn certify_limits(&self) -> mycel_control_plane::grpc::ratelimit::CertifyLimits {
        use mycel_control_plane::grpc::ratelimit::{CertifyLimits, Rate};
        CertifyLimits {
            global: Rate {
                per_second: self.certify_rate,
                burst: self.certify_burst,
            },
            per_ip: Rate {
                per_second: self.certify_rate_per_ip,
                burst: self.certify_burst_per_ip,
            },
        }
    }
}

/// Environment variables the controller reads (for the reference page).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        mycel_api::report::LOG_ENV,
        "Log filter in tracing's EnvFilter syntax, e.g. `info` or `mycel_control_plane=debug`; RUST_LOG when unset (default: info).",
    ),
    (
        mycel_api::report::LOG_FORMAT_ENV,
        mycel_api::report::LOG_FORMAT_HELP,
    ),
    (
        mycel_api::report::OTLP_ENDPOINT_ENV,
        mycel_api::report::OTLP_HELP,
    ),
];

const PROGRAM: mycel_api::report::Program = mycel_api::report::Program {
    name: "mycel-controller",
    log_env: ENVIRONMENT[0].0,
    default_log: "info",
};

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// `--ca-secret NAMESPACE/NAME`.
fn parse_secret_ref(s: &str) -> Result<SecretRef, String> {
    match s.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(SecretRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!(
            "{s:?} is not NAMESPACE/NAME (e.g. mycel-system/mycel-ca)"
        )),
    }
}

/// `--ca-secret-poll`: at least a second, so replicas do not hammer the
/// API server.
fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than 1s"));
    }
    Ok(d)
}

/// One item of `--discovery-namespaces` (lists are split by `run`, so an
/// empty item between commas is allowed, as the index's parser allows).
fn parse_discovery_namespace(s: &str) -> Result<String, String> {
    Namespaces::parse([s])
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The injector's settings file: every field named as in the chart's
/// inject.yaml; an unknown one is an error naming it.
fn read_inject_config(path: &std::path::Path) -> anyhow::Result<mycel_inject::InjectConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--inject-config {}: cannot read it", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| {
        format!(
            "--inject-config {}: not valid injector settings",
            path.display()
        )
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The controller's own spans (streams, pushes, certificate requests)
    // go to the OTLP collector when one is configured.
    if let Some(tracer) = mycel_telemetry::traces::start(PROGRAM.name, PROGRAM.name)
        .context("OpenTelemetry trace export (OTEL_* variables)")?
    {
        mycel_telemetry::export_tracing_spans(tracer);
    }
    let data_dir = args.data_dir.context("--data-dir is required")?;
    let ca_files = match (args.root_cert, args.issuer_cert, args.issuer_key) {
        (Some(root_cert), Some(issuer_cert), Some(issuer_key)) => Some(CaFiles {
            root_cert,
            issuer_cert,
            issuer_key,
        }),
        _ => None,
    };
    let kubernetes = match args.kubernetes {
        false => None,
        true => Some(KubernetesConfig {
            proxy_mesh_port: args.proxy_mesh_port,
            kubeconfig: args.kubeconfig,
            namespace: args
                .controller_namespace
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or_else(|| "mycel-system".to_string()),
            webhook_addr: args.webhook_addr,
            webhook_config: args.webhook_config,
            ca_secret: args.ca_secret,
            ca_secret_poll: args.ca_secret_poll,
            keep_ca_secret: args.keep_ca_secret,
            trust_bundle: args
                .trust_bundle_configmap
                .map(|configmap| TrustBundleConfig {
                    configmap,
                    namespace_label: args.namespace_label,
                }),
            gateway_class: Some(args.gateway_class).filter(|c| !c.is_empty()),
            inject: match &args.inject_config {
                Some(path) => read_inject_config(path)?,
                None => mycel_inject::InjectConfig::default(),
            },
        }),
    };
    let config = Config {
        data_dir,
        trust_domain: args.trust_domain,
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        dashboard: args.dashboard,
        mesh_config: args.mesh_config,
        cert_ttl: args.cert_ttl,
        ca_files,
        serving_cert_ttl: args.serving_cert_ttl,
        issuer_ttl: args.issuer_ttl,
        rotation_overlap: args.rotation_overlap,
        limits: Limits {
            handshake_timeout: args.grpc_handshake_timeout,
            max_connections: args.grpc_max_connections,
            max_concurrent_streams: args.grpc_max_concurrent_streams,
            keepalive_interval: args.grpc_keepalive_interval,
            request_timeout: args.grpc_request_timeout,
            ..Limits::default()
        },
        certify_limits: args.admission.certify_limits(),
        max_subscriptions: args.admission.max_subscriptions_per_proxy,
        default_inbound_policy: args.admission.default_inbound_policy,
        discovery_namespaces: Namespaces::parse(
            args.admission
                .discovery_namespaces
                .iter()
                .map(String::as_str),
        )
        .context("--discovery-namespaces")?,
        kubernetes,
    };
    let mut controller = Controller::start(config).await?;
    eprintln!(
        "mycel-controller ready grpc={} admin={}",
        controller.grpc_addr(),
        controller.admin_addr()
    );
    let failed = tokio::select! {
        r = shutdown_signal() => { r?; None }
        r = controller.wait_for_failure() => Some(r),
    };
    match failed {
        None => {
            tracing::info!("shutting down");
            controller.shutdown().await
        }
        Some(r) => {
            r?;
            anyhow::bail!("gRPC server stopped unexpectedly")
        }
    }
}

fn main() -> std::process::ExitCode {
    PROGRAM.main(|args| Ok(Cli::try_parse_from(args)?), dispatch)
}

#[tokio::main]
async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Token { command }) => Ok(token_cli::run(command)?),
        None => run(cli.run).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn reference_page_matches_the_flags() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/reference/mycel-controller.md");
        let page = mycel_api::clidoc::Page {
            command: super::Cli::command(),
            env: super::ENVIRONMENT,
            test: "cargo test -p mycel-control-plane --bin mycel-controller reference_page",
        };
        if let Err(e) = mycel_api::clidoc::check(&path, page) {
            panic!("{e}");
        }
    }

    #[test]
    fn discovery_namespaces_flag() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut args = vec!["mycel-controller", "--data-dir", "/d"];
            args.extend_from_slice(extra);
            super::Cli::try_parse_from(args).map(|c| {
                super::Namespaces::parse(
                    c.run
                        .admission
                        .discovery_namespaces
                        .iter()
                        .map(String::as_str),
                )
                .unwrap()
            })
        };
        assert_eq!(parse(&[]).unwrap(), super::Namespaces::All);
        let two = parse(&[
            "--discovery-namespaces",
            "billing,ops",
            "--discovery-namespaces",
            "shop",
        ])
        .unwrap();
        assert!(["billing", "ops", "shop"].iter().all(|n| two.contains(n)));
        assert!(!two.contains("other"));
        assert_eq!(
            parse(&["--discovery-namespaces", "*"]).unwrap(),
            super::Namespaces::All
        );
        let e = parse(&["--discovery-namespaces", "shop,Bad_NS"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--discovery-namespaces") && e.contains("Bad_NS"),
            "{e}"
        );
    }

    #[test]
    fn ca_secret_poll_is_at_least_a_second() {
        assert_eq!(
            super::parse_poll("2s").unwrap(),
            std::time::Duration::from_secs(2)
        );
        for bad in ["500ms", "0s", "soon"] {
            assert!(super::parse_poll(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ca_secret_must_be_namespace_slash_name() {
        let ok = super::parse_secret_ref("mycel-system/mycel-ca").unwrap();
        assert_eq!(
            (ok.namespace.as_str(), ok.name.as_str()),
            ("mycel-system", "mycel-ca")
        );
        for bad in ["mycel-ca", "/mycel-ca", "mycel-system/", "a/b/c", ""] {
            let e = super::parse_secret_ref(bad).unwrap_err();
            assert!(e.contains("NAMESPACE/NAME"), "{bad:?}: {e}");
        }
    }
}
