use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DynamicObject;
use mycel_crds::TrafficPolicyStatus;
use serde_json::{json, Value};

use super::status::{self, desired, reason, ACCEPTED};
use super::*;

fn svc(name: &str) -> ServiceKey {
    ServiceKey::new(name, "shop").unwrap()
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

/// A policy object as the watch delivers it.
fn obj(name: &str, created: &str, generation: i64, spec: Value) -> PolicyObject {
    let raw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": "shop", "generation": generation,
                     "creationTimestamp": created},
        "spec": spec,
    }))
    .unwrap();
    object::read(&raw).unwrap()
}

fn on(service: &str, port: Option<u16>, attempts: u32) -> Value {
    let mut target = json!({"kind": "Service", "name": service});
    if let Some(p) = port {
        target["port"] = json!(p);
    }
    json!({"targetRef": target, "retry": {"attempts": attempts}})
}

const T1: &str = "2024-01-01T00:00:00Z";
const T2: &str = "2024-01-02T00:00:00Z";

/// Every known Service has ports 80 and 8080; `web` and `api` exist.
fn ports(s: &ServiceKey) -> Option<Vec<u16>> {
    ["web", "api"].contains(&s.name()).then(|| vec![80, 8080])
}

fn key(name: &str) -> ObjKey {
    ("shop".into(), name.into())
}

fn verdict(p: &Policies, name: &str) -> Verdict {
    p.verdict(&key(name), ports).unwrap()
}

fn reason_of(v: &Verdict) -> &'static str {
    status::accepted(v).1
}

fn sources(p: &Policies, service: &str) -> Vec<String> {
    p.service_policy(&svc(service))
        .map(|sp| sp.sources)
        .unwrap_or_default()
}

/// Objects applied in order, then what each one's verdict is and which
/// objects `web` applies.
#[test]
fn grouping_and_conflicts_as_a_table() {
    struct Case {
        what: &'static str,
        objects: Vec<PolicyObject>,
        reasons: &'static [(&'static str, &'static str)],
        applied: &'static [&'static str],
    }
    let cases = [
        Case {
            what: "one policy",
            objects: vec![obj("a", T1, 1, on("web", None, 3))],
            reasons: &[("a", reason::ACCEPTED)],
            applied: &["shop/a"],
        },
        Case {
            what: "the older of two on one Service wins, created in either order",
            objects: vec![
                obj("young", T2, 1, on("web", None, 3)),
                obj("old", T1, 1, on("web", None, 4)),
            ],
            reasons: &[("old", reason::ACCEPTED), ("young", reason::CONFLICTED)],
            applied: &["shop/old"],
        },
        Case {
            what: "same creation time: the name decides",
            objects: vec![
                obj("b", T1, 1, on("web", None, 3)),
                obj("a", T1, 1, on("web", None, 4)),
            ],
            reasons: &[("a", reason::ACCEPTED), ("b", reason::CONFLICTED)],
            applied: &["shop/a"],
        },
        Case {
            what: "a Service-wide and a port policy do not conflict",
            objects: vec![
                obj("wide", T2, 1, on("web", None, 3)),
                obj("port", T1, 1, on("web", Some(80), 4)),
            ],
            reasons: &[("wide", reason::ACCEPTED), ("port", reason::ACCEPTED)],
            applied: &["shop/port", "shop/wide"],
        },
        Case {
            what: "two on one port: the older wins; another port is another target",
            objects: vec![
                obj("p1", T1, 1, on("web", Some(80), 3)),
                obj("p2", T2, 1, on("web", Some(80), 3)),
                obj("p3", T2, 1, on("web", Some(8080), 3)),
            ],
            reasons: &[
                ("p1", reason::ACCEPTED),
                ("p2", reason::CONFLICTED),
                ("p3", reason::ACCEPTED),
            ],
            applied: &["shop/p1", "shop/p3"],
        },
        Case {
            what: "an unknown Service: kept for the index, TargetNotFound",
            objects: vec![obj("a", T1, 1, on("nope", None, 3))],
            reasons: &[("a", reason::TARGET_NOT_FOUND)],
            applied: &[],
        },
        Case {
            what: "a port the Service lacks",
            objects: vec![obj("a", T1, 1, on("web", Some(9), 3))],
            reasons: &[("a", reason::TARGET_NOT_FOUND)],
            applied: &["shop/a"],
        },
        Case {
            what: "an invalid policy is never applied and takes no target",
            objects: vec![
                obj("bad", T1, 1, on("web", None, 11)),
                obj("good", T2, 1, on("web", None, 3)),
            ],
            reasons: &[("bad", reason::INVALID), ("good", reason::ACCEPTED)],
            applied: &["shop/good"],
        },
    ];
    for case in cases {
        let mut p = Policies::default();
        for o in case.objects {
            p.apply(o);
        }
        for (name, want) in case.reasons {
            let v = verdict(&p, name);
            assert_eq!(reason_of(&v), *want, "{}: {name}: {v:?}", case.what);
        }
        assert_eq!(sources(&p, "web"), case.applied, "{}", case.what);
    }
}

#[test]
fn the_service_policy_holds_the_winners_specs_by_port() {
    let mut p = Policies::default();
    p.apply(obj("wide", T1, 1, on("web", None, 3)));
    p.apply(obj("port", T1, 1, on("web", Some(80), 5)));
    p.apply(obj("loser", T2, 1, on("web", Some(80), 7)));
    let sp = p.service_policy(&svc("web")).unwrap();
    assert_eq!(sp.service_wide.unwrap().retry.unwrap().attempts, 3);
    assert_eq!(sp.ports.len(), 1);
    assert_eq!(sp.ports[&80].retry.as_ref().unwrap().attempts, 5);
    assert_eq!(p.service_policy(&svc("api")), None);
}

#[test]
fn the_conflicted_message_names_the_winner() {
    let mut p = Policies::default();
    p.apply(obj("old", T1, 1, on("web", Some(80), 3)));
    p.apply(obj("new", T2, 1, on("web", Some(80), 3)));
    let (st, r, message) = status::accepted(&verdict(&p, "new"));
    assert_eq!((st, r), ("False", reason::CONFLICTED));
    assert_eq!(
        message,
        "shop/old is older and has the same target (port 80 of Service web); it is applied instead"
    );
}

#[test]
fn deleting_the_winner_applies_the_other() {
    let mut p = Policies::default();
    p.apply(obj("old", T1, 1, on("web", None, 3)));
    p.apply(obj("new", T2, 1, on("web", None, 4)));
    assert_eq!(p.delete(&key("old")), BTreeSet::from([svc("web")]));
    assert_eq!(reason_of(&verdict(&p, "new")), reason::ACCEPTED);
    assert_eq!(sources(&p, "web"), ["shop/new"]);
    assert_eq!(p.delete(&key("new")), BTreeSet::from([svc("web")]));
    assert_eq!(p.service_policy(&svc("web")), None);
    assert!(p.delete(&key("new")).is_empty(), "deleting twice");
}

#[test]
fn what_an_event_affects() {
    let mut p = Policies::default();
    assert_eq!(
        p.apply(obj("a", T1, 1, on("web", None, 3))),
        BTreeSet::from([svc("web")])
    );
    // Our own status write coming back through the watch: nothing to do.
    let mut same = obj("a", T1, 1, on("web", None, 3));
    same.status = Some(TrafficPolicyStatus::default());
    assert!(p.apply(same).is_empty());
    // A new target: the old Service loses it, the new one gains it.
    assert_eq!(
        p.apply(obj("a", T1, 2, on("api", None, 3))),
        BTreeSet::from([svc("web"), svc("api")])
    );
    assert_eq!(p.on_services(&BTreeSet::from([svc("api")])), [key("a")]);
    assert!(p.on_services(&BTreeSet::from([svc("web")])).is_empty());
    // An invalid new object touches no Service.
    assert!(p.apply(obj("b", T1, 1, on("web", None, 0))).is_empty());
}

#[test]
fn an_invalid_update_keeps_the_applied_version() {
    let mut p = Policies::default();
    p.apply(obj("a", T1, 1, on("web", None, 3)));
    // Generation 2 is refused: generation 1 stays applied, and says so.
    assert!(p.apply(obj("a", T1, 2, on("web", None, 11))).is_empty());
    let v = verdict(&p, "a");
    assert!(
        matches!(&v, Verdict::Invalid { error, kept: Some(1) } if error.field == "spec.retry.attempts"),
        "{v:?}"
    );
    assert_eq!(
        status::accepted(&v).2,
        "invalid: spec.retry.attempts: 11 is out of range (2-10); the previous version (generation 1) stays applied"
    );
    let sp = p.service_policy(&svc("web")).unwrap();
    assert_eq!(sp.service_wide.unwrap().retry.unwrap().attempts, 3);
    // Still invalid at generation 3: still generation 1 applied.
    p.apply(obj("a", T1, 3, on("web", None, 12)));
    assert!(matches!(
        verdict(&p, "a"),
        Verdict::Invalid { kept: Some(1), .. }
    ));
    // Fixed: generation 4 replaces it.
    assert_eq!(
        p.apply(obj("a", T1, 4, on("web", None, 5))),
        BTreeSet::from([svc("web")])
    );
    assert_eq!(reason_of(&verdict(&p, "a")), reason::ACCEPTED);
    let sp = p.service_policy(&svc("web")).unwrap();
    assert_eq!(sp.service_wide.unwrap().retry.unwrap().attempts, 5);
}

#[test]
fn a_version_that_lost_its_conflict_is_not_kept() {
    let mut p = Policies::default();
    p.apply(obj("old", T1, 1, on("web", None, 3)));
    p.apply(obj("new", T2, 1, on("web", None, 4)));
    p.apply(obj("new", T2, 2, on("web", None, 11)));
    assert!(matches!(
        verdict(&p, "new"),
        Verdict::Invalid { kept: None, .. }
    ));
    // The winner goes: the loser's old version was never applied, so it
    // does not start now.
    p.delete(&key("old"));
    assert_eq!(p.service_policy(&svc("web")), None);
    assert_eq!(
        status::accepted(&verdict(&p, "new")).2,
        "invalid: spec.retry.attempts: 11 is out of range (2-10)"
    );
}

#[test]
fn specs_the_type_cannot_read_are_invalid_naming_the_field() {
    let cases = [
        (
            json!({"targetRef": {"kind": "Service", "name": "web"}, "retry": {"attempts": "three"}}),
            "spec.retry.attempts",
        ),
        (
            json!({"targetRef": {"kind": "Service", "name": "web"}, "retry": {"attempts": 11}}),
            "spec.retry.attempts",
        ),
        (
            json!({"targetRef": {"kind": "Pod", "name": "web"}}),
            "spec.targetRef.kind",
        ),
        (
            json!({"targetRef": {"kind": "Service", "name": "Web"}}),
            "spec.targetRef.name",
        ),
        (json!({"retry": {"attempts": 3}}), "spec"),
        (Value::Null, "spec"),
    ];
    for (spec, field) in cases {
        let o = obj("a", T1, 1, spec.clone());
        match &o.spec {
            Err(e) => assert_eq!(e.field, field, "{spec}: {e}"),
            Ok(v) => panic!("{spec} accepted: {v:?}"),
        }
    }
}

// Status decisions.

fn now() -> Time {
    time("2024-02-01T00:00:00Z")
}

fn accepted_verdict() -> Verdict {
    Verdict::Accepted {
        target: Target {
            service: svc("web"),
            port: None,
        },
    }
}

fn not_found() -> Verdict {
    Verdict::TargetNotFound {
        target: Target {
            service: svc("web"),
            port: None,
        },
        port_missing: false,
    }
}

#[test]
fn a_status_is_written_only_when_it_differs() {
    let written = desired(&accepted_verdict(), 1, None, &now()).unwrap();
    assert_eq!(written.observed_generation, Some(1));
    let c = &written.conditions[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        (ACCEPTED, "True", reason::ACCEPTED)
    );
    assert_eq!(c.message, "applied to Service web");
    assert_eq!(c.last_transition_time, now());

    // Read back: nothing to write (no loop), even much later.
    let later = time("2024-03-01T00:00:00Z");
    assert_eq!(
        desired(&accepted_verdict(), 1, Some(&written), &later),
        None
    );

    // A new generation with the same verdict: written, the transition time
    // kept (the condition did not change).
    let next = desired(&accepted_verdict(), 2, Some(&written), &later).unwrap();
    assert_eq!(next.observed_generation, Some(2));
    assert_eq!(next.conditions[0].last_transition_time, now());

    // The verdict flips: a new transition time.
    let flipped = desired(&not_found(), 2, Some(&next), &later).unwrap();
    let c = &flipped.conditions[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reason::TARGET_NOT_FOUND)
    );
    assert_eq!(c.last_transition_time, later);
    assert_eq!(
        c.message,
        "Service web does not exist in namespace shop; the policy applies once it does"
    );
}

#[test]
fn two_replicas_agree_after_one_write() {
    // Replica A writes at t1; replica B, deciding the same at t2 from what
    // A wrote, finds nothing to change.
    let a = desired(&not_found(), 3, None, &time(T1)).unwrap();
    assert_eq!(desired(&not_found(), 3, Some(&a), &time(T2)), None);
    // Both wrote before seeing the other's (a lost race): whichever came
    // last stands, and the other replica then agrees with it.
    let b = desired(&not_found(), 3, None, &time(T2)).unwrap();
    assert_eq!(desired(&not_found(), 3, Some(&b), &time(T1)), None);
}

#[test]
fn other_conditions_are_kept() {
    let theirs = Condition {
        type_: "Audited".into(),
        status: "True".into(),
        reason: "Ok".into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: time(T1),
    };
    let current = TrafficPolicyStatus {
        observed_generation: None,
        conditions: vec![theirs.clone()],
    };
    let next = desired(&accepted_verdict(), 1, Some(&current), &now()).unwrap();
    assert_eq!(next.conditions.len(), 2);
    assert_eq!(next.conditions[1], theirs);
    assert_eq!(next.conditions[0].type_, ACCEPTED);
}

#[test]
fn a_missing_port_is_named() {
    let v = Verdict::TargetNotFound {
        target: Target {
            service: svc("web"),
            port: Some(9),
        },
        port_missing: true,
    };
    assert_eq!(status::accepted(&v).2, "Service web has no port 9");
}
