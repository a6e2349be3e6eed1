//! The OTLP collectors of the tracing scenario, all on loopback: a live one
//! (mycel-telemetry's receiver, the demo's), a dead one (a port nothing
//! listens on: connection refused) and a black hole (a listener that
//! accepts and never reads or answers: a hung collector).
//!
//! The live receiver and the black hole run on a thread of their own with
//! a single-threaded runtime, so decoding export batches never takes a
//! worker of the runtime that runs the load generator and the backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::{free_port, start_err, SetupError};

/// The OTLP transport the proxies export with
/// (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// The specification's default.
    #[default]
    #[value(name = "http/protobuf")]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "grpc")]
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// What answers at the endpoint the proxies export to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectorKind {
    /// mycel-telemetry's OTLP receiver: accepts every batch.
    Live,
    /// Nothing listens: every connection is refused at once.
    Dead,
    /// Accepts connections and never reads from them nor answers.
    Blackhole,
}

impl CollectorKind {
    /// The configuration name of the Mycel pair exporting to it.
    pub fn config_name(self) -> &'static str {
        match self {
            CollectorKind::Live => "mycel-trace-live",
            CollectorKind::Dead => "mycel-trace-dead",
            CollectorKind::Blackhole => "mycel-trace-blackhole",
        }
    }

    pub fn from_config_name(name: &str) -> Option<CollectorKind> {
        [
            CollectorKind::Live,
            CollectorKind::Dead,
            CollectorKind::Blackhole,
        ]
        .into_iter()
        .find(|k| k.config_name() == name)
    }

    pub fn describe(self) -> &'static str {
        match self {
            CollectorKind::Live => "live OTLP receiver (mycel-telemetry `receiver`, in the harness process, own thread)",
            CollectorKind::Dead => "dead collector: a loopback port nothing listens on (connection refused)",
            CollectorKind::Blackhole => "black-hole collector: a loopback listener that accepts and never reads or answers",
        }
    }
}

/// Connections the black hole holds at most; later ones wait in the
/// kernel's backlog (which hangs them just as well).
const BLACKHOLE_HOLD: usize = 1024;

/// A running collector; stopped when dropped.
pub struct Collector {
    pub kind: CollectorKind,
    pub protocol: OtlpProtocol,
    pub addr: SocketAddr,
    /// Spans the live receiver holds (at most its `KEEP`), for a check
    /// that export reached it.
    received: Option<mycel_telemetry::receiver::Received>,
    /// Connections the black hole accepted.
    accepted: Arc<AtomicU64>,
    /// The collector thread's id, for its CPU time.
    tid: Option<i32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    pub fn start(kind: CollectorKind, protocol: OtlpProtocol) -> Result<Collector, SetupError> {
        let accepted = Arc::new(AtomicU64::new(0));
        if kind == CollectorKind::Dead {
            let addr = free_port()?;
            // The port was free a moment ago; make sure nobody took it.
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Err(start_err(
                    "dead collector",
                    format!("{addr} accepts connections"),
                ));
            }
            return Ok(Collector {
                kind,
                protocol,
                addr,
                received: None,
                accepted,
                tid: None,
                stop: None,
                thread: None,
            });
        }
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let counter = accepted.clone();
        let thread = std::thread::Builder::new()
            .name(format!("bench-{}", kind.config_name()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let received = match kind {
                        CollectorKind::Live => Some(match protocol {
                            OtlpProtocol::HttpProtobuf => {
                                mycel_telemetry::receiver::http_receiver(listener)
                            }
                            OtlpProtocol::Grpc => {
                                mycel_telemetry::receiver::grpc_receiver(listener)
                            }
                        }),
                        _ => {
                            tokio::spawn(blackhole(listener, counter));
                            None
                        }
                    };
                    let _ = ready_tx.send(Ok((received, crate::procstat::current_tid())));
                    let _ = stop_rx.await;
                });
            })?;
        let (received, tid) = ready_rx
            .recv()
            .map_err(|_| start_err(kind.config_name(), "collector thread ended"))?
            .map_err(|e| start_err(kind.config_name(), e))?;
        Ok(Collector {
            kind,
            protocol,
            addr,
            received,
            accepted,
            tid,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the proxies (the HTTP exporter
    /// appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans the live receiver holds now (capped by the receiver).
    pub fn received_spans(&self) -> Option<u64> {
        self.received.as_ref().map(|r| r.spans().len() as u64)
    }

    /// CPU seconds the collector's thread (in this process) has used.
    pub fn cpu_s(&self) -> Option<f64> {
        crate::procstat::thread_cpu_s(self.tid?, crate::procstat::clock_ticks())
    }

    /// Connections the black hole accepted so far.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A proxy's trace export counters, from its admin `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCounters {
    /// `mycel_trace_spans_exported_total`: spans the collector accepted.
    pub exported: u64,
    /// `mycel_trace_spans_dropped_total`: spans dropped on a full queue.
    pub dropped: u64,
    /// `mycel_trace_export_failures_total`: batches that failed to send.
    pub export_failures: u64,
}

/// The export counters in a Prometheus / OpenMetrics text exposition;
/// None when one of them is missing.
pub fn parse_counters(metrics: &str) -> Option<ExportCounters> {
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = rest.strip_prefix(' ')?;
            let v = rest.split_whitespace().next()?;
            v.parse::<u64>()
                .ok()
                .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
        })
    };
    Some(ExportCounters {
        exported: value("mycel_trace_spans_exported_total")?,
        dropped: value("mycel_trace_spans_dropped_total")?,
        export_failures: value("mycel_trace_export_failures_total")?,
    })
}

/// Reads the export counters from the admin port `admin`.
pub async fn read_counters(admin: SocketAddr) -> Result<ExportCounters, String> {
    match crate::probe::http_get(admin, "localhost", "/metrics").await {
        Ok((200, body)) => parse_counters(&body)
            .ok_or_else(|| format!("{admin}/metrics has no mycel_trace_* counters")),
        Ok((status, _)) => Err(format!("{admin}/metrics: status {status}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Accepts and holds connections without ever reading or writing.
async fn blackhole(listener: TcpListener, accepted: Arc<AtomicU64>) {
    let mut held = Vec::new();
    loop {
        if held.len() >= BLACKHOLE_HOLD {
            // Stop accepting: further connections hang in the backlog.
            std::future::pending::<()>().await;
        }
        match listener.accept().await {
            Ok((tcp, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push(tcp);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn counters_are_read_from_the_exposition() {
        let text = "# HELP mycel_trace_spans_exported Spans the OTLP collector accepted.\n# TYPE mycel_trace_spans_exported counter\nmycel_trace_spans_exported_total 1200\n# TYPE mycel_trace_spans_dropped counter\nmycel_trace_spans_dropped_total 7\nmycel_trace_export_failures_total 3\nmycel_trace_export_failures_total_other 9\n# EOF\n";
        assert_eq!(
            parse_counters(text),
            Some(ExportCounters {
                exported: 1200,
                dropped: 7,
                export_failures: 3
            })
        );
        assert_eq!(parse_counters("mycel_trace_spans_exported_total 1\n"), None);
    }

    #[tokio::test]
    async fn dead_refuses_blackhole_holds_and_live_answers() {
        let dead = Collector::start(CollectorKind::Dead, OtlpProtocol::HttpProtobuf).unwrap();
        assert!(tokio::net::TcpStream::connect(dead.addr).await.is_err());

        let hole = Collector::start(CollectorKind::Blackhole, OtlpProtocol::HttpProtobuf).unwrap();
        let mut s = tokio::net::TcpStream::connect(hole.addr).await.unwrap();
        s.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(r.is_err(), "the black hole answered: {r:?}");
        assert_eq!(hole.accepted_connections(), 1);

        let live = Collector::start(CollectorKind::Live, OtlpProtocol::HttpProtobuf).unwrap();
        let (status, _) = crate::probe::http_get(live.addr, "x", "/traces")
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(live.received_spans(), Some(0));
        assert!(live.cpu_s().is_some() && dead.cpu_s().is_none());
        assert_eq!(live.endpoint(), format!("http://{}", live.addr));
    }
}
