//! `notifications`: tells users about their orders. With `--nats` it
//! consumes `OrderPlaced` (durable consumer `notifications`) and records
//! one notification per order, in memory or in Redis (`--redis`: list
//! [`LIST_KEY`], newest first, the last [`KEPT`] kept).
//!
//! `GET /notifications` → `{notifications: [{order_id, user, product,
//! quantity, text, at}...], caller}`, newest first, at most [`SHOWN`];
//! `GET /healthz` (never faulted). With Redis down: 503 `{"error":
//! "notifications' Redis is unavailable: ...", caller}`.
//!
//! Idempotent by order id: in Redis one script sets the order's processed
//! key (`SET NX`, kept [`PROCESSED_TTL`]) and only if it was new pushes the
//! notification, atomically, so a redelivered event adds nothing and a
//! crash between the two cannot lose one (see [`crate::events`]).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::events::{Apply, OrderPlaced};
use crate::faults::Faults;
use crate::http::{json, json_error, peer_id, text, Body, Handler};
use crate::kv::{KvError, Redis};

/// The Redis list of notifications, newest first.
pub const LIST_KEY: &str = "notifications";
/// Prefix of the per-order "already notified" keys.
pub const PROCESSED_PREFIX: &str = "notifications:processed:";
/// Notifications kept.
pub const KEPT: usize = 100;
/// Notifications one `GET` shows.
pub const SHOWN: usize = 20;
/// How long an order id is remembered as notified: far longer than any
/// redelivery takes.
pub const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub order_id: String,
    pub user: String,
    pub product: String,
    pub quantity: u32,
    pub text: String,
    /// When the order was placed (RFC 3339).
    pub at: String,
}

impl Notification {
    pub fn of(event: &OrderPlaced) -> Self {
        let name = crate::catalog::find(&event.product)
            .map(|p| p.name)
            .unwrap_or_else(|| event.product.clone());
        Notification {
            order_id: event.order_id.clone(),
            user: event.user.clone(),
            product: event.product.clone(),
            quantity: event.quantity,
            text: format!(
                "{} ordered {} × {} (order {})",
                event.user, event.quantity, name, event.order_id
            ),
            at: event.placed_at.clone(),
        }
    }
}

/// `GET /notifications`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
    pub caller: Option<String>,
}

/// The notifications in memory, newest first, and the order ids seen.
#[derive(Debug, Default)]
pub struct Memory {
    list: VecDeque<Notification>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl Memory {
    /// Records the order's notification unless it has one already.
    pub fn record(&mut self, event: &OrderPlaced) -> bool {
        if !self.seen.insert(event.order_id.clone()) {
            return false;
        }
        self.seen_order.push_back(event.order_id.clone());
        if self.seen_order.len() > crate::catalog::store::MEMORY_PROCESSED {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.list.push_front(Notification::of(event));
        self.list.truncate(KEPT);
        true
    }

    pub fn latest(&self, n: usize) -> Vec<Notification> {
        self.list.iter().take(n).cloned().collect()
    }
}

pub enum Store {
    Memory(Mutex<Memory>),
    Redis(Arc<Redis>),
}

/// SET NX of the processed key, and only if new: LPUSH + LTRIM, in one
/// step on the server.
const RECORD: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
  return 1
end
return 0
";

impl Store {
    pub fn memory() -> Self {
        Store::Memory(Mutex::new(Memory::default()))
    }

    fn lock(m: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
        // Every change is complete before the lock is released.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn record(&self, event: &OrderPlaced) -> Result<bool, KvError> {
        match self {
            Store::Memory(m) => Ok(Self::lock(m).record(event)),
            Store::Redis(redis) => {
                let body = serde_json::to_string(&Notification::of(event))
                    .map_err(|e| KvError::Command(e.to_string()))?;
                let processed = format!("{PROCESSED_PREFIX}{}", event.order_id);
                let added: i64 = redis
                    .run(|mut conn, _| async move {
                        redis::Script::new(RECORD)
                            .key(processed)
                            .key(LIST_KEY)
                            .arg(body)
                            .arg(KEPT)
                            .arg(PROCESSED_TTL.as_secs())
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok(added == 1)
            }
        }
    }

    pub async fn latest(&self, n: usize) -> Result<Vec<Notification>, KvError> {
        match self {
            Store::Memory(m) => Ok(Self::lock(m).latest(n)),
            Store::Redis(redis) => {
                let stop = isize::try_from(n).unwrap_or(isize::MAX) - 1;
                let items: Vec<String> = redis
                    .run(|mut conn, _| async move {
                        redis::cmd("LRANGE")
                            .arg(LIST_KEY)
                            .arg(0)
                            .arg(stop)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                // An entry someone else wrote that does not parse is skipped,
                // not shown as an error of the whole list.
                Ok(items
                    .iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .collect())
            }
        }
    }
}

/// The consumer's side: records each event's notification.
pub struct Recorder(pub Arc<Store>);

impl Apply for Recorder {
    async fn apply(&mut self, event: &OrderPlaced) -> Result<bool, String> {
        self.0
            .record(event)
            .await
            .map_err(|e| format!("notifications' Redis is unavailable: {e}"))
    }
}

pub struct Notifications {
    faults: Arc<Faults>,
    store: Arc<Store>,
}

impl Notifications {
    pub fn new(faults: Arc<Faults>, store: Arc<Store>) -> Self {
        Notifications { faults, store }
    }
}

impl Handler for Notifications {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let caller = peer_id(req.headers());
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if path != "/notifications" {
            return json_error(StatusCode::NOT_FOUND, &format!("no route {path}"), caller);
        }
        if req.method() != Method::GET {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET", caller);
        }
        if let Err(fault) = self.faults.apply().await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &fault.to_string(), caller);
        }
        match self.store.latest(SHOWN).await {
            Ok(notifications) => json(
                StatusCode::OK,
                &NotificationList {
                    notifications,
                    caller,
                },
            ),
            Err(e) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("notifications' Redis is unavailable: {e}"),
                caller,
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn order(id: &str) -> OrderPlaced {
        OrderPlaced {
            order_id: id.into(),
            product: "p1".into(),
            quantity: 2,
            user: "demo-user".into(),
            placed_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn memory_records_each_order_once_newest_first_and_bounded() {
        let mut m = Memory::default();
        assert!(m.record(&order("o1")));
        assert!(!m.record(&order("o1")));
        assert!(m.record(&order("o2")));
        let ids: Vec<String> = m.latest(SHOWN).into_iter().map(|n| n.order_id).collect();
        assert_eq!(ids, ["o2", "o1"]);
        for i in 3..=200 {
            m.record(&order(&format!("o{i}")));
        }
        assert_eq!(m.list.len(), KEPT);
        assert_eq!(m.latest(SHOWN).len(), SHOWN);
        assert_eq!(m.latest(1)[0].order_id, "o200");
    }

    #[test]
    fn notification_json_shape() {
        let v = serde_json::to_value(Notification::of(&order("o7"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"order_id": "o7", "user": "demo-user", "product": "p1",
                "quantity": 2, "text": "demo-user ordered 2 × Oyster mushroom grow kit (order o7)",
                "at": "2025-01-01T00:00:00Z"})
        );
    }
}
