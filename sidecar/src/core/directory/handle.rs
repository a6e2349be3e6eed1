//! How the data path asks for services: on demand, never blocking on the
//! controller once a service is known.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::model::{ServiceState, Snapshot};
use crate::core::limits::SubscriptionLimits;

/// Read side of discovery, cheap to clone, shared by every listener.
#[derive(Clone)]
pub struct Discovery {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    subscriptions: Subscriptions,
}

/// Why a service was not subscribed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The proxy follows as many services as it may.
    #[error("subscription limit of {0} services reached")]
    Limit(usize),
    /// Not a `<name>.<namespace>` key: the controller would refuse it, so
    /// it never leaves the proxy, whichever path produced it.
    #[error(transparent)]
    BadKey(#[from] mycel_api::names::ServiceKeyError),
}

/// A change to forward to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add(String),
    Remove(String),
}

/// The set of services this proxy has asked for. Changes are forwarded to
/// whatever feeds the snapshot (the controller stream, or nothing for a
/// static file) and kept so a reconnecting stream can re-send them.
/// On-demand subscriptions are capped and expire when unused; pinned ones
/// (`--subscribe`) do neither.
#[derive(Clone, Default)]
pub struct Subscriptions {
    inner: Arc<Mutex<SubscriptionsInner>>,
}

#[derive(Default)]
struct SubscriptionsInner {
    limits: SubscriptionLimits,
    pinned: BTreeSet<String>,
    /// On-demand keys and when a request last used each.
    used: BTreeMap<String, Instant>,
    tx: Option<mpsc::UnboundedSender<Change>>,
}

impl SubscriptionsInner {
    fn send(&self, change: Change) {
        if let Some(tx) = &self.tx {
            // A closed receiver means the stream task is between connections;
            // the set goes out whole with the next Hello.
            let _ = tx.send(change);
        }
    }
}

impl Subscriptions {
    pub fn new(limits: SubscriptionLimits) -> Self {
        let s = Self::default();
        s.lock().limits = limits;
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriptionsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to `key` for good (neither capped nor expired).
    pub fn pin(&self, key: &str) {
        let mut inner = self.lock();
        inner.used.remove(key);
        if inner.pinned.insert(key.to_string()) {
            inner.send(Change::Add(key.to_string()));
        }
    }

    /// Records a use of `key`, subscribing when it is new; returns true
    /// when it is new. Refuses a new key once the cap is reached, and any
    /// string that is not a service key.
    pub fn add(&self, key: &str) -> Result<bool, SubscribeError> {
        let mut inner = self.lock();
        if inner.pinned.contains(key) {
            return Ok(false);
        }
        let now = Instant::now();
        if let Some(at) = inner.used.get_mut(key) {
            *at = now;
            return Ok(false);
        }
        mycel_api::names::ServiceKey::parse(key)?;
        if inner.used.len() >= inner.limits.max {
            return Err(SubscribeError::Limit(inner.limits.max));
        }
        inner.used.insert(key.to_string(), now);
        inner.send(Change::Add(key.to_string()));
        Ok(true)
    }

    /// Marks `key` as used now, if this proxy follows it on demand.
    pub fn touch(&self, key: &str) {
        if let Some(at) = self.lock().used.get_mut(key) {
            *at = Instant::now();
        }
    }

    /// Drops the on-demand subscriptions unused for longer than the idle
    /// limit and returns them; the caller unsubscribes them.
    pub fn expire(&self) -> Vec<String> {
        let mut inner = self.lock();
        let idle = inner.limits.idle;
        let now = Instant::now();
        let gone: Vec<String> = inner
            .used
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            inner.used.remove(k);
        }
        gone
    }

    /// How often [`Subscriptions::expire`] is worth calling.
    pub fn sweep_interval(&self) -> Duration {
        (self.lock().limits.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    pub fn all(&self) -> Vec<String> {
        let inner = self.lock();
        let mut all: BTreeSet<String> = inner.pinned.clone();
        all.extend(inner.used.keys().cloned());
        all.into_iter().collect()
    }

    /// On-demand subscriptions held now (pinned ones not counted).
    pub fn on_demand(&self) -> usize {
        self.lock().used.len()
    }

    /// Routes new subscriptions to a stream task; replaces any earlier one.
    pub fn attach(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().tx = Some(tx);
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

    /// Every new snapshot, for a task that follows one part of it (the
    /// gateway's certificates) rather than reading it per request. Its
    /// `changed()` fails once the source is gone for good.
    pub fn changes(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The state of `key` (`<name>.<namespace>`), subscribing first if this
    /// proxy never asked for it. Waits at most `wait` for a first answer;
    /// after that a still-unanswered service is reported as `Pending`.
    /// Fails without subscribing when the proxy follows as many services as
    /// it may.
    pub async fn resolve(&self, key: &str, wait: Duration) -> Result<ServiceState, SubscribeError> {
        if let Some(state) = self.known(key) {
            self.subscriptions.touch(key);
            return Ok(state);
        }
        self.subscriptions.add(key)?;
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
        Ok(match waited {
            Ok(Some(state)) => state,
            _ => self
                .snapshot
                .borrow()
                .service(key)
                .cloned()
                .unwrap_or(ServiceState::Pending),
        })
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
    use super::super::model::Service;
    use super::*;

    fn known(name: &str) -> ServiceState {
        ServiceState::Known {
            routes: Default::default(),
            policy: Default::default(),
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
        assert_eq!(added.recv().await, Some(Change::Add("catalog.shop".into())));
        let mut snap = Snapshot::default();
        snap.services
            .insert("catalog.shop".into(), known("catalog"));
        tx.send_replace(Arc::new(snap));
        assert!(matches!(
            task.await.unwrap(),
            Ok(ServiceState::Known { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn resolve_gives_up_as_pending() {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let d = Discovery::new(rx, Subscriptions::default());
        let state = d.resolve("nope.shop", Duration::from_secs(2)).await;
        assert_eq!(state, Ok(ServiceState::Pending));
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
        assert_eq!(state, Ok(ServiceState::NotFound));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn strings_that_are_not_service_keys_are_never_subscribed() {
        let subs = Subscriptions::default();
        let mut changes = subs.attach();
        for bad in [".shop", "a..b", "x", "a_b.shop", "-a.shop", "a.b.c"] {
            assert!(
                matches!(subs.add(bad), Err(SubscribeError::BadKey(_))),
                "{bad}"
            );
        }
        assert!(changes.try_recv().is_err());
        assert!(subs.all().is_empty());
    }

    #[test]
    fn adding_twice_is_one_subscription() {
        let subs = Subscriptions::default();
        assert_eq!(subs.add("a.b"), Ok(true));
        assert_eq!(subs.add("a.b"), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_hosts_beyond_the_cap_are_refused_without_subscribing() {
        let subs = Subscriptions::new(SubscriptionLimits {
            max: 3,
            idle: Duration::from_secs(600),
        });
        subs.pin("pinned.shop");
        let mut changes = subs.attach();
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let d = Discovery::new(rx, subs.clone());
        for i in 0..3 {
            let key = format!("s{i}.shop");
            assert!(d.resolve(&key, Duration::ZERO).await.is_ok());
            assert_eq!(changes.recv().await, Some(Change::Add(key)));
        }
        assert_eq!(
            d.resolve("s3.shop", Duration::ZERO).await,
            Err(SubscribeError::Limit(3))
        );
        assert!(changes.try_recv().is_err(), "no subscription past the cap");
        // Services already followed still resolve.
        assert!(d.resolve("s0.shop", Duration::ZERO).await.is_ok());
        assert_eq!(subs.on_demand(), 3);
        assert_eq!(subs.all().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn unused_subscriptions_expire() {
        let idle = Duration::from_secs(600);
        let subs = Subscriptions::new(SubscriptionLimits { max: 2, idle });
        subs.pin("pinned.shop");
        let mut snap = Snapshot::default();
        snap.services.insert("used.shop".into(), known("used"));
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let d = Discovery::new(rx, subs.clone());
        assert_eq!(subs.add("used.shop"), Ok(true));
        assert_eq!(subs.add("once.shop"), Ok(true));
        assert_eq!(subs.add("third.shop"), Err(SubscribeError::Limit(2)));

        tokio::time::advance(idle / 2).await;
        // A request for a known service keeps its subscription alive.
        assert!(d.resolve("used.shop", Duration::ZERO).await.is_ok());
        assert!(subs.expire().is_empty());

        tokio::time::advance(idle / 2).await;
        assert_eq!(subs.expire(), vec!["once.shop".to_string()]);
        assert_eq!(
            subs.all(),
            vec!["pinned.shop".to_string(), "used.shop".to_string()]
        );
        // The freed slot can be used again.
        assert_eq!(subs.add("third.shop"), Ok(true));

        tokio::time::advance(idle * 2).await;
        let mut gone = subs.expire();
        gone.sort();
        assert_eq!(
            gone,
            vec!["third.shop".to_string(), "used.shop".to_string()]
        );
        assert_eq!(subs.all(), vec!["pinned.shop".to_string()]);
    }
}
