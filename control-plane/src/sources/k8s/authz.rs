//! `AuthorizationPolicy` and `PeerAuthentication` objects in Kubernetes
//! mode: read from the watch's untyped objects (one unreadable object is
//! one invalid policy, not a failed list), converted and checked as
//! mesh.yaml's are, and the status each should carry. An object that turns
//! invalid on an update keeps its last valid version applied (proxies keep
//! their last good config too); nothing is kept across a controller
//! restart.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use mycel_api::authz::InvalidPolicy;
use mycel_crds::authorization_policy::AuthorizationPolicyStatus;
use serde::de::DeserializeOwned;

use super::cluster::{obj_key, ObjKey};
use super::policies::status::accepted_conditions;
use crate::authz::peer::PeerAuthPolicy;
use crate::authz::SelectedPolicy;

/// One policy object, converted to `T`.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyObject<T> {
    pub key: ObjKey,
    pub generation: i64,
    pub spec: Result<T, InvalidPolicy>,
    /// The status as last read, to write only what differs.
    pub status: Option<AuthorizationPolicyStatus>,
}

pub type AuthzObject = PolicyObject<SelectedPolicy>;
pub type AuthzPolicies = PolicyObjects<SelectedPolicy>;
pub type PeerAuthPolicies = PolicyObjects<PeerAuthPolicy>;

pub fn read(obj: &DynamicObject) -> Option<AuthzObject> {
    read_as(obj, crate::authz::from_spec)
}

pub fn read_peer_auth(obj: &DynamicObject) -> Option<PolicyObject<PeerAuthPolicy>> {
    read_as(obj, crate::authz::peer::from_spec)
}

/// Reads an object whose spec is `S` (every field of which has a default)
/// and converts it with `convert(namespace, name, spec)`.
pub(super) fn read_as<S: DeserializeOwned, T>(
    obj: &DynamicObject,
    convert: impl Fn(&str, &str, &S) -> Result<T, InvalidPolicy>,
) -> Option<PolicyObject<T>> {
    let key = obj_key(&obj.metadata)?;
    let absent = serde_json::Value::Object(Default::default());
    // An absent spec is all defaults (for an AuthorizationPolicy: an ALLOW
    // policy without rules).
    let raw = obj
        .data
        .get("spec")
        .filter(|v| !v.is_null())
        .unwrap_or(&absent);
    let spec = serde_path_to_error::deserialize(raw.clone())
        .map_err(|e| {
            let path = e.path().to_string();
            InvalidPolicy {
                field: if path == "." {
                    "spec".into()
                } else {
                    format!("spec.{path}")
                },
                problem: e.into_inner().to_string(),
            }
        })
        .and_then(|spec| convert(&key.0, &key.1, &spec));
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    Some(PolicyObject {
        generation: obj.metadata.generation.unwrap_or(0),
        spec,
        status,
        key,
    })
}

#[derive(Clone, Debug)]
struct Entry<T> {
    object: PolicyObject<T>,
    /// While the spec is invalid: the last valid version and its
    /// generation, which stays applied.
    kept: Option<(i64, T)>,
}

impl<T> Entry<T> {
    fn effective(&self) -> Option<&T> {
        match &self.object.spec {
            Ok(p) => Some(p),
            Err(_) => self.kept.as_ref().map(|(_, p)| p),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PolicyObjects<T> {
    entries: BTreeMap<ObjKey, Entry<T>>,
    /// The message of a valid object's `Accepted` condition.
    accepted: &'static str,
}

impl<T> Default for PolicyObjects<T> {
    fn default() -> Self {
        Self::accepted_saying("applied to the workloads it selects")
    }
}

impl<T> PolicyObjects<T> {
    /// A store whose valid objects' `Accepted` condition says `message`.
    pub fn accepted_saying(message: &'static str) -> Self {
        Self {
            entries: BTreeMap::new(),
            accepted: message,
        }
    }
}

impl<T: Clone + PartialEq> PolicyObjects<T> {
    /// Adds or replaces a policy; returns whether what applies changed.
    pub fn apply(&mut self, object: PolicyObject<T>) -> bool {
        let key = object.key.clone();
        let old = self.entries.get(&key);
        let kept = match &object.spec {
            Ok(_) => None,
            Err(_) => old.and_then(|e| match &e.object.spec {
                Ok(p) => Some((e.object.generation, p.clone())),
                Err(_) => e.kept.clone(),
            }),
        };
        let before = old.and_then(Entry::effective).cloned();
        let next = Entry { object, kept };
        let changed = before.as_ref() != next.effective();
        self.entries.insert(key, next);
        changed
    }

    /// Removes a policy; returns whether one applied.
    pub fn delete(&mut self, key: &ObjKey) -> bool {
        self.entries
            .remove(key)
            .is_some_and(|e| e.effective().is_some())
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.entries.keys().cloned().collect()
    }

    /// What applies for `key` right now.
    pub fn effective(&self, key: &ObjKey) -> Option<&T> {
        self.entries.get(key).and_then(Entry::effective)
    }

    /// The status `key` should carry, or None when it already does (or is
    /// gone).
    pub fn desired_status(&self, key: &ObjKey, now: &Time) -> Option<AuthorizationPolicyStatus> {
        let e = self.entries.get(key)?;
        let verdict = match &e.object.spec {
            Ok(_) => ("True", "Accepted", self.accepted.to_string()),
            Err(error) => {
                let mut message = format!("invalid: {error}");
                if let Some((generation, _)) = &e.kept {
                    message.push_str(&format!(
                        "; the previous version (generation {generation}) stays applied"
                    ));
                }
                ("False", "Invalid", message)
            }
        };
        let current = e
            .object
            .status
            .as_ref()
            .map(|s| (s.conditions.as_slice(), s.observed_generation));
        let conditions = accepted_conditions(verdict, e.object.generation, current, now)?;
        Some(AuthorizationPolicyStatus {
            observed_generation: Some(e.object.generation),
            conditions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, generation: i64, spec: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new(
            name,
            &kube::api::ApiResource::erase::<mycel_crds::AuthorizationPolicy>(&()),
        )
        .within("shop");
        o.metadata.generation = Some(generation);
        o.data = serde_json::json!({ "spec": spec });
        o
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    #[test]
    fn an_invalid_update_keeps_the_last_valid_version_and_says_so() {
        let mut store = AuthzPolicies::default();
        let key: ObjKey = ("shop".into(), "p".into());
        let good =
            serde_json::json!({"rules": [{"from": [{"serviceAccounts": ["shop/reviews"]}]}]});
        assert!(store.apply(read(&object("p", 1, good)).unwrap()));
        let status = store.desired_status(&key, &now()).unwrap();
        assert_eq!(status.conditions[0].status, "True");

        let bad = serde_json::json!({"rules": [{"from": [{"serviceAccounts": ["reviews"]}]}]});
        assert!(!store.apply(read(&object("p", 2, bad)).unwrap()));
        assert_eq!(
            store.effective(&key).unwrap().policy.rules[0].from[0].service_accounts,
            ["shop/reviews"]
        );
        let status = store.desired_status(&key, &now()).unwrap();
        let c = &status.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert!(
            c.message
                .contains("spec.rules[0].from[0].serviceAccounts[0]"),
            "{}",
            c.message
        );
        assert!(c.message.contains("generation 1"), "{}", c.message);

        // A spec the type cannot read is one invalid policy, naming the field.
        let unreadable = serde_json::json!({"action": "MAYBE"});
        store.apply(read(&object("q", 1, unreadable)).unwrap());
        let q: ObjKey = ("shop".into(), "q".into());
        assert!(store.effective(&q).is_none());
        let msg = &store.desired_status(&q, &now()).unwrap().conditions[0].message;
        assert!(msg.contains("spec.action"), "{msg}");

        assert!(store.delete(&key));
        assert!(store.effective(&key).is_none());
    }

    #[test]
    fn a_status_already_written_is_not_written_again() {
        let mut store = AuthzPolicies::default();
        let key: ObjKey = ("shop".into(), "p".into());
        store.apply(read(&object("p", 3, serde_json::json!({"rules": [{}]}))).unwrap());
        let status = store.desired_status(&key, &now()).unwrap();
        let mut o = object("p", 3, serde_json::json!({"rules": [{}]}));
        o.data["status"] = serde_json::to_value(&status).unwrap();
        store.apply(read(&o).unwrap());
        assert_eq!(store.desired_status(&key, &now()), None);
    }
}
