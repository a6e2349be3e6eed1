//! The Mycel pair as real processes: `mycel-controller` and two
//! `mycel-proxy` sidecars from the release build, joined with tokens made by
//! `mycelctl token create`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::CertifyRequest;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::collector::{Collector, CollectorKind, OtlpProtocol};
use super::{free_port, start_err, HandshakeTarget, Setup, SetupError, Watched};
use crate::backend::BackendAddrs;
use crate::child::ChildProc;
use crate::client::{Proto, Target};
use crate::probe::{self, ClientCert};

pub const NAMESPACE: &str = "bench";
/// Service ports the client names; the sidecar maps them to the backend's.
pub(super) const HTTP_PORT: u16 = 80;
const H2_PORT: u16 = 81;
const GRPC_PORT: u16 = 9090;
const TCP_PORT: u16 = 5201;

/// The release binaries the Mycel configuration runs.
#[derive(Clone, Debug)]
pub struct Bins {
    pub controller: PathBuf,
    pub proxy: PathBuf,
    pub ctl: PathBuf,
}

impl Bins {
    /// Looks in `dir` (default: beside this executable, i.e. target/release).
    pub fn find(dir: Option<&Path>) -> Result<Bins, SetupError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let get = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(SetupError::Missing(format!(
                    "{} is missing: build the mesh first with `cargo build --release --bins` (or use bench/run.sh), or pass --bin-dir",
                    p.display()
                )))
            }
        };
        Ok(Bins {
            controller: get("mycel-controller")?,
            proxy: get("mycel-proxy")?,
            ctl: get("mycelctl")?,
        })
    }
}

/// `mesh.yaml` declaring the backend service with one port per protocol.
pub fn mesh_yaml(backend: &BackendAddrs) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: {NAMESPACE}\nspec:\n  selector:\n    app: backend\n  ports:\n  - {{name: http, port: {HTTP_PORT}, targetPort: {}, appProtocol: http}}\n  - {{name: h2, port: {H2_PORT}, targetPort: {}, appProtocol: http2}}\n  - {{name: grpc, port: {GRPC_PORT}, targetPort: {}, appProtocol: grpc}}\n  - {{name: tcp, port: {TCP_PORT}, targetPort: {}, appProtocol: tcp}}\n",
        backend.http1.port(),
        backend.h2c.port(),
        backend.grpc.port(),
        backend.tcp.port()
    )
}

/// A running controller (also used by the control-plane scale mode).
pub struct Controller {
    pub proc: ChildProc,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
}

impl Controller {
    pub async fn start(bins: &Bins, dir: &Path, mesh_yaml: &str) -> Result<Controller, SetupError> {
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, mesh_yaml)?;
        let data = dir.join("data");
        let (grpc, admin) = (free_port()?, free_port()?);
        let args: Vec<String> = vec![
            "--data-dir".into(),
            data.display().to_string(),
            "--grpc-addr".into(),
            grpc.to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--mesh-config".into(),
            mesh.display().to_string(),
            // The CSR benchmark signs as fast as it can from one address:
            // lift the Certify rate limits so they are not what is measured.
            "--certify-rate".into(),
            "1000000".into(),
            "--certify-burst".into(),
            "1000000".into(),
            "--certify-rate-per-ip".into(),
            "1000000".into(),
            "--certify-burst-per-ip".into(),
            "1000000".into(),
        ];
        let mut proc = ChildProc::spawn(
            "controller",
            &bins.controller,
            &args,
            &[("MYCEL_LOG", "warn")],
            dir,
        )?;
        wait_ok(&mut proc, admin, "/ready").await?;
        Ok(Controller {
            proc,
            grpc,
            admin,
            data,
        })
    }

    pub fn ca_root(&self) -> PathBuf {
        self.data.join("ca").join("root.pem")
    }

    /// A join token from the real CLI (no labels).
    pub fn token(&self, bins: &Bins, sa: &str) -> Result<String, SetupError> {
        self.token_with_labels(bins, sa, &[])
    }

    /// A join token for a workload that registers with exactly `labels`
    /// (`key=value`).
    pub fn token_with_labels(
        &self,
        bins: &Bins,
        sa: &str,
        labels: &[&str],
    ) -> Result<String, SetupError> {
        let mut cmd = std::process::Command::new(&bins.ctl);
        cmd.args(["token", "create", "--data-dir"])
            .arg(&self.data)
            .args(["--namespace", NAMESPACE, "--service-account", sa]);
        for l in labels {
            cmd.args(["--label", l]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(start_err(
                "mycelctl token create",
                String::from_utf8_lossy(&out.stderr),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A TLS channel to the controller (optionally with a client identity).
    pub async fn channel(
        &self,
        identity: Option<tonic::transport::Identity>,
    ) -> Result<Channel, SetupError> {
        let root = std::fs::read_to_string(self.ca_root())?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        Channel::from_shared(format!("https://{}", self.grpc))
            .map_err(|e| start_err("controller channel", e))?
            .tls_config(tls)
            .map_err(|e| start_err("controller channel", e))?
            .connect()
            .await
            .map_err(|e| start_err("connect to controller", e))
    }

    /// Certifies a fresh key with `token`; returns chain (DER) and key.
    pub async fn certify(&self, channel: Channel, token: &str) -> Result<ClientCert, SetupError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| start_err("key", e))?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| start_err("csr", e))?;
        let resp = IdentityClient::new(channel)
            .certify(CertifyRequest {
                token: token.to_string(),
                csr_der: csr.der().to_vec(),
                requested_ttl_seconds: 3600,
            })
            .await
            .map_err(|s| start_err("certify", s.message()))?
            .into_inner();
        Ok(ClientCert {
            chain: resp.chain_der,
            key_pkcs8: key.serialize_der(),
        })
    }
}

/// PEM text of DER certificates.
pub fn pem_chain(chain: &[Vec<u8>]) -> String {
    chain.iter().map(|d| pem_block("CERTIFICATE", d)).collect()
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Polls `GET path` on an admin port until 200 (20 s), failing early when
/// the process exits.
pub async fn wait_ok(proc: &mut ChildProc, addr: SocketAddr, path: &str) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if proc.exited() {
            return Err(start_err(
                &proc.name,
                format!("exited; log:\n{}", proc.log_tail()),
            ));
        }
        match probe::http_get(addr, "localhost", path).await {
            Ok((200, _)) => return Ok(()),
            Ok((s, b)) => last = format!("status {s}: {b}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(start_err(
        &proc.name,
        format!("{path} not ready: {last}\n{}", proc.log_tail()),
    ))
}

/// Waits until the controller lists `workload` as registered and ready.
pub(super) async fn wait_registered(ctl: &Controller, workload: &str) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, body)) = probe::http_get(ctl.admin, "localhost", "/debug/proxies").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let ready = v.as_array().is_some_and(|all| {
                all.iter().any(|p| {
                    p["workload"] == workload && p["registered"] == true && p["ready"] == true
                })
            });
            if ready {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(start_err(
        workload,
        "never registered ready with the controller",
    ))
}

/// Waits until the server sidecar holds [`AUTHZ_POLICY`], so the load is
/// decided by it rather than by the default.
async fn wait_policy_held(proc: &mut ChildProc, admin: SocketAddr) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, body)) = probe::http_get(admin, "localhost", "/config_dump").await {
            if body.contains(AUTHZ_POLICY) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(start_err(
        &proc.name,
        format!(
            "the authorization policy never arrived\n{}",
            proc.log_tail()
        ),
    ))
}

/// Waits until the client sidecar routes HTTP/1.1 to the backend by the
/// bench's routes (the probe rule's redirect answers).
async fn wait_routed(proc: &mut ChildProc, outbound: SocketAddr) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let host = format!("backend.{NAMESPACE}:{HTTP_PORT}");
    let mut last = String::new();
    while Instant::now() < deadline {
        match probe::http_get(outbound, &host, ROUTE_PROBE_PATH).await {
            Ok((302, _)) => return Ok(()),
            Ok((s, b)) => last = format!("status {s}: {b}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(start_err(
        &proc.name,
        format!("routes never applied (probe: {last})\n{}", proc.log_tail()),
    ))
}

pub(super) struct ProxyArgs<'a> {
    pub(super) workload: &'a str,
    pub(super) sa: &'a str,
    pub(super) token_file: &'a Path,
    pub(super) admin: SocketAddr,
    pub(super) inbound: SocketAddr,
    pub(super) extra: Vec<String>,
}

pub(super) fn proxy_args(ctl: &Controller, p: ProxyArgs<'_>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--controller",
        &ctl.grpc.to_string(),
        "--ca-root",
        &ctl.ca_root().display().to_string(),
        "--token-file",
        &p.token_file.display().to_string(),
        "--workload",
        p.workload,
        "--namespace",
        NAMESPACE,
        "--service-account",
        p.sa,
        "--admin",
        &p.admin.to_string(),
        "--inbound",
        &p.inbound.to_string(),
        "--address",
        "127.0.0.1",
        "--app-host",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(p.extra);
    a.extend(crate::extra_proxy_args());
    a
}

/// A traffic policy on the backend with every section that costs work per
/// request (retries with a budget, outlier detection, a circuit breaker,
/// timeouts) but whose limits the benchmark never reaches, so the figures
/// show the policy's cost, not its effects.
pub const POLICY_YAML: &str = "---\napiVersion: mycel.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: backend, namespace: bench}\nspec:\n  targetRef: {kind: Service, name: backend}\n  retry: {attempts: 3, perTryTimeout: 5s, retryOn: [connect-failure, refused-stream, reset, gateway-error]}\n  timeouts: {request: 10s, connect: 2s}\n  circuitBreaker: {maxRequests: 100000, maxPendingRequests: 10000, maxConnections: 10000}\n  outlierDetection: {consecutive5xx: 50, baseEjectionTime: 1s}\n";

/// A path only the routes' probe rule answers (302).
const ROUTE_PROBE_PATH: &str = "/mycel-bench-route-probe";

/// [`POLICY_YAML`] plus routes on every HTTP port of the backend: seven
/// rules that never match (a header the load does not send, or a gRPC
/// service it does not call) ahead of the catch-all the load takes, so the
/// figures carry rule matching, backend choice and the routed call path.
pub fn routes_yaml() -> String {
    let mut out = String::from(POLICY_YAML);
    for (name, port) in [("http", HTTP_PORT), ("h2", H2_PORT)] {
        out.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: backend-{name}, namespace: {NAMESPACE}}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: backend, port: {port}}}\n  rules:\n"
        ));
        for i in 1..=7 {
            out.push_str(&format!(
                "  - matches:\n    - headers:\n      - {{name: x-bench-variant, value: v{i}}}\n    backendRefs:\n    - {{name: backend, port: {port}}}\n"
            ));
        }
        // The probe rule: a redirect the setup waits for, so a refused
        // route set fails the setup instead of measuring unrouted traffic.
        out.push_str(&format!(
            "  - matches:\n    - path: {{type: Exact, value: {ROUTE_PROBE_PATH}}}\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {{statusCode: 302, path: {{type: ReplaceFullPath, replaceFullPath: /probed}}}}\n"
        ));
        out.push_str(&format!(
            "  - matches:\n    - path: {{type: PathPrefix, value: /}}\n    backendRefs:\n    - {{name: backend, port: {port}}}\n"
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: backend-grpc, namespace: {NAMESPACE}}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: backend, port: {GRPC_PORT}}}\n  rules:\n"
    ));
    for i in 1..=7 {
        out.push_str(&format!(
            "  - matches:\n    - method: {{service: bench.Other{i}, method: Get}}\n    backendRefs:\n    - {{name: backend, port: {GRPC_PORT}}}\n"
        ));
    }
    out.push_str(&format!(
        "  - backendRefs:\n    - {{name: backend, port: {GRPC_PORT}}}\n"
    ));
    out
}

/// The policy every request of the `mycel-authz` configuration is decided
/// by; the setup waits until the server sidecar holds it.
const AUTHZ_POLICY: &str = "bench/backend-callers";

/// [`POLICY_YAML`] plus authorization on the backend: a DENY and an AUDIT
/// policy that never match, and an ALLOW policy whose tenth rule is the
/// first to match the client, so each request walks every policy and ten
/// rules (principal prefixes, paths, methods) before it is allowed.
pub fn authz_yaml() -> String {
    let mut out = String::from(POLICY_YAML);
    out.push_str(&format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: no-evil, namespace: {NAMESPACE}}}\nspec:\n  selector: {{matchLabels: {{app: backend}}}}\n  action: DENY\n  rules:\n  - from: [{{namespaces: [evil]}}]\n"
    ));
    out.push_str(&format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: audit-admin, namespace: {NAMESPACE}}}\nspec:\n  selector: {{matchLabels: {{app: backend}}}}\n  action: AUDIT\n  rules:\n  - to: [{{paths: [\"/admin/*\"]}}]\n"
    ));
    out.push_str(&format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: backend-callers, namespace: {NAMESPACE}}}\nspec:\n  selector: {{matchLabels: {{app: backend}}}}\n  action: ALLOW\n  rules:\n"
    ));
    for i in 1..=9 {
        out.push_str(&format!(
            "  - from: [{{principals: [\"spiffe://cluster.local/ns/{NAMESPACE}/sa/other{i}*\"]}}]\n    to: [{{methods: [GET, POST], paths: [\"/v{i}/*\"]}}]\n"
        ));
    }
    out.push_str(&format!(
        "  - from: [{{serviceAccounts: [{NAMESPACE}/client]}}]\n"
    ));
    out
}

/// Controller + server sidecar (beside the backend) + client sidecar.
pub async fn start(bins: &Bins, backend: &BackendAddrs) -> Result<Setup, SetupError> {
    start_named(bins, backend, Pair::named("mycel")).await
}

/// The same pair with [`POLICY_YAML`] applied to the backend.
pub async fn start_with_policy(bins: &Bins, backend: &BackendAddrs) -> Result<Setup, SetupError> {
    start_named(
        bins,
        backend,
        Pair {
            extra_yaml: POLICY_YAML.into(),
            ..Pair::named("mycel-policy")
        },
    )
    .await
}

/// The policy pair with [`authz_yaml`] applied: what authorization adds.
pub async fn start_with_authz(bins: &Bins, backend: &BackendAddrs) -> Result<Setup, SetupError> {
    start_named(
        bins,
        backend,
        Pair {
            extra_yaml: authz_yaml(),
            ..Pair::named("mycel-authz")
        },
    )
    .await
}

/// The policy pair with [`routes_yaml`] applied: what routing adds.
pub async fn start_with_routes(bins: &Bins, backend: &BackendAddrs) -> Result<Setup, SetupError> {
    start_named(
        bins,
        backend,
        Pair {
            extra_yaml: routes_yaml(),
            ..Pair::named("mycel-routes")
        },
    )
    .await
}

/// How the trace-exporting pairs export.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceExport {
    pub protocol: OtlpProtocol,
    /// `OTEL_BSP_MAX_QUEUE_SIZE` for both proxies (None: their default).
    pub queue: Option<usize>,
}

/// The plain pair (no mesh config beyond the service) with both proxies
/// exporting spans to a collector of `kind`, started here, and the client
/// sidecar starting a trace for every request (`--trace-sampling 1`; the
/// load sends no trace context); the server sidecar follows the caller's
/// sampled context, so every request makes a client and a server span.
pub async fn start_tracing(
    bins: &Bins,
    backend: &BackendAddrs,
    kind: CollectorKind,
    export: TraceExport,
) -> Result<Setup, SetupError> {
    let collector = Collector::start(kind, export.protocol)?;
    let mut env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            collector.endpoint(),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            export.protocol.as_str().to_string(),
        ),
    ];
    if let Some(q) = export.queue {
        env.push(("OTEL_BSP_MAX_QUEUE_SIZE".to_string(), q.to_string()));
    }
    let mut notes = vec![format!(
        "{}; OTLP {} at {}; client sidecar --trace-sampling 1; span queue {}",
        kind.describe(),
        export.protocol.as_str(),
        collector.endpoint(),
        export
            .queue
            .map_or("2048 (default)".to_string(), |q| q.to_string())
    )];
    let mut setup = start_named(
        bins,
        backend,
        Pair {
            client_args: vec!["--trace-sampling".into(), "1".into()],
            env,
            ..Pair::named(kind.config_name())
        },
    )
    .await?;
    setup.notes.append(&mut notes);
    setup.collector = Some(collector);
    Ok(setup)
}

/// What differs between the Mycel configurations.
struct Pair {
    name: &'static str,
    /// Appended to the `mesh.yaml` declaring the backend.
    extra_yaml: String,
    /// More arguments for the client-side sidecar.
    client_args: Vec<String>,
    /// More environment for both sidecars.
    env: Vec<(String, String)>,
}

impl Pair {
    fn named(name: &'static str) -> Pair {
        Pair {
            name,
            extra_yaml: String::new(),
            client_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

async fn start_named(bins: &Bins, backend: &BackendAddrs, pair: Pair) -> Result<Setup, SetupError> {
    let Pair {
        name,
        extra_yaml,
        client_args,
        env,
    } = pair;
    let mut proxy_env: Vec<(&str, &str)> = vec![("MYCEL_LOG", "warn")];
    proxy_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let dir = tempfile::tempdir()?;
    let yaml = format!("{}{extra_yaml}", mesh_yaml(backend));
    let ctl = Controller::start(bins, dir.path(), &yaml).await?;
    let mut tokens = Vec::new();
    // The backend registers with app=backend; its token says so.
    for (sa, labels) in [("backend", &["app=backend"][..]), ("client", &[][..])] {
        let path = dir.path().join(format!("{sa}.token"));
        std::fs::write(&path, ctl.token_with_labels(bins, sa, labels)?)?;
        tokens.push(path);
    }
    let server_inbound = free_port()?;
    let server_admin = free_port()?;
    let server = ChildProc::spawn(
        "mycel-server-side",
        &bins.proxy,
        &proxy_args(
            &ctl,
            ProxyArgs {
                workload: "backend-0",
                sa: "backend",
                token_file: &tokens[0],
                admin: server_admin,
                inbound: server_inbound,
                extra: vec![
                    "--label".into(),
                    "app=backend".into(),
                    "--app-port".into(),
                    format!("http:{}:http", backend.http1.port()),
                    "--app-port".into(),
                    format!("h2:{}:http2", backend.h2c.port()),
                    "--app-port".into(),
                    format!("grpc:{}:grpc", backend.grpc.port()),
                    "--app-port".into(),
                    format!("tcp:{}:tcp", backend.tcp.port()),
                ],
            },
        ),
        &proxy_env,
        dir.path(),
    )?;
    let (outbound, tcp, client_admin, client_inbound) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let client = ChildProc::spawn(
        "mycel-client-side",
        &bins.proxy,
        &proxy_args(
            &ctl,
            ProxyArgs {
                workload: "client-0",
                sa: "client",
                token_file: &tokens[1],
                admin: client_admin,
                inbound: client_inbound,
                extra: [
                    "--outbound".into(),
                    outbound.to_string(),
                    "--tcp-upstream".into(),
                    format!("{tcp}=backend.{NAMESPACE}:{TCP_PORT}"),
                ]
                .into_iter()
                .chain(client_args)
                .collect(),
            },
        ),
        &proxy_env,
        dir.path(),
    )?;
    let mut children = vec![server, client];
    wait_ok(&mut children[0], server_admin, "/ready").await?;
    wait_ok(&mut children[1], client_admin, "/ready").await?;
    wait_registered(&ctl, "backend-0").await?;
    if extra_yaml.contains(ROUTE_PROBE_PATH) {
        wait_routed(&mut children[1], outbound).await?;
    }
    if extra_yaml.contains("kind: AuthorizationPolicy") {
        wait_policy_held(&mut children[0], server_admin).await?;
    }

    // A client certificate from the mesh CA for the handshake test.
    let hs_token = ctl.token(bins, "handshake")?;
    let hs_cert = ctl.certify(ctl.channel(None).await?, &hs_token).await?;

    let target = |port: u16| Target::plain(outbound, format!("backend.{NAMESPACE}:{port}"));
    let targets = BTreeMap::from([
        (Proto::Http1, target(HTTP_PORT)),
        (Proto::H2, target(H2_PORT)),
        (Proto::Grpc, target(GRPC_PORT)),
    ]);
    let watched = vec![
        Watched {
            role: "client-side",
            pid: children[1].pid().unwrap_or(0),
        },
        Watched {
            role: "server-side",
            pid: children[0].pid().unwrap_or(0),
        },
    ];
    // The controller stays up (the proxies keep their stream); it is not
    // on the data path and is not measured here.
    children.push(ctl.proc);
    Ok(Setup {
        name,
        targets,
        mesh_ports: vec![server_inbound],
        watched,
        tcp: Some(tcp),
        handshake: Some(HandshakeTarget {
            addr: server_inbound,
            server_name: "backend.bench".into(),
            cert: hs_cert,
            alpn: vec![b"h2".to_vec()],
        }),
        notes: vec![
            "hop between sidecars: HTTP/2 over mTLS (one pooled connection per endpoint)".into(),
        ],
        children,
        admins: vec![("client-side", client_admin), ("server-side", server_admin)],
        collector: None,
        tasks: tokio::task::JoinSet::new(),
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
