//! `AuthorizationPolicy`: who may call the workloads it selects, decided by
//! the server sidecar on the caller's verified mesh identity.
//!
//! Namespaced. It selects the workloads of its namespace by labels (every
//! workload of the namespace without a selector); one in the mesh's root
//! namespace applies to every workload of the mesh. The same kind is read
//! from `mesh.yaml` in local mode. The rules' meaning (patterns, TCP
//! fail-closed, DENY over ALLOW) is `mycel_api::authz`'s, which checks them
//! again field by field.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An authorization policy (`kubectl get authorizationpolicy -n shop`).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mycel.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    singular = "authorizationpolicy",
    shortname = "authz",
    category = "mycel",
    namespaced,
    status = "AuthorizationPolicyStatus",
    derive = "PartialEq",
    doc = "Who may call the selected workloads: callers by verified mesh identity (SPIFFE ID, namespace, service account) or address, what they call (ports, paths, methods, hosts, headers, gRPC methods), and whether that is allowed, denied or audited.",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The workloads of the namespace this policy applies to; absent: all
    /// of them (in the root namespace: every workload of the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// ALLOW (default), DENY or AUDIT. DENY wins over ALLOW; once any
    /// ALLOW policy selects a workload, callers none of them matches are
    /// denied; AUDIT logs and counts what a DENY would refuse.
    #[serde(default)]
    pub action: Action,
    /// A request matches the policy when it matches any rule. No rules:
    /// the policy matches nothing (an ALLOW policy without rules therefore
    /// denies every caller).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub rules: Vec<PolicyRule>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Every label must be present with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
}

/// Every non-empty part must match: some `from`, some `to`, every `when`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub when: Vec<RuleCondition>,
}

/// Who calls; every field set must match.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// SPIFFE IDs: exact, `spiffe://...*` (prefix) or `*` (any mesh identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub principals: Vec<String>,
    /// Namespaces of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub namespaces: Vec<String>,
    /// `<namespace>/<service-account>` of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub service_accounts: Vec<String>,
    /// Callers without a mesh identity (plaintext, where the peer
    /// authentication mode admits it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
    /// The caller's address, as CIDRs (`198.18.0.0/16`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ip_blocks: Vec<String>,
}

/// What is called; every field set must match. Fields other than `ports`
/// need HTTP: on a TCP connection an ALLOW rule with them never matches and
/// a DENY rule ignores them (it refuses more, never less).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ports: Vec<u16>,
    /// `/exact`, `/prefix/*`, or `/users/*/orders` (an inner `*` is one segment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub methods: Vec<String>,
    /// Exact, `*.suffix` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub headers: Vec<ValueMatch>,
    /// `package.Service/Method` or `package.Service/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub grpc: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    pub name: String,
    /// Exact, `prefix*`, `*suffix`, or `*` (present with any value).
    #[schemars(length(min = 1, max = 128))]
    pub values: Vec<String>,
}

/// One condition: exactly one of `header` or `claim`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuleCondition {
    /// A request header with one of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<ValueMatch>,
    /// A claim of the caller's JWT, verified by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ValueMatch>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicyStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: True, or False naming the field that is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
