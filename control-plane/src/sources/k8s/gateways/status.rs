//! The statuses of our GatewayClasses and Gateways, decided without I/O.
//! As for routes, only a difference is written and a condition keeps its
//! `lastTransitionTime` while its status stays the same, so our own
//! write, seen again through the watch, ends there.
//!
//! Both statuses are wholly this controller's (the class names it), so
//! the lists are replaced whole; the defaults the CRDs put there
//! (`Unknown`, `Pending`) are replaced the first time.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ClassObject, GatewayObject};
use crate::routes::gateway::certificates::Unresolved;
use crate::routes::gateway::{CertificateRef, Listener, GROUP};
use crate::sources::k8s::routes::status::condition;

type Condition = (bool, &'static str, String);

/// The `status` to merge into a GatewayClass of ours, or `None` when it
/// already says it.
pub fn class(class: &ClassObject, now: &str) -> Option<Value> {
    let accepted: Condition = (
        true,
        "Accepted",
        "Gateways of this class are served by Mycel gateway proxies".into(),
    );
    let conditions = vec![condition(
        "Accepted",
        &accepted,
        class.generation,
        &class.conditions,
        now,
    )];
    (conditions != class.conditions).then(|| json!({ "conditions": conditions }))
}

/// The `status` to merge into a Gateway of ours (`attached`: routes per
/// listener), or `None` when it already says it.
pub fn gateway(
    gw: &GatewayObject,
    attached: &[u32],
    unresolved: Option<&BTreeMap<usize, Unresolved>>,
    now: &str,
) -> Option<Value> {
    let list = |k: &str| {
        gw.status
            .get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_conditions, old_listeners) = (list("conditions"), list("listeners"));
    let generation = gw.generation;
    let (accepted, programmed, listeners): (Condition, Condition, Vec<Value>) = match &gw.gateway {
        Err(e) => (
            (false, "Invalid", e.to_string()),
            (false, "Invalid", "the Gateway is not accepted".into()),
            Vec::new(),
        ),
        Ok(g) => {
            let served = g.listeners.iter().filter(|l| l.served()).count();
            let accepted = if served == g.listeners.len() {
                (true, "Accepted", "every listener is served".into())
            } else if served > 0 {
                (
                    true,
                    "ListenersNotValid",
                    format!(
                        "{served} of {} listeners are served; see status.listeners",
                        g.listeners.len()
                    ),
                )
            } else {
                (
                    false,
                    "ListenersNotValid",
                    "no listener is served; see status.listeners".into(),
                )
            };
            let programmed = if served > 0 {
                (
                    true,
                    "Programmed",
                    "gateway proxies following this Gateway serve its listeners".into(),
                )
            } else {
                (false, "Invalid", "no listener is served".into())
            };
            let listeners = g
                .listeners
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let old = old_listeners
                        .iter()
                        .find(|o| o.get("name").and_then(Value::as_str) == Some(&l.name))
                        .and_then(|o| o.get("conditions"))
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    listener(
                        l,
                        attached.get(i).copied().unwrap_or(0),
                        unresolved
                            .and_then(|u| u.get(&i))
                            .map(Vec::as_slice)
                            .unwrap_or_default(),
                        generation,
                        old,
                        now,
                    )
                })
                .collect();
            (accepted, programmed, listeners)
        }
    };
    let conditions = vec![
        condition("Accepted", &accepted, generation, &old_conditions, now),
        condition("Programmed", &programmed, generation, &old_conditions, now),
    ];
    (conditions != old_conditions || listeners != old_listeners)
        .then(|| json!({ "conditions": conditions, "listeners": listeners }))
}

fn listener(
    l: &Listener,
    attached: u32,
    unresolved: &[(CertificateRef, String)],
    generation: i64,
    old: &[Value],
    now: &str,
) -> Value {
    // An HTTPS listener none of whose certificates can be served serves
    // nothing: every handshake for its names would fail.
    let no_certificate =
        l.https && !l.certificates.is_empty() && unresolved.len() >= l.certificates.len();
    let (accepted, programmed): (Condition, Condition) = match &l.refused {
        None if no_certificate => (
            (true, "Accepted", "the listener is accepted".into()),
            (
                false,
                "Invalid",
                "none of the listener's certificateRefs can be served; see ResolvedRefs".into(),
            ),
        ),
        None => (
            (true, "Accepted", "the listener is served".into()),
            (true, "Programmed", "the listener is served".into()),
        ),
        Some(r) => (
            (false, r.reason, r.message.clone()),
            (false, "Invalid", r.message.clone()),
        ),
    };
    let resolved: Condition = if !unresolved.is_empty() {
        (
            false,
            "InvalidCertificateRef",
            unresolved
                .iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if l.invalid_kinds.is_empty() {
        (true, "ResolvedRefs", "every reference resolved".into())
    } else {
        (
            false,
            "InvalidRouteKinds",
            format!(
                "{} is not a route kind Mycel serves (HTTPRoute, GRPCRoute)",
                l.invalid_kinds.join(", ")
            ),
        )
    };
    let kinds: Vec<Value> = l
        .kinds
        .iter()
        .map(|k| json!({ "group": GROUP, "kind": k.as_str() }))
        .collect();
    json!({
        "name": l.name,
        "attachedRoutes": attached,
        "supportedKinds": kinds,
        "conditions": [
            condition("Accepted", &accepted, generation, old, now),
            condition("Programmed", &programmed, generation, old, now),
            condition("ResolvedRefs", &resolved, generation, old, now),
        ],
    })
}
