//! The gateway's HTTPS listener and a GatewayPolicy as other clients see
//! them: Python httpx over HTTP/2 and grpcio, both verifying the gateway's
//! certificate by its name (SNI), both with and without a JWT. The
//! HTTPRoute and the GRPCRoute name the same policy, so a gRPC caller
//! without a token gets UNAUTHENTICATED, as an HTTP one gets 401.

use std::net::SocketAddr;
use std::process::Command;

use mycel_test_support::jwt::{jwks, Signer};
use mycel_test_support::TestCa;
use serde_json::json;

use mycel_tests::gateway_yaml::{gateway, grpc_service, http_listener, path_prefix, route, rule};
use mycel_tests::mesh::SidecarSpec;
use mycel_tests::shop::{mesh_yaml, workload};
use mycel_tests::{ports, skip};

const HOST: &str = "api.shop.example";
const ISS: &str = "https://auth.shop.example";
/// Debian's python3, where Debian's python3-httpx and python3-grpcio are.
const PYTHON: &str = "/usr/bin/python3";

fn python_clients() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import httpx, h2, grpc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn gateway_yaml(jwks: &std::path::Path) -> String {
    let policy = Some("api-auth");
    let routes = [
        gateway(&[http_listener("web", None)]),
        route("HTTPRoute", "products", None, &[HOST]),
        rule(&path_prefix("/products"), policy, Some(("catalog", 80))),
        route("GRPCRoute", "reviews", None, &[HOST]),
        rule(
            &grpc_service("shop.v1.Reviews"),
            policy,
            Some(("reviews", 9090)),
        ),
    ]
    .concat();
    format!(
        r#"{routes}---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: api-auth, namespace: shop}}
spec:
  jwt:
    issuer: {ISS}
    audiences: [shop-api]
    jwks: {{file: {jwks}}}
    forwardClaims: [{{claim: sub, header: x-user-id}}]
"#,
        jwks = jwks.display()
    )
}

/// Runs a Python client; its stdout, or the test fails with its stderr.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// httpx over HTTP/2 to `https://HOST:<port>/products`, `HOST` resolved
/// to the gateway's address (as curl's `--resolve`), verifying against
/// the CA: prints `<status> <http version> <www-authenticate>`.
const HTTPX: &str = r#"
import socket, sys, httpx
addr, ca, host, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ip, port = addr.rsplit(":", 1)
resolve = socket.getaddrinfo
socket.getaddrinfo = lambda h, *a, **k: resolve(ip if h == host else h, *a, **k)
headers = {"authorization": "Bearer " + token} if token else {}
with httpx.Client(http2=True, verify=ca, timeout=10) as c:
    r = c.get("https://" + host + ":" + port + "/products", headers=headers)
    print(r.status_code, r.http_version, r.headers.get("www-authenticate", "-"))
"#;

/// grpcio unary call `shop.v1.Reviews/GetReviews` through the gateway
/// (TLS, name checked as `HOST`): prints `OK <bytes>` or the status code
/// name.
const GRPCIO: &str = r#"
import sys, grpc
addr, ca, host, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
creds = grpc.ssl_channel_credentials(open(ca, "rb").read())
options = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
with grpc.secure_channel(addr, creds, options=options) as ch:
    call = ch.unary_unary("/shop.v1.Reviews/GetReviews",
                          request_serializer=lambda b: b, response_deserializer=lambda b: b)
    # GetReviewsRequest{product_id: "p1"}
    metadata = [("authorization", "Bearer " + token)] if token else None
    try:
        reply = call(b"\n\x02p1", metadata=metadata, timeout=10)
        print("OK", len(reply))
    except grpc.RpcError as e:
        print(e.code().name)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_over_h2_and_grpcio_through_tls_meet_the_same_jwt_policy() {
    if !skip::require(
        "Debian's python3-httpx, python3-h2 and python3-grpcio are not installed",
        python_clients(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let key = Signer::new("k1");
    std::fs::write(&jwks_path, jwks(&[&key]).to_string()).unwrap();
    let web = TestCa::new("gateway-web");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, web.root_pem()).unwrap();
    let leaf = web.host_leaf(&[HOST]);
    let (cert, cert_key) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    std::fs::write(&cert, &leaf.chain_pem).unwrap();
    std::fs::write(&cert_key, &leaf.key_pem).unwrap();

    let mesh = mycel_tests::mesh::Mesh::start(&mesh_yaml(&gateway_yaml(&jwks_path))).await;
    let _catalog = workload(&mesh, "catalog", "catalog", "http", &[], |s| s).await;
    let _ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let _reviews = workload(&mesh, "reviews", "reviews", "grpc", &[], |s| s).await;
    let spec = SidecarSpec::new("gateway", "gateway").gateway("shop-gateway");
    let https = SocketAddr::from((spec.ip, ports::free_block(1)));
    let _gw = mesh
        .sidecar(
            spec.arg("--tls-listen")
                .arg(&https.to_string())
                .arg("--tls-cert")
                .arg(&format!("{},{}", cert.display(), cert_key.display())),
        )
        .await;
    let token = key.sign(&json!({"iss": ISS, "aud": "shop-api", "sub": "alice",
                                 "exp": jsonwebtoken::get_current_timestamp() + 600}));
    let (addr, ca) = (https.to_string(), ca.display().to_string());

    // httpx, HTTP/2 by ALPN: the token decides, the challenge says why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = String::new();
    while std::time::Instant::now() < deadline {
        got = python(HTTPX, &[&addr, &ca, HOST, &token]);
        if got.starts_with("200 ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(got.starts_with("200 HTTP/2"), "{got}");
    let got = python(HTTPX, &[&addr, &ca, HOST, ""]);
    assert!(
        got.starts_with("401 HTTP/2 Bearer realm=\"mycel\""),
        "{got}"
    );

    // grpcio through TLS: the same policy on the GRPCRoute.
    let got = python(GRPCIO, &[&addr, &ca, HOST, &token]);
    assert!(got.starts_with("OK "), "{got}");
    let got = python(GRPCIO, &[&addr, &ca, HOST, ""]);
    assert_eq!(got, "UNAUTHENTICATED");
    let got = python(GRPCIO, &[&addr, &ca, HOST, "not.a.token"]);
    assert_eq!(got, "UNAUTHENTICATED");
}
