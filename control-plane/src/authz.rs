//! Authorization policies as the controller holds them: each with the
//! workloads it selects, and the policy one workload gets (the policies
//! selecting it, the mesh default). Pure; sources convert the
//! `AuthorizationPolicy` kind here and the index serves the result.

pub mod explain;
pub mod peer;

use std::collections::BTreeMap;

use mycel_api::authz::{
    validate_policy, Action, Condition, DefaultPolicy, InboundPolicy, InvalidPolicy, Operation,
    Policy, Rule, Source, ValueMatch,
};
use mycel_crds::authorization_policy as crd;

/// The namespace whose policies apply to every workload of the mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "mycel-system";

/// One policy and what it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedPolicy {
    pub namespace: String,
    /// Every label must match; None: every workload of the namespace.
    pub match_labels: Option<BTreeMap<String, String>>,
    pub policy: Policy,
}

impl SelectedPolicy {
    fn selects(&self, root: &str, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespace == namespace || self.namespace == root)
            && self
                .match_labels
                .as_ref()
                .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// Every policy of the mesh and the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub default: DefaultPolicy,
    pub root_namespace: String,
    /// Sorted by (namespace, name).
    pub policies: Vec<SelectedPolicy>,
    /// `PeerAuthentication` objects, sorted by (namespace, name).
    pub peer: Vec<peer::PeerAuthPolicy>,
}

impl Default for Authorization {
    fn default() -> Self {
        Self {
            default: DefaultPolicy::default(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            policies: Vec::new(),
            peer: Vec::new(),
        }
    }
}

impl Authorization {
    /// The policy of one workload.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> InboundPolicy {
        InboundPolicy {
            default: self.default,
            policies: self
                .policies
                .iter()
                .filter(|p| p.selects(&self.root_namespace, namespace, labels))
                .map(|p| p.policy.clone())
                .collect(),
            peer_authentication: peer::resolve(&self.peer, &self.root_namespace, namespace, labels),
        }
    }
}

/// Converts and validates one `AuthorizationPolicy`; errors name the field
/// from `spec`.
pub fn from_spec(
    namespace: &str,
    name: &str,
    spec: &crd::AuthorizationPolicySpec,
) -> Result<SelectedPolicy, InvalidPolicy> {
    let policy = Policy {
        name: format!("{namespace}/{name}"),
        action: match spec.action {
            crd::Action::Allow => Action::Allow,
            crd::Action::Deny => Action::Deny,
            crd::Action::Audit => Action::Audit,
        },
        rules: spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("spec.rules[{i}]")))
            .collect::<Result<_, _>>()?,
    };
    validate_policy(&policy).map_err(|e| InvalidPolicy {
        field: format!("spec.{}", e.field),
        problem: e.problem,
    })?;
    Ok(SelectedPolicy {
        namespace: namespace.to_string(),
        match_labels: spec.selector.as_ref().map(|s| s.match_labels.clone()),
        policy,
    })
}

fn rule(r: &crd::PolicyRule, at: &str) -> Result<Rule, InvalidPolicy> {
    let mut from = Vec::with_capacity(r.from.len());
    for (i, s) in r.from.iter().enumerate() {
        let mut ip_blocks = Vec::with_capacity(s.ip_blocks.len());
        for (k, b) in s.ip_blocks.iter().enumerate() {
            ip_blocks.push(b.parse().map_err(|_| InvalidPolicy {
                field: format!("{at}.from[{i}].ipBlocks[{k}]"),
                problem: format!("{b:?} is not a CIDR (e.g. 198.18.0.0/16)"),
            })?);
        }
        from.push(Source {
            principals: s.principals.clone(),
            namespaces: s.namespaces.clone(),
            service_accounts: s.service_accounts.clone(),
            unauthenticated: s.unauthenticated,
            ip_blocks,
        });
    }
    let to =
        r.to.iter()
            .map(|o| Operation {
                ports: o.ports.clone(),
                paths: o.paths.clone(),
                methods: o.methods.clone(),
                hosts: o.hosts.clone(),
                headers: o.headers.iter().map(value).collect(),
                grpc: o.grpc.clone(),
            })
            .collect();
    let mut when = Vec::with_capacity(r.when.len());
    for (i, c) in r.when.iter().enumerate() {
        when.push(match (&c.header, &c.claim) {
            (Some(h), None) => Condition::Header(value(h)),
            (None, Some(c)) => Condition::Claim(value(c)),
            _ => {
                return Err(InvalidPolicy {
                    field: format!("{at}.when[{i}]"),
                    problem: "exactly one of header or claim".into(),
                })
            }
        });
    }
    Ok(Rule { from, to, when })
}

fn value(m: &crd::ValueMatch) -> ValueMatch {
    ValueMatch {
        name: m.name.clone(),
        values: m.values.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> crd::AuthorizationPolicySpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn policies_select_by_namespace_labels_and_root_namespace() {
        let mut auth = Authorization::default();
        for (ns, name, yaml) in [
            (
                "shop",
                "catalog",
                "selector: {matchLabels: {app: catalog}}\nrules: [{}]",
            ),
            ("shop", "all-shop", "action: AUDIT\nrules: [{}]"),
            (
                "mycel-system",
                "mesh",
                "action: DENY\nrules: [{from: [{namespaces: [evil]}]}]",
            ),
            ("other", "x", "rules: [{}]"),
        ] {
            auth.policies
                .push(from_spec(ns, name, &spec(yaml)).unwrap());
        }
        let names = |ns: &str, app: &str| -> Vec<String> {
            auth.for_workload(ns, &BTreeMap::from([("app".to_string(), app.to_string())]))
                .policies
                .into_iter()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(
            names("shop", "catalog"),
            ["shop/catalog", "shop/all-shop", "mycel-system/mesh"]
        );
        assert_eq!(
            names("shop", "ratings"),
            ["shop/all-shop", "mycel-system/mesh"]
        );
        assert_eq!(names("third", "catalog"), ["mycel-system/mesh"]);
    }

    #[test]
    fn invalid_specs_name_the_field_under_spec() {
        for (yaml, field) in [
            ("rules: [{from: [{principals: [frontend]}]}]", "spec.rules[0].from[0].principals[0]"),
            ("rules: [{from: [{ipBlocks: [\"10.0.0.0/99\"]}]}]", "spec.rules[0].from[0].ipBlocks[0]"),
            ("rules: [{when: [{}]}]", "spec.rules[0].when[0]"),
            (
                "rules: [{when: [{header: {name: a, values: [b]}, claim: {name: a, values: [b]}}]}]",
                "spec.rules[0].when[0]",
            ),
            ("rules: [{to: [{paths: [\"x\"]}]}]", "spec.rules[0].to[0].paths[0]"),
        ] {
            let e = from_spec("shop", "p", &spec(yaml)).expect_err(yaml);
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }
}
