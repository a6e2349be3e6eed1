//! `mycel-demo <frontend|catalog|reviews|ratings> --listen ADDR [...]`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mycel_api::report;
use mycel_demo::config::{Cli, ServiceConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `-v`/`--verbose` only changes how a fatal error is reported.
    let verbose = report::verbose_requested(&args);
    args.retain(|a| a != "-v" && a != "--verbose");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() || verbose => e.exit(),
        Err(e) => {
            eprintln!("error: {}", report::first_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env(mycel_demo::config::ENVIRONMENT[0].0)
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match ServiceConfig::try_from(cli).context("bad flags") {
        Ok(config) => mycel_demo::run(config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if verbose => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
