//! `mycelctl stat` and `mycelctl top`: success rate, requests per second
//! and latency percentiles per workload, per edge (caller → service) and
//! per route, from two reads of every proxy's `/metrics` a window apart.
//! The figures are computed by `mycel_api::stats`, shared with the
//! controller's dashboard; this module finds the proxies (`source`),
//! times the window and prints.

mod render;
mod source;
mod top;

use std::time::Duration;

use anyhow::bail;
use mycel_api::stats::{self, ProxyWindow, Report};

use crate::kubeconfig::KubeArgs;
use crate::meshpod::target::{self as meshtarget, Target, TargetError};
use crate::proxy_config::table::Format;
pub use top::TopArgs;

/// Where the proxies are and which of them to show; shared by `stat` and
/// `top`.
#[derive(Debug, clap::Args)]
pub struct Scope {
    /// One workload: deploy/NAME (in local mode, the workload name proxies
    /// register with) or pod/NAME (in local mode, a proxy ID). Default:
    /// every workload.
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Namespace to show (default: in a cluster, the kubeconfig context's;
    /// in local mode, every namespace).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace of the cluster.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Local mode: the controller's admin address HOST:PORT; its
    /// /debug/proxies lists the proxies and their admin addresses, and
    /// each proxy's /metrics is read there. Without it, the proxies are
    /// the meshed pods of the Kubernetes cluster, read through the API
    /// server.
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_admin: Option<String>,
    /// Time between the two reads of every proxy's metrics.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_window)]
    pub window: Duration,
    /// Time allowed for each API call and each proxy's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The window must leave time for requests to happen and not hang a
/// terminal: 100ms to 10 minutes.
fn parse_window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
        return Err(format!("{s} is outside 100ms..10m"));
    }
    Ok(d)
}

impl Scope {
    /// TARGET and -n, checked; `main` calls it after parsing so that a
    /// bad one is a usage error.
    pub fn check(&self) -> Result<Option<Target>, TargetError> {
        if let Some(ns) = &self.namespace {
            meshtarget::check_namespace(ns)?;
        }
        self.target
            .as_deref()
            .map(|t| meshtarget::parse(t, "stat"))
            .transpose()
    }
}

/// The proxies in scope, read twice a window apart, and the report over
/// them, filtered to the target.
pub async fn measure(scope: &Scope, proxies: &[source::Proxy]) -> anyhow::Result<Report> {
    let first = source::scrape_all(proxies, scope.timeout).await;
    tokio::time::sleep(scope.window).await;
    let second = source::scrape_all(proxies, scope.timeout).await;
    let mut windows = Vec::new();
    let mut failed = Vec::new();
    for ((p, a), b) in proxies.iter().zip(first).zip(second) {
        match (a, b) {
            (Ok(a), Ok(b)) => windows.push(ProxyWindow {
                proxy: p.info.clone(),
                before: a.samples,
                after: b.samples,
                elapsed: b.at.saturating_duration_since(a.at),
            }),
            (Err(e), _) | (_, Err(e)) => failed.push(format!("{}: {e}", p.describe())),
        }
    }
    for f in &failed {
        eprintln!("warning: cannot read the metrics of proxy {f}");
    }
    if windows.is_empty() && !proxies.is_empty() {
        bail!("no proxy's metrics could be read ({} tried)", proxies.len());
    }
    let target = scope.check()?;
    // A pod target is shown as itself, not merged into its workload.
    if let Some(Target::Pod(pod)) = &target {
        for w in &mut windows {
            if &w.proxy.proxy_id == pod {
                w.proxy.workload = pod.clone();
            }
        }
    }
    let mut report = stats::compute(&windows);
    let name = match &target {
        Some(Target::Pod(n)) | Some(Target::Deployment(n)) => Some(n.as_str()),
        None => None,
    };
    report.retain(scope.namespace.as_deref(), name);
    if let Some(t) = &target {
        if report.workloads.is_empty() {
            bail!("{t}: no such meshed workload among the proxies read");
        }
    }
    Ok(report)
}

/// The proxies `scope` covers.
pub async fn proxies(scope: &Scope) -> anyhow::Result<Vec<source::Proxy>> {
    let mut all = match &scope.controller_admin {
        Some(addr) => source::local(addr).await?,
        None => {
            let client = crate::meshpod::cluster::connect(&scope.kube, scope.timeout).await?;
            let ns = match (&scope.namespace, scope.all_namespaces) {
                (_, true) => None,
                (Some(n), false) => Some(n.clone()),
                (None, false) => Some(client.default_namespace().to_string()),
            };
            // Callees elsewhere are still read, for the server side of
            // edges leaving the namespace: only in -A mode.
            source::cluster(&client, ns.as_deref(), scope.timeout).await?
        }
    };
    all.sort_by(|a, b| a.info.proxy_id.cmp(&b.info.proxy_id));
    Ok(all)
}

pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let proxies = proxies(&args.scope).await?;
    if proxies.is_empty() {
        bail!("no meshed proxies found{}", render::where_(&args.scope));
    }
    let report = measure(&args.scope, &proxies).await?;
    match crate::proxy_config::table::document(args.output, &report)? {
        Some(doc) => print!("{doc}"),
        None => print!("{}", render::stat(&report)),
    }
    Ok(())
}

pub use top::run as run_top;
