//! The authorization policy of one workload's inbound side, as the
//! controller computes it and the sidecar enforces it. Patterns stay the
//! strings the user wrote, so a decision can be explained in their terms.

use serde::{Deserialize, Serialize};

use super::peer::PeerAuthentication;

/// Everything that decides who may call one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPolicy {
    /// What applies when no ALLOW policy selects the workload.
    #[serde(default)]
    pub default: DefaultPolicy,
    /// The policies selecting the workload, in a stable order (namespace,
    /// then name): the order only decides which name a decision reports.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Whether plaintext callers are admitted, per port.
    #[serde(default, skip_serializing_if = "is_default")]
    pub peer_authentication: PeerAuthentication,
}

fn is_default(p: &PeerAuthentication) -> bool {
    *p == PeerAuthentication::default()
}

/// The mesh-wide (or per-namespace) default for workloads no ALLOW policy
/// selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Every caller, with a mesh identity or without.
    AllowAll,
    /// Callers that proved a mesh identity; plaintext callers only where
    /// peer authentication admits them (PERMISSIVE or DISABLE: choosing
    /// such a mode is the opt-in).
    #[default]
    MeshAuthenticated,
    /// Nobody, until an ALLOW policy names them.
    Deny,
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow-all" => Ok(DefaultPolicy::AllowAll),
            "mesh-authenticated" => Ok(DefaultPolicy::MeshAuthenticated),
            "deny" => Ok(DefaultPolicy::Deny),
            other => Err(format!(
                "{other:?} is not a default policy (allow-all, mesh-authenticated, deny)"
            )),
        }
    }
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllowAll => "allow-all",
            DefaultPolicy::MeshAuthenticated => "mesh-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }
}

/// One AuthorizationPolicy as it applies to a workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `<namespace>/<name>`, for log lines, metrics and explanations.
    pub name: String,
    pub action: Action,
    /// A policy matches a request when any rule does; a policy without
    /// rules matches nothing (an ALLOW policy without rules therefore allows
    /// nobody, a way to deny everything to a workload).
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allow,
    Deny,
    /// Evaluated like DENY, but only logged and counted: what a DENY policy
    /// would refuse, without refusing it.
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
        }
    }
}

/// A rule matches when every one of its non-empty lists has a matching
/// entry: some source, some operation, and every condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Who calls. Every non-empty field must match (each field: any of its
/// entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// SPIFFE IDs: exact, `prefix*`, or `*` (any mesh identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Namespaces of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `<namespace>/<service-account>` of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Matches only callers without a mesh identity (plaintext).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
    /// The caller's address, as CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<ipnet::IpNet>,
}

/// What is called. Every non-empty field must match. Every field but
/// `ports` needs HTTP (see [`crate::authz::decide`] for TCP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The workload's (target) ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Exact (`/a/b`), prefix (`/a/*`: a trailing `*` matches anything),
    /// or glob (`/users/*/orders`: an inner `*` matches one segment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `GET`, `POST`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Host (`:authority`, port removed): exact, `*.suffix`, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Request headers; each must be present with a matching value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// gRPC methods as `package.Service/Method` or `package.Service/*`;
    /// only gRPC requests match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<String>,
}

/// A named value (header or claim) and the patterns it may have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    pub name: String,
    /// Exact, `prefix*`, `*suffix`, or `*` (present with any value).
    pub values: Vec<String>,
}

/// A condition on the request beyond source and operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Condition {
    /// A request header with one of the values.
    Header(ValueMatch),
    /// A claim of the caller's verified JWT (at the gateway, which verifies
    /// tokens); a string claim or any string of an array claim. Sidecars
    /// see no verified token, so an ALLOW rule with a claim never matches
    /// there.
    Claim(ValueMatch),
}
