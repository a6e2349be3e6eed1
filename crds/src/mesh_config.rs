//! `MeshConfig`: the mesh-wide settings the controller and the injector
//! read.
//!
//! Cluster-scoped, one object named `default` (the schema's
//! `metadata.name` admits no other name, see [`crate::generate`]). Cluster scope because every setting here is mesh-wide (one
//! trust domain, one certificate policy): a namespaced object would let
//! anyone allowed to write it in some namespace pretend to configure the
//! mesh, and would leave the controller to choose between several. Only
//! cluster administrators can write cluster-scoped objects.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only name a `MeshConfig` may have.
pub const NAME: &str = "default";

/// Mesh-wide settings (`kubectl get meshconfig default`).
// Each printcolumn repeats `type_ = ...`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mycel.io",
    version = "v1alpha1",
    kind = "MeshConfig",
    plural = "meshconfigs",
    singular = "meshconfig",
    shortname = "mc",
    category = "mycel",
    status = "MeshConfigStatus",
    derive = "PartialEq",
    doc = "Mesh-wide settings of Mycel: one cluster-scoped object named `default`.",
    printcolumn(
        name = "Trust Domain",
        type_ = "string",
        json_path = ".spec.trustDomain"
    ),
    printcolumn(
        name = "Cert TTL",
        type_ = "string",
        json_path = ".spec.identity.certificateTtl"
    ),
    printcolumn(
        name = "Inbound",
        type_ = "string",
        json_path = ".spec.defaultInboundPolicy"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// Trust domain of every SPIFFE identity (`spiffe://<trustDomain>/ns/..`).
    /// Immutable: changing it would make every issued certificate foreign.
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("trustDomain is immutable; a new trust domain is a new mesh")
            .reason(Reason::FieldValueInvalid)
    )]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub trust_domain: String,

    #[serde(default)]
    pub identity: IdentitySettings,

    /// What a workload's inbound side admits when no policy names it.
    #[serde(default)]
    pub default_inbound_policy: InboundPolicy,

    #[serde(default)]
    pub proxy: ProxyDefaults,

    #[serde(default)]
    pub discovery: DiscoverySettings,
}

/// Certificate lifetimes, as Go durations (`24h`, `90m`, `1h30m`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.certificateTtl) < duration(self.issuerTtl)")
        .message("certificateTtl must be shorter than issuerTtl: a leaf never outlives its issuer")
        .field_path(".certificateTtl")
        .reason(Reason::FieldValueInvalid)
)]
pub struct IdentitySettings {
    /// Lifetime of workload certificates, 10m to 720h (30 days).
    #[serde(default = "default_certificate_ttl")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$")
    )]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('10m') && duration(self) <= duration('720h')")
            .message("certificateTtl must be between 10m and 720h")
            .reason(Reason::FieldValueInvalid)
    )]
    pub certificate_ttl: String,

    /// Lifetime of the CA's issuer, 24h to 87600h (10 years).
    #[serde(default = "default_issuer_ttl")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$")
    )]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('24h') && duration(self) <= duration('87600h')")
            .message("issuerTtl must be between 24h and 87600h")
            .reason(Reason::FieldValueInvalid)
    )]
    pub issuer_ttl: String,
}

fn default_certificate_ttl() -> String {
    "24h".into()
}

fn default_issuer_ttl() -> String {
    "8760h".into()
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            certificate_ttl: default_certificate_ttl(),
            issuer_ttl: default_issuer_ttl(),
        }
    }
}

impl IdentitySettings {
    pub fn certificate_ttl(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.certificate_ttl)
    }

    pub fn issuer_ttl(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.issuer_ttl)
    }
}

/// A duration string outside the `[0-9]+h[0-9]+m[0-9]+s` form the schema
/// allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as 24h, 90m or 1h30m")]
pub struct DurationError(String);

/// Parses the subset of Go durations the schema admits (what the API
/// server's CEL `duration()` reads the same way).
pub fn parse_duration(raw: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(raw.to_string());
    let mut total = 0u64;
    let mut number = String::new();
    let mut last_unit = 0;
    for c in raw.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, seconds) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(err()),
        };
        if number.is_empty() || rank <= last_unit {
            return Err(err());
        }
        let n: u64 = number.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(seconds).ok_or_else(err)?)
            .ok_or_else(err)?;
        number.clear();
        last_unit = rank;
    }
    if !number.is_empty() || last_unit == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Inbound default when no authorization policy applies (the authorization
/// issue defines the policies).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InboundPolicy {
    /// Anyone, mesh or not (permissive capture).
    #[default]
    AllowAll,
    /// Only callers with a mesh identity (strict mTLS).
    MeshAuthenticated,
    /// Nobody, until a policy allows them.
    Deny,
}

/// Proxy settings the injector uses unless a pod annotation overrides them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyDefaults {
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ProxyResources>,
}

/// The proxy's log level (`MYCEL_LOG`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// Requests and limits of the proxy container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(self.requests.memory).compareTo(quantity(self.limits.memory)) <= 0"
    )
    .message("the memory request must not be above the memory limit")
    .field_path(".requests.memory")
    .reason(Reason::FieldValueInvalid),
    validation = Rule::new(
        "!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(self.requests.cpu).compareTo(quantity(self.limits.cpu)) <= 0"
    )
    .message("the cpu request must not be above the cpu limit")
    .field_path(".requests.cpu")
    .reason(Reason::FieldValueInvalid)
)]
pub struct ProxyResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceAmounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

/// CPU and memory as Kubernetes quantities (`100m`, `64Mi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("cpu must be a quantity such as 100m or 1").reason(Reason::FieldValueInvalid))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("memory must be a quantity such as 64Mi").reason(Reason::FieldValueInvalid))]
    pub memory: Option<String>,
}

/// Which namespaces the controller follows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySettings {
    /// Namespaces whose Services and endpoints the controller indexes;
    /// empty means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub namespaces: Vec<String>,
}

/// What the controller reports about the settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigStatus {
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the controller applied these settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_schema_admits_them() {
        for (raw, secs) in [
            ("24h", 86400),
            ("90m", 5400),
            ("1h30m", 5400),
            ("10s", 10),
            ("1h0m5s", 3605),
        ] {
            assert_eq!(parse_duration(raw), Ok(Duration::from_secs(secs)), "{raw}");
        }
        for bad in ["", "h", "1", "1d", "30m1h", "1h1h", "1.5h", "-1h", "1 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_fill_an_empty_spec() {
        let spec: MeshConfigSpec =
            serde_json::from_value(serde_json::json!({"trustDomain": "cluster.local"})).unwrap();
        assert_eq!(
            spec.identity.certificate_ttl(),
            Ok(Duration::from_secs(86400))
        );
        assert_eq!(spec.default_inbound_policy, InboundPolicy::AllowAll);
        assert_eq!(spec.proxy.log_level, LogLevel::Info);
        assert!(spec.discovery.namespaces.is_empty());
    }
}
