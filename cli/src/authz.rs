//! `mycelctl authz explain`: whether a caller may make a request to a
//! service, and which policy and rule decide it, for each workload behind
//! the service. The controller answers (`/debug/authz/explain` on its admin
//! port) from its live config with the same decision code the sidecars
//! run; this side only checks the question, asks, and prints.

mod args;
mod render;

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;

use crate::demo::wait;
use crate::proxy_config::table::{self, Format};
use args::{Caller, Target};

/// The controller's admin address when it runs with its defaults (its
/// `--admin-addr`); a test holds it equal to the controller's.
pub const DEFAULT_CONTROLLER_ADMIN: &str = "127.0.0.1:15014";
/// The controller's default `--trust-domain`, for `--from NS/SA`.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Exit status of a question the controller refuses (unknown service, no
/// such port): a usage error, like a malformed flag.
const USAGE: i32 = 2;

#[derive(Debug, clap::Subcommand)]
pub enum AuthzCommand {
    /// Explain whether a caller may call a service, and why.
    ///
    /// For each workload behind the service (a service selects workloads by
    /// labels, and the policies selecting each may differ), prints ALLOW or
    /// DENY and what decided it: `DENY policy shop/x (rule 0)`, `ALLOW
    /// policy shop/y (rule 1)`, `no ALLOW policy matched`, or the mesh
    /// default (`default: mesh-authenticated`), plus the AUDIT policy that
    /// matched, if any. Computed by the controller from its live config with
    /// the decision code the sidecars enforce. A service with no workload
    /// yet is explained for a workload carrying its selector's labels.
    ///
    /// Exit status: 0 when every workload allows, 1 when any denies (or on
    /// an error such as an unreachable controller), 2 for a bad question
    /// (malformed flag, unknown service or port).
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The caller: a SPIFFE ID, NAMESPACE/SERVICE-ACCOUNT, or
    /// `unauthenticated` (a plaintext caller).
    #[arg(long, value_name = "SPIFFE-ID|NS/SA", value_parser = args::caller)]
    pub from: Caller,
    /// The service called, `<name>.<namespace>`, and optionally one of its
    /// ports (default: every port). The service port is mapped to the
    /// workload port, which policies' `to.ports` name.
    #[arg(long, value_name = "SERVICE[:PORT]", value_parser = args::target)]
    pub to: Target,
    /// Request path (HTTP ports; for gRPC `/package.Service/Method`).
    #[arg(long, value_name = "PATH", default_value = "/", value_parser = args::path)]
    pub path: String,
    /// Request method.
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// Request host, without port (default: `<name>.<namespace>`).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// A request header; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = args::header)]
    pub headers: Vec<(String, String)>,
    /// The caller's address, for policies with ipBlocks.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<IpAddr>,
    /// Trust domain of a --from NS/SA caller (the controller's
    /// --trust-domain).
    #[arg(long, value_name = "DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The controller's admin address (its --admin-addr).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROLLER_ADMIN)]
    pub controller_admin: SocketAddr,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

pub async fn run(command: AuthzCommand) -> anyhow::Result<()> {
    match command {
        AuthzCommand::Explain(a) => explain(a).await,
    }
}

async fn explain(a: ExplainArgs) -> anyhow::Result<()> {
    let from = a
        .from
        .spiffe_id(&a.trust_domain)
        .context("--from with --trust-domain")?;
    let mut query = vec![("from", from), ("to", a.to.service.to_string())];
    if let Some(port) = a.to.port {
        query.push(("port", port.to_string()));
    }
    query.push(("path", a.path.clone()));
    query.push(("method", a.method.clone()));
    if let Some(host) = &a.host {
        query.push(("host", host.clone()));
    }
    for (name, value) in &a.headers {
        query.push(("header", format!("{name}:{value}")));
    }
    if let Some(ip) = a.source_ip {
        query.push(("source_ip", ip.to_string()));
    }
    let path = format!("/debug/authz/explain?{}", args::encode_query(&query));
    let answer = wait::get(a.controller_admin, "localhost", &path)
        .await
        .with_context(|| {
            format!(
                "cannot reach the controller's admin at {} (--controller-admin)",
                a.controller_admin
            )
        })?;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "{} answered HTTP {} without JSON: is it a Mycel controller's admin port, and recent enough to explain?",
            a.controller_admin, answer.status
        )
    })?;
    match answer.status {
        200 => {}
        400 | 404 => {
            // The shared error path ends every failure with status 1, which
            // here means DENY; a bad question must not read as one.
            let why = body["error"].as_str().unwrap_or("refused");
            eprintln!("error: {why}");
            std::process::exit(USAGE);
        }
        status => anyhow::bail!(
            "the controller answered HTTP {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        ),
    }
    let explanation: render::Explanation = serde_json::from_value(body.clone())
        .context("the controller's explanation has an unexpected shape")?;
    match table::document(a.output, &body)? {
        Some(text) => print!("{text}"),
        None => print!("{}", render::text(&explanation, &a.method, &a.path)),
    }
    match render::denial(&explanation) {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}
