//! In-process test of the real controller runtime on loopback: certify with
//! a join token, open discovery streams with the issued certificates, and
//! watch endpoints appear and disappear.

// Tests may unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use mycel_api::v1::discovery_client::DiscoveryClient;
use mycel_api::v1::discovery_request::Kind;
use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::{
    resource, Ack, CertifyRequest, DiscoveryRequest, DiscoveryResponse, Hello, ResourceType,
    Subscribe, Workload,
};
use mycel_control_plane::ca::authority::cert_pem;
use mycel_control_plane::ca::tokens::{TokenError, TokenSpec};

/// A join token for `sa` in shop whose workload registers with app=`sa`.
fn create_token(data: &std::path::Path, ns: &str, sa: &str) -> Result<String, TokenError> {
    let spec = TokenSpec {
        namespace: ns.into(),
        service_account: sa.into(),
        labels: [("app".to_string(), sa.to_string())].into(),
        ..TokenSpec::default()
    };
    mycel_control_plane::ca::tokens::create_token(data, &spec).map(|(t, _)| t)
}
use mycel_control_plane::runtime::{Config, Controller, RunningController};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Streaming};

/// Generous bound for anything the test waits for; never a speed claim.
const WAIT: Duration = Duration::from_secs(10);

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  selector: {app: catalog}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

async fn start(dir: &Path) -> RunningController {
    mycel_test_support::init_tracing();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();
    let mut config = Config::new(dir.join("data"));
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.mesh_config = Some(mesh);
    Controller::start(config).await.unwrap()
}

async fn channel(ctl: &RunningController, identity: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ctl.root_pem()))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Channel::from_shared(format!("https://{}", ctl.grpc_addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Certifies with a fresh key and returns the TLS identity.
async fn certify(ctl: &RunningController, token: &str) -> Identity {
    let csr = mycel_test_support::ca::Csr::new();
    let mut client = IdentityClient::new(channel(ctl, None).await);
    let resp = client
        .certify(CertifyRequest {
            token: token.into(),
            csr_der: csr.der,
            requested_ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.chain_der.len(), 2);
    let chain: String = resp.chain_der.iter().map(|d| cert_pem(d)).collect();
    Identity::from_pem(chain, csr.key_pem)
}

fn workload(name: &str, app: &str, ready: bool) -> Workload {
    Workload {
        name: name.into(),
        namespace: "shop".into(),
        service_account: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        address: "127.0.0.1".into(),
        mesh_port: 15001,
        ports: vec![],
        ready,
        zone: "z1".into(),
    }
}

struct Proxy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

async fn open(channel: Channel, hello: Hello) -> Result<Proxy, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let mut client = DiscoveryClient::new(channel);
    let rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Proxy { tx, rx })
}

impl Proxy {
    async fn next(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(tonic::Status::aborted("stream ended")),
            Ok(Err(s)) => Err(s),
            Err(_) => panic!("no discovery response within {WAIT:?}"),
        }
    }

    async fn ack(&self, nonce: &str) {
        self.tx
            .send(DiscoveryRequest {
                kind: Some(Kind::Ack(Ack {
                    nonce: nonce.into(),
                })),
            })
            .await
            .unwrap();
    }

    /// Reads (and ACKs) responses until the endpoints of `service` have
    /// `count` entries; returns them.
    async fn wait_endpoints(
        &mut self,
        service: &str,
        count: usize,
    ) -> Vec<mycel_api::v1::Endpoint> {
        for _ in 0..20 {
            let resp = self.next().await.unwrap();
            self.ack(&resp.nonce).await;
            for r in resp.resources {
                if let Some(resource::Body::Endpoints(e)) = r.body {
                    if e.service == service && e.endpoints.len() == count {
                        return e.endpoints;
                    }
                }
            }
        }
        panic!("endpoints of {service} never reached {count}");
    }
}

fn hello(proxy_id: &str, w: Workload, register: bool, subs: &[&str]) -> Hello {
    Hello {
        proxy_id: proxy_id.into(),
        workload: Some(w),
        register,
        subscriptions: subs.iter().map(|s| s.to_string()).collect(),
        known: vec![],
        mode: "sidecar".into(),
        gateway: String::new(),
        admin: None,
    }
}

/// Status and body of an admin page.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let reply = mycel_test_support::http::get(addr, "x", path)
        .await
        .unwrap();
    (reply.status, reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_register_subscribe_and_unregister() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = start(dir.path()).await;
    let data = dir.path().join("data");
    // Tokens created while the controller runs are accepted.
    let catalog_token = create_token(&data, "shop", "catalog").unwrap();
    let frontend_token = create_token(&data, "shop", "frontend").unwrap();
    let catalog_id = certify(&ctl, &catalog_token).await;
    let frontend_id = certify(&ctl, &frontend_token).await;

    // The catalog proxy registers its workload.
    let mut catalog = open(
        channel(&ctl, Some(catalog_id)).await,
        hello("catalog-1", workload("catalog", "catalog", true), true, &[]),
    )
    .await
    .unwrap();
    let first = catalog.next().await.unwrap();
    assert!(first
        .resources
        .iter()
        .any(|r| r.key.as_ref().unwrap().r#type == ResourceType::TrustBundle as i32));
    catalog.ack(&first.nonce).await;

    // The frontend proxy subscribes and sees the endpoint.
    let mut frontend = open(
        channel(&ctl, Some(frontend_id)).await,
        hello(
            "frontend-1",
            workload("frontend", "frontend", true),
            false,
            &[],
        ),
    )
    .await
    .unwrap();
    let first = frontend.next().await.unwrap();
    frontend.ack(&first.nonce).await;
    frontend
        .tx
        .send(DiscoveryRequest {
            kind: Some(Kind::Subscribe(Subscribe {
                add: vec!["catalog.shop".into(), "missing.shop".into()],
                remove: vec![],
            })),
        })
        .await
        .unwrap();
    let eps = frontend.wait_endpoints("catalog.shop", 1).await;
    assert_eq!(
        eps[0].spiffe_id,
        "spiffe://cluster.local/ns/shop/sa/catalog"
    );
    assert_eq!(eps[0].address, "127.0.0.1");
    assert_eq!(eps[0].mesh_port, 15001);
    assert_eq!(eps[0].workload, "catalog");

    // The admin server shows both proxies.
    let (status, body) = http_get(ctl.admin_addr(), "/debug/proxies").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"proxy_id\": \"catalog-1\""), "{body}");
    assert!(body.contains("\"registered\": true"), "{body}");
    assert!(body.contains("\"catalog.shop\""), "{body}");
    let (_, metrics) = http_get(ctl.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains("mycel_controller_connected_proxies 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mycel_controller_index_endpoints 1"),
        "{metrics}"
    );
    assert_eq!(http_get(ctl.admin_addr(), "/ready").await.0, 200);

    // Closing the catalog stream removes its endpoint everywhere.
    drop(catalog);
    let eps = frontend.wait_endpoints("catalog.shop", 0).await;
    assert!(eps.is_empty());

    drop(frontend);
    ctl.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = start(dir.path()).await;
    let data = dir.path().join("data");

    // Certify without or with an unknown token.
    let mut identity = IdentityClient::new(channel(&ctl, None).await);
    let req = |token: &str| CertifyRequest {
        token: token.into(),
        csr_der: vec![1],
        requested_ttl_seconds: 0,
    };
    let e = identity.certify(req("")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "missing join token");
    let e = identity
        .certify(req(&format!("mycel.{}", "0".repeat(64))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let token = create_token(&data, "shop", "catalog").unwrap();
    let e = identity.certify(req(&token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Discovery without a client certificate.
    let r = open(
        channel(&ctl, None).await,
        hello("p", workload("catalog", "catalog", true), false, &[]),
    )
    .await;
    let code = match r {
        Err(s) => s.code(),
        Ok(mut p) => p.next().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::Unauthenticated);

    // A Hello claiming another identity than the certificate's.
    let id = certify(&ctl, &token).await;
    let r = open(
        channel(&ctl, Some(id)).await,
        hello("p", workload("frontend", "frontend", true), true, &[]),
    )
    .await;
    let code = match r {
        Err(s) => s.code(),
        Ok(mut p) => p.next().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::PermissionDenied);

    ctl.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = start(dir.path()).await;
    let token = create_token(&dir.path().join("data"), "shop", "frontend").unwrap();
    let id = certify(&ctl, &token).await;
    let mut p = open(
        channel(&ctl, Some(id)).await,
        hello(
            "f",
            workload("frontend", "frontend", true),
            false,
            &["nope.shop"],
        ),
    )
    .await
    .unwrap();
    let resp = p.next().await.unwrap();
    let nf = resp
        .resources
        .iter()
        .find(|r| r.key.as_ref().unwrap().name == "nope.shop")
        .unwrap();
    assert!(matches!(nf.body, Some(resource::Body::NotFound(_))));
    drop(p);
    ctl.shutdown().await.unwrap();
}

const GATEWAY: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: mycel
  listeners: [{name: http, port: 8080, protocol: HTTP, hostname: "*.shop.example"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catalog, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [HOST]
  rules: [{backendRefs: [{name: catalog, port: 80}]}]
"#;

fn gateway_hello(gateway: &str) -> Hello {
    let mut w = workload("gateway", "gateway", true);
    w.address = String::new();
    w.mesh_port = 0;
    Hello {
        mode: "gateway".into(),
        gateway: gateway.into(),
        ..hello("gw", w, false, &[])
    }
}

/// The hostnames of every route of the GATEWAY_ROUTES resource in `resp`;
/// None when it holds `not_found`.
fn gateway_routes(resp: &DiscoveryResponse, gateway: &str) -> Option<Option<Vec<String>>> {
    let r = resp.resources.iter().find(|r| {
        r.key
            .as_ref()
            .is_some_and(|k| k.r#type == ResourceType::GatewayRoutes as i32 && k.name == gateway)
    })?;
    Some(match &r.body {
        Some(resource::Body::Routes(routes)) => {
            assert_eq!(routes.parent, gateway);
            Some(
                routes
                    .routes
                    .iter()
                    .flat_map(|r| {
                        assert!(r.ports.is_empty(), "no ports on a Gateway parent");
                        r.hostnames.clone()
                    })
                    .collect(),
            )
        }
        Some(resource::Body::NotFound(_)) => None,
        other => panic!("unexpected body {other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_proxy_follows_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = start(dir.path()).await;
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!("{MESH}{}", GATEWAY.replace("HOST", "www.shop.example")),
    )
    .unwrap();
    let token = create_token(&dir.path().join("data"), "shop", "gateway").unwrap();
    let id = certify(&ctl, &token).await;

    // Bad keys and another namespace's Gateway are refused whole.
    for (key, code, want) in [
        (
            "web",
            Code::InvalidArgument,
            "hello.gateway \"web\" is not <name>.<namespace>",
        ),
        (
            "web.payments",
            Code::PermissionDenied,
            "a gateway proxy may only follow a Gateway of its own namespace",
        ),
    ] {
        let r = open(channel(&ctl, Some(id.clone())).await, gateway_hello(key)).await;
        let e = match r {
            Err(s) => s,
            Ok(mut p) => p.next().await.unwrap_err(),
        };
        assert_eq!(e.code(), code, "{key}");
        assert!(e.message().contains(want), "{key}: {}", e.message());
    }

    // An unknown Gateway is not_found.
    let mut nope = open(
        channel(&ctl, Some(id.clone())).await,
        gateway_hello("nope.shop"),
    )
    .await
    .unwrap();
    let resp = nope.next().await.unwrap();
    assert_eq!(gateway_routes(&resp, "nope.shop"), Some(None));
    drop(nope);

    // The Gateway's routes come once mesh.yaml is applied, hostnames cut
    // to the listener's.
    let mut p = open(channel(&ctl, Some(id)).await, gateway_hello("web.shop"))
        .await
        .unwrap();
    let mut routes = None;
    for _ in 0..20 {
        let resp = p.next().await.unwrap();
        p.ack(&resp.nonce).await;
        if let Some(Some(hosts)) = gateway_routes(&resp, "web.shop") {
            routes = Some(hosts);
            break;
        }
    }
    assert_eq!(routes.unwrap(), ["www.shop.example"]);

    // A change of the route is pushed as a delta of that resource alone.
    std::fs::write(
        &mesh,
        format!("{MESH}{}", GATEWAY.replace("HOST", "api.shop.example")),
    )
    .unwrap();
    let resp = p.next().await.unwrap();
    assert_eq!(resp.resources.len(), 1, "{resp:?}");
    assert_eq!(
        gateway_routes(&resp, "web.shop"),
        Some(Some(vec!["api.shop.example".to_string()]))
    );
    assert!(resp.removed.is_empty());
    p.ack(&resp.nonce).await;
    drop(p);
    ctl.shutdown().await.unwrap();
}
