//! Scenario 3: the shop works through the ingress gateway from the host,
//! every hop is mTLS with identities from the pods' ServiceAccounts, and
//! nothing readable crosses between pods.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::{self, spiffe, SHOP};

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn the_shop_answers_through_the_gateway_with_each_hop_seeing_its_callers_service_account() {
    let mut versions = BTreeSet::new();
    let (mut v1, mut v2) = (0u32, 0u32);
    for _ in 0..20 {
        let reply = cluster::shop_get("/api/products")
            .await
            .expect("the gateway answers");
        assert_eq!(reply.status, 200, "GET /api/products: {}", reply.body);
        let view = reply.json();
        assert_eq!(
            view["caller"],
            spiffe(SHOP, "gateway"),
            "the frontend's caller: {view}"
        );
        let calls = view["calls"].as_array().expect("calls");
        assert!(
            calls.len() >= 3,
            "catalog, reviews and ratings were called: {view}"
        );
        for call in calls {
            assert_eq!(call["ok"], true, "every call succeeded: {call}");
            assert_eq!(
                call["caller"],
                spiffe(SHOP, "frontend"),
                "{} saw the frontend: {call}",
                call["service"]
            );
        }
        for product in view["products"].as_array().expect("products") {
            let version = product["reviews_version"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match version.as_str() {
                "v1" => v1 += 1,
                "v2" => v2 += 1,
                _ => {}
            }
            if version == "v2" {
                assert_eq!(
                    product["reviews_ratings_caller"],
                    spiffe(SHOP, "reviews"),
                    "ratings saw reviews v2: {product}"
                );
            }
            versions.insert(version);
        }
    }
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "both reviews versions answered: {versions:?}"
    );
    // The demo's GRPCRoute gives v2 one call in ten (round robin would
    // give it half).
    let share = f64::from(v2) / f64::from(v1 + v2);
    assert!(
        share <= 0.25,
        "reviews v2 answered {v2} of {} calls: the GRPCRoute split is not applied",
        v1 + v2
    );
    let page = cluster::shop_get("/").await.expect("the page");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Oyster mushroom"),
        "the page lists products: {}",
        &page.body[..page.body.len().min(400)]
    );
}

/// A host process in `pod`'s network namespace (the host sees every
/// container's processes), to capture on the pod's own interface.
fn pid_in_pod(pattern: &str) -> u32 {
    let out = Command::new("pgrep")
        .args(["-f", "-o", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!("no process matching {pattern:?} on this host (the kind node runs here)")
        })
}

/// Captures on the pod's eth0 while `traffic` runs and returns what was
/// seen as text (tcpdump -A).
async fn capture(pid: u32, filter: &str, traffic: impl std::future::Future<Output = ()>) -> String {
    let tcpdump = tokio::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "tcpdump",
            "-i",
            "eth0",
            "-nn",
            "-l",
            "-A",
            "-s",
            "0",
            "-c",
            "5000",
            filter,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("tcpdump (apt-get install tcpdump) and nsenter");
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGTERM: tcpdump flushes what it holds; -nn above keeps it from
    // looking names up (slow, and not this test's traffic).
    if let Some(pid) = tcpdump.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let out = tcpdump.wait_with_output().await.expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn some_requests() {
    for _ in 0..5 {
        let reply = cluster::shop_get("/api/products")
            .await
            .expect("the gateway answers");
        assert_eq!(reply.status, 200);
    }
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn a_capture_on_a_pods_interface_sees_no_plaintext_http_between_pods() {
    if !mycel_tests::skip::require(
        "tcpdump and nsenter on the host",
        which("tcpdump") && which("nsenter"),
    ) {
        return;
    }
    // The gateway takes plain HTTP from the host: a capture there must see
    // it, or the method proves nothing.
    let gateway = pid_in_pod("mycel-proxy --mode=gateway");
    let seen = capture(gateway, "tcp port 8080", some_requests()).await;
    assert!(
        seen.contains("GET /api/products"),
        "the capture sees plaintext where there is some"
    );

    // The catalog's pod: the frontend's calls arrive there over the mesh.
    // Only the kubelet's probes (from the node's bridge address) are plain.
    let catalog = pid_in_pod("mycel-demo catalog");
    let seen = capture(catalog, "tcp and not host 198.18.0.1", some_requests()).await;
    assert!(
        seen.lines().count() > 20,
        "the capture saw the catalog's traffic:\n{seen}"
    );
    for plaintext in ["HTTP/1.1", "GET /products", "Oyster mushroom"] {
        assert!(
            !seen.contains(plaintext),
            "{plaintext:?} crossed the catalog pod's interface in clear:\n{seen}"
        );
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A database per service in the cluster: catalog answers stock from its
/// PostgreSQL, the page shows notifications from notifications' Redis,
/// and each store's injected sidecar counted connections from its owners'
/// identities only (the pods are strict, the policies admit the owners).
#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn each_store_is_reached_through_the_mesh_by_its_owners() {
    // A store pod starts empty and its owner creates the schema on first
    // use, so the first answers may still be 503s naming the database.
    let view = cluster::eventually(
        "products with stock from catalog's PostgreSQL",
        Duration::from_secs(120),
        || async {
            let reply = cluster::shop_get("/api/products")
                .await
                .map_err(|e| e.to_string())?;
            let view = reply.json();
            let stocked = view["products"]
                .as_array()
                .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["stock"].is_u64()));
            if reply.status == 200 && stocked {
                Ok(view)
            } else {
                Err(format!("{}: {}", reply.status, reply.body))
            }
        },
    )
    .await;
    assert!(
        view["products"].as_array().is_some_and(|p| p.len() >= 3),
        "{view}"
    );
    let page = cluster::shop_get("/").await.expect("the page");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Latest notifications"), "{}", page.body);
    assert!(
        !page.body.contains("notifications unavailable"),
        "notifications could not be read: {}",
        page.body
    );

    let client = cluster::client().await;
    for (store, owners) in [
        ("catalog-postgres", &["catalog"][..]),
        ("ratings-redis", &["ratings"][..]),
        ("notifications-redis", &["notifications"][..]),
        ("orders-postgres", &["orders"][..]),
        ("nats", &["catalog", "orders", "notifications"][..]),
    ] {
        let pods = cluster::pods(&client, SHOP, &format!("app={store}")).await;
        let pod = pods.first().unwrap_or_else(|| panic!("no pod of {store}"));
        let metrics = cluster::eventually(
            &format!("{store}'s sidecar to count its owners"),
            Duration::from_secs(60),
            || async {
                let metrics =
                    cluster::proxy_admin(&client, SHOP, &cluster::name(pod), "/metrics").await?;
                match owners.iter().find(|o| !metrics.contains(&spiffe(SHOP, o))) {
                    None => Ok(metrics),
                    Some(o) => Err(format!("no connection from {o} counted")),
                }
            },
        )
        .await;
        // No one else ever connected.
        for other in ["frontend", "reviews", "gateway"] {
            assert!(
                !metrics.contains(&spiffe(SHOP, other)),
                "{store}'s sidecar saw {other}:\n{metrics}"
            );
        }
    }
}

/// A token from the shop's issuer, signed in its pod with its key (`mycel-demo
/// token` with `args`), as the issuer's manifest tells users to get one.
fn issuer_token(args: &[&str]) -> String {
    let mut argv = vec![
        "-n",
        SHOP,
        "exec",
        "deploy/issuer",
        "--",
        "mycel-demo",
        "token",
        "--key-dir=/var/lib/issuer",
    ];
    argv.extend_from_slice(args);
    let token = cluster::kubectl(&argv).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

/// The stock of `product` in the frontend's view (`/api/products`), which
/// catalog answers from its PostgreSQL.
fn stock_in(view: &serde_json::Value, product: &str) -> Option<u64> {
    view["products"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == product)?["stock"]
        .as_u64()
}

async fn post_order(bearer: Option<&str>, body: &str) -> mycel_test_support::http::Reply {
    let header;
    let headers: &[(&str, &str)] = match bearer {
        Some(token) => {
            header = format!("Bearer {token}");
            &[("authorization", header.as_str())]
        }
        None => &[],
    };
    mycel_test_support::http::send(
        cluster::gateway(),
        "shop.local",
        "POST",
        "/api/orders",
        headers,
        body,
    )
    .await
    .expect("the gateway answers POST /api/orders")
}

/// The order flow in the cluster, with the injected sidecars: the gateway
/// admits a token of the shop's issuer (its JWKS fetched from the issuer's
/// Service), orders commits the order in its PostgreSQL and publishes it
/// through NATS, and within 2 s catalog has lowered the stock in its
/// PostgreSQL and the page shows the notification from notifications'
/// Redis. No token, a read-only token and a token of another key are
/// refused at the gateway.
#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn an_order_through_the_gateway_lowers_stock_and_notifies_within_2_s() {
    let order = r#"{"product":"p3","quantity":2}"#;
    // The stores start empty and their owners make the schema on first
    // use, so the first answers may still be 503s naming a database.
    let before = cluster::eventually(
        "the catalog's stock of p3",
        Duration::from_secs(120),
        || async {
            let reply = cluster::shop_get("/api/products")
                .await
                .map_err(|e| e.to_string())?;
            stock_in(&reply.json(), "p3").ok_or(format!("{}: {}", reply.status, reply.body))
        },
    )
    .await;
    let token = issuer_token(&[]);
    // A gateway that read the JWKS before the issuer's pod was replaced
    // reads it again for the new key's kid, at most once in 30 s.
    let placed = cluster::eventually(
        "an order placed with the issuer's token",
        Duration::from_secs(75),
        || async {
            let reply = post_order(Some(&token), order).await;
            if reply.status == 201 {
                Ok(reply)
            } else {
                Err(format!("{}: {}", reply.status, reply.body))
            }
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let placed = placed.json();
    assert_eq!(placed["user"], "demo-user", "the token's sub: {placed}");
    assert_eq!(placed["caller"], spiffe(SHOP, "gateway"), "{placed}");
    let order_id = placed["id"].as_str().expect("an order id").to_string();

    let want = before.saturating_sub(2);
    let (mut stock, mut notified) = (before, false);
    while started.elapsed() < Duration::from_secs(2) && (stock != want || !notified) {
        let view = cluster::shop_get("/api/products")
            .await
            .expect("the gateway answers");
        stock = stock_in(&view.json(), "p3").unwrap_or_else(|| panic!("no stock: {}", view.body));
        let page = cluster::shop_get("/").await.expect("the page");
        assert_eq!(page.status, 200, "{}", page.body);
        notified = page.body.contains(&format!("(order {order_id})"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "order {order_id}: stock {before} → {stock}, notified {notified}, after {:?}",
        started.elapsed()
    );
    assert_eq!(
        stock, want,
        "stock of p3 {before} → {stock} within 2 s of the order"
    );
    assert!(notified, "order {order_id} not on the page within 2 s");

    // What the gateway refuses: no token, a token that may only read, a
    // token signed by a key the issuer never published.
    let anonymous = post_order(None, order).await;
    assert_eq!(anonymous.status, 401, "no token: {}", anonymous.body);
    let reader = issuer_token(&["--subject=reader", "--scope=orders:read"]);
    let read_only = post_order(Some(&reader), order).await;
    assert_eq!(
        read_only.status, 403,
        "a read-only token: {}",
        read_only.body
    );
    let stranger = mycel_api::demo_tokens::Issuer::generate()
        .unwrap()
        .token("mallory", "orders:write", Duration::from_secs(600))
        .unwrap();
    let forged = post_order(Some(&stranger), order).await;
    assert_eq!(
        forged.status, 401,
        "a token of another key: {}",
        forged.body
    );

    // The order is the token holder's, listed for them.
    let list = mycel_test_support::http::request(
        cluster::gateway(),
        "shop.local",
        "/api/orders",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("GET /api/orders");
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains(&order_id), "{}", list.body);
}

/// What catalog asks its PostgreSQL crosses the pods' network only inside
/// mTLS: a capture on the database pod's interface, while the shop is used,
/// sees traffic but no SQL.
#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn a_capture_on_the_database_pod_sees_no_sql() {
    if !mycel_tests::skip::require(
        "tcpdump and nsenter on the host",
        which("tcpdump") && which("nsenter"),
    ) {
        return;
    }
    let db = pid_in_pod("mycel-demo store postgres --dir=/data/catalog-postgres");
    let seen = capture(db, "tcp and not host 198.18.0.1", some_requests()).await;
    assert!(
        seen.lines().count() > 10,
        "the capture saw the database's traffic:\n{seen}"
    );
    for plaintext in ["SELECT", "products", "Oyster mushroom"] {
        assert!(
            !seen.contains(plaintext),
            "{plaintext:?} crossed the database pod's interface in clear:\n{seen}"
        );
    }
}
