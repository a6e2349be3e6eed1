//! Gateway API mesh routes through a real kube-apiserver: the vendored
//! Gateway API CRDs and the mesh's own installed, the controller running as
//! a ServiceAccount bound to exactly `rbac::REQUIRED` (so its status
//! writes prove the rights suffice). An HTTPRoute whose parent is a
//! Service reaches a proxy subscribed to that Service as a `ROUTES`
//! resource, and a change as a delta of that resource alone; its
//! `status.parents` reads Accepted/ResolvedRefs, then BackendNotFound for
//! a backend that does not exist; another controller's entry in
//! `status.parents` survives every write.
//!
//! The proxy here is a plain Discovery client (certified with the
//! ServiceAccount token, as a sidecar is), since what the sidecar does with
//! routes is not asserted by this test.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use mycel_api::v1::discovery_client::DiscoveryClient;
use mycel_api::v1::discovery_request::Kind;
use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::{
    resource, Ack, CertifyRequest, DiscoveryRequest, DiscoveryResponse, Hello, ResourceType,
    Routes, Workload,
};
use mycel_crds::gateway_api::httproutes::HttpRoute;
use mycel_test_support::ca::Csr;
use mycel_tests::mesh::Mesh;
use mycel_tests::{grpc, k8s};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Identity;
use tonic::Streaming;

use super::k8s::{create, sa_token, seed};
use super::k8s_policy::{install_crd_dir, install_crds, poll};

const NS: &str = "shop";
const CONTROLLER: &str = "mycel.io/mesh-controller";
const OTHER: &str = "example.com/gateway-controller";

/// Creates the vendored Gateway API CRDs and waits until each is served.
pub(super) async fn install_gateway_api(admin: &Client) {
    let names = install_crd_dir(admin, "crds/gateway-api/crds").await;
    assert!(names.contains(&"httproutes.gateway.networking.k8s.io".to_string()));
}

/// A real API server with the mesh's and the Gateway API's CRDs, the shop
/// namespace seeded, and the controller's account (see
/// [`super::k8s_ca::cluster`]): `(api server, admin, controller)`.
pub(super) async fn gateway_api_cluster() -> (mycel_tests::k8s::ApiServer, Client, Client) {
    let (api, admin, controller) = super::k8s_ca::cluster().await;
    install_crds(&admin).await;
    install_gateway_api(&admin).await;
    seed(&admin, &[]).await;
    (api, admin, controller)
}

async fn service(admin: &Client, name: &str) {
    let _: Service = create(
        admin,
        Some(NS),
        json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 9080}]}}),
    )
    .await;
}

fn split(v2: &str) -> Value {
    json!({
        "parentRefs": [
            {"group": "", "kind": "Service", "name": "reviews", "port": 9080},
            {"name": "public"},
        ],
        "rules": [{"backendRefs": [
            {"name": "reviews-v1", "port": 9080, "weight": 90},
            {"name": v2, "port": 9080, "weight": 10},
        ]}],
    })
}

/// A discovery stream as a proxy opens it, subscribed to reviews.shop (or
/// following a Gateway: [`Proxy::open_hello`]).
pub(super) struct Proxy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    /// Whose routes [`Proxy::until`] waits for.
    parent: String,
}

impl Proxy {
    async fn open(mesh: &Mesh, token: &str) -> Proxy {
        let hello = Hello {
            proxy_id: "routes-probe".into(),
            workload: Some(Workload {
                name: "client-0".into(),
                namespace: NS.into(),
                service_account: "client".into(),
                ..Workload::default()
            }),
            register: false,
            subscriptions: vec!["reviews.shop".into()],
            known: vec![],
            mode: "sidecar".into(),
            gateway: String::new(),
            admin: None,
        };
        Self::open_hello(mesh, token, hello, "reviews.shop").await
    }

    /// Opens a stream with `hello`, waiting for the routes of `parent`.
    pub(super) async fn open_hello(mesh: &Mesh, token: &str, hello: Hello, parent: &str) -> Proxy {
        let csr = Csr::new();
        let channel = grpc::controller(mesh, None).await;
        let reply = IdentityClient::new(channel)
            .certify(CertifyRequest {
                token: token.to_string(),
                csr_der: csr.der,
                requested_ttl_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let chain: String = reply
            .chain_der
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect();
        let channel = grpc::controller(mesh, Some(Identity::from_pem(chain, &csr.key_pem))).await;
        let (tx, rx) = mpsc::channel(16);
        tx.send(DiscoveryRequest {
            kind: Some(Kind::Hello(hello)),
        })
        .await
        .unwrap();
        let rx = DiscoveryClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Proxy {
            tx,
            rx,
            parent: parent.to_string(),
        }
    }

    /// Reads (and ACKs) responses until one holds the parent's routes
    /// satisfying `f`; returns that response.
    pub(super) async fn until(
        &mut self,
        what: &str,
        f: impl Fn(&Routes) -> bool,
    ) -> DiscoveryResponse {
        let parent = self.parent.clone();
        self.until_body(what, |body| match body {
            resource::Body::Routes(routes) => routes.parent == parent && f(routes),
            _ => false,
        })
        .await
    }

    /// Reads (and ACKs) responses until one holds a resource whose body
    /// satisfies `f`; returns that response.
    pub(super) async fn until_body(
        &mut self,
        what: &str,
        f: impl Fn(&resource::Body) -> bool,
    ) -> DiscoveryResponse {
        let wait = Duration::from_secs(20);
        let mut last: Option<String> = None;
        loop {
            let r = tokio::time::timeout(wait, self.rx.message())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{what}: no discovery response within {wait:?}; last resources: {last:?}"
                    )
                })
                .unwrap_or_else(|s| panic!("{what}: the stream failed: {s}"))
                .unwrap_or_else(|| panic!("{what}: the stream ended"));
            self.tx
                .send(DiscoveryRequest {
                    kind: Some(Kind::Ack(Ack {
                        nonce: r.nonce.clone(),
                    })),
                })
                .await
                .unwrap();
            last = Some(format!("{:?}", r.resources));
            let found = r
                .resources
                .iter()
                .any(|res| res.body.as_ref().is_some_and(&f));
            if found {
                return r;
            }
        }
    }
}

fn weights(routes: &Routes) -> Vec<(String, u32)> {
    routes.routes[0].rules[0]
        .backends
        .iter()
        .map(|b| (b.service.clone(), b.weight))
        .collect()
}

/// `(status, reason)` of each condition of our entry, and whether the
/// other controller's entry is there.
async fn parents(api: &Api<HttpRoute>) -> (Vec<(String, String, String)>, bool) {
    let route = api.get("reviews").await.unwrap();
    let list = route.status.map(|s| s.parents).unwrap_or_default();
    let ours = list
        .iter()
        .find(|p| p.controller_name == CONTROLLER)
        .map(|p| {
            assert_eq!(p.parent_ref.kind.as_deref(), Some("Service"));
            assert_eq!(p.parent_ref.port, Some(9080));
            p.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect()
        })
        .unwrap_or_default();
    let other = list.iter().any(|p| p.controller_name == OTHER);
    (ours, other)
}

async fn wait_parents(api: &Api<HttpRoute>, resolved: (&str, &str), other: bool) {
    let want = vec![
        (
            "Accepted".to_string(),
            "True".to_string(),
            "Accepted".to_string(),
        ),
        (
            "ResolvedRefs".to_string(),
            resolved.0.to_string(),
            resolved.1.to_string(),
        ),
    ];
    poll(
        &format!("status.parents ResolvedRefs={resolved:?}, other={other}"),
        || async {
            let (ours, has_other) = parents(api).await;
            (ours == want && has_other == other).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_reach_proxies_and_report_status_beside_other_controllers() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = gateway_api_cluster().await;
    for name in ["reviews", "reviews-v1", "reviews-v2"] {
        service(&admin, name).await;
    }
    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let routes: Api<HttpRoute> = Api::namespaced(admin.clone(), NS);

    // A 90/10 split attached to reviews: sent to the subscribed proxy.
    let _: HttpRoute = create(
        &admin,
        Some(NS),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "reviews"}, "spec": split("reviews-v2")}),
    )
    .await;
    let token = sa_token(&admin, mesh.dir.path(), "client", "mycel").await;
    let mut proxy = Proxy::open(&mesh, std::fs::read_to_string(token).unwrap().trim()).await;
    proxy
        .until("the split", |r| {
            r.routes[0].name == "shop/reviews"
                && r.routes[0].ports == [9080]
                && weights(r)
                    == [
                        ("reviews-v1.shop".to_string(), 90),
                        ("reviews-v2.shop".to_string(), 10),
                    ]
        })
        .await;
    wait_parents(&routes, ("True", "ResolvedRefs"), false).await;

    // Another controller writes its own entry (a Gateway parent); a merge
    // patch replaces the list, so ours is gone for a moment: the
    // controller writes it back beside the other one.
    let other = json!({"status": {"parents": [{
        "parentRef": {"name": "public"},
        "controllerName": OTHER,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "observedGeneration": 1,
                        "lastTransitionTime": "2024-01-01T00:00:00Z"}],
    }]}});
    routes
        .patch_status("reviews", &PatchParams::default(), &Patch::Merge(&other))
        .await
        .unwrap();
    wait_parents(&routes, ("True", "ResolvedRefs"), true).await;

    // A backend that does not exist: applied (the proxy is told), and
    // ResolvedRefs says BackendNotFound; the other entry stays. The
    // change reaches the proxy as the routes resource alone.
    let patch = json!({"spec": split("reviews-v3")});
    routes
        .patch("reviews", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let delta = proxy
        .until("the changed split", |r| {
            weights(r).contains(&("reviews-v3.shop".to_string(), 10))
        })
        .await;
    let kinds: Vec<i32> = delta
        .resources
        .iter()
        .map(|r| r.key.as_ref().unwrap().r#type)
        .collect();
    assert_eq!(
        kinds,
        [ResourceType::Routes as i32],
        "only the routes are re-sent"
    );
    wait_parents(&routes, ("False", "BackendNotFound"), true).await;

    // The Service appears: resolved again.
    service(&admin, "reviews-v3").await;
    wait_parents(&routes, ("True", "ResolvedRefs"), true).await;

    // Nothing more to write: the status stays as it is.
    let version = |r: HttpRoute| r.metadata.resource_version.unwrap();
    let before = version(routes.get("reviews").await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(version(routes.get("reviews").await.unwrap()), before);
    drop(api);
}
