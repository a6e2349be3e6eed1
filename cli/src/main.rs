//! `mycelctl`: the Mycel command line. `demo` runs the whole mesh on
//! loopback; `token create|list|revoke` manage join tokens.

mod demo;
mod token;

use mycel_control_plane::ca::tokens::cli::TokenCommand;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mycel_api::report;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "mycelctl", version, about = "Mycel service mesh command line")]
struct Cli {
    /// Report errors with their full cause chain over several lines.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join tokens for proxies (local mode).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the demo shop on loopback: controller, sidecars, gateway, apps.
    Demo(DemoFlags),
}

#[derive(Debug, clap::Args)]
struct DemoFlags {
    /// First of the ports the demo uses (it needs a block of 40).
    #[arg(long, value_name = "PORT", default_value_t = 17000)]
    base_port: u16,
    /// Where the CA, tokens, mesh.yaml and logs go (default: a temporary
    /// directory removed on exit).
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Where mycel-controller, mycel-proxy and mycel-demo are (default: next
    /// to mycelctl).
    #[arg(long, value_name = "PATH")]
    bin_dir: Option<PathBuf>,
    /// How long to wait for everything to become ready.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

// One thread: children ask the kernel to kill them when the thread that
// started them dies (PR_SET_PDEATHSIG), so that thread must live as long as
// mycelctl does.
/// Environment variables mycelctl reads (for the reference page).
const ENVIRONMENT: &[(&str, &str)] = &[(
    "MYCEL_LOG",
    "Log filter of mycelctl itself in tracing's EnvFilter syntax (default: warn).",
)];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env(ENVIRONMENT[0].0).unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let verbose = report::verbose_requested(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() || verbose => e.exit(),
        Err(e) => {
            eprintln!("error: {}", report::first_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // Errors are for people: one line, no backtrace, unless --verbose.
    match run(cli).await {
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token { command } => token::run(command),
        Command::Demo(flags) => {
            demo::run(demo::DemoArgs {
                base_port: flags.base_port,
                data_dir: flags.data_dir,
                bin_dir: flags.bin_dir,
                ready_timeout: flags.ready_timeout,
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn reference_page_matches_the_flags() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/mycelctl.md");
        let page = mycel_api::clidoc::Page {
            command: super::Cli::command(),
            env: super::ENVIRONMENT,
            test: "cargo test -p mycel-cli --bin mycelctl reference_page",
        };
        if let Err(e) = mycel_api::clidoc::check(&path, page) {
            panic!("{e}");
        }
    }
}
