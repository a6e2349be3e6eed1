use std::time::Duration;

use mycel_test_support::net::closed_within;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use super::*;

fn authority(dir: &std::path::Path) -> Arc<Authority> {
    Arc::new(Authority::load_or_generate(dir, "cluster.local", Duration::from_secs(3600)).unwrap())
}

fn serial(certs: &ServingCerts) -> Vec<u8> {
    certs.current().cert[0].to_vec()
}

#[tokio::test(start_paused = true)]
async fn serving_cert_is_renewed_at_seventy_percent_of_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let ttl = Duration::from_secs(1000);
    let first = ca.serving_cert_for(ttl).unwrap();
    let certs = ServingCerts::new(&first).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(renew_serving_cert(
        ca.clone(),
        certs.clone(),
        first.not_after,
        ttl,
        metrics.clone(),
        stop,
    ));
    let original = serial(&certs);
    tokio::time::sleep(Duration::from_secs(650)).await;
    assert_eq!(serial(&certs), original, "renewed too early");
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_ne!(serial(&certs), original, "not renewed at 70%");
    assert!(metrics
        .encode()
        .contains("mycel_controller_serving_cert_expiry_timestamp_seconds"));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn renewal_delay_is_seventy_percent_of_what_is_left() {
    let now = time::OffsetDateTime::now_utc();
    let d = renew_after(now + time::Duration::seconds(100));
    assert!((69..=70).contains(&d.as_secs()), "{d:?}");
    assert_eq!(
        renew_after(now - time::Duration::seconds(5)),
        Duration::ZERO
    );
}

async fn listen(limits: Limits) -> (std::net::SocketAddr, ReceiverStream<io::Result<Conn>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let certs = ServingCerts::new(&ca.serving_cert().unwrap()).unwrap();
    let tls = server_config(certs, &ca.trust_bundle_der()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = watch::channel(false);
    let stream = incoming(
        listener,
        TlsAcceptor::from(tls),
        &limits,
        Arc::new(Metrics::new()),
        rx,
    );
    // Keep the shutdown sender alive for the test's length.
    std::mem::forget(_tx);
    (addr, stream)
}

#[tokio::test]
async fn half_handshake_is_closed_after_the_timeout() {
    let (addr, _incoming) = listen(Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The first bytes of a TLS record carrying a ClientHello, then silence.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let (addr, _incoming) = listen(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Let the accept loop take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    // A slot frees when a connection ends.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(!closed_within(&mut fourth, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn completed_handshakes_reach_the_server() {
    let (addr, mut incoming) = listen(Limits::default()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A client that trusts anything is enough to finish the handshake here;
    // what is checked is that the accepted stream is handed on.
    let config = mycel_test_support::tls::accept_any_client(None, &[b"h2"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let _client = connector.connect(name, tcp).await.unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(conn.connect_info().get_ref().remote_addr().is_some());
}

#[tokio::test]
async fn issuer_is_rotated_when_due_and_the_gauge_follows() {
    let dir = tempfile::tempdir().unwrap();
    // A 2 s issuer is due with a quarter of its life left: ~1.5 s from now.
    let ca = Arc::new(
        Authority::load_or_generate_with(
            dir.path(),
            "cluster.local",
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let first = ca.issuer_der();
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(rotate_issuer(ca.clone(), metrics.clone(), stop));
    let gauge = |m: &Metrics| {
        m.encode()
            .lines()
            .find(|l| l.starts_with("mycel_controller_issuer_cert_expiry_timestamp_seconds "))
            .map(str::to_string)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = gauge(&metrics);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ca.issuer_der() == first && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(ca.issuer_der(), first, "issuer not rotated");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(gauge(&metrics), before, "gauge not updated");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// a_retired_roots_client_cannot_resume_a_session: a resumed TLS session
/// skips the client-certificate check, so the gRPC port keeps no sessions
/// and issues no tickets; every connection proves its certificate against
/// the roots of the moment.
#[test]
fn the_grpc_port_offers_no_session_resumption() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let certs =
        ServingCerts::new(&ca.serving_cert_for(Duration::from_secs(3600)).unwrap()).unwrap();
    let config = server_config(certs, &ca.trust_bundle_der()).unwrap();
    assert_eq!(config.send_tls13_tickets, 0);
    assert!(!config
        .session_storage
        .put(b"id".to_vec(), b"session".to_vec()));
    assert!(config.session_storage.get(b"id").is_none());
}
