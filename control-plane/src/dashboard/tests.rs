use super::*;
use crate::registry::NackRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn record(id: &str, admin: Option<SocketAddr>) -> ProxyRecord {
    ProxyRecord {
        proxy_id: id.into(),
        workload: id.into(),
        namespace: "shop".into(),
        spiffe_id: format!("spiffe://cluster.local/ns/shop/sa/{id}"),
        mode: "sidecar".into(),
        registered: true,
        ready: Some(true),
        connected_since: now_rfc3339(),
        subscriptions: vec![],
        acked: [("service/a.shop".to_string(), "v1".to_string())].into(),
        last_nack: None,
        leaf_serial: String::new(),
        leaf_chain: Vec::new(),
        admin_addr: admin,
    }
}

/// A fake proxy admin answering `/metrics` with a counter that grows by
/// 10 per scrape; returns its address.
async fn fake_proxy() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0u64;
        // Bounded: the tests scrape a handful of times.
        for _ in 0..20 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            n += 10;
            let body = format!(
                "mycel_requests_total{{direction=\"inbound\",service=\"app:80\",code=\"200\"}} {n}\n\
                 mycel_identity_cert_expiry_timestamp_seconds 99999999999\n"
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn data_scrapes_proxies_and_reports_their_state() {
    let registry = Arc::new(ProxyRegistry::default());
    let addr = fake_proxy().await;
    registry.insert(1, record("catalog", Some(addr)));
    // Nothing listens on port 9 of loopback (discard): a scrape error.
    let mut broken = record("ratings", Some("127.0.0.1:9".parse().unwrap()));
    broken.last_nack = Some(NackRecord {
        nonce: "n".into(),
        error: "bad route".into(),
        at: "2024-01-01T00:00:00Z".into(),
    });
    registry.insert(2, broken);
    registry.insert(3, record("gateway", None));
    let d = Dashboard::new(registry);
    let data = d.data().await;
    let catalog = data
        .report
        .workloads
        .iter()
        .find(|w| w.name == "catalog")
        .unwrap();
    assert_eq!(catalog.stats.requests, 10.0);
    assert_eq!(catalog.stats.success_rate, Some(1.0));
    assert!(catalog.stats.rps > 0.0);
    let p = |id: &str| data.proxies.iter().find(|p| p.proxy_id == id).unwrap();
    assert!(p("catalog").cert_expires_in_secs.unwrap() > 0);
    assert_eq!(p("catalog").ack_state, "ACK");
    assert_eq!(p("catalog").acked_resources, 1);
    assert_eq!(p("catalog").config_version, p("ratings").config_version);
    assert_eq!(p("ratings").ack_state, "NACK");
    assert!(p("ratings")
        .last_nack
        .as_deref()
        .unwrap()
        .contains("bad route"));
    assert!(p("ratings").scrape_error.is_some());
    assert_eq!(p("gateway").scrape_error, None);
    assert_eq!(p("gateway").admin_addr, None);
    // Within MIN_INTERVAL the same report is served without scraping.
    let again = d.data().await;
    assert!(Arc::ptr_eq(&data, &again));
}

#[test]
fn config_versions_differ_with_content() {
    let a: BTreeMap<String, String> = [("k".to_string(), "1".to_string())].into();
    let b: BTreeMap<String, String> = [("k".to_string(), "2".to_string())].into();
    assert_ne!(config_version(&a), config_version(&b));
    assert_eq!(config_version(&a).len(), 8);
}

#[tokio::test]
async fn routes() {
    let d = Dashboard::new(Arc::new(ProxyRegistry::default()));
    let get = Method::GET;
    let page = reply(Some(&d), &get, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("/dashboard/app.js"));
    // Nothing is fetched from elsewhere.
    for asset in [INDEX_HTML, APP_JS, STYLE_CSS] {
        assert!(!asset.contains("http://") || asset.contains("http://www.w3.org/2000/svg"));
        assert!(!asset.contains("https://"));
    }
    assert_eq!(
        reply(Some(&d), &get, "/dashboard/app.js")
            .await
            .content_type,
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        reply(Some(&d), &get, "/dashboard/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reply(Some(&d), &Method::POST, "/dashboard").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let off = reply(None, &get, "/dashboard").await;
    assert_eq!(off.status, StatusCode::NOT_FOUND);
    assert!(off.body.contains("--dashboard"));
    let data = reply(Some(&d), &get, "/dashboard/data").await;
    let v: serde_json::Value = serde_json::from_str(&data.body).unwrap();
    assert!(v["workloads"].is_array() && v["proxies"].is_array() && v["edges"].is_array());
    assert!(owns("/dashboard") && owns("/dashboard/data") && !owns("/dashboards"));
}
