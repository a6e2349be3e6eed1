//! A client that trickles its request headers, or connects and says
//! nothing, is cut off after the header read timeout, and every other
//! caller is served meanwhile. Found by attacking the `--health` listener
//! (reviews' readiness port in Kubernetes), which had no timeout at all.

use std::time::{Duration, Instant};

use mycel_demo::config::{ServiceConfig, ServiceKind};
use mycel_demo::http::HEADER_READ_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the server closes; how long that took.
async fn closed_within(mut conn: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept a stalled connection open past {limit:?}"),
        }
    }
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut out))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    out
}

#[tokio::test]
async fn slow_header_clients_are_cut_off_and_others_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServiceConfig::new(ServiceKind::Ratings, addr);
    tokio::spawn(mycel_demo::run_with_listener(
        config,
        listener,
        std::future::pending(),
    ));

    // Half a request, then nothing more.
    let mut trickle = TcpStream::connect(addr).await.expect("connect");
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // A connection that never says anything.
    let silent = TcpStream::connect(addr).await.expect("connect");

    assert!(
        healthz(addr).await.starts_with("HTTP/1.1 200"),
        "others are served meanwhile"
    );

    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    let (a, b) = tokio::join!(closed_within(trickle, limit), closed_within(silent, limit));
    assert!(
        a >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "not cut off early: {a:?}"
    );
    eprintln!("trickling client cut off after {a:?}, silent one after {b:?}");
    assert!(
        healthz(addr).await.starts_with("HTTP/1.1 200"),
        "still serving"
    );
}
