//! The shop's issuer for a cluster (`mycel-demo issuer`), as real
//! processes on loopback: a gateway whose GatewayPolicy names the issuer's
//! `/jwks.json` as its `jwks.url` admits a token `mycel-demo token` signed
//! with the issuer's key, passes its `sub` on, refuses one without the
//! scope, and follows the issuer to a new key.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mycel_api::demo_tokens::{AUDIENCE, ISSUER};
use mycel_tests::echo::http_headers_echo;
use mycel_tests::gateway_yaml::{echo_service, gateway, http_listener, path_prefix, route, rule};
use mycel_tests::mesh::{next_ip, Mesh, SidecarSpec, APP_PORT};
use mycel_tests::{bin, http, Proc};

fn mesh_yaml(jwks_url: &str) -> String {
    let routes = [
        gateway(&[http_listener("web", None)]),
        route("HTTPRoute", "api", None, &["shop.local"]),
        rule(
            &path_prefix("/orders"),
            Some("orders-auth"),
            Some(("echo", 80)),
        ),
    ]
    .concat();
    format!(
        r#"{echo_svc}{routes}---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: orders-auth, namespace: shop}}
spec:
  jwt:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks: {{url: "{jwks_url}"}}
    algorithms: [ES256]
    requiredClaims: [{{name: scope, value: "orders:write"}}]
    forwardClaims: [{{claim: sub, header: x-user-id}}]
    forwardToken: false
"#,
        echo_svc = echo_service(),
    )
}

/// `mycel-demo issuer` on `addr` with its key in `key_dir`, ready.
async fn issuer(addr: SocketAddr, key_dir: &Path, logs: &Path) -> Proc {
    let args = vec![
        "issuer".to_string(),
        format!("--listen={addr}"),
        format!("--key-dir={}", key_dir.display()),
    ];
    let proc = Proc::spawn("issuer", &bin("mycel-demo"), &args, logs);
    if let Err(e) = http::wait_ok(addr, "/jwks.json", Duration::from_secs(10)).await {
        panic!("the issuer never served its keys: {e:#}\n{}", proc.log());
    }
    proc
}

/// `mycel-demo token --key-dir DIR ARGS`: the token, or the error text.
fn token(key_dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin("mycel-demo"))
        .arg("token")
        .arg(format!("--key-dir={}", key_dir.display()))
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn get_orders(gw: SocketAddr, token: &str) -> http::Reply {
    http::request(
        gw,
        "shop.local",
        "/orders",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap()
}

/// `GET /orders` with `token` until it is admitted or `limit` passed: the
/// last answer.
async fn admitted_within(gw: SocketAddr, token: &str, limit: Duration) -> http::Reply {
    let deadline = Instant::now() + limit;
    loop {
        let reply = get_orders(gw, token).await;
        if reply.status == 200 || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_admits_tokens_of_the_demo_issuer_through_its_jwks_url() {
    let keys = tempfile::tempdir().unwrap();
    let err = token(keys.path(), &[]).expect_err("no key yet");
    assert!(
        err.contains("signing-key.pem") && err.contains("mycel-demo issuer"),
        "{err}"
    );

    let addr = SocketAddr::from((next_ip(), 18080));
    let url = format!("http://{addr}/jwks.json");
    let mesh = Mesh::start(&mesh_yaml(&url)).await;
    let mut issuer_proc = issuer(addr, keys.path(), &mesh.logs()).await;
    let echo = SidecarSpec::new("echo-0", "echo")
        .label("app", "echo")
        .app_port(&format!("http:{APP_PORT}"));
    http_headers_echo(echo.app_addr()).await;
    let _echo = mesh.sidecar(echo).await;
    mesh.wait_registered("echo-0").await;
    let gw = mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").gateway("shop-gateway"))
        .await;
    let gw = gw.listen();

    let writer = token(keys.path(), &["--subject=alice"]).unwrap();
    let admitted = admitted_within(gw, &writer, Duration::from_secs(20)).await;
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    let seen = admitted.json();
    assert_eq!(seen["x-user-id"], serde_json::json!(["alice"]), "{seen}");
    assert!(
        seen.get("authorization").is_none(),
        "the token stays: {seen}"
    );

    let reader = token(keys.path(), &["--scope=orders:read"]).unwrap();
    assert_eq!(get_orders(gw, &reader).await.status, 403);

    // The issuer comes back with a new key: the gateway reads the JWKS
    // again for the new kid (at most once in 30 s, so a token seen while
    // its first fetch was under way may hold it back that long), and the
    // old key's tokens stop working.
    drop(issuer_proc);
    let fresh = tempfile::tempdir().unwrap();
    issuer_proc = issuer(addr, fresh.path(), &mesh.logs()).await;
    let renewed = token(fresh.path(), &["--subject=bob"]).unwrap();
    let reply = admitted_within(gw, &renewed, Duration::from_secs(45)).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, issuer_proc.log());
    assert_eq!(reply.json()["x-user-id"], serde_json::json!(["bob"]));
    assert_eq!(get_orders(gw, &writer).await.status, 401);
}
