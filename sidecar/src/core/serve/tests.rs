use std::sync::atomic::AtomicUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use mycel_api::headers::PROXY_ERROR;

use http::HeaderValue;

use crate::core::http::{empty, text};

fn labels() -> ListenerLabels {
    ListenerLabels { listener: "test" }
}

fn ok() -> Response<Body> {
    text(StatusCode::OK, "ok")
}

#[test]
fn header_list_bytes_counts_like_http2() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("12345"));
    h.append("x-a", HeaderValue::from_static("1"));
    assert_eq!(header_list_bytes(&h), (3 + 5 + 32) + (3 + 1 + 32));
    // The mesh port takes more than any first hop lets through.
    for max in [1024, 64 * 1024, 16 * 1024 * 1024] {
        assert!(mesh_header_list_bytes(max) > max);
        assert!(read_buffer_bytes(max) > max);
    }
}

#[tokio::test]
async fn oversized_headers_get_431_at_the_first_hop_only() {
    let limits = Limits {
        max_header_bytes: 1024,
        ..Limits::default()
    };
    let metrics = ConnMetrics::default();
    let req = || {
        Request::builder()
            .header("x-big", "b".repeat(2000))
            .body(())
            .unwrap()
    };
    // The mesh port leaves the decision to the first hop.
    let cases = [
        (
            HttpMode::FirstHop,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (HttpMode::Mesh, StatusCode::OK),
    ];
    for (mode, want) in cases {
        let res = guarded(&limits, mode, &metrics, &labels(), req(), |_| async {
            ok()
        })
        .await;
        assert_eq!(res.status(), want, "{mode:?}");
        if mode == HttpMode::FirstHop {
            assert_eq!(res.headers()[PROXY_ERROR], "header-too-large");
        }
    }
    assert_eq!(metrics.header_too_large.get_or_create(&labels()).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_response_headers_in_time_is_504_timeout() {
    let limits = Limits {
        request_timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let metrics = ConnMetrics::default();
    let slow = |_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        ok()
    };
    let cases = [
        (limits.request_timeout, StatusCode::GATEWAY_TIMEOUT),
        (None, StatusCode::OK),
    ];
    for (timeout, want) in cases {
        let limits = Limits {
            request_timeout: timeout,
            ..limits.clone()
        };
        let req = Request::new(());
        let res = guarded(&limits, HttpMode::FirstHop, &metrics, &labels(), req, slow).await;
        assert_eq!(res.status(), want, "{timeout:?}");
        if want == StatusCode::GATEWAY_TIMEOUT {
            assert_eq!(res.headers()[PROXY_ERROR], "timeout");
        }
    }
    assert_eq!(metrics.timeouts.get_or_create(&labels()).get(), 1);

    let grpc = Request::builder()
        .header("content-type", "application/grpc+proto")
        .body(())
        .unwrap();
    let res = guarded(&limits, HttpMode::FirstHop, &metrics, &labels(), grpc, slow).await;
    assert_eq!(res.status(), StatusCode::OK, "gRPC keeps its own deadline");
}

#[test]
fn activity_is_idle_only_without_requests_in_flight() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Activity::new();
        let idle = Duration::from_secs(5);
        let req = a.begin();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!a.is_idle(idle), "a slow request is not idleness");
        drop(req);
        assert!(!a.is_idle(idle), "the clock starts when the request ends");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(a.is_idle(idle));
    });
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn connection_limit_makes_new_connections_wait() {
    let (l, addr) = listener().await;
    let server = Server::standalone(Limits {
        max_connections: 1,
        ..Limits::default()
    });
    let metrics = server.metrics.clone();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(server.serve("test", l, move |mut tcp, _, _| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            // Holds its slot until the client closes.
            let mut buf = [0u8; 1];
            let _ = tcp.read(&mut buf).await;
        }
    }));
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(served.load(Ordering::SeqCst), 1, "second waits for a slot");
    assert!(metrics.limit_hits.get_or_create(&labels_of("test")).get() >= 1);
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), async {
        while served.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("second served once the first closed");
}

fn labels_of(listener: &'static str) -> ListenerLabels {
    ListenerLabels { listener }
}

/// A listener and a server that drains when the returned [`Shutdown`] says.
async fn draining() -> (TcpListener, SocketAddr, Shutdown, Server) {
    let (l, addr) = listener().await;
    let shutdown = Shutdown::default();
    let server = Server::new(
        Limits::default(),
        ConnMetrics::default(),
        shutdown.drain_handle(),
    );
    (l, addr, shutdown, server)
}

#[tokio::test]
async fn drain_refuses_new_connections_and_waits_for_open_ones() {
    let (l, addr, shutdown, server) = draining().await;
    let loop_done = tokio::spawn(server.serve("test", l, |mut tcp, _, _| async move {
        // A request in flight: answers after 300 ms.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tcp.write_all(b"done").await;
    }));
    let mut client = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drained = tokio::spawn(shutdown.drain(Duration::from_secs(5)));
    loop_done.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    let mut buf = Vec::new();
    client.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"done");
    assert!(drained.await.unwrap(), "drained within the grace");
}

#[tokio::test]
async fn drain_gives_up_after_the_grace() {
    let (l, addr, shutdown, server) = draining().await;
    tokio::spawn(server.serve("test", l, |mut tcp, _, _| async move {
        let mut buf = [0u8; 1];
        let _ = tcp.read(&mut buf).await;
    }));
    let _stuck = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!shutdown.drain(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn http_connections_close_on_drain_after_their_request() {
    let (l, addr, shutdown, server) = draining().await;
    tokio::spawn(server.serve("test", l, |tcp, _, conn| async move {
        conn.serve_http(tcp, HttpMode::FirstHop, |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut res = Response::new(empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        })
        .await;
    }));
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drained = tokio::spawn(shutdown.drain(Duration::from_secs(5)));
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut buf))
        .await
        .expect("closed after the response")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 204"));
    assert!(drained.await.unwrap());
}
