use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;
use crate::sources::k8s::ClusterSettings;

fn cluster() -> Cluster {
    Cluster::new(ClusterSettings {
        trust_domain: "cluster.local".into(),
        mesh_port: 15006,
    })
}

fn slice(name: &str, ip: &str, pod: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}}],
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            annotations: Some(BTreeMap::from([(
                convert::INJECTED_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap()
}

fn feed(c: &mut Cluster, r: &mut Relist, changes: Vec<Change>) -> Vec<Option<Kind>> {
    changes.into_iter().map(|ch| apply(c, r, ch).0).collect()
}

fn policy(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "mycel.io/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": "shop", "generation": 1,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"targetRef": {"kind": "Service", "name": "web"}},
    }))
    .unwrap()
}

#[test]
fn a_policy_relist_drops_policies_deleted_meanwhile() {
    let web = ServiceKey::new("web", "shop").unwrap();
    let mut p = Policies::default();
    let mut r = Relist::default();
    let (_, affected) = apply_policy(&mut p, &mut r, Event::Apply(policy("a")));
    assert_eq!(affected, BTreeSet::from([web.clone()]));
    apply_policy(&mut p, &mut r, Event::Apply(policy("b")));
    // The watch restarts; `a` was deleted meanwhile.
    apply_policy(&mut p, &mut r, Event::Init);
    apply_policy(&mut p, &mut r, Event::InitApply(policy("b")));
    let (done, affected) = apply_policy(&mut p, &mut r, Event::InitDone);
    assert_eq!(done, Some(Kind::Policy));
    assert_eq!(affected, BTreeSet::from([web.clone()]));
    assert_eq!(p.keys(), [("shop".to_string(), "b".to_string())]);
    assert_eq!(p.service_policy(&web).unwrap().sources, ["shop/b"]);
}

#[test]
fn a_relist_drops_what_disappeared_and_equals_a_fresh_start() {
    let key = ServiceKey::new("web", "shop").unwrap();
    let mut c = cluster();
    let mut r = Relist::default();
    feed(
        &mut c,
        &mut r,
        vec![
            Change::Service(Event::Apply(service())),
            Change::Pod(Event::Apply(pod("a"))),
            Change::Pod(Event::Apply(pod("b"))),
            Change::Slice(Event::Apply(slice("s1", "198.18.0.2", "a"))),
            Change::Slice(Event::Apply(slice("s2", "198.18.0.3", "b"))),
        ],
    );
    assert_eq!(c.service_view(&key).endpoints.len(), 2);

    // The watches restart; meanwhile slice s1 and pod a were deleted.
    let done = feed(
        &mut c,
        &mut r,
        vec![
            Change::Slice(Event::Init),
            Change::Slice(Event::InitApply(slice("s2", "198.18.0.3", "b"))),
            Change::Slice(Event::InitDone),
            Change::Pod(Event::Init),
            Change::Pod(Event::InitApply(pod("b"))),
            Change::Pod(Event::InitDone),
        ],
    );
    assert_eq!(done[2], Some(Kind::Slice));
    assert_eq!(done[5], Some(Kind::Pod));

    let mut fresh = cluster();
    let mut fr = Relist::default();
    feed(
        &mut fresh,
        &mut fr,
        vec![
            Change::Service(Event::InitApply(service())),
            Change::Pod(Event::InitApply(pod("b"))),
            Change::Slice(Event::InitApply(slice("s2", "198.18.0.3", "b"))),
        ],
    );
    assert_eq!(c.service_view(&key), fresh.service_view(&key));
    assert_eq!(c.slice_keys(), fresh.slice_keys());
    assert_eq!(c.pod_keys(), fresh.pod_keys());

    // A re-list of services that no longer shows `web` deletes it.
    feed(
        &mut c,
        &mut r,
        vec![
            Change::Service(Event::Init),
            Change::Service(Event::InitDone),
        ],
    );
    assert_eq!(c.service_view(&key).service, None);
}

fn gateway_policy(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "mycel.io/v1alpha1", "kind": "GatewayPolicy",
        "metadata": {"name": name, "namespace": "shop", "generation": 1},
        "spec": {"rateLimit": {"requests": 10, "per": "1s"}},
    }))
    .unwrap()
}

#[test]
fn a_gateway_policy_relist_drops_policies_deleted_meanwhile() {
    let mut store = gateway_policies::store();
    let mut r = Relist::default();
    let mut feed = |store: &mut GatewayPolicies, e| {
        apply_policy_object(
            store,
            &mut r,
            Kind::GatewayPolicy,
            e,
            gateway_policies::read,
            |_, _| {},
        )
    };
    feed(&mut store, Event::Apply(gateway_policy("a")));
    feed(&mut store, Event::Apply(gateway_policy("b")));
    // The watch restarts; `a` was deleted meanwhile.
    feed(&mut store, Event::Init);
    feed(&mut store, Event::InitApply(gateway_policy("b")));
    assert_eq!(feed(&mut store, Event::InitDone), Some(Kind::GatewayPolicy));
    assert_eq!(store.keys(), [("shop".to_string(), "b".to_string())]);
    let find = gateway_policies::lookup(&store);
    assert!(find("shop", "a").is_none() && find("shop", "b").is_some());
}
