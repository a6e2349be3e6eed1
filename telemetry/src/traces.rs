//! OpenTelemetry trace export over OTLP, configured by the standard
//! `OTEL_*` variables, built so that export can never slow the program
//! that makes the spans: finished spans go into a bounded queue (a full
//! queue drops the span and counts it), and one thread of its own, with its
//! own runtime, sends them in batches, one attempt each. After two batches
//! in a row fail, export pauses (one second, doubling up to thirty, then a
//! batch tries again): while it is paused queued spans are dropped without
//! being encoded, and [`accepting`] tells span makers not to build spans at
//! all. A collector that is down, slow or refusing costs the data path
//! nothing but a counter.
//!
//! Which variables are read, and what is wrong with them, is decided by a
//! pure function ([`settings`]) so every case is tested without a process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{
    RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
pub use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

/// The endpoint variables, most specific first; export is on when one of
/// them is set.
pub const ENDPOINT_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOL_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// `none` turns export off whatever the endpoint says.
const EXPORTER_ENV: &str = "OTEL_TRACES_EXPORTER";
const DISABLED_ENV: &str = "OTEL_SDK_DISABLED";
const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
const QUEUE_ENV: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const DELAY_ENV: &str = "OTEL_BSP_SCHEDULE_DELAY";
const BATCH_ENV: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// The transport of OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    /// `http/protobuf`: the specification's default.
    HttpProtobuf,
}

/// What the environment asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// None: export is off (no endpoint, or turned off).
    pub export: Option<Export>,
    /// One line each, naming the variable and the value.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    pub protocol: Protocol,
    /// `OTEL_SERVICE_NAME`, when set: it wins over the program's own name.
    pub service_name: Option<String>,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// How long a batch waits to fill.
    pub delay: Duration,
    pub batch: usize,
}

/// Reads the variables (`var` returns None when one is unset).
pub fn settings(var: impl Fn(&str) -> Option<String>) -> Settings {
    let mut warnings = Vec::new();
    let off = |v: Option<String>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let endpoint = ENDPOINT_ENVS
        .iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()));
    let exporter = var(EXPORTER_ENV).map(|v| v.trim().to_ascii_lowercase());
    if let Some(e) = exporter
        .as_deref()
        .filter(|e| !matches!(*e, "otlp" | "none" | ""))
    {
        warnings.push(format!(
            "{EXPORTER_ENV} {e:?} is not supported (only otlp or none); traces are not exported"
        ));
        return Settings {
            export: None,
            warnings,
        };
    }
    if endpoint.is_none() || off(var(DISABLED_ENV)) || exporter.as_deref() == Some("none") {
        return Settings {
            export: None,
            warnings,
        };
    }
    let protocol = match PROTOCOL_ENVS
        .iter()
        .find_map(|name| var(name).map(|v| (*name, v)))
    {
        None => Protocol::HttpProtobuf,
        Some((_, v)) if v.trim() == "grpc" => Protocol::Grpc,
        Some((_, v)) if v.trim() == "http/protobuf" => Protocol::HttpProtobuf,
        Some((name, v)) => {
            warnings.push(format!(
                "{name} {v:?} is not supported (grpc or http/protobuf); using http/protobuf"
            ));
            Protocol::HttpProtobuf
        }
    };
    let mut number = |name: &str, default: u64, min: u64| -> u64 {
        match var(name) {
            None => default,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => n,
                _ => {
                    warnings.push(format!(
                        "{name} {v:?} is not a whole number of at least {min}; using {default}"
                    ));
                    default
                }
            },
        }
    };
    let queue = number(QUEUE_ENV, 2048, 1) as usize;
    let delay = Duration::from_millis(number(DELAY_ENV, 5000, 1));
    let batch = (number(BATCH_ENV, 512, 1) as usize).min(queue);
    Settings {
        export: Some(Export {
            protocol,
            service_name: var(SERVICE_NAME_ENV).filter(|v| !v.trim().is_empty()),
            queue,
            delay,
            batch,
        }),
        warnings,
    }
}

/// Counts of what became of finished spans. Always there (zero when
/// export is off), so the metrics can be registered unconditionally.
#[derive(Clone, Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter and accepted by the collector.
    pub exported: Counter,
    /// Spans dropped because the queue was full (collector slow or down).
    pub dropped: Counter,
    /// Batches the exporter failed to send (their spans are lost).
    pub failed_batches: Counter,
    /// Spans not made at all because export was paused.
    pub skipped: Counter,
}

impl ExportStats {
    /// Registers the three counters (`mycel_trace_spans_exported_total`,
    /// `mycel_trace_spans_dropped_total`, `mycel_trace_export_failures_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mycel_trace_spans_exported",
            "Spans the OTLP collector accepted",
            self.exported.clone(),
        );
        registry.register(
            "mycel_trace_spans_dropped",
            "Spans dropped because the export queue was full (collector slow or unreachable)",
            self.dropped.clone(),
        );
        registry.register(
            "mycel_trace_export_failures",
            "Span batches the OTLP exporter failed to send",
            self.failed_batches.clone(),
        );
        registry.register(
            "mycel_trace_spans_skipped",
            "Spans not recorded because export was paused after failures (collector unreachable)",
            self.skipped.clone(),
        );
    }
}

static STATS: OnceLock<Arc<ExportStats>> = OnceLock::new();
/// While export is paused after failures: until when, in milliseconds
/// from [`EPOCH`] (0: not paused). Span makers read it on every request, so
/// it is one atomic, and it ends by itself: when the pause is over spans
/// are made again, and the next batch is the one that tries the collector.
static PAUSED_UNTIL_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn millis(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    // At least 1, so a pause never reads as "not paused" (0).
    (at.saturating_duration_since(epoch).as_millis() as u64).max(1)
}

/// Whether spans are worth making now: false while export is paused after
/// failed batches, so a dead collector costs no span building. A span
/// maker that asks and gets false should count it ([`skipped`]) and pass
/// the trace context on untouched.
pub fn accepting() -> bool {
    let until = PAUSED_UNTIL_MS.load(Ordering::Relaxed);
    until == 0 || millis(Instant::now()) >= until
}

/// Counts one span not made because export is paused.
pub fn skipped() {
    stats().skipped.inc();
}
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The process's export counters.
pub fn stats() -> Arc<ExportStats> {
    STATS.get_or_init(Arc::default).clone()
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("trace export is already started in this process")]
    AlreadyStarted,
    #[error("cannot start the trace export thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Starts export as the environment asks, with `service_name` unless
/// `OTEL_SERVICE_NAME` names another. Returns None when export is off.
/// Warnings about the variables go to stderr, prefixed with `program`.
/// Every span is recorded when its parent is (or when it has none): the
/// caller decides whether to start a trace at all.
pub fn start(program: &str, service_name: &str) -> Result<Option<SdkTracer>, StartError> {
    let settings = settings(|name| std::env::var(name).ok());
    for w in &settings.warnings {
        eprintln!("{program}: {w}");
    }
    let Some(export) = settings.export else {
        return Ok(None);
    };
    let name = export
        .service_name
        .clone()
        .unwrap_or_else(|| service_name.to_string());
    let resource = Resource::builder().with_service_name(name).build();
    let processor = QueueProcessor::spawn(&export, resource.clone(), stats())?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("mycel");
    PROVIDER
        .set(provider)
        .map_err(|_| StartError::AlreadyStarted)?;
    Ok(Some(tracer))
}

/// Sends what is queued (waiting at most `timeout`); for a clean exit.
pub fn flush(timeout: Duration) {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown_with_timeout(timeout);
    }
}

/// The bounded queue between the span makers and the export thread.
#[derive(Debug)]
struct QueueProcessor {
    tx: mpsc::Sender<Message>,
    stats: Arc<ExportStats>,
}

enum Message {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Span(_) => f.write_str("Span"),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl QueueProcessor {
    fn spawn(
        export: &Export,
        resource: Resource,
        stats: Arc<ExportStats>,
    ) -> Result<Self, StartError> {
        let (tx, rx) = mpsc::channel(export.queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (protocol, delay, batch) = (export.protocol, export.delay, export.batch);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            // Export is one task; a small stack is plenty.
            .stack_size(256 * 1024)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let exporter = match build_exporter(protocol, &resource) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run_export(exporter, rx, delay, batch, thread_stats).await;
                });
            })
            .map_err(StartError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { tx, stats }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Exporter(
                "the export thread ended before it started".into(),
            )),
        }
    }
}

fn build_exporter(
    protocol: Protocol,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, StartError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    // A slow collector holds one batch for this long, never the spans'
    // makers.
    let timeout = Duration::from_secs(10);
    // One attempt per batch: retrying a dead collector only burns CPU and
    // holds the queue; the pause in `run_export` is the backoff.
    let mut exporter = match protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_timeout(timeout)
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_timeout(timeout)
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
    }
    .map_err(|e| StartError::Exporter(e.to_string()))?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// When export pauses after failures, and for how long.
#[derive(Debug)]
struct Breaker {
    failures_in_a_row: u32,
    pause: Duration,
    paused_until: Option<Instant>,
}

impl Breaker {
    /// Failed batches in a row that pause export.
    const TRIP: u32 = 2;
    const FIRST_PAUSE: Duration = Duration::from_secs(1);
    const LONGEST_PAUSE: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self {
            failures_in_a_row: 0,
            pause: Self::FIRST_PAUSE,
            paused_until: None,
        }
    }

    /// Whether a batch may be sent at `now` (after a pause, one batch
    /// tries again).
    fn allows(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|until| now >= until)
    }

    /// Records a batch's outcome; returns whether export is now paused.
    fn record(&mut self, ok: bool, now: Instant) -> bool {
        if ok {
            *self = Self::new();
            return false;
        }
        self.failures_in_a_row += 1;
        if self.paused_until.is_some() {
            // The retry after a pause failed: pause longer.
            self.pause = (self.pause * 2).min(Self::LONGEST_PAUSE);
        } else if self.failures_in_a_row < Self::TRIP {
            return false;
        }
        self.paused_until = Some(now + self.pause);
        true
    }
}

async fn run_export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Message>,
    delay: Duration,
    batch_size: usize,
    stats: Arc<ExportStats>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(batch_size);
    let mut waiters = Vec::new();
    let mut breaker = Breaker::new();
    loop {
        // Wait for the first span (or a flush), then up to `delay` for the
        // batch to fill.
        let first = rx.recv().await;
        let Some(first) = first else { break };
        let deadline = tokio::time::Instant::now() + delay;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Span(span)) => batch.push(*span),
                Some(Message::Flush(done)) => {
                    waiters.push(done);
                    // Take what is already queued, then send at once.
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Message::Span(span) => batch.push(*span),
                            Message::Flush(done) => waiters.push(done),
                        }
                    }
                    break;
                }
                None => {}
            }
            if batch.len() >= batch_size {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => next = Some(m),
                Ok(None) | Err(_) => break,
            }
        }
        while !batch.is_empty() {
            if !breaker.allows(Instant::now()) {
                // Paused: these spans are lost, and are not encoded first.
                stats.dropped.inc_by(batch.len() as u64);
                batch.clear();
                break;
            }
            let take = batch.len().min(batch_size);
            let chunk: Vec<SpanData> = batch.drain(..take).collect();
            let n = chunk.len() as u64;
            let ok = match exporter.export(chunk).await {
                Ok(()) => {
                    stats.exported.inc_by(n);
                    true
                }
                Err(e) => {
                    stats.failed_batches.inc();
                    // One line per failed batch at most, at debug: the
                    // counter is how an operator sees it.
                    tracing::debug!(error = %e, spans = n, "trace export failed");
                    false
                }
            };
            let was_paused = PAUSED_UNTIL_MS.load(Ordering::Relaxed) != 0;
            match breaker.record(ok, Instant::now()) {
                true => {
                    if !was_paused {
                        tracing::warn!(
                            "trace export paused: the collector is not answering; spans are dropped and counted until it does"
                        );
                    }
                    let until = breaker.paused_until.map_or(0, millis);
                    PAUSED_UNTIL_MS.store(until, Ordering::Relaxed);
                }
                false => {
                    if was_paused && ok {
                        tracing::info!("trace export resumed");
                    }
                    if ok {
                        PAUSED_UNTIL_MS.store(0, Ordering::Relaxed);
                    }
                }
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Message::Span(Box::new(span))).is_err() {
            self.stats.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush_within(timeout)
    }
}

impl QueueProcessor {
    fn flush_within(&self, timeout: Duration) -> OTelSdkResult {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .try_send(Message::Flush(done_tx))
            .map_err(|_| OTelSdkError::InternalFailure("export queue full or closed".into()))?;
        done_rx
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn two_failed_batches_pause_export_and_a_failed_retry_pauses_longer() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        assert!(b.allows(t0));
        assert!(!b.record(false, t0), "one failure is not a pattern");
        assert!(b.allows(t0));
        assert!(b.record(false, t0), "two in a row pause");
        assert!(!b.allows(t0 + Duration::from_millis(999)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.allows(t1), "one batch tries again after the pause");
        assert!(b.record(false, t1));
        assert!(!b.allows(t1 + Duration::from_millis(1999)), "2 s now");
        let mut t = t1;
        for _ in 0..10 {
            t += Duration::from_secs(60);
            b.record(false, t);
        }
        assert!(b.allows(t + Breaker::LONGEST_PAUSE), "capped at 30 s");
        assert!(
            !b.record(true, t + Breaker::LONGEST_PAUSE),
            "success resumes"
        );
        assert!(b.allows(t + Breaker::LONGEST_PAUSE));
        assert!(!b.record(false, t + Breaker::LONGEST_PAUSE), "and resets");
    }

    fn with(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_turned_off() {
        assert_eq!(with(&[]).export, None);
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(with(&[ep]).export.is_some());
        assert_eq!(with(&[ep, ("OTEL_SDK_DISABLED", "true")]).export, None);
        assert_eq!(with(&[ep, ("OTEL_TRACES_EXPORTER", "none")]).export, None);
    }

    #[test]
    fn the_protocol_defaults_to_http_protobuf_and_a_bad_one_is_named() {
        let ep = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317",
        );
        let s = with(&[ep]);
        assert_eq!(s.export.unwrap().protocol, Protocol::HttpProtobuf);
        let s = with(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!(s.export.unwrap().protocol, Protocol::Grpc);
        // The signal's own variable wins.
        let s = with(&[
            ep,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(s.export.unwrap().protocol, Protocol::HttpProtobuf);
        let s = with(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(s.export.unwrap().protocol, Protocol::HttpProtobuf);
        assert_eq!(
            s.warnings,
            ["OTEL_EXPORTER_OTLP_PROTOCOL \"http/json\" is not supported (grpc or http/protobuf); using http/protobuf"]
        );
    }

    #[test]
    fn queue_numbers_are_checked_and_named() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let s = with(&[
            ep,
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]);
        let e = s.export.unwrap();
        assert_eq!((e.queue, e.delay), (2048, Duration::from_millis(200)));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("OTEL_BSP_MAX_QUEUE_SIZE \"0\""));
    }

    #[test]
    fn an_unknown_exporter_is_named_and_nothing_is_exported() {
        let s = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ]);
        assert_eq!(s.export, None);
        assert!(s.warnings[0].contains("zipkin"), "{:?}", s.warnings);
    }
}
