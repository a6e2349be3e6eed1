//! `mycelctl proxy-config TARGET [SECTION]`: what one proxy holds, read from
//! its admin port (`/config_dump`, `/certs`) and printed as tables. The
//! proxy is named by its admin address or, in a cluster, by its pod or
//! Deployment (`admin`, `target`). The dump is read as loose JSON rather
//! than the sidecar's own types: mycelctl does not link the proxy, and a
//! field it does not know is shown as `-` rather than failing the whole
//! command.

mod admin;
mod sections;
pub mod table;
mod target;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;

use crate::kubeconfig::TargetArgs;
use crate::meshpod::cluster::PodSource;
use admin::Admin;
use table::Format;
use target::{ArgError, ProxyTarget};

#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// The proxy: its admin address HOST:PORT (its --admin-addr), or a
    /// meshed workload in a Kubernetes cluster: deploy/NAME (a pod of the
    /// Deployment with a ready proxy), pod/NAME, or a pod's NAME with -n.
    /// A pod's admin is read through the API server (the pods/proxy
    /// subresource: no port is exposed or forwarded).
    #[arg(value_name = "TARGET")]
    pub proxy: String,
    /// What to show (default: every section).
    #[arg(value_enum, default_value_t = Section::All)]
    pub section: Section,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(flatten)]
    pub cluster: TargetArgs,
    /// In a cluster, time allowed for each API call and for the proxy's
    /// answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ProxyConfigArgs {
    /// What TARGET names. Whether a bare NAME is a pod depends on the
    /// cluster flags, so clap cannot check it alone: `main` calls this
    /// after parsing, to refuse a bad TARGET as a usage error.
    pub fn target(&self) -> Result<ProxyTarget, ArgError> {
        if let Some(ns) = &self.cluster.namespace {
            crate::meshpod::target::check_namespace(ns)?;
        }
        target::classify(&self.proxy, self.cluster.given())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Every section below.
    All,
    /// Subscribed services: state, ports, VIPs, endpoint counts.
    Services,
    /// Endpoints of each service: address, identity, readiness, zone, weight.
    Endpoints,
    /// Traffic policy of each service (load balancing, retries, timeouts...).
    Policies,
    /// Gateway API routes attached to each service.
    Routes,
    /// Who may call this proxy's workload: the default and each policy.
    Authz,
    /// The proxy's certificate.
    Certs,
}

impl Section {
    fn wants(self, s: Section) -> bool {
        self == Section::All || self == s
    }
}

/// The `-o json|yaml` document: the sections asked for.
#[derive(Debug, Default, Serialize)]
struct Document {
    proxy: String,
    /// The pod read through the API server, for a cluster target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<PodSource>,
    synced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<Vec<sections::ServiceRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<Vec<sections::EndpointRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<sections::PolicyRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<sections::RouteRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authz: Option<sections::Authz>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certs: Option<sections::CertRow>,
}

pub async fn run(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let target = args.target()?;
    let admin = Admin::open(&target, &args.cluster, args.timeout).await?;
    let wants_dump = args.section != Section::Certs;
    let dump = match wants_dump {
        true => Some(admin.get_json("/config_dump").await?),
        false => None,
    };
    let mut problems = Vec::new();
    let certs = match args.section.wants(Section::Certs) {
        true => match admin.get_json("/certs").await {
            Ok(v) => Some(sections::cert(&v)),
            Err(e) => {
                problems.push(mycel_api::report::one_line(e.as_ref()));
                None
            }
        },
        false => None,
    };
    let empty = Value::Null;
    let dump_ref = dump.as_ref().unwrap_or(&empty);
    let snapshot = &dump_ref["snapshot"];
    let synced = dump_ref["synced"].as_bool().unwrap_or(false);
    let s = args.section;
    let doc = Document {
        proxy: admin.name().to_string(),
        pod: admin.pod().cloned(),
        synced,
        services: s
            .wants(Section::Services)
            .then(|| sections::services(snapshot)),
        endpoints: s
            .wants(Section::Endpoints)
            .then(|| sections::endpoints(snapshot)),
        policies: s
            .wants(Section::Policies)
            .then(|| sections::policies(snapshot)),
        routes: s.wants(Section::Routes).then(|| sections::routes(snapshot)),
        authz: s.wants(Section::Authz).then(|| sections::authz(snapshot)),
        certs,
    };
    match table::document(args.output, &doc)? {
        Some(text) => print!("{text}"),
        None => print!(
            "{}{}",
            pod_heading(&doc),
            sections::render(&doc_tables(&doc))
        ),
    }
    if dump.is_some() && !synced {
        problems.insert(0, not_synced(&admin.phrase(), dump_ref));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

fn doc_tables(doc: &Document) -> Vec<(&'static str, table::Table)> {
    let mut out = Vec::new();
    if let Some(rows) = &doc.services {
        out.push(("Services", sections::services_table(rows)));
    }
    if let Some(rows) = &doc.endpoints {
        out.push(("Endpoints", sections::endpoints_table(rows)));
    }
    if let Some(rows) = &doc.policies {
        out.push(("Traffic policies", sections::policies_table(rows)));
    }
    if let Some(rows) = &doc.routes {
        out.push(("Routes", sections::routes_table(rows)));
    }
    if let Some(a) = &doc.authz {
        out.push(("Authorization (inbound)", sections::authz_table(a)));
    }
    if let Some(c) = &doc.certs {
        out.push(("Certificate", sections::certs_table(c)));
    }
    out
}

/// For a cluster target, which pod's proxy the tables are of (for a
/// Deployment, which of its pods and why); nothing for an address, which
/// the user gave exactly.
fn pod_heading(doc: &Document) -> String {
    let Some(pod) = &doc.pod else {
        return String::new();
    };
    let mut out = format!(
        "Proxy: {} (its admin port {}, through the API server)\n",
        doc.proxy, pod.admin_port
    );
    if let Some(why) = &pod.selected {
        let _ = writeln!(out, "Selected: {why}");
    }
    out.push('\n');
    out
}

/// Why a proxy is not synced, from its dump's discovery state; `proxy` is
/// "the proxy at ADDR" or "the proxy of pod NS/NAME".
fn not_synced(proxy: &str, dump: &Value) -> String {
    let d = &dump["discovery"];
    let why = match (d["connected"].as_bool(), d["last_error"].as_str()) {
        (_, Some(e)) => format!("last discovery error: {e}"),
        (Some(true), None) => "connected, no discovery response applied yet".to_string(),
        _ => "not connected to the controller".to_string(),
    };
    format!("{proxy} is not synced with the controller ({why})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_target_is_named_above_the_tables() {
        let mut doc = Document {
            proxy: "127.0.0.1:15000".into(),
            ..Document::default()
        };
        assert_eq!(pod_heading(&doc), "");
        doc.proxy = "deploy/web in shop: pod web-1".into();
        doc.pod = Some(PodSource {
            namespace: "shop".into(),
            name: "web-1".into(),
            admin_port: 15000,
            selected: Some("picked from deployment shop/web: ...".into()),
        });
        assert_eq!(
            pod_heading(&doc),
            "Proxy: deploy/web in shop: pod web-1 (its admin port 15000, through the API server)\n\
             Selected: picked from deployment shop/web: ...\n\n"
        );
    }

    #[test]
    fn not_synced_says_why() {
        let said = |discovery: Value| {
            not_synced(
                "the proxy at p:1",
                &serde_json::json!({ "discovery": discovery }),
            )
        };
        assert_eq!(
            said(serde_json::json!({"connected": false, "last_error": "refused"})),
            "the proxy at p:1 is not synced with the controller (last discovery error: refused)"
        );
        assert!(said(serde_json::json!({"connected": true}))
            .contains("no discovery response applied yet"));
        assert!(said(Value::Null).contains("not connected to the controller"));
    }
}
