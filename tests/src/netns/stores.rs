//! The demo's stores as pods, and Service names for pods: a
//! `mycel-demo store` in a pod of its own, listening on the pod's loopback
//! (the demo's PostgreSQL trusts only loopback clients; the sidecar
//! reaches its app there, as in a real pod), stopped with SIGTERM when
//! dropped so that its server (a child of it) never outlives the test; and
//! an `/etc/hosts` per pod, which `ip netns exec` puts in place of the
//! host's, so that apps look Service names up at each connection as in a
//! cluster.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Node, Pod, PodSpec, PREFIX};
use crate::process::bin;
use crate::stores::{def, StoreDef, STORE_LIMIT};

/// Where `ip netns exec` finds a namespace's own `/etc` files.
const NETNS_ETC: &str = "/etc/netns";

/// A pod running one of the demo's stores (see [`crate::stores::STORES`]).
pub struct StorePod {
    pub def: &'static StoreDef,
    pub pod: Pod,
}

impl StorePod {
    /// A pod named after the store, running `mycel-demo store <kind>` on
    /// 127.0.0.1 at the store's port with its data in `<root>/<name>`
    /// (every parent of `root` must be searchable by others: PostgreSQL
    /// runs as its own user). Returns at once; see [`StorePod::wait_listening`].
    pub fn start(node: &mut Node, name: &str, root: &Path) -> StorePod {
        let def = def(name);
        let mut pod = Pod::new(node, name);
        let demo = bin("mycel-demo").display().to_string();
        let dir = root.join(name).display().to_string();
        let listen = format!("127.0.0.1:{}", def.port);
        pod.app(
            "store",
            &demo,
            &["store", def.kind, "--listen", &listen, "--dir", &dir],
        );
        StorePod { def, pod }
    }

    /// The sidecar's spec: the store's workload, service account and `app`
    /// label, its port declared TCP, its app on loopback.
    pub fn spec(&self) -> PodSpec {
        PodSpec::new(self.def.name)
            .app_host("127.0.0.1")
            .app_port(&format!("{}:{}:tcp", self.def.kind, self.def.port))
    }

    /// Waits until the store accepts connections in its pod.
    pub async fn wait_listening(&mut self) {
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{}", self.def.port);
        let deadline = tokio::time::Instant::now() + STORE_LIMIT;
        while !self.pod.exec("bash", &["-c", &probe]).ok {
            for app in &mut self.pod.apps {
                app.assert_running();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not listening within {STORE_LIMIT:?}:\n{}",
                self.def.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The store's log.
    pub fn log(&self) -> String {
        self.pod.apps.first().map(|p| p.log()).unwrap_or_default()
    }
}

impl Drop for StorePod {
    fn drop(&mut self) {
        // SIGTERM, which the store passes on to its server; the pod's
        // SIGKILL on drop would leave the server running.
        let pids: Vec<u32> = self.pod.apps.iter().filter_map(|p| p.pid()).collect();
        for app in &self.pod.apps {
            app.signal(Signal::SIGTERM as i32);
        }
        // Blocking, bounded: dropping cannot await, and the server must be
        // gone before the node's directory is.
        let deadline = std::time::Instant::now() + STORE_LIMIT;
        while pids.iter().any(|p| running(*p)) && std::time::Instant::now() < deadline {
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

/// An `/etc/hosts` of a pod's own, removed when dropped; commands started
/// in the pod afterwards (`ip netns exec` bind-mounts it) see it.
pub struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    /// Writes `/etc/netns/<pod's namespace>/hosts`: localhost, then each
    /// `(VIP, names)`.
    pub fn write(pod: &Pod, entries: &[(Ipv4Addr, Vec<String>)]) -> Hosts {
        clean_stale();
        let dir = Path::new(NETNS_ETC).join(&pod.ns);
        std::fs::create_dir_all(&dir).expect("make /etc/netns/<pod>");
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (ip, names) in entries {
            text.push_str(&format!("{ip} {}\n", names.join(" ")));
        }
        std::fs::write(dir.join("hosts"), text).expect("write the pod's hosts");
        Hosts { dir }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes `/etc/netns/mycnet-<pid>-…` of test processes that are gone.
fn clean_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_ETC) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
