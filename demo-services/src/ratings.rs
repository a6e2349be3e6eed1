//! `ratings`: stars per product over REST/JSON, computed, or read from
//! Redis (`--redis`: hash [`RATINGS_KEY`], product id → stars, seeded with
//! the computed stars where absent at each new connection).
//!
//! `GET /ratings/{product_id}` → `{product_id, stars, caller}` (stars 1..=5,
//! the same for an id on every run unless someone changed the hash);
//! `GET /healthz` (never faulted). With Redis down: 503 `{"error":
//! "ratings' Redis is unavailable: ...", caller}` until it is back.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::http::{json, json_error, path_param, peer_id, text, Body, Handler};
use crate::kv::{KvError, Redis};

/// The Redis hash of the stars.
pub const RATINGS_KEY: &str = "ratings";

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
    redis: Option<Arc<Redis>>,
}

impl Ratings {
    /// Stars computed, nothing stored.
    pub fn new(faults: Arc<Faults>) -> Self {
        Ratings {
            faults,
            redis: None,
        }
    }

    pub fn with_redis(faults: Arc<Faults>, redis: Arc<Redis>) -> Self {
        Ratings {
            faults,
            redis: Some(redis),
        }
    }

    async fn stars(&self, product_id: &str) -> Result<u32, KvError> {
        let Some(redis) = &self.redis else {
            return Ok(stars(product_id));
        };
        let id = product_id.to_string();
        let stored: Option<u32> = redis
            .run(|mut conn, fresh| async move {
                if fresh {
                    let mut seed = redis::pipe();
                    for p in crate::catalog::products() {
                        seed.cmd("HSETNX")
                            .arg(RATINGS_KEY)
                            .arg(&p.id)
                            .arg(stars(&p.id))
                            .ignore();
                    }
                    seed.query_async::<()>(&mut conn).await?;
                }
                redis::cmd("HGET")
                    .arg(RATINGS_KEY)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        // A product the hash lacks (not one the shop sells) gets the
        // computed stars, as without Redis; a stored value out of range is
        // clamped rather than shown.
        Ok(stored.map_or_else(|| stars(product_id), |s| s.clamp(1, 5)))
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
        match self.stars(&product_id).await {
            Ok(stars) => json(
                StatusCode::OK,
                &Rating {
                    stars,
                    product_id,
                    caller,
                },
            ),
            Err(e) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("ratings' Redis is unavailable: {e}"),
                caller,
            ),
        }
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
