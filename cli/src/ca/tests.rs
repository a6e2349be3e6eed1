use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::render::{table, verdict, Status};
use super::*;

const OVERLAP: &str = r#"{
  "phase": "overlap",
  "phase_since": "2026-01-01T00:00:00Z",
  "overlap_secs": 60,
  "overlap_ends": "2026-01-01T00:01:00Z",
  "stuck": null,
  "roots": [
    {"fingerprint": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "subject": "CN=new", "not_after": "2036-01-01T00:00:00Z", "role": "current"},
    {"fingerprint": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "subject": "CN=old", "not_after": "2035-01-01T00:00:00Z", "role": "previous"}
  ],
  "proxies": [
    {"proxy_id": "p1", "workload": "ratings", "namespace": "shop", "spiffe_id": "spiffe://cluster.local/ns/shop/sa/ratings", "root": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "on_current_root": true, "bundle_acked": true},
    {"proxy_id": "p2", "workload": "", "namespace": "shop", "spiffe_id": "spiffe://cluster.local/ns/shop/sa/frontend", "root": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "on_current_root": false, "bundle_acked": false}
  ],
  "proxies_on_old_root": 1,
  "proxies_not_acked": 1
}"#;

fn overlap() -> Status {
    serde_json::from_str(OVERLAP).unwrap()
}

#[test]
fn table_is_aligned_and_names_each_proxys_root() {
    let text = table(&overlap());
    let expected = "\
PHASE  overlap (since 2026-01-01T00:00:00Z)
OVERLAP ENDS  2026-01-01T00:01:00Z

ROLE      FINGERPRINT       NOT AFTER             SUBJECT
current   aaaaaaaaaaaaaaaa  2036-01-01T00:00:00Z  CN=new
previous  bbbbbbbbbbbbbbbb  2035-01-01T00:00:00Z  CN=old

NAMESPACE  WORKLOAD  SPIFFE ID                                   LEAF ROOT                    BUNDLE
shop       ratings   spiffe://cluster.local/ns/shop/sa/ratings   current (aaaaaaaaaaaaaaaa)   acked
shop       p2        spiffe://cluster.local/ns/shop/sa/frontend  previous (bbbbbbbbbbbbbbbb)  pending

1 of 2 proxies on an old root; 1 have not acknowledged the current bundle
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn verdict_table() {
    let mut s = overlap();
    assert_eq!(verdict(&s), None, "in progress is not a failure");
    s.stuck =
        Some("1 proxies still hold leaves of the old root 40s after the overlap ended".into());
    let why = verdict(&s).unwrap();
    assert!(why.contains("stuck in phase overlap"), "{why}");
    s.proxies.clear();
    s.stuck = None;
    s.phase = "stable".into();
    assert!(table(&s).contains("no proxies connected"));
}

/// A one-shot admin server answering `body` with `status`.
async fn serve_once(status: u16, body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
    });
    addr
}

fn args(addr: SocketAddr) -> StatusArgs {
    StatusArgs {
        controller_admin: addr,
        timeout: Duration::from_secs(5),
        output: Format::Json,
    }
}

#[tokio::test]
async fn status_exit_codes() {
    let ok = serve_once(200, OVERLAP).await;
    status(args(ok)).await.unwrap();

    let stuck: &'static str = Box::leak(
        OVERLAP
            .replace(
                "\"stuck\": null",
                "\"stuck\": \"1 proxies still hold leaves of the old root\"",
            )
            .into_boxed_str(),
    );
    let addr = serve_once(200, stuck).await;
    let err = status(args(addr)).await.unwrap_err().to_string();
    assert!(err.contains("rotation stuck in phase overlap"), "{err}");

    let addr = serve_once(404, "no CA rotation here").await;
    let err = status(args(addr)).await.unwrap_err().to_string();
    assert!(err.contains("answered 404"), "{err}");

    // Nobody listening: an error naming the address.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let err = format!("{:#}", status(args(addr)).await.unwrap_err());
    assert!(err.contains(&addr.to_string()), "{err}");
}

/// With `--ca-secret` the table names the Secret and the other replicas,
/// and a Secret whose CA the controller refuses makes `ca status` fail.
#[test]
fn a_refused_ca_secret_is_shown_and_fails_the_status() {
    let mut doc: serde_json::Value = serde_json::from_str(OVERLAP).unwrap();
    doc["secret"] = serde_json::json!({
        "name": "mycel-system/mycel-ca",
        "replica": "0a1b2c3d",
        "error": "the CA in Secret mycel-system/mycel-ca is not usable: issuer certificate tls.crt is not signed by root certificate ca.crt; the CA in use (root aaaa) keeps signing",
        "waiting": "1 proxies hold leaves of the old root",
        "replicas": [{"id": "99887766", "phase": "overlap", "done": true, "reported": "2026-01-01T00:00:30Z"}],
    });
    let s: Status = serde_json::from_value(doc).unwrap();
    let text = table(&s);
    for want in [
        "SECRET  mycel-system/mycel-ca (this replica 0a1b2c3d)\n",
        "REFUSED  the CA in Secret mycel-system/mycel-ca is not usable: issuer certificate tls.crt is not signed",
        "WAITING  1 proxies hold leaves of the old root\n",
        "REPLICA  99887766 overlap done (reported 2026-01-01T00:00:30Z)\n",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let why = verdict(&s).unwrap();
    assert!(
        why.starts_with("the CA Secret is not followed: the CA in Secret"),
        "{why}"
    );
    // An older controller's document has no secret section.
    assert_eq!(overlap().secret, None);
}
