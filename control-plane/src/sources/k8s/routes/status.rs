//! The `status.parents` a route should carry, decided without I/O.
//!
//! `status.parents` is shared: a Gateway's controller writes its entries
//! for Gateway parents, and other meshes may write theirs. Only entries
//! whose `controllerName` is [`CONTROLLER_NAME`] are replaced; every
//! other entry is copied back untouched, in its place. Only a difference
//! is written, and `lastTransitionTime` is kept while a condition's status
//! stays the same, so the controller's own write, seen again through the
//! watch, ends there (and replicas agree, as for policy statuses).

use serde_json::{json, Value};

use super::{ParentVerdict, RouteObject};
pub use crate::routes::CONTROLLER_NAME;

/// The `status.parents` to write, or `None` when the object already says
/// it. `verdicts` are by position in `spec.parentRefs`.
pub fn desired(
    object: &RouteObject,
    verdicts: &[(usize, ParentVerdict)],
    now: &str,
) -> Option<Vec<Value>> {
    let ours = |p: &Value| p.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut parents: Vec<Value> = object
        .status_parents
        .iter()
        .filter(|p| !ours(p))
        .cloned()
        .collect();
    for (i, v) in verdicts {
        let Some(parent_ref) = object.parent_refs.get(*i) else {
            continue;
        };
        let old = object
            .status_parents
            .iter()
            .find(|p| ours(p) && p.get("parentRef") == Some(parent_ref));
        let condition = |kind: &str, (status, reason, message): &(bool, &str, String)| {
            let status = if *status { "True" } else { "False" };
            let old = old
                .and_then(|p| p.get("conditions"))
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
                });
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
                "observedGeneration": object.generation,
                "lastTransitionTime": since,
            })
        };
        parents.push(json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": [
                condition("Accepted", &v.accepted),
                condition("ResolvedRefs", &v.resolved),
            ],
        }));
    }
    (parents != object.status_parents).then_some(parents)
}
