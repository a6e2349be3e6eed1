//! The `mycel-proxy` binary's control side on loopback: flag errors, static
//! mode readiness and admin pages, controller mode without a controller,
//! and a clean exit on SIGTERM.

// Test helpers panic on setup failures by design; `Proxy`'s Drop reaps the child.
#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

const BIN: &str = env!("CARGO_BIN_EXE_mycel-proxy");
const WAIT: Duration = Duration::from_secs(20);

struct Proxy {
    child: Child,
    admin: String,
    _stderr: mpsc::Receiver<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the proxy and waits for its ready line.
fn start(args: &[&str]) -> Proxy {
    let mut child = Command::new(BIN)
        .args(args)
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
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("no ready line from mycel-proxy");
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
                _stderr: rx,
            };
        }
    }
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

struct Pki {
    root_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki(spiffe: &str) -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "test root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = root.self_signed(&root_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    let leaf = leaf.signed_by(&key, &root, &root_key).unwrap();
    Pki {
        root_pem: root.pem(),
        chain_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write_static(dir: &Path, spiffe: &str) -> String {
    let p = pki(spiffe);
    std::fs::write(dir.join("chain.pem"), p.chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), p.key_pem).unwrap();
    std::fs::write(dir.join("roots.pem"), p.root_pem).unwrap();
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

const IDENTITY: &[&str] = &[
    "--workload",
    "catalog",
    "--namespace",
    "shop",
    "--service-account",
    "catalog",
    "--inbound",
    "127.0.0.1:0",
    "--outbound",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
];

#[test]
fn static_mode_serves_admin_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_static(dir.path(), "spiffe://cluster.local/ns/shop/sa/catalog");
    let mut args = IDENTITY.to_vec();
    args.extend(["--static-config", &file]);
    let mut proxy = start(&args);

    assert_eq!(get(&proxy.admin, "/live").0, 200);
    assert_eq!(get(&proxy.admin, "/ready"), (200, "ready\n".to_string()));
    let (code, body) = get(&proxy.admin, "/certs");
    assert_eq!(code, 200, "{body}");
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        certs["spiffe_id"],
        "spiffe://cluster.local/ns/shop/sa/catalog"
    );
    let (code, body) = get(&proxy.admin, "/config_dump");
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        dump["snapshot"]["services"]["reviews.shop"]["state"],
        "known"
    );
    assert_eq!(dump["config"]["source"]["kind"], "static");
    let (code, body) = get(&proxy.admin, "/metrics");
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
    let mut args = IDENTITY.to_vec();
    args.extend(["--static-config", &file]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chain.pem") && err.contains("sa/reviews"),
        "{err}"
    );
}

#[test]
fn controller_mode_without_controller_is_live_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, pki("spiffe://cluster.local/ns/a/sa/b").root_pem).unwrap();
    // A port nobody listens on: bind, note, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut args = IDENTITY.to_vec();
    let root = root.display().to_string();
    args.extend(["--controller", &dead, "--ca-root", &root]);
    let proxy = start_with_token(&args);
    assert_eq!(get(&proxy.admin, "/live").0, 200);
    let (code, body) = get(&proxy.admin, "/ready");
    assert_eq!(code, 503);
    assert!(
        body.contains("certificate") && body.contains("discovery"),
        "{body}"
    );
    assert_eq!(get(&proxy.admin, "/certs").0, 503);
}

fn start_with_token(args: &[&str]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "mycel.test\n").unwrap();
    let token = token.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--token-file", &token]);
    let p = start(&all);
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
        let mut args = vec![
            "--workload",
            "a",
            "--namespace",
            "b",
            "--service-account",
            "c",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(BIN).args(&args).output().unwrap();
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
    let args = [
        "--workload",
        "catalog",
        "--namespace",
        "shop",
        "--service-account",
        "catalog",
        "--static-config",
        &file,
        "--inbound",
        &addr,
    ];
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--inbound {addr}")), "{err}");
}
