//! The `token` subcommands, shared by `mycelctl token` and
//! `mycel-controller token` so both spell flags and output the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use time::OffsetDateTime;

use super::{
    create_token, list_tokens, parse_labels, revoke_token, AddressRange, TokenError, TokenRecord,
    TokenSpec,
};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token for one workload; prints it once on stdout (its
    /// id goes to stderr).
    Create {
        /// The controller's data directory (tokens.json lives there).
        #[arg(long, value_name = "PATH")]
        data_dir: PathBuf,
        /// Namespace of the workload the token is for.
        #[arg(long, value_name = "NS")]
        namespace: String,
        /// Service account of the workload the token is for.
        #[arg(long, value_name = "SA")]
        service_account: String,
        /// A label the workload registers with (key=value, repeatable). The
        /// proxy's labels must equal this set exactly.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// An address or CIDR the workload may register besides the source
        /// address of its connection (repeatable).
        #[arg(long = "address", value_name = "IP|CIDR")]
        addresses: Vec<AddressRange>,
        /// How long the token may be used to join (e.g. 24h); joined
        /// workloads keep renewing after it expires. Default: no expiry.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List tokens: id, identity, labels, created, expires, revoked.
    List {
        /// The controller's data directory.
        #[arg(long, value_name = "PATH")]
        data_dir: PathBuf,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: it can no longer join, and certificates issued
    /// for it can no longer register or renew.
    Revoke {
        /// The controller's data directory.
        #[arg(long, value_name = "PATH")]
        data_dir: PathBuf,
        /// The id `token list` shows.
        id: String,
    },
}

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    namespace: &'a str,
    service_account: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    addresses: Vec<String>,
    created: String,
    expires: Option<String>,
    revoked: Option<String>,
}

fn when(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn row(t: &TokenRecord) -> Row<'_> {
    Row {
        id: t.id(),
        namespace: &t.namespace,
        service_account: &t.service_account,
        labels: &t.labels,
        addresses: t.addresses.iter().map(ToString::to_string).collect(),
        created: when(t.created_unix),
        expires: t.expires_unix.map(when),
        revoked: t.revoked_unix.map(when),
    }
}

fn labels_text(t: &TokenRecord) -> String {
    if t.labels.is_empty() {
        return "-".into();
    }
    t.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `token list` table.
pub fn table(tokens: &[TokenRecord]) -> String {
    let mut out = format!(
        "{:<16}  {:<15}  {:<20}  {:<30}  {:<20}  {:<20}  {}\n",
        "ID", "NAMESPACE", "SERVICE-ACCOUNT", "LABELS", "CREATED", "EXPIRES", "REVOKED"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<16}  {:<15}  {:<20}  {:<30}  {:<20}  {:<20}  {}\n",
            t.id(),
            t.namespace,
            t.service_account,
            labels_text(t),
            when(t.created_unix),
            t.expires_unix.map(when).unwrap_or_else(|| "never".into()),
            t.revoked_unix.map(when).unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

/// Runs one token subcommand, printing to stdout (and the new token's id to
/// stderr).
pub fn run(command: TokenCommand) -> Result<(), TokenError> {
    match command {
        TokenCommand::Create {
            data_dir,
            namespace,
            service_account,
            labels,
            addresses,
            ttl,
        } => {
            let spec = TokenSpec {
                namespace,
                service_account,
                labels: parse_labels(&labels)?,
                addresses,
                ttl,
            };
            let (token, rec) = create_token(&data_dir, &spec)?;
            println!("{token}");
            eprintln!("token id {}", rec.id());
            Ok(())
        }
        TokenCommand::List { data_dir, json } => {
            let tokens = list_tokens(&data_dir)?;
            if json {
                let rows: Vec<Row<'_>> = tokens.iter().map(row).collect();
                let text = serde_json::to_string_pretty(&rows).map_err(|e| TokenError::Parse {
                    path: data_dir.clone(),
                    message: e.to_string(),
                })?;
                println!("{text}");
            } else {
                print!("{}", table(&tokens));
            }
            Ok(())
        }
        TokenCommand::Revoke { data_dir, id } => {
            let rec = revoke_token(&data_dir, &id)?;
            println!(
                "revoked token {} ({}/{})",
                rec.id(),
                rec.namespace,
                rec.service_account
            );
            Ok(())
        }
    }
}
