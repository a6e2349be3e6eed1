//! `mycel-demo fetch`, the real binary, against small servers on loopback:
//! the JSON lines on stdout, the exit status, `--count`, `--every` and
//! `--timeout` as a test in a pod would rely on them.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A loopback HTTP/1.1 server answering the n-th request with the n-th of
/// `answers` (the last one repeats); `None` holds the connection open
/// without answering. It records each request's head.
struct Server {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

fn server(answers: Vec<Option<Vec<u8>>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let answer = answers[n.min(answers.len() - 1)].clone();
            let seen = seen.clone();
            thread::spawn(move || {
                let head = read_head(&mut stream);
                seen.lock().unwrap().push(head);
                match answer {
                    // The client may hang up before reading it all.
                    Some(bytes) => drop(stream.write_all(&bytes)),
                    None => thread::sleep(Duration::from_secs(30)),
                }
            });
        }
    });
    Server { addr, heads }
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn answer(status: &str, body: &str) -> Option<Vec<u8>> {
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `mycel-demo fetch ARGS`; returns its output and how long it took.
fn fetch(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mycel-demo"))
        .arg("fetch")
        .args(args)
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// stdout as JSON objects, one per line, each with exactly `status` or
/// `error`, and `ms`.
fn lines(out: &Output) -> Vec<Value> {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert!(keys == ["ms", "status"] || keys == ["error", "ms"], "{l}");
            // What a reader sees first says which of the two it is.
            assert!(
                l.starts_with(r#"{"status":"#) || l.starts_with(r#"{"error":"#),
                "{l}"
            );
            assert!(v["ms"].as_f64().unwrap() >= 0.0, "{l}");
            v
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_request_answered_2xx_exits_0_and_count_and_every_are_kept() {
    let s = server(vec![answer("200 OK", "{\"ok\":true}")]);
    let url = format!("http://localhost:{}/products?id=1", s.addr.port());
    let (out, took) = fetch(&[&url, "--count", "3", "--every", "200"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["status"] == 200), "{lines:?}");
    // The third request starts at least 2 × 200 ms after the first.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let heads = s.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "one connection per request");
    for head in heads {
        assert!(
            head.starts_with("GET /products?id=1 HTTP/1.1\r\n"),
            "{head}"
        );
        let host = format!("host: localhost:{}\r\n", s.addr.port());
        assert!(head.to_lowercase().contains(&host), "{head}");
    }
}

#[test]
fn one_answer_that_is_not_2xx_exits_1() {
    let s = server(vec![
        answer("200 OK", "ok"),
        answer("503 Service Unavailable", "no"),
    ]);
    let url = format!("http://{}/", s.addr);
    let (out, _) = fetch(&[&url, "--count=2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let statuses: Vec<Value> = lines(&out).iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, [200, 503]);
    assert!(stderr(&out).contains("1 of 2 requests"), "{}", stderr(&out));
}

#[test]
fn a_refused_port_is_an_error_line_and_exits_1() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let (out, _) = fetch(&[&url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 1, "--count defaults to 1: {lines:?}");
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[test]
fn a_silent_server_times_out() {
    let s = server(vec![None]);
    let url = format!("http://{}/", s.addr);
    let (out, took) = fetch(&[&url, "--timeout", "300", "--count", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["error"], "no answer within 300 ms", "{l}");
        assert!(l["ms"].as_f64().unwrap() >= 300.0, "{l}");
    }
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_body_over_1_mib_is_not_read_to_the_end() {
    let big = 2 * 1024 * 1024;
    let mut bytes =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {big}\r\nconnection: close\r\n\r\n")
            .into_bytes();
    bytes.resize(bytes.len() + big, b'x');
    let s = server(vec![Some(bytes)]);
    let (out, _) = fetch(&[&format!("http://{}/", s.addr)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = lines(&out);
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.contains("limit"), "{error}");
}

#[test]
fn bad_command_lines_are_usage_errors_sending_nothing() {
    for (args, want) in [
        (&["https://127.0.0.1:1/"][..], "only http://"),
        (&["http://127.0.0.1:1/", "--count=0"], "--count"),
        // Only the first line of clap's message is printed.
        (&[], "required arguments"),
    ] {
        let (out, _) = fetch(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
