//! Mesh mTLS handshakes over in-memory pipes: who is accepted, who is not.

use std::sync::Arc;
use std::time::Duration;

use crate::identity::{spiffe, ProxyIdentity, TestCa};
use mycel_sidecar::core::tls::{self, PeerVerifyError};
use mycel_sidecar::identity::IdentityState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LIMIT: Duration = Duration::from_secs(10);

struct Outcome {
    client: std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
    server: std::io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
}

async fn handshake(
    server: &Arc<IdentityState>,
    client: &Arc<IdentityState>,
    expect: &str,
) -> Outcome {
    mycel_test_support::init_tracing();
    let acceptor = TlsAcceptor::from(tls::server_config(server.clone()).unwrap());
    let connector =
        TlsConnector::from(tls::client_config(client.clone(), expect.parse().unwrap()).unwrap());
    connect(&acceptor, &connector).await
}

/// Both ends of one handshake over a fresh in-memory pipe.
async fn connect(acceptor: &TlsAcceptor, connector: &TlsConnector) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let addr = "127.0.0.1:15006".parse().unwrap();
    let (client, server) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            connector.connect(tls::server_name_for(addr), c),
            acceptor.accept(s)
        )
    })
    .await
    .expect("handshake finished");
    Outcome { client, server }
}

#[tokio::test]
async fn right_identity_is_accepted_both_ways() {
    let ca = TestCa::new("mesh");
    let server = ca.identity(&spiffe("catalog"));
    let client = ca.identity(&spiffe("frontend"));
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    let mut client = out.client.unwrap();
    let mut server = out.server.unwrap();
    assert_eq!(
        tls::peer_identity(server.get_ref().1).unwrap().to_string(),
        spiffe("frontend")
    );
    assert_eq!(
        tls::peer_identity(client.get_ref().1).unwrap().to_string(),
        spiffe("catalog")
    );
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(tls::ALPN_H2));
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn wrong_identity_is_refused_by_the_client() {
    let ca = TestCa::new("mesh");
    let server = ca.identity(&spiffe("reviews"));
    let client = ca.identity(&spiffe("frontend"));
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    let err = out.client.expect_err("client must refuse");
    match tls::rejection(&err) {
        Some(e @ PeerVerifyError::IdentityMismatch { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "identity mismatch: expected {}, got {}",
                spiffe("catalog"),
                spiffe("reviews")
            )
        ),
        other => panic!("want identity mismatch, got {other:?} ({err})"),
    }
}

#[tokio::test]
async fn server_from_another_ca_is_refused() {
    let ca = TestCa::new("mesh");
    let other = TestCa::new("other");
    let server = other.identity(&spiffe("catalog"));
    // The server trusts our CA so only the client's check can fail.
    server.set_bundle(mycel_sidecar::identity::TrustBundle::new(vec![
        ca.root_der()
    ]));
    let client = ca.identity(&spiffe("frontend"));
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    let err = out.client.expect_err("client must refuse");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let ca = TestCa::new("mesh");
    let other = TestCa::new("other");
    let server = ca.identity(&spiffe("catalog"));
    let client = other.identity(&spiffe("frontend"));
    client.set_bundle(mycel_sidecar::identity::TrustBundle::new(vec![
        ca.root_der()
    ]));
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    let err = out.server.expect_err("server must refuse");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = TestCa::new("mesh");
    let server = ca.identity(&spiffe("catalog"));
    let client = ca.trusting();
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    assert!(
        out.server.is_err(),
        "server must require a client certificate"
    );
}

#[tokio::test]
async fn server_without_certificate_fails_the_handshake() {
    let ca = TestCa::new("mesh");
    let server = ca.trusting();
    let client = ca.identity(&spiffe("frontend"));
    let out = handshake(&server, &client, &spiffe("catalog")).await;
    assert!(out.server.is_err());
    assert!(out.client.is_err());
}

#[tokio::test]
async fn plaintext_gets_no_application_data() {
    let ca = TestCa::new("mesh");
    let acceptor = TlsAcceptor::from(tls::server_config(ca.identity(&spiffe("catalog"))).unwrap());
    let (mut c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move { acceptor.accept(s).await.map(|_| ()) });
    c.write_all(b"GET / HTTP/1.1\r\nHost: catalog\r\n\r\n")
        .await
        .unwrap();
    let result = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(result.is_err(), "plaintext must not complete a handshake");
    // Whatever the server wrote back is a TLS alert, never HTTP.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP"), "{buf:?}");
}

#[tokio::test]
async fn certificate_and_bundle_swaps_apply_to_new_handshakes_only() {
    let ca = TestCa::new("mesh");
    let server = ca.identity(&spiffe("catalog"));
    let client = ca.identity(&spiffe("frontend"));
    let first = handshake(&server, &client, &spiffe("catalog")).await;
    let mut old_client = first.client.unwrap();
    let mut old_server = first.server.unwrap();
    let old_leaf = old_client.get_ref().1.peer_certificates().unwrap()[0].clone();

    server.set_cert(ca.workload_cert(&spiffe("catalog")));
    let second = handshake(&server, &client, &spiffe("catalog")).await;
    let new_client = second.client.unwrap();
    assert_ne!(
        new_client.get_ref().1.peer_certificates().unwrap()[0],
        old_leaf
    );

    // The connection made before the swap still carries data.
    old_client.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    old_server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");

    // A new bundle without our root: new handshakes fail at once.
    let other = TestCa::new("other");
    client.set_bundle(mycel_sidecar::identity::TrustBundle::new(vec![
        other.root_der()
    ]));
    assert!(handshake(&server, &client, &spiffe("catalog"))
        .await
        .client
        .is_err());
}

/// One full exchange over a fresh pipe with long-lived configs (as the
/// proxy keeps them), so any session state of the first handshake is there
/// for the second to resume.
async fn exchange(
    acceptor: &TlsAcceptor,
    connector: &TlsConnector,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
)> {
    let Outcome { client, server } = connect(acceptor, connector).await;
    let (mut client, mut server) = (client?, server?);
    // A round trip, so the client has read any session ticket sent after
    // the handshake.
    client.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await?;
    server.write_all(b"pong").await?;
    client.read_exact(&mut buf).await?;
    Ok((client, server))
}

#[tokio::test]
async fn handshake_after_trust_change_is_fully_verified_not_resumed() {
    let ca = TestCa::new("mesh");
    let server = ca.identity(&spiffe("catalog"));
    let client = ca.identity(&spiffe("frontend"));
    let acceptor = TlsAcceptor::from(tls::server_config(server.clone()).unwrap());
    let connector = TlsConnector::from(
        tls::client_config(client.clone(), spiffe("catalog").parse().unwrap()).unwrap(),
    );
    let (first_client, _first_server) = exchange(&acceptor, &connector).await.unwrap();
    drop(first_client);

    // The server stops trusting the client's CA. A resumed session would
    // skip the client certificate check and let it in anyway.
    let other = TestCa::new("other");
    server.set_bundle(mycel_sidecar::identity::TrustBundle::new(vec![
        other.root_der()
    ]));
    let second = exchange(&acceptor, &connector).await;
    assert!(
        second.is_err(),
        "second handshake was accepted after the trust change (resumed?)"
    );
}
