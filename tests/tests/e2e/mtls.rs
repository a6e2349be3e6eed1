//! What the mesh port accepts, and what a client sidecar refuses.

use std::time::Duration;

use mycel_test_support::{ProxyArgs, TestCa};
use mycel_tests::mesh::{spiffe, Mesh, SidecarSpec, APP_PORT};
use mycel_tests::shop::{mesh_yaml, workload};
use mycel_tests::{http, mtls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ratings_mesh() -> (Mesh, mycel_tests::shop::Workload) {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    (mesh, ratings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_port_refuses_plaintext_and_foreign_certs() {
    let (mesh, ratings) = ratings_mesh().await;
    let port = ratings.sidecar.inbound();

    // Plaintext HTTP gets no application data back.
    let mut tcp = tokio::net::TcpStream::connect(port).await.unwrap();
    tcp.write_all(b"GET /ratings/1 HTTP/1.1\r\nHost: ratings\r\nmycel-dst-port: 8080\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        !text.contains("HTTP/1.1") && !text.contains("stars") && !text.contains("caller"),
        "plaintext got application data: {text:?}"
    );

    // Positive control: a cert from the mesh CA gets through, and the app
    // sees exactly the identity in it.
    let issuer = TestCa::from_data_dir(&mesh.path("data"));
    let probe_id = spiffe("shop", "probe");
    let (status, body) = mtls::get(port, &issuer.leaf(&probe_id), "/ratings/7", APP_PORT)
        .await
        .expect("mesh-CA client must be served");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["caller"], probe_id);

    // The same identity from a foreign CA is refused.
    let foreign = TestCa::new("foreign");
    let result = mtls::get(port, &foreign.leaf(&probe_id), "/ratings/7", APP_PORT).await;
    assert!(result.is_err(), "foreign-CA client was served: {result:?}");

    // Only ports the workload declared can be reached through the mesh port.
    let (status, body) = mtls::get(port, &issuer.leaf(&probe_id), "/", 22)
        .await
        .expect("request");
    assert_eq!(status, 403, "undeclared port must be refused: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_server_with_wrong_identity() {
    let (mesh, ratings) = ratings_mesh().await;
    let issuer = TestCa::from_data_dir(&mesh.path("data"));
    let leaf = issuer.leaf(&spiffe("shop", "frontend"));
    let dir = mesh.path("static");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("chain.pem"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
    std::fs::copy(mesh.ca_root(), dir.join("bundle.pem")).unwrap();
    let mesh_addr = ratings.sidecar.inbound();
    // Two names for the same endpoint: one with the identity its sidecar
    // really holds, one claiming it should be "catalog".
    let endpoint = |id: &str| {
        format!(
            "  endpoints:\n  - address: {}\n    meshPort: {}\n    spiffeId: {id}\n",
            mesh_addr.ip(),
            mesh_addr.port()
        )
    };
    let static_yaml = format!(
        "identity:\n  cert: {d}/chain.pem\n  key: {d}/key.pem\n  bundle: {d}/bundle.pem\nservices:\n\
- name: ratings\n  namespace: shop\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n    protocol: http\n{ok}\
- name: impostor\n  namespace: shop\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n    protocol: http\n{bad}",
        d = dir.display(),
        ok = endpoint(&spiffe("shop", "ratings")),
        bad = endpoint(&spiffe("shop", "catalog")),
    );
    std::fs::write(dir.join("static.yaml"), static_yaml).unwrap();

    let spec = SidecarSpec::new("static-client", "frontend");
    let ip = spec.ip;
    let admin = std::net::SocketAddr::from((ip, 15000));
    let outbound = std::net::SocketAddr::from((ip, 15001));
    let args = ProxyArgs::new("static-client", "shop", "frontend")
        .flag("--static-config", dir.join("static.yaml").display())
        .explicit(std::net::SocketAddr::from((ip, 15006)), outbound)
        .admin(admin);
    let mut proc = mycel_tests::Proc::spawn(
        "static-client",
        &mycel_tests::bin("mycel-proxy"),
        args.as_slice(),
        &mesh.logs(),
    );
    if let Err(e) = http::wait_ok(admin, "/ready", Duration::from_secs(20)).await {
        panic!("static sidecar not ready: {e:#}\n{}", proc.log());
    }
    proc.assert_running();

    let ok = http::get(outbound, "ratings", "/ratings/3").await.unwrap();
    assert_eq!(ok.status, 200, "positive control failed: {}", ok.body);

    // A static config lists every service there is.
    let unknown = http::get(outbound, "nosuch", "/").await.unwrap();
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    assert!(unknown.body.contains("unknown service"), "{}", unknown.body);

    let before = ratings.sidecar.served_inbound().await;
    let bad = http::get(outbound, "impostor", "/ratings/4").await.unwrap();
    assert_eq!(bad.status, 502, "{}", bad.body);
    assert!(
        bad.body.contains("identity"),
        "502 must say the identity did not match: {}",
        bad.body
    );
    assert_eq!(
        ratings.sidecar.served_inbound().await,
        before,
        "the request reached the app despite the identity mismatch"
    );
    let metrics = http::get(admin, "localhost", "/metrics")
        .await
        .unwrap()
        .body;
    assert!(metrics.contains("identity_mismatch"), "{metrics}");
}
