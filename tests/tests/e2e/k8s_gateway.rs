//! Gateway parents through a real kube-apiserver: the vendored Gateway API
//! CRDs and the mesh's own installed, the controller running as a
//! ServiceAccount bound to exactly `rbac::REQUIRED` (so its status writes
//! prove the rights suffice). A GatewayClass of ours and one of another
//! controller, a Gateway of each, and an HTTPRoute with both as parents:
//! our class and Gateway are accepted (listener `attachedRoutes` 1), the
//! route's entry for our Gateway reads Accepted/ResolvedRefs, nothing is
//! written for the other class, Gateway or parent, and a proxy following
//! `shop-gateway.shop` gets the route as `GATEWAY_ROUTES`, then a change,
//! then a GatewayPolicy its rule names (one the schema refuses never
//! exists). An HTTPS listener's `kubernetes.io/tls` Secrets reach the
//! proxies of the Gateway's service account only, follow rotation, and the
//! listener's status names a Secret that cannot serve.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mycel_api::v1::{Hello, Workload};
use mycel_crds::gateway_api::gatewayclasses::GatewayClass;
use mycel_crds::gateway_api::gateways::Gateway;
use mycel_crds::gateway_api::httproutes::HttpRoute;
use mycel_crds::GatewayPolicy;
use mycel_tests::k8s;
use mycel_tests::mesh::Mesh;
use serde_json::{json, Value};

use super::k8s::{create, sa_token};
use super::k8s_policy::poll;
use super::k8s_routes::{gateway_api_cluster, Proxy};

const NS: &str = "shop";
const GATEWAY_CONTROLLER: &str = "mycel.io/gateway-controller";
const OTHER: &str = "example.com/gateway-controller";

async fn dynamic(admin: &Client, resource: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, resource),
        None => Api::all_with(admin.clone(), resource),
    }
}

/// `(type, status, reason)` of each condition in `list`.
fn conditions(list: Option<&Value>) -> Vec<(String, String, String)> {
    list.and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("type"), s("status"), s("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn t(kind: &str, status: &str, reason: &str) -> (String, String, String) {
    (kind.into(), status.into(), reason.into())
}

fn route_spec(prefix: &str) -> Value {
    json!({
        "parentRefs": [{"name": "shop-gateway"}, {"name": "theirs"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                   "backendRefs": [{"name": "frontend", "port": 80}]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_of_our_class_are_served_and_report_status() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = gateway_api_cluster().await;
    let _: k8s_openapi::api::core::v1::Service = create(
        &admin,
        Some(NS),
        json!({"metadata": {"name": "frontend"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    for (name, controller) in [("mycel", GATEWAY_CONTROLLER), ("other", OTHER)] {
        let class: GatewayClass = serde_json::from_value(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                   "metadata": {"name": name}, "spec": {"controllerName": controller}}),
        )
        .unwrap();
        Api::<GatewayClass>::all(admin.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap();
    }
    for (name, class) in [("shop-gateway", "mycel"), ("theirs", "other")] {
        let _: Gateway = create(
            &admin,
            Some(NS),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                   "metadata": {"name": name},
                   "spec": {"gatewayClassName": class,
                            "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}}),
        )
        .await;
    }
    let _: HttpRoute = create(
        &admin,
        Some(NS),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "shop"}, "spec": route_spec("/")}),
    )
    .await;

    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let classes = dynamic(&admin, &ApiResource::erase::<GatewayClass>(&()), None).await;
    let gateways = dynamic(&admin, &ApiResource::erase::<Gateway>(&()), Some(NS)).await;
    let routes = dynamic(&admin, &ApiResource::erase::<HttpRoute>(&()), Some(NS)).await;

    // Our class: Accepted, for its generation.
    poll("GatewayClass mycel Accepted", || async {
        let c = classes.get("mycel").await.ok()?;
        let status = c.data.get("status")?;
        (conditions(status.get("conditions")) == [t("Accepted", "True", "Accepted")]
            && status["conditions"][0]["observedGeneration"] == c.metadata.generation.unwrap())
        .then_some(())
    })
    .await;

    // Our Gateway: Accepted and Programmed, one route on its listener.
    poll(
        "Gateway shop-gateway Accepted, Programmed, 1 route",
        || async {
            let g = gateways.get("shop-gateway").await.ok()?;
            let status = g.data.get("status")?;
            let listener = &status["listeners"][0];
            (conditions(status.get("conditions"))
                == [
                    t("Accepted", "True", "Accepted"),
                    t("Programmed", "True", "Programmed"),
                ]
                && listener["name"] == "http"
                && listener["attachedRoutes"] == 1
                && listener["supportedKinds"]
                    == json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                          {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
                && conditions(listener.get("conditions"))
                    == [
                        t("Accepted", "True", "Accepted"),
                        t("Programmed", "True", "Programmed"),
                        t("ResolvedRefs", "True", "ResolvedRefs"),
                    ])
            .then_some(())
        },
    )
    .await;

    // The route: one entry, ours, for our Gateway.
    poll("the route's entry for shop-gateway", || async {
        let r = routes.get("shop").await.ok()?;
        let parents = r.data.get("status")?.get("parents")?.as_array()?.clone();
        (parents.len() == 1
            && parents[0]["controllerName"] == GATEWAY_CONTROLLER
            && parents[0]["parentRef"]["name"] == "shop-gateway"
            && conditions(parents[0].get("conditions"))
                == [
                    t("Accepted", "True", "Accepted"),
                    t("ResolvedRefs", "True", "ResolvedRefs"),
                ])
        .then_some(())
    })
    .await;

    // The other controller's class and Gateway carry nothing of ours (the
    // CRDs' defaults at most: Unknown/Pending).
    let untouched = |v: Option<&Value>| {
        conditions(v.and_then(|s| s.get("conditions")))
            .iter()
            .all(|(_, status, _)| status == "Unknown")
    };
    let other = classes.get("other").await.unwrap();
    assert!(untouched(other.data.get("status")), "{:?}", other.data);
    let theirs = gateways.get("theirs").await.unwrap();
    assert!(untouched(theirs.data.get("status")), "{:?}", theirs.data);
    assert!(theirs.data["status"].get("listeners").is_none());

    // A proxy following shop-gateway.shop gets the route, then its change.
    let token = sa_token(&admin, mesh.dir.path(), "client", "mycel").await;
    let hello = Hello {
        proxy_id: "gateway-probe".into(),
        workload: Some(Workload {
            name: "gateway-0".into(),
            namespace: NS.into(),
            service_account: "client".into(),
            ..Workload::default()
        }),
        register: false,
        subscriptions: vec![],
        known: vec![],
        mode: "gateway".into(),
        gateway: "shop-gateway.shop".into(),
        admin: None,
    };
    let token = std::fs::read_to_string(token).unwrap();
    let mut proxy = Proxy::open_hello(&mesh, token.trim(), hello, "shop-gateway.shop").await;
    let prefix = |r: &mycel_api::v1::Routes| format!("{:?}", r.routes);
    proxy
        .until("the route on the Gateway", |r| {
            r.routes.len() == 1 && r.routes[0].name == "shop/shop" && r.routes[0].ports.is_empty()
        })
        .await;
    let patch = json!({"spec": route_spec("/shop")});
    routes
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    proxy
        .until("the changed route", |r| {
            r.routes.len() == 1 && prefix(r).contains("\"/shop\"")
        })
        .await;

    // A GatewayPolicy the API server's schema refuses never exists.
    let policies = dynamic(&admin, &ApiResource::erase::<GatewayPolicy>(&()), Some(NS)).await;
    let refused: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mycel.io/v1alpha1", "kind": "GatewayPolicy",
        "metadata": {"name": "everyone"},
        "spec": {"cors": {"allowOrigins": ["*"], "allowCredentials": true}},
    }))
    .unwrap();
    let err = policies
        .create(&PostParams::default(), &refused)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("allowCredentials"), "{err}");
    // Two aggregation parts of one name: refused by the list map's key.
    let twice: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mycel.io/v1alpha1", "kind": "GatewayPolicy",
        "metadata": {"name": "twice"},
        "spec": {"aggregate": {"parts": [
            {"name": "p", "backendRef": {"name": "frontend", "port": 80}, "path": "/a"},
            {"name": "p", "backendRef": {"name": "frontend", "port": 80}, "path": "/b"},
        ]}},
    }))
    .unwrap();
    let err = policies
        .create(&PostParams::default(), &twice)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Duplicate value"), "{err}");

    // One named by the route's ExtensionRef reaches the proxy inside the
    // rule, and the policy reports Accepted.
    let _: GatewayPolicy = create(
        &admin,
        Some(NS),
        json!({"apiVersion": "mycel.io/v1alpha1", "kind": "GatewayPolicy",
               "metadata": {"name": "partners"},
               "spec": {"apiKeys": {"keys": [{"name": "partner-1", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]},
                        "rateLimit": {"requests": 10, "per": "1s"}}}),
    )
    .await;
    let mut with_policy = route_spec("/shop");
    with_policy["rules"][0]["filters"] = json!([{"type": "ExtensionRef",
        "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": "partners"}}]);
    routes
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": with_policy})),
        )
        .await
        .unwrap();
    proxy
        .until("the policy in the route's rule", |r| {
            let text = prefix(r);
            text.contains("shop/partners")
                && text.contains("partner-1")
                && text.contains("per_ms: 1000")
        })
        .await;
    poll("GatewayPolicy partners Accepted", || async {
        let p = policies.get("partners").await.ok()?;
        conditions(p.data.get("status")?.get("conditions"))
            .iter()
            .any(|(kind, status, _)| kind == "Accepted" && status == "True")
            .then_some(())
    })
    .await;
    drop(api);
}

/// A certificate for `host` as `(chain PEM, key PEM)`.
fn certificate(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_secret(name: &str, type_: &str, (chain, key): &(String, String)) -> Value {
    json!({"metadata": {"name": name}, "type": type_,
           "stringData": {"tls.crt": chain, "tls.key": key}})
}

/// Opens a discovery stream as a gateway proxy of `account` following
/// `secure.shop`.
async fn gateway_probe(admin: &Client, mesh: &Mesh, account: &str) -> Proxy {
    let token = sa_token(admin, mesh.dir.path(), account, "mycel").await;
    let hello = Hello {
        proxy_id: format!("{account}-probe"),
        workload: Some(Workload {
            name: format!("{account}-0"),
            namespace: NS.into(),
            service_account: account.into(),
            ..Workload::default()
        }),
        register: false,
        subscriptions: vec![],
        known: vec![],
        mode: "gateway".into(),
        gateway: "secure.shop".into(),
        admin: None,
    };
    let token = std::fs::read_to_string(token).unwrap();
    Proxy::open_hello(mesh, token.trim(), hello, "secure.shop").await
}

/// `(source, chain, key)` of each certificate in a response's
/// `GATEWAY_CERTIFICATES` body.
fn held(body: &mycel_api::v1::resource::Body) -> Option<Vec<(String, String, String)>> {
    match body {
        mycel_api::v1::resource::Body::GatewayCertificates(c) => Some(
            c.certificates
                .iter()
                .map(|c| {
                    (
                        c.source.clone(),
                        String::from_utf8_lossy(&c.chain_pem).into_owned(),
                        String::from_utf8_lossy(&c.key_pem).into_owned(),
                    )
                })
                .collect(),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_serves_its_secret_to_the_gateways_own_account_only() {
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = gateway_api_cluster().await;
    let _: k8s_openapi::api::core::v1::ServiceAccount =
        create(&admin, Some(NS), json!({"metadata": {"name": "edge"}})).await;
    let class: GatewayClass = serde_json::from_value(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "mycel"}, "spec": {"controllerName": GATEWAY_CONTROLLER}}),
    )
    .unwrap();
    Api::<GatewayClass>::all(admin.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let api_cert = certificate("api.shop.example");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), NS);
    let _: k8s_openapi::api::core::v1::Secret = create(
        &admin,
        Some(NS),
        tls_secret("api-tls", "kubernetes.io/tls", &api_cert),
    )
    .await;
    // Not a TLS Secret: the controller's watch never sees it.
    let opaque = certificate("opaque.shop.example");
    let _: k8s_openapi::api::core::v1::Secret =
        create(&admin, Some(NS), tls_secret("www-tls", "Opaque", &opaque)).await;
    let _: Gateway = create(
        &admin,
        Some(NS),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "secure",
                            "annotations": {"mycel.io/gateway-service-account": "edge"}},
               "spec": {"gatewayClassName": "mycel",
                        "listeners": [
                            {"name": "http", "port": 8080, "protocol": "HTTP"},
                            {"name": "https", "port": 8443, "protocol": "HTTPS",
                             "hostname": "*.shop.example",
                             "tls": {"mode": "Terminate", "certificateRefs": [
                                 {"kind": "Secret", "name": "api-tls"},
                                 {"kind": "Secret", "name": "www-tls"}]}}]}}),
    )
    .await;

    let controller_kubeconfig = api.dir().join("kubeconfig-mycel-controller");
    let mesh = Mesh::start_kubernetes(&controller_kubeconfig, &[]).await;
    let gateways = dynamic(&admin, &ApiResource::erase::<Gateway>(&()), Some(NS)).await;

    // One of its two Secrets serves: Programmed, and the status names the
    // other (an Opaque Secret is no certificate).
    let https_listener = |status: &Value| {
        status["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "https"))
            .cloned()
    };
    poll("listener https: Programmed, www-tls unresolved", || async {
        let g = gateways.get("secure").await.ok()?;
        let l = https_listener(g.data.get("status")?)?;
        let c = conditions(l.get("conditions"));
        (c.contains(&t("Programmed", "True", "Programmed"))
            && c.contains(&t("ResolvedRefs", "False", "InvalidCertificateRef"))
            && l["conditions"]
                .to_string()
                .contains("shop/www-tls does not exist"))
        .then_some(())
    })
    .await;

    // The Gateway's account gets the certificate and its key; another
    // account of the namespace following the same Gateway gets none.
    let mut edge = gateway_probe(&admin, &mesh, "edge").await;
    let (chain, key) = api_cert.clone();
    edge.until_body("edge holds api-tls", |b| {
        held(b).is_some_and(|c| c == [("shop/api-tls".to_string(), chain.clone(), key.clone())])
    })
    .await;
    let mut client = gateway_probe(&admin, &mesh, "client").await;
    client
        .until_body("client holds no certificate", |b| {
            held(b).is_some_and(|c| c.is_empty())
        })
        .await;

    // A TLS Secret of that name comes (a Secret's type cannot change):
    // resolved, and sent.
    secrets
        .delete("www-tls", &Default::default())
        .await
        .unwrap();
    let www = certificate("www.shop.example");
    let _: k8s_openapi::api::core::v1::Secret = create(
        &admin,
        Some(NS),
        tls_secret("www-tls", "kubernetes.io/tls", &www),
    )
    .await;
    edge.until_body("edge holds both", |b| {
        held(b).is_some_and(|c| c.len() == 2 && c[1].0 == "shop/www-tls")
    })
    .await;
    poll("listener https: every reference resolved", || async {
        let g = gateways.get("secure").await.ok()?;
        let l = https_listener(g.data.get("status")?)?;
        conditions(l.get("conditions"))
            .contains(&t("ResolvedRefs", "True", "ResolvedRefs"))
            .then_some(())
    })
    .await;

    // Rotation: a new key in the same Secret reaches the proxy.
    let rotated = certificate("api.shop.example");
    let (chain, key) = rotated.clone();
    secrets
        .patch(
            "api-tls",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"tls.crt": chain, "tls.key": key}})),
        )
        .await
        .unwrap();
    let (chain, key) = rotated;
    edge.until_body("edge holds the rotated api-tls", |b| {
        held(b).is_some_and(|c| {
            c.first() == Some(&("shop/api-tls".to_string(), chain.clone(), key.clone()))
        })
    })
    .await;
    drop(api);
}
