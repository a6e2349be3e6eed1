//! `mycelctl ca status` and `mycelctl ca rotate`: the trust-anchor rotation
//! as the controller's admin port reports and starts it (local mode; the
//! admin port listens on loopback unless the operator moved it, and the
//! controller accepts `POST /ca/rotate` from loopback peers only).

mod client;
mod render;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

pub use render::Status;

/// The controller's default admin address (`mycel-controller --admin-addr`).
const DEFAULT_ADMIN: &str = "127.0.0.1:15014";

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Show the rotation phase, the trusted roots and which root each
    /// connected proxy's certificate chains to. Exits 1 when a rotation is
    /// stuck (e.g. proxies still on the old root after the overlap).
    Status(StatusArgs),
    /// Start a trust-anchor rotation (local mode): to a newly generated root,
    /// or to the root and issuer given as PEM files. Prints the status.
    Rotate(RotateArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Text,
    /// The controller's `/ca/status` document.
    Json,
    /// The same as YAML.
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The controller's admin address.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
    pub controller_admin: SocketAddr,
    /// Time allowed for the controller's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The controller's admin address.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
    pub controller_admin: SocketAddr,
    /// The new root certificate (PEM); without it the controller generates
    /// a new root and issuer.
    #[arg(long, value_name = "PATH", requires_all = ["issuer_cert", "issuer_key"])]
    pub root_cert: Option<PathBuf>,
    /// The new root's key (PEM), only if the controller should rotate the
    /// issuer itself later; a root kept offline is not needed.
    #[arg(long, value_name = "PATH", requires = "root_cert")]
    pub root_key: Option<PathBuf>,
    /// The new issuer (intermediate) certificate, signed by the new root.
    #[arg(long, value_name = "PATH", requires_all = ["root_cert", "issuer_key"])]
    pub issuer_cert: Option<PathBuf>,
    /// The new issuer's private key (PKCS#8 PEM).
    #[arg(long, value_name = "PATH", requires_all = ["root_cert", "issuer_cert"])]
    pub issuer_key: Option<PathBuf>,
    /// How long both roots stay trusted after new certificates switch to
    /// the new root (default: the controller's --rotation-overlap).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub overlap: Option<Duration>,
    /// Time allowed for the controller's answer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub async fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Status(args) => status(args).await,
        CaCommand::Rotate(args) => rotate(args).await,
    }
}

fn print(status: &Status, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => print!("{}", render::table(status)),
        Format::Json => println!("{}", serde_json::to_string_pretty(status)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(status)?),
    }
    Ok(())
}

/// Prints the status; an error (exit 1, after the output) when stuck.
async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let answer = client::get(args.controller_admin, "/ca/status", args.timeout)
        .await
        .with_context(|| format!("asking the controller at {}", args.controller_admin))?;
    if answer.status != 200 {
        bail!(
            "the controller at {} answered {}: {}",
            args.controller_admin,
            answer.status,
            answer.body.trim()
        );
    }
    let status: Status = serde_json::from_str(&answer.body)
        .context("the controller's /ca/status is not a status document")?;
    print(&status, args.output)?;
    match render::verdict(&status) {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

fn read(path: &Option<PathBuf>, flag: &str) -> anyhow::Result<Option<String>> {
    path.as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("{flag} {}", p.display())))
        .transpose()
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    // Files are read here and sent over the loopback admin port, so the
    // controller needs no access to where the user keeps them.
    let body = serde_json::json!({
        "root_cert_pem": read(&args.root_cert, "--root-cert")?,
        "root_key_pem": read(&args.root_key, "--root-key")?,
        "issuer_cert_pem": read(&args.issuer_cert, "--issuer-cert")?,
        "issuer_key_pem": read(&args.issuer_key, "--issuer-key")?,
        "overlap_secs": args.overlap.map(|d| d.as_secs().max(1)),
    });
    let answer = client::post(
        args.controller_admin,
        "/ca/rotate",
        body.to_string(),
        args.timeout,
    )
    .await
    .with_context(|| format!("asking the controller at {}", args.controller_admin))?;
    if answer.status != 200 {
        bail!("rotation refused: {}", answer.body.trim());
    }
    let status: Status = serde_json::from_str(&answer.body)
        .context("the controller's answer is not a status document")?;
    print(&status, args.output)
}

#[cfg(test)]
mod tests;
