//! `mycelctl cert inspect`: what a certificate chain holds and whether it
//! verifies against a trust bundle. Sources differ (a PEM file or standard
//! input, a live TLS handshake; later a pod's proxy through the API server),
//! the judgment does not: each source yields DER certificates for the pure
//! `describe` core, and `render` prints its report.

mod describe;
mod handshake;
mod render;
mod source;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use describe::Usage;
use render::{Document, Style};
use source::PemSource;

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Show each certificate of a chain (SPIFFE ID, serial, issuer,
    /// validity, key type) and whether it verifies against a trust bundle.
    ///
    /// The chain comes from a PEM file (leaf first, then intermediates), from
    /// standard input with `-`, or from what a TLS server presents with
    /// --handshake HOST:PORT. A Mycel mesh port asks for a client
    /// certificate, which mycelctl does not send: the chain is still shown
    /// (TLS 1.3 sends it first) and the output says the server requires one.
    ///
    /// Exit status: 0 when every certificate of the chain is within its
    /// validity period and, with --ca-root, the chain verifies; 1 otherwise,
    /// or on an error (unreadable file, no certificate, no connection).
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// PEM file with one or more certificates, or `-` for standard input.
    #[arg(
        value_name = "FILE",
        required_unless_present = "handshake",
        conflicts_with = "handshake"
    )]
    pub file: Option<PathBuf>,
    /// Connect to HOST:PORT and inspect the chain the server presents.
    #[arg(long, value_name = "HOST:PORT")]
    pub handshake: Option<String>,
    /// Server name to send (SNI) with --handshake (default: the host).
    #[arg(long, value_name = "NAME", requires = "handshake")]
    pub server_name: Option<String>,
    /// Time allowed to connect, and again for the handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Trust bundle (PEM roots) to verify the chain against, e.g. the mesh
    /// root the proxy is given with the same flag. Without it the chain is
    /// shown but not verified.
    #[arg(long, value_name = "PATH")]
    pub ca_root: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text; marks coloured only on a terminal.
    Text,
    /// One JSON document: {source, handshake?, ok, chain: [...], verification: {status, reason}, trust_bundle: [...]}.
    Json,
}

pub async fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Inspect(args) => inspect(args).await,
    }
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
    let (source, shake, chain, usage) = match (&args.handshake, &args.file) {
        (Some(addr), _) => {
            let h = handshake::capture(addr, args.server_name.as_deref(), args.timeout).await?;
            let chain = h.chain.clone();
            (
                format!("handshake with {addr}"),
                Some(h),
                chain,
                Usage::Server,
            )
        }
        (None, Some(file)) => {
            let src = PemSource::from_arg(file);
            let chain = src.certificates()?;
            (src.name(), None, chain, Usage::Any)
        }
        (None, None) => bail!("give a PEM FILE, `-` for standard input, or --handshake HOST:PORT"),
    };
    let report = describe::describe(&chain, roots.as_deref(), SystemTime::now(), usage)
        .with_context(|| format!("inspecting {source}"))?;
    let doc = Document {
        source: &source,
        handshake: shake.as_ref(),
        report: &report,
    };
    match args.output {
        Format::Json => println!("{}", render::json(&doc)?),
        Format::Text => {
            let style = Style {
                color: std::io::stdout().is_terminal(),
            };
            print!("{}", render::text(&doc, style));
        }
    }
    if !report.ok {
        bail!("{source}: {}", failure(&report));
    }
    Ok(())
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
