//! `mycelctl demo` from start to a clean stop.

use std::path::Path;
use std::time::Duration;

use mycel_tests::demo::{self, Banner, DEMO_SPAN};
use mycel_tests::http;
use mycel_tests::process::processes_mentioning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_retry_policy_keeps_ratings_faults_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let base = mycel_tests::ports::free_block(DEMO_SPAN);
    let mut demo = demo::spawn(
        "mycelctl-demo-faults",
        base,
        &data,
        dir.path(),
        &["--ratings-error-rate", "0.2", "--fault-seed", "11"],
    );
    let gateway = Banner::wait(&mut demo).await.gateway;
    let (mut ratings_calls, mut failed) = (0, Vec::new());
    for _ in 0..60 {
        let r = http::get(gateway, "localhost", "/api/products")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        for call in body["calls"].as_array().cloned().unwrap_or_default() {
            if call["service"] == "ratings" {
                ratings_calls += 1;
                if call["ok"] != true {
                    failed.push(call.clone());
                }
            }
        }
        for p in body["products"].as_array().cloned().unwrap_or_default() {
            if !p["reviews_ratings_error"].is_null() {
                failed.push(p["reviews_ratings_error"].clone());
            }
        }
    }
    assert!(ratings_calls >= 60, "{ratings_calls} ratings calls");
    // 20% of ratings answers fail; six tries leave about one in 15,000.
    assert!(failed.len() <= 1, "failures reached the page: {failed:#?}");
    // What was hidden is counted by the callers' sidecars.
    let log = demo.log();
    let mut retries = 0.0;
    for who in ["frontend", "reviews-v2"] {
        let admin: std::net::SocketAddr = log
            .lines()
            .find_map(|l| {
                let rest = l.trim().strip_prefix(who)?;
                rest.trim().strip_prefix("http://")?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no admin address for {who} in\n{log}"));
        let text = http::get(admin, "localhost", "/metrics")
            .await
            .unwrap()
            .body;
        retries += text
            .lines()
            .filter(|l| l.starts_with("mycel_retries_total") && l.contains("ratings.shop"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(retries >= 5.0, "only {retries} retries counted");
    demo.signal(nix::sys::signal::Signal::SIGINT as i32);
    let _ = demo.wait(Duration::from_secs(20)).await;
}

/// `method path` through the gateway with `headers` and `body`, on a new
/// connection: (status, headers, body).
async fn send(
    gateway: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, ::http::HeaderMap, String) {
    let reply = mycel_test_support::http::send(gateway, "localhost", method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    (reply.status, reply.headers, reply.body)
}

/// `/api/orders` as the banner says: the token file it names admits
/// demo-user (POST places an order, GET lists it), no token gets 401 with
/// the Bearer challenge, a token with a changed signature 401, a token
/// without `orders:write` (signed here with the demo's own key) may list
/// but not order; a client's own `x-user-id` is never believed, and only
/// the gateway may call orders.
async fn orders_need_the_printed_token(gateway: std::net::SocketAddr, log: &str, data: &Path) {
    let token_path = log
        .lines()
        .find_map(|l| l.strip_prefix("demo token: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no demo token line in the banner:\n{log}"));
    assert_eq!(Path::new(token_path), data.join("demo-token.jwt"));
    let token = std::fs::read_to_string(token_path).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let order = r#"{"product":"p2","quantity":3}"#;

    let (status, headers, body) = send(gateway, "POST", "/api/orders", &[], order).await;
    assert_eq!(status, 401, "{body}");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{headers:?}");
    let (status, _, body) = send(gateway, "GET", "/api/orders", &[], "").await;
    assert_eq!(status, 401, "{body}");

    // As curl -d sends it: a form content type, which orders does not mind.
    let (status, _, body) = send(
        gateway,
        "POST",
        "/api/orders",
        &[
            ("authorization", &bearer),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-user-id", "root"),
        ],
        order,
    )
    .await;
    assert!(status == 201 || status == 200, "{status}: {body}");
    let placed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(placed["product"], "p2", "{placed}");
    assert_eq!(placed["quantity"], 3, "{placed}");
    assert_eq!(
        placed["user"], "demo-user",
        "the token's sub, not the client's header"
    );
    assert_eq!(
        placed["caller"],
        "spiffe://cluster.local/ns/shop/sa/gateway"
    );

    let (status, _, body) = send(
        gateway,
        "GET",
        "/api/orders",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["user"], "demo-user", "{list}");
    assert!(
        list["orders"]
            .as_array()
            .is_some_and(|o| o.contains(&placed)),
        "{list}"
    );
    // The service's own validation answers through the gateway.
    let (status, _, body) = send(
        gateway,
        "POST",
        "/api/orders",
        &[("authorization", &bearer)],
        r#"{"product":"p2","quantity":0}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("between 1 and 100"), "{body}");

    // The same token with one character of its signature changed.
    let (signed, signature) = token.trim().rsplit_once('.').unwrap();
    let mut signature = signature.as_bytes().to_vec();
    let i = signature.len() / 2;
    signature[i] = if signature[i] == b'A' { b'B' } else { b'A' };
    let forged = format!("Bearer {signed}.{}", String::from_utf8(signature).unwrap());
    let (status, headers, body) = send(
        gateway,
        "POST",
        "/api/orders",
        &[("authorization", &forged)],
        order,
    )
    .await;
    assert_eq!(status, 401, "a wrong signature: {body}");
    assert!(headers.contains_key("www-authenticate"), "{headers:?}");

    // A read-only token of the demo's issuer: lists, but may not order.
    let key = std::fs::read(data.join("gateway-jwt/signing.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    let mut header = jsonwebtoken::decode_header(token.trim()).unwrap();
    header.typ = Some("JWT".into());
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"iss": "https://demo.mycel.local", "aud": "shop",
        "sub": "reader", "scope": "orders:read", "iat": now, "exp": now + 600});
    let reader = format!(
        "Bearer {}",
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    );
    let (status, _, body) = send(
        gateway,
        "GET",
        "/api/orders",
        &[("authorization", &reader)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["user"],
        "reader"
    );
    let (status, headers, body) = send(
        gateway,
        "POST",
        "/api/orders",
        &[("authorization", &reader)],
        order,
    )
    .await;
    assert_eq!(status, 403, "orders:read only: {body}");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}

/// The stock of `product` as the catalog has it now, read through the
/// gateway's uncached product view (catalog answers from its database).
async fn stock_of(gateway: std::net::SocketAddr, product: &str) -> i64 {
    let view = http::get(
        gateway,
        "localhost",
        &format!("/api/product-view/{product}"),
    )
    .await
    .unwrap();
    assert_eq!(view.status, 200, "{}", view.body);
    view.json()["product"]["stock"]
        .as_i64()
        .unwrap_or_else(|| panic!("no stock in {}", view.body))
}

/// The whole order flow through the mesh: an order placed through the
/// gateway is committed by orders in its PostgreSQL, published to NATS,
/// and within 2 s lowers the catalog's stock (catalog's PostgreSQL) and
/// shows as a notification (notifications' Redis) on the page; every store
/// connection crossed the mesh with its owner's identity.
async fn orders_flow_through_the_stores_and_the_broker(banner: &Banner, data: &Path) {
    let (gateway, log) = (banner.gateway, banner.text.as_str());
    let all_started = !log.contains("not started");
    if !mycel_tests::skip::require(
        "the demo could not start every store (PostgreSQL, Redis, NATS: Debian packages postgresql, redis-server, nats-server)",
        all_started,
    ) {
        return;
    }
    let token = std::fs::read_to_string(data.join("demo-token.jwt")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let before = stock_of(gateway, "p3").await;
    let (status, _, body) = send(
        gateway,
        "POST",
        "/api/orders",
        &[("authorization", &bearer)],
        r#"{"product":"p3","quantity":2}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let order_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no order id in {body}"))
        .to_string();
    let placed = tokio::time::Instant::now();
    let deadline = placed + Duration::from_secs(2);
    let (mut stock, mut notified) = (before, false);
    while tokio::time::Instant::now() < deadline && (stock != (before - 2).max(0) || !notified) {
        stock = stock_of(gateway, "p3").await;
        let page = http::get(gateway, "localhost", "/").await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        notified = page.body.contains(&format!("(order {order_id})"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stock,
        (before - 2).max(0),
        "stock of p3 {before} → {stock} within 2 s of the order"
    );
    assert!(
        notified,
        "order {order_id} not among the page's notifications within 2 s"
    );

    // Each store's sidecar saw its owners' identities, over mTLS.
    for (store, owners) in [
        ("catalog-postgres", &["catalog"][..]),
        ("orders-postgres", &["orders"][..]),
        ("notifications-redis", &["notifications"][..]),
        ("ratings-redis", &["ratings"][..]),
        ("nats", &["orders", "catalog", "notifications"][..]),
    ] {
        let admin = banner
            .proxies
            .iter()
            .find_map(|(name, addr)| (name == store).then_some(*addr))
            .unwrap_or_else(|| panic!("no admin of {store}:\n{log}"));
        let metrics = http::get(admin, "localhost", "/metrics")
            .await
            .unwrap()
            .body;
        for owner in owners {
            let id = format!("spiffe://cluster.local/ns/shop/sa/{owner}");
            assert!(
                metrics
                    .lines()
                    .any(|l| l.contains(&id) && !l.starts_with('#')),
                "{store}'s sidecar counted no connection from {id}:\n{metrics}"
            );
        }
    }
}

/// Runs the banner's `curl --cacert CA https://localhost:PORT/api/products`
/// (pinned to 127.0.0.1) and checks it answers 200 over HTTP/2.
fn https_as_the_banner_says(log: &str) {
    let available = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !mycel_tests::skip::require("curl (Debian package curl) is not installed", available) {
        return;
    }
    let line = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl --cacert "))
        .unwrap_or_else(|| panic!("no HTTPS command in the banner:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (ca, url) = (words[2], words[3]);
    let port = url
        .strip_prefix("https://localhost:")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{url}"));
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert", ca])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", url])
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let base = mycel_tests::ports::free_block(DEMO_SPAN);
    let mut demo = demo::spawn("mycelctl-demo", base, &data, dir.path(), &[]);

    let banner = Banner::wait(&mut demo).await;
    let gateway = banner.gateway;

    let r = http::get(gateway, "localhost", "/api/products")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["products"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    // The JSON API is under the demo's per-client rate limit.
    assert_eq!(
        r.headers.get("ratelimit-limit").map(|v| v.as_bytes()),
        Some(&b"100"[..]),
        "{:?}",
        r.headers
    );
    // The product view: the gateway merges the catalog's product and the
    // ratings' rating into one answer.
    let view = http::get(gateway, "localhost", "/api/product-view/p1")
        .await
        .unwrap();
    assert_eq!(view.status, 200, "{}", view.body);
    let merged = view.json();
    assert_eq!(merged["product"]["id"], "p1", "{merged}");
    assert!(merged["rating"].is_object(), "{merged}");
    assert_eq!(
        view.headers.get("mycel-aggregate").map(|v| v.as_bytes()),
        Some(&b"complete"[..])
    );
    // The catalog through the gateway's cache: the second read is a hit.
    let first = http::get(gateway, "localhost", "/api/catalog")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.json()["products"].is_array(), "{}", first.body);
    let again = http::get(gateway, "localhost", "/api/catalog")
        .await
        .unwrap();
    assert_eq!(
        again.headers.get("mycel-cache").map(|v| v.as_bytes()),
        Some(&b"hit"[..]),
        "{:?}",
        again.headers
    );
    assert_eq!(again.body, first.body, "a hit is the stored answer");
    let page = http::get(gateway, "localhost", "/").await.unwrap();
    assert_eq!(page.status, 200);

    // Orders behind the gateway's JWT policies, with the printed token.
    orders_need_the_printed_token(gateway, &demo.log(), &data).await;
    orders_flow_through_the_stores_and_the_broker(&banner, &data).await;

    // The banner's HTTPS command works as printed: the shop over TLS
    // (HTTP/2 by ALPN) with a certificate from the demo's local CA.
    https_as_the_banner_says(&demo.log());

    // The demo's GRPCRoute sends about one reviews call in ten to v2.
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..40 {
        let r = http::get(gateway, "localhost", "/api/products")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        for p in r.json()["products"].as_array().cloned().unwrap_or_default() {
            match p["reviews_version"].as_str() {
                Some("v1") => v1 += 1,
                Some("v2") => v2 += 1,
                other => panic!("reviews version {other:?} in {p:#}"),
            }
        }
    }
    let share = f64::from(v2) / f64::from(v1 + v2);
    assert!(
        v1 + v2 >= 80 && (0.02..=0.25).contains(&share),
        "v1 {v1}, v2 {v2}: not a 90/10 split"
    );

    // Only frontend may call catalog: the banner's command, from ratings'
    // sidecar, is refused with the reason.
    let log = demo.log();
    let ratings_outbound = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("curl -i -H 'Host: catalog' http://"))
        .and_then(|rest| rest.strip_suffix("/products"))
        .unwrap_or_else(|| panic!("no authorization line in the banner:\n{log}"));
    let denied = http::get(ratings_outbound.parse().unwrap(), "catalog", "/products")
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.headers["mycel-proxy-error"], "forbidden");
    assert!(
        denied.body.contains("no ALLOW policy matched"),
        "{}",
        denied.body
    );
    // Orders trusts the x-user-id the gateway sets, so no workload but the
    // gateway may call it.
    let denied = http::request(
        ratings_outbound.parse().unwrap(),
        "orders",
        "/orders",
        &[("x-user-id", "demo-user")],
    )
    .await
    .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.headers["mycel-proxy-error"], "forbidden");

    let needle = data.display().to_string();
    assert!(
        processes_mentioning(&needle).len() >= 5,
        "expected the controller, apps and sidecars to be running: {:?}",
        processes_mentioning(&needle)
    );

    // A gateway registers no workload: its readiness is null, not false.
    let controller_admin = std::net::SocketAddr::new(gateway.ip(), gateway.port() - 1);
    let proxies = http::get(controller_admin, "localhost", "/debug/proxies")
        .await
        .unwrap()
        .json();
    let proxies = proxies.as_array().cloned().unwrap_or_default();
    // Every workload the banner lists an admin for, and the gateway.
    let listed = banner.proxies.len();
    assert!(listed >= 8, "{log}");
    assert_eq!(proxies.len(), listed, "{proxies:#?}");
    for p in &proxies {
        let want = if p["mode"] == "gateway" {
            serde_json::Value::Null
        } else {
            serde_json::Value::Bool(true)
        };
        assert_eq!(p["ready"], want, "{p:#}");
    }

    // The banner says where traces are; a request through the shop shows
    // there as one trace through every service's proxy.
    let log = demo.log();
    let traces_url = log
        .lines()
        .find_map(|l| l.strip_prefix("traces: http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no traces line in the banner:\n{log}"));
    let (traces_addr, traces_path) = traces_url.split_once('/').expect("host/path");
    let traces_addr: std::net::SocketAddr = traces_addr.parse().expect("trace receiver address");
    assert_eq!(traces_path, "traces");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = http::get(traces_addr, "localhost", "/traces")
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        let whole = page.body.split("\n\n").any(|trace| {
            [
                "gateway-gateway",
                "frontend-proxy",
                "catalog-proxy",
                "ratings-proxy",
            ]
            .iter()
            .all(|svc| trace.contains(svc))
        });
        if whole {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no whole trace at /traces:\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let logs: Vec<_> = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(logs.len() >= 5, "{logs:?}");
    for log in &logs {
        let text = std::fs::read(log).unwrap();
        assert!(
            !text.contains(&0x1b),
            "{} holds terminal escape codes",
            log.display()
        );
    }

    demo.signal(nix::sys::signal::Signal::SIGINT as i32);
    let status = demo
        .wait(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("demo did not stop on SIGINT:\n{}", demo.log()));
    assert!(
        status.success(),
        "demo exited with {status}:\n{}",
        demo.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_a_busy_port_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = busy.local_addr().unwrap().port();
    let mut demo = demo::spawn("mycelctl-demo-busy", base, &data, dir.path(), &[]);
    let status = demo
        .wait(Duration::from_secs(20))
        .await
        .expect("demo must exit");
    assert!(!status.success());
    let log = demo.log();
    assert!(
        log.contains(&base.to_string()),
        "error must name the busy port: {log}"
    );
    assert!(processes_mentioning(&data.display().to_string()).is_empty());
}
