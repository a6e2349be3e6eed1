//! `mycel-demo orders` over a real connection: an order placed with the
//! body curl `-d` sends (no JSON content type), listed for its user, and a
//! chunked body past the cap refused with 413 (no length to check first).

use std::net::SocketAddr;
use std::time::Duration;

use mycel_demo::config::{ServiceConfig, ServiceKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut out))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    out
}

#[tokio::test]
async fn orders_over_http() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServiceConfig::new(ServiceKind::Orders, addr);
    tokio::spawn(mycel_demo::run_with_listener(
        config,
        listener,
        std::future::pending(),
    ));

    let body = r#"{"product":"p3","quantity":2}"#;
    let post = format!(
        "POST /orders HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nx-user-id: demo-user\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(addr, post.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(r#""user":"demo-user""#), "{answer}");

    let list = exchange(
        addr,
        b"GET /orders HTTP/1.1\r\nHost: orders\r\nConnection: close\r\nx-user-id: demo-user\r\n\r\n",
    )
    .await;
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.contains(r#""product":"p3","quantity":2"#), "{list}");

    // 20 KiB in chunks of 1 KiB, no Content-Length.
    let mut chunked =
        b"POST /orders HTTP/1.1\r\nHost: orders\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(addr, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
