//! HTTPS at the gateway with real clients: curl over HTTP/2 and HTTP/1.1
//! (ALPN) through TLS to the demo shop, the certificate chosen by SNI
//! (exact name, wildcard, default), the plaintext listener's redirect,
//! certificate files replaced under a running gateway, partners' client
//! certificates, and clients that break or stall the handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_test_support::ca::{Leaf, TestCa};
use mycel_tests::shop::Shop;
use mycel_tests::{http, skip, Sidecar, SidecarSpec};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PEM files of one certificate.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn write(dir: &Path, name: &str, leaf: &Leaf) -> Files {
    let files = Files {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, &leaf.chain_pem).unwrap();
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    files
}

/// A gateway's web CA and server certificate for `host`, and a partners'
/// CA with one partner's client certificate (`acme.partner`), as files.
struct PartnerPki {
    dir: tempfile::TempDir,
    /// The web CA clients trust.
    root: PathBuf,
    /// The partners' CA, for `--tls-client-ca`.
    partner_ca: PathBuf,
    server: Files,
    partner: Files,
}

impl PartnerPki {
    fn new(host: &str) -> PartnerPki {
        let dir = tempfile::tempdir().unwrap();
        let web = TestCa::new("gateway-web");
        let partners = TestCa::new("partners");
        let root = dir.path().join("root.pem");
        std::fs::write(&root, web.root_pem()).unwrap();
        let partner_ca = dir.path().join("partners.pem");
        std::fs::write(&partner_ca, partners.root_pem()).unwrap();
        let server = write(dir.path(), "server", &web.host_leaf(&[host]));
        let partner = write(
            dir.path(),
            "partner",
            &partners.host_leaf(&["acme.partner"]),
        );
        PartnerPki {
            dir,
            root,
            partner_ca,
            server,
            partner,
        }
    }
}

fn has_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    mycel_tests::ports::free_block(1)
}

/// Handshakes with `addr` as `sni` trusting only `root`; the served leaf's
/// serial and DNS names, or why the handshake failed.
async fn served_cert(
    addr: SocketAddr,
    sni: &str,
    root: &TestCa,
) -> Result<(String, Vec<String>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.root_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    Ok((hex_serial(cert.raw_serial()), names))
}

fn hex_serial(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// curl `url` for `host` pinned to `addr`; (status, HTTP version) or its
/// error output.
fn curl(addr: SocketAddr, host: &str, url: &str, extra: &[&str]) -> Result<(u16, String), String> {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve])
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, version) = text.split_once(' ').unwrap_or((&text, ""));
    Ok((code.parse().unwrap_or(0), version.to_string()))
}

/// The demo shop whose gateway also listens for HTTPS on `https_port` of
/// its address, with `args`.
async fn https_shop(https_port: u16, args: &[&str]) -> Shop {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Shop::start_with(move |s: SidecarSpec| {
        if s.workload != "gateway" {
            return s;
        }
        let https = SocketAddr::from((s.ip, https_port)).to_string();
        args.iter()
            .fold(s.arg("--tls-listen").arg(&https), |s, a| s.arg(a))
    })
    .await
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(gw: &Sidecar) -> String {
    http::get(gw.admin, "localhost", "/metrics")
        .await
        .expect("gateway /metrics")
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_serves_by_sni_reloads_certificates_and_redirects_http() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway-web");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let root = root.display().to_string();
    let shop_files = write(dir.path(), "shop", &ca.host_leaf(&["shop.example"]));
    let api_files = write(dir.path(), "api", &ca.host_leaf(&["*.api.example"]));
    let https_port = free_port();
    let (shop_cert, api_cert) = (
        format!("{},{}", shop_files.cert.display(), shop_files.key.display()),
        format!("{},{}", api_files.cert.display(), api_files.key.display()),
    );
    let shop = https_shop(
        https_port,
        &[
            "--tls-cert",
            &shop_cert,
            "--tls-cert",
            &api_cert,
            "--tls-reload-interval",
            "1s",
            "--https-redirect",
            "--header-read-timeout",
            "1s",
        ],
    )
    .await;
    let gw = &shop.gateway;
    let https = SocketAddr::new(gw.listen().ip(), https_port);
    let base = format!("https://shop.example:{https_port}/api/products");

    // curl, verifying the chain and the name: HTTP/2 by ALPN, and HTTP/1.1.
    let h2 = curl(
        https,
        "shop.example",
        &base,
        &["--cacert", &root, "--http2"],
    );
    assert_eq!(h2, Ok((200, "2".to_string())), "h2 through TLS");
    let h1 = curl(
        https,
        "shop.example",
        &base,
        &["--cacert", &root, "--http1.1"],
    );
    assert_eq!(h1, Ok((200, "1.1".to_string())), "HTTP/1.1 through TLS");

    // SNI: the exact name, a wildcard's one label, and the first
    // certificate for a name none has (the client then refuses it).
    let (shop_serial, names) = served_cert(https, "shop.example", &ca).await.unwrap();
    assert_eq!(names, ["shop.example"]);
    let (_, names) = served_cert(https, "v1.api.example", &ca).await.unwrap();
    assert_eq!(names, ["*.api.example"]);
    let e = served_cert(https, "unknown.example", &ca)
        .await
        .unwrap_err();
    assert!(
        e.contains("not valid for name") && e.contains("shop.example"),
        "the first certificate, which the client refuses: {e}"
    );

    // The plaintext listener redirects, keeping host, path and query.
    let plain = format!(
        "http://shop.example:{}/api/products?page=2",
        gw.listen().port()
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{redirect_url}", "--resolve"])
        .arg(format!(
            "shop.example:{}:{}",
            gw.listen().port(),
            gw.listen().ip()
        ))
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://shop.example:{https_port}/api/products?page=2")
    );
    // Followed, it lands on HTTPS and is served.
    let followed = curl(
        gw.listen(),
        "shop.example",
        &plain,
        &[
            "--cacert",
            &root,
            "-L",
            "--resolve",
            &format!("shop.example:{https_port}:{}", https.ip()),
        ],
    );
    assert_eq!(followed.map(|r| r.0), Ok(200));

    // A new certificate replaces the old one without a restart.
    let renewed = ca.host_leaf(&["shop.example"]);
    std::fs::write(&shop_files.key, &renewed.key_pem).unwrap();
    std::fs::write(&shop_files.cert, &renewed.chain_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (serial, _) = served_cert(https, "shop.example", &ca).await.unwrap();
        if serial != shop_serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed_serial = served_cert(https, "shop.example", &ca).await.unwrap().0;

    // A broken file is reported and the last good certificate stays.
    std::fs::write(&shop_files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &metrics(gw).await,
        "mycel_gateway_certificate_reloads_total{result=\"error\"}",
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the failed reload was never counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        served_cert(https, "shop.example", &ca).await.unwrap().0,
        renewed_serial,
        "still the last good certificate"
    );
    let h2 = curl(
        https,
        "shop.example",
        &base,
        &["--cacert", &root, "--http2"],
    );
    assert_eq!(h2, Ok((200, "2".to_string())), "still serving");

    // Plaintext on the TLS port, and a client that never says anything:
    // both counted, neither hurts the next caller.
    let mut plain_tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    plain_tcp
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain_tcp.read_to_end(&mut sink)).await;
    let mut silent = tokio::net::TcpStream::connect(https).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 1])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client is cut off: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within --header-read-timeout"
    );
    let text = metrics(gw).await;
    assert!(
        metric(
            &text,
            "mycel_tls_handshake_failures_total{direction=\"gateway\",reason=\"timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "mycel_tls_handshake_failures_total{direction=\"gateway\""
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "mycel_gateway_certificate_expiry_timestamp_seconds{name=\"shop.example\"}"
        ) > 1.0e9,
        "{text}"
    );
    let h1 = curl(
        https,
        "shop.example",
        &base,
        &["--cacert", &root, "--http1.1"],
    );
    assert_eq!(
        h1,
        Ok((200, "1.1".to_string())),
        "the next caller is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_need_a_client_certificate_from_their_ca() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let pki = PartnerPki::new("partners.example");
    let (dir, root, partner_ca, server, partner) = (
        &pki.dir,
        &pki.root,
        &pki.partner_ca,
        &pki.server,
        &pki.partner,
    );
    let stranger = TestCa::new("stranger");
    let other = write(dir.path(), "other", &stranger.host_leaf(&["acme.partner"]));

    let https_port = free_port();
    let cert_arg = format!("{},{}", server.cert.display(), server.key.display());
    let ca_arg = partner_ca.display().to_string();
    let shop = https_shop(
        https_port,
        &["--tls-cert", &cert_arg, "--tls-client-ca", &ca_arg],
    )
    .await;
    let https = SocketAddr::new(shop.gateway.listen().ip(), https_port);
    let url = format!("https://partners.example:{https_port}/api/products");
    let root = root.display().to_string();
    let with = |f: &Files| {
        curl(
            https,
            "partners.example",
            &url,
            &[
                "--cacert",
                &root,
                "--cert",
                &f.cert.display().to_string(),
                "--key",
                &f.key.display().to_string(),
            ],
        )
    };
    assert_eq!(with(partner).map(|r| r.0), Ok(200), "a partner is served");
    assert!(
        with(&other).is_err(),
        "a certificate from another CA is refused"
    );
    let none = curl(https, "partners.example", &url, &["--cacert", &root]);
    assert!(none.is_err(), "no certificate is refused: {none:?}");
    let text = metrics(&shop.gateway).await;
    assert!(
        metric(
            &text,
            "mycel_tls_handshake_failures_total{direction=\"gateway\""
        ) >= 1.0,
        "{text}"
    );
}

/// curl's answer body for `url` with `extra` arguments, or its error output.
fn curl_body(url: &str, extra: &[String]) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The backend learns which partner called, from the gateway alone: the
/// verified client certificate as `x-forwarded-client-cert`, and no copy a
/// client sent itself, on either listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_the_partners_certificate_and_never_a_forged_one() {
    use mycel_tests::echo::http_headers_echo;
    use mycel_tests::mesh::{Mesh, APP_PORT};

    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let pki = PartnerPki::new("api.example");
    let (root, partner_ca, server, partner) =
        (&pki.root, &pki.partner_ca, &pki.server, &pki.partner);

    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: shop\nspec:\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 80\n    targetPort: {APP_PORT}\n"
    );
    let mesh = Mesh::start(&yaml).await;
    let app = SidecarSpec::new("echo-0", "echo")
        .label("app", "echo")
        .app_port(&format!("http:{APP_PORT}"));
    http_headers_echo(app.app_addr()).await;
    let _app = mesh.sidecar(app).await;
    mesh.wait_registered("echo-0").await;
    let https_port = free_port();
    let spec = SidecarSpec::new("gateway", "gateway").route("/=echo.shop:80");
    let https = SocketAddr::from((spec.ip, https_port));
    let gw = mesh
        .sidecar(
            spec.arg("--tls-listen")
                .arg(&https.to_string())
                .arg("--tls-cert")
                .arg(&format!(
                    "{},{}",
                    server.cert.display(),
                    server.key.display()
                ))
                .arg("--tls-client-ca")
                .arg(&partner_ca.display().to_string()),
        )
        .await;

    let forged = "Hash=00;Subject=\"CN=admin\"";
    let seen = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--resolve",
            &format!("api.example:{https_port}:{}", https.ip()),
            "--cacert",
            &root.display().to_string(),
            "-H",
            &format!("x-forwarded-client-cert: {forged}"),
            "-H",
            "x-forwarded-proto: gopher",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let url = format!("https://api.example:{https_port}/whoami");
    let body = curl_body(
        &url,
        &args(&[
            "--cert",
            &partner.cert.display().to_string(),
            "--key",
            &partner.key.display().to_string(),
        ]),
    )
    .expect("a partner is served");
    let headers = seen(&body);
    let xfcc = headers["x-forwarded-client-cert"]
        .as_array()
        .unwrap_or_else(|| panic!("no client cert header reached the app: {headers}"));
    assert_eq!(xfcc.len(), 1, "only the gateway's: {xfcc:?}");
    let xfcc = xfcc[0].as_str().unwrap();
    assert!(
        xfcc.starts_with("Hash=") && xfcc.contains("DNS=acme.partner") && !xfcc.contains("admin"),
        "{xfcc}"
    );
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["https"]));

    // The plaintext listener passes no client certificate header at all.
    let plain = format!("http://api.example:{}/whoami", gw.listen().port());
    let body = curl_body(
        &plain,
        &[
            "--resolve".to_string(),
            format!("api.example:{}:{}", gw.listen().port(), gw.listen().ip()),
            "-H".to_string(),
            format!("x-forwarded-client-cert: {forged}"),
        ],
    )
    .expect("plaintext is served");
    let headers = seen(&body);
    assert!(
        headers.get("x-forwarded-client-cert").is_none(),
        "a forged header got through: {headers}"
    );
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["http"]));
}
