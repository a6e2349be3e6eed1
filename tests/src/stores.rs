//! The demo's stores as meshed workloads, laid out as `mycelctl demo` lays
//! them out (`cli/src/demo/plan/stores.rs`): each `mycel-demo store <kind>`
//! beside its own sidecar, a Service with `appProtocol: tcp` on the
//! server's usual port, and an AuthorizationPolicy `<store>-users` that
//! admits only the services owning it; an owner reaches its store through
//! a `--tcp-upstream` tunnel of its own sidecar (mTLS, HTTP/2 CONNECT).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::mesh::{Mesh, Sidecar, SidecarSpec, APP_PORT};
use crate::process::{bin, Proc};

/// One of the demo's stores: its name (also its Service, service account
/// and `app` label), what `mycel-demo store` runs, the Service port, the
/// flag that gives an owner its address, and the owners.
#[derive(Debug)]
pub struct StoreDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub port: u16,
    pub flag: &'static str,
    pub owners: &'static [&'static str],
}

/// The shop's stores, as the demo has them.
pub const STORES: [StoreDef; 5] = [
    StoreDef {
        name: "catalog-postgres",
        kind: "postgres",
        port: 5432,
        flag: "--postgres",
        owners: &["catalog"],
    },
    StoreDef {
        name: "orders-postgres",
        kind: "postgres",
        port: 5432,
        flag: "--postgres",
        owners: &["orders"],
    },
    StoreDef {
        name: "ratings-redis",
        kind: "redis",
        port: 6379,
        flag: "--redis",
        owners: &["ratings"],
    },
    StoreDef {
        name: "notifications-redis",
        kind: "redis",
        port: 6379,
        flag: "--redis",
        owners: &["notifications"],
    },
    StoreDef {
        name: "nats",
        kind: "nats",
        port: 4222,
        flag: "--nats",
        owners: &["catalog", "orders", "notifications"],
    },
];

pub fn def(name: &str) -> &'static StoreDef {
    STORES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no store {name}"))
}

/// How long a store may take to accept connections, or to stop.
pub const STORE_LIMIT: Duration = Duration::from_secs(20);
/// The first local port of an owner's tunnels, one per store it uses.
pub const FIRST_TUNNEL_PORT: u16 = 16000;

/// Whether the servers of `stores` are installed (`mycel-demo store KIND
/// --check`); when not, says which are missing (through
/// [`crate::skip::require`]) and the test should return.
pub fn available(stores: &[&str]) -> bool {
    let mut kinds: Vec<&str> = stores.iter().map(|s| def(s).kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let missing: Vec<String> = kinds
        .iter()
        .filter_map(|kind| {
            let out = std::process::Command::new(bin("mycel-demo"))
                .args(["store", kind, "--check"])
                .output()
                .expect("run mycel-demo store --check");
            (!out.status.success()).then(|| {
                format!(
                    "mycel-demo store {kind} --check: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        })
        .collect();
    crate::skip::require(&missing.join("; "), missing.is_empty())
}

/// `mesh.yaml` with an HTTP Service (port 80) per name of `services`, a
/// TCP Service and its `<store>-users` policy per name of `stores`, then
/// `extra` (more documents).
pub fn mesh_yaml(services: &[&str], stores: &[&str], extra: &str) -> String {
    let mut y = String::new();
    for name in services {
        y.push_str(&service_doc(name, 80, "http"));
    }
    for name in stores {
        let store = def(name);
        y.push_str(&service_doc(name, store.port, "tcp"));
        y.push_str(&users_policy(store));
    }
    y.push_str(extra);
    y
}

fn service_doc(name: &str, port: u16, proto: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: {proto}\n    port: {port}\n    targetPort: {APP_PORT}\n    appProtocol: {proto}\n"
    )
}

/// The policy `stores::authorization` writes for the demo.
fn users_policy(store: &StoreDef) -> String {
    let accounts: Vec<String> = store.owners.iter().map(|o| format!("shop/{o}")).collect();
    allow_policy(
        &format!("{}-users", store.name),
        store.name,
        &accounts.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// An ALLOW AuthorizationPolicy on the workloads labelled `app` that
/// admits only `accounts` (`namespace/name`).
pub fn allow_policy(name: &str, app: &str, accounts: &[&str]) -> String {
    format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  action: ALLOW\n  rules:\n  - from:\n    - serviceAccounts: [{}]\n",
        accounts.join(", ")
    )
}

/// A directory for the stores' data that PostgreSQL's own user can pass
/// through when the tests run as root (a temporary directory is 0700).
pub fn data_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the stores' directory");
    dir
}

/// A store and its sidecar. The store is stopped (SIGTERM, which it
/// passes on to its server) when this drops, so no server outlives a
/// failed test.
pub struct MeshedStore {
    pub def: &'static StoreDef,
    pub dir: PathBuf,
    pub spec: SidecarSpec,
    pub sidecar: Sidecar,
    proc: Option<Proc>,
    logs: PathBuf,
    starts: u32,
}

impl MeshedStore {
    /// Starts the store named `name` with its data under `root`, then its
    /// sidecar; returns once the store accepts connections and the
    /// controller has the sidecar registered ready.
    pub async fn start(mesh: &Mesh, name: &str, root: &Path) -> MeshedStore {
        let def = def(name);
        let spec = SidecarSpec::new(name, name)
            .label("app", name)
            .app_port(&format!("{}:{APP_PORT}:tcp", def.kind));
        let sidecar = mesh.sidecar_unready(spec.clone());
        let mut store = MeshedStore {
            def,
            dir: root.join(name),
            spec,
            sidecar,
            proc: None,
            logs: mesh.logs(),
            starts: 0,
        };
        store.restart().await;
        store.sidecar.wait_ready().await;
        mesh.wait_registered(name).await;
        store
    }

    /// Where the server listens (the sidecar's app port).
    pub fn addr(&self) -> SocketAddr {
        self.spec.app_addr()
    }

    /// Starts the store (again: same directory, same address) and waits
    /// until it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "{} is running", self.def.name);
        let args: Vec<String> = [
            "store",
            self.def.kind,
            "--listen",
            &self.addr().to_string(),
            "--dir",
            &self.dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let name = format!("{}-store-{}", self.def.name, self.starts);
        self.starts += 1;
        let mut proc = Proc::spawn(&name, &bin("mycel-demo"), &args, &self.logs);
        let addr = self.addr();
        let listening = tokio::time::timeout(STORE_LIMIT, async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                proc.assert_running();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if listening.is_err() {
            panic!(
                "{} not listening on {addr} within {STORE_LIMIT:?}:\n{}",
                self.def.name,
                proc.log()
            );
        }
        self.proc = Some(proc);
    }

    /// Stops the store (SIGTERM) and waits until it and its server exited.
    pub async fn stop(&mut self) {
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        if proc.terminate(STORE_LIMIT).await.is_none() {
            panic!(
                "{} did not stop within {STORE_LIMIT:?} of SIGTERM:\n{}",
                self.def.name,
                proc.log()
            );
        }
    }

    /// The current (or last) run's log.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }
}

impl Drop for MeshedStore {
    fn drop(&mut self) {
        let Some(pid) = self.proc.as_ref().and_then(Proc::pid) else {
            return;
        };
        if let Some(proc) = &self.proc {
            proc.signal(Signal::SIGTERM as i32);
        }
        // Blocking, bounded: dropping cannot await, and the server must be
        // gone before the test's directories are.
        let deadline = std::time::Instant::now() + STORE_LIMIT;
        while running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is alive (a zombie has exited; only its parent has not
/// reaped it yet).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// A shop service whose sidecar tunnels to the stores it uses.
pub struct MeshedService {
    pub name: String,
    pub spec: SidecarSpec,
    pub sidecar: Sidecar,
    pub app: Option<Proc>,
    app_args: Vec<String>,
    starts: u32,
}

impl MeshedService {
    /// `mycel-demo <service>` beside a sidecar labelled `app=<service>`
    /// (its service account the same name) with a `--tcp-upstream` per
    /// store of `stores`, the app given each tunnel's local end with the
    /// store's flag, as the demo starts it.
    pub async fn start(mesh: &Mesh, service: &str, stores: &[&str]) -> MeshedService {
        let mut spec = SidecarSpec::new(service, service)
            .label("app", service)
            .app_port(&format!("http:{APP_PORT}:http"));
        let mut app_args = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let def = def(store);
            assert!(def.owners.contains(&service), "{service} uses no {store}");
            let listen = SocketAddr::from((spec.ip, FIRST_TUNNEL_PORT + i as u16));
            spec = spec
                .arg("--tcp-upstream")
                .arg(&format!("{listen}={store}.shop:{}", def.port));
            app_args.extend([def.flag.to_string(), listen.to_string()]);
        }
        let sidecar = mesh.sidecar_unready(spec.clone());
        app_args.extend(["--proxy".to_string(), sidecar.outbound().to_string()]);
        let mut svc = MeshedService {
            name: service.to_string(),
            spec,
            sidecar,
            app: None,
            app_args,
            starts: 0,
        };
        svc.start_app(mesh);
        svc.sidecar.wait_ready().await;
        mesh.wait_registered(service).await;
        svc
    }

    /// The app's own address (beside its sidecar).
    pub fn addr(&self) -> SocketAddr {
        self.spec.app_addr()
    }

    /// Starts the app (again), with the same flags.
    pub fn start_app(&mut self, mesh: &Mesh) {
        assert!(self.app.is_none(), "{} is running", self.name);
        let args: Vec<&str> = self.app_args.iter().map(String::as_str).collect();
        let name = format!("{}-app-{}", self.name, self.starts);
        self.starts += 1;
        self.app = Some(mesh.app(&name, &self.name, self.addr(), &args));
    }

    /// Stops the app (SIGTERM, then SIGKILL after 10 s); its sidecar stays.
    pub async fn stop_app(&mut self) {
        if let Some(mut app) = self.app.take() {
            app.terminate(Duration::from_secs(10)).await;
        }
    }
}

/// Polls `check` every 50 ms until it gives a value; panics naming `what`
/// after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `sidecar` holds the inbound AuthorizationPolicy `policy`
/// (`namespace/name`).
pub async fn wait_policy(sidecar: &Sidecar, policy: &str) {
    eventually(
        &format!("{} holds {policy}", sidecar.proc.name),
        Duration::from_secs(10),
        || async {
            let dump = sidecar.admin_json("/config_dump").await;
            dump["snapshot"]["inbound"]["policies"]
                .as_array()
                .is_some_and(|all| all.iter().any(|p| p["name"] == policy))
                .then_some(())
        },
    )
    .await;
}

/// The sum of a sidecar's counter samples named `name` whose labels
/// include every one of `labels` (`key="value"`).
pub fn counter(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Tunnels a store's sidecar accepted (its CONNECT answered 200) from
/// the SPIFFE identity `id`, as its metrics count them.
pub fn tunnels_from(metrics: &str, id: &str) -> u64 {
    counter(
        metrics,
        "mycel_inbound_requests_total",
        &[&format!("peer=\"{id}\""), "code=\"200\""],
    )
}

/// Tunnel authorization decisions a store's sidecar counted: `decision`
/// (`allow`, `deny`) by `policy` (`shop/<store>-users`, `no-allow-match`).
pub fn tcp_decisions(metrics: &str, decision: &str, policy: &str) -> u64 {
    counter(
        metrics,
        "mycel_authz_decisions_total",
        &[
            &format!("decision=\"{decision}\""),
            &format!("policy=\"{policy}\""),
            "protocol=\"tcp\"",
        ],
    )
}

/// The order ids of a `GET /notifications` answer, newest first.
pub fn order_ids(notifications: &serde_json::Value) -> Vec<String> {
    notifications["notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|n| n["order_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
