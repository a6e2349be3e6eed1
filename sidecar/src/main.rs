//! `mycel-proxy`: parse the configuration, set up logging, run the app
//! until SIGTERM or Ctrl-C (a second one ends the drain at once), or run
//! `mycel-proxy init` (no runtime; its output on stdout).

use std::process::ExitCode;

use anyhow::Context;
use mycel_api::report::{Program, UsageError};
use mycel_sidecar::config::{names, ConfigError, Invocation, ProcessEnv};
use mycel_sidecar::init;

const PROGRAM: Program = Program {
    name: "mycel-proxy",
    log_env: names::ENV_LOG,
    default_log: "info",
};

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    PROGRAM.main(
        |args| {
            Invocation::from_args(args, &ProcessEnv).map_err(|e| match e {
                ConfigError::Cli(e) => UsageError::Cli(e),
                other => UsageError::Invalid(Box::new(other)),
            })
        },
        run,
    )
}

fn run(invocation: Invocation) -> anyhow::Result<()> {
    match invocation {
        Invocation::Init(cmd) => {
            let out = init::execute(&cmd).context("mycel-proxy init")?;
            print!("{out}");
            Ok(())
        }
        // The runtime is built here, after parsing: its size is a flag.
        Invocation::Run(config) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("mycel-proxy")
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(mycel_sidecar::app::run(*config, shutdown_signal)),
    }
}
