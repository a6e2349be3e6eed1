//! The demo shop through the gateway: every hop is a real process, every
//! call between services crosses two sidecars over mTLS.

use mycel_tests::http;
use mycel_tests::mesh::spiffe;
use mycel_tests::shop::Shop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_through_gateway_reaches_every_service_with_verified_identities() {
    let shop = Shop::start().await;
    let gw = shop.gateway.listen();

    let page = http::get(gw, "shop.example", "/").await.expect("GET /");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<html"), "frontend page: {}", page.body);

    let reply = http::get(gw, "shop.example", "/api/products")
        .await
        .expect("GET /api/products");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let products = body["products"].as_array().expect("products array");
    assert!(!products.is_empty(), "{body}");

    let frontend = spiffe("shop", "frontend");
    let calls = body["calls"].as_array().expect("calls array");
    for service in ["catalog", "reviews", "ratings"] {
        let seen: Vec<_> = calls.iter().filter(|c| c["service"] == service).collect();
        assert!(!seen.is_empty(), "frontend never called {service}: {body}");
        for c in seen {
            assert_eq!(c["ok"], true, "call to {service} failed: {c}");
            assert_eq!(
                c["caller"], frontend,
                "{service}'s sidecar must hand it the frontend's verified identity: {c}"
            );
        }
    }

    // reviews v2 calls ratings itself, through its own sidecar.
    let reviews_id = spiffe("shop", "reviews");
    for p in products {
        assert_eq!(
            p["reviews_ratings_caller"], reviews_id,
            "ratings must see reviews' identity on reviews' own call: {p}"
        );
    }

    // The server side counted the caller by identity as well.
    let metrics = shop.catalog.sidecar.metrics().await;
    assert!(
        metrics.contains(&frontend),
        "catalog sidecar metrics do not mention the frontend identity:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_and_forged_identity_header() {
    let shop = Shop::start().await;
    let out = shop.frontend.sidecar.outbound();

    let r = http::get(out, "nosuch", "/").await.expect("GET nosuch");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("nosuch"),
        "503 body must name the service: {}",
        r.body
    );

    // A caller cannot claim someone else's identity: the server sidecar
    // replaces the header with the verified peer.
    let r = http::request(
        out,
        "ratings",
        "/ratings/1",
        &[("x-mycel-peer-id", "spiffe://cluster.local/ns/shop/sa/admin")],
    )
    .await
    .expect("GET ratings");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["caller"], spiffe("shop", "frontend"), "{}", r.body);
}
