//! A loopback mesh built from real processes: one controller, any number of
//! sidecars, gateways and demo apps. Reads like the scenario under test.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mycel_test_support::{http, init_tracing, ProxyArgs};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::process::{bin, Proc};

pub const TRUST_DOMAIN: &str = "cluster.local";

pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Ports every workload uses on its own loopback address, as every pod has
/// the same ports on its own IP.
pub const APP_PORT: u16 = 8080;
pub const INBOUND_PORT: u16 = 15006;
pub const OUTBOUND_PORT: u16 = 15001;
pub const ADMIN_PORT: u16 = 15000;
pub const GATEWAY_PORT: u16 = 8080;

/// A loopback address of its own for each workload (all of 127.0.0.0/8 is
/// loopback on Linux). The second octet comes from the process id so test
/// binaries running one after another do not meet stale sockets.
pub fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 20 + (std::process::id() % 200) as u8;
    Ipv4Addr::new(127, b, (n / 250) as u8, (n % 250) as u8 + 2)
}

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub controller: Option<Proc>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    extra_controller_args: Vec<String>,
    /// Whether the controller reads `mesh.yaml` (else its args name another
    /// source, e.g. `--kubernetes`).
    mesh_config: bool,
    /// Variables added to the controller's environment.
    controller_env: Vec<(String, String)>,
}

impl Mesh {
    /// Starts a controller with `mesh_yaml` and waits until it is ready.
    pub async fn start(mesh_yaml: &str) -> Mesh {
        Self::start_with(mesh_yaml, &[]).await
    }

    pub async fn start_with(mesh_yaml: &str, controller_args: &[&str]) -> Mesh {
        Self::start_inner(Some(mesh_yaml), controller_args, &[]).await
    }

    /// A controller with variables added to its environment.
    pub async fn start_with_env(mesh_yaml: &str, env: &[(&str, &str)]) -> Mesh {
        Self::start_inner(Some(mesh_yaml), &[], env).await
    }

    /// Starts a controller that follows a Kubernetes API server.
    pub async fn start_kubernetes(kubeconfig: &Path, controller_args: &[&str]) -> Mesh {
        let mut args = vec![
            "--kubernetes".to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        args.extend(controller_args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_inner(None, &args, &[]).await
    }

    async fn start_inner(
        mesh_yaml: Option<&str>,
        controller_args: &[&str],
        env: &[(&str, &str)],
    ) -> Mesh {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        if let Some(text) = mesh_yaml {
            std::fs::write(dir.path().join("mesh.yaml"), text).expect("write mesh.yaml");
        }
        let mut mesh = Mesh {
            dir,
            controller: None,
            // Port 0: the controller binds, then says which ports it got in
            // its ready line (no bind-release-reuse race with other tests).
            grpc: addr(0),
            admin: addr(0),
            extra_controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
            mesh_config: mesh_yaml.is_some(),
            controller_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        mesh.start_controller().await;
        mesh
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn logs(&self) -> PathBuf {
        self.path("logs")
    }

    /// (Re)starts the controller on the same ports and data dir (the first
    /// start lets it pick free ports and reads them from its ready line).
    pub async fn start_controller(&mut self) {
        let mut args = vec![
            "--data-dir".to_string(),
            self.path("data").display().to_string(),
            "--grpc-addr".into(),
            self.grpc.to_string(),
            "--admin-addr".into(),
            self.admin.to_string(),
        ];
        if self.mesh_config {
            args.extend([
                "--mesh-config".into(),
                self.path("mesh.yaml").display().to_string(),
            ]);
        }
        args.extend(self.extra_controller_args.iter().cloned());
        let n = std::fs::read_dir(self.logs())
            .map(|d| d.count())
            .unwrap_or(0);
        let mut proc = Proc::spawn_env(
            &format!("controller-{n}"),
            &bin("mycel-controller"),
            &args,
            &self.logs(),
            &self.controller_env,
        );
        let ready = proc
            .wait_for_line("mycel-controller ready ", Duration::from_secs(20))
            .await;
        self.controller = Some(proc);
        let ready = ready.unwrap_or_else(|e| panic!("controller did not start: {e}"));
        for (field, slot) in [("grpc=", &mut self.grpc), ("admin=", &mut self.admin)] {
            *slot = ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(field))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {field} address in the ready line {ready:?}"));
        }
        if let Err(e) = http::wait_ok(self.admin, "/ready", Duration::from_secs(20)).await {
            let log = self.controller.as_ref().map(Proc::log).unwrap_or_default();
            panic!("controller not ready: {e:#}\n{log}");
        }
    }

    pub async fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill().await;
        }
    }

    /// Waits until the controller has `workload` registered and ready, so it
    /// is an endpoint of the services that select it.
    pub async fn wait_registered(&self, workload: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = http::get(self.admin, "localhost", "/debug/proxies").await {
                if registered_ready(&r.body, workload) {
                    return;
                }
                last = r.body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{workload} never registered ready with the controller: {last}");
    }

    pub fn write_mesh_yaml(&self, text: &str) {
        // Write then rename so the controller never reads half a file.
        let tmp = self.path("mesh.yaml.tmp");
        std::fs::write(&tmp, text).expect("write mesh.yaml");
        std::fs::rename(&tmp, self.path("mesh.yaml")).expect("rename mesh.yaml");
    }

    pub fn ca_root(&self) -> PathBuf {
        self.path("data/ca/root.pem")
    }

    /// Creates a join token without labels with the real CLI; returns the
    /// token file.
    pub fn token(&self, ns: &str, sa: &str) -> PathBuf {
        write_token(
            &self.path("data"),
            self.dir.path(),
            &TokenFor::new(&format!("{ns}-{sa}"), ns, sa),
        )
    }

    /// Creates the join token a sidecar for `spec` needs: its identity, its
    /// labels, and its address (sidecars dial the controller from
    /// 127.0.0.1, not from their own loopback IP).
    pub fn token_for(&self, spec: &SidecarSpec) -> PathBuf {
        let mut t = TokenFor::new(&spec.workload, &spec.namespace, &spec.service_account);
        t.labels = spec.labels.clone();
        t.addresses = vec![spec.ip.to_string()];
        write_token(&self.path("data"), self.dir.path(), &t)
    }

    /// Starts a demo app (`mycel-demo <service> ...`).
    pub fn app(&self, name: &str, service: &str, listen: SocketAddr, extra: &[&str]) -> Proc {
        let mut args = vec![service.to_string(), "--listen".into(), listen.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::spawn(name, &bin("mycel-demo"), &args, &self.logs())
    }

    /// Starts a sidecar for `spec` and waits until its admin says ready.
    pub async fn sidecar(&self, spec: SidecarSpec) -> Sidecar {
        let sc = self.sidecar_unready(spec);
        sc.wait_ready().await;
        sc
    }

    pub fn sidecar_unready(&self, spec: SidecarSpec) -> Sidecar {
        let token = match &spec.token_file {
            Some(t) => t.clone(),
            None => self.token_for(&spec),
        };
        let ip = spec.ip;
        let admin = SocketAddr::from((ip, ADMIN_PORT));
        let args = ProxyArgs::new(&spec.workload, &spec.namespace, &spec.service_account)
            .controller(self.grpc, &self.ca_root(), &token)
            .admin(admin)
            .address(ip.into(), &ip.to_string());
        let gateway_mode = !spec.gateway_routes.is_empty() || spec.gateway.is_some();
        let (args, inbound, outbound, listen) = match !gateway_mode {
            true => {
                let inbound = SocketAddr::from((ip, INBOUND_PORT));
                let outbound = SocketAddr::from((ip, OUTBOUND_PORT));
                let args = args.explicit(inbound, outbound);
                (args, Some(inbound), Some(outbound), None)
            }
            false => {
                let listen = SocketAddr::from((ip, GATEWAY_PORT));
                let mut args = args.gateway(listen, &spec.gateway_routes);
                if let Some(name) = &spec.gateway {
                    args = args.extra(["--gateway", name.as_str()]);
                }
                (args, None, None, Some(listen))
            }
        };
        let args = args
            .labels(&spec.labels)
            .app_ports(&spec.app_ports)
            .extra(&spec.extra)
            .into_vec();
        let proc = Proc::spawn_env(
            &spec.workload,
            &bin("mycel-proxy"),
            &args,
            &self.logs(),
            &spec.env,
        );
        Sidecar {
            proc,
            admin,
            inbound,
            outbound,
            listen,
            spiffe_id: spiffe(&spec.namespace, &spec.service_account),
        }
    }
}

/// What a join token is created for.
#[derive(Clone, Debug)]
pub struct TokenFor {
    /// Names the token file (`<name>.token`).
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    /// `--address` values (IP or CIDR).
    pub addresses: Vec<String>,
    /// `--ttl`, e.g. "2s".
    pub ttl: Option<String>,
}

impl TokenFor {
    pub fn new(name: &str, ns: &str, sa: &str) -> Self {
        Self {
            name: name.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            labels: Vec::new(),
            addresses: Vec::new(),
            ttl: None,
        }
    }
}

/// Runs `mycelctl token create` against `data_dir` and writes the token to
/// `<dir>/<name>.token`; returns that path.
pub fn write_token(data_dir: &Path, dir: &Path, t: &TokenFor) -> PathBuf {
    let mut cmd = std::process::Command::new(bin("mycelctl"));
    cmd.args(["token", "create", "--data-dir"])
        .arg(data_dir)
        .args([
            "--namespace",
            &t.namespace,
            "--service-account",
            &t.service_account,
        ]);
    for (k, v) in &t.labels {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    for a in &t.addresses {
        cmd.args(["--address", a]);
    }
    if let Some(ttl) = &t.ttl {
        cmd.args(["--ttl", ttl]);
    }
    let out = cmd.output().expect("run mycelctl token create");
    assert!(
        out.status.success(),
        "mycelctl token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("mycel."), "unexpected token {token:?}");
    let path = dir.join(format!("{}.token", t.name));
    std::fs::write(&path, token).expect("write token");
    path
}

/// Whether a `/debug/proxies` body lists `workload` registered and ready.
pub fn registered_ready(debug_proxies: &str, workload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(debug_proxies).is_ok_and(|v| {
        v.as_array().is_some_and(|all| {
            all.iter()
                .any(|p| p["workload"] == workload && p["registered"] == true && p["ready"] == true)
        })
    })
}

/// What a sidecar (or gateway) is started with.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    /// The workload's own loopback address (its "pod IP").
    pub ip: Ipv4Addr,
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    pub app_ports: Vec<String>,
    pub gateway_routes: Vec<String>,
    /// A gateway that serves this Gateway's routes (`--gateway NAME`, in
    /// the spec's namespace) instead of static `--route`s.
    pub gateway: Option<String>,
    pub extra: Vec<String>,
    /// Variables added to the sidecar's environment.
    pub env: Vec<(String, String)>,
    /// A token file of the test's own (e.g. a Kubernetes service-account
    /// token) instead of a join token made for the spec.
    pub token_file: Option<PathBuf>,
}

impl SidecarSpec {
    /// A sidecar in namespace `shop` whose service account is `sa`.
    pub fn new(workload: &str, sa: &str) -> Self {
        Self {
            ip: next_ip(),
            workload: workload.into(),
            namespace: "shop".into(),
            service_account: sa.into(),
            labels: Vec::new(),
            app_ports: Vec::new(),
            gateway_routes: Vec::new(),
            gateway: None,
            extra: Vec::new(),
            env: Vec::new(),
            token_file: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn token_file(mut self, path: PathBuf) -> Self {
        self.token_file = Some(path);
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }

    /// `name:port[:protocol]`
    pub fn app_port(mut self, spec: &str) -> Self {
        self.app_ports.push(spec.into());
        self
    }

    pub fn route(mut self, route: &str) -> Self {
        self.gateway_routes.push(route.into());
        self
    }

    /// A gateway following the Gateway `name` of the spec's namespace.
    pub fn gateway(mut self, name: &str) -> Self {
        self.gateway = Some(name.into());
        self
    }

    /// The app's address on this workload's IP.
    pub fn app_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, APP_PORT))
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }
}

pub struct Sidecar {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub spiffe_id: String,
}

impl Sidecar {
    pub async fn wait_ready(&self) {
        if let Err(e) = http::wait_ok(self.admin, "/ready", Duration::from_secs(20)).await {
            panic!("{} not ready: {e:#}\n{}", self.proc.name, self.proc.log());
        }
    }

    pub fn outbound(&self) -> SocketAddr {
        self.outbound.expect("sidecar has an outbound listener")
    }

    pub fn inbound(&self) -> SocketAddr {
        self.inbound.expect("sidecar has an inbound listener")
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen.expect("gateway has a listener")
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = http::get(self.admin, "localhost", path)
            .await
            .unwrap_or_else(|e| panic!("{}{path}: {e:#}", self.proc.name));
        r.json()
    }

    /// Requests this sidecar's inbound side has forwarded to its app.
    pub async fn served_inbound(&self) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| {
                l.starts_with("mycel_requests_total") && l.contains("direction=\"inbound\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub async fn metrics(&self) -> String {
        http::get(self.admin, "localhost", "/metrics")
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    }
}

/// Reads a PEM file into DER blocks.
pub fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .map(|c| c.expect("pem cert").to_vec())
        .collect()
}
