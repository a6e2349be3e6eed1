use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::core::prefixed::Prefixed;

const GET: &[u8] = b"GET /ratings/p1 HTTP/1.1\r\nHost: ratings\r\nAccept: */*\r\n\r\n";
const WS: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
/// The start of a TLS 1.2 ClientHello record.
const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x5a\x5b\x5c";

#[test]
fn detection() {
    let many_headers = {
        let mut h = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..(MAX_HEADERS + 10) {
            h.extend_from_slice(b"a: b\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    let cases: Vec<(&[u8], bool, Detected)> = vec![
        (b"", false, Detected::NeedMore),
        (b"", true, Detected::Opaque),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, Detected::Http1),
        (
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            false,
            Detected::Http1,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", false, Detected::NeedMore),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", true, Detected::Http1),
        // The request line is read up to the version: that decides.
        (b"GET / HTTP/1.1", false, Detected::NeedMore),
        (b"GET / HTTP/1.1", true, Detected::Http1),
        (b"GET / HTTP/1.0\r\n\r\n", false, Detected::Http1),
        // Method and path without a version are not proof of HTTP.
        (b"GET /x", false, Detected::NeedMore),
        (b"GET /x", true, Detected::Opaque),
        (b"GE", false, Detected::NeedMore),
        (b"GE", true, Detected::Opaque),
        (WS, false, Detected::Upgrade),
        (
            b"GET / HTTP/1.1\r\nX-Upgrade: no\r\n\r\n",
            false,
            Detected::Http1,
        ),
        (
            b"GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            false,
            Detected::Upgrade,
        ),
        (
            b"GET / HTTP/1.1\r\nUpgrade: \r\n\r\n",
            false,
            Detected::Http1,
        ),
        // A valid request line and a bad or long header list: HTTP, which
        // hyper answers (400, 431) as it would any client.
        (
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            false,
            Detected::Http1,
        ),
        (&many_headers, false, Detected::Http1),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
            false,
            Detected::Http2,
        ),
        (b"PRI * HTTP/2", false, Detected::NeedMore),
        (b"PRI * HTTP/2", true, Detected::Opaque),
        (b"PRI * HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        // redis RESP, postgres startup, TLS client hello
        (b"*1\r\n$4\r\nPING\r\n", false, Detected::Opaque),
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", false, Detected::Opaque),
        (CLIENT_HELLO, false, Detected::Opaque),
        // Lower-case methods, unknown methods, CONNECT: not taken for HTTP.
        (b"get / HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        (b"GETX / HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        // A known method with a broken request line.
        (b"GET / FTP/1.1\r\n\r\n", false, Detected::Opaque),
        (b"GET  / HTTP/1.1\r\n\r\n", false, Detected::Opaque),
        (b"GET /\x00 HTTP/1.1\r\n\r\n", false, Detected::Opaque),
    ];
    for (buf, complete, want) in cases {
        assert_eq!(
            detect(buf, complete),
            want,
            "{:?} complete={complete}",
            String::from_utf8_lossy(buf)
        );
    }
}

/// Every prefix of `whole` waits for more; `whole` is `want`.
fn assert_prefixes_wait(whole: &[u8], want: Detected) {
    for end in 0..whole.len() {
        assert_eq!(
            detect(&whole[..end], false),
            Detected::NeedMore,
            "{:?}",
            String::from_utf8_lossy(&whole[..end])
        );
    }
    assert_eq!(detect(whole, false), want);
}

#[test]
fn byte_by_byte_request_is_detected_as_http() {
    assert_prefixes_wait(GET, Detected::Http1);
    assert_prefixes_wait(WS, Detected::Upgrade);
}

#[test]
fn h2_preface_split_anywhere_is_http2() {
    assert_prefixes_wait(H2_PREFACE, Detected::Http2);
}

#[test]
fn oversized_first_line_is_opaque() {
    let mut line = b"GET /".to_vec();
    line.resize(DETECT_LIMIT, b'a');
    // A full buffer decides even though the caller would wait longer.
    assert_eq!(detect(&line, false), Detected::Opaque);
}

#[test]
fn oversized_head_after_a_request_line_is_http() {
    let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(DETECT_LIMIT, b'b');
    assert_eq!(detect(&head, false), Detected::Http1);
}

#[test]
fn labels() {
    let cases = [
        (true, Detected::Opaque, 0, "opaque_declared"),
        (false, Detected::Http1, 40, "http"),
        (false, Detected::Http2, 24, "http"),
        (false, Detected::Upgrade, 90, "upgrade"),
        (false, Detected::Opaque, 8, "opaque"),
        (false, Detected::Opaque, 0, "opaque_silent"),
    ];
    for (skipped, d, seen, want) in cases {
        assert_eq!(protocol_label(skipped, d, seen), want, "{d:?}");
    }
}

#[test]
fn skipping() {
    let cases = [
        (80, Protocol::Http, &[][..], true),
        (8080, Protocol::Grpc, &[][..], true),
        (6379, Protocol::Tcp, &[][..], false),
        (3306, Protocol::Http, &[][..], false),
        (25, Protocol::Http, &[][..], false),
        (587, Protocol::Http, &[][..], false),
        (5432, Protocol::Http, &[][..], true),
        (9000, Protocol::Http, &[9000][..], false),
    ];
    for (port, proto, opaque, want) in cases {
        assert_eq!(should_detect(port, proto, opaque), want, "{port}");
    }
}

// The reader, over an in-memory connection on tokio's paused clock: a
// client's pauses cost no real time, and `elapsed` is exact.

/// A client that sends each chunk after `gap`, then keeps the connection
/// open (as a client waiting for an answer does).
fn client(chunks: Vec<Vec<u8>>, gap: Duration) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (app, proxy) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let mut app = app;
        for c in chunks {
            tokio::time::sleep(gap).await;
            if app.write_all(&c).await.is_err() {
                return;
            }
        }
        // Held open until the test ends.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    (proxy, task)
}

fn bytes_one_by_one(b: &[u8]) -> Vec<Vec<u8>> {
    b.iter().map(|&x| vec![x]).collect()
}

/// Everything `read_and_detect` took, followed by the rest of the stream,
/// is exactly what the client sent.
async fn assert_replayed(read: Vec<u8>, rest: DuplexStream, sent: &[u8]) {
    let mut replay = Prefixed::new(read, rest);
    let mut got = vec![0u8; sent.len()];
    replay.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
}

#[tokio::test(start_paused = true)]
async fn byte_by_byte_client_is_detected_as_http_within_the_timeout() {
    let (mut io, _task) = client(bytes_one_by_one(GET), Duration::from_millis(2));
    let start = tokio::time::Instant::now();
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!(d, Detected::Http1);
    assert_eq!(read, GET);
    assert!(start.elapsed() < DETECT_TIMEOUT);
    assert_replayed(read, io, GET).await;
}

#[tokio::test(start_paused = true)]
async fn slow_client_past_its_request_line_is_http_at_the_timeout() {
    // One byte every 10 ms: the request line is in, the head is not.
    let (mut io, _task) = client(bytes_one_by_one(GET), Duration::from_millis(10));
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!(d, Detected::Http1);
    assert!(read.len() > b"GET /ratings/p1 HTTP/1.1".len() && read.len() < GET.len());
    assert_replayed(read, io, GET).await;
}

#[tokio::test(start_paused = true)]
async fn h2_preface_split_across_reads_is_http2() {
    let chunks = vec![b"PRI * HTTP/2.0\r\n".to_vec(), b"\r\nSM\r\n\r\n".to_vec()];
    let (mut io, _task) = client(chunks, Duration::from_millis(50));
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!(d, Detected::Http2);
    assert_replayed(read, io, H2_PREFACE).await;
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_opaque_after_the_timeout() {
    // A server-first protocol: the client waits for the server's greeting.
    let (mut io, _task) = client(vec![], Duration::ZERO);
    let start = tokio::time::Instant::now();
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!((d, read.len()), (Detected::Opaque, 0));
    assert!(start.elapsed() >= DETECT_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn client_hello_is_opaque_without_waiting() {
    let (mut io, _task) = client(vec![CLIENT_HELLO.to_vec()], Duration::ZERO);
    let start = tokio::time::Instant::now();
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!(d, Detected::Opaque);
    assert!(start.elapsed() < DETECT_TIMEOUT);
    assert_replayed(read, io, CLIENT_HELLO).await;
}

#[tokio::test(start_paused = true)]
async fn garbage_then_silence_is_opaque_with_its_bytes_replayed() {
    // A valid method prefix that never becomes a request line.
    let (mut io, _task) = client(vec![b"GET /half".to_vec()], Duration::ZERO);
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!(d, Detected::Opaque);
    assert_replayed(read, io, b"GET /half").await;
}

#[tokio::test(start_paused = true)]
async fn oversized_first_line_is_opaque_and_replayed_whole() {
    let mut sent = b"GET /".to_vec();
    sent.resize(3 * DETECT_LIMIT, b'a');
    let (mut io, _task) = client(vec![sent.clone()], Duration::ZERO);
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!((d, read.len()), (Detected::Opaque, DETECT_LIMIT));
    assert_replayed(read, io, &sent).await;
}

#[tokio::test(start_paused = true)]
async fn client_that_closes_early_is_decided_on_what_it_sent() {
    let (app, mut io) = tokio::io::duplex(1024);
    let mut app = app;
    app.write_all(b"GE").await.unwrap();
    drop(app);
    let (d, read) = read_and_detect(&mut io, DETECT_TIMEOUT).await;
    assert_eq!((d, read.as_slice()), (Detected::Opaque, &b"GE"[..]));
}
