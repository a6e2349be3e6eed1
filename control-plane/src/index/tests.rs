use std::collections::BTreeMap;

use mycel_api::spiffe::SpiffeId;

use super::*;
use crate::model::{Endpoint, Protocol, ResourceKind, ServicePort};

pub(super) fn svc(name: &str, ns: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        selector: selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            target_port: 8080,
            protocol: Protocol::Http,
        }],
        vips: vec![],
    }
}

fn wl(name: &str, ns: &str, labels: &[(&str, &str)], addr: &str, ready: bool) -> Workload {
    Workload {
        proxy_id: format!("proxy-{name}"),
        name: name.into(),
        identity: SpiffeId::new("cluster.local", ns, name).unwrap(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        address: addr.into(),
        mesh_port: 15001,
        ports: vec![],
        ready,
        zone: "z1".into(),
    }
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn endpoints(view: &ProxyView, service: &str) -> Option<Vec<Endpoint>> {
    let r = view.resources.get(&ResourceKey::endpoints(&key(service)))?;
    match &r.body {
        ResourceBody::Endpoints { endpoints, .. } => Some(endpoints.clone()),
        other => panic!("unexpected body {other:?}"),
    }
}

fn addresses(view: &ProxyView, service: &str) -> Vec<String> {
    endpoints(view, service)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.address)
        .collect()
}

fn shop_index() -> Index {
    let mut ix = Index::new();
    ix.apply_services(vec![
        svc("catalog", "shop", &[("app", "catalog")]),
        svc("reviews", "shop", &[("app", "reviews")]),
    ])
    .unwrap();
    ix
}

#[test]
fn new_proxy_view_holds_only_the_trust_bundle_and_vips() {
    let mut ix = shop_index();
    let conn = ix.allocate_conn();
    let rx = ix.connect_proxy(conn, []);
    let view = rx.borrow().clone();
    assert_eq!(view.resources.len(), 2);
    assert!(view.resources.contains_key(&ResourceKey::trust_bundle()));
}

#[test]
fn subscribed_service_has_service_and_endpoints() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    let view = rx.borrow().clone();
    assert_eq!(view.resources.len(), 4);
    let s = &view.resources[&ResourceKey::service(&key("catalog.shop"))];
    assert!(matches!(&s.body, ResourceBody::Service(s) if s.name == "catalog"));
    assert_eq!(endpoints(&view, "catalog.shop"), Some(vec![]));
}

#[test]
fn unknown_service_is_not_found_without_endpoints() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("nope.shop")]);
    let view = rx.borrow().clone();
    let s = &view.resources[&ResourceKey::service(&key("nope.shop"))];
    assert_eq!(s.body, ResourceBody::NotFound);
    assert!(endpoints(&view, "nope.shop").is_none());
}

#[test]
fn ready_matching_workload_becomes_endpoint() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    let view = rx.borrow().clone();
    let eps = endpoints(&view, "catalog.shop").unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].address, "127.0.0.2");
    assert_eq!(eps[0].mesh_port, 15001);
    assert_eq!(
        eps[0].spiffe_id,
        "spiffe://cluster.local/ns/shop/sa/catalog"
    );
    assert_eq!(eps[0].workload, "catalog");
    assert_eq!(eps[0].zone, "z1");
    assert_eq!(eps[0].weight, 1);
    assert!(eps[0].ready);
}

#[test]
fn unready_workload_is_not_an_endpoint_until_ready() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", false),
    );
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
    ix.set_ready(ConnId(2), true);
    assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["127.0.0.2"]);
    ix.set_ready(ConnId(2), false);
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
}

#[test]
fn workload_in_other_namespace_is_not_selected() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "other", &[("app", "catalog")], "127.0.0.2", true),
    );
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
}

#[test]
fn selector_needs_every_label() {
    let mut ix = Index::new();
    ix.apply_services(vec![svc(
        "catalog",
        "shop",
        &[("app", "catalog"), ("tier", "backend")],
    )])
    .unwrap();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("a", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.register_workload(
        ConnId(3),
        wl(
            "b",
            "shop",
            &[("app", "catalog"), ("tier", "backend"), ("extra", "x")],
            "127.0.0.3",
            true,
        ),
    );
    assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["127.0.0.3"]);
}

#[test]
fn empty_selector_selects_nothing() {
    let mut ix = Index::new();
    ix.apply_services(vec![svc("ext", "shop", &[])]).unwrap();
    let rx = ix.connect_proxy(ConnId(1), [key("ext.shop")]);
    ix.register_workload(ConnId(2), wl("a", "shop", &[], "127.0.0.2", true));
    assert!(addresses(&rx.borrow(), "ext.shop").is_empty());
}

#[test]
fn unregister_removes_endpoint() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.unregister_workload(ConnId(2));
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
    assert!(ix.workload(ConnId(2)).is_none());
}

#[test]
fn endpoints_are_sorted_regardless_of_registration_order() {
    let mut a = shop_index();
    let mut b = shop_index();
    let w1 = wl("c1", "shop", &[("app", "catalog")], "127.0.0.9", true);
    let w2 = wl("c2", "shop", &[("app", "catalog")], "127.0.0.3", true);
    a.register_workload(ConnId(10), w1.clone());
    a.register_workload(ConnId(11), w2.clone());
    b.register_workload(ConnId(10), w2);
    b.register_workload(ConnId(11), w1);
    let ra = a.connect_proxy(ConnId(1), [key("catalog.shop")]);
    let rb = b.connect_proxy(ConnId(1), [key("catalog.shop")]);
    assert_eq!(
        addresses(&ra.borrow(), "catalog.shop"),
        ["127.0.0.3", "127.0.0.9"]
    );
    assert!(ra.borrow().same_versions(&rb.borrow()));
}

#[test]
fn unrelated_change_does_not_notify() {
    let mut ix = shop_index();
    let mut rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    rx.mark_unchanged();
    ix.register_workload(
        ConnId(2),
        wl("reviews", "shop", &[("app", "reviews")], "127.0.0.2", true),
    );
    assert!(!rx.has_changed().unwrap());
    ix.register_workload(
        ConnId(3),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.3", true),
    );
    assert!(rx.has_changed().unwrap());
}

#[test]
fn reapplying_same_services_does_not_notify() {
    let mut ix = shop_index();
    let mut rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    rx.mark_unchanged();
    ix.apply_services(vec![
        svc("catalog", "shop", &[("app", "catalog")]),
        svc("reviews", "shop", &[("app", "reviews")]),
    ])
    .unwrap();
    assert!(!rx.has_changed().unwrap());
}

#[test]
fn apply_services_replaces_the_whole_set() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("reviews.shop")]);
    ix.apply_services(vec![svc("catalog", "shop", &[("app", "catalog")])])
        .unwrap();
    assert_eq!(ix.service_count(), 1);
    let view = rx.borrow().clone();
    assert_eq!(
        view.resources[&ResourceKey::service(&key("reviews.shop"))].body,
        ResourceBody::NotFound
    );
    assert!(endpoints(&view, "reviews.shop").is_none());
}

#[test]
fn duplicate_services_are_rejected_and_nothing_changes() {
    let mut ix = shop_index();
    let err = ix
        .apply_services(vec![
            svc("a", "shop", &[("app", "a")]),
            svc("a", "shop", &[("app", "b")]),
        ])
        .unwrap_err();
    assert_eq!(err.0, key("a.shop"));
    assert_eq!(ix.service_count(), 2);
    assert!(ix.service(&key("catalog.shop")).is_some());
}

#[test]
fn service_appearing_later_replaces_not_found() {
    let mut ix = Index::new();
    let rx = ix.connect_proxy(ConnId(1), [key("late.shop")]);
    ix.apply_service(svc("late", "shop", &[("app", "late")]));
    let view = rx.borrow().clone();
    assert!(matches!(
        view.resources[&ResourceKey::service(&key("late.shop"))].body,
        ResourceBody::Service(_)
    ));
    assert_eq!(endpoints(&view, "late.shop"), Some(vec![]));
}

#[test]
fn delete_service_turns_into_not_found() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.delete_service(&key("catalog.shop"));
    assert_eq!(
        rx.borrow().resources[&ResourceKey::service(&key("catalog.shop"))].body,
        ResourceBody::NotFound
    );
}

#[test]
fn subscribe_adds_and_removes() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), []);
    ix.subscribe(ConnId(1), &[key("catalog.shop"), key("reviews.shop")], &[]);
    assert_eq!(rx.borrow().resources.len(), 6);
    ix.subscribe(ConnId(1), &[], &[key("catalog.shop")]);
    let view = rx.borrow().clone();
    assert_eq!(view.resources.len(), 4);
    assert!(!view
        .resources
        .contains_key(&ResourceKey::service(&key("catalog.shop"))));
    assert_eq!(
        ix.subscriptions(ConnId(1))
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        [&key("reviews.shop")]
    );
}

#[test]
fn subscribe_for_unknown_proxy_is_ignored() {
    let mut ix = shop_index();
    ix.subscribe(ConnId(99), &[key("catalog.shop")], &[]);
    assert!(ix.subscriptions(ConnId(99)).is_none());
}

#[test]
fn disconnected_proxy_gets_no_updates() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.disconnect_proxy(ConnId(1));
    assert_eq!(ix.proxy_count(), 0);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    // The sender is gone: the receiver sees the channel closed.
    assert!(rx.has_changed().is_err());
}

#[test]
fn trust_bundle_change_reaches_every_proxy() {
    let mut ix = shop_index();
    let mut a = ix.connect_proxy(ConnId(1), []);
    let mut b = ix.connect_proxy(ConnId(2), [key("catalog.shop")]);
    a.mark_unchanged();
    b.mark_unchanged();
    ix.set_trust_bundle(vec![vec![1, 2, 3]]);
    assert!(a.has_changed().unwrap());
    assert!(b.has_changed().unwrap());
    let tb = &a.borrow().resources[&ResourceKey::trust_bundle()];
    assert_eq!(
        tb.body,
        ResourceBody::TrustBundle {
            roots_der: vec![vec![1, 2, 3]]
        }
    );
}

#[test]
fn versions_are_content_hashes() {
    let mut a = shop_index();
    let mut b = shop_index();
    let ra = a.connect_proxy(ConnId(1), [key("catalog.shop")]);
    let rb = b.connect_proxy(ConnId(7), [key("catalog.shop")]);
    assert!(ra.borrow().same_versions(&rb.borrow()));
    let v = &ra.borrow().resources[&ResourceKey::service(&key("catalog.shop"))].version;
    assert_eq!(v.len(), 16);
    assert!(v.bytes().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn endpoint_change_changes_only_the_endpoints_version() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    let before = rx.borrow().clone();
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    let after = rx.borrow().clone();
    let sk = ResourceKey::service(&key("catalog.shop"));
    let ek = ResourceKey::endpoints(&key("catalog.shop"));
    assert_eq!(before.resources[&sk].version, after.resources[&sk].version);
    assert_ne!(before.resources[&ek].version, after.resources[&ek].version);
}

#[test]
fn same_body_different_key_gets_different_version() {
    let k1 = ResourceKey::service(&key("a.x"));
    let k2 = ResourceKey::service(&key("b.x"));
    assert_ne!(
        version_of(&k1, &ResourceBody::NotFound),
        version_of(&k2, &ResourceBody::NotFound)
    );
}

#[test]
fn counts() {
    let mut ix = shop_index();
    assert_eq!(ix.service_count(), 2);
    assert_eq!(ix.endpoint_count(), 0);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.register_workload(
        ConnId(3),
        wl("reviews", "shop", &[("app", "reviews")], "127.0.0.3", true),
    );
    assert_eq!(ix.endpoint_count(), 2);
}

#[test]
fn allocated_conn_ids_are_unique() {
    let mut ix = Index::new();
    let a = ix.allocate_conn();
    let b = ix.allocate_conn();
    assert_ne!(a, b);
}

#[test]
fn reregister_replaces_the_workload_of_a_stream() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.register_workload(
        ConnId(2),
        wl("catalog", "shop", &[("app", "catalog")], "127.0.0.5", true),
    );
    assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["127.0.0.5"]);
}

#[test]
fn workload_can_be_endpoint_of_several_services() {
    let mut ix = Index::new();
    ix.apply_services(vec![
        svc("a", "shop", &[("app", "x")]),
        svc("b", "shop", &[("app", "x")]),
    ])
    .unwrap();
    let rx = ix.connect_proxy(ConnId(1), [key("a.shop"), key("b.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("x", "shop", &[("app", "x")], "127.0.0.2", true),
    );
    assert_eq!(addresses(&rx.borrow(), "a.shop"), ["127.0.0.2"]);
    assert_eq!(addresses(&rx.borrow(), "b.shop"), ["127.0.0.2"]);
    let kinds: Vec<ResourceKind> = rx.borrow().resources.keys().map(|k| k.kind).collect();
    assert_eq!(
        kinds,
        [
            ResourceKind::Service,
            ResourceKind::Service,
            ResourceKind::Endpoints,
            ResourceKind::Endpoints,
            ResourceKind::TrustBundle,
            ResourceKind::ServiceVips
        ]
    );
}

#[test]
fn shared_index_locks() {
    let shared = SharedIndex::new(shop_index());
    assert_eq!(shared.lock().service_count(), 2);
    let clone = shared.clone();
    clone.lock().delete_service(&key("catalog.shop"));
    assert_eq!(shared.lock().service_count(), 1);
}

#[test]
fn a_workload_change_touches_only_proxies_subscribed_to_its_services() {
    let mut ix = shop_index();
    let c1 = ix.allocate_conn();
    let mut catalog_rx = ix.connect_proxy(c1, [key("catalog.shop")]);
    let c2 = ix.allocate_conn();
    let mut reviews_rx = ix.connect_proxy(c2, [key("reviews.shop")]);
    catalog_rx.mark_unchanged();
    reviews_rx.mark_unchanged();

    let w = ix.allocate_conn();
    ix.register_workload(
        w,
        wl("catalog", "shop", &[("app", "catalog")], "198.18.0.2", true),
    );
    assert!(catalog_rx.has_changed().unwrap());
    assert!(!reviews_rx.has_changed().unwrap());
    assert_eq!(
        addresses(&catalog_rx.borrow_and_update(), "catalog.shop"),
        ["198.18.0.2"]
    );

    // Relabelled to reviews: it leaves catalog and joins reviews.
    ix.register_workload(
        w,
        wl("catalog", "shop", &[("app", "reviews")], "198.18.0.2", true),
    );
    assert!(addresses(&catalog_rx.borrow_and_update(), "catalog.shop").is_empty());
    assert_eq!(
        addresses(&reviews_rx.borrow_and_update(), "reviews.shop"),
        ["198.18.0.2"]
    );

    // Readiness and removal reach reviews only.
    ix.set_ready(w, false);
    assert!(!catalog_rx.has_changed().unwrap());
    assert!(addresses(&reviews_rx.borrow_and_update(), "reviews.shop").is_empty());
    ix.set_ready(w, true);
    ix.unregister_workload(w);
    assert!(!catalog_rx.has_changed().unwrap());
    assert!(addresses(&reviews_rx.borrow_and_update(), "reviews.shop").is_empty());
    assert_eq!(ix.endpoint_count(), 0);
}

#[test]
fn deleting_a_service_turns_its_subscribers_to_not_found() {
    let mut ix = shop_index();
    let c = ix.allocate_conn();
    let rx = ix.connect_proxy(c, [key("catalog.shop")]);
    ix.delete_service(&key("catalog.shop"));
    let view = rx.borrow().clone();
    let r = view
        .resources
        .get(&ResourceKey::service(&key("catalog.shop")))
        .expect("service resource");
    assert!(matches!(r.body, ResourceBody::NotFound));
    assert!(endpoints(&view, "catalog.shop").is_none());
}

#[test]
fn every_proxy_holds_the_mesh_vip_table() {
    let mut ix = Index::new();
    let mut a = svc("catalog", "shop", &[("app", "catalog")]);
    a.vips = vec!["198.19.0.10".parse().unwrap()];
    ix.apply_services(vec![
        a.clone(),
        svc("reviews", "shop", &[("app", "reviews")]),
    ])
    .unwrap();
    let c = ix.allocate_conn();
    // Subscribed to nothing, yet it knows where catalog's VIP leads.
    let mut rx = ix.connect_proxy(c, []);
    let vips = |rx: &watch::Receiver<Arc<ProxyView>>| match &rx
        .borrow()
        .resources
        .get(&ResourceKey::service_vips())
        .expect("vip table")
        .body
    {
        ResourceBody::ServiceVips(v) => v.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let table = vips(&rx);
    assert_eq!(table.len(), 1);
    assert_eq!(table[&"198.19.0.10".parse().unwrap()], key("catalog.shop"));

    // A new VIP reaches every proxy; an unrelated change does not.
    rx.mark_unchanged();
    let w = ix.allocate_conn();
    ix.register_workload(
        w,
        wl("r", "shop", &[("app", "reviews")], "198.18.0.9", true),
    );
    assert!(!rx.has_changed().unwrap());
    let mut b = svc("reviews", "shop", &[("app", "reviews")]);
    b.vips = vec!["198.19.0.11".parse().unwrap()];
    ix.apply_services(vec![a, b]).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(vips(&rx).len(), 2);
}

#[test]
fn subscriptions_over_the_cap_are_refused_one_by_one() {
    let mut ix = shop_index();
    ix.set_max_subscriptions(2);
    let rx = ix.connect_proxy(ConnId(1), [key("a.shop"), key("b.shop"), key("c.shop")]);
    assert_eq!(ix.subscriptions(ConnId(1)).unwrap().len(), 2);
    let refused = ix.subscribe(ConnId(1), &[key("catalog.shop"), key("a.shop")], &[]);
    assert_eq!(
        refused,
        vec![key("catalog.shop")],
        "a held key is not refused"
    );
    // Unsubscribing makes room.
    let refused = ix.subscribe(ConnId(1), &[key("catalog.shop")], &[key("a.shop")]);
    assert!(refused.is_empty());
    assert!(rx
        .borrow()
        .resources
        .contains_key(&ResourceKey::endpoints(&key("catalog.shop"))));
}

/// The in-place view updates end where a full recompute would.
#[test]
fn incremental_views_equal_a_full_recompute() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.subscribe(ConnId(1), &[key("reviews.shop"), key("late.shop")], &[]);
    ix.register_workload(
        ConnId(10),
        wl("c1", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.register_workload(
        ConnId(11),
        wl("r1", "shop", &[("app", "reviews")], "127.0.0.3", true),
    );
    ix.apply_service(svc("late", "shop", &[("app", "late")]));
    ix.subscribe(ConnId(1), &[], &[key("reviews.shop")]);
    ix.set_trust_bundle(vec![vec![1, 2, 3]]);
    ix.unregister_workload(ConnId(10));
    ix.delete_service(&key("catalog.shop"));
    let subs = ix.subscriptions(ConnId(1)).unwrap().clone();
    let full = ix.view_for(&subs, &Namespaces::All);
    assert!(
        rx.borrow().same_versions(&full),
        "{:?}\n{:?}",
        rx.borrow(),
        full
    );
}

fn policy(attempts: u32) -> ServicePolicy {
    let spec: crate::model::TrafficPolicySpec = serde_json::from_value(serde_json::json!({
        "targetRef": {"kind": "Service", "name": "catalog"},
        "retry": {"attempts": attempts},
    }))
    .unwrap();
    ServicePolicy {
        sources: vec!["shop/catalog".into()],
        service_wide: Some(spec),
        ports: BTreeMap::new(),
    }
}

#[test]
fn traffic_policy_reaches_subscribers_and_follows_changes() {
    let mut ix = shop_index();
    let conn = ix.allocate_conn();
    let mut rx = ix.connect_proxy(conn, [key("catalog.shop"), key("reviews.shop")]);
    let tp = ResourceKey::traffic_policy(&key("catalog.shop"));
    assert!(!rx.borrow_and_update().resources.contains_key(&tp));

    ix.apply_policies(BTreeMap::from([(key("catalog.shop"), policy(3))]));
    assert!(rx.has_changed().unwrap());
    let first = rx.borrow_and_update().resources[&tp].version.clone();
    assert!(
        !rx.borrow()
            .resources
            .contains_key(&ResourceKey::traffic_policy(&key("reviews.shop"))),
        "only the target has a policy"
    );

    // The same policy again is no change; another one is.
    ix.apply_policies(BTreeMap::from([(key("catalog.shop"), policy(3))]));
    assert!(!rx.has_changed().unwrap());
    ix.set_policy(&key("catalog.shop"), Some(policy(4)));
    assert_ne!(rx.borrow_and_update().resources[&tp].version, first);

    // Removed: the resource leaves the view; proxies fall back to defaults.
    ix.apply_policies(BTreeMap::new());
    assert!(!rx.borrow_and_update().resources.contains_key(&tp));
}

#[test]
fn traffic_policy_waits_for_its_service() {
    let mut ix = Index::new();
    let conn = ix.allocate_conn();
    let rx = ix.connect_proxy(conn, [key("catalog.shop")]);
    ix.set_policy(&key("catalog.shop"), Some(policy(3)));
    let tp = ResourceKey::traffic_policy(&key("catalog.shop"));
    assert!(!rx.borrow().resources.contains_key(&tp), "no service yet");
    ix.apply_service(svc("catalog", "shop", &[("app", "catalog")]));
    assert!(rx.borrow().resources.contains_key(&tp));
}

fn route(name: &str, weight_v2: u32) -> Route {
    use crate::routes::model::{PathMatch, RouteBackend, RouteKind, RouteMatch, RouteRule};
    let backend = |svc: &str, weight| RouteBackend {
        service: key(svc),
        port: 80,
        weight,
        filters: vec![],
    };
    Route {
        name: format!("shop/{name}"),
        kind: RouteKind::Http,
        ports: vec![],
        hostnames: vec![],
        listener: crate::routes::ListenerSide::Any,
        rules: vec![RouteRule {
            matches: vec![RouteMatch {
                path: Some(PathMatch::Prefix("/".into())),
                ..RouteMatch::default()
            }],
            filters: vec![],
            backends: vec![
                backend("catalog.shop", 100 - weight_v2),
                backend("reviews.shop", weight_v2),
            ],
            timeout_ms: 0,
        }],
    }
}

#[test]
fn routes_reach_subscribers_of_their_parent_and_an_update_is_a_delta() {
    use crate::grpc::discovery::session::Session;
    let mut ix = shop_index();
    let conn = ix.allocate_conn();
    let mut rx = ix.connect_proxy(conn, [key("catalog.shop"), key("reviews.shop")]);
    let rk = ResourceKey::routes(&key("catalog.shop"));
    let mut session = Session::new([]);
    let first = session
        .delta(&rx.borrow_and_update(), || "n1".into())
        .unwrap();
    assert!(first
        .resources
        .iter()
        .all(|r| r.key.kind != ResourceKind::Routes));
    session.ack("n1");

    ix.apply_routes(BTreeMap::from([(
        key("catalog.shop"),
        vec![route("split", 10)],
    )]));
    assert!(rx.has_changed().unwrap());
    let view = rx.borrow_and_update().clone();
    assert!(
        !view
            .resources
            .contains_key(&ResourceKey::routes(&key("reviews.shop"))),
        "only the parent has routes"
    );
    let added = session.delta(&view, || "n2".into()).unwrap();
    assert_eq!(added.resources.len(), 1, "only the routes are sent");
    assert_eq!(added.resources[0].key, rk);
    assert!(matches!(
        &added.resources[0].body,
        ResourceBody::Routes { parent, routes } if parent == &key("catalog.shop") && routes.len() == 1
    ));
    session.ack("n2");

    // The same routes again are no change; another weight is, and only
    // the routes resource is re-sent.
    ix.apply_routes(BTreeMap::from([(
        key("catalog.shop"),
        vec![route("split", 10)],
    )]));
    assert!(!rx.has_changed().unwrap());
    ix.set_routes(&key("catalog.shop"), vec![route("split", 50)]);
    let view = rx.borrow_and_update().clone();
    let changed = session.delta(&view, || "n3".into()).unwrap();
    assert_eq!(changed.resources.len(), 1);
    assert_eq!(changed.resources[0].key, rk);
    assert_ne!(changed.resources[0].version, added.resources[0].version);
    assert!(changed.removed.is_empty());
    session.ack("n3");

    // No routes left: the resource is removed.
    ix.apply_routes(BTreeMap::new());
    let view = rx.borrow_and_update().clone();
    let gone = session.delta(&view, || "n4".into()).unwrap();
    assert!(gone.resources.is_empty());
    assert_eq!(gone.removed, [rk]);
}

#[test]
fn routes_wait_for_their_parent() {
    let mut ix = Index::new();
    let conn = ix.allocate_conn();
    let rx = ix.connect_proxy(conn, [key("catalog.shop")]);
    ix.set_routes(&key("catalog.shop"), vec![route("split", 10)]);
    let rk = ResourceKey::routes(&key("catalog.shop"));
    assert!(!rx.borrow().resources.contains_key(&rk), "no service yet");
    assert_eq!(ix.routes(&key("catalog.shop")).len(), 1);
    ix.apply_service(svc("catalog", "shop", &[("app", "catalog")]));
    assert!(rx.borrow().resources.contains_key(&rk));
}

mod authz {
    use std::collections::BTreeMap;

    use super::super::*;
    use crate::authz::from_spec;

    fn policy(name: &str, yaml: &str) -> crate::authz::SelectedPolicy {
        from_spec("shop", name, &serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    fn inbound(view: &watch::Receiver<Arc<ProxyView>>) -> Option<mycel_api::authz::InboundPolicy> {
        match &view
            .borrow()
            .resources
            .get(&ResourceKey::inbound_policy())?
            .body
        {
            ResourceBody::InboundPolicy(p) => Some((**p).clone()),
            _ => None,
        }
    }

    #[test]
    fn each_sidecar_gets_the_policies_selecting_its_workload_and_follows_changes() {
        let mut ix = Index::new();
        let (a, b) = (ix.allocate_conn(), ix.allocate_conn());
        let va = ix.connect_proxy(a, []);
        let mut vb = ix.connect_proxy(b, []);
        ix.set_proxy_workload(a, workload("ratings-0", "ratings"));
        ix.set_proxy_workload(b, workload("catalog-0", "catalog"));
        assert_eq!(inbound(&va).unwrap().policies.len(), 0);
        vb.borrow_and_update();

        ix.set_authz_policy(
            "shop/r",
            Some(policy(
                "r",
                "selector: {matchLabels: {app: ratings}}\nrules: [{}]",
            )),
        );
        let pa = inbound(&va).unwrap();
        assert_eq!(pa.policies[0].name, "shop/r");
        assert!(inbound(&vb).unwrap().policies.is_empty());
        // Only the selected proxy's view changed.
        assert!(!vb.has_changed().unwrap());

        ix.set_authz_policy("shop/r", None);
        assert!(inbound(&va).unwrap().policies.is_empty());
    }

    fn workload(name: &str, app: &str) -> ProxyWorkload {
        ProxyWorkload {
            namespace: "shop".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
        }
    }

    #[test]
    fn workloads_behind_a_service_include_pods_by_their_labels() {
        let mut ix = Index::new();
        let svc = super::super::tests::svc("ratings", "shop", &[("app", "ratings")]);
        let labels = |app: &str| Some(BTreeMap::from([("app".into(), app.into())]));
        ix.set_pod_labels("shop", "ratings-1", labels("ratings"));
        ix.set_pod_labels("shop", "catalog-1", labels("catalog"));
        ix.set_pod_labels("other", "ratings-2", labels("ratings"));
        let names: Vec<String> = ix
            .workloads_behind(&svc)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["ratings-1"]);
    }

    #[test]
    fn in_a_cluster_the_pods_labels_choose_the_policies_not_the_proxys_word() {
        let mut ix = Index::new();
        let a = ix.allocate_conn();
        let va = ix.connect_proxy(a, []);
        ix.set_authz_policy(
            "shop/r",
            Some(policy(
                "r",
                "selector: {matchLabels: {app: ratings}}\nrules: [{}]",
            )),
        );
        // The proxy says nothing of its labels (an injected sidecar).
        let mut w = workload("ratings-7f9", "ratings");
        w.labels.clear();
        ix.set_proxy_workload(a, w);
        assert!(inbound(&va).unwrap().policies.is_empty());
        let labels = |app: &str| Some(BTreeMap::from([("app".into(), app.into())]));
        ix.set_pod_labels("shop", "ratings-7f9", labels("ratings"));
        assert_eq!(inbound(&va).unwrap().policies.len(), 1);
        ix.set_pod_labels("shop", "ratings-7f9", labels("other"));
        assert!(inbound(&va).unwrap().policies.is_empty());
    }
}

mod scope {
    use super::*;
    use crate::index::scope::{Namespaces, ProxyOrigin};

    fn only(ns: &[&str]) -> Namespaces {
        Namespaces::Only(ns.iter().map(|s| s.to_string()).collect())
    }

    fn origin(name: &str, requested: Option<&str>) -> ProxyOrigin {
        ProxyOrigin {
            namespace: "shop".into(),
            name: name.into(),
            requested: requested.map(Into::into),
        }
    }

    fn with_vip(mut s: Service, ip: &str) -> Service {
        s.vips = vec![ip.parse().unwrap()];
        s
    }

    /// catalog.shop, invoices.billing and metrics.ops, each with a VIP and
    /// a ready endpoint.
    fn three_namespaces() -> Index {
        let mut ix = Index::new();
        ix.apply_services(vec![
            with_vip(svc("catalog", "shop", &[("app", "catalog")]), "198.19.0.1"),
            with_vip(
                svc("invoices", "billing", &[("app", "invoices")]),
                "198.19.0.2",
            ),
            with_vip(svc("metrics", "ops", &[("app", "metrics")]), "198.19.0.3"),
        ])
        .unwrap();
        for (name, ns, addr) in [
            ("catalog", "shop", "10.0.0.1"),
            ("invoices", "billing", "10.0.0.2"),
            ("metrics", "ops", "10.0.0.3"),
        ] {
            let c = ix.allocate_conn();
            ix.register_workload(c, wl(name, ns, &[("app", name)], addr, true));
        }
        ix
    }

    fn connect(
        ix: &mut Index,
        who: ProxyOrigin,
        subs: &[&str],
    ) -> (ConnId, watch::Receiver<Arc<ProxyView>>) {
        let c = ix.allocate_conn();
        let rx = ix.connect_proxy(c, subs.iter().map(|s| key(s)));
        ix.set_proxy_origin(c, who);
        (c, rx)
    }

    fn is_not_found(view: &ProxyView, service: &str) -> bool {
        let k = key(service);
        let nf = view::resource(ResourceKey::service(&k), ResourceBody::NotFound);
        let held = view.resources.get(&ResourceKey::service(&k));
        // Exactly the resource of a service that does not exist: same
        // body, same version, and nothing else of the service.
        held.is_some_and(|r| r.version == nf.version && r.body == ResourceBody::NotFound)
            && !view.resources.contains_key(&ResourceKey::endpoints(&k))
    }

    fn vips(view: &ProxyView) -> BTreeSet<String> {
        match &view.resources[&ResourceKey::service_vips()].body {
            ResourceBody::ServiceVips(v) => v.values().map(ToString::to_string).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_a_setting_every_namespace_is_visible_as_before() {
        let mut ix = three_namespaces();
        let (_, rx) = connect(&mut ix, origin("web", None), &["metrics.ops"]);
        let view = rx.borrow();
        assert_eq!(addresses(&view, "metrics.ops"), ["10.0.0.3"]);
        assert_eq!(
            vips(&view),
            set(&["catalog.shop", "invoices.billing", "metrics.ops"])
        );
    }

    #[test]
    fn a_subscription_outside_scope_reads_as_a_missing_service() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        let (_, rx) = connect(
            &mut ix,
            origin("web", None),
            &[
                "catalog.shop",
                "invoices.billing",
                "metrics.ops",
                "nope.ops",
            ],
        );
        let view = rx.borrow();
        assert_eq!(addresses(&view, "catalog.shop"), ["10.0.0.1"]);
        assert_eq!(addresses(&view, "invoices.billing"), ["10.0.0.2"]);
        assert!(is_not_found(&view, "metrics.ops"));
        assert!(is_not_found(&view, "nope.ops"));
    }

    #[test]
    fn a_later_subscribe_outside_scope_is_not_found_inside_is_the_service() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        let (c, mut rx) = connect(&mut ix, origin("web", None), &[]);
        rx.borrow_and_update();
        let refused = ix.subscribe(c, &[key("metrics.ops"), key("invoices.billing")], &[]);
        assert!(refused.is_empty(), "not refused: answered not_found");
        let view = rx.borrow_and_update().clone();
        assert!(is_not_found(&view, "metrics.ops"));
        assert_eq!(addresses(&view, "invoices.billing"), ["10.0.0.2"]);

        // A change to the hidden service is not pushed (nothing to see).
        let w = ix.allocate_conn();
        ix.register_workload(w, wl("m2", "ops", &[("app", "metrics")], "10.0.0.9", true));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn the_vip_table_leaves_out_services_outside_scope() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        let (_, mut scoped) = connect(&mut ix, origin("web", None), &[]);
        let ops = ProxyOrigin {
            namespace: "ops".into(),
            name: "agent".into(),
            requested: None,
        };
        let (_, other) = connect(&mut ix, ops, &[]);
        assert_eq!(
            vips(&scoped.borrow_and_update()),
            set(&["catalog.shop", "invoices.billing"])
        );
        assert_eq!(
            vips(&other.borrow()),
            set(&["invoices.billing", "metrics.ops"])
        );

        // A VIP change out of scope changes nothing this proxy sees.
        ix.apply_service(with_vip(
            svc("metrics", "ops", &[("app", "metrics")]),
            "198.19.0.33",
        ));
        assert!(!scoped.has_changed().unwrap());
        ix.apply_service(with_vip(
            svc("ledger", "billing", &[("app", "ledger")]),
            "198.19.0.4",
        ));
        assert!(scoped.has_changed().unwrap());
        assert_eq!(
            vips(&scoped.borrow()),
            set(&["catalog.shop", "invoices.billing", "ledger.billing"])
        );
    }

    #[test]
    fn the_own_namespace_is_always_visible() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        // The workload asks only for a namespace the mesh leaves out.
        let (c, rx) = connect(&mut ix, origin("web", Some("ops")), &["catalog.shop"]);
        assert_eq!(ix.visible(c), Some(&only(&["shop"])));
        assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["10.0.0.1"]);
        assert_eq!(vips(&rx.borrow()), set(&["catalog.shop"]));
    }

    #[test]
    fn a_workload_narrows_but_never_widens_the_mesh_setting() {
        let mut ix = three_namespaces();
        let subs = ["invoices.billing", "metrics.ops"];
        let (c, rx) = connect(&mut ix, origin("web", Some("billing")), &subs);
        assert_eq!(ix.visible(c), Some(&only(&["billing", "shop"])));
        assert_eq!(addresses(&rx.borrow(), "invoices.billing"), ["10.0.0.2"]);
        assert!(is_not_found(&rx.borrow(), "metrics.ops"));

        ix.set_discovery_namespaces(only(&["ops"]));
        let (d, rx) = connect(&mut ix, origin("api", Some("billing,ops")), &subs);
        assert_eq!(ix.visible(d), Some(&only(&["ops", "shop"])));
        assert!(is_not_found(&rx.borrow(), "invoices.billing"));
        assert_eq!(addresses(&rx.borrow(), "metrics.ops"), ["10.0.0.3"]);
        // The first proxy was re-scoped with the mesh: billing is gone.
        assert_eq!(ix.visible(c), Some(&only(&["shop"])));
    }

    #[test]
    fn a_pod_annotation_change_re_scopes_its_proxy() {
        let mut ix = three_namespaces();
        let (c, mut rx) = connect(&mut ix, origin("web-0", None), &["metrics.ops"]);
        assert_eq!(
            addresses(&rx.borrow_and_update(), "metrics.ops"),
            ["10.0.0.3"]
        );

        let ann = |v: &str| BTreeMap::from([(DISCOVERY_NAMESPACES_KEY.to_string(), v.to_string())]);
        ix.set_pod_annotations("shop", "web-0", Some(&ann("billing")));
        assert!(rx.has_changed().unwrap());
        let view = rx.borrow_and_update().clone();
        assert!(is_not_found(&view, "metrics.ops"));
        assert_eq!(vips(&view), set(&["catalog.shop", "invoices.billing"]));

        // Another Pod's annotation does not touch it.
        ix.set_pod_annotations("shop", "web-1", Some(&ann("ops")));
        assert!(!rx.has_changed().unwrap());

        ix.set_pod_annotations("shop", "web-0", Some(&ann("billing,ops")));
        assert_eq!(
            addresses(&rx.borrow_and_update(), "metrics.ops"),
            ["10.0.0.3"]
        );
        // Known Pod without the annotation: no narrowing.
        ix.set_pod_annotations("shop", "web-0", Some(&BTreeMap::new()));
        assert_eq!(ix.visible(c), Some(&Namespaces::All));
    }

    #[test]
    fn a_known_pods_annotation_wins_over_the_proxys_label() {
        let mut ix = three_namespaces();
        let (c, _rx) = connect(&mut ix, origin("web-0", Some("billing,ops")), &[]);
        let ann = BTreeMap::from([(DISCOVERY_NAMESPACES_KEY.to_string(), "billing".to_string())]);
        ix.set_pod_annotations("shop", "web-0", Some(&ann));
        assert_eq!(ix.visible(c), Some(&only(&["billing", "shop"])));
        // The Pod is gone: the proxy's own label applies again.
        ix.set_pod_annotations("shop", "web-0", None);
        assert_eq!(ix.visible(c), Some(&only(&["billing", "ops", "shop"])));
    }

    #[test]
    fn a_proxy_that_has_not_said_who_it_is_sees_nothing_under_a_setting() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        let c = ix.allocate_conn();
        let rx = ix.connect_proxy(c, [key("catalog.shop")]);
        assert!(is_not_found(&rx.borrow(), "catalog.shop"));
        assert!(vips(&rx.borrow()).is_empty());
    }

    #[test]
    fn scoped_vip_tables_are_shared_and_dropped_with_their_last_proxy() {
        let mut ix = three_namespaces();
        let (a, _ra) = connect(&mut ix, origin("a", Some("billing")), &[]);
        let (b, _rb) = connect(&mut ix, origin("b", Some("billing")), &[]);
        let mut others = Vec::new();
        for i in 0..5 {
            others.push(connect(
                &mut ix,
                origin(&format!("x{i}"), Some(&format!("ns{i}"))),
                &[],
            ));
        }
        assert_eq!(ix.scoped_vip_tables(), 6);
        for (c, _) in others {
            ix.disconnect_proxy(c);
        }
        ix.disconnect_proxy(a);
        assert_eq!(ix.scoped_vip_tables(), 1);
        ix.disconnect_proxy(b);
        assert_eq!(ix.scoped_vip_tables(), 0);
    }

    #[test]
    fn a_gateway_is_scoped_like_a_sidecar() {
        let mut ix = three_namespaces();
        ix.set_discovery_namespaces(only(&["billing"]));
        let gw = key("web.shop");
        ix.apply_gateways(BTreeMap::from([(gw.clone(), vec![])]));
        let (c, rx) = connect(
            &mut ix,
            origin("gateway-0", None),
            &["invoices.billing", "metrics.ops"],
        );
        ix.follow_gateway(c, gw, "gateway");
        assert_eq!(addresses(&rx.borrow(), "invoices.billing"), ["10.0.0.2"]);
        assert!(is_not_found(&rx.borrow(), "metrics.ops"));
    }
}

/// The label postings follow a workload whose labels change on the same
/// stream: it leaves the old service and joins the new one, and a later
/// unregister leaves neither with a stale endpoint.
#[test]
fn a_relabelled_workload_moves_between_services() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop"), key("reviews.shop")]);
    ix.register_workload(
        ConnId(2),
        wl(
            "w",
            "shop",
            &[("app", "catalog"), ("tier", "a")],
            "127.0.0.2",
            true,
        ),
    );
    assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["127.0.0.2"]);
    ix.register_workload(
        ConnId(2),
        wl(
            "w",
            "shop",
            &[("app", "reviews"), ("tier", "a")],
            "127.0.0.2",
            true,
        ),
    );
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
    assert_eq!(addresses(&rx.borrow(), "reviews.shop"), ["127.0.0.2"]);
    ix.unregister_workload(ConnId(2));
    assert!(addresses(&rx.borrow(), "reviews.shop").is_empty());
    assert!(ix.workloads.by_label_is_empty());
}

/// A service whose selector changes selects by the new one only, and a
/// workload registering later finds it by the new selector.
#[test]
fn a_changed_selector_is_what_selects() {
    let mut ix = shop_index();
    let rx = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    ix.register_workload(
        ConnId(2),
        wl("old", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    ix.apply_service(svc("catalog", "shop", &[("app", "catalog-v2")]));
    assert!(addresses(&rx.borrow(), "catalog.shop").is_empty());
    ix.register_workload(
        ConnId(3),
        wl("new", "shop", &[("app", "catalog-v2")], "127.0.0.3", true),
    );
    assert_eq!(addresses(&rx.borrow(), "catalog.shop"), ["127.0.0.3"]);
    // The old pair no longer leads to the service.
    assert!(ix
        .services
        .selecting("shop", &[("app".to_string(), "catalog".to_string())].into())
        .is_empty());
}

/// Subscribers are found by service, so a proxy that unsubscribed or
/// disconnected is never published to again, and one still subscribed is.
#[test]
fn only_current_subscribers_get_a_change() {
    let mut ix = shop_index();
    let a = ix.connect_proxy(ConnId(1), [key("catalog.shop")]);
    let b = ix.connect_proxy(ConnId(2), [key("catalog.shop")]);
    let c = ix.connect_proxy(ConnId(3), [key("catalog.shop")]);
    ix.subscribe(ConnId(2), &[], &[key("catalog.shop")]);
    ix.disconnect_proxy(ConnId(3));
    let (va, vb, vc) = (a.borrow().clone(), b.borrow().clone(), c.borrow().clone());
    ix.register_workload(
        ConnId(9),
        wl("c", "shop", &[("app", "catalog")], "127.0.0.2", true),
    );
    assert!(!Arc::ptr_eq(&va, &a.borrow()));
    assert!(Arc::ptr_eq(&vb, &b.borrow()));
    assert!(Arc::ptr_eq(&vc, &c.borrow()));
    assert!(!ix.subscribers.contains_key(&key("reviews.shop")));
    assert_eq!(
        ix.subscribers[&key("catalog.shop")],
        BTreeSet::from([ConnId(1)])
    );
}
