//! One multiplexed HTTP/2 mTLS connection per peer sidecar, shared by every
//! request to it and dialed again once it closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mycel_api::spiffe::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::core::credentials::IdentityState;
use crate::core::http::Body;
use crate::core::tls::{PeerVerifyError, TlsConfigError};
use crate::metrics::ErrorKind;

/// Connect timeout when the service's traffic policy sets none.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no connection to a peer sidecar could be had.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The peer proved a different identity than the endpoint should have.
    #[error("identity mismatch: expected {expected}, got {got}")]
    IdentityMismatch { expected: SpiffeId, got: SpiffeId },
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("TLS handshake timed out after {0:?}")]
    TlsTimeout(Duration),
    #[error("peer did not agree to HTTP/2 (ALPN h2)")]
    NoH2,
    #[error("HTTP/2 handshake: {0}")]
    Http2(#[source] hyper::Error),
    #[error(transparent)]
    Config(#[from] TlsConfigError),
}

impl DialError {
    /// Why the TLS handshake failed, when that is how the dial failed.
    pub fn handshake_reason(&self) -> Option<&'static str> {
        match self {
            DialError::Tls(e) => Some(crate::core::tls::failure_reason(e)),
            DialError::TlsTimeout(_) => Some("timeout"),
            DialError::IdentityMismatch { .. } => Some("identity_mismatch"),
            DialError::NoH2 => Some("no_h2"),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            DialError::Connect(_) | DialError::ConnectTimeout(_) => ErrorKind::Connect,
            DialError::IdentityMismatch { .. } => ErrorKind::IdentityMismatch,
            DialError::Tls(_)
            | DialError::TlsTimeout(_)
            | DialError::NoH2
            | DialError::Config(_) => ErrorKind::TlsHandshake,
            DialError::Http2(_) => ErrorKind::Connect,
        }
    }
}

type Key = (SocketAddr, SpiffeId);
type Slot = Arc<tokio::sync::Mutex<Option<Pooled>>>;

/// A live connection and a number telling it from its successors.
#[derive(Clone)]
struct Pooled {
    id: u64,
    sender: SendRequest<Body>,
    /// Milliseconds since the pool's epoch when it was last handed out.
    last_used: Arc<AtomicU64>,
}

/// Per-service dialing settings from its traffic policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialOptions {
    pub connect_timeout: Duration,
    /// Close the connection after this long without a request.
    pub idle_timeout: Option<Duration>,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: None,
        }
    }
}

/// How pooled mesh connections behave.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// HTTP/2 PING interval, also the time a PING may go unanswered before
    /// the connection is dropped. Pings run while idle too, so a dead
    /// peer is found before a request waits on it.
    pub keepalive: Duration,
    /// Largest response header list accepted from a peer.
    pub max_header_list_bytes: u32,
}

impl PoolSettings {
    pub fn from_limits(limits: &crate::core::limits::Limits) -> Self {
        Self {
            keepalive: limits.mesh_keepalive,
            max_header_list_bytes: u32::try_from(crate::core::serve::mesh_header_list_bytes(
                limits.max_header_bytes,
            ))
            .unwrap_or(u32::MAX),
        }
    }
}

/// Connections by (mesh address, expected identity): a peer that changes
/// identity at the same address gets a fresh, re-verified connection.
pub struct Pool {
    identity: Arc<IdentityState>,
    settings: PoolSettings,
    slots: Mutex<HashMap<Key, Slot>>,
    dialed: AtomicU64,
    epoch: std::time::Instant,
}

/// A request on a pooled connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Request(#[from] hyper::Error),
}

impl Pool {
    pub fn new(identity: Arc<IdentityState>, settings: PoolSettings) -> Self {
        Self {
            identity,
            settings,
            slots: Mutex::new(HashMap::new()),
            dialed: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a live connection to the peer is pooled (a request to it
    /// will not wait for a dial).
    pub fn has_live(&self, addr: SocketAddr, expected: &SpiffeId) -> bool {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(&(addr, expected.clone())).cloned()
        };
        slot.is_some_and(|slot| match slot.try_lock() {
            Ok(guard) => guard.as_ref().is_some_and(|p| !p.sender.is_closed()),
            Err(_) => false,
        })
    }

    /// Sends `req` to the peer at `addr`. A request the shared connection
    /// never sent (it closed, or a GOAWAY came first: hyper hands such a
    /// request back) is sent once more on a fresh connection.
    pub async fn send(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        req: http::Request<Body>,
        opts: DialOptions,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let mut pooled = self.pooled(addr, expected, opts).await?;
        let mut err = match pooled.sender.try_send_request(req).await {
            Ok(res) => return Ok(res),
            Err(e) => e,
        };
        let Some(req) = err.take_message() else {
            return Err(err.into_error().into());
        };
        tracing::debug!(%addr, error = %err.into_error(), "mesh connection closed before the request was sent; retrying on a new one");
        self.forget(addr, expected, pooled.id).await;
        let mut sender = self.get(addr, expected, opts).await?;
        Ok(sender.send_request(req).await?)
    }

    /// Drops pooled connection `id` (one going away may not say closed
    /// yet) so the next caller dials anew, unless it was replaced already.
    async fn forget(&self, addr: SocketAddr, expected: &SpiffeId, id: u64) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(&(addr, expected.clone())).cloned()
        };
        if let Some(slot) = slot {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|p| p.id == id) {
                *guard = None;
            }
        }
    }

    /// A sender on a live connection to `addr`, dialing if there is none.
    /// Concurrent callers for one peer wait for a single dial.
    pub async fn get(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        opts: DialOptions,
    ) -> Result<SendRequest<Body>, DialError> {
        Ok(self.pooled(addr, expected, opts).await?.sender)
    }

    async fn pooled(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        opts: DialOptions,
    ) -> Result<Pooled, DialError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let key = (addr, expected.clone());
            if !slots.contains_key(&key) {
                prune(&mut slots);
            }
            slots.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(pooled) = guard.as_ref() {
            if !pooled.sender.is_closed() {
                pooled.last_used.store(self.now_ms(), Ordering::Relaxed);
                return Ok(pooled.clone());
            }
        }
        *guard = None;
        let pooled = Pooled {
            id: self.dialed.fetch_add(1, Ordering::Relaxed),
            sender: self.dial(addr, expected, opts.connect_timeout).await?,
            last_used: Arc::new(AtomicU64::new(self.now_ms())),
        };
        *guard = Some(pooled.clone());
        if let Some(idle) = opts.idle_timeout {
            tokio::spawn(reap_when_idle(
                Arc::downgrade(&slot),
                pooled.id,
                pooled.last_used.clone(),
                self.epoch,
                idle,
            ));
        }
        Ok(pooled)
    }

    /// How many peers have a slot (for tests and `/config_dump`).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn dial(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        connect_timeout: Duration,
    ) -> Result<SendRequest<Body>, DialError> {
        let config = crate::core::tls::client_config(self.identity.clone(), expected.clone())?;
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| DialError::ConnectTimeout(connect_timeout))?
            .map_err(DialError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let connect =
            TlsConnector::from(config).connect(crate::core::tls::server_name_for(addr), tcp);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| DialError::TlsTimeout(HANDSHAKE_TIMEOUT))?
            .map_err(|e| {
                let mismatch = match crate::core::tls::rejection(&e) {
                    Some(PeerVerifyError::IdentityMismatch { expected, got }) => {
                        Some((expected.clone(), got.clone()))
                    }
                    _ => None,
                };
                match mismatch {
                    Some((expected, got)) => DialError::IdentityMismatch { expected, got },
                    None => DialError::Tls(e),
                }
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(crate::core::tls::ALPN_H2) {
            return Err(DialError::NoH2);
        }
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.keepalive)
            .keep_alive_timeout(self.settings.keepalive)
            .keep_alive_while_idle(true)
            .max_header_list_size(self.settings.max_header_list_bytes)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(DialError::Http2)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "outbound: mesh connection ended with error");
            }
        });
        Ok(sender)
    }
}

/// Drops pooled connection `id` from its slot once nobody has asked for it
/// for `idle`; dropping the last sender closes the connection after the
/// streams still open on it finish. Ends when the slot or connection is
/// gone or replaced.
async fn reap_when_idle(
    slot: std::sync::Weak<tokio::sync::Mutex<Option<Pooled>>>,
    id: u64,
    last_used: Arc<AtomicU64>,
    epoch: std::time::Instant,
    idle: Duration,
) {
    let tick = (idle / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let Some(slot) = slot.upgrade() else { return };
        let mut guard = slot.lock().await;
        let Some(p) = guard.as_ref().filter(|p| p.id == id) else {
            return;
        };
        if p.sender.is_closed() {
            return;
        }
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last_used.load(Ordering::Relaxed)) >= idle_ms {
            tracing::debug!(idle = ?idle, "outbound: closing an idle mesh connection");
            *guard = None;
            return;
        }
    }
}

/// Drops slots of peers whose connection has closed and that nobody is
/// dialing, so endpoints that come and go do not pile up. Runs only when a
/// new peer is added, which is when the map would grow.
fn prune(slots: &mut HashMap<Key, Slot>) {
    slots.retain(|_, slot| match slot.try_lock() {
        Ok(guard) => guard.as_ref().is_some_and(|p| !p.sender.is_closed()),
        // Someone is dialing or using it right now.
        Err(_) => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> Key {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/x".parse().unwrap();
        (SocketAddr::from(([127, 0, 0, 1], port)), id)
    }

    #[tokio::test]
    async fn prune_drops_failed_slots_and_keeps_busy_ones() {
        let mut slots: HashMap<Key, Slot> = HashMap::new();
        slots.insert(key(1), Slot::default()); // a dial that failed
        let busy = Slot::default();
        slots.insert(key(2), busy.clone());
        let _dialing = busy.lock().await;
        prune(&mut slots);
        assert!(!slots.contains_key(&key(1)));
        assert!(slots.contains_key(&key(2)));
    }
}
