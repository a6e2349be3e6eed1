//! How the data path asks for services: on demand, never blocking on the
//! controller once a service is known.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::model::{ServiceState, Snapshot};

/// Read side of discovery, cheap to clone, shared by every listener.
#[derive(Clone)]
pub struct Discovery {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    subscriptions: Subscriptions,
}

/// The set of services this proxy has asked for. Additions are forwarded to
/// whatever feeds the snapshot (the controller stream, or nothing for a
/// static file) and kept so a reconnecting stream can re-send them.
#[derive(Clone, Default)]
pub struct Subscriptions {
    inner: Arc<Mutex<SubscriptionsInner>>,
}

#[derive(Default)]
struct SubscriptionsInner {
    set: BTreeSet<String>,
    tx: Option<mpsc::UnboundedSender<String>>,
}

impl Subscriptions {
    /// Records `key`; returns true when it is new.
    pub fn add(&self, key: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.set.insert(key.to_string()) {
            return false;
        }
        if let Some(tx) = &inner.tx {
            // A closed receiver means the stream task is between connections;
            // the key is in `set` and goes out with the next Hello.
            let _ = tx.send(key.to_string());
        }
        true
    }

    pub fn all(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.set.iter().cloned().collect()
    }

    /// Routes new subscriptions to a stream task; replaces any earlier one.
    pub fn attach(&self) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tx = Some(tx);
        rx
    }
}

impl Discovery {
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, subscriptions: Subscriptions) -> Self {
        Self {
            snapshot,
            subscriptions,
        }
    }

    /// The current view, for decisions that need no particular service.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The state of `key` (`<name>.<namespace>`), subscribing first if this
    /// proxy never asked for it. Waits at most `wait` for a first answer;
    /// after that a still-unanswered service is reported as `Pending`.
    pub async fn resolve(&self, key: &str, wait: Duration) -> ServiceState {
        if let Some(state) = self.known(key) {
            return state;
        }
        self.subscriptions.add(key);
        let mut rx = self.snapshot.clone();
        let waited = tokio::time::timeout(wait, async {
            loop {
                if let Some(state) = known_in(&rx.borrow_and_update(), key) {
                    return Some(state);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(state)) => state,
            _ => self
                .snapshot
                .borrow()
                .service(key)
                .cloned()
                .unwrap_or(ServiceState::Pending),
        }
    }

    fn known(&self, key: &str) -> Option<ServiceState> {
        known_in(&self.snapshot.borrow(), key)
    }
}

fn known_in(snapshot: &Snapshot, key: &str) -> Option<ServiceState> {
    match snapshot.service(key) {
        Some(ServiceState::Pending) | None => None,
        Some(state) => Some(state.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::Service;

    fn known(name: &str) -> ServiceState {
        ServiceState::Known {
            service: Arc::new(Service {
                name: name.into(),
                namespace: "shop".into(),
                ports: vec![],
                vips: vec![],
            }),
            endpoints: Arc::from(Vec::new()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resolve_subscribes_and_waits_for_answer() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let subs = Subscriptions::default();
        let mut added = subs.attach();
        let d = Discovery::new(rx, subs);
        let task = tokio::spawn({
            let d = d.clone();
            async move { d.resolve("catalog.shop", Duration::from_secs(5)).await }
        });
        assert_eq!(added.recv().await.as_deref(), Some("catalog.shop"));
        let mut snap = Snapshot::default();
        snap.services
            .insert("catalog.shop".into(), known("catalog"));
        tx.send_replace(Arc::new(snap));
        assert!(matches!(task.await.unwrap(), ServiceState::Known { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn resolve_gives_up_as_pending() {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let d = Discovery::new(rx, Subscriptions::default());
        let state = d.resolve("nope.shop", Duration::from_secs(2)).await;
        assert_eq!(state, ServiceState::Pending);
        assert_eq!(d.subscriptions().all(), vec!["nope.shop".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn complete_snapshot_answers_unknown_at_once() {
        let snap = Snapshot {
            complete: true,
            ..Snapshot::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let d = Discovery::new(rx, Subscriptions::default());
        let start = tokio::time::Instant::now();
        let state = d.resolve("nope.shop", Duration::from_secs(2)).await;
        assert_eq!(state, ServiceState::NotFound);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn adding_twice_is_one_subscription() {
        let subs = Subscriptions::default();
        assert!(subs.add("a.b"));
        assert!(!subs.add("a.b"));
    }
}
