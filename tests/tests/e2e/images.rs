//! The container images from `images/build.sh`, run with docker as a user
//! and a kubelet would: each image runs its binary as non-root with nothing
//! else in it (no shell, no package manager); the proxy image's iptables
//! works, and `mycel-proxy init` from it installs the capture rules in a
//! network namespace shared with a running proxy, as in a pod; the proxy
//! in a container (read-only root, no capabilities) becomes ready, and its
//! idle memory there is measured.
//!
//! The test runs `images/build.sh` itself (once per test process), so it
//! never tests images older than the checkout; `tests/run.sh` builds them
//! before the suites, and then this build only finds nothing to do.
//! Without docker (or apt-get, which the proxy's root filesystem comes
//! from) the tests skip and say why; CI (`MYCEL_REQUIRE_ALL=1`) fails.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mycel_test_support::{ProxyArgs, TestCa};
use mycel_tests::mesh::registered_ready;
use mycel_tests::{http, skip};

const PROXY_UID: u32 = 1337;
const CONTROLLER_UID: u32 = 65532;
/// Marks the containers these tests start, with the test process's PID, so
/// a later run removes those of a run that was killed.
const LABEL: &str = "mycel.test=images";
const PID_LABEL: &str = "mycel.test.pid";
/// Idle proxies measure about 10 MB outside a container
/// (docs/benchmarks.md); far more means the image's binary is not the lean
/// static build.
const IDLE_RSS_LIMIT_KB: u64 = 32 * 1024;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What `images/build.sh` tags by default: the workspace version.
fn workspace_version() -> String {
    let toml = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let section = toml
        .split("[workspace.package]")
        .nth(1)
        .expect("Cargo.toml has [workspace.package]");
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("[workspace.package] has a version")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn docker(args: &[&str]) -> Output {
    run("docker", args)
}

/// `docker args…` that must succeed; its stdout.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

enum Build {
    /// Why this machine cannot build or run the images.
    Missing(String),
    Failed(String),
    Built {
        tag: String,
    },
}

/// Runs `images/build.sh` once per test process; later callers get its result.
fn build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| {
        if !have("docker") {
            return Build::Missing(
                "docker is not installed (tests/docker/ensure-dockerd.sh installs it)".into(),
            );
        }
        let info = docker(&["info"]);
        if !info.status.success() {
            return Build::Missing(format!(
                "the docker daemon is not reachable (tests/docker/ensure-dockerd.sh starts it): {}",
                String::from_utf8_lossy(&info.stderr).trim()
            ));
        }
        for tool in ["apt-get", "dpkg-deb"] {
            if !have(tool) {
                return Build::Missing(format!(
                    "{tool} is missing: the proxy image's iptables comes from Debian packages"
                ));
            }
        }
        remove_stale_containers();
        let script = workspace().join("images/build.sh");
        let out = run(script.to_str().expect("a UTF-8 path"), &[]);
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("images/build.sh:\n{log}");
        if out.status.success() {
            Build::Built {
                tag: workspace_version(),
            }
        } else {
            Build::Failed(format!("images/build.sh failed ({}):\n{log}", out.status))
        }
    })
}

/// The tag to test, or None when the test must skip (reported).
fn images() -> Option<String> {
    match build() {
        Build::Missing(why) => {
            skip::require(why, false);
            None
        }
        Build::Failed(log) => panic!("{log}"),
        Build::Built { tag } => Some(tag.clone()),
    }
}

fn remove_stale_containers() {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
    ]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(id), pid) = (words.next(), words.next()) else {
            continue;
        };
        let alive = pid.is_some_and(|p| Path::new("/proc").join(p).exists());
        if !alive {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// How the shop's pods run a container: read-only root, no capabilities,
/// no privilege escalation, the image's own UID; on the host's network so
/// the test reaches it on loopback.
const LOCKED_DOWN_ON_HOST_NETWORK: [&str; 7] = [
    "--network",
    "host",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// A container started detached; removed when dropped, also when the test
/// panics.
struct Container {
    id: String,
}

impl Container {
    fn start(options: &[&str], image: &str, args: &[String]) -> Container {
        let pid_label = format!("{PID_LABEL}={}", std::process::id());
        let mut all = vec!["run", "-d", "--label", LABEL, "--label", &pid_label];
        all.extend_from_slice(options);
        all.push(image);
        all.extend(args.iter().map(String::as_str));
        let id = docker_ok(&all).trim().to_string();
        Container { id }
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.id])
            .trim()
            .to_string()
    }

    fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The container's main process as the host sees it.
    fn host_pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// Regular files and links of the image's filesystem, without what docker
/// itself puts into every container (/etc/hosts, /dev, /proc, ...).
fn image_files(image: &str) -> Vec<String> {
    let pid_label = format!("{PID_LABEL}={}", std::process::id());
    let id = docker_ok(&["create", "--label", LABEL, "--label", &pid_label, image])
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("fs.tar");
    let exported = docker(&["export", "-o", tar.to_str().unwrap(), &id]);
    let _ = docker(&["rm", "-f", &id]);
    assert!(
        exported.status.success(),
        "docker export of {image}: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let listing = run("tar", &["-tvf", tar.to_str().unwrap()]);
    assert!(listing.status.success(), "tar -t of {image}'s export");
    let docker_made = [
        ".dockerenv",
        "etc/hostname",
        "etc/hosts",
        "etc/mtab",
        "etc/resolv.conf",
    ];
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        // `-rwxr-xr-x 0/0 123 2026-01-01 00:00 usr/local/bin/x`, links with
        // ` -> target` after the name.
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .filter(|name| {
            !docker_made.contains(&name.as_str())
                && !["dev/", "proc/", "sys/"]
                    .iter()
                    .any(|p| name.starts_with(p))
        })
        .collect()
}

fn user_of(image: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", image])
        .trim()
        .to_string()
}

#[test]
fn each_image_is_its_static_binary_run_as_non_root() {
    let Some(tag) = images() else { return };
    // The chart deploys appVersion when no tag is given: it must be the tag
    // images/build.sh builds.
    let chart = std::fs::read_to_string(workspace().join("helm/mycel/Chart.yaml")).unwrap();
    assert!(
        chart
            .lines()
            .any(|l| l.trim() == format!("appVersion: \"{tag}\"")),
        "helm/mycel/Chart.yaml's appVersion is not the workspace version {tag}"
    );

    let cases = [
        (
            "controller",
            "mycel-controller",
            CONTROLLER_UID,
            "--version",
        ),
        ("proxy", "mycel-proxy", PROXY_UID, "--version"),
        ("demo", "mycel-demo", CONTROLLER_UID, "--help"),
    ];
    for (name, binary, uid, flag) in cases {
        let image = format!("mycel-{name}:{tag}");
        assert_eq!(user_of(&image), format!("{uid}:{uid}"), "{image}'s user");
        let out = docker_ok(&["run", "--rm", "--network", "none", &image, flag]);
        let expected = if flag == "--version" {
            format!("{binary} {tag}")
        } else {
            binary.to_string()
        };
        assert!(
            out.contains(&expected),
            "{image} {flag} printed {out:?}, not {expected:?}"
        );

        // No shell to exec into, no package manager to add one.
        let shell = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "true",
        ]);
        assert!(!shell.status.success(), "{image} has a /bin/sh");
        let files = image_files(&image);
        let forbidden = [
            "sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg", "rpm", "apk", "perl",
            "python3",
        ];
        for f in &files {
            let base = f.rsplit('/').next().unwrap_or(f);
            assert!(
                !forbidden.contains(&base),
                "{image} contains {f}: {files:?}"
            );
        }
        let binary_path = format!("usr/local/bin/{binary}");
        if name == "proxy" {
            assert!(files.contains(&binary_path), "{image}: {files:?}");
        } else {
            // FROM scratch and one COPY: the binary is all there is.
            assert_eq!(files, vec![binary_path], "{image}'s files");
        }
    }
}

#[test]
fn proxy_image_iptables_and_init_in_a_shared_network_namespace() {
    let Some(tag) = images() else { return };
    let image = format!("mycel-proxy:{tag}");
    for tool in ["iptables-restore", "iptables-save"] {
        let out = docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            tool,
            &image,
            "--version",
        ]);
        assert!(
            out.contains("v1.8") && out.contains("nf_tables"),
            "{tool} --version in {image}: {out:?}"
        );
    }

    // A pod: a running proxy holds the network namespace (docker's
    // `--network none` makes a fresh one with loopback), and the init
    // container joins it, root with NET_ADMIN and NET_RAW only, as the
    // injector asks (inject/src/containers.rs).
    let dir = static_config();
    let holder = Container::start(
        &[
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "-v",
            &format!("{}:/etc/mycel:ro", dir.path().display()),
        ],
        &image,
        &proxy_args(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 15006)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 15001)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
        ),
    );
    let pod_net = format!("container:{}", holder.id);
    let as_init = [
        "run",
        "--rm",
        "--network",
        &pod_net,
        "--user",
        "0:0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
    ];
    let mut init = as_init.to_vec();
    init.extend([
        image.as_str(),
        "init",
        "--proxy-uid=1337",
        "--outbound-capture-port=15001",
        "--inbound-capture-port=15008",
        "--mesh-port=15006",
        "--admin-port=15000",
    ]);
    let out = docker(&init);
    assert!(
        out.status.success(),
        "mycel-proxy init in {image} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut save = as_init.to_vec();
    save.extend(["--entrypoint", "iptables-save", image.as_str(), "-t", "nat"]);
    let rules = docker_ok(&save);
    for expected in [
        ":MYCEL_OUTPUT",
        ":MYCEL_INBOUND",
        "--uid-owner 1337",
        "--to-ports 15001",
        "--to-ports 15008",
    ] {
        assert!(
            rules.contains(expected),
            "no {expected:?} in the pod's nat table:\n{rules}"
        );
    }
    assert_eq!(
        holder.inspect("{{.State.Running}}"),
        "true",
        "the proxy holding the namespace stopped:\n{}",
        holder.logs()
    );
}

#[tokio::test]
async fn proxy_in_a_container_becomes_ready_and_its_idle_memory_is_small() {
    let Some(tag) = images() else { return };
    let image = format!("mycel-proxy:{tag}");
    let [inbound, outbound, admin] = [0; 3].map(|_| free_loopback_port());
    let dir = static_config();
    // As the injector runs the sidecar: read-only root, no capabilities, no
    // privilege escalation, the image's own UID. Host network, so the test
    // reaches the admin port on loopback.
    let config = format!("{}:/etc/mycel:ro", dir.path().display());
    let proxy = Container::start(
        &[&LOCKED_DOWN_ON_HOST_NETWORK[..], &["-v", &config]].concat(),
        &image,
        &proxy_args(inbound, outbound, admin),
    );
    if let Err(e) = http::wait_ok(admin, "/ready", Duration::from_secs(30)).await {
        panic!("the proxy in {image} is not ready: {e:#}\n{}", proxy.logs());
    }
    // Idle: ready, nothing asked of it since.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = proxy.host_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("Uid:"), PROXY_UID.to_string(), "the proxy's UID");
    let rss_kb: u64 = field("VmRSS:").parse().unwrap();
    let cgroup = cgroup_memory(pid);
    eprintln!(
        "mycel-proxy:{tag} idle in a container: VmRSS {:.1} MB; cgroup {}",
        rss_kb as f64 * 1024.0 / 1e6,
        cgroup.as_deref().unwrap_or("memory not readable")
    );
    assert!(
        rss_kb < IDLE_RSS_LIMIT_KB,
        "idle proxy RSS {rss_kb} kB in the container"
    );
    assert_eq!(proxy.inspect("{{.State.Running}}"), "true");
}

/// The container's memory cgroup figures (v1 or v2), for the report.
fn cgroup_memory(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let read = |path: PathBuf| -> Option<f64> {
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.trim().parse::<f64>().ok()? / 1e6)
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path);
            let usage = read(dir.join("memory.usage_in_bytes"))?;
            let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
            let rss = stat
                .lines()
                .find_map(|l| l.strip_prefix("total_rss "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0.0, |b| b / 1e6);
            return Some(format!(
                "v1 usage {usage:.1} MB (rss {rss:.1} MB, the rest page cache)"
            ));
        }
        if controllers.is_empty() {
            let current = read(
                Path::new("/sys/fs/cgroup")
                    .join(path)
                    .join("memory.current"),
            )?;
            return Some(format!("v2 memory.current {current:.1} MB"));
        }
    }
    None
}

fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

fn proxy_args(inbound: SocketAddr, outbound: SocketAddr, admin: SocketAddr) -> Vec<String> {
    ProxyArgs::new("probe", "images", "probe")
        .flag("--static-config", "/etc/mycel/static.yaml")
        .explicit(inbound, outbound)
        .admin(admin)
        .into_vec()
}

/// A static config (no controller needed) with a certificate of the test
/// CA, readable by the proxy's UID through a read-only bind mount.
fn static_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("images");
    let leaf = ca.leaf("spiffe://cluster.local/ns/images/sa/probe");
    std::fs::write(dir.path().join("chain.pem"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(dir.path().join("bundle.pem"), ca.root_pem()).unwrap();
    // No services: readiness needs only the identity.
    let yaml = "identity:\n  cert: chain.pem\n  key: key.pem\n  bundle: bundle.pem\nservices: []\n";
    std::fs::write(dir.path().join("static.yaml"), yaml).unwrap();
    readable_by_all(dir.path());
    dir
}

/// The two images together, as in a cluster: the controller container makes
/// its CA and serves on the host's loopback; a join token comes from the
/// controller image's own `token create`; the proxy container finds the
/// controller by its in-cluster name (mapped to 127.0.0.1 in the
/// container's /etc/hosts, so the static binary's name lookup is exercised),
/// checks its certificate against that name, gets its own certificate and
/// becomes ready.
#[tokio::test]
async fn proxy_container_gets_its_certificate_from_the_controller_container() {
    let Some(tag) = images() else { return };
    let controller_image = format!("mycel-controller:{tag}");
    let proxy_image = format!("mycel-proxy:{tag}");
    let data = tempfile::tempdir().unwrap();
    // The controller's UID owns its data directory, as fsGroup does in the
    // chart.
    std::os::unix::fs::chown(data.path(), Some(CONTROLLER_UID), Some(CONTROLLER_UID)).unwrap();
    let data_mount = format!("{}:/var/lib/mycel", data.path().display());
    let [grpc, controller_admin, inbound, outbound, admin] = [0; 5].map(|_| free_loopback_port());
    let controller = Container::start(
        &[
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "-v",
            &data_mount,
        ],
        &controller_image,
        &[
            "--data-dir=/var/lib/mycel".to_string(),
            format!("--grpc-addr={grpc}"),
            format!("--admin-addr={controller_admin}"),
        ],
    );
    if let Err(e) = http::wait_ok(controller_admin, "/ready", Duration::from_secs(30)).await {
        panic!(
            "the controller in {controller_image} is not ready: {e:#}\n{}",
            controller.logs()
        );
    }
    let token = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &data_mount,
        &controller_image,
        "token",
        "create",
        "--data-dir=/var/lib/mycel",
        "--namespace=images",
        "--service-account=probe",
    ]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token.trim()).unwrap();
    std::fs::copy(data.path().join("ca/root.pem"), dir.path().join("root.pem")).unwrap();
    readable_by_all(dir.path());
    let name = "mycel-controller.mycel-system.svc";
    let args = ProxyArgs::new("probe", "images", "probe")
        .flag("--controller", format!("{name}:{}", grpc.port()))
        .flag("--ca-root", "/etc/mycel/root.pem")
        .flag("--token-file", "/etc/mycel/token")
        .explicit(inbound, outbound)
        .admin(admin)
        .into_vec();
    let proxy = Container::start(
        &[
            "--network",
            "host",
            "--add-host",
            &format!("{name}:127.0.0.1"),
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &format!("{}:/etc/mycel:ro", dir.path().display()),
        ],
        &proxy_image,
        &args,
    );
    if let Err(e) = http::wait_ok(admin, "/ready", Duration::from_secs(30)).await {
        panic!(
            "the proxy in {proxy_image} did not get ready from the controller: {e:#}\nproxy:\n{}\ncontroller:\n{}",
            proxy.logs(),
            controller.logs()
        );
    }
    // Registration follows the certificate; give it a moment.
    let mut proxies = String::new();
    for _ in 0..100 {
        proxies = http::get(controller_admin, "localhost", "/debug/proxies")
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        if registered_ready(&proxies, "probe") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the controller does not list the proxy registered and ready: {proxies}");
}

/// Files made by the test (root) readable by the containers' non-root UIDs:
/// throwaway test keys and tokens only.
fn readable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Reads from `addr` until `want` shows up in what came back (after
/// sending `hello`), or gives up after `limit`: what the server said.
fn server_says(
    addr: SocketAddr,
    hello: &[u8],
    want: &str,
    limit: Duration,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + limit;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            if conn.write_all(hello).is_ok() {
                let mut buf = [0u8; 512];
                if let Ok(n) = conn.read(&mut buf) {
                    last = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if last.contains(want) {
                        return Ok(last);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// The demo's stores image runs each store as the shop's pods do: not as
/// root, read-only root filesystem, no capabilities, data on a writable
/// mount; each server answers its own protocol, and the image's only
/// shell is the one initdb needs.
#[test]
fn the_stores_image_serves_postgres_redis_and_nats_as_a_non_root_user() {
    let Some(tag) = images() else { return };
    let image = format!("mycel-demo-stores:{tag}");
    assert_eq!(user_of(&image), "999:999", "{image}'s user");
    let files = image_files(&image);
    for want in [
        "usr/local/bin/mycel-demo",
        "usr/sbin/nats-server",
        "usr/bin/redis-server",
        "bin/sh",
    ] {
        assert!(files.iter().any(|f| f == want), "{image} lacks {want}");
    }
    for f in &files {
        let base = f.rsplit('/').next().unwrap_or(f);
        assert!(
            !["bash", "apt", "apt-get", "dpkg", "perl", "python3"].contains(&base),
            "{image} contains {f}"
        );
    }
    // (kind, what to send, what the server answers)
    let cases: [(&str, &[u8], &str); 3] = [
        // A PostgreSQL SSLRequest: the server answers one byte, N (no TLS).
        ("postgres", &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "N"),
        ("redis", b"PING\r\n", "+PONG"),
        ("nats", b"", "INFO {"),
    ];
    for (kind, hello, want) in cases {
        let addr = free_loopback_port();
        let writable = ["--tmpfs", "/data:mode=1777", "--tmpfs", "/tmp:mode=1777"];
        let store = Container::start(
            &[&LOCKED_DOWN_ON_HOST_NETWORK[..], &writable].concat(),
            &image,
            &[
                "store".to_string(),
                kind.to_string(),
                format!("--dir=/data/{kind}"),
                format!("--listen={addr}"),
            ],
        );
        if let Err(last) = server_says(addr, hello, want, Duration::from_secs(60)) {
            panic!(
                "{kind} in {image} did not answer {want:?} on {addr} (last: {last:?}):\n{}",
                store.logs()
            );
        }
    }
}
