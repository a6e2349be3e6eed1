//! Pods made of network namespaces, wired as in a cluster: a node namespace
//! holds a bridge (`br0`, 198.18.0.1/24) and the controller; each pod is a
//! namespace with `eth0` (a veth whose other end is on the bridge) and an
//! address in 198.18.0.0/24; service VIPs (198.19.0.0/24) exist only in the
//! mesh config and are reached through the pod's default route, where the
//! sidecar's iptables rules catch them first.
//!
//! Namespaces are named `mycnet-<pid>-<n>-<role>` and deleted when the
//! [`Node`] drops, also when a test panics; namespaces of earlier runs whose
//! process is gone are deleted by [`Node::new`].

mod cmd;
mod pod;
pub mod stores;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use cmd::{have, is_root, must, run, Ran};
pub use pod::{Pod, PodSpec, ADMIN_PORT};

use crate::mesh::{registered_ready, write_token, TokenFor};
use crate::process::{bin, Proc};

pub const PREFIX: &str = "mycnet-";
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PROXY_UID: u32 = 1337;
pub const CONTROLLER_GRPC_PORT: u16 = 15010;
pub const CONTROLLER_ADMIN_PORT: u16 = 15014;
const CMD: Duration = Duration::from_secs(20);

/// What must be on the machine for these tests, or why they cannot run.
/// Checked once per test process (tests run in parallel).
pub fn missing_requirements() -> Option<String> {
    static CHECKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_requirements).clone()
}

/// Whether this machine can run the network-namespace tests; when not, the
/// test is reported skipped with the reason (see [`crate::skip::require`]).
pub fn can_run() -> bool {
    let missing = missing_requirements();
    crate::skip::require(
        &format!(
            "root and ip netns: {}",
            missing.as_deref().unwrap_or("available")
        ),
        missing.is_none(),
    )
}

fn check_requirements() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces and iptables need it)".into());
    }
    let tools = [
        "ip",
        "setpriv",
        "curl",
        "tcpdump",
        "iptables-save",
        "redis-server",
        "redis-cli",
        "psql",
        "python3",
    ];
    let mut absent: Vec<&str> = tools.into_iter().filter(|t| !have(t)).collect();
    if !have_postgres_server() {
        absent.push("postgresql server (initdb)");
    }
    if !absent.is_empty() {
        return Some(format!("missing tools: {}", absent.join(", ")));
    }
    let probe = format!("{PREFIX}probe-{}", std::process::id());
    let made = run(CMD, "ip", &["netns", "add", &probe]);
    let _ = run(CMD, "ip", &["netns", "del", &probe]);
    if !made.ok {
        return Some(format!(
            "cannot create a network namespace: {}",
            made.stderr.trim()
        ));
    }
    None
}

/// The newest `/usr/lib/postgresql/<version>/bin`, where Debian puts the
/// server programs.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .max()
}

fn have_postgres_server() -> bool {
    postgres_bin_dir().is_some()
}

/// Deletes `mycnet-<pid>-…` namespaces whose process no longer exists.
pub fn clean_stale() {
    let list = run(CMD, "ip", &["netns", "list"]);
    for line in list.stdout.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run(CMD, "ip", &["netns", "del", name]);
            }
        }
    }
}

/// `ip netns exec <ns> <program> <args>` as one argument vector.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["netns".into(), "exec".into(), ns.into(), program.into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The node: bridge namespace, controller, files, and every pod on it.
pub struct Node {
    pub ns: String,
    pub dir: tempfile::TempDir,
    tag: String,
    next_pod: u8,
    namespaces: Vec<String>,
    pub controller: Option<Proc>,
    /// `(host_ip, node_ip)` once [`Node::link_to_host`] made the link.
    link: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Node {
    /// Creates the node namespace and its bridge.
    pub fn new() -> Node {
        clean_stale();
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // The sidecars run as their own UID and read the CA root and their
        // token from here.
        must(CMD, "chmod", &["0755", &dir.path().display().to_string()]);
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let ns = format!("{tag}-node");
        let mut node = Node {
            ns: ns.clone(),
            dir,
            tag,
            next_pod: 2,
            namespaces: Vec::new(),
            controller: None,
            link: None,
        };
        node.add_ns(&ns);
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        // A MAC of its own: a bridge without one takes the lowest of its
        // ports', which changes when a pod with a lower veth MAC joins, and
        // pods that already resolved 198.18.0.1 then send to a MAC the
        // bridge no longer answers, until their neighbour entry expires
        // (their controller streams stall for 15-45 s).
        node.ip(&["link", "set", "br0", "address", "02:00:c6:12:00:01"]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"]);
        node.ip(&["link", "set", "br0", "up"]);
        node
    }

    fn add_ns(&mut self, name: &str) {
        must(CMD, "ip", &["netns", "add", name]);
        self.namespaces.push(name.to_string());
        must(CMD, "ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    /// `ip -n <node> args`.
    pub fn ip(&self, args: &[&str]) -> Ran {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        must(CMD, "ip", &full)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn logs(&self) -> PathBuf {
        self.path("logs")
    }

    /// Runs a command in the node namespace (no panic on failure).
    pub fn exec(&self, program: &str, args: &[&str]) -> Ran {
        let full = in_ns(&self.ns, program, args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run(CMD, "ip", &refs)
    }

    /// Starts a long-running process in the node namespace.
    pub fn spawn(&self, name: &str, program: &str, args: &[&str]) -> Proc {
        Proc::spawn(
            name,
            Path::new("ip"),
            &in_ns(&self.ns, program, args),
            &self.logs(),
        )
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from((NODE_IP, CONTROLLER_GRPC_PORT))
    }

    /// A point-to-point link from this (the test's) namespace into the
    /// node's: returns `(host_ip, node_ip)`, both in 198.18.255.0/24, so a
    /// process here (an API server) serves the node's controller.
    pub fn link_to_host(&mut self) -> (Ipv4Addr, Ipv4Addr) {
        static LINKS: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + LINKS.fetch_add(1, Ordering::Relaxed)) % 60;
        let host_ip = Ipv4Addr::new(198, 18, 255, (4 * n + 1) as u8);
        let node_ip = Ipv4Addr::new(198, 18, 255, (4 * n + 2) as u8);
        // Interface names are at most 15 bytes; the pid keeps parallel test
        // processes apart, and the link dies with the node namespace.
        let host_end = format!("myk{}-{n}", std::process::id() % 100_000);
        must(
            CMD,
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "host0", "netns",
                &self.ns,
            ],
        );
        must(
            CMD,
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_end],
        );
        must(CMD, "ip", &["link", "set", &host_end, "up"]);
        self.ip(&["addr", "add", &format!("{node_ip}/30"), "dev", "host0"]);
        self.ip(&["link", "set", "host0", "up"]);
        self.link = Some((host_ip, node_ip));
        (host_ip, node_ip)
    }

    /// `(host_ip, node_ip)` of the link to the host, if made.
    pub fn host_link(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        self.link
    }

    /// Starts the controller in the node namespace with `mesh_yaml`; waits
    /// until it is ready and its CA root is copied where pods can read it.
    pub async fn start_controller(&mut self, mesh_yaml: &str) {
        std::fs::write(self.path("mesh.yaml"), mesh_yaml).expect("mesh.yaml");
        let mesh = self.path("mesh.yaml").display().to_string();
        self.start_controller_with(&["--mesh-config", &mesh]).await;
    }

    /// Starts the controller in the node namespace with a source given by
    /// `source_args` (`--mesh-config PATH` or `--kubernetes ...`).
    pub async fn start_controller_with(&mut self, source_args: &[&str]) {
        let proc = self
            .spawn_controller("data", self.grpc_addr(), CONTROLLER_ADMIN_PORT, source_args)
            .await;
        self.controller = Some(proc);
        let root = self.path("root.pem");
        std::fs::copy(self.path("data/ca/root.pem"), &root).expect("copy root");
        must(CMD, "chmod", &["0644", &root.display().to_string()]);
    }

    /// Starts replica `n` (1, 2, ...) of the controller beside the first,
    /// with a data dir and ports of its own (gRPC 15010 + 100n, admin
    /// 15014 + 100n); returns its gRPC address for [`PodSpec::controller`].
    /// The caller keeps the process.
    pub async fn start_replica(&mut self, n: u16, source_args: &[&str]) -> (Proc, SocketAddr) {
        let grpc = SocketAddr::from((NODE_IP, CONTROLLER_GRPC_PORT + 100 * n));
        let proc = self
            .spawn_controller(
                &format!("data-{n}"),
                grpc,
                CONTROLLER_ADMIN_PORT + 100 * n,
                source_args,
            )
            .await;
        (proc, grpc)
    }

    /// Spawns a controller and waits until its admin port says ready.
    async fn spawn_controller(
        &self,
        data_dir: &str,
        grpc: SocketAddr,
        admin_port: u16,
        source_args: &[&str],
    ) -> Proc {
        let data = self.path(data_dir).display().to_string();
        let grpc = grpc.to_string();
        let admin = SocketAddr::from((NODE_IP, admin_port)).to_string();
        let controller = bin("mycel-controller").display().to_string();
        let mut args = vec![
            "--data-dir",
            &data,
            "--grpc-addr",
            &grpc,
            "--admin-addr",
            &admin,
        ];
        args.extend_from_slice(source_args);
        let n = std::fs::read_dir(self.logs())
            .map(|d| d.count())
            .unwrap_or(0);
        let proc = self.spawn(&format!("controller-{n}"), &controller, &args);
        let url = format!("http://{admin}/ready");
        if !self.wait_curl(&url, Duration::from_secs(20)).await {
            panic!("controller not ready; log:\n{}", proc.log());
        }
        proc
    }

    /// Polls `url` with curl from the node namespace until it answers 2xx.
    pub async fn wait_curl(&self, url: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.exec("curl", &["-sf", "-m", "2", url]).ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until the controller lists `workload` registered and ready.
    pub async fn wait_registered(&self, workload: &str) {
        let url = format!("http://{NODE_IP}:{CONTROLLER_ADMIN_PORT}/debug/proxies");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            let r = self.exec("curl", &["-sf", "-m", "2", &url]);
            if registered_ready(&r.stdout, workload) {
                return;
            }
            last = r.stdout;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{workload} never registered ready: {last}");
    }

    /// Creates a join token readable by the proxy's UID.
    pub fn token(&self, t: &TokenFor) -> PathBuf {
        let path = write_token(&self.path("data"), self.dir.path(), t);
        must(CMD, "chmod", &["0644", &path.display().to_string()]);
        path
    }

    /// Adds a pod namespace wired to the bridge; returns its name and IP.
    pub fn add_pod_ns(&mut self, role: &str) -> (String, Ipv4Addr) {
        let n = self.next_pod;
        self.next_pod += 1;
        let ip = Ipv4Addr::new(198, 18, 0, n);
        let ns = format!("{}-{role}", self.tag);
        self.add_ns(&ns);
        let host_end = format!("veth{n}");
        self.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        self.ip(&["link", "set", &host_end, "master", "br0", "up"]);
        let pod = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
            full.extend_from_slice(args);
            must(CMD, "ip", &full);
        };
        pod(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        pod(&["link", "set", "eth0", "up"]);
        pod(&["route", "add", "default", "via", &NODE_IP.to_string()]);
        (ns, ip)
    }

    /// The node-side interface of the pod with address `ip`.
    pub fn veth_of(ip: Ipv4Addr) -> String {
        format!("veth{}", ip.octets()[3])
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Processes first (the controller here; pods own theirs), so a
        // namespace is not kept alive by a child.
        self.controller.take();
        for ns in self.namespaces.iter().rev() {
            let _ = run(CMD, "ip", &["netns", "del", ns]);
        }
    }
}
