//! Authorization between real processes: the controller reads
//! AuthorizationPolicy documents from mesh.yaml and pushes each sidecar its
//! workload's policy; the server sidecar decides on the identity its peer
//! proved in the mTLS handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_demo::proto::reviews::GetReviewsRequest;
use mycel_tests::echo::tcp_echo;
use mycel_tests::grpc::reviews_via;
use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::shop::{mesh_yaml, workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(name: &str, action: &str, selector_app: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: {selector_app}}}}}\n  action: {action}\n  rules:\n{rules}"
    )
}

/// Only the `reviews` service account may call ratings.
fn only_reviews() -> String {
    policy(
        "ratings-callers",
        "ALLOW",
        "ratings",
        "  - from: [{serviceAccounts: [shop/reviews]}]\n",
    )
}

/// Counts of the server's authorization metric for one decision and policy.
async fn authz_count(server: &Sidecar, decision: &str, policy: &str, protocol: &str) -> u64 {
    let text = server.metrics().await;
    let want = [
        format!("decision=\"{decision}\""),
        format!("policy=\"{policy}\""),
        format!("protocol=\"{protocol}\""),
    ];
    text.lines()
        .filter(|l| l.starts_with("mycel_authz_decisions_total"))
        .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the sidecar holds an inbound policy naming `policy` (or,
/// with `None`, holds one without policies).
async fn wait_policy(server: &Sidecar, policy: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = server.admin_json("/config_dump").await;
        let held = &dump["snapshot"]["inbound"];
        let names: Vec<&str> = held["policies"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let ok = match policy {
            Some(p) => names.contains(&p),
            None => held.is_object() && names.is_empty(),
        };
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server never held {policy:?}; it holds {held}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_caller_gets_through_and_another_identity_is_forbidden() {
    let mesh = Mesh::start(&mesh_yaml(&only_reviews())).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    wait_policy(&ratings.sidecar, Some("shop/ratings-callers")).await;
    let reviews = mesh.sidecar(SidecarSpec::new("reviews-0", "reviews")).await;
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;

    let ok = http::get(reviews.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);

    let denied = http::get(frontend.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.headers["mycel-proxy-error"], "forbidden");
    assert!(
        denied.body.contains("no ALLOW policy matched"),
        "{}",
        denied.body
    );
    assert_eq!(
        authz_count(&ratings.sidecar, "deny", "no-allow-match", "http").await,
        1
    );
    assert_eq!(
        authz_count(&ratings.sidecar, "allow", "shop/ratings-callers", "http").await,
        1
    );
    // The denial reached the log with the caller's identity.
    let log = ratings.sidecar.proc.log();
    assert!(
        log.contains("inbound: request denied") && log.contains("sa/frontend"),
        "{log}"
    );
}

/// A caller cannot pass for another by writing the peer-identity header:
/// only the handshake's identity counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_identity_header_does_not_authorize() {
    let mesh = Mesh::start(&mesh_yaml(&only_reviews())).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    wait_policy(&ratings.sidecar, Some("shop/ratings-callers")).await;
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;
    let forged = http::request(
        frontend.outbound(),
        "ratings",
        "/ratings/1",
        &[(
            "x-mycel-peer-id",
            "spiffe://cluster.local/ns/shop/sa/reviews",
        )],
    )
    .await
    .unwrap();
    assert_eq!(forged.status, 403, "{}", forged.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_are_refused_with_permission_denied() {
    let deny = policy(
        "reviews-no-frontend",
        "DENY",
        "reviews",
        "  - from: [{principals: [\"spiffe://cluster.local/ns/shop/sa/frontend\"]}]\n    to: [{grpc: [shop.v1.Reviews/*]}]\n",
    );
    let mesh = Mesh::start(&mesh_yaml(&deny)).await;
    let reviews = workload(&mesh, "reviews", "reviews", "grpc", &[], |s| s).await;
    wait_policy(&reviews.sidecar, Some("shop/reviews-no-frontend")).await;
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;
    let mut client = reviews_via(frontend.outbound()).await;
    let err = client
        .get_reviews(GetReviewsRequest {
            product_id: "1".into(),
        })
        .await
        .expect_err("the DENY policy refuses frontend");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(
        authz_count(&reviews.sidecar, "deny", "shop/reviews-no-frontend", "http").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lets_the_request_through_and_counts_it() {
    let audit = policy(
        "audit-frontend",
        "AUDIT",
        "ratings",
        "  - from: [{serviceAccounts: [shop/frontend]}]\n",
    );
    let mesh = Mesh::start(&mesh_yaml(&audit)).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    wait_policy(&ratings.sidecar, Some("shop/audit-frontend")).await;
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;
    for _ in 0..3 {
        let r = http::get(frontend.outbound(), "ratings", "/ratings/1")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        authz_count(&ratings.sidecar, "audit", "shop/audit-frontend", "http").await,
        3
    );
    assert!(ratings.sidecar.proc.log().contains("AUDIT policy matched"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tcp_tunnel_never_reaches_the_app() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: shop\nspec:\n  selector:\n    app: db\n  ports:\n  - name: tcp\n    port: 5432\n    targetPort: {APP_PORT}\n    appProtocol: tcp\n{}",
        policy(
            "db-owner",
            "ALLOW",
            "db",
            &format!("  - from: [{{serviceAccounts: [shop/catalog]}}]\n    to: [{{ports: [{APP_PORT}]}}]\n"),
        )
    );
    let mesh = Mesh::start(&yaml).await;
    let server = SidecarSpec::new("db-0", "db")
        .label("app", "db")
        .app_port(&format!("tcp:{APP_PORT}:tcp"));
    tcp_echo(server.app_addr(), b"").await;
    let server = mesh.sidecar(server).await;
    mesh.wait_registered("db-0").await;
    wait_policy(&server, Some("shop/db-owner")).await;

    let mut clients = Vec::new();
    for sa in ["catalog", "ratings"] {
        let spec = SidecarSpec::new(&format!("{sa}-0"), sa);
        let upstream = SocketAddr::from((spec.ip, 16000));
        let sidecar = mesh
            .sidecar(
                spec.arg("--tcp-upstream")
                    .arg(&format!("{upstream}=db.shop:5432")),
            )
            .await;
        clients.push((sidecar, upstream));
    }
    // The owner's bytes come back.
    let mut conn = tokio::net::TcpStream::connect(clients[0].1).await.unwrap();
    conn.write_all(b"select 1\n").await.unwrap();
    let mut buf = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut buf))
        .await
        .expect("owner's tunnel answers")
        .unwrap();
    assert_eq!(&buf, b"select 1\n");
    // Another identity's connection is closed without an answer.
    let mut conn = tokio::net::TcpStream::connect(clients[1].1).await.unwrap();
    let _ = conn.write_all(b"select 1\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "denied tunnel: {read:?} {rest:?}"
    );
    assert_eq!(
        authz_count(&server, "deny", "no-allow-match", "tcp").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_within_a_second_without_dropping_allowed_callers() {
    let allow_both = policy(
        "ratings-callers",
        "ALLOW",
        "ratings",
        "  - from: [{serviceAccounts: [shop/reviews, shop/frontend]}]\n",
    );
    let mesh = Mesh::start(&mesh_yaml(&allow_both)).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    wait_policy(&ratings.sidecar, Some("shop/ratings-callers")).await;
    let reviews = mesh.sidecar(SidecarSpec::new("reviews-0", "reviews")).await;
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;
    let first = http::get(frontend.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);

    // The allowed caller keeps calling across the change (bounded: at most
    // 2,000 requests or 30 s).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let outbound = reviews.outbound();
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && sent.load(Ordering::Relaxed) < 2_000
                && started.elapsed() < Duration::from_secs(30)
            {
                let ok = matches!(
                    http::get(outbound, "ratings", "/ratings/2").await,
                    Ok(r) if r.status == 200
                );
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    mesh.write_mesh_yaml(&mesh_yaml(&only_reviews()));
    let changed = Instant::now();
    let took = loop {
        let r = http::get(frontend.outbound(), "ratings", "/ratings/1")
            .await
            .unwrap();
        if r.status == 403 {
            break changed.elapsed();
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the new policy never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    eprintln!("policy change applied after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the allowed caller lost requests across the change"
    );

    // An invalid policy is refused and the last good one stays.
    mesh.write_mesh_yaml(&mesh_yaml(
        &only_reviews().replace("shop/reviews", "reviews"),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = http::get(reviews.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = http::get(frontend.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 403);
}
