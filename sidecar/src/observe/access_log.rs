//! Access logs: one JSON object per request, on stdout or appended to a
//! file, written by a thread of their own so a slow disk or a full pipe
//! never holds a request. Lines past the rate (per second) or past what
//! the writer has room for are dropped and counted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::{RequestLine, Served};
use crate::config::AccessLogTarget;
use crate::metrics::Direction;

/// Lines waiting for the writer at most.
const QUEUE: usize = 4096;

/// Why the access log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("cannot open access log {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the access log writer: {0}")]
    Thread(std::io::Error),
}

/// The handle the data path writes through. Cheap to share.
pub struct AccessLog {
    tx: SyncSender<String>,
    limiter: RateLimit,
    dropped: Counter,
}

/// One request, as written.
pub(super) struct Line<'a> {
    pub direction: Direction,
    pub request: &'a RequestLine,
    pub code: u16,
    pub service: &'a str,
    pub served: &'a Served,
    pub grpc_status: Option<u32>,
    pub bytes: u64,
    pub duration: Duration,
    /// Trace id and span id, when the request's trace is recorded.
    pub trace: Option<(&'a str, &'a str)>,
}

#[derive(Serialize)]
struct Json<'a> {
    time: String,
    direction: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<u32>,
    bytes: u64,
    duration_ms: f64,
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<SocketAddr>,
    retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    /// Lines not written are counted in `dropped`.
    pub fn open(
        target: &AccessLogTarget,
        per_second: u32,
        dropped: Counter,
    ) -> Result<Self, AccessLogError> {
        let mut out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    // Batch what is already queued into one write.
                    while let Ok(more) = rx.try_recv() {
                        let _ = buf.write_all(more.as_bytes());
                    }
                    let _ = buf.flush();
                }
            })
            .map_err(AccessLogError::Thread)?;
        Ok(Self {
            tx,
            limiter: RateLimit::new(per_second),
            dropped,
        })
    }

    pub(super) fn write(&self, line: &Line<'_>) {
        if !self.limiter.admit(Instant::now()) {
            self.dropped.inc();
            return;
        }
        let served = line.served;
        let json = Json {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            direction: line.direction.as_str(),
            trace_id: line.trace.map(|t| t.0),
            span_id: line.trace.map(|t| t.1),
            peer: served.peer.as_deref(),
            method: line.request.method.as_str(),
            authority: &line.request.authority,
            path: &line.request.path,
            status: line.code,
            grpc_status: line.grpc_status,
            bytes: line.bytes,
            duration_ms: line.duration.as_secs_f64() * 1000.0,
            service: line.service,
            route: served.route.as_deref(),
            upstream: served.endpoint,
            retries: served.retries,
            user_agent: line.request.user_agent.as_deref(),
        };
        let Ok(mut text) = serde_json::to_string(&json) else {
            self.dropped.inc();
            return;
        };
        text.push('\n');
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// At most `per_second` lines in each one-second window, without a lock:
/// the window start and the count share one atomic word.
struct RateLimit {
    per_second: u64,
    origin: Instant,
    /// High 32 bits: the window (seconds since `origin`); low 32: lines
    /// admitted in it.
    state: Arc<AtomicU64>,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: u64::from(per_second),
            origin: Instant::now(),
            state: Arc::default(),
        }
    }

    fn admit(&self, now: Instant) -> bool {
        let window = now.saturating_duration_since(self.origin).as_secs() & 0xffff_ffff;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (w, n) = (current >> 32, current & 0xffff_ffff);
            let next = if w == window {
                if n >= self.per_second {
                    return false;
                }
                current + 1
            } else {
                (window << 32) | 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_admits_n_per_second_window() {
        let limit = RateLimit::new(3);
        let t0 = limit.origin;
        let admitted = (0..10).filter(|_| limit.admit(t0)).count();
        assert_eq!(admitted, 3);
        let t1 = t0 + Duration::from_millis(1500);
        assert!(limit.admit(t1));
        assert_eq!((0..10).filter(|_| limit.admit(t1)).count(), 2);
    }

    #[test]
    fn lines_are_json_with_the_request_and_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(
            &AccessLogTarget::File(path.clone()),
            100,
            Counter::default(),
        )
        .unwrap();
        let request = RequestLine {
            method: http::Method::GET,
            authority: "catalog.shop:8080".into(),
            path: "/products?id=1".into(),
            user_agent: Some("curl/8".into()),
        };
        let served = Served {
            service: Some("catalog.shop".into()),
            peer: Some("spiffe://cluster.local/ns/shop/sa/frontend".into()),
            endpoint: Some("198.18.0.7:4143".parse().unwrap()),
            retries: 1,
            ..Served::default()
        };
        log.write(&Line {
            direction: Direction::Inbound,
            request: &request,
            code: 200,
            service: "app:8080",
            served: &served,
            grpc_status: None,
            bytes: 17,
            duration: Duration::from_micros(1500),
            trace: Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/products?id=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 17);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["upstream"], "198.18.0.7:4143");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["peer"], "spiffe://cluster.local/ns/shop/sa/frontend");
        assert_eq!(v["duration_ms"], 1.5);
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let Err(e) = AccessLog::open(
            &AccessLogTarget::File("/nonexistent-dir/x/access.log".into()),
            10,
            Counter::default(),
        ) else {
            panic!("opened");
        };
        assert!(
            e.to_string().contains("/nonexistent-dir/x/access.log"),
            "{e}"
        );
    }
}
