//! Whether the local app is ready, as reported to the controller: every
//! declared app port accepts TCP on the app host. With no declared port the
//! workload is ready as soon as the proxy holds a certificate. A proxy
//! that is stopping withdraws: it reports not ready whatever the app says
//! (see [`Withdrawal`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::core::credentials::IdentityState;

pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe of every port.
pub async fn probe(host: IpAddr, ports: &[u16]) -> bool {
    for &port in ports {
        let addr = SocketAddr::new(host, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    true
}

/// Starts watching; the receiver changes when readiness does. The task ends
/// when every receiver is gone.
pub fn watch_app(
    host: IpAddr,
    ports: Vec<u16>,
    identity: Arc<IdentityState>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if ports.is_empty() {
            let mut changes = identity.changes();
            while !identity.has_cert() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
            let _ = tx.send(true);
            tx.closed().await;
            return;
        }
        let mut interval = tokio::time::interval(PROBE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = tx.closed() => return,
            }
            let ready = probe(host, &ports).await;
            tx.send_if_modified(|r| std::mem::replace(r, ready) != ready);
        }
    });
    rx
}

/// A stopping proxy's request to leave the endpoint lists before it stops
/// accepting: the app side asks ([`Self::withdraw`]), the discovery stream
/// reports `ready: false` and says so. Cheap to clone.
#[derive(Clone)]
pub struct Withdrawal(Arc<WithdrawalState>);

struct WithdrawalState {
    asked: watch::Sender<bool>,
    /// `Some(was_ready)` once the controller has been told (or there was
    /// nothing to tell): `was_ready` says whether peers may still list this
    /// proxy and need time to learn it left.
    told: watch::Sender<Option<bool>>,
}

impl Default for Withdrawal {
    fn default() -> Self {
        Self(Arc::new(WithdrawalState {
            asked: watch::channel(false).0,
            told: watch::channel(None).0,
        }))
    }
}

impl Withdrawal {
    /// Asks to be reported not ready and waits at most `within` for the
    /// report to be on the discovery stream. `Some(was_ready)` once it is;
    /// `None` when the stream could not take it in time (controller away).
    pub async fn withdraw(&self, within: Duration) -> Option<bool> {
        let mut told = self.0.told.subscribe();
        self.ask();
        let wait = async { told.wait_for(Option::is_some).await.ok().and_then(|t| *t) };
        tokio::time::timeout(within, wait).await.ok().flatten()
    }

    /// Asks without waiting: a stream that connects later says not ready.
    pub fn ask(&self) {
        self.0.asked.send_replace(true);
    }

    pub fn is_asked(&self) -> bool {
        *self.0.asked.borrow()
    }

    /// Changes when a withdrawal is asked for.
    pub fn asked(&self) -> watch::Receiver<bool> {
        self.0.asked.subscribe()
    }

    /// The stream reported not ready; `was_ready` as in [`Self::withdraw`].
    pub fn told(&self, was_ready: bool) {
        self.0.told.send_if_modified(|t| {
            let merged = Some(was_ready || t.unwrap_or(false));
            std::mem::replace(t, merged) != merged
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_app_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(probe(host, &[open]).await);
        assert!(!probe(host, &[open, closed]).await);
        assert!(probe(host, &[]).await);
    }

    #[tokio::test]
    async fn withdrawal_does_not_wait_for_an_absent_controller() {
        let w = Withdrawal::default();
        // Nobody reports it: the wait ends at its bound.
        let started = tokio::time::Instant::now();
        assert_eq!(w.withdraw(Duration::from_millis(50)).await, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(w.is_asked());
        w.told(true);
        w.told(false);
        assert_eq!(w.withdraw(Duration::from_millis(50)).await, Some(true));
    }

    #[tokio::test]
    async fn no_ports_means_ready_with_cert() {
        let identity = IdentityState::new();
        let mut rx = watch_app("127.0.0.1".parse().unwrap(), vec![], identity.clone());
        assert!(!*rx.borrow());
        let ca = crate::identity::fake::FakeCa::new(
            "spiffe://cluster.local/ns/shop/sa/a".parse().unwrap(),
            Duration::from_secs(60),
        );
        let m = crate::identity::IdentityManager::new(
            ca,
            identity.clone(),
            "spiffe://cluster.local/ns/shop/sa/a".parse().unwrap(),
            None,
            crate::identity::IdentityMetrics::default(),
        );
        m.renew().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r))
            .await
            .unwrap()
            .unwrap();
    }
}
