//! The shop's stores through the mesh, laid out as `mycelctl demo` lays
//! them out: each `mycel-demo store` beside its own sidecar, the services
//! reaching them only through their sidecars' `--tcp-upstream` tunnels
//! (mTLS, HTTP/2 CONNECT), each store admitting only its owners. A real
//! controller, real sidecars, real PostgreSQL, Redis and NATS. A test whose
//! server binary is not installed says why and passes, unless
//! `MYCEL_REQUIRE_ALL=1`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mycel_tests::http;
use mycel_tests::mesh::{spiffe, Mesh, SidecarSpec};
use mycel_tests::stores::{
    self, allow_policy, counter, eventually, tcp_decisions, tunnels_from, wait_policy,
    MeshedService, MeshedStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a store (re)started, and the services after it, get.
const RECOVERY: Duration = Duration::from_secs(20);
/// How long a service may take to say its store is down.
const QUICKLY: Duration = Duration::from_secs(8);

/// The stock of `product` as catalog answers it through `via` (a client
/// sidecar's outbound), or why not.
async fn stock(via: SocketAddr, product: &str) -> Result<u64, String> {
    let r = http::get(via, "catalog", &format!("/products/{product}"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, r.body));
    }
    r.json()["stock"]
        .as_u64()
        .ok_or_else(|| format!("no stock in {}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_database_is_down_answers_503_naming_it_and_recovers_through_the_mesh() {
    if !stores::available(&["catalog-postgres"]) {
        return;
    }
    let root = stores::data_root();
    // The demo's catalog policy: only the frontend (and the gateway) may
    // call catalog; the client here is the frontend.
    let mesh = Mesh::start(&stores::mesh_yaml(
        &["catalog"],
        &["catalog-postgres"],
        &allow_policy(
            "catalog-callers",
            "catalog",
            &["shop/frontend", "shop/gateway"],
        ),
    ))
    .await;
    let mut pg = MeshedStore::start(&mesh, "catalog-postgres", root.path()).await;
    let mut catalog = MeshedService::start(&mesh, "catalog", &["catalog-postgres"]).await;
    let client = mesh.sidecar(SidecarSpec::new("frontend", "frontend")).await;
    let via = client.outbound();

    let first = eventually("catalog's stock through the mesh", RECOVERY, || async {
        stock(via, "p1").await.ok()
    })
    .await;
    assert_eq!(first, 25, "the seeded stock");

    pg.stop().await;
    let stopped = Instant::now();
    let r = http::get(via, "catalog", "/products/p1").await.unwrap();
    let took = stopped.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(took < QUICKLY, "the 503 took {took:?}");
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with("catalog's database is unavailable: "),
        "{error}"
    );
    // The list route says the same; liveness and both sidecars are not the
    // database's.
    let r = http::get(via, "catalog", "/products").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("catalog's database is unavailable"),
        "{}",
        r.body
    );
    let r = http::get(via, "catalog", "/healthz").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for sidecar in [&pg.sidecar, &catalog.sidecar] {
        let r = http::get(sidecar.admin, "localhost", "/ready")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}: {}", sidecar.proc.name, r.body);
    }
    catalog.app.as_mut().unwrap().assert_running();
    catalog.sidecar.proc.assert_running();
    pg.sidecar.proc.assert_running();

    pg.restart().await;
    let restarted = Instant::now();
    let back = eventually("catalog's stock again", RECOVERY, || async {
        stock(via, "p1").await.ok()
    })
    .await;
    assert_eq!(back, 25, "{}", pg.log());
    eprintln!(
        "catalog answered 503 {took:?} after its database stopped, 200 {:?} after it restarted",
        restarted.elapsed()
    );
    // The database's connections crossed the mesh as catalog.
    let metrics = pg.sidecar.metrics().await;
    assert!(
        tunnels_from(&metrics, &spiffe("shop", "catalog")) >= 1,
        "{metrics}"
    );
}

/// Places one order for `product` as `demo-user` through `via` (a sidecar
/// of the gateway's identity): its id.
async fn place_order(via: SocketAddr, product: &str) -> String {
    let r = http::send(
        via,
        "orders",
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("x-user-id", "demo-user"),
        ],
        &format!(r#"{{"product":"{product}","quantity":1}}"#),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no order id in {}", r.body))
        .to_string()
}

/// The order ids of notifications' list, newest first, or why not.
async fn notified(via: SocketAddr) -> Result<Vec<String>, String> {
    let r = http::get(via, "notifications", "/notifications")
        .await
        .map_err(|e| format!("{e:#}"))?;
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, r.body));
    }
    Ok(stores::order_ids(&r.json()))
}

/// Orders placed while notifications is stopped.
const WHILE_DOWN: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_order_event_is_lost_when_the_consumer_restarts_through_the_mesh() {
    let all = [
        "catalog-postgres",
        "orders-postgres",
        "notifications-redis",
        "nats",
    ];
    if !stores::available(&all) {
        return;
    }
    let root = stores::data_root();
    // The demo's policies for catalog and orders (the client has the
    // gateway's identity, which both admit); notifications' own policy
    // (only the frontend reads it) is left out so the same client reads
    // the list.
    let policies = [
        allow_policy(
            "catalog-callers",
            "catalog",
            &["shop/frontend", "shop/gateway"],
        ),
        allow_policy("orders-callers", "orders", &["shop/gateway"]),
    ]
    .concat();
    let mesh = Mesh::start(&stores::mesh_yaml(
        &["catalog", "orders", "notifications"],
        &all,
        &policies,
    ))
    .await;
    let started = Instant::now();
    let mut running = Vec::new();
    for store in all {
        running.push(MeshedStore::start(&mesh, store, root.path()).await);
    }
    let _catalog = MeshedService::start(&mesh, "catalog", &["catalog-postgres", "nats"]).await;
    let _orders = MeshedService::start(&mesh, "orders", &["orders-postgres", "nats"]).await;
    let mut notifications =
        MeshedService::start(&mesh, "notifications", &["notifications-redis", "nats"]).await;
    let client = mesh.sidecar(SidecarSpec::new("gateway-0", "gateway")).await;
    let via = client.outbound();
    eprintln!("stores and services up in {:?}", started.elapsed());

    // The whole flow once, so every consumer exists before one stops.
    let before = eventually("catalog's stock", RECOVERY, || async {
        stock(via, "p1").await.ok()
    })
    .await;
    eventually("orders' database", RECOVERY, || async {
        let r = http::send(
            via,
            "orders",
            "GET",
            "/orders",
            &[("x-user-id", "demo-user")],
            "",
        )
        .await
        .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let first = place_order(via, "p1").await;
    eventually("the first order's notification", RECOVERY, || async {
        notified(via).await.ok().filter(|ids| ids.contains(&first))
    })
    .await;

    notifications.stop_app().await;
    let mut placed = Vec::new();
    for _ in 0..WHILE_DOWN {
        placed.push(place_order(via, "p1").await);
    }
    let want = before - 1 - WHILE_DOWN as u64;
    eventually(
        "catalog took the stock while notifications was down",
        RECOVERY,
        || async { (stock(via, "p1").await == Ok(want)).then_some(()) },
    )
    .await;
    let r = http::get(via, "notifications", "/notifications")
        .await
        .unwrap();
    assert_ne!(r.status, 200, "notifications is stopped: {}", r.body);

    notifications.start_app(&mesh);
    let restarted = Instant::now();
    let ids = eventually(
        "every order placed while notifications was down",
        RECOVERY,
        || async {
            notified(via)
                .await
                .ok()
                .filter(|ids| placed.iter().all(|p| ids.contains(p)))
        },
    )
    .await;
    eprintln!(
        "notifications caught up {:?} after it restarted",
        restarted.elapsed()
    );
    let mut want_ids = placed.clone();
    want_ids.push(first.clone());
    let mut got = ids.clone();
    got.sort();
    want_ids.sort();
    assert_eq!(got, want_ids, "one notification per order: {ids:?}");
    // Each order took stock once, however often its event was delivered.
    assert_eq!(stock(via, "p1").await, Ok(want));

    // Every store's connections crossed the mesh with its owners' identity.
    for store in &running {
        let metrics = store.sidecar.metrics().await;
        for owner in store.def.owners {
            let id = spiffe("shop", owner);
            assert!(
                tunnels_from(&metrics, &id) >= 1,
                "{}'s sidecar counted nothing from {id}:\n{metrics}",
                store.def.name
            );
        }
    }
}

/// A PostgreSQL startup message (protocol 3.0) for user `shop`, the
/// demo's superuser, and database `postgres`.
fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for s in ["user", "shop", "database", "postgres"] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    msg.extend(body);
    msg
}

/// Sends a startup message into the tunnel at `local` and reads what comes
/// back until the connection ends or 10 s pass: the bytes, or the read
/// error.
async fn postgres_answer(local: SocketAddr) -> Result<Vec<u8>, String> {
    let mut conn = tokio::net::TcpStream::connect(local)
        .await
        .map_err(|e| format!("connect {local}: {e}"))?;
    let _ = conn.write_all(&startup_message()).await;
    let mut answer = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer)).await {
        Err(_) => Err("no answer nor close within 10 s".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(n)) => {
            answer.truncate(n);
            Ok(answer)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refuses_a_workload_that_does_not_own_it() {
    if !stores::available(&["catalog-postgres"]) {
        return;
    }
    let root = stores::data_root();
    let mesh = Mesh::start(&stores::mesh_yaml(&[], &["catalog-postgres"], "")).await;
    let pg = MeshedStore::start(&mesh, "catalog-postgres", root.path()).await;
    wait_policy(&pg.sidecar, "shop/catalog-postgres-users").await;

    // A sidecar of the owner and one of another identity, each with the
    // tunnel the demo gives catalog.
    let mut tunnels = Vec::new();
    for sa in ["catalog", "ratings"] {
        let spec = SidecarSpec::new(sa, sa);
        let local = SocketAddr::from((spec.ip, stores::FIRST_TUNNEL_PORT));
        let sidecar = mesh
            .sidecar(
                spec.arg("--tcp-upstream")
                    .arg(&format!("{local}=catalog-postgres.shop:5432")),
            )
            .await;
        tunnels.push((sidecar, local));
    }

    // The owner gets PostgreSQL's answer: authentication ok ('R'), as the
    // demo's database trusts its mesh-only clients.
    let owner = postgres_answer(tunnels[0].1).await;
    assert!(
        owner.as_ref().is_ok_and(|a| a.first() == Some(&b'R')),
        "the owner's tunnel: {owner:?}\n{}",
        pg.log()
    );
    // Another identity's tunnel is closed without a byte of PostgreSQL.
    let other = postgres_answer(tunnels[1].1).await;
    assert!(
        match &other {
            Ok(bytes) => bytes.is_empty(),
            Err(e) => e.starts_with("read: "),
        },
        "ratings' tunnel to catalog's database: {other:?}"
    );
    // The store's sidecar decided: the owner's tunnel allowed by the
    // store's policy, the other refused (403 to its CONNECT), and only one
    // connection reached PostgreSQL.
    let metrics = pg.sidecar.metrics().await;
    let decisions = |decision: &str, policy: &str| tcp_decisions(&metrics, decision, policy);
    assert_eq!(decisions("deny", "no-allow-match"), 1, "{metrics}");
    assert_eq!(
        decisions("allow", "shop/catalog-postgres-users"),
        1,
        "{metrics}"
    );
    assert_eq!(tunnels_from(&metrics, &spiffe("shop", "catalog")), 1);
    let refused = counter(
        &metrics,
        "mycel_inbound_requests_total",
        &[
            &format!("peer=\"{}\"", spiffe("shop", "ratings")),
            "code=\"403\"",
        ],
    );
    assert_eq!(refused, 1, "{metrics}");
    assert_eq!(
        counter(&metrics, "mycel_tcp_connection_duration_seconds_count", &[]),
        1,
        "{metrics}"
    );
}
