//! `mycel-demo <frontend|catalog|reviews|ratings> --listen ADDR [...]`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use mycel_demo::config::{Cli, ServiceConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = ServiceConfig::try_from(Cli::parse()).context("bad flags")?;
    mycel_demo::run(config).await
}
