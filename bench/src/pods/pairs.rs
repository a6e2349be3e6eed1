//! One pod pair per configuration, all on the same node bridge: a server
//! pod running the nginx app, a client pod the load generator runs in, and
//! between them nothing (`direct`), the Mycel sidecars on the transparent
//! path (`mycel`), or an nginx or HAProxy proxy in each pod (`nginx-captured`:
//! the nginx pair with the client pod's traffic to the app redirected to
//! its nginx by iptables, as Mycel's is to its sidecar).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mycel_test_support::ProxyArgs;

use super::confs::{self, APP_PORT, BODY, FRONT_PORT};
use super::netns::{self, in_ns, Node, PodNs, NODE_IP};
use crate::child::ChildProc;
use crate::setup::mycel::Bins;
use crate::setup::{start_err, which, SetupError, Watched};

/// The configurations, in the order compared.
pub const CONFIGS: [&str; 6] = [
    "direct",
    "mycel",
    "nginx",
    "nginx-captured",
    "haproxy",
    "nginx-l4",
];
/// The service's VIP in the mesh config; only the client sidecar's capture
/// knows it.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 10);
pub const NAMESPACE: &str = "bench";
pub const PROXY_UID: u32 = 1337;
const CONTROLLER_GRPC: u16 = 15010;
const CONTROLLER_ADMIN: u16 = 15014;
pub const SIDECAR_ADMIN: u16 = 15000;

/// A started pod pair: where the client pod's load goes, and the proxy
/// processes to watch.
pub struct Pair {
    pub name: &'static str,
    pub client: PodNs,
    pub server: PodNs,
    /// Address and `Host` the load generator uses.
    pub addr: SocketAddr,
    pub authority: String,
    pub watched: Vec<Watched>,
    pub notes: Vec<String>,
    /// Stopped when the pair drops (before the node's namespaces).
    pub children: Vec<ChildProc>,
}

/// What every pair shares: the node, its files, the bulk file's size.
pub struct Ctx<'a> {
    pub node: &'a mut Node,
    pub dir: &'a Path,
    pub bins: Option<&'a Bins>,
    pub bulk_bytes: u64,
}

fn proxy_program(name: &str) -> Result<PathBuf, SetupError> {
    which(name).ok_or_else(|| {
        SetupError::Missing(format!(
            "{name} is not installed (bench/run.sh installs it: apt-get install -y nginx haproxy)"
        ))
    })
}

fn spawn_in(
    pod: &PodNs,
    name: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    logs: &Path,
) -> Result<ChildProc, SetupError> {
    let program = program.display().to_string();
    Ok(ChildProc::spawn(
        name,
        Path::new("ip"),
        &in_ns(&pod.ns, &program, args),
        env,
        logs,
    )?)
}

fn netns_err(e: netns::NetnsError) -> SetupError {
    start_err("network namespaces", e)
}

/// Writes `conf` to `<dir>/<file>`, has nginx or HAProxy check it, starts
/// it in `pod`.
fn start_configured(
    pod: &PodNs,
    tool: &str,
    file: &str,
    conf: String,
    dir: &Path,
) -> Result<ChildProc, SetupError> {
    let program = proxy_program(tool)?;
    let path = dir.join(file);
    std::fs::write(&path, conf)?;
    let path = path.display().to_string();
    let (check, run): (&[&str], &[&str]) = if tool == "nginx" {
        (&["-t", "-q", "-c"], &["-c"])
    } else {
        (&["-c", "-q", "-f"], &["-db", "-f"])
    };
    let mut check = check.to_vec();
    check.push(&path);
    netns::exec(&pod.ns, &program.display().to_string(), &check)
        .map_err(|e| start_err(format!("{tool} {file}"), e))?;
    let mut run = run.to_vec();
    run.push(&path);
    spawn_in(pod, &format!("{tool}-{file}"), &program, &run, &[], dir)
}

/// The server pod with the nginx app, and an empty client pod.
fn pods(ctx: &mut Ctx<'_>, name: &str) -> Result<(PodNs, PodNs, ChildProc), SetupError> {
    let server = ctx
        .node
        .add_pod(&format!("{name}-server"))
        .map_err(netns_err)?;
    let client = ctx
        .node
        .add_pod(&format!("{name}-client"))
        .map_err(netns_err)?;
    let dir = ctx.dir.join(format!("{name}-app"));
    std::fs::create_dir_all(&dir)?;
    // Sparse: reads as zeros, costs no disk.
    std::fs::File::create(dir.join("bulk"))?.set_len(ctx.bulk_bytes)?;
    let app = start_configured(&server, "nginx", "app.conf", confs::app(&dir), &dir)?;
    Ok((client, server, app))
}

/// Starts configuration `name`'s pods and waits until a request from the
/// client pod gets the app's answer.
pub async fn start(ctx: &mut Ctx<'_>, name: &'static str) -> Result<Pair, SetupError> {
    let (client, server, app) = pods(ctx, name)?;
    let mut pair = Pair {
        name,
        addr: SocketAddr::from((server.ip, APP_PORT)),
        authority: format!("{}:{APP_PORT}", server.ip),
        client,
        server,
        watched: Vec::new(),
        notes: Vec::new(),
        children: vec![app],
    };
    match name {
        "direct" => pair
            .notes
            .push("client pod → server pod's nginx, no proxy".into()),
        "mycel" => mycel(ctx, &mut pair).await?,
        "nginx" | "nginx-captured" | "haproxy" | "nginx-l4" => proxy_pair(ctx, &mut pair)?,
        other => {
            return Err(SetupError::Missing(format!(
                "unknown pod configuration {other:?} ({})",
                CONFIGS.join(", ")
            )))
        }
    }
    wait_answer(&mut pair).await?;
    Ok(pair)
}

/// An nginx or HAProxy in each pod: the client calls its own pod's proxy
/// on loopback (explicitly: no capture rules), which crosses to the
/// server pod's proxy over mTLS, which calls the app on loopback.
/// `nginx-l4` is the same with nginx's `stream` module: an L4 tunnel.
/// `nginx-captured` is the nginx pair called as the Mycel pair is: the
/// client calls the app's address and an iptables `REDIRECT` in its pod
/// hands the connection to the pod's nginx, so the two differ by the
/// capture's kernel cost (NAT, connection tracking) and nothing else.
fn proxy_pair(ctx: &mut Ctx<'_>, pair: &mut Pair) -> Result<(), SetupError> {
    let dir = ctx.dir.join(pair.name);
    std::fs::create_dir_all(&dir)?;
    let pki = crate::certs::write_pki(&dir)?;
    let ip = pair.server.ip;
    let (tool, server_conf, client_conf, note) = match pair.name {
        "nginx" | "nginx-captured" => (
            "nginx",
            confs::nginx_server(&dir, &pki, ip),
            confs::nginx_client(&dir, &pki, ip),
            if pair.name == "nginx" {
                "client → 127.0.0.1 nginx (client pod) → HTTP/1.1 over mTLS, keep-alive pool → nginx (server pod) → app; worker_processes auto"
            } else {
                "client → the app's address → iptables REDIRECT (client pod) → 127.0.0.1 nginx → HTTP/1.1 over mTLS, keep-alive pool → nginx (server pod) → app; as `nginx` plus the capture"
            },
        ),
        "nginx-l4" => (
            "nginx",
            confs::nginx_l4_server(&dir, &pki, ip),
            confs::nginx_l4_client(&dir, &pki, ip),
            "client → 127.0.0.1 nginx stream (client pod) → the same bytes over mTLS, one TLS connection per client connection → nginx stream (server pod) → app; no HTTP parsing; worker_processes auto",
        ),
        _ => (
            "haproxy",
            confs::haproxy_server(&pki, ip),
            confs::haproxy_client(&pki, ip),
            "client → 127.0.0.1 HAProxy (client pod) → HTTP/2 over mTLS → HAProxy (server pod) → app; nbthread 2",
        ),
    };
    let server = start_configured(&pair.server, tool, "server.conf", server_conf, &dir)?;
    let client = start_configured(&pair.client, tool, "client.conf", client_conf, &dir)?;
    pair.watched = vec![
        Watched {
            role: "client pod",
            pid: client.pid().unwrap_or(0),
        },
        Watched {
            role: "server pod",
            pid: server.pid().unwrap_or(0),
        },
    ];
    pair.children.push(server);
    pair.children.push(client);
    pair.addr = SocketAddr::from(([127, 0, 0, 1], FRONT_PORT));
    if pair.name == "nginx-captured" {
        let (ip, app, front) = (ip.to_string(), APP_PORT.to_string(), FRONT_PORT.to_string());
        netns::exec(
            &pair.client.ns,
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                &ip,
                "--dport",
                &app,
                "-j",
                "REDIRECT",
                "--to-ports",
                &front,
            ],
        )
        .map_err(|e| start_err("iptables REDIRECT in the client pod", e))?;
        pair.addr = SocketAddr::from((pair.server.ip, APP_PORT));
    }
    pair.notes.push(note.into());
    Ok(())
}

/// Connections the client pod's `REDIRECT` rule handed to its proxy (the
/// NAT table sees only each connection's first packet), so a run that
/// went around the proxy is caught.
pub fn redirected_connections(pair: &Pair) -> Result<u64, SetupError> {
    let out = netns::exec(
        &pair.client.ns,
        "iptables",
        &["-t", "nat", "-L", "OUTPUT", "-n", "-v", "-x"],
    )
    .map_err(netns_err)?;
    Ok(out
        .lines()
        .filter(|l| l.contains("REDIRECT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// The transparent path as in Kubernetes: `mycel-proxy init` programs each
/// pod's iptables, the sidecars run as [`PROXY_UID`] with the transparent
/// listeners, the controller (in the node namespace) reads a mesh config
/// naming the app's Service with [`VIP`]; the client calls the VIP.
async fn mycel(ctx: &mut Ctx<'_>, pair: &mut Pair) -> Result<(), SetupError> {
    let bins = ctx.bins.ok_or_else(|| {
        SetupError::Missing("the Mycel binaries are missing (see --bin-dir)".into())
    })?;
    let dir = ctx.dir.join("mycel");
    std::fs::create_dir_all(&dir)?;
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, confs::mesh_yaml(NAMESPACE, VIP))?;
    let data = dir.join("data");
    let grpc = SocketAddr::from((NODE_IP, CONTROLLER_GRPC));
    let admin = SocketAddr::from((NODE_IP, CONTROLLER_ADMIN));
    let node_pod = PodNs {
        ns: ctx.node.ns.clone(),
        ip: NODE_IP,
    };
    let controller = spawn_in(
        &node_pod,
        "controller",
        &bins.controller,
        &[
            "--data-dir",
            &data.display().to_string(),
            "--grpc-addr",
            &grpc.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--mesh-config",
            &mesh.display().to_string(),
        ],
        &[("MYCEL_LOG", "warn")],
        &dir,
    )?;
    pair.children.push(controller);
    wait_curl(&node_pod, &format!("http://{admin}/ready"), pair, |_| true).await?;
    // The sidecars run as their own UID: root and tokens readable by it.
    let root = dir.join("root.pem");
    std::fs::copy(data.join("ca").join("root.pem"), &root)?;
    set_mode(&dir, 0o755)?;
    set_mode(&root, 0o644)?;

    let server_args = ProxyArgs::new("backend-0", NAMESPACE, "backend")
        .labels(&[("app".into(), "backend".into())])
        .app_ports(&[format!("http:{APP_PORT}")]);
    let server = sidecar(
        bins,
        &dir,
        grpc,
        &root,
        &pair.server,
        server_args,
        "backend",
    )
    .await?;
    pair.children.push(server);
    let listed = |body: &str| registered_ready(body, "backend-0");
    wait_curl(
        &node_pod,
        &format!("http://{admin}/debug/proxies"),
        pair,
        listed,
    )
    .await?;
    let client_args = ProxyArgs::new("client-0", NAMESPACE, "client")
        .subscribe(&[format!("backend.{NAMESPACE}")]);
    let client = sidecar(bins, &dir, grpc, &root, &pair.client, client_args, "client").await?;
    pair.children.push(client);
    let n = pair.children.len();
    pair.watched = vec![
        Watched {
            role: "client pod",
            pid: pair.children[n - 1].pid().unwrap_or(0),
        },
        Watched {
            role: "server pod",
            pid: pair.children[n - 2].pid().unwrap_or(0),
        },
    ];
    pair.addr = SocketAddr::from((VIP, 80));
    pair.authority = format!("backend.{NAMESPACE}");
    pair.notes.push(format!(
        "client → {VIP}:80 (the Service VIP) → iptables REDIRECT → client sidecar → HTTP/2 over mTLS → server sidecar's mesh port → app on loopback; `mycel-proxy init` in both pods, sidecars as UID {PROXY_UID}, 1 worker thread (the sidecar default)"
    ));
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `mycel-proxy init` in `pod`, then the sidecar as [`PROXY_UID`] with the
/// transparent listeners; waits until its admin port says ready.
async fn sidecar(
    bins: &Bins,
    dir: &Path,
    grpc: SocketAddr,
    root: &Path,
    pod: &PodNs,
    args: ProxyArgs,
    sa: &str,
) -> Result<ChildProc, SetupError> {
    let proxy = bins.proxy.display().to_string();
    let uid = PROXY_UID.to_string();
    netns::exec(&pod.ns, &proxy, &["init", "--proxy-uid", &uid])
        .map_err(|e| start_err(format!("mycel-proxy init in {}", pod.ns), e))?;
    let mut cmd = std::process::Command::new(&bins.ctl);
    cmd.args(["token", "create", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--namespace", NAMESPACE, "--service-account", sa])
        .args(["--address", &pod.ip.to_string()]);
    if sa == "backend" {
        cmd.args(["--label", "app=backend"]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(start_err(
            "mycelctl token create",
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    let token = dir.join(format!("{sa}.token"));
    std::fs::write(&token, String::from_utf8_lossy(&out.stdout).trim())?;
    set_mode(&token, 0o644)?;
    let args = args
        .controller(grpc, root, &token)
        // The controller's certificate names `localhost`, not its address.
        .flag("--controller-name", "localhost")
        .address(pod.ip.into(), "127.0.0.1")
        .admin(SocketAddr::from(([0, 0, 0, 0], SIDECAR_ADMIN)))
        .transparent(
            SocketAddr::from((pod.ip, 15006)),
            SocketAddr::from(([127, 0, 0, 1], 15001)),
            SocketAddr::from(([0, 0, 0, 0], 15008)),
            "strict",
        );
    let mut full: Vec<String> = vec![
        format!("--reuid={PROXY_UID}"),
        format!("--regid={PROXY_UID}"),
        "--clear-groups".into(),
        proxy,
    ];
    full.extend(args.into_vec());
    full.extend(crate::extra_proxy_args());
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let setpriv = which("setpriv").unwrap_or_else(|| "setpriv".into());
    let mut child = spawn_in(
        pod,
        &format!("sidecar-{sa}"),
        &setpriv,
        &refs,
        &[("MYCEL_LOG", "warn")],
        dir,
    )?;
    let url = format!("http://127.0.0.1:{SIDECAR_ADMIN}/ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.exited() {
            break;
        }
        if netns::exec(&pod.ns, "curl", &["-sf", "-m", "2", &url]).is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(start_err(
        format!("sidecar in {}", pod.ns),
        format!("not ready within 20 s; log:\n{}", child.log_tail()),
    ))
}

/// Polls `url` with curl inside `pod` until it answers 2xx with a body
/// `done` accepts, failing early when one of the pair's processes exits.
async fn wait_curl(
    pod: &PodNs,
    url: &str,
    pair: &mut Pair,
    done: impl Fn(&str) -> bool,
) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(i) = pair.children.iter_mut().position(|c| c.exited()) {
            let dead = &pair.children[i];
            return Err(start_err(
                &dead.name,
                format!("exited; log:\n{}", dead.log_tail()),
            ));
        }
        match netns::exec(&pod.ns, "curl", &["-sf", "-m", "2", url]) {
            Ok(body) if done(&body) => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(start_err(url, format!("not ready within 20 s: {last}")))
}

fn registered_ready(body: &str, workload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v.as_array().is_some_and(|all| {
            all.iter()
                .any(|p| p["workload"] == workload && p["registered"] == true && p["ready"] == true)
        })
    })
}

/// Waits until `curl` from the client pod to the pair's address gets the
/// app's 17-byte answer, so measuring starts on a working path.
async fn wait_answer(pair: &mut Pair) -> Result<(), SetupError> {
    let url = format!("http://{}/", pair.addr);
    let host = format!("Host: {}", pair.authority);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(i) = pair.children.iter_mut().position(|c| c.exited()) {
            let dead = &pair.children[i];
            return Err(start_err(
                format!("{} ({})", pair.name, dead.name),
                format!("exited; log:\n{}", dead.log_tail()),
            ));
        }
        match netns::exec(
            &pair.client.ns,
            "curl",
            &["-sS", "-m", "2", "-H", &host, &url],
        ) {
            Ok(body) if body == BODY => return Ok(()),
            Ok(body) => last = format!("answered {body:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: String = pair
        .children
        .iter()
        .map(|c| format!("--- {}\n{}\n", c.name, c.log_tail()))
        .collect();
    Err(start_err(
        pair.name,
        format!("no answer from the client pod within 20 s: {last}\n{logs}"),
    ))
}
