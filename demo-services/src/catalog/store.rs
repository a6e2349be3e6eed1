//! Where the catalog keeps its products and their stock: in memory, or in
//! PostgreSQL (database `catalog`). Both apply an `OrderPlaced` once per
//! order id, taking its quantity from the stock, never below zero.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::{products, Product};
use crate::events::{Apply, OrderPlaced};
use crate::pg::{self, DbError};

/// Order ids remembered by the in-memory store; older ones are forgotten
/// (a redelivery that late would be applied again, which memory mode
/// accepts: it loses everything at a restart anyway).
pub const MEMORY_PROCESSED: usize = 10_000;

pub enum Store {
    Memory(Mutex<MemoryStock>),
    Postgres(pg::Shared),
}

impl Store {
    pub fn memory() -> Self {
        Store::Memory(Mutex::new(MemoryStock::new()))
    }

    pub async fn products(&self) -> Result<Vec<Product>, DbError> {
        match self {
            Store::Memory(m) => Ok(lock(m).products()),
            Store::Postgres(db) => {
                let rows = db
                    .run(|c| async move {
                        c.query(
                            "SELECT id, name, price, description, stock FROM products ORDER BY id LIMIT 1000",
                            &[],
                        )
                        .await
                    })
                    .await?;
                rows.iter().map(product_of).collect()
            }
        }
    }

    pub async fn product(&self, id: &str) -> Result<Option<Product>, DbError> {
        match self {
            Store::Memory(m) => Ok(lock(m).products().into_iter().find(|p| p.id == id)),
            Store::Postgres(db) => {
                let id = id.to_string();
                let row = db
                    .run(|c| async move {
                        c.query_opt(
                            "SELECT id, name, price, description, stock FROM products WHERE id = $1",
                            &[&id],
                        )
                        .await
                    })
                    .await?;
                row.as_ref().map(product_of).transpose()
            }
        }
    }
}

fn lock(m: &Mutex<MemoryStock>) -> std::sync::MutexGuard<'_, MemoryStock> {
    // Every change is complete before the lock is released.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn product_of(row: &tokio_postgres::Row) -> Result<Product, DbError> {
    let stock: i32 = row.try_get("stock")?;
    Ok(Product {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        price: row.try_get("price")?,
        description: row.try_get("description")?,
        stock: u32::try_from(stock).unwrap_or(0),
    })
}

/// The in-memory stock and the order ids already applied to it.
#[derive(Debug)]
pub struct MemoryStock {
    stock: HashMap<String, u32>,
    processed: HashSet<String>,
    processed_order: VecDeque<String>,
}

impl Default for MemoryStock {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStock {
    pub fn new() -> Self {
        MemoryStock {
            stock: products().into_iter().map(|p| (p.id, p.stock)).collect(),
            processed: HashSet::new(),
            processed_order: VecDeque::new(),
        }
    }

    pub fn products(&self) -> Vec<Product> {
        products()
            .into_iter()
            .map(|mut p| {
                p.stock = self.stock.get(&p.id).copied().unwrap_or(0);
                p
            })
            .collect()
    }

    /// Takes the order from the stock unless it was applied before.
    pub fn apply(&mut self, event: &OrderPlaced) -> bool {
        if !self.processed.insert(event.order_id.clone()) {
            return false;
        }
        self.processed_order.push_back(event.order_id.clone());
        if self.processed_order.len() > MEMORY_PROCESSED {
            if let Some(old) = self.processed_order.pop_front() {
                self.processed.remove(&old);
            }
        }
        if let Some(stock) = self.stock.get_mut(&event.product) {
            *stock = stock.saturating_sub(event.quantity);
        }
        true
    }
}

/// The catalog's consumer over the in-memory store.
pub struct MemoryApply(pub Arc<Store>);

impl Apply for MemoryApply {
    async fn apply(&mut self, event: &OrderPlaced) -> Result<bool, String> {
        match &*self.0 {
            Store::Memory(m) => Ok(lock(m).apply(event)),
            Store::Postgres(_) => Err("the memory consumer over a database".into()),
        }
    }
}

/// The catalog's consumer over PostgreSQL, on a connection of its own: in
/// one transaction the order id is recorded in `processed_orders` and,
/// only if it was not there, the stock reduced.
pub struct PostgresApply(pub pg::Dedicated);

impl PostgresApply {
    async fn try_apply(&mut self, event: &OrderPlaced) -> Result<bool, DbError> {
        let client = self.0.client().await?;
        let tx = pg::timed(client.transaction()).await?;
        let inserted = pg::timed(tx.execute(
            "INSERT INTO processed_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&event.order_id],
        ))
        .await?;
        if inserted == 1 {
            let quantity = i32::try_from(event.quantity).unwrap_or(i32::MAX);
            pg::timed(tx.execute(
                "UPDATE products SET stock = GREATEST(stock - $2, 0) WHERE id = $1",
                &[&event.product, &quantity],
            ))
            .await?;
        }
        pg::timed(tx.commit()).await?;
        Ok(inserted == 1)
    }
}

impl Apply for PostgresApply {
    async fn apply(&mut self, event: &OrderPlaced) -> Result<bool, String> {
        match self.try_apply(event).await {
            Ok(applied) => Ok(applied),
            Err(e) => {
                self.0.reset();
                Err(format!("catalog's database is unavailable: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, product: &str, quantity: u32) -> OrderPlaced {
        OrderPlaced {
            order_id: id.into(),
            product: product.into(),
            quantity,
            user: "u".into(),
            placed_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    fn stock_of(m: &MemoryStock, id: &str) -> Option<u32> {
        m.products()
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.stock)
    }

    #[test]
    fn memory_stock_applies_each_order_once_and_stops_at_zero() {
        let mut m = MemoryStock::new();
        assert_eq!(stock_of(&m, "p1"), Some(super::super::SEED_STOCK));
        assert!(m.apply(&order("o1", "p1", 3)));
        assert!(!m.apply(&order("o1", "p1", 3)), "a redelivery");
        assert_eq!(stock_of(&m, "p1"), Some(22));
        assert!(m.apply(&order("o2", "p1", 100)));
        assert_eq!(stock_of(&m, "p1"), Some(0));
        // An unknown product is recorded and changes nothing.
        assert!(m.apply(&order("o3", "p9", 1)));
        assert_eq!(stock_of(&m, "p2"), Some(super::super::SEED_STOCK));
    }

    #[test]
    fn memory_forgets_the_oldest_ids_only() {
        let mut m = MemoryStock::new();
        for i in 0..=MEMORY_PROCESSED {
            m.apply(&order(&format!("o{i}"), "p9", 1));
        }
        assert_eq!(m.processed.len(), MEMORY_PROCESSED);
        assert!(!m.processed.contains("o0"));
        assert!(m.processed.contains(&format!("o{MEMORY_PROCESSED}")));
    }
}
