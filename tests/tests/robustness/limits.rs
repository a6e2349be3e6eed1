//! Connection limits, timeouts and drain (issue 7, items 5, 6 and 9): slow,
//! partial, idle and oversized clients are cut off without hurting anyone
//! else, and a stopping sidecar lets its requests finish.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_tests::http::Reply;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::probe::{closed_within, rss_anon_kib, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const SERVICE_YAML: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  selector:\n    app: api\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n";

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The app behind the server sidecar:
/// `/sleep/<ms>` answers after that long, `/bytes/<n>` streams n bytes,
/// `/header-len` tells how long its `x-big` header was,
/// `/big-response-headers` answers with about 200 KiB of headers, anything
/// else `ok`.
async fn app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(app_answer(&req).await)
                    },
                );
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Headers up to 256 KiB are fine for this app.
                b.http1().max_buf_size(512 * 1024);
                b.http2().max_header_list_size(512 * 1024);
                let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
}

async fn app_answer(req: &http::Request<hyper::body::Incoming>) -> http::Response<AppBody> {
    let path = req.uri().path();
    let text = |s: String| {
        http::Response::new(
            http_body_util::Full::new(Bytes::from(s))
                .map_err(|e| match e {})
                .boxed(),
        )
    };
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return text("slept".into());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n.div_ceil(chunk.len());
        let stream = futures::stream::iter(0..chunks).map(move |i| {
            let len = chunk.len().min(n - i * chunk.len());
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        });
        return http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
    }
    if path == "/big-response-headers" {
        let mut res = text("big".into());
        let value = http::HeaderValue::from_str(&"r".repeat(50 * 1024)).unwrap();
        for i in 0..4 {
            let name = http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap();
            res.headers_mut().insert(name, value.clone());
        }
        return res;
    }
    if path == "/header-len" {
        let len = req.headers().get("x-big").map_or(0, |v| v.len());
        return text(format!("x-big={len}"));
    }
    text("ok".into())
}

/// A mesh with service `api` (the app above behind a sidecar) and a client
/// sidecar started with `client_flags`.
struct Pair {
    mesh: Mesh,
    server: Sidecar,
    server_spec: SidecarSpec,
    client: Sidecar,
}

async fn pair(client_flags: &[&str]) -> Pair {
    let mesh = Mesh::start(SERVICE_YAML).await;
    let server_spec = SidecarSpec::new("api", "api")
        .label("app", "api")
        .app_port(&format!("http:{APP_PORT}"));
    app(server_spec.app_addr()).await;
    let server = mesh.sidecar(server_spec.clone()).await;
    mesh.wait_registered("api").await;
    let mut client_spec = SidecarSpec::new("client", "frontend");
    for f in client_flags {
        client_spec = client_spec.arg(f);
    }
    let client = mesh.sidecar(client_spec).await;
    Pair {
        mesh,
        server,
        server_spec,
        client,
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    mycel_tests::http::request(addr, "api.shop", path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// Downloads `path` on its own connection; the number of body bytes.
async fn download(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, usize)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "api.shop")
        .body(Empty::<Bytes>::new())?;
    let res = send.send_request(req).await?;
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len();
        }
    }
    Ok((status, n))
}

/// Waits until the peer closes `tcp` (EOF or reset); false if it did not
/// within `limit`. Whatever the peer sends first (e.g. a 408) is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_does_not_break_other_callers() {
    let p = pair(&[]).await;
    let outbound = p.client.outbound();
    const BIG: usize = 40 * 1024 * 1024;

    // A large download and slow requests share the pooled mesh connection.
    let big = tokio::spawn(download(outbound, "/bytes/41943040"));
    let slow: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { get(outbound, "/sleep/1500", &[]).await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let huge = "h".repeat(100 * 1024);
    let refused = get(outbound, "/", &[("x-big", &huge)]).await;
    assert_eq!(refused.status, 431, "{}", refused.body);
    assert_eq!(
        refused
            .headers
            .get(mycel_api::headers::PROXY_ERROR)
            .unwrap(),
        "header-too-large"
    );

    for s in slow {
        assert_eq!(s.await.unwrap(), 200, "{}", p.client.proc.log());
    }
    let (status, n) = big.await.unwrap().unwrap();
    assert_eq!((status, n), (200, BIG), "{}", p.client.proc.log());
    // And the connection still serves.
    assert_eq!(get(outbound, "/", &[]).await.status, 200);

    // The gateway is a first hop too.
    let gateway = p
        .mesh
        .sidecar(SidecarSpec::new("gateway", "gateway").route("/=api.shop:80"))
        .await;
    let refused = get(gateway.listen(), "/", &[("x-big", &huge)]).await;
    assert_eq!(refused.status, 431, "{}", refused.body);
    assert_eq!(
        refused
            .headers
            .get(mycel_api::headers::PROXY_ERROR)
            .unwrap(),
        "header-too-large"
    );
    assert_eq!(get(gateway.listen(), "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_between_32_and_64_kib_passes() {
    let p = pair(&[]).await;
    let value = "v".repeat(48 * 1024);
    let direct = get(
        p.server_spec.app_addr(),
        "/header-len",
        &[("x-big", &value)],
    )
    .await;
    assert_eq!(direct.body, format!("x-big={}", value.len()));
    let meshed = get(p.client.outbound(), "/header-len", &[("x-big", &value)]).await;
    assert_eq!(meshed.status, 200, "{}", meshed.body);
    assert_eq!(meshed.body, format!("x-big={}", value.len()));
    drop(p.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_client_is_disconnected() {
    let p = pair(&["--header-read-timeout", "2s"]).await;
    let outbound = p.client.outbound();
    let mut slow = TcpStream::connect(outbound).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: api.shop\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    let mut cut = false;
    for b in head.iter().take(30) {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        // Meanwhile a normal client is served.
        assert_eq!(get(outbound, "/", &[]).await.status, 200);
        if closed_within(&mut slow, Duration::from_secs(1)).await {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a client sending a header byte per second was never cut off"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "cut too early: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "cut too late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_request_flood_does_not_starve_others() {
    let p = pair(&["--max-connections", "200", "--header-read-timeout", "1s"]).await;
    let outbound = p.client.outbound();
    let pid = p.client.proc.pid().unwrap();
    assert_eq!(get(outbound, "/", &[]).await.status, 200);
    let rss_before = rss_kib(pid);

    // 2,000 connections that each send half a request head and stall.
    let partial = b"GET / HTTP/1.1\r\nHost: api.shop\r\nX-Partial: ";
    let opened = futures::stream::iter(0..2000)
        .map(|_| async move {
            let mut tcp = timeout(Duration::from_secs(2), TcpStream::connect(outbound))
                .await
                .ok()?
                .ok()?;
            tcp.write_all(partial).await.ok()?;
            Some(tcp)
        })
        .buffer_unordered(200)
        .filter_map(|c| async move { c })
        .collect::<Vec<_>>()
        .await;
    assert!(
        opened.len() >= 200,
        "only {} flood connections opened",
        opened.len()
    );

    // The proxy cuts every one of them (the limit makes the rest wait
    // their turn in the backlog; each is cut after the header timeout).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut held = 0;
    for mut tcp in opened {
        let left = deadline.saturating_duration_since(Instant::now());
        if !closed_within(&mut tcp, left).await {
            held += 1;
        }
    }
    assert_eq!(held, 0, "flood connections still held after 90s");

    // Normal requests are served again, and memory stayed bounded.
    let mut last = String::new();
    let served = Instant::now() + Duration::from_secs(20);
    while Instant::now() < served {
        match mycel_tests::http::request(outbound, "api.shop", "/", &[]).await {
            Ok(r) if r.status == 200 => break,
            Ok(r) => last = format!("{} {}", r.status, r.body),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        Instant::now() < served,
        "not served after the flood: {last}"
    );
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 150 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let metrics = p.client.metrics().await;
    assert!(
        metrics.contains("mycel_proxy_connection_limit_hits_total{listener=\"outbound\"}"),
        "{metrics}"
    );
    let warnings = p
        .client
        .proc
        .log()
        .matches("connection limit reached")
        .count();
    assert_eq!(warnings, 1, "the limit is logged once");
}

/// Attack: a burst of 1,000 kept-alive connections that each make one
/// request and then close. The memory they took goes back to the system
/// within `--memory-release-interval`; before it, glibc's allocator kept
/// about 40 MB of it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_kept_alive_connections_leaves_no_memory_behind() {
    const BURST: usize = 1000;
    const MIB: u64 = 1024;
    let p = pair(&["--memory-release-interval", "1s"]).await;
    let outbound = p.client.outbound();
    let pid = p.client.proc.pid().unwrap();
    assert_eq!(get(outbound, "/", &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rss_anon_kib(pid);

    let request = b"GET / HTTP/1.1\r\nHost: api.shop\r\n\r\n";
    let conns = futures::stream::iter(0..BURST)
        .map(|_| async move {
            let mut tcp = TcpStream::connect(outbound).await.ok()?;
            tcp.write_all(request).await.ok()?;
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = timeout(Duration::from_secs(10), tcp.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    return None;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got.starts_with(b"HTTP/1.1 200").then_some(tcp)
        })
        .buffer_unordered(100)
        .filter_map(|c| async move { c })
        .collect::<Vec<_>>()
        .await;
    assert_eq!(conns.len(), BURST, "every connection got its answer");
    let during = rss_anon_kib(pid);
    // The burst did take memory, or this test could not tell.
    assert!(
        during > before + 10 * MIB,
        "the burst took {} KiB",
        during.saturating_sub(before)
    );
    drop(conns);

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = rss_anon_kib(pid);
    while after > before + 8 * MIB && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_anon_kib(pid);
    }
    assert!(
        after <= before + 8 * MIB,
        "anonymous memory {before} KiB before the burst, {during} KiB during, still {after} KiB 15 s after it closed"
    );
    assert_eq!(get(outbound, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let p = pair(&["--idle-timeout", "1s"]).await;
    let outbound = p.client.outbound();

    // HTTP/1.1 keep-alive after one request.
    let mut tcp = TcpStream::connect(outbound).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: api.shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut tcp, Duration::from_secs(8)).await,
        "idle HTTP/1.1 connection kept"
    );

    // An h2c connection that never sends a request.
    let mut tcp = TcpStream::connect(outbound).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(8)).await,
        "idle h2c connection kept"
    );

    // A connection that sends nothing at all.
    let mut tcp = TcpStream::connect(outbound).await.unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(15)).await,
        "silent connection kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_app_gets_504_with_timeout_error() {
    let p = pair(&["--request-timeout", "1s"]).await;
    let r = get(p.client.outbound(), "/sleep/3000", &[]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        r.headers.get(mycel_api::headers::PROXY_ERROR).unwrap(),
        "timeout"
    );
    // A long body after prompt headers is not cut.
    let (status, n) = download(p.client.outbound(), "/bytes/1048576")
        .await
        .unwrap();
    assert_eq!((status, n), (200, 1024 * 1024));
}

/// SIGTERMs `victim` while a 1 s request runs through `client`; the request
/// completes, the victim exits within grace + margin.
async fn in_flight_survives_sigterm(p: &mut Pair, client_side: bool) {
    let outbound = p.client.outbound();
    let req = tokio::spawn(async move { get(outbound, "/sleep/1000", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = if client_side {
        &mut p.client
    } else {
        &mut p.server
    };
    let stopped = Instant::now();
    victim.proc.signal(nix::sys::signal::Signal::SIGTERM as i32);
    if client_side {
        // New connections are refused once the drain has begun.
        let mut refused = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if TcpStream::connect(outbound).await.is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "outbound still accepting after SIGTERM");
    }
    let r = req.await.unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, victim.proc.log());
    assert_eq!(r.body, "slept");
    let status = victim.proc.wait(Duration::from_secs(10)).await;
    assert!(status.is_some(), "did not exit within grace + margin");
    assert!(stopped.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_in_flight_at_sigterm_completes() {
    let mut p = pair(&[]).await;
    in_flight_survives_sigterm(&mut p, true).await;
    let mut p = pair(&[]).await;
    in_flight_survives_sigterm(&mut p, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_unprocessed_requests_are_retried() {
    let mut p = pair(&[]).await;
    let outbound = p.client.outbound();
    assert_eq!(get(outbound, "/", &[]).await.status, 200);

    // A request keeps the pooled connection open while the server sidecar
    // drains: it has sent GOAWAY and refuses new streams on it.
    let long = tokio::spawn(async move { get(outbound, "/sleep/4000", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.server
        .proc
        .signal(nix::sys::signal::Signal::SIGTERM as i32);
    // Its replacement takes the same address once the old one let it go.
    let inbound = p.server.inbound();
    let freed = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(inbound).await.is_ok() && Instant::now() < freed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replacement = p.mesh.sidecar_unready(p.server_spec.clone());
    replacement.wait_ready().await;

    // Requests now meet the going-away connection first; none may fail.
    for i in 0..5 {
        let r = get(outbound, "/", &[]).await;
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\n{}",
            r.body,
            p.client.proc.log()
        );
    }
    let r = long.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(p.server.proc.wait(Duration::from_secs(10)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_headers_do_not_break_other_callers() {
    let p = pair(&[]).await;
    let outbound = p.client.outbound();
    assert_eq!(get(outbound, "/", &[]).await.status, 200);

    // Slow requests share the pooled mesh connection with the bad answer.
    let slow: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { get(outbound, "/sleep/1500", &[]).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = get(outbound, "/big-response-headers", &[]).await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(
        refused
            .headers
            .get(mycel_api::headers::PROXY_ERROR)
            .map(|v| v.to_str().unwrap()),
        Some("response-header-too-large"),
        "{}\n{}",
        refused.body,
        p.server.proc.log()
    );
    assert!(
        refused.body.contains("--max-header-bytes"),
        "{}",
        refused.body
    );

    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.body, p.client.proc.log());
    }
    // And the connection still serves.
    for _ in 0..5 {
        assert_eq!(get(outbound, "/", &[]).await.status, 200);
    }
}

/// Sends GETs for `/` through `outbound` from `workers` tasks until `stop`
/// (or a bound on count and time); every answer that is not a 200.
async fn steady_load(
    outbound: SocketAddr,
    workers: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (usize, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut sent, mut failed) = (0usize, Vec::new());
                while !*stop.borrow() && sent < 2000 && Instant::now() < deadline {
                    sent += 1;
                    match mycel_tests::http::request(outbound, "api.shop", "/", &[]).await {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failed.push(format!(
                            "{} {:?}: {}",
                            r.status,
                            r.headers.get(mycel_api::headers::PROXY_ERROR),
                            r.body
                        )),
                        Err(e) => failed.push(format!("{e:#}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (sent, failed)
            })
        })
        .collect();
    let (mut sent, mut failed) = (0, Vec::new());
    for t in tasks {
        let (s, f) = t.await.unwrap();
        sent += s;
        failed.extend(f);
    }
    (sent, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_replica_is_drained_without_failed_requests() {
    let mesh = Mesh::start(SERVICE_YAML).await;
    let mut replicas = Vec::new();
    for name in ["api-1", "api-2"] {
        let spec = SidecarSpec::new(name, "api")
            .label("app", "api")
            .app_port(&format!("http:{APP_PORT}"));
        app(spec.app_addr()).await;
        replicas.push(mesh.sidecar(spec).await);
        mesh.wait_registered(name).await;
    }
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let outbound = client.outbound();
    // Both replicas take traffic before one stops.
    let both = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(get(outbound, "/", &[]).await.status, 200);
        if replicas[0].served_inbound().await > 0 && replicas[1].served_inbound().await > 0 {
            break;
        }
        assert!(Instant::now() < both, "traffic never reached both replicas");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(steady_load(outbound, 4, stop_rx));
    // Slow requests on both replicas keep the stopping one draining for a
    // while: it must not be picked for new requests meanwhile.
    let slow: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { get(outbound, "/sleep/2000", &[]).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = &mut replicas[0];
    victim.proc.signal(nix::sys::signal::Signal::SIGTERM as i32);
    let exited = victim.proc.wait(Duration::from_secs(15)).await;
    assert!(exited.is_some(), "stopped replica did not exit");
    let served_before = replicas[1].served_inbound().await;
    // Keep the load going once it is gone, too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send_replace(true);
    let (sent, failed) = load.await.unwrap();
    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "slow request: {}", r.body);
    }
    assert!(sent > 20, "only {sent} requests sent");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed during the drain: {:?}\nclient log:\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        client.proc.log()
    );
    assert!(replicas[1].served_inbound().await > served_before);
}
