use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::watch;

use super::*;
use crate::config::MapEnv;
use crate::core::directory::{Snapshot, Subscriptions};
use crate::identity::fake::FakeCa;
use crate::identity::{IdentityManager, IdentityMetrics};

fn state(args: &[&str]) -> (AdminState, FakeCa) {
    state_with_env(args, &[])
}

fn state_with_env(args: &[&str], env: &[(&str, &str)]) -> (AdminState, FakeCa) {
    let mut full = vec![
        "mycel-proxy",
        "--workload=catalog",
        "--namespace=shop",
        "--service-account=catalog",
        "--inbound=127.0.0.1:1",
    ];
    full.extend_from_slice(args);
    let mut vars = vec![("MYCEL_TOKEN", "t")];
    vars.extend_from_slice(env);
    let config = Config::from_args(full, &MapEnv::new(vars)).unwrap();
    let mut registry = Registry::default();
    let _ = IdentityMetrics::new(&mut registry);
    let (_tx, rx) = watch::channel(std::sync::Arc::new(Snapshot::default()));
    let ca = FakeCa::new(
        "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
        Duration::from_secs(3600),
    );
    (
        AdminState {
            config: Arc::new(config),
            identity: IdentityState::new(),
            discovery: Discovery::new(rx, Subscriptions::default()),
            status: Arc::new(DiscoveryStatus::default()),
            registry: Arc::new(registry),
        },
        ca,
    )
}

async fn get(state: &AdminState, path: &str) -> (StatusCode, String) {
    let resp = respond(state, &Method::GET, path, None);
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn give_cert(state: &AdminState, ca: &FakeCa) {
    IdentityManager::new(
        ca.clone(),
        state.identity.clone(),
        "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
        None,
        IdentityMetrics::default(),
    )
    .renew()
    .await
    .unwrap();
}

#[tokio::test]
async fn ready_needs_cert_and_first_response() {
    let (s, ca) = state(&["--controller=127.0.0.1:1", "--ca-root=/ca"]);
    assert_eq!(get(&s, "/live").await.0, StatusCode::OK);
    let (code, body) = get(&s, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("certificate") && body.contains("discovery"),
        "{body}"
    );
    give_cert(&s, &ca).await;
    let (code, body) = get(&s, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !body.contains("certificate") && body.contains("discovery"),
        "{body}"
    );
    s.status.acked("n1");
    assert_eq!(get(&s, "/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn static_mode_is_ready_with_cert() {
    let (s, ca) = state(&["--static-config=/s.yaml"]);
    assert_eq!(get(&s, "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    give_cert(&s, &ca).await;
    assert_eq!(get(&s, "/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn expired_certificate_is_not_ready() {
    let (s, ca) = state(&["--static-config=/s.yaml"]);
    give_cert(&s, &ca).await;
    assert_eq!(get(&s, "/ready").await.0, StatusCode::OK);
    // The same certificate, as it is once its time has passed.
    let c = s.identity.cert().unwrap();
    s.identity.set_cert(crate::identity::WorkloadCert {
        spiffe_id: c.spiffe_id.clone(),
        chain: c.chain.clone(),
        certified_key: c.certified_key.clone(),
        serial_hex: c.serial_hex.clone(),
        not_before_unix: c.not_before_unix,
        not_after_unix: unix_now() - 1,
    });
    let (code, body) = get(&s, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn certs_metrics_and_dump() {
    let (s, ca) = state(&["--static-config=/s.yaml"]);
    let (code, body) = get(&s, "/certs").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no workload certificate"));
    give_cert(&s, &ca).await;
    let (code, body) = get(&s, "/certs").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["spiffe_id"], "spiffe://cluster.local/ns/shop/sa/catalog");
    assert!(v["not_after"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        v["not_after_unix"].as_i64().unwrap() - v["not_before_unix"].as_i64().unwrap(),
        3600
    );
    assert_eq!(v["trust_bundle"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(v["trust_bundle"][0]["subject"]
        .as_str()
        .unwrap()
        .contains("fake mycel root"));
    // The same chain and roots as PEM, leaf first.
    let chain = pem::parse_many(v["chain_pem"].as_str().unwrap()).unwrap();
    assert!(!chain.is_empty() && chain.iter().all(|b| b.tag() == "CERTIFICATE"));
    let leaf = s.identity.cert().unwrap();
    assert_eq!(chain[0].contents(), leaf.chain[0].as_ref());
    let roots = pem::parse_many(v["trust_bundle_pem"].as_str().unwrap()).unwrap();
    assert_eq!(roots.len(), s.identity.bundle().roots.len());

    let (code, body) = get(&s, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body.contains("mycel_identity_cert_expiry_timestamp_seconds"),
        "{body}"
    );

    s.discovery.subscriptions().pin("catalog.shop");
    let (code, body) = get(&s, "/config_dump").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["config"]["workload"]["name"], "catalog");
    assert_eq!(v["subscriptions"][0], "catalog.shop");
    assert!(v["discovery"]["connected"].is_boolean());
    assert_eq!(get(&s, "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn app_probes_are_forwarded_only_where_the_injector_put_them() {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = app.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = app.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let probes = format!(r#"{{"/app-health/web/livez":{{"port":{port},"path":"/healthz"}}}}"#);
    let (state, _) = state_with_env(
        &["--static-config=/s.yaml"],
        &[("MYCEL_APP_PROBES", &probes)],
    );
    let call = |path: &'static str, method: Method| {
        let state = &state;
        async move {
            let resp = route(state, &method, path, &http::HeaderMap::new()).await;
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(
        call("/app-health/web/livez", Method::GET).await.0,
        StatusCode::OK
    );
    let (status, body) = call("/app-health/web/readyz", Method::GET).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        call("/app-health/web/livez", Method::POST).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // The dump shows which probes exist, not their headers.
    let (_, dump) = call("/config_dump", Method::GET).await;
    assert!(dump.contains("/app-health/web/livez"), "{dump}");
}

#[test]
fn a_bad_probe_variable_stops_the_start_naming_it() {
    let err = Config::from_args(
        [
            "mycel-proxy",
            "--workload=catalog",
            "--namespace=shop",
            "--service-account=catalog",
            "--inbound=127.0.0.1:1",
            "--static-config=/nonexistent",
        ],
        &MapEnv::new([("MYCEL_APP_PROBES", "{not json")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("MYCEL_APP_PROBES"), "{err}");
}

#[tokio::test]
async fn metrics_are_openmetrics_only_for_a_client_that_asks() {
    let (s, _ca) = state(&["--controller=127.0.0.1:1", "--ca-root=/ca"]);
    let om = respond(
        &s,
        &Method::GET,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(om.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let body = om.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));

    let plain = respond(&s, &Method::GET, "/metrics", None);
    assert!(plain.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = plain.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        body.contains("# TYPE mycel_identity_cert_renewals_total counter"),
        "{body}"
    );
}

#[tokio::test]
async fn config_dump_shows_gateway_certificates_without_their_keys() {
    use crate::core::directory::gateway_certs::{GatewayCertificate, GatewayCertificates};
    use crate::core::server_cert::ServerCert;

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key_pem = key.serialize_pem();
    let served = ServerCert::from_pem(cert.pem().as_bytes(), key_pem.as_bytes()).unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.gateway_certificates.insert(
        "shop-gw.shop".into(),
        Arc::new(GatewayCertificates {
            certificates: vec![GatewayCertificate {
                source: "shop/a-tls".into(),
                cert: served,
            }],
        }),
    );
    let (mut s, _) = state(&["--static-config=/s.yaml"]);
    let (_tx, rx) = watch::channel(Arc::new(snapshot));
    s.discovery = Discovery::new(rx, Subscriptions::default());

    let (code, body) = get(&s, "/config_dump").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = &v["snapshot"]["gateway_certificates"]["shop-gw.shop"]["certificates"][0];
    assert_eq!(shown["source"], "shop/a-tls");
    assert_eq!(shown["names"][0], "a.test");
    assert!(shown["not_after_unix"].as_i64().unwrap() > 0);
    assert_eq!(shown.as_object().unwrap().len(), 3, "{shown}");
    // Not the key, in any form: neither its PEM nor any line of its base64.
    let debug = format!("{:?}", s.discovery.snapshot());
    for dump in [&body, &debug] {
        assert!(!dump.contains("PRIVATE KEY"), "{dump}");
        for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!dump.contains(line), "a line of the key: {line}");
        }
    }
}
