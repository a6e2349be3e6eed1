//! Orders in PostgreSQL (database `orders`, `migrations/orders/`). An
//! order's id is `o` and its row's sequence number, unique across
//! replicas and restarts.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{NewOrder, Order, MAX_ORDERS};
use crate::pg::{self, DbError};

/// `GET /orders` lists at most this many, a user's latest.
const LIST_LIMIT: i64 = MAX_ORDERS as i64;

pub struct OrdersDb {
    db: pg::Shared,
    /// Set when events are on: each order also gets an outbox row, and the
    /// publisher is woken.
    outbox: Option<Arc<Notify>>,
    /// Orders are refused while this many outbox rows wait for the broker.
    max_pending: i64,
}

/// Why an order was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("orders' database is unavailable: {0}")]
    Db(#[from] DbError),
    #[error(
        "{0} orders' events wait for the event broker; no more orders are taken until it is back"
    )]
    Backlog(i64),
}

impl OrdersDb {
    pub fn new(db: pg::Shared, outbox: Option<Arc<Notify>>, max_pending: u32) -> Self {
        OrdersDb {
            db,
            outbox,
            max_pending: i64::from(max_pending),
        }
    }

    pub async fn place(
        &self,
        new: NewOrder,
        user: String,
        caller: Option<String>,
    ) -> Result<Order, PlaceError> {
        // parse_order checked 1..=MAX_QUANTITY.
        let quantity = i32::try_from(new.quantity).unwrap_or(0);
        // One statement: the order and its outbox row are written together
        // or not at all, and not at all while the outbox is full (sent rows
        // are deleted, so it holds only what waits for the broker). Orders
        // placed at the same moment may each see room for one: the bound
        // is exceeded by at most the orders in flight.
        let sql = if self.outbox.is_some() {
            "WITH room AS (SELECT count(*) AS pending FROM outbox WHERE sent_at IS NULL), \
                  o AS (INSERT INTO orders (product, quantity, user_id, caller) \
                        SELECT $1, $2, $3, $4 FROM room WHERE pending < $5 RETURNING seq), \
                  x AS (INSERT INTO outbox (order_seq) SELECT seq FROM o) \
             SELECT (SELECT seq FROM o), pending FROM room"
        } else {
            "INSERT INTO orders (product, quantity, user_id, caller) \
             VALUES ($1, $2, $3, $4) RETURNING seq"
        };
        let (product, user_id, who, limit) = (
            new.product.clone(),
            user.clone(),
            caller.clone(),
            self.max_pending,
        );
        let events = self.outbox.is_some();
        let row = self
            .db
            .run(|c| async move {
                if events {
                    c.query_one(sql, &[&product, &quantity, &user_id, &who, &limit])
                        .await
                } else {
                    c.query_one(sql, &[&product, &quantity, &user_id, &who])
                        .await
                }
            })
            .await?;
        let seq: Option<i64> = row.try_get(0).map_err(DbError::from)?;
        let Some(seq) = seq else {
            let pending: i64 = row.try_get(1).map_err(DbError::from)?;
            return Err(PlaceError::Backlog(pending));
        };
        if let Some(wake) = &self.outbox {
            wake.notify_one();
        }
        Ok(Order {
            id: format!("o{seq}"),
            product: new.product,
            quantity: u32::try_from(quantity).unwrap_or(0),
            user,
            caller,
        })
    }

    /// `user`'s latest orders, oldest first.
    pub async fn of_user(&self, user: &str) -> Result<Vec<Order>, DbError> {
        let user = user.to_string();
        let rows = self
            .db
            .run(|c| async move {
                c.query(
                    "SELECT seq, product, quantity, user_id, caller FROM orders \
                     WHERE user_id = $1 ORDER BY seq DESC LIMIT $2",
                    &[&user, &LIST_LIMIT],
                )
                .await
            })
            .await?;
        let mut orders = rows.iter().map(order_of).collect::<Result<Vec<_>, _>>()?;
        orders.reverse();
        Ok(orders)
    }

    /// One order of `user`; another user's is not found either.
    pub async fn get(&self, user: &str, id: &str) -> Result<Option<Order>, DbError> {
        let Some(seq) = seq_of(id) else {
            return Ok(None);
        };
        let user = user.to_string();
        let row = self
            .db
            .run(|c| async move {
                c.query_opt(
                    "SELECT seq, product, quantity, user_id, caller FROM orders \
                     WHERE seq = $1 AND user_id = $2",
                    &[&seq, &user],
                )
                .await
            })
            .await?;
        row.as_ref().map(order_of).transpose()
    }
}

/// `o42` → 42; anything else names no order.
pub fn seq_of(id: &str) -> Option<i64> {
    let digits = id.strip_prefix('o')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn order_of(row: &tokio_postgres::Row) -> Result<Order, DbError> {
    let seq: i64 = row.try_get("seq")?;
    let quantity: i32 = row.try_get("quantity")?;
    Ok(Order {
        id: format!("o{seq}"),
        product: row.try_get("product")?,
        quantity: u32::try_from(quantity).unwrap_or(0),
        user: row.try_get("user_id")?,
        caller: row.try_get("caller")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_table() {
        let cases = [
            ("o1", Some(1)),
            ("o42", Some(42)),
            ("o", None),
            ("42", None),
            ("o-1", None),
            ("o1x", None),
            ("o99999999999999999999", None),
        ];
        for (id, want) in cases {
            assert_eq!(seq_of(id), want, "{id}");
        }
    }
}
