//! The controller's admission and discovery under attack: hijacked
//! registrations, poisoned workloads, bad and endless subscriptions, and
//! join tokens that expired, were revoked, or never existed.

use std::time::Duration;

use mycel_api::v1::discovery_client::DiscoveryClient;
use mycel_api::v1::discovery_request::Kind;
use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::{
    resource, Ack, CertifyRequest, DiscoveryRequest, DiscoveryResponse, Hello, Subscribe, Workload,
};
use mycel_test_support::ca::Csr;
use mycel_tests::mesh::{write_token, Mesh, SidecarSpec, TokenFor};
use mycel_tests::process::bin;
use mycel_tests::shop::mesh_yaml;
use mycel_tests::{grpc, http};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Identity};
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// A certificate (chain PEM, key PEM) from the controller's CA.
#[derive(Clone)]
struct Cert {
    chain: String,
    key: String,
}

async fn channel(mesh: &Mesh, cert: Option<&Cert>) -> Channel {
    let client = cert.map(|c| Identity::from_pem(&c.chain, &c.key));
    grpc::controller(mesh, client).await
}

fn pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Certify over `channel` with `token`; the status on refusal.
async fn certify_on(channel: Channel, token: &str) -> Result<Cert, tonic::Status> {
    let csr = Csr::new();
    let reply = IdentityClient::new(channel)
        .certify(CertifyRequest {
            token: token.to_string(),
            csr_der: csr.der,
            requested_ttl_seconds: 0,
        })
        .await?
        .into_inner();
    Ok(Cert {
        chain: reply.chain_der.iter().map(|d| pem(d)).collect(),
        key: csr.key_pem,
    })
}

/// Creates a token with the real CLI; returns (token, token id).
fn token(mesh: &Mesh, t: &TokenFor) -> (String, String) {
    let path = write_token(&mesh.path("data"), mesh.dir.path(), t);
    let token = std::fs::read_to_string(path).expect("token file");
    let out = std::process::Command::new(bin("mycelctl"))
        .args(["token", "list", "--json", "--data-dir"])
        .arg(mesh.path("data"))
        .output()
        .expect("mycelctl token list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list json");
    let id = list
        .as_array()
        .and_then(|a| a.last())
        .and_then(|t| t["id"].as_str())
        .expect("token id")
        .to_string();
    (token, id)
}

fn tok(name: &str, sa: &str, labels: &[(&str, &str)]) -> TokenFor {
    let mut t = TokenFor::new(name, "shop", sa);
    t.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    t
}

fn workload(sa: &str, labels: &[(&str, &str)], address: &str) -> Workload {
    Workload {
        name: sa.into(),
        namespace: "shop".into(),
        service_account: sa.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        address: address.into(),
        mesh_port: 15001,
        ports: vec![],
        ready: true,
        zone: String::new(),
    }
}

fn hello(w: Workload, register: bool, subs: &[&str]) -> Hello {
    Hello {
        proxy_id: format!("{}-test", w.name),
        workload: Some(w),
        register,
        subscriptions: subs.iter().map(|s| s.to_string()).collect(),
        known: vec![],
        mode: String::new(),
        gateway: String::new(),
        admin: None,
    }
}

struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Stream {
    async fn next(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Err(_) => panic!("no discovery response within {WAIT:?}"),
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => Err(tonic::Status::unavailable("stream ended")),
            Ok(Err(s)) => Err(s),
        }
    }

    async fn send(&self, kind: Kind) {
        self.tx
            .send(DiscoveryRequest { kind: Some(kind) })
            .await
            .expect("stream open");
    }

    async fn ack(&self, nonce: &str) {
        self.send(Kind::Ack(Ack {
            nonce: nonce.into(),
        }))
        .await;
    }

    /// Reads (and ACKs) responses until one satisfies `f`.
    async fn until(&mut self, f: impl Fn(&DiscoveryResponse) -> bool) -> DiscoveryResponse {
        loop {
            let r = self.next().await.expect("stream stays up");
            self.ack(&r.nonce).await;
            if f(&r) {
                return r;
            }
        }
    }
}

/// Opens a stream; Err = the status the stream was refused with.
async fn open(channel: Channel, hello: Hello) -> Result<Stream, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Hello(hello)),
    })
    .await
    .expect("queue hello");
    let rx = DiscoveryClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut s = Stream { tx, rx };
    // A refused Hello arrives as the first message of the response stream.
    let first = s.next().await?;
    s.ack(&first.nonce).await;
    Ok(s)
}

fn endpoint_addresses(r: &DiscoveryResponse, service: &str) -> Option<Vec<String>> {
    r.resources.iter().find_map(|res| match &res.body {
        Some(resource::Body::Endpoints(e)) if e.service == service => {
            Some(e.endpoints.iter().map(|ep| ep.address.clone()).collect())
        }
        _ => None,
    })
}

async fn debug_proxies(mesh: &Mesh) -> serde_json::Value {
    let r = http::get(mesh.admin, "localhost", "/debug/proxies")
        .await
        .expect("debug/proxies");
    serde_json::from_str(&r.body).expect("json")
}

async fn metrics(mesh: &Mesh) -> String {
    http::get(mesh.admin, "localhost", "/metrics")
        .await
        .expect("metrics")
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hijack_with_foreign_labels_is_refused() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    // A token of the namespace, for another workload than catalog.
    let (evil, _) = token(&mesh, &tok("evil", "evil", &[("app", "evil")]));
    let cert = certify_on(channel(&mesh, None).await, &evil).await.unwrap();
    let e = open(
        channel(&mesh, Some(&cert)).await,
        hello(
            workload("evil", &[("app", "catalog")], "127.0.0.1"),
            true,
            &[],
        ),
    )
    .await
    .err()
    .expect("hijacking registration refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("labels"), "{}", e.message());
    // Its own labels are accepted.
    open(
        channel(&mesh, Some(&cert)).await,
        hello(workload("evil", &[("app", "evil")], "127.0.0.1"), true, &[]),
    )
    .await
    .expect("own labels accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hijack_with_foreign_address_is_refused() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let labels = [("app", "catalog")];
    let (t, _) = token(&mesh, &tok("catalog", "catalog", &labels));
    let cert = certify_on(channel(&mesh, None).await, &t).await.unwrap();
    // Another workload's address: the stream comes from 127.0.0.1.
    let e = open(
        channel(&mesh, Some(&cert)).await,
        hello(workload("catalog", &labels, "127.0.0.77"), true, &[]),
    )
    .await
    .err()
    .expect("foreign address refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("127.0.0.77"), "{}", e.message());
    assert!(e.message().contains("source address"), "{}", e.message());
    // A token that allows a block admits an address in it.
    let mut allowed = tok("catalog2", "catalog", &labels);
    allowed.addresses = vec!["127.0.0.64/26".into()];
    let (t2, _) = token(&mesh, &allowed);
    let cert2 = certify_on(channel(&mesh, None).await, &t2).await.unwrap();
    open(
        channel(&mesh, Some(&cert2)).await,
        hello(workload("catalog", &labels, "127.0.0.77"), true, &[]),
    )
    .await
    .expect("address allowed by the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscription_keeps_stream_and_registration() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let labels = [("app", "catalog")];
    let (t, _) = token(&mesh, &tok("catalog", "catalog", &labels));
    let cert = certify_on(channel(&mesh, None).await, &t).await.unwrap();
    let mut s = open(
        channel(&mesh, Some(&cert)).await,
        hello(workload("catalog", &labels, "127.0.0.1"), true, &[".shop"]),
    )
    .await
    .expect("a bad key in Hello does not refuse the stream");
    let r = s.until(|r| !r.refused.is_empty()).await;
    assert_eq!(r.refused[0].service, ".shop");
    s.send(Kind::Subscribe(Subscribe {
        add: vec!["..".into(), "reviews.shop".into()],
        remove: vec![],
    }))
    .await;
    let r = s.until(|r| !r.refused.is_empty()).await;
    assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    assert_eq!(r.refused[0].service, "..");
    // The good key of the same message is served, on the same stream.
    s.until(|r| endpoint_addresses(r, "reviews.shop").is_some())
        .await;
    let proxies = debug_proxies(&mesh).await;
    let me = proxies
        .as_array()
        .and_then(|a| a.iter().find(|p| p["workload"] == "catalog"))
        .expect("still connected");
    assert_eq!(me["registered"], true, "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_registration_is_refused_and_subscribers_stay_in_sync() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let (sub_token, _) = token(&mesh, &tok("frontend", "frontend", &[("app", "frontend")]));
    let sub_cert = certify_on(channel(&mesh, None).await, &sub_token)
        .await
        .unwrap();
    let mut subscriber = open(
        channel(&mesh, Some(&sub_cert)).await,
        hello(
            workload("frontend", &[], "127.0.0.1"),
            false,
            &["catalog.shop"],
        ),
    )
    .await
    .unwrap();

    let labels = [("app", "catalog")];
    let mut poison = tok("catalog", "catalog", &labels);
    poison.addresses = vec!["0.0.0.0/0".into()];
    let (t, _) = token(&mesh, &poison);
    let cert = certify_on(channel(&mesh, None).await, &t).await.unwrap();
    for (bad, what) in [
        ("catalog.evil", "not an IP address"),
        ("0.0.0.0", "not a dialable"),
        ("127.0.0.1:80", "not an IP address"),
    ] {
        let e = open(
            channel(&mesh, Some(&cert)).await,
            hello(workload("catalog", &labels, bad), true, &[]),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains(what), "{bad}: {}", e.message());
    }
    let _good = open(
        channel(&mesh, Some(&cert)).await,
        hello(workload("catalog", &labels, "127.0.0.1"), true, &[]),
    )
    .await
    .unwrap();
    let r = subscriber
        .until(|r| endpoint_addresses(r, "catalog.shop").is_some_and(|a| !a.is_empty()))
        .await;
    assert_eq!(
        endpoint_addresses(&r, "catalog.shop").unwrap(),
        ["127.0.0.1"]
    );
    let m = metrics(&mesh).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("mycel_controller_discovery_nacks_total 0")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let mut t = tok("short", "catalog", &[]);
    t.ttl = Some("1s".into());
    let (short, _) = token(&mesh, &t);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let e = certify_on(channel(&mesh, None).await, &short)
        .await
        .err()
        .expect("expired token refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("expired"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_cannot_renew() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let labels = [("app", "catalog")];
    let (t, id) = token(&mesh, &tok("catalog", "catalog", &labels));
    let cert = certify_on(channel(&mesh, None).await, &t).await.unwrap();
    // A renewal is authenticated by the current certificate, not a token.
    let renewed = certify_on(channel(&mesh, Some(&cert)).await, "")
        .await
        .expect("renewal by certificate");
    let out = std::process::Command::new(bin("mycelctl"))
        .args(["token", "revoke", &id, "--data-dir"])
        .arg(mesh.path("data"))
        .output()
        .expect("mycelctl token revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The controller looks at tokens.json at most once a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for c in [&cert, &renewed] {
        let e = certify_on(channel(&mesh, Some(c)).await, &t)
            .await
            .err()
            .expect("renewal of a revoked token's certificate refused");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("revoked"), "{}", e.message());
    }
    let e = certify_on(channel(&mesh, None).await, &t)
        .await
        .err()
        .unwrap();
    assert!(e.message().contains("revoked"), "{}", e.message());
    let e = open(
        channel(&mesh, Some(&renewed)).await,
        hello(workload("catalog", &labels, "127.0.0.1"), true, &[]),
    )
    .await
    .err()
    .expect("registration with a revoked token's certificate refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_flood_is_rate_limited() {
    let mesh = Mesh::start_with(
        &mesh_yaml(""),
        &["--certify-rate-per-ip", "5", "--certify-burst-per-ip", "10"],
    )
    .await;
    let unknown = format!("mycel.{}", "ab".repeat(32));
    let ch = channel(&mesh, None).await;
    let mut limited = 0;
    let mut denied = 0;
    for _ in 0..200 {
        match certify_on(ch.clone(), &unknown).await {
            Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
            Err(e) if e.code() == Code::PermissionDenied => denied += 1,
            other => panic!("unexpected {:?}", other.err()),
        }
    }
    assert!(limited >= 150, "limited {limited}, denied {denied}");
    assert!(denied >= 10, "the burst is served: {denied}");
    let m = metrics(&mesh).await;
    assert!(m.contains("result=\"rate_limited\""), "{m}");
    assert!(m.contains("result=\"unknown_token\""), "{m}");
    // Counted, not logged line by line.
    let log = mesh
        .controller
        .as_ref()
        .map(|c| c.log())
        .unwrap_or_default();
    let warns = log
        .lines()
        .filter(|l| l.contains("certify refused"))
        .count();
    assert!(warns < 5, "{warns} log lines for a flood:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscriptions_are_capped() {
    let mesh = Mesh::start_with(&mesh_yaml(""), &["--max-subscriptions-per-proxy", "100"]).await;
    let (t, _) = token(&mesh, &tok("frontend", "frontend", &[]));
    let cert = certify_on(channel(&mesh, None).await, &t).await.unwrap();
    let mut s = open(
        channel(&mesh, Some(&cert)).await,
        hello(
            workload("frontend", &[], "127.0.0.1"),
            false,
            &["catalog.shop"],
        ),
    )
    .await
    .unwrap();
    let mut refused = 0;
    for batch in 0..6 {
        let add: Vec<String> = (0..500).map(|i| format!("host-{batch}-{i}.shop")).collect();
        s.send(Kind::Subscribe(Subscribe {
            add,
            remove: vec![],
        }))
        .await;
        let r = s.until(|r| !r.refused.is_empty()).await;
        assert!(
            r.refused[0].reason.contains("maximum of 100"),
            "{:?}",
            r.refused[0]
        );
        refused += r.refused.len();
    }
    assert_eq!(refused, 3000 - 99);
    // The stream is still up and serves what it holds.
    s.send(Kind::Subscribe(Subscribe {
        add: vec![],
        remove: vec!["catalog.shop".into()],
    }))
    .await;
    s.send(Kind::Subscribe(Subscribe {
        add: vec!["reviews.shop".into()],
        remove: vec![],
    }))
    .await;
    s.until(|r| endpoint_addresses(r, "reviews.shop").is_some())
        .await;
    let proxies = debug_proxies(&mesh).await;
    let subs = proxies
        .as_array()
        .and_then(|a| a.iter().find(|p| p["workload"] == "frontend"))
        .and_then(|p| p["subscriptions"].as_array().map(Vec::len));
    assert_eq!(subs, Some(100));
}

/// A stolen (or deleted) token file is not what keeps a proxy alive: after
/// the first certificate, the proxy renews with that certificate alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_needs_no_token_once_joined() {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let spec = SidecarSpec::new("catalog", "catalog")
        .label("app", "catalog")
        .arg("--cert-ttl")
        .arg("4s");
    let sidecar = mesh.sidecar(spec).await;
    let serial = |v: serde_json::Value| v["serial"].as_str().unwrap_or_default().to_string();
    let first = serial(sidecar.admin_json("/certs").await);
    std::fs::remove_file(mesh.path("catalog.token")).expect("remove the token file");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = serial(sidecar.admin_json("/certs").await);
        if !now.is_empty() && now != first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal without the token file:\n{}\ncontroller:\n{}",
            sidecar.proc.log(),
            mesh.controller
                .as_ref()
                .map(|c| c.log())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
