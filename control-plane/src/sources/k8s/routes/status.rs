//! The `status.parents` a route should carry, decided without I/O.
//!
//! `status.parents` is shared: other Gateways' controllers write their
//! entries for their Gateway parents, and other meshes may write theirs.
//! Only entries whose `controllerName` is [`CONTROLLER_NAME`] (Service
//! parents) or [`GATEWAY_CONTROLLER_NAME`] (parents that are Gateways of
//! this controller's classes) are replaced; every other entry is copied
//! back untouched, in its order. Only a difference
//! is written, and `lastTransitionTime` is kept while a condition's status
//! stays the same, so the controller's own write, seen again through the
//! watch, ends there (and replicas agree, as for policy statuses).

use serde_json::{json, Value};

use super::{ParentVerdict, RouteObject};
pub use crate::routes::gateway::GATEWAY_CONTROLLER_NAME;
pub use crate::routes::CONTROLLER_NAME;

/// The `status.parents` to write, or `None` when the object already says
/// it. `mesh` are the verdicts on Service parents, `gateways` those on
/// this controller's Gateway parents, by position in `spec.parentRefs`:
/// both kinds of entry are this controller's, so they are decided and
/// written together.
pub fn desired(
    object: &RouteObject,
    mesh: &[(usize, ParentVerdict)],
    gateways: &[(usize, ParentVerdict)],
    now: &str,
) -> Option<Vec<Value>> {
    let ours = |p: &Value| {
        matches!(
            p.get("controllerName").and_then(Value::as_str),
            Some(CONTROLLER_NAME | GATEWAY_CONTROLLER_NAME)
        )
    };
    let mut parents: Vec<Value> = object
        .status_parents
        .iter()
        .filter(|p| !ours(p))
        .cloned()
        .collect();
    for (controller, verdicts) in [(CONTROLLER_NAME, mesh), (GATEWAY_CONTROLLER_NAME, gateways)] {
        for (i, v) in verdicts {
            let Some(parent_ref) = object.parent_refs.get(*i) else {
                continue;
            };
            let old = object.status_parents.iter().find(|p| {
                p.get("controllerName").and_then(Value::as_str) == Some(controller)
                    && p.get("parentRef") == Some(parent_ref)
            });
            let old = old
                .and_then(|p| p.get("conditions"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            parents.push(json!({
                "parentRef": parent_ref,
                "controllerName": controller,
                "conditions": [
                    condition("Accepted", &v.accepted, object.generation, old, now),
                    condition("ResolvedRefs", &v.resolved, object.generation, old, now),
                ],
            }));
        }
    }
    (parents != object.status_parents).then_some(parents)
}

/// One condition; its `lastTransitionTime` stays as in `old` while its
/// status does not change.
pub fn condition(
    kind: &str,
    (status, reason, message): &(bool, &str, String),
    generation: i64,
    old: &[Value],
    now: &str,
) -> Value {
    let status = if *status { "True" } else { "False" };
    let old = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let since = match old {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => c
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| Value::from(now)),
        _ => Value::from(now),
    };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}
