//! Certificates and the controller's gRPC port: renewal and rotation that
//! never interrupt traffic, a port that holds up before authentication, and
//! proxies and controllers that fail with one clear line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::CertifyRequest;
use mycel_test_support::ca::Csr;
use mycel_tests::grpc;
use mycel_tests::mesh::{write_token, Mesh, SidecarSpec, TokenFor};
use mycel_tests::probe::{closed_within, rss_kib};
use mycel_tests::process::bin;
use mycel_tests::shop::{mesh_yaml, workload};
use mycel_tests::{http, Sidecar};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

/// Bound for anything awaited here; generous for a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// A gauge's value from a Prometheus text page.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
}

async fn controller_metrics(mesh: &Mesh) -> String {
    http::get(mesh.admin, "localhost", "/metrics")
        .await
        .map(|r| r.body)
        .unwrap_or_default()
}

/// The serials of a sidecar's leaf and of the issuer that signed it.
async fn serials(sidecar: &Sidecar) -> (String, String) {
    let certs = sidecar.admin_json("/certs").await;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&certs["serial"]),
        text(&certs["issuer_chain"][0]["serial"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_flow_through_cert_renewal_and_issuer_rotation() {
    // Workload certs live 6 s (renewed every ~4 s), the serving cert 5 s,
    // issuers 14 s (rotated at the latest every ~10 s): 25 s of traffic
    // crosses several of each.
    let mesh = Mesh::start_with(
        &mesh_yaml(""),
        &[
            "--cert-ttl",
            "6s",
            "--serving-cert-ttl",
            "5s",
            "--issuer-ttl",
            "14s",
        ],
    )
    .await;
    let catalog = workload(&mesh, "catalog", "catalog", "http", &[], |s| s).await;
    let client = mesh
        .sidecar(SidecarSpec::new("client", "frontend").label("app", "client"))
        .await;
    let (first_leaf, first_issuer_serial) = serials(&catalog.sidecar).await;
    assert!(!first_leaf.is_empty() && !first_issuer_serial.is_empty());
    let metrics = controller_metrics(&mesh).await;
    let first_issuer = gauge(
        &metrics,
        "mycel_controller_issuer_cert_expiry_timestamp_seconds",
    );
    let first_serving = gauge(
        &metrics,
        "mycel_controller_serving_cert_expiry_timestamp_seconds",
    );
    assert!(
        first_issuer.is_some() && first_serving.is_some(),
        "{metrics}"
    );
    assert!(gauge(
        &metrics,
        "mycel_controller_root_cert_expiry_timestamp_seconds"
    )
    .is_some());

    let start = Instant::now();
    let (mut ok, mut failed) = (0u32, Vec::new());
    // Bounded in count and time.
    for _ in 0..5_000 {
        if start.elapsed() > Duration::from_secs(25) {
            break;
        }
        match http::get(client.outbound(), "catalog.shop", "/products").await {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) => failed.push(format!("{} {}", r.status, r.body)),
            Err(e) => failed.push(format!("{e:#}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests made");

    // Renewal and rotation really happened while the traffic flowed.
    let (leaf, issuer_serial) = serials(&catalog.sidecar).await;
    assert_ne!(leaf, first_leaf, "workload cert renewed");
    assert_ne!(
        issuer_serial, first_issuer_serial,
        "leaf signed by a new issuer"
    );
    let metrics = controller_metrics(&mesh).await;
    let issuer = gauge(
        &metrics,
        "mycel_controller_issuer_cert_expiry_timestamp_seconds",
    );
    let serving = gauge(
        &metrics,
        "mycel_controller_serving_cert_expiry_timestamp_seconds",
    );
    assert!(
        issuer > first_issuer,
        "issuer rotated: {first_issuer:?} -> {issuer:?}"
    );
    assert!(
        serving > first_serving,
        "serving cert renewed: {first_serving:?} -> {serving:?}"
    );
    // Both sides are still ready with a valid certificate.
    catalog.sidecar.wait_ready().await;
    client.wait_ready().await;
}

async fn identity_client(mesh: &Mesh) -> IdentityClient<Channel> {
    IdentityClient::new(grpc::controller(mesh, None).await)
}

/// A Certify with a real token and CSR succeeds.
async fn certify_works(mesh: &Mesh) {
    let token = std::fs::read_to_string(mesh.token("shop", "catalog")).expect("token");
    let reply = tokio::time::timeout(
        WAIT,
        identity_client(mesh).await.certify(CertifyRequest {
            token,
            csr_der: Csr::new().der,
            requested_ttl_seconds: 0,
        }),
    )
    .await
    .expect("Certify answered in time");
    assert!(reply.is_ok(), "Certify failed: {reply:?}");
}

/// Reads until EOF or error; true when the peer closed within `within`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_client_hello_connections_are_closed() {
    let mesh = Mesh::start_with(&mesh_yaml(""), &["--grpc-handshake-timeout", "2s"]).await;
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(mesh.grpc)
            .await
            .expect("connect");
        // A TLS record header announcing a 512-byte ClientHello, then two
        // bytes of it and silence.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .await
            .expect("write");
        conns.push(s);
    }
    // The controller keeps serving while they hang.
    certify_works(&mesh).await;
    let deadline = Instant::now() + WAIT;
    for (i, s) in conns.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left).await,
            "connection {i} still open after {WAIT:?}"
        );
    }
    certify_works(&mesh).await;
}

/// One TLS connection without a client certificate, speaking raw HTTP/2.
async fn h2_without_cert(
    mesh: &Mesh,
) -> hyper::client::conn::http2::SendRequest<
    StreamBody<
        tokio_stream::wrappers::ReceiverStream<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
    >,
> {
    let mut roots = rustls::RootCertStore::empty();
    for der in mycel_tests::mesh::pem_certs(&mesh.ca_root()) {
        roots.add(der.into()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(mesh.grpc)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_streams_without_cert_are_bounded() {
    let mesh = Mesh::start_with(
        &mesh_yaml(""),
        &[
            "--grpc-request-timeout",
            "2s",
            "--grpc-max-concurrent-streams",
            "16",
        ],
    )
    .await;
    let pid = mesh
        .controller
        .as_ref()
        .and_then(|c| c.pid())
        .expect("controller pid");
    let before = rss_kib(pid);
    let mut send = h2_without_cert(&mesh).await;
    let mut senders = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    // Certify calls whose request body never ends.
    for _ in 0..64 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        senders.push(tx);
        let req = hyper::Request::post("/mycel.v1.Identity/Certify")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .expect("request");
        if send.ready().await.is_err() {
            break;
        }
        let fut = send.send_request(req);
        calls.spawn(async move {
            let resp = fut.await.map_err(|e| e.to_string())?;
            let grpc_status = resp
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap_or("?").to_string());
            let trailers = resp
                .into_body()
                .collect()
                .await
                .ok()
                .and_then(|b| b.trailers().cloned());
            Ok::<_, String>(grpc_status.or_else(|| {
                trailers.and_then(|t| {
                    t.get("grpc-status")
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                })
            }))
        });
    }
    // The controller still serves others during the flood.
    certify_works(&mesh).await;
    // Every hanging call is ended by the controller, none left open.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ended = 0;
    while let Some(r) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        calls.join_next(),
    )
    .await
    .expect("every hanging Certify was ended in time")
    {
        let status = r.expect("call task");
        if let Ok(Some(code)) = &status {
            assert_ne!(code, "0", "a call without a body succeeded");
        }
        ended += 1;
    }
    assert_eq!(ended, 64);
    let after = rss_kib(pid);
    assert!(
        after < before + 100 * 1024,
        "controller RSS grew from {before} KiB to {after} KiB"
    );
    drop(senders);
}

/// Runs a binary to its exit (bounded) and returns its status and stderr.
async fn run_to_exit(program: &str, args: &[String]) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(bin(program))
        .args(args)
        .env("MYCEL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not exit within {WAIT:?}"))
        .expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The error report is exactly one line, with no chain or backtrace.
fn assert_one_error_line(stderr: &str, want: &str) {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line, got:\n{stderr}");
    assert!(
        errors[0].contains(want),
        "{:?} does not mention {want:?}",
        errors[0]
    );
    assert!(!stderr.contains("Caused by"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

fn proxy_args(mesh: &Mesh, token_file: &std::path::Path) -> Vec<String> {
    let ip = mycel_tests::mesh::next_ip();
    [
        "--controller",
        &mesh.grpc.to_string(),
        "--ca-root",
        &mesh.ca_root().display().to_string(),
        "--token-file",
        &token_file.display().to_string(),
        "--workload",
        "lost",
        "--namespace",
        "shop",
        "--service-account",
        "lost",
        "--admin",
        &SocketAddr::from((ip, 15000)).to_string(),
        "--inbound",
        &SocketAddr::from((ip, 15006)).to_string(),
        "--outbound",
        &SocketAddr::from((ip, 15001)).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_exits_with_one_line() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    // A well-formed token from another controller's store.
    let other = tempfile::tempdir().expect("tempdir");
    let token = write_token(
        &other.path().join("data"),
        other.path(),
        &TokenFor::new("lost", "shop", "lost"),
    );
    let (status, stderr) = run_to_exit("mycel-proxy", &proxy_args(&mesh, &token)).await;
    assert!(!status.success(), "{stderr}");
    assert_one_error_line(&stderr, "certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_file_exits_with_one_line() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let missing = mesh.path("no-such.token");
    let (status, stderr) = run_to_exit("mycel-proxy", &proxy_args(&mesh, &missing)).await;
    assert!(!status.success(), "{stderr}");
    assert_one_error_line(&stderr, "no-such.token");
    assert!(
        !stderr.contains("mycel-proxy ready"),
        "reported ready first: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_bad_flag_value_exits_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "--data-dir",
        &dir.path().display().to_string(),
        "--cert-ttl",
        "banana",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, stderr) = run_to_exit("mycel-controller", &args).await;
    assert!(!status.success());
    assert_one_error_line(&stderr, "--cert-ttl");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Too short an issuer lifetime is refused the same way, after parsing.
    let args: Vec<String> = [
        "--data-dir",
        &dir.path().display().to_string(),
        "--cert-ttl",
        "1h",
        "--issuer-ttl",
        "30m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, stderr) = run_to_exit("mycel-controller", &args).await;
    assert!(!status.success());
    assert_one_error_line(&stderr, "--issuer-ttl");
}
