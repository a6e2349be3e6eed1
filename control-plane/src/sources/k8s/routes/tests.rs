use kube::api::DynamicObject;
use mycel_crds::GatewayPolicySpec;
use serde_json::{json, Value};

use super::status::{desired, CONTROLLER_NAME};
use super::*;
use crate::routes::model::RouteFilter;
use crate::routes::RouteKind;

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn route(name: &str, generation: i64, created: &str, backend: Value) -> RouteObject {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop", "generation": generation,
                     "resourceVersion": format!("{generation}"),
                     "creationTimestamp": created},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "reviews"},
                {"name": "ingress"},
            ],
            "rules": [{"backendRefs": [backend]}],
        },
        "status": {"parents": [
            {"parentRef": {"name": "ingress"}, "controllerName": "example.com/gateway",
             "conditions": [{"type": "Accepted", "status": "True"}]},
        ]},
    }))
    .unwrap();
    object::read(RouteKind::Http, &obj).unwrap()
}

fn v1() -> Value {
    json!({"name": "reviews-v1", "port": 9080})
}

fn ports(svc: &ServiceKey) -> Option<Vec<u16>> {
    ["reviews", "reviews-v1"]
        .contains(&svc.name())
        .then(|| vec![9080])
}

#[test]
fn routes_of_a_parent_are_oldest_first_then_by_name() {
    let mut s = Routes::default();
    let affected = s.apply(
        route("b", 1, "2024-01-02T00:00:00Z", v1()),
        PolicyLookup::NONE,
    );
    assert_eq!(affected, [key("reviews.shop")].into());
    s.apply(
        route("c", 1, "2024-01-01T00:00:00Z", v1()),
        PolicyLookup::NONE,
    );
    s.apply(
        route("a", 1, "2024-01-02T00:00:00Z", v1()),
        PolicyLookup::NONE,
    );
    let names: Vec<String> = s
        .routes_of(&key("reviews.shop"))
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["shop/c", "shop/a", "shop/b"]);
    assert!(s.routes_of(&key("ingress.shop")).is_empty());
    assert_eq!(
        s.delete(&(RouteKind::Http, "shop".into(), "a".into())),
        [key("reviews.shop")].into()
    );
    assert_eq!(s.routes_of(&key("reviews.shop")).len(), 2);
}

#[test]
fn an_invalid_update_keeps_the_last_valid_version() {
    let mut s = Routes::default();
    let t = "2024-01-01T00:00:00Z";
    s.apply(route("r", 1, t, v1()), PolicyLookup::NONE);
    let before = s.routes_of(&key("reviews.shop"));
    s.apply(
        route(
            "r",
            2,
            t,
            json!({"name": "reviews-v1", "port": 9080, "weight": -3}),
        ),
        PolicyLookup::NONE,
    );
    assert_eq!(s.routes_of(&key("reviews.shop")), before);
    let k = (RouteKind::Http, "shop".to_string(), "r".to_string());
    let v = s.verdicts(&k, ports);
    assert_eq!(v.len(), 1, "only the Service parent is ours");
    let (i, v) = &v[0];
    assert_eq!(*i, 0);
    assert!(!v.accepted.0);
    assert_eq!(v.accepted.1, "UnsupportedValue");
    assert!(
        v.accepted.2.contains("spec.rules[0].backendRefs[0].weight"),
        "{}",
        v.accepted.2
    );
    assert!(
        v.accepted.2.contains("generation 1) stays applied"),
        "{}",
        v.accepted.2
    );
}

#[test]
fn verdicts_say_what_resolves() {
    let mut s = Routes::default();
    let t = "2024-01-01T00:00:00Z";
    let k = (RouteKind::Http, "shop".to_string(), "r".to_string());
    s.apply(route("r", 1, t, v1()), PolicyLookup::NONE);
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!((v.accepted.0, v.accepted.1), (true, "Accepted"));
    assert_eq!((v.resolved.0, v.resolved.1), (true, "ResolvedRefs"));

    s.apply(
        route("r", 2, t, json!({"name": "reviews-v3", "port": 9080})),
        PolicyLookup::NONE,
    );
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!(
        (v.accepted.0, v.resolved.0, v.resolved.1),
        (true, false, "BackendNotFound")
    );
    assert!(v.resolved.2.contains("Service reviews-v3 does not exist"));

    s.apply(
        route(
            "r",
            3,
            t,
            json!({"name": "x", "port": 9080, "namespace": "other"}),
        ),
        PolicyLookup::NONE,
    );
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!(
        (v.accepted.0, v.resolved.0, v.resolved.1),
        (false, false, "RefNotPermitted")
    );

    let no_parent = |_: &ServiceKey| None;
    s.apply(route("r", 4, t, v1()), PolicyLookup::NONE);
    let v = &s.verdicts(&k, no_parent)[0].1;
    assert_eq!((v.accepted.0, v.accepted.1), (false, "NoMatchingParent"));
}

#[test]
fn a_policy_change_converts_routes_again() {
    let mut s = Routes::default();
    let mut obj = route("r", 1, "2024-01-01T00:00:00Z", v1());
    obj.spec = obj.spec.map(|spec| match spec {
        object::Spec::Http(mut h) => {
            h.rules.as_mut().unwrap()[0].filters = Some(vec![serde_json::from_value(json!(
                {"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "TrafficPolicy", "name": "chaos"}}
            )).unwrap()]);
            object::Spec::Http(h)
        }
        other => other,
    });
    s.apply(obj, PolicyLookup::NONE);
    assert!(
        s.routes_of(&key("reviews.shop")).is_empty(),
        "not valid until the policy exists"
    );
    let with_chaos = |_: &str, name: &str| {
        if name == "chaos" {
            PolicyFault::Fault(mycel_crds::traffic_policy::Fault {
                delay: None,
                abort: None,
            })
        } else {
            PolicyFault::Missing
        }
    };
    let with_chaos = PolicyLookup {
        faults: &with_chaos,
        gateway_policies: &|_, _| None,
    };
    assert_eq!(s.reconvert(with_chaos), [key("reviews.shop")].into());
    assert_eq!(s.routes_of(&key("reviews.shop")).len(), 1);
    assert!(s.reconvert(with_chaos).is_empty(), "nothing changed");
}

#[test]
fn status_replaces_only_our_entries_and_is_written_once() {
    let mut s = Routes::default();
    let k = (RouteKind::Http, "shop".to_string(), "r".to_string());
    s.apply(
        route("r", 1, "2024-01-01T00:00:00Z", v1()),
        PolicyLookup::NONE,
    );
    let obj = s.object(&k).unwrap().clone();
    let parents = desired(&obj, &s.verdicts(&k, ports), &[], "2024-05-01T00:00:00Z").unwrap();
    assert_eq!(parents.len(), 2);
    assert_eq!(
        parents[0]["controllerName"], "example.com/gateway",
        "kept untouched"
    );
    let ours = &parents[1];
    assert_eq!(ours["controllerName"], CONTROLLER_NAME);
    assert_eq!(
        ours["parentRef"],
        json!({"group": "", "kind": "Service", "name": "reviews"})
    );
    assert_eq!(ours["conditions"][0]["type"], "Accepted");
    assert_eq!(ours["conditions"][0]["status"], "True");
    assert_eq!(ours["conditions"][1]["reason"], "ResolvedRefs");
    assert_eq!(ours["conditions"][1]["observedGeneration"], 1);

    // Read back as written: nothing more to write, even later.
    let mut again = obj.clone();
    again.status_parents = parents.clone();
    assert_eq!(
        desired(&again, &s.verdicts(&k, ports), &[], "2024-06-01T00:00:00Z"),
        None
    );

    // A change keeps the other entry and the time of the unchanged one.
    let missing = |svc: &ServiceKey| (svc.name() == "reviews").then(|| vec![9080]);
    let next = desired(
        &again,
        &s.verdicts(&k, missing),
        &[],
        "2024-06-01T00:00:00Z",
    )
    .unwrap();
    assert_eq!(next[0], parents[0]);
    assert_eq!(
        next[1]["conditions"][0]["lastTransitionTime"],
        "2024-05-01T00:00:00Z"
    );
    assert_eq!(
        next[1]["conditions"][1]["lastTransitionTime"],
        "2024-06-01T00:00:00Z"
    );
    assert_eq!(next[1]["conditions"][1]["reason"], "BackendNotFound");
}

#[test]
fn the_patch_carries_the_version_it_was_read_at() {
    let update = write::StatusUpdate::route(
        (RouteKind::Http, "shop".into(), "r".into()),
        Some((None, vec![json!({"controllerName": CONTROLLER_NAME})])),
    );
    let status = update.write.map(|(_, s)| s).unwrap_or_default();
    let body = write::body(Some("42"), &status);
    assert_eq!(body["metadata"]["resourceVersion"], "42");
    assert_eq!(
        body["status"]["parents"][0]["controllerName"],
        CONTROLLER_NAME
    );
}

#[test]
fn a_gateway_policy_keeps_the_route_off_its_service_parent() {
    let mut s = Routes::default();
    let k = (RouteKind::Http, "shop".to_string(), "r".to_string());
    let backend = json!({"name": "reviews-v1", "port": 9080, "filters": [
        {"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": "auth"}},
    ]});
    s.apply(
        route("r", 1, "2024-01-01T00:00:00Z", backend),
        PolicyLookup::NONE,
    );
    // Missing, as a TrafficPolicy would be.
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!(
        (v.accepted.0, v.resolved.0, v.resolved.1),
        (false, false, "BackendNotFound")
    );
    assert!(
        v.resolved
            .2
            .contains("no GatewayPolicy \"auth\" in namespace \"shop\""),
        "{}",
        v.resolved.2
    );

    // The policy appears: the route is valid, served to Gateways only.
    let spec: GatewayPolicySpec =
        serde_json::from_value(json!({"rateLimit": {"requests": 1, "per": "1s"}})).unwrap();
    let found = |_: &str, name: &str| (name == "auth").then(|| spec.clone());
    let lookup = PolicyLookup {
        faults: &|_, _| PolicyFault::Missing,
        gateway_policies: &found,
    };
    assert_eq!(s.reconvert(lookup), [key("reviews.shop")].into());
    assert!(s.routes_of(&key("reviews.shop")).is_empty());
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!((v.accepted.0, v.accepted.1), (false, "IncompatibleFilters"));
    assert!(
        v.accepted.2.starts_with(
            "spec.rules[0].backendRefs[0].filters[0].extensionRef names a GatewayPolicy, which only a gateway enforces"
        ),
        "{}",
        v.accepted.2
    );
    assert_eq!((v.resolved.0, v.resolved.1), (true, "ResolvedRefs"));
    let serving = |s: &Routes| {
        let views = s.views();
        let c = views[0].serving.unwrap();
        c.rules[0].backends[0].filters.clone()
    };
    assert!(matches!(&serving(&s)[0], RouteFilter::GatewayPolicy(p) if p.name == "shop/auth"));

    // Deleted: refused again, and the last valid version, policy and all,
    // stays applied where it was (a gateway keeps checking).
    s.reconvert(PolicyLookup::NONE);
    let v = &s.verdicts(&k, ports)[0].1;
    assert_eq!(v.resolved.1, "BackendNotFound");
    assert!(v.accepted.2.contains("stays applied"), "{}", v.accepted.2);
    assert!(matches!(&serving(&s)[0], RouteFilter::GatewayPolicy(_)));
}
