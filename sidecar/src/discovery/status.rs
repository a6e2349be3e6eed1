//! The discovery stream's health as the admin server shows it, and its
//! metrics.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub nonce: String,
    pub at_unix: i64,
    /// The reason, for a NACK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamState {
    pub connected: bool,
    pub last_error: Option<String>,
    pub last_ack: Option<Reply>,
    pub last_nack: Option<Reply>,
    pub responses_applied: u64,
    pub connects: u64,
}

/// Shared between the stream task (writer) and admin (reader).
#[derive(Debug)]
pub struct DiscoveryStatus {
    state: Mutex<StreamState>,
    /// True once a first response was applied (or the source is static).
    synced: watch::Sender<bool>,
    /// Since when the stream has been failing without a response getting
    /// through (reconnects that fail again do not reset it).
    down_since: Mutex<Option<std::time::Instant>>,
}

/// How long the discovery stream may be down before `/ready` says so: a
/// controller restart is shorter; a stream that keeps failing is not.
pub const STREAM_DOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for DiscoveryStatus {
    fn default() -> Self {
        Self {
            state: Mutex::new(StreamState::default()),
            synced: watch::channel(false).0,
            down_since: Mutex::new(None),
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl DiscoveryStatus {
    fn with<R>(&self, f: impl FnOnce(&mut StreamState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn state(&self) -> StreamState {
        self.with(|s| s.clone())
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// For sources that are complete from the start (static file).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn connected(&self) {
        self.with(|s| {
            s.connected = true;
            s.connects += 1;
        });
    }

    pub fn disconnected(&self, error: String) {
        self.with(|s| {
            s.connected = false;
            s.last_error = Some(error);
        });
        self.down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(std::time::Instant::now);
    }

    /// True when the stream has failed, and no response got through, for
    /// longer than `grace`.
    pub fn down_longer_than(&self, grace: std::time::Duration) -> bool {
        self.down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|since| since.elapsed() > grace)
    }

    fn got_response(&self) {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn acked(&self, nonce: &str) {
        self.with(|s| {
            s.responses_applied += 1;
            s.last_ack = Some(Reply {
                nonce: nonce.to_string(),
                at_unix: now_unix(),
                error: None,
            });
        });
        self.got_response();
        self.mark_synced();
    }

    pub fn nacked(&self, nonce: &str, error: &str) {
        self.with(|s| {
            s.last_nack = Some(Reply {
                nonce: nonce.to_string(),
                at_unix: now_unix(),
                error: Some(error.to_string()),
            });
        });
        self.got_response();
    }
}

#[derive(Clone, Default)]
pub struct DiscoveryMetrics {
    connected: Gauge,
    acks: Counter,
    nacks: Counter,
}

impl DiscoveryMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("mycel_discovery");
        sub.register(
            "connected",
            "1 while the discovery stream to the controller is up",
            m.connected.clone(),
        );
        sub.register("acks", "Discovery responses accepted", m.acks.clone());
        sub.register("nacks", "Discovery responses rejected", m.nacks.clone());
        m
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    pub fn ack(&self) {
        self.acks.inc();
    }

    pub fn nack(&self) {
        self.nacks.inc();
    }
}

#[cfg(test)]
mod down_tests {
    use super::*;

    #[test]
    fn a_stream_that_keeps_failing_is_down_until_a_response_gets_through() {
        let status = DiscoveryStatus::default();
        assert!(!status.down_longer_than(std::time::Duration::ZERO));
        status.connected();
        status.disconnected("refused".into());
        // Reconnecting and failing again does not restart the clock.
        status.connected();
        std::thread::sleep(std::time::Duration::from_millis(5));
        status.disconnected("refused again".into());
        assert!(status.down_longer_than(std::time::Duration::from_millis(1)));
        status.acked("n1");
        assert!(!status.down_longer_than(std::time::Duration::ZERO));
    }
}
