//! One pod: a network namespace on the node's bridge, optionally with
//! `mycel-proxy init` rules and a sidecar running as its own UID, and the
//! app processes, unmodified.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use mycel_test_support::ProxyArgs;

use super::cmd::{run, Ran};
use super::{in_ns, Node, PROXY_UID};
use crate::mesh::{spiffe, TokenFor};
use crate::process::{bin, Proc};

const CMD: Duration = Duration::from_secs(20);
pub const MESH_PORT: u16 = 15006;
pub const ADMIN_PORT: u16 = 15000;
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15008;

/// How a pod's sidecar is configured.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    /// `name:port[:protocol]`.
    pub app_ports: Vec<String>,
    pub mtls_mode: &'static str,
    /// Service keys subscribed at start (for VIP routing).
    pub subscribe: Vec<String>,
    /// Where the sidecar reaches its app; the pod IP unless set (a real
    /// pod's default is loopback).
    pub app_host: Option<String>,
    pub extra: Vec<String>,
    /// A token file of the test's own (a Kubernetes service-account token)
    /// instead of a join token made for the spec; readable by the proxy UID.
    pub token_file: Option<std::path::PathBuf>,
    /// The controller replica the sidecar talks to; the node's first
    /// unless set.
    pub controller: Option<SocketAddr>,
}

impl PodSpec {
    pub fn new(workload: &str) -> PodSpec {
        PodSpec {
            workload: workload.into(),
            namespace: "shop".into(),
            service_account: workload.into(),
            labels: vec![("app".into(), workload.into())],
            app_ports: Vec::new(),
            mtls_mode: "strict",
            subscribe: Vec::new(),
            app_host: None,
            extra: Vec::new(),
            token_file: None,
            controller: None,
        }
    }

    pub fn controller(mut self, grpc: SocketAddr) -> Self {
        self.controller = Some(grpc);
        self
    }

    pub fn token_file(mut self, path: std::path::PathBuf) -> Self {
        self.token_file = Some(path);
        self
    }

    pub fn app_host(mut self, host: &str) -> Self {
        self.app_host = Some(host.into());
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels = vec![(k.into(), v.into())];
        self
    }

    pub fn app_port(mut self, p: &str) -> Self {
        self.app_ports.push(p.into());
        self
    }

    pub fn permissive(mut self) -> Self {
        self.mtls_mode = "permissive";
        self
    }

    pub fn subscribe(mut self, key: &str) -> Self {
        self.subscribe.push(key.into());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }
}

pub struct Pod {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub spiffe_id: Option<String>,
    pub sidecar: Option<Proc>,
    pub apps: Vec<Proc>,
    logs: std::path::PathBuf,
}

impl Pod {
    /// A pod without sidecar or rules (a client outside the mesh).
    pub fn new(node: &mut Node, role: &str) -> Pod {
        let (ns, ip) = node.add_pod_ns(role);
        Pod {
            ns,
            ip,
            spiffe_id: None,
            sidecar: None,
            apps: Vec::new(),
            logs: node.logs(),
        }
    }

    /// Runs a command in the pod (no panic on failure).
    pub fn exec(&self, program: &str, args: &[&str]) -> Ran {
        self.exec_for(CMD, program, args)
    }

    pub fn exec_for(&self, limit: Duration, program: &str, args: &[&str]) -> Ran {
        let full = in_ns(&self.ns, program, args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run(limit, "ip", &refs)
    }

    /// Starts an app process in the pod, as root like an unmodified container.
    pub fn app(&mut self, name: &str, program: &str, args: &[&str]) {
        let proc = Proc::spawn(
            &format!("{}-{name}", self.ns),
            Path::new("ip"),
            &in_ns(&self.ns, program, args),
            &self.logs,
        );
        self.apps.push(proc);
    }

    /// `mycel-proxy init` in this pod, with any extra flags.
    pub fn init(&self, extra: &[&str]) -> Ran {
        let proxy = bin("mycel-proxy").display().to_string();
        let uid = PROXY_UID.to_string();
        let mut args = vec!["init", "--proxy-uid", &uid];
        args.extend_from_slice(extra);
        self.exec(&proxy, &args)
    }

    /// The pod's `nat` rules that mention Mycel, as `iptables-save` prints them.
    pub fn mycel_rules(&self) -> Vec<String> {
        let save = if super::have("iptables-nft-save") {
            "iptables-nft-save"
        } else {
            "iptables-save"
        };
        let r = self.exec(save, &["-t", "nat"]);
        assert!(r.ok, "{save}: {}", r.stderr);
        r.stdout
            .lines()
            .filter(|l| l.contains("MYCEL"))
            .map(str::to_string)
            .collect()
    }

    /// Installs the capture rules, then starts the sidecar as the proxy UID
    /// and waits until its admin port says ready.
    pub async fn start_sidecar(&mut self, node: &Node, spec: &PodSpec) {
        let r = self.init(&[]);
        assert!(r.ok, "mycel-proxy init: {}{}", r.stdout, r.stderr);
        let ip = self.ip.to_string();
        let token = match &spec.token_file {
            Some(t) => t.clone(),
            None => {
                let mut t = TokenFor::new(&spec.workload, &spec.namespace, &spec.service_account);
                t.labels = spec.labels.clone();
                t.addresses = vec![ip.clone()];
                node.token(&t)
            }
        };
        let proxy = ProxyArgs::new(&spec.workload, &spec.namespace, &spec.service_account)
            .controller(
                spec.controller.unwrap_or_else(|| node.grpc_addr()),
                &node.path("root.pem"),
                &token,
            )
            // The controller's certificate names `localhost`, not the bridge IP.
            .flag("--controller-name", "localhost")
            .address(self.ip.into(), spec.app_host.as_deref().unwrap_or(&ip))
            .admin(SocketAddr::from((Ipv4Addr::UNSPECIFIED, ADMIN_PORT)))
            .transparent(
                SocketAddr::from((self.ip, MESH_PORT)),
                SocketAddr::from((Ipv4Addr::LOCALHOST, OUTBOUND_CAPTURE_PORT)),
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, INBOUND_CAPTURE_PORT)),
                spec.mtls_mode,
            )
            .labels(&spec.labels)
            .app_ports(&spec.app_ports)
            .subscribe(&spec.subscribe)
            .extra(&spec.extra);
        let mut args: Vec<String> = vec![
            format!("--reuid={PROXY_UID}"),
            format!("--regid={PROXY_UID}"),
            "--clear-groups".into(),
            bin("mycel-proxy").display().to_string(),
        ];
        args.extend(proxy.into_vec());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(
            &format!("{}-sidecar", self.ns),
            Path::new("ip"),
            &in_ns(&self.ns, "setpriv", &refs),
            &self.logs,
        );
        self.sidecar = Some(proc);
        self.spiffe_id = Some(spiffe(&spec.namespace, &spec.service_account));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if self.admin("/ready").ok {
                return;
            }
            if let Some(p) = self.sidecar.as_mut() {
                p.assert_running();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "sidecar in {} not ready; log:\n{}",
            self.ns,
            self.sidecar.as_ref().map(Proc::log).unwrap_or_default()
        );
    }

    /// GET on the sidecar's admin port from inside the pod.
    pub fn admin(&self, path: &str) -> Ran {
        self.exec(
            "curl",
            &[
                "-sf",
                "-m",
                "3",
                &format!("http://127.0.0.1:{ADMIN_PORT}{path}"),
            ],
        )
    }

    /// The sidecar's metrics lines that contain every one of `parts`, summed.
    pub fn metric_sum(&self, name: &str, parts: &[&str]) -> u64 {
        let text = self.admin("/metrics").stdout;
        text.lines()
            .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn sidecar_log(&self) -> String {
        self.sidecar.as_ref().map(Proc::log).unwrap_or_default()
    }
}
