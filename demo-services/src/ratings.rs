//! `ratings`: stars per product over REST/JSON.
//!
//! `GET /ratings/{product_id}` → `{product_id, stars, caller}` (stars 1..=5,
//! the same for an id on every run); `GET /healthz` (never faulted).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::http::{json, json_error, path_param, peer_id, text, Body, Handler};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub product_id: String,
    pub stars: u32,
    pub caller: Option<String>,
}

/// Stars of a product: FNV-1a of the id folded onto 1..=5, so every run and
/// every replica agree without shared state.
pub fn stars(product_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in product_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % 5 + 1
}

pub struct Ratings {
    faults: Arc<Faults>,
}

impl Ratings {
    pub fn new(faults: Arc<Faults>) -> Self {
        Ratings { faults }
    }
}

impl Handler for Ratings {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let caller = peer_id(req.headers());
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if req.method() != Method::GET {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET", caller);
        }
        let Some(product_id) = path_param(path, "/ratings") else {
            return json_error(StatusCode::NOT_FOUND, &format!("no route {path}"), caller);
        };
        let product_id = product_id.to_string();
        if let Err(fault) = self.faults.apply().await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &fault.to_string(), caller);
        }
        json(
            StatusCode::OK,
            &Rating {
                stars: stars(&product_id),
                product_id,
                caller,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_are_in_range_and_deterministic() {
        for id in ["p1", "p2", "p3", "p4", "p5", "", "something else"] {
            let s = stars(id);
            assert!((1..=5).contains(&s), "{id}: {s}");
            assert_eq!(s, stars(id));
        }
    }

    #[test]
    fn stars_vary_across_the_catalog() {
        let mut seen: Vec<u32> = crate::catalog::products()
            .iter()
            .map(|p| stars(&p.id))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 1, "all products got the same stars: {seen:?}");
    }

    #[test]
    fn rating_json_shape() {
        let v = serde_json::to_value(Rating {
            product_id: "p1".into(),
            stars: 4,
            caller: Some("spiffe://c".into()),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"product_id": "p1", "stars": 4, "caller": "spiffe://c"})
        );
    }
}
