//! `catalog`: the shop's products and their stock over REST/JSON, kept in
//! memory or in PostgreSQL (`--postgres`, [`store`]).
//!
//! `GET /products` → `{products: [...], caller}`;
//! `GET /products/{id}` → `{id, name, price, description, stock, caller}`
//! or 404; `GET /healthz` (never faulted, so probes see the process, not
//! the knobs, nor the database). With its database down the product
//! routes answer 503 `{"error": "catalog's database is unavailable: ...",
//! caller}`, and work again once it is back, without a restart.
//!
//! With `--nats`, each `OrderPlaced` event takes its quantity from the
//! stock, once per order (see [`crate::events`] for the delivery
//! guarantees).

pub mod store;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::http::{json, json_error, path_param, peer_id, text, Body, Handler};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price: f64,
    pub description: String,
    /// Units left; orders take from it, never below zero.
    #[serde(default)]
    pub stock: u32,
}

/// `GET /products`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductList {
    pub products: Vec<Product>,
    pub caller: Option<String>,
}

/// `GET /products/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductReply {
    #[serde(flatten)]
    pub product: Product,
    pub caller: Option<String>,
}

/// Stock of every product in a new store.
pub const SEED_STOCK: u32 = 25;

/// Schema of the catalog's database.
pub const MIGRATIONS: &[crate::pg::migrate::Migration] =
    crate::migrations!("catalog": "0001_products.sql");

/// The catalog this demo sells, with its starting stock (the same rows
/// `migrations/catalog/0001_products.sql` seeds).
pub fn products() -> Vec<Product> {
    let items = [
        (
            "p1",
            "Oyster mushroom grow kit",
            24.5,
            "Grows on coffee grounds in two weeks.",
        ),
        (
            "p2",
            "Shiitake log",
            39.0,
            "Oak log inoculated with shiitake spawn.",
        ),
        (
            "p3",
            "Lion's mane spray bottle",
            19.9,
            "Fruits on the kitchen counter.",
        ),
        ("p4", "Mycelium brick", 12.0, "Packaging grown, not made."),
        (
            "p5",
            "Spore print kit",
            8.75,
            "Paper, glass and a magnifier.",
        ),
    ];
    items
        .into_iter()
        .map(|(id, name, price, description)| Product {
            id: id.to_string(),
            name: name.to_string(),
            price,
            description: description.to_string(),
            stock: SEED_STOCK,
        })
        .collect()
}

pub fn find(id: &str) -> Option<Product> {
    products().into_iter().find(|p| p.id == id)
}

pub struct Catalog {
    faults: Arc<Faults>,
    store: Arc<store::Store>,
}

impl Catalog {
    /// The catalog in memory.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self::with_store(faults, Arc::new(store::Store::memory()))
    }

    pub fn with_store(faults: Arc<Faults>, store: Arc<store::Store>) -> Self {
        Catalog { faults, store }
    }
}

fn unavailable(e: &crate::pg::DbError, caller: Option<String>) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("catalog's database is unavailable: {e}"),
        caller,
    )
}

impl Handler for Catalog {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let caller = peer_id(req.headers());
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if req.method() != Method::GET {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET", caller);
        }
        let id = path_param(path, "/products");
        if path != "/products" && id.is_none() {
            return json_error(StatusCode::NOT_FOUND, &format!("no route {path}"), caller);
        }
        if let Err(fault) = self.faults.apply().await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &fault.to_string(), caller);
        }
        match id {
            None => match self.store.products().await {
                Ok(products) => cacheable(json(StatusCode::OK, &ProductList { products, caller })),
                Err(e) => unavailable(&e, caller),
            },
            Some(id) => match self.store.product(id).await {
                Err(e) => unavailable(&e, caller),
                Ok(Some(product)) => {
                    cacheable(json(StatusCode::OK, &ProductReply { product, caller }))
                }
                Ok(None) => json_error(
                    StatusCode::NOT_FOUND,
                    &format!("unknown product id {id:?}"),
                    caller,
                ),
            },
        }
    }
}

/// Products change rarely and stock is a hint until an order is placed: a
/// shared cache (the gateway's, on the demo's `/api/catalog` route) may
/// keep an answer for a couple of seconds.
fn cacheable(mut res: Response<Body>) -> Response<Body> {
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=2"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_have_unique_ids_and_prices() {
        let all = products();
        assert!(all.len() >= 3);
        let mut ids: Vec<_> = all.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert!(all.iter().all(|p| p.price > 0.0 && !p.name.is_empty()));
    }

    #[test]
    fn find_known_and_unknown() {
        assert_eq!(find("p2").map(|p| p.id), Some("p2".to_string()));
        assert_eq!(find("nope"), None);
    }

    #[test]
    fn reply_json_is_flat() {
        let reply = ProductReply {
            product: find("p1").unwrap(),
            caller: Some("spiffe://x".into()),
        };
        let v = serde_json::to_value(&reply).unwrap();
        assert_eq!(v["id"], "p1");
        assert_eq!(v["caller"], "spiffe://x");
        assert!(v["price"].is_number());
        let list = serde_json::to_value(ProductList {
            products: products(),
            caller: None,
        })
        .unwrap();
        assert!(list["products"].is_array());
        assert!(list["caller"].is_null());
    }
}
