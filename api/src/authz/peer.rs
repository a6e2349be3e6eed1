//! Peer authentication: whether a workload's sidecar admits plaintext
//! (connections that did not come through a peer sidecar's mTLS), per
//! workload and per port. The controller resolves the `PeerAuthentication`
//! objects selecting a workload into one [`PeerAuthentication`]; the
//! sidecar applies it when its capture listener accepts a plaintext
//! connection. Mesh (mTLS) connections are admitted in every mode: a mode
//! only decides about callers without a mesh identity.

use serde::{Deserialize, Serialize};

/// What a sidecar does with plaintext for a workload or port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Refused at accept: only mesh (mTLS) callers reach the app.
    Strict,
    /// Admitted as an unauthenticated caller, then authorized.
    Permissive,
    /// mTLS is not required on the server side: plaintext is admitted as
    /// with PERMISSIVE. Client sidecars still originate mTLS to every
    /// meshed endpoint.
    Disable,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        }
    }

    /// Whether a plaintext caller gets as far as authorization.
    pub fn admits_plaintext(self) -> bool {
        self != MtlsMode::Strict
    }
}

/// A mode and the policy (`<namespace>/<name>`) it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeFrom {
    pub mode: MtlsMode,
    pub policy: String,
}

/// One port's mode, where it differs from the workload's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMode {
    pub port: u16,
    pub mode: MtlsMode,
    pub policy: String,
}

/// The peer authentication one workload gets, already resolved (most
/// specific policy first) by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// None: no policy sets a mode; the sidecar's own setting applies
    /// (`--mtls-mode`, from the pod's annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeFrom>,
    /// Sorted by port, one entry per port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMode>,
}

/// Ports with a mode of their own, per workload.
pub const MAX_PORT_MODES: usize = 128;

/// The mode for `port` and the policy that chose it (None: `fallback`, the
/// sidecar's own setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveMode<'p> {
    pub mode: MtlsMode,
    pub policy: Option<&'p str>,
}

impl std::fmt::Display for EffectiveMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.policy {
            Some(p) => write!(f, "{} (PeerAuthentication {p})", self.mode.as_str()),
            None => write!(f, "{} (the sidecar's --mtls-mode)", self.mode.as_str()),
        }
    }
}

impl PeerAuthentication {
    pub fn mode_for(&self, port: u16, fallback: MtlsMode) -> EffectiveMode<'_> {
        if let Ok(i) = self.ports.binary_search_by_key(&port, |p| p.port) {
            let p = &self.ports[i];
            return EffectiveMode {
                mode: p.mode,
                policy: Some(&p.policy),
            };
        }
        match &self.mode {
            Some(m) => EffectiveMode {
                mode: m.mode,
                policy: Some(&m.policy),
            },
            None => EffectiveMode {
                mode: fallback,
                policy: None,
            },
        }
    }
}
