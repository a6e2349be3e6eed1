//! Whether a pod is to be meshed: the pod's annotation first, then its
//! namespace's label or annotation. The webhook asks this before calling
//! the injector; it never meshes the system namespaces.

use std::collections::BTreeMap;
use std::fmt;

use crate::annotations::INJECT;

/// Namespaces whose pods are never meshed, whatever they say: the cluster's
/// own (a webhook that fails there can stop the cluster from healing) and
/// the mesh's (the controller cannot depend on itself).
pub const NEVER_INJECTED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "mycel-system",
];

/// The decision and what it rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub inject: bool,
    pub reason: Reason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The namespace is in [`NEVER_INJECTED_NAMESPACES`].
    SystemNamespace(String),
    /// The pod says `enabled` or `disabled`.
    PodAnnotation(bool),
    /// The namespace's label or annotation says `enabled` or `disabled`.
    Namespace(bool),
    /// Nobody asked for it.
    NotRequested,
    /// An `mycel.io/inject` value that is neither `enabled` nor `disabled`;
    /// the pod is left alone and the webhook can warn with this.
    InvalidValue { on: &'static str, value: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |on: bool| if on { "enabled" } else { "disabled" };
        match self {
            Self::SystemNamespace(ns) => write!(f, "namespace {ns} is never meshed"),
            Self::PodAnnotation(on) => write!(f, "pod annotation {INJECT}: {}", word(*on)),
            Self::Namespace(on) => write!(f, "namespace {INJECT}: {}", word(*on)),
            Self::NotRequested => write!(f, "neither the pod nor its namespace sets {INJECT}"),
            Self::InvalidValue { on, value } => write!(
                f,
                "{on} {INJECT} has value {value:?}; expected enabled or disabled (pod left alone)"
            ),
        }
    }
}

fn flag(value: &str) -> Option<bool> {
    match value.trim() {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    }
}

/// Pod annotation beats namespace; a namespace label beats a namespace
/// annotation (labels are what `kubectl label ns` and selectors use).
pub fn should_inject(
    pod_annotations: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
    namespace_name: &str,
) -> Decision {
    let decide = |inject, reason| Decision { inject, reason };
    if NEVER_INJECTED_NAMESPACES.contains(&namespace_name) {
        return decide(false, Reason::SystemNamespace(namespace_name.to_string()));
    }
    let sources = [
        (
            "pod annotation",
            pod_annotations,
            Reason::PodAnnotation as fn(bool) -> Reason,
        ),
        ("namespace label", namespace_labels, Reason::Namespace),
        (
            "namespace annotation",
            namespace_annotations,
            Reason::Namespace,
        ),
    ];
    for (on, map, reason) in sources {
        if let Some(value) = map.get(INJECT) {
            return match flag(value) {
                Some(b) => decide(b, reason(b)),
                None => decide(
                    false,
                    Reason::InvalidValue {
                        on,
                        value: value.clone(),
                    },
                ),
            };
        }
    }
    decide(false, Reason::NotRequested)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let on = map(&[(INJECT, "enabled")]);
        let off = map(&[(INJECT, "disabled")]);
        let none = map(&[]);
        let cases = [
            // (pod, ns labels, ns annotations, ns, inject, reason)
            (&on, &none, &none, "shop", true, Reason::PodAnnotation(true)),
            (&none, &on, &none, "shop", true, Reason::Namespace(true)),
            (&none, &none, &on, "shop", true, Reason::Namespace(true)),
            (
                &off,
                &on,
                &none,
                "shop",
                false,
                Reason::PodAnnotation(false),
            ),
            (&on, &off, &none, "shop", true, Reason::PodAnnotation(true)),
            (&none, &off, &on, "shop", false, Reason::Namespace(false)),
            (&none, &none, &none, "shop", false, Reason::NotRequested),
            (
                &on,
                &on,
                &on,
                "kube-system",
                false,
                Reason::SystemNamespace("kube-system".into()),
            ),
            (
                &on,
                &none,
                &none,
                "mycel-system",
                false,
                Reason::SystemNamespace("mycel-system".into()),
            ),
        ];
        for (pod, labels, annotations, ns, inject, reason) in cases {
            let d = should_inject(pod, labels, annotations, ns);
            assert_eq!(
                d,
                Decision { inject, reason },
                "{pod:?} {labels:?} {annotations:?} {ns}"
            );
        }
    }

    #[test]
    fn a_typo_is_not_meshing_and_says_why() {
        let d = should_inject(&map(&[(INJECT, "true")]), &map(&[]), &map(&[]), "shop");
        assert!(!d.inject);
        let text = d.reason.to_string();
        assert!(text.contains("\"true\"") && text.contains(INJECT), "{text}");
    }
}
