//! Logging set up once, the same way, for every Mycel binary: the filter
//! from the binary's own variable (`MYCEL_LOG`), else the usual `RUST_LOG`,
//! else the binary's default; text or JSON lines (`MYCEL_LOG_FORMAT`) on
//! stderr; colour only on a terminal.
//!
//! What the environment asks for is decided by a pure function
//! ([`choose`]) so that every bad value is reported the same way, as a
//! line on stderr before logging starts, and tested without a process.

#[cfg(feature = "receiver")]
pub mod receiver;
pub mod traces;

use std::io::IsTerminal;
#[cfg(feature = "tracing-layer")]
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The variable choosing the log line format: `text` (default) or `json`.
pub const FORMAT_ENV: &str = "MYCEL_LOG_FORMAT";
/// The filter variable every Rust program reads, used when the binary's
/// own is not set.
pub const FALLBACK_ENV: &str = "RUST_LOG";

/// What a binary says about its logs.
#[derive(Clone, Copy, Debug)]
pub struct Logs<'a> {
    /// Prefix of the warnings printed before logging is set up.
    pub program: &'a str,
    /// The binary's own filter variable (e.g. `MYCEL_LOG`).
    pub filter_env: &'a str,
    /// The filter when no variable gives a valid one.
    pub default_filter: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message` among them) and the current span's.
    Json,
}

/// The set-up chosen from the environment, and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub filter: String,
    pub format: Format,
    /// One line each, naming the variable and the value.
    pub warnings: Vec<String>,
}

/// Chooses filter and format; `var` reads one variable (`None`: unset;
/// `Some(Err)`: set but not Unicode).
pub fn choose(logs: &Logs<'_>, var: impl Fn(&str) -> Option<Result<String, String>>) -> Choice {
    let mut warnings = Vec::new();
    let mut filter = None;
    let mut sources = vec![logs.filter_env];
    if logs.filter_env != FALLBACK_ENV {
        sources.push(FALLBACK_ENV);
    }
    for name in sources {
        match var(name) {
            None => continue,
            Some(Err(e)) => warnings.push(format!("{name} {e}; ignored")),
            Some(Ok(text)) => match EnvFilter::try_new(&text) {
                Ok(_) => {
                    filter = Some(text);
                    break;
                }
                Err(e) => warnings.push(format!(
                    "{name} {text:?} is not a valid filter ({e}); ignored"
                )),
            },
        }
    }
    if filter.is_none() && !warnings.is_empty() {
        warnings.push(format!(
            "using the default filter {:?}",
            logs.default_filter
        ));
    }
    let format = match var(FORMAT_ENV) {
        None => Format::Text,
        Some(Ok(v)) if v.eq_ignore_ascii_case("text") || v.is_empty() => Format::Text,
        Some(Ok(v)) if v.eq_ignore_ascii_case("json") => Format::Json,
        Some(Ok(v)) => {
            warnings.push(format!(
                "{FORMAT_ENV} {v:?} is not text or json; using text"
            ));
            Format::Text
        }
        Some(Err(e)) => {
            warnings.push(format!("{FORMAT_ENV} {e}; using text"));
            Format::Text
        }
    };
    Choice {
        filter: filter.unwrap_or_else(|| logs.default_filter.to_string()),
        format,
        warnings,
    }
}

/// Sets up logging for the whole process from the environment; warnings go
/// to stderr first. Call once, before anything logs.
pub fn init(logs: &Logs<'_>) {
    init_with_format(logs, None)
}

/// As [`init`], with the format a command line chose (`--log-format`),
/// which wins over the environment's.
pub fn init_with_format(logs: &Logs<'_>, format: Option<Format>) {
    let mut choice = choose(logs, |name| {
        std::env::var_os(name).map(|v| {
            v.into_string()
                .map_err(|_| "is not valid Unicode".to_string())
        })
    });
    if let Some(format) = format {
        choice.format = format;
        choice.warnings.retain(|w| !w.starts_with(FORMAT_ENV));
    }
    for w in &choice.warnings {
        eprintln!("{}: {w}", logs.program);
    }
    // `choose` checked the filter; the default is the binary's own.
    let filter = EnvFilter::try_new(&choice.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match choice.format {
        Format::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        // Colour only on a terminal: a log file must stay plain text.
        Format::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(feature = "tracing-layer")]
    let registry = {
        let (layer, handle) = tracing_subscriber::reload::Layer::new(None);
        let _ = OTEL_LAYER.set(handle);
        registry.with(layer)
    };
    // A second init (tests running several programs' mains) keeps the
    // first subscriber.
    let _ = registry.with(fmt).try_init();
}

#[cfg(feature = "tracing-layer")]
type Filtered = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;
#[cfg(feature = "tracing-layer")]
type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Filtered, traces::SdkTracer>;
#[cfg(feature = "tracing-layer")]
static OTEL_LAYER: OnceLock<tracing_subscriber::reload::Handle<Option<OtelLayer>, Filtered>> =
    OnceLock::new();

/// Sends the program's `tracing` spans (those the log filter lets
/// through) as OpenTelemetry spans with `tracer` from now on: for a
/// program whose spans are few (the controller's streams, pushes and
/// certificate requests), never for the data path.
#[cfg(feature = "tracing-layer")]
pub fn export_tracing_spans(tracer: traces::SdkTracer) {
    if let Some(handle) = OTEL_LAYER.get() {
        let layer = tracing_opentelemetry::OpenTelemetryLayer::new(tracer);
        let _ = handle.reload(Some(layer));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const LOGS: Logs<'static> = Logs {
        program: "mycel-test",
        filter_env: "MYCEL_LOG",
        default_filter: "info",
    };

    fn with(vars: &[(&str, &str)]) -> Choice {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        choose(&LOGS, |name| vars.get(name).cloned().map(Ok))
    }

    #[test]
    fn the_binarys_own_variable_then_rust_log_then_the_default() {
        assert_eq!(with(&[]).filter, "info");
        assert_eq!(with(&[("RUST_LOG", "debug")]).filter, "debug");
        let both = with(&[("MYCEL_LOG", "warn"), ("RUST_LOG", "debug")]);
        assert_eq!((both.filter.as_str(), both.warnings.len()), ("warn", 0));
    }

    #[test]
    fn a_bad_filter_is_named_and_the_next_source_is_used() {
        let c = with(&[("MYCEL_LOG", "info,[bad"), ("RUST_LOG", "debug")]);
        assert_eq!(c.filter, "debug");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("MYCEL_LOG \"info,[bad\""),
            "{:?}",
            c.warnings
        );
        let c = with(&[("MYCEL_LOG", "info,[bad")]);
        assert_eq!(c.filter, "info");
        assert!(
            c.warnings.last().unwrap().contains("default filter"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn the_format_is_text_or_json_and_anything_else_is_named() {
        assert_eq!(with(&[]).format, Format::Text);
        assert_eq!(with(&[("MYCEL_LOG_FORMAT", "JSON")]).format, Format::Json);
        let c = with(&[("MYCEL_LOG_FORMAT", "xml")]);
        assert_eq!(c.format, Format::Text);
        assert_eq!(
            c.warnings,
            ["MYCEL_LOG_FORMAT \"xml\" is not text or json; using text"]
        );
    }

    #[test]
    fn a_value_that_is_not_unicode_is_named() {
        let c = choose(&LOGS, |name| {
            (name == "MYCEL_LOG").then(|| Err("is not valid Unicode".to_string()))
        });
        assert_eq!(c.filter, "info");
        assert!(
            c.warnings[0].starts_with("MYCEL_LOG is not valid Unicode"),
            "{:?}",
            c.warnings
        );
    }
}
