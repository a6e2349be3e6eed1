//! The outbox publisher: sends each pending outbox row as an `OrderPlaced`
//! event, waits for JetStream to acknowledge it as stored, and only then
//! deletes the row (the order itself stays; the outbox holds only what
//! still waits, which bounds it). Woken by every new order, and every [`POLL`] in any
//! case (an order placed by another replica, a wake-up lost to a restart).
//!
//! Rows are taken `FOR UPDATE SKIP LOCKED`, so replicas share the work
//! rather than send the same rows; a row sent but not deleted (a crash, a
//! lost ack) is sent again, which the stream's duplicate window
//! (`Nats-Msg-Id`) and the consumers' order-id records absorb.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;

use crate::events::{self, OrderPlaced, StateLog};
use crate::pg::{self, DbError};

/// Longest wait between looks at the outbox.
pub const POLL: Duration = Duration::from_secs(5);
/// Rows sent per transaction.
const BATCH: i64 = 100;
/// How long JetStream may take to acknowledge one event.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a round of publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("orders' database is unavailable: {0}")]
    Db(#[from] DbError),
    #[error("cannot publish to NATS: {0}")]
    Broker(String),
}

/// Publishes for ever.
pub async fn run(mut db: pg::Dedicated, client: async_nats::Client, wake: Arc<Notify>) {
    let js = jetstream::new(client);
    let mut log = StateLog::new("outbox");
    loop {
        let wait = match publish_pending(&mut db, &js).await {
            // A full batch: there may be more.
            Ok(n) if n == BATCH as usize => {
                log.ok();
                continue;
            }
            Ok(_) => {
                log.ok();
                POLL
            }
            Err(e) => {
                if matches!(e, PublishError::Db(_)) {
                    db.reset();
                }
                log.failed(e.to_string());
                events::RETRY
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends one batch of pending rows; how many were sent.
async fn publish_pending(
    db: &mut pg::Dedicated,
    js: &jetstream::Context,
) -> Result<usize, PublishError> {
    let client = db.client().await?;
    let tx = pg::timed(client.transaction()).await?;
    let rows = pg::timed(tx.query(
        "SELECT x.id, o.seq, o.product, o.quantity, o.user_id, \
                to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS placed_at \
         FROM outbox x JOIN orders o ON o.seq = x.order_seq \
         WHERE x.sent_at IS NULL ORDER BY x.id LIMIT $1 \
         FOR UPDATE OF x SKIP LOCKED",
        &[&BATCH],
    ))
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    events::ensure_stream(js)
        .await
        .map_err(PublishError::Broker)?;
    let mut sent = 0;
    let mut failure = None;
    for row in &rows {
        let id: i64 = row.try_get("id").map_err(DbError::from)?;
        let event = event_of(row)?;
        if let Err(e) = publish(js, &event).await {
            failure = Some(e);
            break;
        }
        pg::timed(tx.execute("DELETE FROM outbox WHERE id = $1", &[&id])).await?;
        sent += 1;
    }
    // What was sent is deleted even when a later row failed.
    pg::timed(tx.commit()).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

fn event_of(row: &tokio_postgres::Row) -> Result<OrderPlaced, DbError> {
    let seq: i64 = row.try_get("seq")?;
    let quantity: i32 = row.try_get("quantity")?;
    Ok(OrderPlaced {
        order_id: format!("o{seq}"),
        product: row.try_get("product")?,
        quantity: u32::try_from(quantity).unwrap_or(0),
        user: row.try_get("user_id")?,
        placed_at: row.try_get("placed_at")?,
    })
}

/// Publishes one event and waits for the stream to store it.
pub async fn publish(js: &jetstream::Context, event: &OrderPlaced) -> Result<(), PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(events::MSG_ID, event.order_id.as_str());
    let ack = js
        .publish_with_headers(events::SUBJECT, headers, event.to_json().into())
        .await
        .map_err(|e| PublishError::Broker(e.to_string()))?;
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(PublishError::Broker(e.to_string())),
        Err(_) => Err(PublishError::Broker(format!(
            "no acknowledgement within {ACK_TIMEOUT:?}"
        ))),
    }
}
