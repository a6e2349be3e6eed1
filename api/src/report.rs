//! How every Mycel binary reports a fatal error: one line,
//! `error: outer: cause: cause`, unless `-v`/`--verbose` asks for more.
//! With the `main` feature, [`Program`] is the whole start and end of a
//! binary: arguments, logging, exit code.

#[cfg(feature = "main")]
mod main;

use std::error::Error;
use std::ffi::OsString;

#[cfg(feature = "main")]
pub use main::{exit_code, Program, UsageError};
/// The environment variable choosing text or JSON log lines.
#[cfg(feature = "main")]
pub use mycel_telemetry::FORMAT_ENV as LOG_FORMAT_ENV;

/// What every binary's reference page says about [`LOG_FORMAT_ENV`].
pub const LOG_FORMAT_HELP: &str = "Log line format: `text` (default) or `json` (one JSON object per line: timestamp, level, target, the event's fields, the current span).";

/// The variable that turns OpenTelemetry trace export on, and what the
/// reference pages say about it and the other `OTEL_*` variables read.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTLP_HELP: &str = "OTLP collector for traces (e.g. `http://127.0.0.1:4318`); unset: no trace export. Also read: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL (`http/protobuf` default, or `grpc`), OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_EXPORTER (`none` turns export off), OTEL_SDK_DISABLED, OTEL_BSP_MAX_QUEUE_SIZE (2048: more waiting spans are dropped and counted), OTEL_BSP_SCHEDULE_DELAY (5000 ms), OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512).";

/// The environment variable every binary reads its log filter from.
pub const LOG_ENV: &str = "MYCEL_LOG";

/// `--log-format`, on every binary's command line (a global flag, so it
/// may follow a subcommand).
#[cfg(feature = "main")]
#[derive(Clone, Debug, clap::Args)]
pub struct LogFormatArg {
    /// Log line format (overrides MYCEL_LOG_FORMAT).
    #[arg(long = "log-format", value_name = "FORMAT", global = true,
          value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// The `--log-format` of a command line clap already accepted.
#[cfg(feature = "main")]
pub fn log_format_requested(args: &[OsString]) -> Option<mycel_telemetry::Format> {
    let mut it = args.iter().skip(1).filter_map(|a| a.to_str());
    let mut value = None;
    while let Some(a) = it.next() {
        if a == "--log-format" {
            value = it.next();
        } else if let Some(v) = a.strip_prefix("--log-format=") {
            value = Some(v);
        }
    }
    match value? {
        "json" => Some(mycel_telemetry::Format::Json),
        "text" => Some(mycel_telemetry::Format::Text),
        _ => None,
    }
}

/// Whether `-v` or `--verbose` is among the command-line arguments.
pub fn verbose_requested(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|a| a == "-v" || a == "--verbose")
}

/// `err` and its causes joined by `": "` on one line. A cause whose text
/// the message before it already includes is skipped, so wrappers that
/// quote their source do not repeat it.
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut out = flatten(&err.to_string());
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = flatten(&c.to_string());
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The first line of a command-line parser's message (which goes on with
/// usage and hints), without its own `error: ` prefix.
pub fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().trim_start_matches("error:").trim().to_string()
}

/// Newlines and runs of whitespace become single spaces.
fn flatten(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chain_is_one_line_without_repeats() {
        let e = Outer(Middle(std::io::Error::other("no such\nfile")));
        assert_eq!(one_line(&e), "outer: middle: no such file");
    }

    #[test]
    fn first_line_of_parser_errors() {
        let text = "error: invalid value 'x' for '--cert-ttl <CERT_TTL>': bad\n\nFor more information, try '--help'.\n";
        assert_eq!(
            first_line(text),
            "invalid value 'x' for '--cert-ttl <CERT_TTL>': bad"
        );
    }

    #[test]
    fn verbose_flag() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(verbose_requested(&args(&["bin", "--x", "-v"])));
        assert!(verbose_requested(&args(&["bin", "--verbose"])));
        assert!(!verbose_requested(&args(&["bin", "--value", "v"])));
    }
}
