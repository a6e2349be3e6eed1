//! The `mycel-proxy` binary's control side on loopback: flag errors, static
//! mode readiness and admin pages, controller mode without a controller,
//! and a clean exit on SIGTERM.

// `Proxy`'s Drop reaps the child.
#![allow(clippy::zombie_processes)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mycel_test_support::{http, ProxyArgs, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_mycel-proxy");
const WAIT: Duration = Duration::from_secs(20);

struct Proxy {
    child: Child,
    admin: String,
    /// The log up to the ready line, then the rest as it comes.
    seen: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shown with a failing test (libtest captures it), so the failure
        // comes with the proxy's side of the story.
        if std::thread::panicking() {
            self.seen.extend(self.stderr.try_iter());
            eprintln!("--- mycel-proxy log ---\n{}", self.seen.join("\n"));
        }
    }
}

/// Starts the proxy and waits for its ready line.
fn start(args: &ProxyArgs) -> Proxy {
    let mut child = Command::new(BIN)
        .args(args.as_slice())
        .env("MYCEL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no ready line from mycel-proxy; log:\n{}", seen.join("\n"));
        };
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("mycel-proxy ready ") {
            let admin = rest
                .split(' ')
                .find_map(|kv| kv.strip_prefix("admin="))
                .expect("admin address in ready line")
                .to_string();
            assert!(rest.contains("inbound=127.0.0.1:"), "{line}");
            return Proxy {
                child,
                admin,
                seen,
                stderr: rx,
            };
        }
    }
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let addr = addr.parse().unwrap();
    let reply = http::get(addr, "admin", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    (reply.status, reply.body)
}

fn write_static(dir: &Path, spiffe: &str) -> String {
    let ca = TestCa::new("static");
    let leaf = ca.leaf(spiffe);
    std::fs::write(dir.join("chain.pem"), leaf.chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), leaf.key_pem).unwrap();
    std::fs::write(dir.join("roots.pem"), ca.root_pem()).unwrap();
    let yaml = r#"
identity: {cert: chain.pem, key: key.pem, bundle: roots.pem}
services:
  - name: reviews
    namespace: shop
    ports: [{name: grpc, port: 9090, protocol: grpc}]
    endpoints: [{address: 127.0.0.1, meshPort: 1, spiffeId: "spiffe://cluster.local/ns/shop/sa/reviews"}]
"#;
    let path = dir.join("static.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// The catalog proxy with every listener on a free loopback port.
fn catalog() -> ProxyArgs {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    ProxyArgs::new("catalog", "shop", "catalog")
        .explicit(any, any)
        .admin(any)
}

#[tokio::test]
async fn static_mode_serves_admin_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_static(dir.path(), "spiffe://cluster.local/ns/shop/sa/catalog");
    let mut proxy = start(&catalog().flag("--static-config", &file));

    assert_eq!(get(&proxy.admin, "/live").await.0, 200);
    assert_eq!(
        get(&proxy.admin, "/ready").await,
        (200, "ready\n".to_string())
    );
    let (code, body) = get(&proxy.admin, "/certs").await;
    assert_eq!(code, 200, "{body}");
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        certs["spiffe_id"],
        "spiffe://cluster.local/ns/shop/sa/catalog"
    );
    let (code, body) = get(&proxy.admin, "/config_dump").await;
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        dump["snapshot"]["services"]["reviews.shop"]["state"],
        "known"
    );
    assert_eq!(dump["config"]["source"]["kind"], "static");
    let (code, body) = get(&proxy.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("mycel_identity_cert_expiry_timestamp_seconds"),
        "{body}"
    );

    let pid = proxy.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "exit after SIGTERM: {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn static_cert_for_another_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_static(dir.path(), "spiffe://cluster.local/ns/shop/sa/reviews");
    let args = catalog().flag("--static-config", &file);
    let out = Command::new(BIN).args(args.as_slice()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chain.pem") && err.contains("sa/reviews"),
        "{err}"
    );
}

#[tokio::test]
async fn controller_mode_without_controller_is_live_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, TestCa::new("unreachable").root_pem()).unwrap();
    // A port nobody listens on: bind, note, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_with_token(catalog(), dead, &root);
    assert_eq!(get(&proxy.admin, "/live").await.0, 200);
    let (code, body) = get(&proxy.admin, "/ready").await;
    assert_eq!(code, 503);
    assert!(
        body.contains("certificate") && body.contains("discovery"),
        "{body}"
    );
    assert_eq!(get(&proxy.admin, "/certs").await.0, 503);
}

fn start_with_token(args: ProxyArgs, controller: SocketAddr, ca_root: &Path) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "mycel.test\n").unwrap();
    let p = start(&args.controller(controller, ca_root, &token));
    // The token file is read per request; keep it around for the proxy.
    std::mem::forget(dir);
    p
}

#[test]
fn bad_flags_exit_with_a_clear_error() {
    let cases: [(&[&str], &str); 3] = [
        (&["--inbound", "127.0.0.1:0"], "--static-config"),
        (
            &[
                "--inbound",
                "127.0.0.1:0",
                "--static-config",
                "/s",
                "--cert-ttl",
                "soon",
            ],
            "invalid value 'soon' for '--cert-ttl",
        ),
        (
            &[
                "--static-config",
                "/nonexistent/s.yaml",
                "--inbound",
                "127.0.0.1:0",
            ],
            "/nonexistent/s.yaml",
        ),
    ];
    for (extra, want) in cases {
        let args = ProxyArgs::new("a", "b", "c").extra(extra);
        let out = Command::new(BIN).args(args.as_slice()).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn busy_port_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = write_static(dir.path(), "spiffe://cluster.local/ns/shop/sa/catalog");
    let args = ProxyArgs::new("catalog", "shop", "catalog")
        .flag("--static-config", &file)
        .flag("--inbound", &addr);
    let out = Command::new(BIN).args(args.as_slice()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--inbound {addr}")), "{err}");
}
