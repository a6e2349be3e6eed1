use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::*;
use crate::sources::k8s::cluster::ObjKey;

fn object(generation: i64, spec: Value) -> DynamicObject {
    let mut o = DynamicObject::new(
        "auth",
        &kube::api::ApiResource::erase::<mycel_crds::GatewayPolicy>(&()),
    )
    .within("shop");
    o.metadata.generation = Some(generation);
    o.data = json!({ "spec": spec });
    o
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[test]
fn routes_find_the_valid_version_and_the_status_says_why() {
    let mut store = store();
    let key: ObjKey = ("shop".into(), "auth".into());
    let good = json!({"rateLimit": {"requests": 10, "per": "1s"}});
    assert!(store.apply(read(&object(1, good)).unwrap()));
    let found = lookup(&store)("shop", "auth").unwrap();
    assert_eq!(found.rate_limit.unwrap().requests, 10);
    assert!(
        lookup(&store)("other", "auth").is_none(),
        "another namespace's"
    );
    let c = &store.desired_status(&key, &now()).unwrap().conditions[0];
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Accepted"));
    assert!(c.message.contains("gateways apply it"), "{}", c.message);

    // An invalid update: the previous version stays what routes find.
    let bad = json!({"rateLimit": {"requests": 10, "per": "1s", "onRedisFailure": "Deny"}});
    assert!(!store.apply(read(&object(2, bad)).unwrap()));
    assert_eq!(
        lookup(&store)("shop", "auth")
            .unwrap()
            .rate_limit
            .unwrap()
            .on_redis_failure,
        None
    );
    let c = &store.desired_status(&key, &now()).unwrap().conditions[0];
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
    assert!(
        c.message.contains("spec.rateLimit.onRedisFailure"),
        "{}",
        c.message
    );
    assert!(c.message.contains("generation 1"), "{}", c.message);

    assert!(store.delete(&key));
    assert!(lookup(&store)("shop", "auth").is_none());
}

#[test]
fn a_policy_never_valid_is_missing_for_routes() {
    let mut store = store();
    for (name, spec, field) in [
        (
            "empty",
            json!({}),
            "spec: a GatewayPolicy needs at least one of",
        ),
        (
            "unreadable",
            json!({"rateLimit": {"requests": "many", "per": "1s"}}),
            "spec.rateLimit.requests",
        ),
        (
            "hmac",
            json!({"jwt": {"issuer": "i", "jwks": {"file": "/j"}, "algorithms": ["HS256"]}}),
            "spec.jwt.algorithms",
        ),
    ] {
        let mut o = object(1, spec);
        o.metadata.name = Some(name.into());
        store.apply(read(&o).unwrap());
        assert!(lookup(&store)("shop", name).is_none(), "{name}");
        let key: ObjKey = ("shop".into(), name.into());
        let c = &store.desired_status(&key, &now()).unwrap().conditions[0];
        assert!(c.message.contains(field), "{name}: {}", c.message);
    }
}
