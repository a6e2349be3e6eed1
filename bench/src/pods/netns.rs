//! Network namespaces for the pod scenario, wired as on a Kubernetes node:
//! a node namespace holds a bridge (`br0`, [`NODE_IP`]/24) and each pod is
//! a namespace whose `eth0` is a veth with its other end on the bridge and
//! its default route through the node. Nothing is added to the machine's
//! own namespace.
//!
//! Namespaces are named `mycbench-<pid>-<n>-<role>`. [`Node`]'s drop ends
//! every process left in them and deletes them (veths and iptables rules
//! go with them), also on a panic or when the run is interrupted; a run
//! killed outright leaves them to the next run, which deletes those whose
//! process is gone ([`clean_stale`]).
//!
//! Written here rather than taken from `mycel-tests`' `netns` module: that
//! one is made for tests (it panics on any failed command, requires the
//! database and Redis tools of its suites, finds the debug binaries) and
//! brings the Kubernetes client crates into a release tool.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const PREFIX: &str = "mycbench-";
/// The node's address on the bridge; pods are 198.18.200.2 and up.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
/// Longest any one command may take.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {output}")]
    Command { cmd: String, output: String },
    #[error("no pod address left on the bridge")]
    Full,
}

/// Runs `program args` bounded by `timeout(1)`; its stdout, or the
/// command and its output as the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let secs = LIMIT.as_secs().to_string();
    let out = Command::new("timeout")
        .args(["--kill-after=2", &secs, program])
        .args(args)
        .output();
    let cmd = format!("{program} {}", args.join(" "));
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(NetnsError::Command {
            cmd,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_string(),
        }),
        Err(e) => Err(NetnsError::Command {
            cmd,
            output: e.to_string(),
        }),
    }
}

/// `ip netns exec <ns> <program> <args>` as `ip`'s arguments.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Vec<String> {
    ["netns", "exec", ns, program]
        .into_iter()
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// Runs a command inside `ns`.
pub fn exec(ns: &str, program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let full = in_ns(ns, program, args);
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    run("ip", &refs)
}

/// Whether this process runs as root (uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Why namespaces cannot be made here, or None: root, the tools the pods
/// use, and a namespace actually created and deleted.
pub fn missing_requirements() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces and iptables need it)".into());
    }
    let absent: Vec<&str> = ["ip", "iptables", "setpriv", "curl", "timeout"]
        .into_iter()
        .filter(|t| crate::setup::which(t).is_none())
        .collect();
    if !absent.is_empty() {
        return Some(format!("missing tools: {}", absent.join(", ")));
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let made = run("ip", &["netns", "add", &probe]);
    let _ = run("ip", &["netns", "del", &probe]);
    made.err()
        .map(|e| format!("cannot create a network namespace: {e}"))
}

/// Ends every process inside `ns` (TERM, then KILL after 2 s).
fn kill_all_in(ns: &str) {
    for signal in ["-TERM", "-KILL"] {
        let pids = run("ip", &["netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill").arg(signal).args(&pids).status();
        for _ in 0..100 {
            let left = run("ip", &["netns", "pids", ns]).unwrap_or_default();
            if left.trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Deletes `mycbench-<pid>-…` namespaces whose process no longer exists.
pub fn clean_stale() {
    let list = run("ip", &["netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            kill_all_in(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A pod's namespace and address.
#[derive(Clone, Debug)]
pub struct PodNs {
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// The node namespace with its bridge, and every pod namespace on it.
pub struct Node {
    pub ns: String,
    tag: String,
    next_ip: u8,
    /// Every namespace made, node first; deleted in reverse.
    namespaces: Vec<String>,
}

impl Node {
    /// Creates the node namespace and its bridge.
    pub fn new() -> Result<Node, NetnsError> {
        clean_stale();
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut node = Node {
            ns: format!("{tag}-node"),
            tag,
            next_ip: 2,
            namespaces: Vec::new(),
        };
        let ns = node.ns.clone();
        node.add_ns(&ns)?;
        node.ip(&["link", "add", "br0", "type", "bridge"])?;
        // A MAC of its own: a bridge without one takes the lowest of its
        // ports', which changes when a pod with a lower veth MAC joins; pods
        // that resolved the node (the controller) before then send to a MAC
        // the bridge no longer answers until their neighbour entry expires.
        node.ip(&["link", "set", "br0", "address", "02:00:c6:12:c8:01"])?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"])?;
        node.ip(&["link", "set", "br0", "up"])?;
        Ok(node)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), NetnsError> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// `ip -n <node> args`.
    fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A pod namespace wired to the bridge: `eth0` with the next free
    /// address, default route through the node.
    pub fn add_pod(&mut self, role: &str) -> Result<PodNs, NetnsError> {
        let n = self.next_ip;
        self.next_ip = n
            .checked_add(1)
            .filter(|&n| n < 255)
            .ok_or(NetnsError::Full)?;
        let ip = Ipv4Addr::new(198, 18, 200, n);
        let ns = format!("{}-{role}", self.tag);
        self.add_ns(&ns)?;
        let node_end = format!("veth{n}");
        self.ip(&[
            "link", "add", &node_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        self.ip(&["link", "set", &node_end, "master", "br0", "up"])?;
        let pod = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        pod(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        pod(&["link", "set", "eth0", "up"])?;
        pod(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
        Ok(PodNs { ns, ip })
    }
}

impl Drop for Node {
    /// Processes first (a process keeps its namespace and veth alive after
    /// `ip netns del`), then the namespaces.
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_all_in(ns);
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_a_namespace_go_through_ip_netns_exec() {
        assert_eq!(
            in_ns("mycbench-1-0-client", "curl", &["-sf", "http://x/"]),
            [
                "netns",
                "exec",
                "mycbench-1-0-client",
                "curl",
                "-sf",
                "http://x/"
            ]
        );
    }

    #[test]
    fn a_failed_command_names_itself_and_its_output() {
        let e = run("sh", &["-c", "echo nope >&2; exit 3"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sh -c") && text.contains("nope"), "{text}");
    }
}
