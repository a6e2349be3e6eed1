//! The shop's events on NATS JetStream: `orders` publishes `OrderPlaced`
//! to subject [`SUBJECT`] of stream [`STREAM`] (file storage); `catalog`
//! and `notifications` each read it through a durable pull consumer of
//! their own name, acknowledging a message only once its effect is stored.
//!
//! Delivery is at least once: a message not acknowledged (the consumer
//! crashed, its store was down, the ack was lost) is delivered again, and
//! orders' outbox may publish an event twice (a publish whose ack was lost
//! is retried). Each event carries `Nats-Msg-Id: <order id>`, so the
//! stream drops a duplicate within its duplicate window, and each consumer
//! records the order ids it applied and ignores one it already has: each
//! order is applied once. Events published while a consumer is stopped
//! wait in the stream for its durable consumer, which resumes where it
//! stopped.
//!
//! A broker that is down, at start or later, is waited for: the client
//! reconnects for ever, and each task logs only when its state changes.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::upstream::Target;

pub const STREAM: &str = "SHOP_ORDERS";
pub const SUBJECT: &str = "shop.orders.placed";
/// The header JetStream de-duplicates publishes by.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Between attempts of a task whose broker or store is down.
pub const RETRY: Duration = Duration::from_secs(1);
/// How long a message may stay unacknowledged before it is delivered
/// again (a consumer that died holding it).
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages a consumer asks for at once: few, so that few wait out
/// [`ACK_WAIT`] when it dies.
const BATCH: usize = 16;
/// Longest an event body may be; an order's is about 150 bytes.
pub const MAX_EVENT_BYTES: usize = 4096;

/// `{"type":"OrderPlaced", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    OrderPlaced(OrderPlaced),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub product: String,
    pub quantity: u32,
    pub user: String,
    /// RFC 3339, UTC.
    pub placed_at: String,
}

impl OrderPlaced {
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and a number always encodes.
        serde_json::to_vec(&Event::OrderPlaced(self.clone())).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        match serde_json::from_slice(bytes) {
            Ok(Event::OrderPlaced(e)) => Ok(e),
            Err(e) => Err(EventError::Json(e.to_string())),
        }
    }
}

/// An event that will never be applied however often it is delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not an OrderPlaced event: {0}")]
    Json(String),
    #[error("event of {0} bytes, over {MAX_EVENT_BYTES}")]
    TooLarge(usize),
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// A client that connects in the background and reconnects for ever, so a
/// broker that is down never stops the service.
pub async fn connect(target: &Target, service: &'static str) -> Result<async_nats::Client, String> {
    let url = format!("nats://{target}");
    async_nats::ConnectOptions::new()
        .name(service)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        // Quick enough for a demo's restarted broker to be noticed within
        // seconds, slow enough not to spin.
        .reconnect_delay_callback(|attempts| Duration::from_millis(250 * attempts.min(8) as u64))
        .event_callback(move |event| async move {
            match event {
                async_nats::Event::Connected => {
                    tracing::info!(service, broker = "nats", "connected")
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!(service, broker = "nats", "disconnected; reconnecting")
                }
                other => tracing::debug!(service, broker = "nats", event = %other, "event"),
            }
        })
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// The stream, made if missing. Whoever starts first makes it; the others
/// find it.
pub async fn ensure_stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![SUBJECT.to_string()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Logs a task's state only when it changes.
#[derive(Debug)]
pub struct StateLog {
    task: &'static str,
    failing: Option<String>,
}

impl StateLog {
    pub fn new(task: &'static str) -> Self {
        StateLog {
            task,
            failing: None,
        }
    }

    pub fn ok(&mut self) {
        if self.failing.take().is_some() {
            tracing::info!(task = self.task, "working again");
        }
    }

    pub fn failed(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.failing.is_none() {
            tracing::warn!(task = self.task, error = %reason, "failing; retrying");
        }
        self.failing = Some(reason);
    }
}

/// What a consumer does with one event: `Ok(true)` applied now,
/// `Ok(false)` applied before; `Err` when its store is down (the event is
/// delivered again later).
pub trait Apply: Send + 'static {
    fn apply(&mut self, event: &OrderPlaced) -> impl Future<Output = Result<bool, String>> + Send;
}

/// Runs durable consumer `durable` for ever, applying each event.
pub async fn consume<A: Apply>(client: async_nats::Client, durable: &'static str, mut applier: A) {
    let js = jetstream::new(client);
    let mut log = StateLog::new(durable);
    loop {
        if let Err(e) = consume_once(&js, durable, &mut applier, &mut log).await {
            log.failed(e);
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn consume_once<A: Apply>(
    js: &jetstream::Context,
    durable: &'static str,
    applier: &mut A,
    log: &mut StateLog,
) -> Result<(), String> {
    let stream = ensure_stream(js).await?;
    let consumer = stream
        .get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                filter_subject: SUBJECT.to_string(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {durable}: {e}"))?;
    // Short-lived pull requests with heartbeats: a broker restart or a
    // lost connection is noticed within seconds.
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| format!("consumer {durable}: {e}"))?;
    log.ok();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("consumer {durable}: {e}"))?;
        let ack = match OrderPlaced::from_json(&message.payload) {
            Err(e) => {
                // Never applicable: delivering it again would only loop.
                tracing::warn!(consumer = durable, error = %e, "dropping a bad event");
                AckKind::Term
            }
            Ok(event) => match applier.apply(&event).await {
                Ok(applied) => {
                    log.ok();
                    tracing::info!(
                        consumer = durable,
                        order = event.order_id,
                        applied,
                        "OrderPlaced"
                    );
                    AckKind::Ack
                }
                Err(e) => {
                    log.failed(e);
                    AckKind::Nak(Some(RETRY))
                }
            },
        };
        if let Err(e) = message.ack_with(ack).await {
            // Not acknowledged: it comes again after ACK_WAIT, and applying
            // it again changes nothing.
            return Err(format!("ack: {e}"));
        }
    }
    Err(format!("consumer {durable}: the message stream ended"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event() -> OrderPlaced {
        OrderPlaced {
            order_id: "o7".into(),
            product: "p2".into(),
            quantity: 3,
            user: "demo-user".into(),
            placed_at: "2025-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn event_json_is_the_agreed_shape() {
        let v: serde_json::Value = serde_json::from_slice(&event().to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "OrderPlaced", "order_id": "o7", "product": "p2",
                               "quantity": 3, "user": "demo-user",
                               "placed_at": "2025-01-02T03:04:05Z"})
        );
        assert_eq!(OrderPlaced::from_json(&event().to_json()), Ok(event()));
    }

    #[test]
    fn bad_events_are_named() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"type":"OrderShipped","order_id":"o1"}"#,
                "unknown variant",
            ),
            (br#"{"order_id":"o1"}"#, "missing field `type`"),
            (
                br#"{"type":"OrderPlaced","order_id":"o1"}"#,
                "missing field",
            ),
            (b"nonsense", "not an OrderPlaced"),
        ];
        for (body, want) in cases {
            let err = OrderPlaced::from_json(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            OrderPlaced::from_json(&big),
            Err(EventError::TooLarge(MAX_EVENT_BYTES + 1))
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let now = now_rfc3339();
        assert!(
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{now}"
        );
        assert!(now.ends_with('Z'), "{now}");
    }
}
