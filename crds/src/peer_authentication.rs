//! `PeerAuthentication`: whether the sidecars of the selected workloads
//! admit plaintext, i.e. callers that did not come through a peer sidecar's
//! mTLS (clients outside the mesh, reaching the pod through transparent
//! capture). Mesh callers are admitted in every mode; who among them may
//! call is `AuthorizationPolicy`'s business.
//!
//! Namespaced. Without a selector it sets the namespace's mode; in the
//! mesh's root namespace, the mesh's. The most specific object that says
//! something about a port decides it: a selecting one, then the
//! namespace's, then the mesh's, then the sidecar's own `--mtls-mode` (the
//! pod's `mycel.io/mtls-mode` annotation). The same kind is read from
//! `mesh.yaml` in local mode.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::authorization_policy::{
    AuthorizationPolicyStatus as PeerAuthenticationStatus, WorkloadSelector,
};

/// A peer-authentication policy (`kubectl get peerauthentication -n shop`).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mycel.io",
    version = "v1alpha1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    singular = "peerauthentication",
    shortname = "peerauthn",
    category = "mycel",
    namespaced,
    status = "PeerAuthenticationStatus",
    derive = "PartialEq",
    doc = "Whether the selected workloads' sidecars admit plaintext callers (STRICT refuses them at accept; PERMISSIVE and DISABLE admit them as unauthenticated callers for authorization to judge), for the workload and per port.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mtls.mode"),
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
pub struct PeerAuthenticationSpec {
    /// The workloads of the namespace this applies to; absent: the whole
    /// namespace (in the root namespace: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode of every port without an entry in `portLevelMtls`; absent
    /// or UNSET: inherited (namespace, then mesh, then the sidecar's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Modes of single workload ports, keyed by the port the app listens
    /// on (`"8080"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 128))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.matches('^[1-9][0-9]{0,4}$') && int(k) <= 65535)")
            .message("portLevelMtls keys are port numbers, 1 to 65535")
            .reason(Reason::FieldValueInvalid)
    )]
    pub port_level_mtls: BTreeMap<String, Mtls>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    #[serde(default)]
    pub mode: Mode,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    /// Inherited from the less specific level.
    #[default]
    Unset,
    /// Plaintext is refused at accept.
    Strict,
    /// Plaintext is admitted as an unauthenticated caller.
    Permissive,
    /// mTLS is not required by the server: plaintext is admitted as with
    /// PERMISSIVE (client sidecars still use mTLS to meshed endpoints).
    Disable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_keys_read_from_yaml_and_json_as_strings() {
        let y: PeerAuthenticationSpec = serde_saphyr::from_str(
            "selector: {matchLabels: {app: db}}\nmtls: {mode: STRICT}\nportLevelMtls:\n  9090: {mode: DISABLE}\n",
        )
        .unwrap();
        assert_eq!(y.port_level_mtls["9090"].mode, Mode::Disable);
        let j: PeerAuthenticationSpec = serde_json::from_value(
            serde_json::json!({"portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}),
        )
        .unwrap();
        assert_eq!(j.port_level_mtls["8080"].mode, Mode::Permissive);
        assert!(j.mtls.is_none());
    }
}
