//! `mycelctl cert`: what certificate chains hold and whether they verify
//! against a trust bundle. Sources differ (a PEM file or standard input, a
//! live TLS handshake, a pod's proxy read through the API server), the
//! judgment does not: each source yields DER certificates for the pure
//! `describe` core, and `render` prints its report. `cert check` does the
//! same for every meshed pod and prints one table (`fleet`).

mod cluster;
mod describe;
mod fleet;
mod handshake;
mod render;
mod source;
mod target;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::kubeconfig::{KubeArgs, TargetArgs};
use crate::meshpod::cluster::{self as meshpod, ClusterError, PodSource};
use crate::meshpod::target::{self as podtarget, Target};
use describe::Usage;
use render::{Document, Style};
use source::PemSource;
use target::Source;

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Show each certificate of a chain (SPIFFE ID, serial, issuer,
    /// validity, key type) and whether it verifies against a trust bundle.
    ///
    /// The chain comes from a PEM file (leaf first, then intermediates), from
    /// standard input with `-`, from what a TLS server presents with
    /// --handshake HOST:PORT, or from a meshed pod's proxy in a Kubernetes
    /// cluster: `deploy/NAME` (a pod of the Deployment with a ready proxy,
    /// named in the output), `pod/NAME`, or a pod's bare NAME together with
    /// -n NS. The pod's chain is read through the API server (the proxy's
    /// admin `/certs` through the pods/proxy subresource: no port is
    /// exposed or forwarded) and verified against the trust bundle the mesh
    /// publishes in the pod's namespace (ConfigMap mycel-trust-bundle), or
    /// the proxy's own bundle when that cannot be read.
    ///
    /// A Mycel mesh port asks for a client certificate, which mycelctl does
    /// not send: the chain is still shown (TLS 1.3 sends it first) and the
    /// output says the server requires one.
    ///
    /// Exit status: 0 when every certificate of the chain is within its
    /// validity period and the chain verifies (where there is a trust bundle:
    /// --ca-root, or the cluster's); 1 otherwise, or on an error (unreadable
    /// file, no certificate, no connection, no such pod or deployment, pod
    /// not meshed, proxy not ready, refused by the API server).
    Inspect(InspectArgs),
    /// List every meshed pod's certificate (SPIFFE ID, expiry, time left,
    /// whether it verifies against its namespace's trust bundle) in a table.
    ///
    /// Each pod labelled mycel.io/meshed has its proxy's chain read through
    /// the API server, as `cert inspect` does. Exit status: 1 when any pod's
    /// certificate cannot be read (proxy not ready, refused, no answer),
    /// does not verify, has expired, or has less than --warn left; the
    /// error names each such pod and why.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// PEM file with one or more certificates, `-` for standard input, or a
    /// meshed workload: deploy/NAME, pod/NAME, or a pod's NAME with -n.
    /// A file at a path like deploy/NAME is ./deploy/NAME.
    #[arg(
        value_name = "FILE|TARGET",
        required_unless_present = "handshake",
        conflicts_with = "handshake"
    )]
    pub file: Option<PathBuf>,
    /// Connect to HOST:PORT and inspect the chain the server presents.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["namespace", "kubeconfig", "context"])]
    pub handshake: Option<String>,
    /// Server name to send (SNI) with --handshake (default: the host).
    #[arg(long, value_name = "NAME", requires = "handshake")]
    pub server_name: Option<String>,
    #[command(flatten)]
    pub cluster: TargetArgs,
    /// Time allowed to connect, and again for the handshake; in a cluster,
    /// for each API call and for the proxy's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Trust bundle (PEM roots) to verify the chain against, e.g. the mesh
    /// root the proxy is given with the same flag. Without it a file's or a
    /// handshake's chain is shown but not verified, and a pod's is verified
    /// against its namespace's published bundle.
    #[arg(long, value_name = "PATH")]
    pub ca_root: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Check the meshed pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Namespace to check (default: the kubeconfig context's).
    #[arg(
        short = 'n',
        long,
        value_name = "NS",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Fail a pod whose chain has a certificate with less than this left. A
    /// healthy proxy renews at 70% of its certificate's life, so with the
    /// default 24h certificates it never holds one with less than about 7h
    /// left; shorter-lived certificates need a smaller value.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = humantime::parse_duration)]
    pub warn: Duration,
    /// Time allowed for each API call and for each proxy's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text; marks coloured only on a terminal.
    Text,
    /// One JSON document with the same content (its fields: docs/architecture.md, `mycelctl cert`).
    Json,
}

pub async fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Inspect(args) => inspect(args).await,
        CertCommand::Check(args) => check(args).await,
    }
}

/// A chain to describe, and what is known of where it came from.
struct Gathered {
    source: String,
    handshake: Option<handshake::Handshake>,
    pod: Option<PodSource>,
    chain: Vec<Vec<u8>>,
    roots: Option<Vec<Vec<u8>>>,
    trust_bundle_source: Option<String>,
    usage: Usage,
}

async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    // Read the bundle first: a wrong --ca-root path should fail before any
    // connection is made.
    let roots = match &args.ca_root {
        Some(path) => Some(
            PemSource::File(path.clone())
                .certificates()
                .context("reading the trust bundle (--ca-root)")?,
        ),
        None => None,
    };
    let cluster_flags = args.cluster.given();
    let mut got = match (&args.handshake, &args.file) {
        (Some(addr), _) => {
            let h = handshake::capture(addr, args.server_name.as_deref(), args.timeout).await?;
            Gathered {
                source: format!("handshake with {addr}"),
                chain: h.chain.clone(),
                handshake: Some(h),
                pod: None,
                roots: None,
                trust_bundle_source: None,
                usage: Usage::Server,
            }
        }
        (None, Some(arg)) => match target::classify(arg, cluster_flags)? {
            Source::File(path) => {
                let src = PemSource::from_arg(&path);
                let chain = src.certificates()?;
                Gathered {
                    source: src.name(),
                    handshake: None,
                    pod: None,
                    chain,
                    roots: None,
                    trust_bundle_source: None,
                    usage: Usage::Any,
                }
            }
            Source::Cluster(t) => from_cluster(&args, &t, roots.is_none()).await?,
        },
        (None, None) => bail!(
            "give a PEM FILE, `-` for standard input, --handshake HOST:PORT, or {}",
            podtarget::ACCEPTED
        ),
    };
    if let (Some(roots), Some(path)) = (roots, &args.ca_root) {
        got.roots = Some(roots);
        got.trust_bundle_source = Some(format!("--ca-root {}", path.display()));
    }
    let report = describe::describe(
        &got.chain,
        got.roots.as_deref(),
        SystemTime::now(),
        got.usage,
    )
    .with_context(|| format!("inspecting {}", got.source))?;
    let doc = Document {
        source: &got.source,
        handshake: got.handshake.as_ref(),
        pod: got.pod.as_ref(),
        trust_bundle_source: got.trust_bundle_source.as_deref(),
        report: &report,
    };
    match args.output {
        Format::Json => println!("{}", render::json(&doc)?),
        Format::Text => print!("{}", render::text(&doc, style())),
    }
    if !report.ok {
        bail!("{}: {}", got.source, failure(&report));
    }
    Ok(())
}

fn style() -> Style {
    Style {
        color: std::io::stdout().is_terminal(),
    }
}

/// The chain of the pod `t` names, and, unless the user gave roots
/// (`want_bundle` false), the trust bundle of its namespace.
async fn from_cluster(
    args: &InspectArgs,
    t: &Target,
    want_bundle: bool,
) -> anyhow::Result<Gathered> {
    let client = meshpod::connect(&args.cluster.kube, args.timeout).await?;
    let namespace = args.cluster.namespace.as_deref();
    let reached = meshpod::reach(&client, namespace, t, args.timeout).await?;
    let proxy = cluster::read_proxy(&client, &reached.pod, args.timeout).await?;
    let (roots, from) = if want_bundle {
        let r = cluster::bundle_ref(&reached.pod);
        let published = cluster::published_bundle(&client, &r, args.timeout).await;
        let (roots, from) = cluster::choose_bundle(&r, published, &proxy.roots);
        (Some(roots), Some(from))
    } else {
        (None, None)
    };
    Ok(Gathered {
        source: reached.description,
        handshake: None,
        pod: Some(reached.source),
        chain: proxy.chain,
        roots,
        trust_bundle_source: from,
        usage: Usage::Any,
    })
}

/// The one-line reason for a non-zero exit.
fn failure(report: &describe::Report) -> String {
    if report.verification.status == describe::VerifyStatus::NotVerified {
        return format!("chain not verified: {}", report.verification.reason);
    }
    let bad = report
        .chain
        .iter()
        .filter(|c| c.validity != describe::Validity::Valid)
        .count();
    format!("{bad} certificate(s) of the chain outside their validity period")
}

/// How many proxies are read at once: enough that a slow one does not hold
/// up the rest, few enough not to load the API server.
const PARALLEL_READS: usize = 8;

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let client = meshpod::connect(&args.kube, args.timeout).await?;
    let namespace = match (&args.namespace, args.all_namespaces) {
        (_, true) => None,
        (Some(ns), false) => Some(ns.clone()),
        (None, false) => Some(client.default_namespace().to_string()),
    };
    if let Some(ns) = &namespace {
        podtarget::check_namespace(ns)?;
    }
    let pods = cluster::meshed_pods(&client, namespace.as_deref(), args.timeout).await?;
    let bundles = bundles(&client, &pods, args.timeout).await;
    let now = SystemTime::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_READS));
    let mut reads = tokio::task::JoinSet::new();
    for pod in pods {
        let (client, limit) = (client.clone(), limit.clone());
        let timeout = args.timeout;
        let published = bundles.get(&cluster::bundle_ref(&pod)).cloned();
        reads.spawn(async move {
            // A closed semaphore cannot happen (it is never closed); read
            // anyway rather than fail.
            let _slot = limit.acquire().await.ok();
            let outcome = check_one(&client, &pod, published, now, timeout).await;
            (meshpod::pod_key(&pod), outcome)
        });
    }
    let mut rows = Vec::new();
    while let Some(done) = reads.join_next().await {
        let ((ns, name), outcome) = done.context("reading a proxy")?;
        rows.push(fleet::row(&ns, &name, outcome, args.warn));
    }
    rows.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    let failed = fleet::failures(&rows);
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&fleet::Document {
                ok: failed.is_none(),
                namespace: namespace.as_deref(),
                warn_seconds: args.warn.as_secs(),
                pods: &rows,
            })?
        ),
        Format::Text => {
            let scope = match &namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "in all namespaces".to_string(),
            };
            print!("{}", fleet::text(&rows, &scope, args.warn, style()));
        }
    }
    match failed {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

type Published = Result<Option<Vec<Vec<u8>>>, String>;

/// Each distinct trust bundle the pods mount, read once.
async fn bundles(
    client: &Client,
    pods: &[Pod],
    timeout: Duration,
) -> std::collections::BTreeMap<cluster::BundleRef, Published> {
    let mut out = std::collections::BTreeMap::new();
    for pod in pods {
        let r = cluster::bundle_ref(pod);
        if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(r) {
            let got = cluster::published_bundle(client, slot.key(), timeout).await;
            slot.insert(got);
        }
    }
    out
}

async fn check_one(
    client: &Client,
    pod: &Pod,
    published: Option<Published>,
    now: SystemTime,
    timeout: Duration,
) -> fleet::Outcome {
    let proxy = match cluster::read_proxy(client, pod, timeout).await {
        Ok(p) => p,
        // The row names the pod already.
        Err(ClusterError::Pod { problem, .. }) => {
            return fleet::Outcome::Unreadable(mycel_api::report::one_line(&problem))
        }
        Err(e) => return fleet::Outcome::Unreadable(mycel_api::report::one_line(&e)),
    };
    let r = cluster::bundle_ref(pod);
    let published = published.unwrap_or(Ok(None));
    let (roots, from) = cluster::choose_bundle(&r, published, &proxy.roots);
    match describe::describe(&proxy.chain, Some(&roots), now, Usage::Any) {
        Ok(report) => fleet::Outcome::Read {
            report,
            trust_bundle_source: from,
        },
        Err(e) => fleet::Outcome::Unreadable(e.to_string()),
    }
}
