//! GatewayPolicies through real processes: mesh.yaml attaches them to
//! HTTPRoute rules with an `ExtensionRef`, the controller sends them with
//! the Gateway's routes, and a real gateway enforces them for curl: JWT
//! vectors (valid, expired, wrong audience, wrong key, `alg: none`, a
//! missing claim, key rotation through the JWKS file), API keys, and a
//! global rate limit two gateway replicas share through a real Redis,
//! with Redis killed under it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use mycel_test_support::jwt::{jwks, Signer};
use mycel_test_support::redis::RedisServer;
use serde_json::{json, Value};
use sha2::Digest;

use mycel_tests::echo::http_headers_echo;
use mycel_tests::gateway_yaml::{echo_service, gateway, http_listener, path_prefix, route, rule};
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::skip;

const ISS: &str = "https://auth.shop.example";
const HOST: &str = "api.shop.example";

fn write_jwks(path: &Path, keys: &[&Signer]) {
    let set = jwks(keys);
    // Written whole, then renamed: the gateway never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, set.to_string()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": "shop-api", "sub": sub, "scope": "orders:read orders:write",
           "exp": now() + 600, "iat": now()})
}

fn has_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What curl got: status, headers (lowercase names), body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The echo app's view of the request headers.
    fn seen(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET http://HOST<path>` through the gateway at `gw`, with headers.
fn curl(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    curl_send(gw, "GET", path, None, headers)
}

/// curl's `-D -` output: the last header block (after any `100
/// Continue`) and the body.
fn parse_curl(out: &std::process::Output) -> Got {
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    while text.starts_with("HTTP/1.1 100") {
        text = text
            .split_once("\r\n\r\n")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: body.to_string(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The echo Service, a Gateway, and one HTTPRoute rule per policy:
/// `/orders` (JWT), `/partners` (API key), `/limited` (global limit,
/// fails open), `/strict` (global limit, fails closed), `/uploads` (CORS
/// and a 1 KiB body limit), `/cached` (the response cache).
fn mesh_yaml(jwks: &Path, limit: u32) -> String {
    let key_digest = hex::encode(sha2::Sha256::digest(b"partner-key-1"));
    let echo = Some(("echo", 80));
    let guarded = |prefix: &str, policy: &str| rule(&path_prefix(prefix), Some(policy), echo);
    let routes = [
        gateway(&[http_listener("web", None)]),
        route("HTTPRoute", "api", None, &[HOST]),
        guarded("/orders", "orders-auth"),
        guarded("/partners", "partners"),
        guarded("/limited", "limited"),
        guarded("/strict", "strict"),
        guarded("/uploads", "uploads"),
        guarded("/cached", "cached"),
        rule(&path_prefix("/open"), None, echo),
    ]
    .concat();
    format!(
        r#"{echo_svc}{routes}---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: orders-auth, namespace: shop}}
spec:
  jwt:
    issuer: {ISS}
    audiences: [shop-api]
    jwks: {{file: {jwks}}}
    algorithms: [ES256]
    requiredClaims: [{{name: scope, value: "orders:write"}}]
    forwardClaims: [{{claim: sub, header: x-user-id}}]
    forwardToken: false
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: partners, namespace: shop}}
spec:
  apiKeys:
    forwardNameHeader: x-api-client
    keys: [{{name: partner-1, sha256: {key_digest}}}]
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: limited, namespace: shop}}
spec:
  rateLimit: {{requests: {limit}, per: 1s, key: ClientIP, scope: Global, onRedisFailure: Allow}}
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: strict, namespace: shop}}
spec:
  rateLimit: {{requests: 1000, per: 1s, key: ClientIP, scope: Global, onRedisFailure: Deny}}
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: uploads, namespace: shop}}
spec:
  maxRequestBodyBytes: 1024
  cors:
    allowOrigins: ["https://shop.example"]
    allowMethods: [GET, POST, PUT]
    allowHeaders: [content-type]
    maxAge: 10m
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: cached, namespace: shop}}
spec:
  cache: {{}}
"#,
        echo_svc = echo_service(),
        jwks = jwks.display(),
    )
}

/// Starts the echo workload; the gateway replicas are the caller's.
async fn echo(mesh: &Mesh) -> Sidecar {
    let spec = SidecarSpec::new("echo-0", "echo")
        .label("app", "echo")
        .app_port(&format!("http:{APP_PORT}"));
    http_headers_echo(spec.app_addr()).await;
    let sc = mesh.sidecar(spec).await;
    mesh.wait_registered("echo-0").await;
    sc
}

fn gateway_spec(name: &str, redis: Option<&str>) -> SidecarSpec {
    let spec = SidecarSpec::new(name, "gateway").gateway("shop-gateway");
    match redis {
        Some(addr) => spec.arg("--rate-limit-redis").arg(addr),
        None => spec,
    }
}

/// Waits until `GET path` through `gw` answers `want`.
async fn wait_status(gw: SocketAddr, path: &str, want: u16) -> Got {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = curl(gw, path, &[]);
        if got.status == want || Instant::now() > deadline {
            assert_eq!(got.status, want, "GET {path}: {}", got.body);
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_vectors_and_api_keys_through_a_real_gateway() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k1 = Signer::new("k1");
    write_jwks(&jwks, &[&k1]);
    let mesh = Mesh::start(&mesh_yaml(&jwks, 100)).await;
    let _echo = echo(&mesh).await;
    let gw = mesh.sidecar(gateway_spec("gateway", None)).await;
    let gw = gw.listen();

    // No token: 401 with a Bearer challenge, and nothing reaches the app.
    let got = wait_status(gw, "/orders", 401).await;
    let challenge = got.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"mycel\""),
        "{challenge}"
    );
    assert_eq!(got.header("mycel-proxy-error"), Some("unauthenticated"));

    // A valid token: the app sees the subject the gateway vouches for (not
    // the client's copy) and never the token.
    let token = k1.sign(&claims("alice"));
    let got = curl(
        gw,
        "/orders/1",
        &[("authorization", &bearer(&token)), ("x-user-id", "root")],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = got.seen();
    assert_eq!(seen["x-user-id"], json!(["alice"]), "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");

    // The vectors a gateway must refuse.
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = claims("alice");
    wrong_aud["aud"] = json!("billing");
    let mut no_scope = claims("alice");
    no_scope["scope"] = json!("orders:read");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("alice"))
    );
    let impostor = Signer::new("k1");
    let cases = [
        ("expired", k1.sign(&expired), 401, "invalid_token"),
        ("wrong audience", k1.sign(&wrong_aud), 401, "invalid_token"),
        (
            "wrong key",
            impostor.sign(&claims("alice")),
            401,
            "invalid_token",
        ),
        ("alg none", alg_none, 401, "invalid_token"),
        (
            "missing scope",
            k1.sign(&no_scope),
            403,
            "insufficient_scope",
        ),
        ("garbage", "not.a.jwt".to_string(), 401, "invalid_token"),
    ];
    for (what, token, status, error) in cases {
        let got = curl(gw, "/orders/1", &[("authorization", &bearer(&token))]);
        assert_eq!(got.status, status, "{what}: {}", got.body);
        let challenge = got.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{what}: {challenge}"
        );
    }

    // Key rotation: the issuer publishes k2 and retires k1. A token
    // naming the new kid makes the gateway read the JWKS again.
    let k2 = Signer::new("k2");
    write_jwks(&jwks, &[&k2]);
    let got = curl(
        gw,
        "/orders/2",
        &[("authorization", &bearer(&k2.sign(&claims("bob"))))],
    );
    assert_eq!(got.status, 200, "rotated key: {}", got.body);
    assert_eq!(got.seen()["x-user-id"], json!(["bob"]));
    let got = curl(
        gw,
        "/orders/2",
        &[("authorization", &bearer(&k1.sign(&claims("alice"))))],
    );
    assert_eq!(got.status, 401, "a retired key: {}", got.body);

    // API keys: the right one admits and is named to the app, never shown.
    let got = curl(
        gw,
        "/partners/x",
        &[("x-api-key", "partner-key-1"), ("x-api-client", "root")],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = got.seen();
    assert_eq!(seen["x-api-client"], json!(["partner-1"]), "{seen}");
    assert!(seen.get("x-api-key").is_none(), "{seen}");
    for headers in [vec![("x-api-key", "partner-key-2")], vec![]] {
        let got = curl(gw, "/partners/x", &headers);
        assert_eq!(got.status, 401, "{headers:?}: {}", got.body);
    }
    // A rule without a policy is open.
    assert_eq!(curl(gw, "/open", &[]).status, 200);
}

/// `curl -X METHOD` with a body of `len` bytes (`-` for none).
fn curl_send(
    gw: SocketAddr,
    method: &str,
    path: &str,
    len: Option<usize>,
    headers: &[(&str, &str)],
) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", "-X", method])
        .args(["--resolve", &format!("{HOST}:{}:{}", gw.port(), gw.ip())]);
    if let Some(len) = len {
        let body = dir.path().join("body");
        std::fs::write(&body, vec![b'x'; len]).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", body.display()));
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{HOST}:{}{path}", gw.port()));
    let out = cmd.output().expect("run curl");
    parse_curl(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_oversized_bodies_refused_at_the_gateway() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&Signer::new("k1")]);
    let mesh = Mesh::start(&mesh_yaml(&jwks, 100)).await;
    let _echo = echo(&mesh).await;
    let gw = mesh.sidecar(gateway_spec("gateway", None)).await;
    let gw = gw.listen();
    wait_status(gw, "/uploads", 200).await;

    // A browser's preflight: answered by the gateway, never forwarded.
    let preflight = [
        ("origin", "https://shop.example"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "content-type"),
    ];
    let got = curl_send(gw, "OPTIONS", "/uploads/1", None, &preflight);
    assert_eq!(got.status, 204, "{}", got.body);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(
        got.header("access-control-allow-methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    let got = curl_send(
        gw,
        "OPTIONS",
        "/uploads/1",
        None,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
    );
    assert_eq!(got.status, 403);
    assert_eq!(got.header("access-control-allow-origin"), None);
    // The actual request from the allowed origin is marked for the browser.
    let got = curl_send(
        gw,
        "POST",
        "/uploads/1",
        Some(100),
        &[("origin", "https://shop.example")],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://shop.example")
    );

    // 1 KiB passes; 1 KiB + 1 does not, whether its length is declared or
    // the body streams without one.
    assert_eq!(
        curl_send(gw, "POST", "/uploads/1", Some(1024), &[]).status,
        200
    );
    let got = curl_send(gw, "POST", "/uploads/1", Some(1025), &[]);
    assert_eq!(got.status, 413, "{}", got.body);
    assert_eq!(got.header("mycel-proxy-error"), Some("body-too-large"));
    let got = curl_send(
        gw,
        "POST",
        "/uploads/1",
        Some(64 * 1024),
        &[("transfer-encoding", "chunked")],
    );
    assert_eq!(
        got.status, 413,
        "a chunked body over the limit: {}",
        got.body
    );
    // The connection is still good for the next caller.
    assert_eq!(curl(gw, "/open", &[]).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_share_a_global_limit_in_redis_and_follow_its_failure_mode() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&Signer::new("k1")]);
    let mesh = Mesh::start(&mesh_yaml(&jwks, LIMIT)).await;
    let _echo = echo(&mesh).await;
    let a = mesh
        .sidecar(gateway_spec("gateway-a", Some(&redis.addr())))
        .await;
    let b = mesh
        .sidecar(gateway_spec("gateway-b", Some(&redis.addr())))
        .await;
    wait_status(a.listen(), "/open", 200).await;
    wait_status(b.listen(), "/open", 200).await;

    // Both replicas see the same client (curl from 127.0.0.1): one bucket.
    // Requests alternate between them for about 3 s; GCRA allows the
    // burst (LIMIT) plus LIMIT per second of the time spent.
    let (mut allowed, mut limited) = (0u32, 0u32);
    let started = Instant::now();
    let mut last_allowed_at = started;
    for i in 0..600 {
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
        let gw = if i % 2 == 0 { a.listen() } else { b.listen() };
        let got = curl(gw, "/limited", &[]);
        match got.status {
            200 => {
                allowed += 1;
                last_allowed_at = Instant::now();
            }
            429 => {
                limited += 1;
                assert!(got.header("retry-after").is_some(), "{:?}", got.headers);
                assert_eq!(got.header("ratelimit-remaining"), Some("0"));
            }
            other => panic!("GET /limited: {other} {}", got.body),
        }
    }
    let spent = last_allowed_at.duration_since(started).as_secs_f64();
    let expected = f64::from(LIMIT) + f64::from(LIMIT) * spent;
    let error = (f64::from(allowed) - expected).abs() / expected;
    assert!(
        limited > 0 && error <= 0.05,
        "{allowed} allowed (and {limited} limited) in {spent:.2} s; expected {expected:.1} ±5%"
    );

    // Redis dies: the fail-open limit lets requests through, the
    // fail-closed one answers 503 with Retry-After, on both replicas.
    redis.kill();
    for gw in [a.listen(), b.listen()] {
        wait_status(gw, "/limited", 200).await;
        let got = curl(gw, "/strict", &[]);
        assert_eq!(got.status, 503, "{}", got.body);
        assert_eq!(got.header("retry-after"), Some("1"));
        assert_eq!(got.header("mycel-proxy-error"), Some("policy-unavailable"));
    }
    let metrics = a.metrics().await;
    assert!(
        metrics.contains(
            "mycel_gateway_policy_decisions_total{policy=\"shop/limited\",decision=\"limiter_failed_open\"}"
        ),
        "{metrics}"
    );

    // Back, empty: the limit applies again.
    redis.restart().await;
    wait_status(a.listen(), "/strict", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_cache_serves_fresh_answers_revalidates_stale_ones_and_keeps_no_store_out() {
    use std::sync::atomic::Ordering;

    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&Signer::new("k1")]);
    let mesh = Mesh::start(&mesh_yaml(&jwks, 100)).await;
    let spec = SidecarSpec::new("echo-0", "echo")
        .label("app", "echo")
        .app_port(&format!("http:{APP_PORT}"));
    let app = mycel_tests::echo::cacheable_http_app(spec.app_addr()).await;
    let _echo = mesh.sidecar(spec).await;
    mesh.wait_registered("echo-0").await;
    let gw = mesh.sidecar(gateway_spec("gateway", None)).await;
    let gw = gw.listen();
    wait_status(gw, "/cached/warmup?cc=no-store", 200).await;
    let full_answers = || app.1.load(Ordering::SeqCst);
    let not_modified = || app.0.load(Ordering::SeqCst);

    // Fresh for a minute: the second request never reaches the app.
    let first = curl(gw, "/cached/a?cc=max-age_60", &[]);
    assert_eq!(
        (first.status, first.header("mycel-cache")),
        (200, Some("miss"))
    );
    let before = full_answers();
    let second = curl(gw, "/cached/a?cc=max-age_60", &[]);
    assert_eq!(
        second.header("mycel-cache"),
        Some("hit"),
        "{:?}",
        second.headers
    );
    assert_eq!(second.body, first.body, "the stored answer");
    assert!(second.header("age").is_some());
    assert_eq!(full_answers(), before, "the app was not asked");

    // Stale at once, with a validator: the gateway asks with
    // If-None-Match, the app answers 304, the client still gets the body.
    curl(gw, "/cached/b?cc=max-age_0", &[]);
    let again = curl(gw, "/cached/b?cc=max-age_0", &[]);
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header("mycel-cache"),
        Some("revalidated"),
        "{:?}",
        again.headers
    );
    assert!(again.body.contains("served"), "{}", again.body);
    assert!(not_modified() >= 1, "the app answered 304");

    // no-store and private responses are never kept.
    for cc in ["no-store", "private,max-age_60"] {
        let path = format!("/cached/c-{}?cc={cc}", cc.len());
        curl(gw, &path, &[]);
        let got = curl(gw, &path, &[]);
        assert_eq!(
            got.header("mycel-cache"),
            Some("miss"),
            "{cc}: {:?}",
            got.headers
        );
    }
    // A client's own conditional request is answered from the cache.
    let got = curl(
        gw,
        "/cached/a?cc=max-age_60",
        &[("if-none-match", "\"v1\"")],
    );
    assert_eq!(got.status, 304, "{:?}", got.headers);
}
