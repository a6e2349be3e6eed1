//! The one accept loop and HTTP server setup behind every listener.
//!
//! Each listener gets a connection limit (a semaphore: when it is full the
//! loop stops accepting, so new clients wait in the kernel's backlog), a
//! backoff on accept errors (out of file descriptors), `TCP_NODELAY`, a
//! tracing span per connection, and drain on shutdown. HTTP connections
//! also get the header-read, idle and request timeouts and the header size
//! cap of [`Limits`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

mod idle;

use self::idle::{Activity, Tracked};
pub use crate::core::drain::{Drain, Shutdown};
use crate::core::http::{proxy_error, Body, Caller};
pub use crate::core::limits::Limits;
use crate::metrics::ErrorKind;
use crate::observe::{Observer, TunnelSpan};

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Connection-level metrics, labelled by listener name (a fixed set).
#[derive(Clone, Default)]
pub struct ConnMetrics {
    open: Family<ListenerLabels, Gauge>,
    limit_hits: Family<ListenerLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
    header_too_large: Family<ListenerLabels, Counter>,
    timeouts: Family<ListenerLabels, Counter>,
}

impl ConnMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("mycel_proxy");
        r.register(
            "connections_open",
            "Connections being served, per listener",
            m.open.clone(),
        );
        r.register(
            "connection_limit_hits",
            "Times a listener stopped accepting because it held --max-connections connections",
            m.limit_hits.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts (e.g. out of file descriptors), per listener",
            m.accept_errors.clone(),
        );
        r.register(
            "header_too_large",
            "Requests refused with 431 because their headers exceeded --max-header-bytes",
            m.header_too_large.clone(),
        );
        r.register(
            "request_timeouts",
            "Requests answered 504 because no response headers came within --request-timeout",
            m.timeouts.clone(),
        );
        m
    }

    fn labels(listener: &'static str) -> ListenerLabels {
        ListenerLabels { listener }
    }
}

/// Everything a listener needs besides its socket and handler. Cheap to
/// clone.
#[derive(Clone)]
pub struct Server {
    limits: Arc<Limits>,
    metrics: ConnMetrics,
    drain: Drain,
    /// Per-request metrics, spans and access logs of the mesh listeners.
    observer: Option<Arc<Observer>>,
}

/// One accepted connection's share of its listener: the limits and the
/// drain signal, for [`Conn::serve_http`].
#[derive(Clone)]
pub struct Conn {
    server: Server,
    listener: &'static str,
    remote: SocketAddr,
}

/// The address of the client of the connection a request came on, in the
/// request's extensions (for load balancing by source IP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Which HTTP a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// Where apps and external clients enter the mesh: HTTP/1.1 and h2c,
    /// header lists above `max_header_bytes` answered 431 here.
    FirstHop,
    /// The mesh port, behind mTLS: HTTP/2 only, and it accepts more header
    /// bytes than any first hop lets through, so that a request a first
    /// hop passed never makes the peer end the shared connection.
    Mesh,
    /// Admin: HTTP/1.1 only.
    Admin,
}

impl Server {
    pub fn new(limits: Limits, metrics: ConnMetrics, drain: Drain) -> Self {
        Self {
            limits: Arc::new(limits),
            metrics,
            drain,
            observer: None,
        }
    }

    /// Records every request of the inbound, outbound and gateway
    /// listeners with `observer`.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A server that never drains and counts into unregistered metrics
    /// (tests, embedding).
    pub fn standalone(limits: Limits) -> Self {
        Self::new(
            limits,
            ConnMetrics::default(),
            Shutdown::default().drain_handle(),
        )
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Accepts connections on `listener` until draining starts, running
    /// `handler` for each on its own task. The listener is closed when this
    /// returns, so connections after the drain are refused.
    pub async fn serve<H, F>(self, name: &'static str, listener: TcpListener, handler: H)
    where
        H: Fn(TcpStream, SocketAddr, Conn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let labels = ConnMetrics::labels(name);
        let permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let warned = AtomicBool::new(false);
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let drain = self.drain.clone();
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    self.metrics.limit_hits.get_or_create(&labels).inc();
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            listener = name,
                            limit = self.limits.max_connections,
                            "connection limit reached; new connections wait until one closes \
                             (logged once; see mycel_proxy_connection_limit_hits_total)"
                        );
                    }
                    tokio::select! {
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        () = drain.signaled() => break,
                    }
                }
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = drain.signaled() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off so the
                    // loop neither spins nor floods the log.
                    self.metrics.accept_errors.get_or_create(&labels).inc();
                    tracing::warn!(listener = name, error = %e, retry_in = ?backoff, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = drain.signaled() => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let conn = Conn {
                server: self.clone(),
                listener: name,
                remote,
            };
            let open = Open::new(self.metrics.open.get_or_create(&labels).clone());
            // `peer` is filled in by listeners that learn the client's
            // identity (the mesh port, after the handshake).
            let span = tracing::info_span!(
                "conn",
                listener = name,
                %remote,
                peer = tracing::field::Empty
            );
            let task = handler(tcp, remote, conn);
            let alive = drain.clone();
            tokio::spawn(
                async move {
                    // Held until the connection ends, even by a panic: the
                    // limit's slot, the drain's wait for it (tunnels too)
                    // and the open-connections gauge.
                    let (_permit, _alive, _open) = (permit, alive, open);
                    task.await;
                }
                .instrument(span),
            );
        }
        tracing::debug!(listener = name, "listener closed for drain");
    }
}

/// One connection counted in `connections_open`.
struct Open(Gauge);

impl Open {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Conn {
    pub fn limits(&self) -> &Limits {
        &self.server.limits
    }

    pub fn drain(&self) -> &Drain {
        &self.server.drain
    }

    /// The listener's observer, for the spans of TCP tunnels (which no
    /// request of `serve_http` covers).
    pub fn observer(&self) -> Option<&Arc<Observer>> {
        self.server.observer.as_ref()
    }

    /// A span for the tunnel this outbound connection becomes, when its
    /// trace is recorded.
    pub fn tunnel_span(&self, service: &str) -> Option<TunnelSpan> {
        self.server
            .observer
            .as_ref()?
            .tracing()?
            .start_tunnel(service, self.remote)
    }

    /// Serves HTTP on `io` with `service` until the client closes, the
    /// connection is idle for `idle_timeout`, or draining asks it to finish
    /// its requests and close.
    pub async fn serve_http<I, S, Fut>(&self, io: I, mode: HttpMode, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let limits = self.server.limits.clone();
        let builder = builder(&limits, mode);
        let activity = Activity::new();
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let service = Arc::new(service);
        let (metrics, labels) = (
            self.server.metrics.clone(),
            ConnMetrics::labels(self.listener),
        );
        let in_flight = activity.clone();
        let client = ClientAddr(self.remote);
        let observer = self
            .server
            .observer
            .clone()
            .zip(Observer::direction_of(self.listener));
        let svc = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(client);
            let started = observer
                .as_ref()
                .map(|(o, direction)| o.start(*direction, &mut req, client.0));
            let service = service.clone();
            let limits = limits.clone();
            let (metrics, labels) = (metrics.clone(), labels.clone());
            // Counted from the request until its response body ends, so a
            // slow answer or a quiet stream is not taken for idleness.
            let guard = in_flight.begin();
            async move {
                let res = guarded(&limits, mode, &metrics, &labels, req, |r| service(r)).await;
                let res = match started {
                    Some(started) => started.finish(res),
                    None => res,
                };
                Ok::<_, std::convert::Infallible>(
                    res.map(|body| crate::core::http::hold(body, guard)),
                )
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let idle = self.server.limits.idle_timeout;
        let drain = self.server.drain.clone();
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with error");
                    }
                    return;
                }
                () = drain.signaled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(activity.last() + idle) => {
                    if !activity.is_idle(idle) {
                        continue;
                    }
                    if closing {
                        // Asked to close and still silent (e.g. a client
                        // that never answers the HTTP/2 GOAWAY PING).
                        tracing::debug!(?idle, "closing connection still idle; dropped");
                        return;
                    }
                    tracing::debug!(?idle, "idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    activity.touch();
                }
            }
        }
    }
}

fn builder(limits: &Limits, mode: HttpMode) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    match mode {
        HttpMode::Mesh => b = b.http2_only(),
        HttpMode::Admin => b = b.http1_only(),
        HttpMode::FirstHop => {}
    }
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for a header list just over the cap, so it reaches our
        // check and gets the labelled 431; far beyond, hyper answers 431.
        .max_buf_size(read_buffer_bytes(limits.max_header_bytes));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(match mode {
            HttpMode::Mesh => mesh_header_list_bytes(limits.max_header_bytes),
            _ => max_header_bytes_twice(limits.max_header_bytes),
        } as u32);
    b
}

/// hyper's own default read buffer limit (8 KiB + 100 × 4 KiB): kept as
/// the floor so body throughput is what it was.
const HYPER_READ_BUFFER: usize = 8192 + 4096 * 100;

/// What an HTTP/1 connection may buffer while reading a request head.
pub fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes
        .saturating_mul(2)
        .clamp(HYPER_READ_BUFFER, u32::MAX as usize / 2)
}

fn max_header_bytes_twice(max_header_bytes: usize) -> usize {
    max_header_bytes
        .saturating_mul(2)
        .min(u32::MAX as usize / 2)
}

/// The header list the mesh port accepts: a first hop's cap plus what the
/// client sidecar adds, with room to spare.
pub fn mesh_header_list_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes
        .saturating_mul(2)
        .saturating_add(16 * 1024)
        .min(u32::MAX as usize / 2)
}

/// Size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): name and
/// value bytes plus 32 per field. Used for HTTP/1 too, so the cap means the
/// same on every protocol.
pub fn header_list_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// The checks every request passes before its handler: the header cap (at
/// a first hop) and the response-headers timeout.
async fn guarded<B, F, Fut>(
    limits: &Limits,
    mode: HttpMode,
    metrics: &ConnMetrics,
    labels: &ListenerLabels,
    req: Request<B>,
    handler: F,
) -> Response<Body>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    if mode == HttpMode::FirstHop {
        let size = header_list_bytes(req.headers());
        if size > limits.max_header_bytes {
            metrics.header_too_large.get_or_create(labels).inc();
            tracing::info!(
                size,
                limit = limits.max_header_bytes,
                "request refused: header list too large"
            );
            // The message names only sizes and the flag, so it suits
            // external callers of a gateway as it is.
            return proxy_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ErrorKind::HeaderTooLarge,
                format!(
                    "request headers are {size} bytes; this proxy accepts at most {} (--max-header-bytes)",
                    limits.max_header_bytes
                ),
                Caller::of(req.headers(), false),
            );
        }
    }
    // gRPC calls carry their own deadline (`grpc-timeout`), and a watch
    // stream may legitimately wait long for its first message.
    let caller = Caller::of(req.headers(), false);
    let Some(timeout) = limits.request_timeout.filter(|_| !caller.grpc) else {
        return handler(req).await;
    };
    match tokio::time::timeout(timeout, handler(req)).await {
        Ok(res) => res,
        Err(_) => {
            metrics.timeouts.get_or_create(labels).inc();
            tracing::warn!(?timeout, "request timed out waiting for response headers");
            proxy_error(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Timeout,
                format!("no response headers within {timeout:?} (--request-timeout)"),
                caller,
            )
        }
    }
}

#[cfg(test)]
mod tests;
