use kube::api::DynamicObject;
use serde_json::{json, Value};

use super::*;
use crate::routes::RouteKind;
use crate::sources::k8s::routes::{object, status as route_status, PolicyLookup};

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn class(name: &str, controller: &str) -> ClassObject {
    read_class(&dynamic(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1"},
        "spec": {"controllerName": controller},
    })))
    .unwrap()
}

fn gateway_obj(name: &str, class: &str) -> GatewayObject {
    read_gateway(&dynamic(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "generation": 2, "resourceVersion": "5"},
        "spec": {"gatewayClassName": class,
                 "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"},
                               {"name": "https", "port": 8443, "protocol": "TCP"}]},
    })))
    .unwrap()
}

fn route(parents: Value) -> object::RouteObject {
    object::read(
        RouteKind::Http,
        &dynamic(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop", "namespace": "shop", "generation": 3,
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"parentRefs": parents,
                     "rules": [{"backendRefs": [{"name": "frontend", "port": 80}]}]},
            "status": {"parents": [{"controllerName": "example.com/other",
                                    "parentRef": {"name": "theirs"}, "conditions": []}]},
        })),
    )
    .unwrap()
}

fn store() -> Gateways {
    let mut g = Gateways::default();
    g.apply_class(class("mycel", GATEWAY_CONTROLLER_NAME));
    g.apply_class(class("other", "example.com/other"));
    g.apply_gateway(gateway_obj("ours", "mycel"));
    g.apply_gateway(gateway_obj("theirs", "other"));
    g.apply_gateway(gateway_obj("unclassed", "nobody"));
    g
}

fn ok(_: &Converted) -> (bool, &'static str, String) {
    (true, "ResolvedRefs", "every reference resolved".into())
}

fn routes_with(parents: Value) -> Routes {
    let mut r = Routes::default();
    r.apply(route(parents), PolicyLookup::NONE);
    r
}

fn gw(name: &str) -> ServiceKey {
    ServiceKey::new(name, "shop").unwrap()
}

#[test]
fn only_gateways_of_our_classes_are_served_and_answered_for() {
    let g = store();
    let classes: Vec<&str> = g.our_classes().map(|c| c.name.as_str()).collect();
    assert_eq!(classes, ["mycel"]);
    let ours: Vec<&str> = g.ours().map(|o| o.key.1.as_str()).collect();
    assert_eq!(ours, ["ours"]);

    // Parents on ours, another controller's, a class nobody has, one that
    // does not exist, and a Service: only ours gets a Gateway verdict, and
    // the others drop nothing.
    let routes = routes_with(json!([
        {"name": "ours"}, {"name": "theirs"}, {"name": "unclassed"}, {"name": "missing"},
        {"kind": "Service", "group": "", "name": "frontend"},
    ]));
    let out = g.attach(&routes, ok);
    assert_eq!(out.routes.keys().collect::<Vec<_>>(), [&gw("ours")]);
    assert_eq!(out.routes[&gw("ours")].len(), 1);
    assert_eq!(out.routes[&gw("ours")][0].name, "shop/shop");
    assert_eq!(out.attached[&("shop".into(), "ours".into())], [1, 0]);
    let key = (RouteKind::Http, "shop".to_string(), "shop".to_string());
    let verdicts = &out.verdicts[&key];
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].0, 0);
    assert_eq!(verdicts[0].1.accepted.1, "Accepted");
    // The Service parent still attaches.
    assert_eq!(
        routes
            .routes_of(&ServiceKey::new("frontend", "shop").unwrap())
            .len(),
        1
    );
}

#[test]
fn a_parent_that_selects_no_served_listener_is_refused_with_the_reason() {
    let g = store();
    let routes = routes_with(json!([{"name": "ours", "sectionName": "https"}]));
    let out = g.attach(&routes, ok);
    let key = (RouteKind::Http, "shop".to_string(), "shop".to_string());
    assert_eq!(out.verdicts[&key][0].1.accepted.1, "NoMatchingParent");
    assert!(out.routes[&gw("ours")].is_empty());
    assert_eq!(out.attached[&("shop".into(), "ours".into())], [0, 0]);
}

#[test]
fn a_class_that_changes_controller_takes_its_gateways_along() {
    let mut g = store();
    g.apply_class(class("mycel", "example.com/other"));
    let out = g.attach(&routes_with(json!([{"name": "ours"}])), ok);
    assert!(out.routes.is_empty() && out.verdicts.is_empty());
    g.delete_class("mycel");
    assert_eq!(g.ours().count(), 0);
}

#[test]
fn statuses_are_written_once_then_left_alone() {
    let g = store();
    let now = "2024-05-01T00:00:00Z";
    let mycel = g.our_classes().next().unwrap();
    let written = status::class(mycel, now).unwrap();
    assert_eq!(written["conditions"][0]["type"], "Accepted");
    assert_eq!(written["conditions"][0]["status"], "True");
    assert_eq!(written["conditions"][0]["observedGeneration"], 1);
    let mut again = mycel.clone();
    again.conditions = written["conditions"].as_array().unwrap().clone();
    assert_eq!(status::class(&again, "2024-06-01T00:00:00Z"), None);

    let ours = g.ours().next().unwrap();
    let s = status::gateway(ours, &[1, 0], None, now).unwrap();
    let conditions: Vec<(&str, &str, &str)> = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    // One of two listeners served: accepted with a word about the other.
    assert_eq!(
        conditions,
        [
            ("Accepted", "True", "ListenersNotValid"),
            ("Programmed", "True", "Programmed")
        ]
    );
    let l = &s["listeners"];
    assert_eq!(l[0]["name"], "http");
    assert_eq!(l[0]["attachedRoutes"], 1);
    assert_eq!(l[0]["supportedKinds"][0]["kind"], "HTTPRoute");
    assert_eq!(l[0]["supportedKinds"][1]["kind"], "GRPCRoute");
    assert_eq!(l[0]["conditions"][0]["status"], "True");
    assert_eq!(l[1]["conditions"][0]["reason"], "UnsupportedProtocol");
    assert_eq!(l[1]["conditions"][1]["status"], "False");
    let mut again = ours.clone();
    again.status = s.clone();
    assert_eq!(
        status::gateway(&again, &[1, 0], None, "2024-06-01T00:00:00Z"),
        None
    );
    // A route more is a change of that listener only.
    let next = status::gateway(&again, &[2, 0], None, "2024-06-01T00:00:00Z").unwrap();
    assert_eq!(next["listeners"][0]["attachedRoutes"], 2);
    assert_eq!(
        next["listeners"][0]["conditions"][0]["lastTransitionTime"],
        now
    );
}

#[test]
fn an_invalid_gateway_of_ours_is_not_accepted_and_serves_nothing() {
    let mut g = store();
    let mut bad = gateway_obj("ours", "mycel");
    bad.gateway = read_gateway(&dynamic(json!({
        "metadata": {"name": "ours", "namespace": "shop"},
        "spec": {"gatewayClassName": "mycel", "listeners": []},
    })))
    .unwrap()
    .gateway;
    g.apply_gateway(bad);
    let out = g.attach(&routes_with(json!([{"name": "ours"}])), ok);
    assert!(
        out.routes.is_empty(),
        "nothing served for an invalid Gateway"
    );
    let key = (RouteKind::Http, "shop".to_string(), "shop".to_string());
    assert_eq!(out.verdicts[&key][0].1.accepted.1, "NoMatchingParent");
    let ours = g.ours().next().unwrap();
    let s = status::gateway(ours, &[], None, "2024-05-01T00:00:00Z").unwrap();
    assert_eq!(s["conditions"][0]["status"], "False");
    assert_eq!(s["conditions"][1]["status"], "False");
}

#[test]
fn one_write_carries_both_kinds_of_our_entries_and_keeps_others() {
    let g = store();
    let routes = routes_with(json!([
        {"name": "ours"}, {"name": "theirs"},
        {"kind": "Service", "group": "", "name": "frontend"},
    ]));
    let out = g.attach(&routes, ok);
    let key = (RouteKind::Http, "shop".to_string(), "shop".to_string());
    let object = routes.object(&key).unwrap();
    let mesh = routes.verdicts(&key, |_| Some(vec![80]));
    let parents =
        route_status::desired(object, &mesh, &out.verdicts[&key], "2024-05-01T00:00:00Z").unwrap();
    let controllers: Vec<&str> = parents
        .iter()
        .map(|p| p["controllerName"].as_str().unwrap())
        .collect();
    assert_eq!(
        controllers,
        [
            "example.com/other",
            route_status::CONTROLLER_NAME,
            GATEWAY_CONTROLLER_NAME
        ]
    );
    assert_eq!(parents[2]["parentRef"]["name"], "ours");
    // Read back, nothing more to write; and a mesh-only computation would
    // drop the Gateway entry, which is why there is one writer for both.
    let mut again = object.clone();
    again.status_parents = parents.clone();
    assert_eq!(
        route_status::desired(&again, &mesh, &out.verdicts[&key], "2024-06-01T00:00:00Z"),
        None
    );
}

fn tls_secret(name: &str, host: &str) -> k8s_openapi::api::core::v1::Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()},
    }))
    .unwrap()
}

/// Listener 1 of Gateway `secure`: HTTPS naming Secrets `api` and `www`.
fn https_store() -> Gateways {
    let mut g = store();
    g.apply_gateway(
        read_gateway(&dynamic(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "secure", "namespace": "shop", "generation": 1, "resourceVersion": "1",
                         "annotations": {"mycel.io/gateway-service-account": "edge"}},
            "spec": {"gatewayClassName": "mycel",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"},
                                   {"name": "https", "port": 443, "protocol": "HTTPS",
                                    "tls": {"certificateRefs": [{"name": "api"}, {"name": "www"}]}}]},
        })))
        .unwrap(),
    );
    g
}

/// `(type, status, reason)` of a listener's conditions.
fn listener_conditions(status: &Value, i: usize) -> Vec<(String, String, String)> {
    status["listeners"][i]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_https_listener_is_programmed_by_the_secrets_it_can_serve() {
    let g = https_store();
    let secure = ServiceKey::new("secure", "shop").unwrap();
    let obj_key = ("shop".to_string(), "secure".to_string());
    let obj = g.ours().find(|o| o.key == obj_key).unwrap().clone();
    let now = "2024-05-01T00:00:00Z";
    let row = |t: &str, st: &str, r: &str| (t.to_string(), st.to_string(), r.to_string());

    // No Secret yet: nothing to serve, and the status says which and why.
    let mut secrets = TlsSecrets::default();
    let (certs, unresolved) = g.certificates(&secrets);
    assert!(certs[&secure].certificates.is_empty());
    assert_eq!(certs[&secure].service_account, "edge");
    let s = status::gateway(&obj, &[0, 0], unresolved.get(&obj_key), now).unwrap();
    let l = listener_conditions(&s, 1);
    assert!(l.contains(&row("Programmed", "False", "Invalid")), "{l:?}");
    assert!(
        l.contains(&row("ResolvedRefs", "False", "InvalidCertificateRef")),
        "{l:?}"
    );
    assert!(
        s["listeners"][1]["conditions"]
            .to_string()
            .contains("shop/api does not exist"),
        "{s}"
    );

    // One of two: served, still saying the other is missing.
    secrets.apply(&tls_secret("api", "api.shop.example"));
    let (certs, unresolved) = g.certificates(&secrets);
    assert_eq!(certs[&secure].certificates[0].source, "shop/api");
    let s = status::gateway(&obj, &[0, 0], unresolved.get(&obj_key), now).unwrap();
    let l = listener_conditions(&s, 1);
    assert!(
        l.contains(&row("Programmed", "True", "Programmed")),
        "{l:?}"
    );
    assert!(
        l.contains(&row("ResolvedRefs", "False", "InvalidCertificateRef")),
        "{l:?}"
    );

    // Both: every reference resolved.
    secrets.apply(&tls_secret("www", "www.shop.example"));
    let (certs, unresolved) = g.certificates(&secrets);
    assert_eq!(certs[&secure].certificates.len(), 2);
    assert!(unresolved.is_empty());
    let s = status::gateway(&obj, &[0, 0], None, now).unwrap();
    assert!(listener_conditions(&s, 1).contains(&row("ResolvedRefs", "True", "ResolvedRefs")));
    // A Gateway without HTTPS listeners has no certificates at all.
    assert!(!certs.contains_key(&ServiceKey::new("ours", "shop").unwrap()));
}
