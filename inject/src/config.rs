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

/// The transport of spans to the collector: the values of
/// `OTEL_EXPORTER_OTLP_PROTOCOL` the proxy speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::HttpProtobuf, Self::Grpc]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

// serde's own message for an unknown variant names the value but not the
// key, and this one is read from a file a person wrote.
impl TryFrom<String> for OtlpProtocol {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| {
            format!("tracing.protocol: invalid value {s:?}: expected http/protobuf or grpc")
        })
    }
}

/// Where the proxy writes its access log (`--access-log`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", rename_all = "lowercase")]
pub enum AccessLog {
    #[default]
    Off,
    /// One JSON line per request on the proxy's stdout, read with
    /// `kubectl logs -c mycel-proxy` or a node's log collector.
    Stdout,
}

impl AccessLog {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Stdout => "stdout",
        }
    }

    /// `stdout` or `off`, else why not. The proxy itself also takes a file
    /// path, which the injector refuses: the file would be inside the
    /// proxy container, whose root filesystem is read-only and which no
    /// log collector reads.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "off" => Ok(Self::Off),
            path if path.contains(['/', '.']) => Err(
                "expected stdout or off: a file path is refused, since the file would be \
                 written inside the proxy container, whose root filesystem is read-only; \
                 use stdout and read it with kubectl logs -c mycel-proxy",
            ),
            _ => Err("expected stdout or off"),
        }
    }
}

impl TryFrom<String> for AccessLog {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        // An empty value is the chart's way of saying "off".
        if s.is_empty() {
            return Ok(Self::Off);
        }
        Self::parse(&s).map_err(|why| format!("accessLog: invalid value {s:?}: {why}"))
    }
}

/// A share from 0 to 1 (`--trace-sampling`). Compared bit for bit, an
/// equivalence even for NaN, so the settings holding it can stay `Eq`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(f64);

impl Ratio {
    /// `None` outside 0..=1 (NaN and infinities included).
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Deserializing takes any number; [`crate::check_config`] asks this.
    pub fn is_valid(self) -> bool {
        Self::new(self.0).is_some()
    }
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Ratio {}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Plain decimals (f64's Display writes no exponent): `1e-2` in an
        // annotation reaches the pod spec as 0.01, easier to read there.
        write!(f, "{}", self.0)
    }
}

/// Span export and sampling of every injected proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Tracing {
    /// The collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), an http(s) URL;
    /// `None` or empty: proxies export no spans.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, written only with an endpoint.
    pub protocol: OtlpProtocol,
    /// The proxy's `--trace-sampling` unless a pod annotation sets one;
    /// `None`: the proxy's default, 0 for a sidecar, so traces start at
    /// the gateway.
    pub sampling: Option<Ratio>,
}

impl Tracing {
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
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
    pub tracing: Tracing,
    /// The proxy's `--access-log` unless a pod annotation sets one.
    pub access_log: AccessLog,
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
            tracing: Tracing::default(),
            access_log: AccessLog::Off,
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
