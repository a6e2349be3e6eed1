//! `orders`: the shop's orders over REST/JSON, in memory or in PostgreSQL
//! (`--postgres`, database `orders`, [`db`]).
//!
//! `GET /orders` → `{orders: [...], user, caller}`, the orders of the
//! requesting user (oldest first); `GET /orders/{id}` → one of them or 404;
//! `POST /orders` with `{"product": "p1", "quantity": 2}` → 201 and the
//! order; `GET /healthz` (never faulted).
//!
//! The user is the `x-user-id` header, which the demo's gateway sets from
//! the verified token's `sub` (and removes from what the client sent). The
//! service trusts it as it trusts `x-mycel-peer-id` from its sidecar: the
//! mesh decides who may call orders (in the demo only the gateway), so a
//! request without the header is recorded as [`ANONYMOUS`] rather than
//! refused. Each order also keeps the caller identity the sidecar proved.
//!
//! In memory only the last [`MAX_ORDERS`] orders are kept: a demo process
//! must not grow without bound however many orders a load test places. In
//! PostgreSQL every order is kept and a list shows a user's last
//! [`MAX_ORDERS`]. With the database down, order routes answer 503
//! `{"error": "orders' database is unavailable: ...", caller}` until it is
//! back.
//!
//! With `--nats` (and `--postgres`), each order is also an `OrderPlaced`
//! event: the order and its outbox row are written by one statement, and
//! [`outbox`] publishes the row afterwards, so an order is never taken
//! without its event, nor an event sent for an order not taken, and a
//! broker that is down only delays the events. A row is deleted once the
//! broker has stored its event; while `--max-pending-events` rows wait
//! (the broker down for long), orders answer 503 with `Retry-After`
//! rather than pile up events without bound.

pub mod db;
pub mod outbox;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::http::{json, json_error, path_param, peer_id, text, Body, Handler};

/// The header naming the user an order is for.
pub const USER_HEADER: &str = "x-user-id";
/// The user of a request without [`USER_HEADER`].
pub const ANONYMOUS: &str = "anonymous";
/// Orders kept; older ones are dropped first.
pub const MAX_ORDERS: usize = 1000;
/// Largest request body accepted: an order is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest product id accepted (the catalog's are a few characters).
pub const MAX_PRODUCT_ID: usize = 64;
/// Longest user id accepted, so the store's size stays bounded.
pub const MAX_USER_ID: usize = 256;
/// The most of one product in one order.
pub const MAX_QUANTITY: i64 = 100;
/// How long a client may take to send its body: one that trickles it
/// would otherwise hold a connection for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// One placed order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub product: String,
    pub quantity: u32,
    /// Whom it is for: [`USER_HEADER`] or [`ANONYMOUS`].
    pub user: String,
    /// The identity that called orders (the gateway's, in the demo).
    pub caller: Option<String>,
}

/// `GET /orders`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderList {
    pub orders: Vec<Order>,
    pub user: String,
    pub caller: Option<String>,
}

/// The body of `POST /orders`. Unknown fields are refused, so a typo
/// (`quantiy`) is named instead of silently ordering the default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub product: String,
    /// Signed and wide so that `0`, `-3` or `1000` get the range message
    /// rather than a type error.
    pub quantity: i64,
}

/// Why an order or its request was refused; the text is the answer's
/// `error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderError {
    #[error("the body is not an order {{\"product\": \"<id>\", \"quantity\": <1..={MAX_QUANTITY}>}}: {0}")]
    Json(String),
    #[error("product must not be empty")]
    EmptyProduct,
    #[error("product id is longer than {MAX_PRODUCT_ID} bytes")]
    LongProduct,
    #[error("product id {0:?} may hold only letters, digits, '-' and '_'")]
    ProductChars(String),
    #[error("no product {0:?} in the catalog")]
    UnknownProduct(String),
    #[error("quantity must be between 1 and {MAX_QUANTITY}, got {0}")]
    Quantity(i64),
    #[error("{USER_HEADER} is not printable ASCII of at most {MAX_USER_ID} bytes")]
    BadUser,
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body did not arrive within {BODY_TIMEOUT:?}")]
    BodyTimeout,
    #[error("cannot read the body: {0}")]
    Body(String),
}

impl OrderError {
    pub fn status(&self) -> StatusCode {
        match self {
            OrderError::UnknownProduct(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OrderError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OrderError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads and checks a `POST /orders` body.
pub fn parse_order(body: &[u8]) -> Result<NewOrder, OrderError> {
    let order: NewOrder =
        serde_json::from_slice(body).map_err(|e| OrderError::Json(e.to_string()))?;
    check_product(&order.product)?;
    if !(1..=MAX_QUANTITY).contains(&order.quantity) {
        return Err(OrderError::Quantity(order.quantity));
    }
    Ok(order)
}

fn check_product(id: &str) -> Result<(), OrderError> {
    if id.is_empty() {
        return Err(OrderError::EmptyProduct);
    }
    if id.len() > MAX_PRODUCT_ID {
        return Err(OrderError::LongProduct);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(OrderError::ProductChars(id.to_string()));
    }
    // The catalog is this crate's fixed list, so an order for a product
    // the shop does not sell is refused without calling anyone.
    if crate::catalog::find(id).is_none() {
        return Err(OrderError::UnknownProduct(id.to_string()));
    }
    Ok(())
}

/// The user a request is for: [`USER_HEADER`], or [`ANONYMOUS`] when it is
/// absent or empty.
pub fn user_of(headers: &HeaderMap) -> Result<String, OrderError> {
    let Some(value) = headers.get(USER_HEADER) else {
        return Ok(ANONYMOUS.to_string());
    };
    let user = value.to_str().map_err(|_| OrderError::BadUser)?;
    if user.len() > MAX_USER_ID {
        return Err(OrderError::BadUser);
    }
    if user.is_empty() {
        return Ok(ANONYMOUS.to_string());
    }
    Ok(user.to_string())
}

/// The orders kept, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct Store {
    orders: VecDeque<Order>,
    next_id: u64,
    capacity: usize,
}

impl Store {
    pub fn new(capacity: usize) -> Self {
        Store {
            orders: VecDeque::new(),
            next_id: 1,
            capacity: capacity.max(1),
        }
    }

    /// Records an order, dropping the oldest when full.
    pub fn place(&mut self, new: NewOrder, user: String, caller: Option<String>) -> Order {
        let order = Order {
            id: format!("o{}", self.next_id),
            product: new.product,
            // parse_order checked 1..=MAX_QUANTITY.
            quantity: u32::try_from(new.quantity).unwrap_or(0),
            user,
            caller,
        };
        self.next_id += 1;
        if self.orders.len() >= self.capacity {
            self.orders.pop_front();
        }
        self.orders.push_back(order.clone());
        order
    }

    /// `user`'s orders, oldest first.
    pub fn of_user(&self, user: &str) -> Vec<Order> {
        self.orders
            .iter()
            .filter(|o| o.user == user)
            .cloned()
            .collect()
    }

    /// One order of `user`: another user's order is not found either, so
    /// ids do not tell whose orders exist.
    pub fn get(&self, user: &str, id: &str) -> Option<Order> {
        self.orders
            .iter()
            .find(|o| o.id == id && o.user == user)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

/// Schema of the orders database.
pub const MIGRATIONS: &[crate::pg::migrate::Migration] =
    crate::migrations!("orders": "0001_orders.sql", "0002_outbox_holds_only_pending.sql");

enum Backend {
    Memory(Mutex<Store>),
    Postgres(db::OrdersDb),
}

pub struct Orders {
    faults: Arc<Faults>,
    backend: Backend,
}

impl Orders {
    /// Orders in memory.
    pub fn new(faults: Arc<Faults>) -> Self {
        Orders {
            faults,
            backend: Backend::Memory(Mutex::new(Store::new(MAX_ORDERS))),
        }
    }

    /// Orders in PostgreSQL.
    pub fn with_db(faults: Arc<Faults>, db: db::OrdersDb) -> Self {
        Orders {
            faults,
            backend: Backend::Postgres(db),
        }
    }

    #[cfg(test)]
    fn memory(&self) -> Option<std::sync::MutexGuard<'_, Store>> {
        match &self.backend {
            Backend::Memory(store) => Some(lock(store)),
            Backend::Postgres(_) => None,
        }
    }

    async fn place(
        &self,
        new: NewOrder,
        user: String,
        caller: Option<String>,
    ) -> Result<Order, db::PlaceError> {
        match &self.backend {
            Backend::Postgres(db) => db.place(new, user, caller).await,
            Backend::Memory(store) => Ok(lock(store).place(new, user, caller)),
        }
    }

    async fn of_user(&self, user: &str) -> Result<Vec<Order>, crate::pg::DbError> {
        match &self.backend {
            Backend::Postgres(db) => db.of_user(user).await,
            Backend::Memory(store) => Ok(lock(store).of_user(user)),
        }
    }

    async fn get(&self, user: &str, id: &str) -> Result<Option<Order>, crate::pg::DbError> {
        match &self.backend {
            Backend::Postgres(db) => db.get(user, id).await,
            Backend::Memory(store) => Ok(lock(store).get(user, id)),
        }
    }

    /// Answers one request; generic over the body so tests can send one
    /// without a connection.
    pub async fn respond<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let caller = peer_id(req.headers());
        let path = req.uri().path().to_string();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        let id = path_param(&path, "/orders").map(str::to_string);
        if path != "/orders" && id.is_none() {
            return json_error(StatusCode::NOT_FOUND, &format!("no route {path}"), caller);
        }
        let allowed = if id.is_some() { "GET" } else { "GET, POST" };
        let method = req.method().clone();
        if method != Method::GET && !(method == Method::POST && id.is_none()) {
            let mut res = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("only {allowed}"),
                caller,
            );
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            return res;
        }
        let user = match user_of(req.headers()) {
            Ok(user) => user,
            Err(e) => return json_error(e.status(), &e.to_string(), caller),
        };
        if let Err(fault) = self.faults.apply().await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &fault.to_string(), caller);
        }
        match (method, id) {
            (Method::POST, _) => {
                let new = match read_body(req).await.and_then(|b| parse_order(&b)) {
                    Ok(new) => new,
                    Err(e) => return json_error(e.status(), &e.to_string(), caller),
                };
                let order = match self.place(new, user, caller.clone()).await {
                    Ok(order) => order,
                    Err(db::PlaceError::Db(e)) => return unavailable(&e, caller),
                    Err(e @ db::PlaceError::Backlog(_)) => {
                        let mut res =
                            json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), caller);
                        // The publisher retries the broker every few
                        // seconds; a client may try again after that.
                        res.headers_mut()
                            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                        return res;
                    }
                };
                tracing::info!(
                    id = order.id,
                    user = order.user,
                    product = order.product,
                    quantity = order.quantity,
                    "order placed"
                );
                json(StatusCode::CREATED, &order)
            }
            (_, Some(id)) => match self.get(&user, &id).await {
                Err(e) => unavailable(&e, caller),
                Ok(Some(order)) => json(StatusCode::OK, &order),
                Ok(None) => json_error(
                    StatusCode::NOT_FOUND,
                    &format!("no order {id:?} of {user}"),
                    caller,
                ),
            },
            (_, None) => {
                let orders = match self.of_user(&user).await {
                    Ok(orders) => orders,
                    Err(e) => return unavailable(&e, caller),
                };
                json(
                    StatusCode::OK,
                    &OrderList {
                        orders,
                        user,
                        caller,
                    },
                )
            }
        }
    }
}

fn unavailable(e: &crate::pg::DbError, caller: Option<String>) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("orders' database is unavailable: {e}"),
        caller,
    )
}

/// The in-memory store, even if a request panicked holding it: every
/// change is one push and one pop, so it is never half made.
fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// The whole body, at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`].
async fn read_body<B>(req: Request<B>) -> Result<Bytes, OrderError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the cap is refused before reading anything.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(OrderError::TooLarge);
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(OrderError::BodyTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(OrderError::TooLarge),
        Ok(Err(e)) => Err(OrderError::Body(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

impl Handler for Orders {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        self.respond(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultConfig;
    use http_body_util::Full;

    fn orders() -> Orders {
        Orders::new(Arc::new(Faults::new(&FaultConfig::default())))
    }

    fn request(method: &str, path: &str, user: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(method).uri(path).header(
            crate::PEER_ID_HEADER,
            "spiffe://cluster.local/ns/shop/sa/gateway",
        );
        if let Some(user) = user {
            b = b.header(USER_HEADER, user);
        }
        b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    async fn send(o: &Orders, req: Request<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
        let res = o.respond(req).await;
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[test]
    fn parse_order_table() {
        let long = format!(r#"{{"product": "{}", "quantity": 1}}"#, "p".repeat(65));
        // (body, Ok((product, quantity)) or Err(text of the error))
        type Want = Result<(&'static str, i64), &'static str>;
        let cases: &[(&str, Want)] = &[
            (r#"{"product": "p1", "quantity": 1}"#, Ok(("p1", 1))),
            (r#"{"product": "p5", "quantity": 100}"#, Ok(("p5", 100))),
            (
                r#"{"product": "p1", "quantity": 0}"#,
                Err("between 1 and 100, got 0"),
            ),
            (r#"{"product": "p1", "quantity": 101}"#, Err("got 101")),
            (r#"{"product": "p1", "quantity": -2}"#, Err("got -2")),
            (r#"{"product": "p1", "quantity": 1.5}"#, Err("not an order")),
            (r#"{"product": "p1"}"#, Err("missing field `quantity`")),
            (
                r#"{"product": "p1", "quantiy": 1}"#,
                Err("unknown field `quantiy`"),
            ),
            (
                r#"{"product": "", "quantity": 1}"#,
                Err("must not be empty"),
            ),
            (&long, Err("longer than 64")),
            (
                r#"{"product": "p1/../x", "quantity": 1}"#,
                Err("only letters"),
            ),
            (
                r#"{"product": "p9", "quantity": 1}"#,
                Err("no product \"p9\""),
            ),
            (r#"[1, 2]"#, Err("not an order")),
            ("product=p1", Err("not an order")),
            ("", Err("not an order")),
        ];
        for (body, want) in cases {
            match (parse_order(body.as_bytes()), want) {
                (Ok(o), Ok((product, quantity))) => {
                    assert_eq!(
                        (o.product.as_str(), o.quantity),
                        (*product, *quantity),
                        "{body}"
                    )
                }
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{body}: {e}"),
                (got, _) => panic!("{body}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn the_store_keeps_the_last_orders_and_lists_per_user() {
        let mut store = Store::new(3);
        let new = || NewOrder {
            product: "p1".into(),
            quantity: 2,
        };
        for user in ["ann", "bob", "ann", "ann"] {
            store.place(new(), user.into(), None);
        }
        // Four placed, three kept: o1 (ann's first) is gone.
        assert_eq!(store.len(), 3);
        let ids: Vec<String> = store.of_user("ann").into_iter().map(|o| o.id).collect();
        assert_eq!(ids, ["o3", "o4"]);
        assert!(store.get("ann", "o1").is_none());
        assert_eq!(store.get("bob", "o2").map(|o| o.quantity), Some(2));
        // Another user's order is not found.
        assert!(store.get("ann", "o2").is_none());
    }

    #[test]
    fn user_header_table() {
        let mut h = HeaderMap::new();
        assert_eq!(user_of(&h).unwrap(), ANONYMOUS);
        h.insert(USER_HEADER, "".parse().unwrap());
        assert_eq!(user_of(&h).unwrap(), ANONYMOUS);
        h.insert(USER_HEADER, "demo-user".parse().unwrap());
        assert_eq!(user_of(&h).unwrap(), "demo-user");
        h.insert(USER_HEADER, "u".repeat(MAX_USER_ID + 1).parse().unwrap());
        assert_eq!(user_of(&h), Err(OrderError::BadUser));
        h.insert(
            USER_HEADER,
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(user_of(&h), Err(OrderError::BadUser));
    }

    #[tokio::test]
    async fn place_then_list_and_get_as_the_user() {
        let o = orders();
        let (status, placed) = send(
            &o,
            request(
                "POST",
                "/orders",
                Some("demo-user"),
                r#"{"product":"p2","quantity":3}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        assert_eq!(placed["product"], "p2");
        assert_eq!(placed["quantity"], 3);
        assert_eq!(placed["user"], "demo-user");
        assert_eq!(
            placed["caller"],
            "spiffe://cluster.local/ns/shop/sa/gateway"
        );
        let id = placed["id"].as_str().unwrap().to_string();

        let (status, list) = send(&o, request("GET", "/orders", Some("demo-user"), "")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["user"], "demo-user");
        assert_eq!(list["orders"].as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(list["orders"][0], placed);

        let (status, one) = send(
            &o,
            request("GET", &format!("/orders/{id}"), Some("demo-user"), ""),
        )
        .await;
        assert_eq!((status, &one), (StatusCode::OK, &placed));

        // Without the header: the anonymous user, who has none of them.
        let (status, list) = send(&o, request("GET", "/orders", None, "")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["user"], ANONYMOUS);
        assert_eq!(list["orders"], serde_json::json!([]));
        let (status, _) = send(&o, request("GET", &format!("/orders/{id}"), None, "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, anon) = send(
            &o,
            request("POST", "/orders", None, r#"{"product":"p1","quantity":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(anon["user"], ANONYMOUS);
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let o = orders();
        let big = format!(
            r#"{{"product":"p1","quantity":1,"x":"{}"}}"#,
            "a".repeat(MAX_BODY_BYTES)
        );
        let cases = [
            (request("POST", "/orders", None, "{"), 400, "not an order"),
            (
                request("POST", "/orders", None, r#"{"product":"p1","quantity":0}"#),
                400,
                "between 1 and 100",
            ),
            (
                request(
                    "POST",
                    "/orders",
                    None,
                    r#"{"product":"nope","quantity":1}"#,
                ),
                422,
                "no product",
            ),
            (
                request("POST", "/orders", None, &big),
                413,
                "larger than 16384",
            ),
            (
                request("DELETE", "/orders", None, ""),
                405,
                "only GET, POST",
            ),
            (request("POST", "/orders/o1", None, ""), 405, "only GET"),
            (request("GET", "/orders/o1/x", None, ""), 404, "no route"),
            (request("GET", "/other", None, ""), 404, "no route"),
        ];
        for (req, want, text) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let (status, body) = send(&o, req).await;
            assert_eq!(status.as_u16(), want, "{what}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(text), "{what}: {error}");
        }
        // Nothing refused was kept.
        assert!(o.memory().is_some_and(|s| s.is_empty()));
    }

    #[tokio::test]
    async fn a_large_declared_length_is_refused_before_reading() {
        let o = orders();
        let mut req = request("POST", "/orders", None, "{}");
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, "999999".parse().unwrap());
        let (status, _) = send(&o, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn healthz_is_never_faulted() {
        let o = Orders::new(Arc::new(Faults::new(&FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })));
        let res = o.respond(request("GET", "/healthz", None, "")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let (status, body) = send(&o, request("GET", "/orders", None, "")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    #[test]
    fn order_json_shape() {
        let v = serde_json::to_value(Order {
            id: "o1".into(),
            product: "p1".into(),
            quantity: 2,
            user: "demo-user".into(),
            caller: None,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "o1", "product": "p1", "quantity": 2,
                               "user": "demo-user", "caller": null})
        );
    }
}
