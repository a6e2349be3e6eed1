//! `mycelctl demo` for the suites that need a whole running shop: started
//! on a free block of ports, and what its banner says, parsed once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{bin, Proc};

/// How many ports from `--base-port` the demo uses (`cli/src/demo/plan.rs`).
pub const DEMO_SPAN: u16 = 90;

/// The longest a demo may take to print its banner on a loaded machine.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// `mycelctl demo` on ports from `base`, its data in `data`, its output in
/// `log_dir`, with `extra` arguments; not waited for.
pub fn spawn(name: &str, base: u16, data: &Path, log_dir: &Path, extra: &[&str]) -> Proc {
    // As root the demo runs PostgreSQL as the `postgres` user, which must
    // pass through the directory holding the data dir (a test's temporary
    // directory is 0700).
    if let Some(parent) = data.parent() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711));
    }
    let mut args = vec![
        "demo".to_string(),
        "--base-port".into(),
        base.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(name, &bin("mycelctl"), &args, log_dir)
}

/// A demo that is up, and the addresses its banner gave.
pub struct Demo {
    pub proc: Proc,
    pub banner: Banner,
}

/// What the ready banner names.
#[derive(Debug, Clone)]
pub struct Banner {
    /// The whole output up to and including the banner.
    pub text: String,
    pub gateway: SocketAddr,
    pub controller_admin: SocketAddr,
    /// (workload, admin address) of every proxy, the gateway's included.
    pub proxies: Vec<(String, SocketAddr)>,
}

impl Demo {
    /// A demo on a free block of ports with its data under `dir`, once
    /// ready.
    pub async fn start(name: &str, dir: &Path, extra: &[&str]) -> Demo {
        let base = crate::ports::free_block(DEMO_SPAN);
        let mut proc = spawn(name, base, &dir.join("demo-data"), dir, extra);
        let banner = Banner::wait(&mut proc).await;
        Demo { proc, banner }
    }

    pub fn gateway(&self) -> SocketAddr {
        self.banner.gateway
    }

    pub fn controller_admin(&self) -> SocketAddr {
        self.banner.controller_admin
    }
}

/// `http://host:port/...` → `host:port`.
fn url_addr(s: &str) -> Option<SocketAddr> {
    s.trim()
        .strip_prefix("http://")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

impl Banner {
    /// Waits until `demo` has printed its whole ready banner; panics with
    /// its output if it exits or takes longer than two minutes.
    pub async fn wait(demo: &mut Proc) -> Banner {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            demo.assert_running();
            let log = demo.log();
            if log.contains("Mycel demo is ready.") && log.contains("Proxy admin") {
                // The banner is written at once; give it a moment to be whole.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Banner::parse(&demo.log());
            }
            assert!(Instant::now() < deadline, "demo never became ready:\n{log}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn parse(log: &str) -> Banner {
        let gateway = log
            .lines()
            .find_map(|l| url_addr(l.trim().strip_prefix("gateway:")?))
            .unwrap_or_else(|| panic!("no gateway in the banner:\n{log}"));
        let controller_admin = log
            .lines()
            .filter(|l| l.contains("/metrics"))
            .find_map(|l| url_addr(l.trim().strip_prefix("curl ")?))
            .unwrap_or_else(|| panic!("no controller admin in the banner:\n{log}"));
        let proxies: Vec<(String, SocketAddr)> = log
            .lines()
            .skip_while(|l| !l.starts_with("Proxy admin"))
            .skip(1)
            .map_while(|l| {
                let mut parts = l.split_whitespace();
                let name = parts.next()?;
                Some((name.to_string(), url_addr(parts.next()?)?))
            })
            .collect();
        assert!(
            proxies.len() >= 6 && proxies.iter().any(|(n, _)| n == "gateway"),
            "proxies {proxies:?} from the banner:\n{log}"
        );
        Banner {
            text: log.to_string(),
            gateway,
            controller_admin,
            proxies,
        }
    }
}
