//! `mycel-proxy`: parse the configuration, set up logging, run the app
//! until SIGTERM or Ctrl-C (a second one ends the drain at once).

use mycel_sidecar::config::{names, ConfigError, Env, Invocation, ProcessEnv};
use std::process::ExitCode;

use mycel_api::report;
use mycel_sidecar::init;

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
        // Colour only on a terminal: a log file must stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `-v`/`--verbose` only changes how a fatal error is reported; it is
    // looked for before parsing so that a bad flag is reported that way too.
    let verbose = report::verbose_requested(&args);
    let env = ProcessEnv;
    let config = match Invocation::from_args(args, &env) {
        Ok(Invocation::Run(c)) => c,
        // No runtime, no logging setup; one line of output.
        Ok(Invocation::Init(cmd)) => {
            return match init::execute(&cmd) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: mycel-proxy init: {}", report::one_line(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Err(ConfigError::Cli(e)) if !e.use_stderr() || verbose => e.exit(),
        Err(ConfigError::Cli(e)) => {
            eprintln!("error: {}", report::first_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {}", report::one_line(&e));
            return ExitCode::from(2);
        }
    };
    init_tracing(&env);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("mycel-proxy")
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(mycel_sidecar::app::run(*config, shutdown_signal)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, verbose),
    }
}

/// Reports a fatal error: one line, or the whole chain with `--verbose`.
fn fail(e: &anyhow::Error, verbose: bool) -> ExitCode {
    if verbose {
        eprintln!("error: {e:?}");
    } else {
        eprintln!("error: {}", report::one_line(e.as_ref()));
    }
    ExitCode::FAILURE
}
