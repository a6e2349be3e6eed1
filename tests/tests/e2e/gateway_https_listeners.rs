//! A Gateway's HTTPS listeners from mesh.yaml, through real processes: the
//! controller reads the `kubernetes.io/tls` Secrets the listeners name and
//! pushes them to the gateway proxy of the Gateway's service account,
//! which serves them by SNI on its TLS socket (HTTP/2 by ALPN) in front of
//! a real app. What a user relies on: each hostname gets its own
//! certificate, a route of HTTPS listeners only is never served in
//! plaintext, a rotated Secret reaches new handshakes without a restart
//! while a broken one is refused, and a proxy of another service account
//! never holds the keys.
//!
//! Every certificate is made here (two CAs, so a client trusting one of
//! them proves which Secret it was served).

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mycel_test_support::ca::{Leaf, TestCa};
use mycel_test_support::tls::AcceptAnyServer;
use mycel_tests::echo::http_headers_echo;
use mycel_tests::gateway_yaml::{
    echo_service, gateway_for_account, http_listener, https_listener, path_prefix, route, rule,
    tls_secret, tls_secret_data, GATEWAY,
};
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use mycel_tests::{http, skip};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The exact name of the `api` listener and its certificate.
const API: &str = "api.shop.example";
/// The wildcard of the `www` listener and its certificate.
const WWW: &str = "*.www.shop.example";
/// A name only the `www` wildcard covers.
const WWW_HOST: &str = "a.www.shop.example";
/// The host of the route of the plaintext listener; the `www` wildcard
/// covers it too, so it can be asked for over TLS with a verified name.
const STATUS_HOST: &str = "status.www.shop.example";
/// The service account the Gateway's annotation names: the only proxies
/// that may hold its private keys.
const HOLDER: &str = "edge";

/// Bound of every wait for the mesh to converge (the controller reads
/// mesh.yaml every 200 ms; a push is milliseconds).
const CONVERGE: Duration = Duration::from_secs(15);
/// Pause between two probes of a wait.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Each listener's own CA and the certificate it issued for it.
struct Pki {
    api_ca: TestCa,
    www_ca: TestCa,
    api: Leaf,
    www: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let api_ca = TestCa::new("api-web");
        let www_ca = TestCa::new("www-web");
        let api = api_ca.host_leaf(&[API]);
        let www = www_ca.host_leaf(&[WWW]);
        Pki {
            api_ca,
            www_ca,
            api,
            www,
        }
    }
}

/// The echo Service; the Secrets `api-cert` (`api_chain` with `api_key`,
/// as `stringData`) and `www-cert` (base64 `data`); the Gateway with a
/// plaintext listener `http` and the HTTPS listeners `api` and `www`, its
/// keys for service account `account`; and three routes to echo: `api`
/// and `www` on their HTTPS listeners only, `status` on `http` only; and
/// on `http`, the usual redirect of the api host to HTTPS.
fn mesh_yaml(api_chain: &str, api_key: &str, www: &Leaf, account: &str) -> String {
    let echo = || rule(&path_prefix("/"), None, Some(("echo", 80)));
    [
        echo_service(),
        tls_secret("api-cert", api_chain, api_key),
        tls_secret_data("www-cert", &www.chain_pem, &www.key_pem),
        gateway_for_account(
            account,
            &[
                http_listener("http", None),
                https_listener("api", Some(API), &["api-cert"]),
                https_listener("www", Some(WWW), &["www-cert"]),
            ],
        ),
        // Before the api route, so that it would win the tie on the TLS
        // socket if it were served there (and redirect to itself).
        route("HTTPRoute", "to-https", Some("http"), &[API]),
        "    - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n"
            .to_string(),
        route("HTTPRoute", "api", Some("api"), &[API]),
        echo(),
        // No hostnames: it takes the listener's wildcard.
        route("HTTPRoute", "www", Some("www"), &[]),
        echo(),
        route("HTTPRoute", "status", Some("http"), &[STATUS_HOST]),
        echo(),
    ]
    .concat()
}

/// The good mesh.yaml of `pki`, keys for [`HOLDER`].
fn good_yaml(pki: &Pki) -> String {
    mesh_yaml(&pki.api.chain_pem, &pki.api.key_pem, &pki.www, HOLDER)
}

/// A controller reading `yaml`, and the echo app (answering with the
/// headers it got) beside its sidecar, registered.
async fn mesh_with_echo(yaml: &str) -> (Mesh, Sidecar) {
    let mesh = Mesh::start(yaml).await;
    let app = SidecarSpec::new("echo-0", "echo")
        .label("app", "echo")
        .app_port(&format!("http:{APP_PORT}"));
    http_headers_echo(app.app_addr()).await;
    let echo = mesh.sidecar(app).await;
    mesh.wait_registered("echo-0").await;
    (mesh, echo)
}

/// A gateway proxy `workload` of service account `account` following the
/// Gateway, with a TLS socket and no certificate file: all it serves over
/// TLS is what the controller pushes. Returns it and its TLS address.
async fn gateway_proxy(mesh: &Mesh, workload: &str, account: &str) -> (Sidecar, SocketAddr) {
    let spec = SidecarSpec::new(workload, account).gateway(GATEWAY);
    let https = SocketAddr::from((spec.ip, mycel_tests::ports::free_block(1)));
    let gw = mesh
        .sidecar(spec.arg("--tls-listen").arg(&https.to_string()))
        .await;
    (gw, https)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client offering h2 then http/1.1 that trusts only `trust`'s root and
/// checks the name, as a browser would.
fn verifying_client(trust: &TestCa) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.root_der()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// A TLS connection to `addr` for `name` with `config`, or why the
/// handshake failed.
async fn connect(
    addr: SocketAddr,
    name: ServerName<'static>,
    config: rustls::ClientConfig,
) -> Result<TlsStream<TcpStream>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr} timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

/// The leaf the server showed on `tls`, DER.
fn leaf_of(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A leaf's DNS names, to say in a failure which certificate was served.
fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// The leaf served to a client sending SNI `sni` that verifies it against
/// `trust` only.
async fn verified_leaf(addr: SocketAddr, sni: &str, trust: &TestCa) -> Result<Vec<u8>, String> {
    connect(addr, dns(sni), verifying_client(trust))
        .await
        .map(|tls| leaf_of(&tls))
}

/// The leaf served to a client asking for `name` that looks at the
/// certificate without trusting it (a name that is an IP address sends
/// no SNI): which certificate the gateway picked, whoever issued it.
async fn unverified_leaf(addr: SocketAddr, name: ServerName<'static>) -> Result<Vec<u8>, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer::new(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    connect(addr, name, config).await.map(|tls| leaf_of(&tls))
}

/// No SNI: the client connects by the gateway's IP address.
fn no_sni(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// One HTTP/2 connection over verified TLS, kept open across requests.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    /// The leaf the connection was set up with.
    leaf: Vec<u8>,
    authority: String,
}

impl H2 {
    /// Connects to `addr` for `host` trusting only `trust`, and insists on
    /// h2 by ALPN.
    async fn open(addr: SocketAddr, host: &str, trust: &TestCa) -> Result<H2, String> {
        let tls = connect(addr, dns(host), verifying_client(trust)).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(format!(
                "ALPN chose {:?}, not h2",
                alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
            ));
        }
        let leaf = leaf_of(&tls);
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
        // Ends when the connection closes, which is also when `send` fails.
        tokio::spawn(conn);
        Ok(H2 {
            send,
            leaf,
            authority: format!("{host}:{}", addr.port()),
        })
    }

    /// GET `path` on this connection: status and the echo app's view of
    /// the request headers (`null` for another body).
    async fn get(&mut self, path: &str) -> Result<(u16, serde_json::Value), String> {
        let req = hyper::Request::get(format!("https://{}{path}", self.authority))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let exchange = async {
            self.send
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .send
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            let seen = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            Ok((status, seen))
        };
        tokio::time::timeout(http::TIMEOUT, exchange)
            .await
            .map_err(|_| format!("GET {path} over h2 timed out"))?
    }
}

/// Runs `probe` until it returns `Ok`, at most [`CONVERGE`] and a bounded
/// number of tries; panics with `what` and the last error otherwise.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + CONVERGE;
    let tries = CONVERGE.as_millis() / POLL_EVERY.as_millis() + 1;
    let mut last = String::from("never tried");
    for _ in 0..tries {
        match probe().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("{what}: not within {CONVERGE:?}; last: {last}");
}

/// Waits until `addr` serves, to a client of `trust` asking for `host`,
/// exactly `want` (compared by DER).
async fn wait_served(addr: SocketAddr, host: &str, trust: &TestCa, want: &Leaf) {
    let want = want.chain[0].to_vec();
    eventually(&format!("{host}'s certificate served on {addr}"), || {
        let want = want.clone();
        async move {
            let got = verified_leaf(addr, host, trust).await?;
            match got == want {
                true => Ok(()),
                false => Err(format!("another certificate: {:?}", dns_names(&got))),
            }
        }
    })
    .await;
}

/// Status of `GET host/` on the gateway's plaintext socket, and the echo
/// app's view of the headers (`null` for another body).
async fn plaintext(gw: &Sidecar, host: &str) -> (u16, serde_json::Value) {
    let r = http::get(gw.listen(), host, "/")
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}/ on {}: {e:#}", gw.listen()));
    let seen = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, seen)
}

/// The value of a counter or gauge line starting with `prefix` (summed
/// over the lines that do).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const NO_CERTIFICATE: &str =
    "mycel_tls_handshake_failures_total{direction=\"gateway\",reason=\"no_certificate\"}";

fn has_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// curl `https://host:port/` at `addr` trusting only `root_pem`, with
/// `extra` flags: status and HTTP version, or curl's error output.
fn curl(addr: SocketAddr, host: &str, root_pem: &std::path::Path, extra: &[&str]) -> String {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve])
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .arg("--cacert")
        .arg(root_pem)
        .args(extra)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .expect("run curl");
    match out.status.success() {
        true => String::from_utf8_lossy(&out.stdout).into_owned(),
        false => format!("curl failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_https_listener_serves_its_own_secret_by_sni_over_http2() {
    if !skip::require("curl (Debian package curl) is not installed", has_curl()) {
        return;
    }
    let pki = Pki::new();
    let (mesh, _echo) = mesh_with_echo(&good_yaml(&pki)).await;
    let (gw, https) = gateway_proxy(&mesh, "gateway", HOLDER).await;

    // Exact name: the api Secret, verified against the api CA alone.
    wait_served(https, API, &pki.api_ca, &pki.api).await;
    // One label under the wildcard: the www Secret, from its own CA.
    let www = verified_leaf(https, WWW_HOST, &pki.www_ca).await.unwrap();
    assert_eq!(www, pki.www.chain[0].to_vec(), "{:?}", dns_names(&www));
    // Neither name gets the other's certificate.
    let e = verified_leaf(https, API, &pki.www_ca).await.unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    let e = verified_leaf(https, WWW_HOST, &pki.api_ca)
        .await
        .unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    // A wildcard covers one label only, so a name two labels under it, a
    // name no listener has and a client without SNI all get the first
    // certificate (the first HTTPS listener's).
    for name in [
        dns("b.a.www.shop.example"),
        dns("nobody.shop.example"),
        no_sni(https),
    ] {
        let first = unverified_leaf(https, name.clone()).await.unwrap();
        assert_eq!(
            first,
            pki.api.chain[0].to_vec(),
            "{name:?} got {:?}",
            dns_names(&first)
        );
    }

    // HTTP/2 by ALPN, to the app, which learns the request came over TLS.
    let mut h2 = H2::open(https, API, &pki.api_ca).await.unwrap();
    let (status, seen) = h2.get("/orders").await.unwrap();
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["https"]));
    let mut h2 = H2::open(https, WWW_HOST, &pki.www_ca).await.unwrap();
    assert_eq!(h2.get("/").await.unwrap().0, 200);

    // And a real client: curl verifying chain and name, h2 and HTTP/1.1.
    let dir = tempfile::tempdir().unwrap();
    let (api_root, www_root) = (dir.path().join("api.pem"), dir.path().join("www.pem"));
    std::fs::write(&api_root, pki.api_ca.root_pem()).unwrap();
    std::fs::write(&www_root, pki.www_ca.root_pem()).unwrap();
    assert_eq!(curl(https, API, &api_root, &["--http2"]), "200 2");
    assert_eq!(curl(https, WWW_HOST, &www_root, &["--http2"]), "200 2");
    assert_eq!(curl(https, API, &api_root, &["--http1.1"]), "200 1.1");

    // What the proxy shows of them: where they came from, never a key.
    let dump = gw.admin_json("/config_dump").await;
    let held = &dump["snapshot"]["gateway_certificates"][format!("{GATEWAY}.shop")];
    let sources: Vec<&str> = held["certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("no gateway certificates in {dump}"))
        .iter()
        .filter_map(|c| c["source"].as_str())
        .collect();
    assert_eq!(sources, ["shop/api-cert", "shop/www-cert"], "{held}");
    assert!(!dump.to_string().contains("PRIVATE KEY"), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_routes_are_404_in_plaintext_and_http_listeners_routes_and_redirects_never_answer_over_tls(
) {
    let pki = Pki::new();
    let (mesh, _echo) = mesh_with_echo(&good_yaml(&pki)).await;
    let (gw, https) = gateway_proxy(&mesh, "gateway", HOLDER).await;

    // Over TLS: both HTTPS-only routes; the api host is not redirected
    // there (its redirect is the HTTP listener's), so it does not loop.
    let api_ca = &pki.api_ca;
    let mut api = eventually("the api route over TLS", || async move {
        let mut h2 = H2::open(https, API, api_ca).await?;
        match h2.get("/").await? {
            (200, _) => Ok(h2),
            (status, seen) => Err(format!("{status}: {seen}")),
        }
    })
    .await;
    let mut www = H2::open(https, WWW_HOST, &pki.www_ca).await.unwrap();
    assert_eq!(www.get("/").await.unwrap().0, 200, "the www route over TLS");
    // Over TLS the status host is the www listener's (its wildcard route
    // takes it), not the http listener's route.
    let mut status = H2::open(https, STATUS_HOST, &pki.www_ca).await.unwrap();
    let (code, seen) = status.get("/").await.unwrap();
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["https"]));

    // In plaintext: the http listener's route answers (so the gateway has
    // the routes), the HTTPS-only ones are 404 as an unknown host is.
    let (code, seen) = plaintext(&gw, STATUS_HOST).await;
    assert_eq!(code, 200, "the http listener's route in plaintext: {seen}");
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["http"]));
    // The api host in plaintext: the HTTP listener's redirect.
    let r = http::get(gw.listen(), API, "/orders?x=1").await.unwrap();
    assert_eq!(r.status, 301, "{}", r.body);
    assert_eq!(
        r.headers.get("location").map(|v| v.as_bytes()),
        Some(format!("https://{API}/orders?x=1").as_bytes())
    );
    assert_eq!(
        plaintext(&gw, WWW_HOST).await.0,
        404,
        "the www route in plaintext"
    );
    assert_eq!(plaintext(&gw, "nobody.shop.example").await.0, 404);

    // The 404s did not come from a gateway that lost its routes.
    assert_eq!(api.get("/").await.unwrap().0, 200);
    assert_eq!(plaintext(&gw, STATUS_HOST).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_reaches_new_handshakes_and_a_broken_one_is_refused_keeping_the_last_good_certificate(
) {
    let pki = Pki::new();
    let (mesh, _echo) = mesh_with_echo(&good_yaml(&pki)).await;
    let (gw, https) = gateway_proxy(&mesh, "gateway", HOLDER).await;
    let pid = gw.proc.pid();
    wait_served(https, API, &pki.api_ca, &pki.api).await;
    // Opened before the rotation, used after it.
    let mut kept = H2::open(https, API, &pki.api_ca).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().0, 200);

    // A new certificate with a new key, in the same Secret.
    let renewed = pki.api_ca.host_leaf(&[API]);
    mesh.write_mesh_yaml(&mesh_yaml(
        &renewed.chain_pem,
        &renewed.key_pem,
        &pki.www,
        HOLDER,
    ));
    let started = Instant::now();
    wait_served(https, API, &pki.api_ca, &renewed).await;
    eprintln!("renewed certificate served after {:?}", started.elapsed());
    let mut fresh = H2::open(https, API, &pki.api_ca).await.unwrap();
    assert_eq!(fresh.leaf, renewed.chain[0].to_vec());
    assert_eq!(fresh.get("/").await.unwrap().0, 200, "a new connection");
    assert_eq!(kept.leaf, pki.api.chain[0].to_vec());
    assert_eq!(
        kept.get("/").await.unwrap().0,
        200,
        "the connection opened with the old certificate"
    );
    // The other listener's certificate did not move.
    let www = verified_leaf(https, WWW_HOST, &pki.www_ca).await.unwrap();
    assert_eq!(www, pki.www.chain[0].to_vec());

    // A Secret whose key belongs to another certificate: the controller
    // refuses the file naming the listener and keeps the last good one.
    let next = pki.api_ca.host_leaf(&[API]);
    mesh.write_mesh_yaml(&mesh_yaml(
        &next.chain_pem,
        &pki.www.key_pem,
        &pki.www,
        HOLDER,
    ));
    let controller = mesh.controller.as_ref().unwrap();
    let refusal = eventually("the controller refusing the broken Secret", || async {
        controller
            .log()
            .lines()
            .find(|l| l.contains("mesh config rejected"))
            .map(str::to_string)
            .ok_or_else(|| "no refusal logged yet".to_string())
    })
    .await;
    for said in ["spec.listeners[1]", "shop/api-cert", "does not belong"] {
        assert!(refusal.contains(said), "{said:?} not in {refusal}");
    }
    // Several of the controller's reads later, still the renewed one.
    for _ in 0..10 {
        let served = verified_leaf(https, API, &pki.api_ca).await.unwrap();
        assert_eq!(
            served,
            renewed.chain[0].to_vec(),
            "the last good certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh.get("/").await.unwrap().0, 200);
    assert_eq!(kept.get("/").await.unwrap().0, 200);
    // Refused by the controller, not by the proxy (which would NACK it).
    let log = gw.proc.log();
    assert!(
        !log.contains("discovery response rejected"),
        "the broken Secret reached the proxy:\n{log}"
    );

    // Fixed, the file is followed again.
    mesh.write_mesh_yaml(&mesh_yaml(&next.chain_pem, &next.key_pem, &pki.www, HOLDER));
    wait_served(https, API, &pki.api_ca, &next).await;
    assert_eq!(gw.proc.pid(), pid, "the gateway was not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_proxy_of_another_service_account_follows_the_routes_but_never_gets_the_keys() {
    let pki = Pki::new();
    let (mesh, _echo) = mesh_with_echo(&good_yaml(&pki)).await;
    // The account the Gateway's own name would make its holder without the
    // annotation, which names HOLDER instead.
    let (other, other_https) = gateway_proxy(&mesh, "gateway-other", GATEWAY).await;
    // The holder, as the control: the same Gateway, served.
    let (_holder, holder_https) = gateway_proxy(&mesh, "gateway-edge", HOLDER).await;
    wait_served(holder_https, API, &pki.api_ca, &pki.api).await;

    // The other proxy has the Gateway's routes ...
    let (code, seen) = eventually("the routes on the other proxy", || async {
        match plaintext(&other, STATUS_HOST).await {
            (200, seen) => Ok((200, seen)),
            (code, seen) => Err(format!("{code}: {seen}")),
        }
    })
    .await;
    assert_eq!(code, 200, "{seen}");
    // ... and the Gateway's certificates resource, empty.
    let key = format!("{GATEWAY}.shop");
    let held = eventually("the certificates resource on the other proxy", || {
        let key = key.clone();
        let other = &other;
        async move {
            let dump = other.admin_json("/config_dump").await;
            let held = dump["snapshot"]["gateway_certificates"][&key].clone();
            match held.is_null() {
                true => Err(format!("not yet: {dump}")),
                false => Ok(held),
            }
        }
    })
    .await;
    assert_eq!(
        held["certificates"],
        serde_json::json!([]),
        "another service account holds no certificate: {held}"
    );

    // So its TLS socket serves nobody, whatever the name, and says why.
    let before = metric(&other.metrics().await, NO_CERTIFICATE);
    // A client that would accept any certificate still gets none.
    for name in [dns(API), dns(WWW_HOST), no_sni(other_https)] {
        let got = unverified_leaf(other_https, name.clone()).await;
        assert!(
            got.is_err(),
            "{name:?} got {:?}",
            got.map(|der| dns_names(&der))
        );
    }
    let counted = eventually("no_certificate failures counted", || {
        let other = &other;
        async move {
            let text = other.metrics().await;
            let n = metric(&text, NO_CERTIFICATE);
            match n >= before + 3.0 {
                true => Ok(n),
                false => Err(format!("{n} (before: {before})")),
            }
        }
    })
    .await;
    assert!(counted >= 3.0);
    // While the holder serves both names.
    let www = verified_leaf(holder_https, WWW_HOST, &pki.www_ca)
        .await
        .unwrap();
    assert_eq!(www, pki.www.chain[0].to_vec());
    assert!(!other.proc.log().contains("PRIVATE KEY"));
}
