//! The shop with its stores: PostgreSQL, Redis and NATS started through
//! `mycel-demo store` in temporary directories on free loopback ports, the
//! services in-process with their store flags (no mesh). What a user of
//! the demo sees: an order takes stock and makes a notification; a store
//! that goes down makes a clear 503 and comes back by itself; no event is
//! lost while a consumer or the broker is down, and none is applied twice.
//!
//! A test whose server binary is not installed says why and passes, unless
//! `MYCEL_REQUIRE_ALL=1`.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mycel_demo::config::{ServiceConfig, ServiceKind, Stores};
use mycel_demo::upstream::Target;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_mycel-demo");
/// How long the shop gets to show the effect of an order.
const EFFECT: Duration = Duration::from_secs(2);
/// How long a store that was restarted, and the services after it, get.
const RECOVERY: Duration = Duration::from_secs(20);

/// Whether the test may go on; a loud reason when not.
fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("MYCEL_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("MYCEL_REQUIRE_ALL=1 but this test cannot run: {what}");
    }
    let test = std::thread::current().name().unwrap_or("test").to_string();
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {what}\n").as_bytes());
    false
}

/// `mycel-demo store KIND --check`: Ok, or the line saying what is missing.
fn installed(kind: &str) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(["store", kind, "--check"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn have(kinds: &[&str]) -> bool {
    let missing: Vec<String> = kinds.iter().filter_map(|k| installed(k).err()).collect();
    require(&missing.join("; "), missing.is_empty())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A store run by `mycel-demo store`, stopped (SIGTERM) when dropped.
struct Store {
    kind: &'static str,
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Store {
    async fn start(kind: &'static str, root: &Path) -> Store {
        let mut store = Store {
            kind,
            dir: root.join(kind),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            child: None,
        };
        store.restart().await;
        store
    }

    async fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new(BIN)
            .args([
                "store",
                self.kind,
                "--listen",
                &self.addr.to_string(),
                "--dir",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Accepting connections; PostgreSQL may still be starting, which
        // the services answer as unavailable until it is done.
        let addr = self.addr;
        eventually(
            &format!("{} listening", self.kind),
            RECOVERY,
            || async move { TcpStream::connect(addr).await.is_ok().then_some(()) },
        )
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    fn target(&self) -> Option<Target> {
        Some(Target::Addr(self.addr))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory PostgreSQL's own user can reach when the tests run as root.
fn temp_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Polls `check` until it gives a value, at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A service running in-process; stopped when dropped.
struct Service {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn service(kind: ServiceKind, stores: Stores) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServiceConfig::new(kind, addr);
    config.stores = stores;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mycel_demo::run_with_listener(config, listener, async {
        let _ = stopped.await;
    }));
    Service { addr, _stop: stop }
}

/// One HTTP/1.1 exchange: the status and the JSON body.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\
             x-user-id: demo-user\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut out = String::new();
        conn.read_to_string(&mut out).await.ok()?;
        let status = out.get(9..12)?.parse().ok()?;
        let json = out
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Some((status, json))
    };
    // Never longer than the services' own bounds allow.
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
        .unwrap_or((0, Value::Null))
}

async fn order(orders: SocketAddr, product: &str, quantity: u32) -> String {
    let body = format!(r#"{{"product":"{product}","quantity":{quantity}}}"#);
    let (status, placed) = call(orders, "POST", "/orders", &body).await;
    assert_eq!(status, 201, "{placed}");
    placed["id"].as_str().unwrap().to_string()
}

async fn stock(catalog: SocketAddr, product: &str) -> Option<u64> {
    let (status, body) = call(catalog, "GET", &format!("/products/{product}"), "").await;
    (status == 200).then(|| body["stock"].as_u64()).flatten()
}

async fn notified(notifications: SocketAddr) -> Option<Vec<String>> {
    let (status, body) = call(notifications, "GET", "/notifications", "").await;
    if status != 200 {
        return None;
    }
    Some(
        body["notifications"]
            .as_array()?
            .iter()
            .filter_map(|n| n["order_id"].as_str().map(str::to_string))
            .collect(),
    )
}

fn pg_stores(pg: &Store, nats: Option<&Store>) -> Stores {
    Stores {
        postgres: pg.target(),
        nats: nats.and_then(Store::target),
        ..Stores::default()
    }
}

fn redis_stores(redis: &Store, nats: Option<&Store>) -> Stores {
    Stores {
        redis: redis.target(),
        nats: nats.and_then(Store::target),
        ..Stores::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_takes_stock_and_notifies_once_and_none_is_lost_while_notifications_is_down() {
    if !have(&["postgres", "redis", "nats"]) {
        return;
    }
    let root = temp_root();
    let pg = Store::start("postgres", root.path()).await;
    let redis = Store::start("redis", root.path()).await;
    let nats = Store::start("nats", root.path()).await;
    let catalog = service(ServiceKind::Catalog, pg_stores(&pg, Some(&nats))).await;
    let orders = service(ServiceKind::Orders, pg_stores(&pg, Some(&nats))).await;
    let notifications = service(
        ServiceKind::Notifications,
        redis_stores(&redis, Some(&nats)),
    )
    .await;

    // PostgreSQL may still be starting: the catalog answers once it is up.
    let before = eventually("the catalog's stock", RECOVERY, || {
        stock(catalog.addr, "p1")
    })
    .await;
    assert_eq!(before, 25, "the seeded stock");
    let id = order(orders.addr, "p1", 3).await;
    eventually("stock taken", EFFECT, || async {
        (stock(catalog.addr, "p1").await == Some(22)).then_some(())
    })
    .await;
    eventually("a notification", EFFECT, || async {
        notified(notifications.addr)
            .await
            .filter(|ids| ids.first() == Some(&id))
    })
    .await;
    let (_, list) = call(notifications.addr, "GET", "/notifications", "").await;
    let first = &list["notifications"][0];
    assert_eq!(
        (
            first["user"].as_str(),
            first["product"].as_str(),
            first["quantity"].as_u64()
        ),
        (Some("demo-user"), Some("p1"), Some(3)),
        "{list}"
    );

    // The same event delivered twice (published again under another
    // message id, so the stream's de-duplication does not hide it).
    let client = async_nats::connect(format!("nats://{}", nats.addr))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let event = mycel_demo::events::OrderPlaced {
        order_id: id.clone(),
        product: "p1".into(),
        quantity: 3,
        user: "demo-user".into(),
        placed_at: mycel_demo::events::now_rfc3339(),
    };
    js.publish(mycel_demo::events::SUBJECT, event.to_json().into())
        .await
        .unwrap()
        .await
        .unwrap();
    // And a new order after it, to know the duplicate was consumed.
    let marker = order(orders.addr, "p2", 1).await;
    eventually("the order after the duplicate", EFFECT, || async {
        (stock(catalog.addr, "p2").await == Some(24)).then_some(())
    })
    .await;
    assert_eq!(
        stock(catalog.addr, "p1").await,
        Some(22),
        "stock taken twice"
    );
    let ids = eventually("both notifications", EFFECT, || async {
        notified(notifications.addr)
            .await
            .filter(|ids| ids.contains(&marker))
    })
    .await;
    assert_eq!(
        ids,
        [marker.clone(), id.clone()],
        "one notification per order"
    );

    // Notifications stops; orders go on; it gets every one after restart.
    drop(notifications);
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(order(orders.addr, "p3", 1).await);
    }
    let notifications = service(
        ServiceKind::Notifications,
        redis_stores(&redis, Some(&nats)),
    )
    .await;
    let ids = eventually("the orders placed while it was down", RECOVERY, || async {
        notified(notifications.addr)
            .await
            .filter(|ids| placed.iter().all(|p| ids.contains(p)))
    })
    .await;
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert_eq!(stock(catalog.addr, "p3").await, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_says_its_database_is_down_and_recovers_when_it_is_back() {
    if !have(&["postgres"]) {
        return;
    }
    let root = temp_root();
    let mut pg = Store::start("postgres", root.path()).await;
    let catalog = service(ServiceKind::Catalog, pg_stores(&pg, None)).await;
    eventually("the catalog", RECOVERY, || stock(catalog.addr, "p1")).await;

    pg.stop();
    let started = Instant::now();
    let (status, body) = call(catalog.addr, "GET", "/products", "").await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered quickly"
    );
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("catalog's database is unavailable: "),
        "{error}"
    );
    let (status, _) = call(catalog.addr, "GET", "/healthz", "").await;
    assert_eq!(status, 200, "liveness is not the database's");

    pg.restart().await;
    let products = eventually("the catalog back", RECOVERY, || async {
        let (status, body) = call(catalog.addr, "GET", "/products", "").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(
        products["products"].as_array().map(Vec::len),
        Some(5),
        "{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_taken_while_the_broker_is_down_and_their_events_follow() {
    if !have(&["postgres", "nats"]) {
        return;
    }
    let root = temp_root();
    let pg = Store::start("postgres", root.path()).await;
    let mut nats = Store::start("nats", root.path()).await;
    let catalog = service(ServiceKind::Catalog, pg_stores(&pg, Some(&nats))).await;
    let orders = service(ServiceKind::Orders, pg_stores(&pg, Some(&nats))).await;
    eventually("the catalog", RECOVERY, || stock(catalog.addr, "p4")).await;
    order(orders.addr, "p4", 1).await;
    eventually("the first event", EFFECT, || async {
        (stock(catalog.addr, "p4").await == Some(24)).then_some(())
    })
    .await;

    nats.stop();
    for _ in 0..3 {
        order(orders.addr, "p4", 2).await;
    }
    assert_eq!(
        stock(catalog.addr, "p4").await,
        Some(24),
        "no broker, no event"
    );
    nats.restart().await;
    eventually(
        "the events after the broker came back",
        RECOVERY,
        || async { (stock(catalog.addr, "p4").await == Some(18)).then_some(()) },
    )
    .await;
    // Orders are listed as before, from the database.
    let (status, list) = call(orders.addr, "GET", "/orders", "").await;
    assert_eq!(status, 200);
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(4), "{list}");
}

/// Rows in orders' outbox: the events that wait for the broker.
async fn outbox_rows(pg: &Store) -> i64 {
    let config = format!(
        "host={} port={} user={} dbname=orders",
        pg.addr.ip(),
        pg.addr.port(),
        mycel_demo::store::command::POSTGRES_SUPERUSER
    );
    let (client, conn) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0)
}

/// Attack: a flood of orders while the broker is down. The outbox takes
/// at most --max-pending-events rows; past that an order is refused with a
/// 503 naming the broker and nothing is written. Once the broker is back
/// every order taken gets its event, the outbox is emptied (a row goes once
/// its event is stored) and orders are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flood_while_the_broker_is_down_stops_at_the_outbox_bound() {
    if !have(&["postgres", "nats"]) {
        return;
    }
    const BOUND: u32 = 5;
    let root = temp_root();
    let pg = Store::start("postgres", root.path()).await;
    let mut nats = Store::start("nats", root.path()).await;
    let catalog = service(ServiceKind::Catalog, pg_stores(&pg, Some(&nats))).await;
    let mut bounded = pg_stores(&pg, Some(&nats));
    bounded.max_pending_events = BOUND;
    let orders = service(ServiceKind::Orders, bounded).await;
    eventually("the catalog", RECOVERY, || stock(catalog.addr, "p5")).await;
    order(orders.addr, "p5", 1).await;
    // p5 starts with 25 in stock.
    let before = 24;
    eventually(
        "the first event, and its outbox row gone",
        EFFECT,
        || async {
            let applied = stock(catalog.addr, "p5").await == Some(before);
            (applied && outbox_rows(&pg).await == 0).then_some(())
        },
    )
    .await;

    nats.stop();
    let (mut taken, mut refused) = (0, 0);
    for _ in 0..3 * BOUND {
        let (status, body) = call(
            orders.addr,
            "POST",
            "/orders",
            r#"{"product":"p5","quantity":1}"#,
        )
        .await;
        match status {
            201 => taken += 1,
            503 => {
                refused += 1;
                let error = body["error"].as_str().unwrap_or_default();
                assert!(error.contains("wait for the event broker"), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        (taken, refused),
        (BOUND, 2 * BOUND),
        "orders taken and refused"
    );
    assert_eq!(outbox_rows(&pg).await, i64::from(BOUND));
    let (status, list) = call(orders.addr, "GET", "/orders", "").await;
    assert_eq!(status, 200, "listing still works: {list}");
    assert_eq!(
        list["orders"].as_array().map(Vec::len),
        Some(1 + BOUND as usize),
        "no refused order was written: {list}"
    );

    nats.restart().await;
    eventually(
        "every taken order's event, and an empty outbox",
        RECOVERY,
        || async {
            let drained = outbox_rows(&pg).await == 0;
            let stock = stock(catalog.addr, "p5").await?;
            (drained && stock == before - u64::from(BOUND)).then_some(())
        },
    )
    .await;
    order(orders.addr, "p5", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_read_redis_and_say_when_it_is_down() {
    if !have(&["redis"]) {
        return;
    }
    let root = temp_root();
    let mut redis = Store::start("redis", root.path()).await;
    let ratings = service(ServiceKind::Ratings, redis_stores(&redis, None)).await;
    let (status, body) = call(ratings.addr, "GET", "/ratings/p1", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["stars"].as_u64(),
        Some(u64::from(mycel_demo::ratings::stars("p1")))
    );

    // The stars are Redis's: a change there shows.
    let client = redis::Client::open(format!("redis://{}/", redis.addr)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let other = if mycel_demo::ratings::stars("p1") == 5 {
        1
    } else {
        5
    };
    redis::cmd("HSET")
        .arg(mycel_demo::ratings::RATINGS_KEY)
        .arg("p1")
        .arg(other)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (_, body) = call(ratings.addr, "GET", "/ratings/p1", "").await;
    assert_eq!(body["stars"].as_u64(), Some(other));

    redis.stop();
    let (status, body) = call(ratings.addr, "GET", "/ratings/p1", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("ratings' Redis is unavailable: ")),
        "{body}"
    );
    // The append-only file keeps the change across the restart.
    redis.restart().await;
    let stars = eventually("ratings back", RECOVERY, || async {
        let (status, body) = call(ratings.addr, "GET", "/ratings/p1", "").await;
        (status == 200).then(|| body["stars"].as_u64()).flatten()
    })
    .await;
    assert_eq!(stars, other);
}

#[test]
fn a_missing_server_binary_exits_3_naming_the_package() {
    for (kind, package) in [("redis", "redis-server"), ("nats", "nats-server")] {
        let out = Command::new(BIN)
            .args(["store", kind, "--check"])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{kind}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("install the Debian package {package}")),
            "{err}"
        );
        // The same without --check, before anything is started.
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["store", kind, "--listen", "127.0.0.1:1", "--dir"])
            .arg(dir.path().join("d"))
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{kind}");
        assert!(!dir.path().join("d").exists(), "nothing made");
    }
}
