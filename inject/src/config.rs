//! What the injector needs to know about the mesh: images, where the
//! controller is, the proxy's ports and default resources. The webhook
//! loads it from the chart's values; `mycelctl inject` uses the defaults
//! (or a file).

use serde::{Deserialize, Serialize};

/// How the proxy runs beside the app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+):
    /// started and ready before the app and the pod's other init
    /// containers, stopped after the app, and no obstacle to Jobs ending.
    #[default]
    Native,
    /// A regular container next to the app, for clusters older than 1.29.
    Classic,
}

impl SidecarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Classic => "classic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Native, Self::Classic]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// What the proxy's inbound capture does with plaintext from outside the
/// mesh: the values of `mycel-proxy --mtls-mode`, whose own default is
/// permissive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Passed to the app: meshing a workload breaks none of its callers
    /// that are not meshed yet.
    #[default]
    Permissive,
    /// Refused: only mesh (mTLS) traffic reaches the app.
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permissive => "permissive",
            Self::Strict => "strict",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Permissive, Self::Strict]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The proxy's listeners inside the pod. They must match what
/// `mycel-proxy init` is told, so both are built from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyPorts {
    /// mTLS from peer proxies (`--inbound`), never captured.
    pub mesh: u16,
    /// `/live`, `/ready`, `/app-health/...` (`--admin`), never captured.
    pub admin: u16,
    /// Captured outbound connections (`--transparent-outbound`).
    pub outbound_capture: u16,
    /// Captured inbound plaintext (`--inbound-capture`).
    pub inbound_capture: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            mesh: 15006,
            admin: 15000,
            outbound_capture: 15001,
            inbound_capture: 15008,
        }
    }
}

impl ProxyPorts {
    pub fn all(&self) -> [u16; 4] {
        [
            self.mesh,
            self.admin,
            self.outbound_capture,
            self.inbound_capture,
        ]
    }
}

/// CPU and memory as Kubernetes quantities (`100m`, `64Mi`); `None` leaves
/// that entry out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// Mesh settings the injector writes into every pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectConfig {
    /// Image holding `mycel-proxy` (both the init and the proxy container).
    pub proxy_image: String,
    /// `imagePullPolicy` of both containers; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// The controller's gRPC address (`--controller`).
    pub controller_address: String,
    /// TLS name of the controller's certificate (`--controller-name`).
    pub controller_name: String,
    pub trust_domain: String,
    pub cluster_domain: String,
    pub sidecar_mode: SidecarMode,
    /// The proxy's `--mtls-mode` unless a pod annotation sets one.
    pub mtls_mode: MtlsMode,
    /// The proxy's UID and GID; its own traffic is never captured.
    pub proxy_uid: i64,
    pub ports: ProxyPorts,
    /// Audience of the projected service-account token the controller
    /// checks with a TokenReview.
    pub token_audience: String,
    /// Lifetime of that token. The proxy needs it only for its first
    /// certificate (renewals authenticate with the certificate), so it is
    /// short: 600 s is the least the API server accepts.
    pub token_expiration_seconds: i64,
    /// ConfigMap holding the mesh's trust bundle, and its key.
    pub trust_bundle_config_map: String,
    pub trust_bundle_key: String,
    /// The proxy's `MYCEL_LOG` unless a pod annotation sets one.
    pub log_level: Option<String>,
    pub proxy_resources: Resources,
    pub init_resources: Resources,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            proxy_image: "mycel-proxy:latest".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            controller_address: "mycel-controller.mycel-system.svc:15010".into(),
            controller_name: "mycel-controller.mycel-system.svc".into(),
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            sidecar_mode: SidecarMode::Native,
            mtls_mode: MtlsMode::Permissive,
            proxy_uid: 1337,
            ports: ProxyPorts::default(),
            token_audience: "mycel".into(),
            token_expiration_seconds: 600,
            trust_bundle_config_map: "mycel-trust-bundle".into(),
            trust_bundle_key: "ca.crt".into(),
            log_level: None,
            // Measured idle RSS is a few MB (docs/benchmarks.md); the limit
            // leaves room for pools and buffers under load.
            proxy_resources: Resources {
                cpu_request: Some("10m".into()),
                cpu_limit: None,
                memory_request: Some("32Mi".into()),
                memory_limit: Some("256Mi".into()),
            },
            init_resources: Resources {
                cpu_request: Some("10m".into()),
                cpu_limit: Some("100m".into()),
                memory_request: Some("16Mi".into()),
                memory_limit: Some("64Mi".into()),
            },
        }
    }
}
