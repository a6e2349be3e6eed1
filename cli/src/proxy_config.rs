//! `mycelctl proxy-config ADDR [SECTION]`: what one proxy holds, read from
//! its admin port (`/config_dump`, `/certs`) and printed as tables. The
//! dump is read as loose JSON rather than the sidecar's own types: mycelctl
//! does not link the proxy, and a field it does not know is shown as `-`
//! rather than failing the whole command.

mod sections;
pub mod table;

use std::net::SocketAddr;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::demo::wait;
use table::Format;

#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// The proxy's admin address, HOST:PORT (its --admin-addr).
    #[arg(value_name = "HOST:PORT", value_parser = parse_addr)]
    pub proxy: String,
    /// What to show (default: every section).
    #[arg(value_enum, default_value_t = Section::All)]
    pub section: Section,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
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

/// Refuses what cannot be an admin address before anything is dialled.
fn parse_addr(text: &str) -> Result<String, String> {
    if text.contains('/') {
        return Err(format!(
            "{text:?}: only HOST:PORT (the proxy's admin address) is supported; Kubernetes targets such as pod/NAME are not yet"
        ));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} is not HOST:PORT (the proxy's admin address, e.g. 127.0.0.1:15000)"
        )),
    }
}

/// The `-o json|yaml` document: the sections asked for.
#[derive(Debug, Default, Serialize)]
struct Document {
    proxy: String,
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
    let addr = resolve(&args.proxy).await?;
    let wants_dump = args.section != Section::Certs;
    let dump = match wants_dump {
        true => Some(get_json(addr, &args.proxy, "/config_dump").await?),
        false => None,
    };
    let mut problems = Vec::new();
    let certs = match args.section.wants(Section::Certs) {
        true => match get_json(addr, &args.proxy, "/certs").await {
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
        proxy: args.proxy.clone(),
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
        None => print!("{}", sections::render(&doc_tables(&doc))),
    }
    if dump.is_some() && !synced {
        problems.insert(0, not_synced(&args.proxy, dump_ref));
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

/// Why a proxy is not synced, from its dump's discovery state.
fn not_synced(proxy: &str, dump: &Value) -> String {
    let d = &dump["discovery"];
    let why = match (d["connected"].as_bool(), d["last_error"].as_str()) {
        (_, Some(e)) => format!("last discovery error: {e}"),
        (Some(true), None) => "connected, no discovery response applied yet".to_string(),
        _ => "not connected to the controller".to_string(),
    };
    format!("the proxy at {proxy} is not synced with the controller ({why})")
}

async fn resolve(proxy: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(proxy)
        .await
        .with_context(|| format!("resolving {proxy}"))?
        .next()
        .with_context(|| format!("{proxy} resolves to no address"))
}

async fn get_json(addr: SocketAddr, proxy: &str, path: &str) -> anyhow::Result<Value> {
    let answer = wait::get(addr, "localhost", path)
        .await
        .with_context(|| format!("cannot reach the proxy's admin at {proxy}"))?;
    let body: Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "{proxy}{path} answered HTTP {} without JSON: is {proxy} a Mycel proxy's admin port?",
            answer.status
        )
    })?;
    if answer.status != 200 {
        let why = body["error"].as_str().unwrap_or("no reason given");
        bail!("{proxy}{path} answered HTTP {}: {why}", answer.status);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:15000").as_deref(),
            Ok("127.0.0.1:15000")
        );
        assert!(parse_addr("localhost:15000").is_ok());
        for (bad, says) in [
            ("pod/ratings-0", "pod/NAME are not yet"),
            ("127.0.0.1", "is not HOST:PORT"),
            (":15000", "is not HOST:PORT"),
            ("host:port", "is not HOST:PORT"),
        ] {
            let err = parse_addr(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn not_synced_says_why() {
        let said =
            |discovery: Value| not_synced("p:1", &serde_json::json!({ "discovery": discovery }));
        assert_eq!(
            said(serde_json::json!({"connected": false, "last_error": "refused"})),
            "the proxy at p:1 is not synced with the controller (last discovery error: refused)"
        );
        assert!(said(serde_json::json!({"connected": true}))
            .contains("no discovery response applied yet"));
        assert!(said(Value::Null).contains("not connected to the controller"));
    }
}
