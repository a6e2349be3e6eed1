//! `mycel-proxy`: parse the configuration, set up logging, run the app
//! until SIGTERM or Ctrl-C (a second one ends the drain at once).

use mycel_sidecar::config::{names, Config, ConfigError, Env, ProcessEnv};
use mycel_sidecar::init::{self, InitError};

fn init_tracing(env: &dyn Env) {
    let filter = env.get(names::ENV_LOG).unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!(
            "mycel-proxy: {} {filter:?} is not a valid filter ({e}); using info",
            names::ENV_LOG
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

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

/// `mycel-proxy init`: no runtime, no logging setup; one line of output.
fn run_init(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let result = init::parse(args).and_then(|cmd| init::execute(&cmd));
    match result {
        Ok(out) => {
            print!("{out}");
            Ok(())
        }
        Err(InitError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("mycel-proxy init: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if init::is_init(&args) {
        return run_init(&args);
    }
    let env = ProcessEnv;
    let config = match Config::from_args(args, &env) {
        Ok(c) => c,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("mycel-proxy: {e}");
            std::process::exit(2);
        }
    };
    init_tracing(&env);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("mycel-proxy")
        .enable_all()
        .build()?
        .block_on(mycel_sidecar::app::run(config, shutdown_signal))
}
