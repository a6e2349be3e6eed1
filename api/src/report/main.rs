//! The start and end every Mycel binary shares: parse the command line,
//! set up logging from `MYCEL_LOG`, run, and turn the outcome into an exit
//! code with one line of error (or the whole chain with `-v`).

use std::error::Error;
use std::ffi::OsString;
use std::fmt::Debug;
use std::process::ExitCode;

#[cfg(doc)]
use super::LOG_ENV;
use super::{first_line, one_line, verbose_requested};

/// What `main` needs to know about the binary it runs.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// Prefix of the warnings printed before logging is set up.
    pub name: &'static str,
    /// The environment variable of the log filter: [`LOG_ENV`] but for
    /// the demo apps.
    pub log_env: &'static str,
    /// Log filter when that variable is not set (or not valid).
    pub default_log: &'static str,
}

/// A command line the program refuses; it ends the program with code 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Unknown flag, bad value, `--help`, `--version`: clap's own report.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// Every flag parsed, but the values do not fit together.
    #[error(transparent)]
    Invalid(Box<dyn Error + Send + Sync>),
}

impl Program {
    /// The whole of a binary's `main`: `parse` gets the arguments (program
    /// name first); `run` gets what it returns, after logging is set up.
    /// `run` owns the async runtime, so each binary keeps its own flavour.
    pub fn main<C, E>(
        &self,
        parse: impl FnOnce(Vec<OsString>) -> Result<C, UsageError>,
        run: impl FnOnce(C) -> Result<(), E>,
    ) -> ExitCode
    where
        E: Debug + AsRef<dyn Error>,
    {
        let args: Vec<OsString> = std::env::args_os().collect();
        // `-v`/`--verbose` only changes how a fatal error is reported; it is
        // looked for before parsing so that a bad flag is reported that way
        // too.
        let verbose = verbose_requested(&args);
        let format = super::log_format_requested(&args);
        let parsed = match parse(args) {
            Ok(parsed) => parsed,
            Err(e) => return usage_failed(e, verbose),
        };
        self.init_logging_as(format);
        exit_code(run(parsed), verbose)
    }

    /// Logs to stderr as `mycel_telemetry` sets it up: the filter from
    /// `log_env` (else `RUST_LOG`, else `default_log`), text or JSON lines
    /// (`MYCEL_LOG_FORMAT`).
    pub fn init_logging(&self) {
        self.init_logging_as(None);
    }

    /// As [`Program::init_logging`], in `format` when a command line
    /// chose one (`--log-format`).
    pub fn init_logging_as(&self, format: Option<mycel_telemetry::Format>) {
        mycel_telemetry::init_with_format(
            &mycel_telemetry::Logs {
                program: self.name,
                filter_env: self.log_env,
                default_filter: self.default_log,
            },
            format,
        );
    }
}

/// Reports a refused command line; exits at once for `--help` and
/// `--version` (and for clap errors under `-v`, with usage and hints).
fn usage_failed(e: UsageError, verbose: bool) -> ExitCode {
    match e {
        UsageError::Cli(e) if !e.use_stderr() || verbose => e.exit(),
        // One line; the usage and hints clap adds are for `--help`.
        UsageError::Cli(e) => eprintln!("error: {}", first_line(&e.render().to_string())),
        UsageError::Invalid(e) => eprintln!("error: {}", one_line(e.as_ref())),
    }
    ExitCode::from(2)
}

/// Reports a fatal error: one line, or the whole chain with `--verbose`.
pub fn exit_code<E: Debug + AsRef<dyn Error>>(result: Result<(), E>, verbose: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if verbose => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
