//! `mycelctl demo`: the whole mesh on loopback. Checks binaries and ports
//! before starting anything, then starts the controller, mints tokens,
//! starts every app beside its sidecar and the gateway, waits until a
//! request through the gateway works, and supervises until Ctrl-C/SIGTERM
//! or until a child dies (reported with its log, and a non-zero exit).

pub mod jwt;
pub mod plan;
pub mod supervise;
pub mod wait;
pub mod web_tls;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use mycel_tokens::TokenSpec;
use plan::{DemoPlan, Paths};
use supervise::{Exited, Supervisor};

/// How long children get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
const CONTROLLER: &str = "mycel-controller";
const PROXY: &str = "mycel-proxy";
const DEMO: &str = "mycel-demo";

pub struct DemoArgs {
    pub base_port: u16,
    /// Run no stores: every service keeps its data in memory.
    pub in_memory: bool,
    pub data_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub ready_timeout: Duration,
    pub faults: plan::Faults,
    pub traces: Traces,
}

/// Where the mesh's spans go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Traces {
    /// A receiver inside mycelctl, on the plan's trace port, showing the
    /// latest traces at `/traces`.
    Builtin,
    /// An OTLP collector of the user's.
    Endpoint {
        url: String,
        protocol: String,
    },
    Off,
}

/// Spans are sent soon after a request, so a trace shows while the user
/// still looks at the page.
const DEMO_EXPORT_DELAY_MS: &str = "500";

/// Starts what `traces` asks for and tells the supervisor to give every
/// child its endpoint. Returns the line the banner prints.
async fn start_traces(
    traces: &Traces,
    plan: &DemoPlan,
    sup: &mut Supervisor,
) -> anyhow::Result<Option<String>> {
    let (url, protocol, line) = match traces {
        Traces::Off => return Ok(None),
        Traces::Endpoint { url, protocol } => (
            url.clone(),
            protocol.clone(),
            format!("traces: sent to {url} ({protocol})"),
        ),
        Traces::Builtin => {
            let addr = plan.traces;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "port {} ({addr}, for the trace receiver) is not free; choose another --base-port or --otlp-endpoint",
                    addr.port()
                )
            })?;
            // Lives as long as mycelctl's runtime: the whole demo.
            let _received = mycel_telemetry::receiver::http_receiver(listener);
            (
                format!("http://{addr}"),
                "http/protobuf".to_string(),
                format!("traces: http://{addr}/traces (the latest requests as span trees)"),
            )
        }
    };
    sup.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", &url);
    sup.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", &protocol);
    sup.set_env("OTEL_BSP_SCHEDULE_DELAY", DEMO_EXPORT_DELAY_MS);
    Ok(Some(line))
}

/// The three programs the demo runs.
struct Binaries {
    controller: PathBuf,
    proxy: PathBuf,
    demo: PathBuf,
}

impl Binaries {
    fn find(bin_dir: Option<PathBuf>) -> anyhow::Result<Binaries> {
        let dir = match bin_dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("cannot locate the mycelctl executable; pass --bin-dir")?
                .parent()
                .map(Path::to_path_buf)
                .context("the mycelctl executable has no parent directory; pass --bin-dir")?,
        };
        let missing: Vec<String> = [CONTROLLER, PROXY, DEMO]
            .iter()
            .filter(|name| !dir.join(name).is_file())
            .map(|name| name.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not found in {}: build them first: cargo build --workspace --bins",
                missing.join(", "),
                dir.display()
            );
        }
        Ok(Binaries {
            controller: dir.join(CONTROLLER),
            proxy: dir.join(PROXY),
            demo: dir.join(DEMO),
        })
    }
}

/// Fails naming the first address of the plan something already listens on.
fn check_ports_free(plan: &DemoPlan) -> anyhow::Result<()> {
    for (addr, who) in plan.listeners() {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!(
                "port {} ({addr}, for the {who}) is not free: {e}; choose another --base-port",
                addr.port()
            );
        }
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, set up before any child starts.
struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("watching SIGINT")?,
            term: signal(SignalKind::terminate()).context("watching SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Why the demo ended.
enum End {
    Signal(&'static str),
    ChildDied(Exited),
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bins = Binaries::find(args.bin_dir)?;
    // Held until the end: dropping it removes the temporary data dir.
    let (_temp, data) = match args.data_dir {
        Some(dir) => (None, dir),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("mycel-demo-")
                .tempdir()
                .context("creating a temporary data dir")?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    // The gateway reads the JWKS file by the path in mesh.yaml, which must
    // be absolute: the controller may run from anywhere.
    let data = std::path::absolute(&data)
        .with_context(|| format!("the absolute path of {}", data.display()))?;
    let paths = Paths { data };
    let stores = if args.in_memory {
        println!("stores: none (--in-memory): every service keeps its data in memory");
        plan::Stores::none()
    } else {
        let (mut stores, lines) = find_stores(&bins.demo).await;
        for line in lines {
            println!("{line}");
        }
        if stores.has(plan::StoreKind::Postgres) {
            if let Err(why) = postgres_can_reach(&paths.data) {
                stores.available.remove(&plan::StoreKind::Postgres);
                println!("store postgres not started, its services keep data in memory: {why}");
            }
        }
        stores
    };
    let plan = DemoPlan::with_stores(args.base_port, &stores)?;
    check_ports_free(&plan)?;
    let mut signals = StopSignals::new()?;
    prepare_dirs(&paths, &plan)?;
    println!("data dir: {}", paths.data.display());
    println!("logs:     {}/<name>.log", paths.logs().display());

    let mut sup = Supervisor::new();
    let traces = start_traces(&args.traces, &plan, &mut sup).await?;
    let outcome = start_and_supervise(
        &plan,
        &paths,
        &bins,
        &mut sup,
        &mut signals,
        Shown {
            ready_timeout: args.ready_timeout,
            faults: &args.faults,
            traces: traces.as_deref(),
        },
    )
    .await;
    println!("stopping {} processes...", sup.running());
    let killed = sup.stop_all(GRACE).await;
    if !killed.is_empty() {
        println!("killed after {GRACE:?}: {}", killed.join(", "));
    }
    match outcome {
        Ok(End::Signal(name)) => {
            println!("stopped on {name}");
            Ok(())
        }
        Ok(End::ChildDied(exited)) => bail!("{}", exited.report()),
        Err(e) => Err(e),
    }
}

/// Which stores' servers are installed, asking `mycel-demo store <kind>
/// --check` (the one place that knows where each server is), and a line
/// per kind for the user: the server it found, or what to install.
async fn find_stores(demo: &Path) -> (plan::Stores, Vec<String>) {
    let mut stores = plan::Stores::none();
    let mut lines = Vec::new();
    for kind in plan::StoreKind::ALL {
        let checked = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(demo)
                .args(["store", kind.as_str(), "--check"])
                .kill_on_drop(true)
                .output(),
        )
        .await;
        let said = |out: &std::process::Output| {
            let text = if out.stdout.is_empty() {
                &out.stderr
            } else {
                &out.stdout
            };
            String::from_utf8_lossy(text).trim().to_string()
        };
        match checked {
            Ok(Ok(out)) if out.status.success() => {
                stores.available.insert(kind);
                lines.push(format!("store {:<8} {}", kind.as_str(), said(&out)));
            }
            Ok(Ok(out)) => lines.push(format!(
                "store {:<8} not started, its services keep data in memory: {}",
                kind.as_str(),
                said(&out)
            )),
            Ok(Err(e)) => lines.push(format!(
                "store {:<8} not started: running {} failed: {e}",
                kind.as_str(),
                demo.display()
            )),
            Err(_) => lines.push(format!(
                "store {:<8} not started: {} store {} --check did not answer in 10s",
                kind.as_str(),
                demo.display(),
                kind.as_str()
            )),
        }
    }
    (stores, lines)
}

/// As root, `mycel-demo store postgres` runs PostgreSQL as the `postgres`
/// user (it refuses root), which must pass through every directory above
/// its own. The demo makes its data dir passable itself; a parent that
/// others may not pass is named.
fn postgres_can_reach(data: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for dir in data.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue; // created by the demo, passable
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "as root, PostgreSQL runs as the postgres user, which may not pass through {} (mode {:o}); \
                 use a --data-dir elsewhere (the default, under {}, works)",
                dir.display(),
                meta.permissions().mode() & 0o7777,
                std::env::temp_dir().display()
            ));
        }
    }
    Ok(())
}

fn prepare_dirs(paths: &Paths, plan: &DemoPlan) -> anyhow::Result<()> {
    let stores = plan.workloads.iter().any(|w| w.store.is_some());
    // Made passable now, parents included, for the store below.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(if stores { 0o711 } else { 0o700 })
        .create(&paths.data)
        .with_context(|| format!("creating {}", paths.data.display()))?;
    for dir in [paths.data.clone(), paths.logs(), paths.data.join("tokens")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if stores {
        // PostgreSQL will not run as root, so as root `mycel-demo store`
        // runs it as the `postgres` user, which must be able to reach its
        // directory: the data dir and `stores` may be passed through (not
        // listed or read) by others; what else the data dir holds keeps
        // its own 0700 directories and 0600 files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(paths.stores())
            .with_context(|| format!("creating {}", paths.stores().display()))?;
        for dir in [paths.data.clone(), paths.stores()] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .with_context(|| format!("making {} traversable", dir.display()))?;
        }
    }
    web_tls::prepare(paths).context("the gateway's HTTPS certificate")?;
    jwt::prepare(paths).context("the token issuer of /api/orders")?;
    let yaml = plan::mesh_yaml(plan, paths).context("rendering mesh.yaml")?;
    std::fs::write(paths.mesh_yaml(), yaml)
        .with_context(|| format!("writing {}", paths.mesh_yaml().display()))?;
    Ok(())
}

/// Runs `fut` unless a child dies or a stop signal comes first.
async fn guarded<T>(
    sup: &mut Supervisor,
    signals: &mut StopSignals,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Result<T, End>> {
    tokio::select! {
        r = fut => r.map(Ok),
        exited = sup.next_exit() => Ok(Err(End::ChildDied(exited))),
        name = signals.recv() => Ok(Err(End::Signal(name))),
    }
}

/// How long to wait, and what the apps and the banner are told.
struct Shown<'a> {
    ready_timeout: Duration,
    faults: &'a plan::Faults,
    traces: Option<&'a str>,
}

async fn start_and_supervise(
    plan: &DemoPlan,
    paths: &Paths,
    bins: &Binaries,
    sup: &mut Supervisor,
    signals: &mut StopSignals,
    shown: Shown<'_>,
) -> anyhow::Result<End> {
    let Shown {
        ready_timeout,
        faults,
        traces,
    } = shown;
    let deadline = Instant::now() + ready_timeout;
    spawn(
        sup,
        paths,
        "controller",
        &bins.controller,
        &plan::controller_args(plan, paths),
    )?;
    let controller_ready = async {
        wait::until_ok("controller", plan.controller_admin, "/ready", deadline)
            .await
            .map_err(anyhow::Error::from)
    };
    if let Err(end) = guarded(sup, signals, controller_ready).await? {
        return Ok(end);
    }

    for t in plan::tokens(plan) {
        let spec = TokenSpec {
            namespace: plan::NAMESPACE.to_string(),
            service_account: t.service_account.to_string(),
            labels: t.labels.into_iter().collect(),
            addresses: t
                .addresses
                .iter()
                .map(|ip| ip.to_string().parse())
                .collect::<Result<_, _>>()?,
            ..TokenSpec::default()
        };
        write_token(paths, &t.proxy, &spec)?;
    }
    for w in &plan.workloads {
        spawn(
            sup,
            paths,
            &w.name,
            &bins.demo,
            &plan::app_args(w, paths, faults),
        )?;
        let sidecar = format!("{}-proxy", w.name);
        spawn(
            sup,
            paths,
            &sidecar,
            &bins.proxy,
            &plan::sidecar_args(plan, paths, w),
        )?;
    }
    spawn(
        sup,
        paths,
        "gateway",
        &bins.proxy,
        &plan::gateway_args(plan, paths),
    )?;

    let ready = wait_ready(plan, deadline);
    let products = match guarded(sup, signals, ready).await? {
        Ok(products) => products,
        Err(end) => return Ok(end),
    };
    print!("{}", banner(plan, paths, faults));
    if let Some(line) = traces {
        println!("{line}");
    }
    for failed in failed_calls(&products) {
        println!("warning: {failed}");
    }
    let _ = std::io::stdout().flush();

    tokio::select! {
        exited = sup.next_exit() => Ok(End::ChildDied(exited)),
        name = signals.recv() => Ok(End::Signal(name)),
    }
}

fn spawn(
    sup: &mut Supervisor,
    paths: &Paths,
    name: &str,
    program: &Path,
    args: &[String],
) -> anyhow::Result<()> {
    let log = paths.log(name);
    sup.spawn(name, program, args, &log)?;
    println!("started {name:<18} log: {}", log.display());
    Ok(())
}

fn write_token(paths: &Paths, proxy: &str, spec: &TokenSpec) -> anyhow::Result<()> {
    let (token, _) = mycel_tokens::create_token(&paths.controller(), spec)
        .with_context(|| format!("creating the token of {proxy}"))?;
    let path = paths.token(proxy);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Every proxy admin ready, then `/api/products` through the gateway.
async fn wait_ready(plan: &DemoPlan, deadline: Instant) -> anyhow::Result<serde_json::Value> {
    let mut admins: Vec<(String, SocketAddr)> = plan
        .workloads
        .iter()
        .map(|w| (format!("{} sidecar", w.name), w.admin))
        .collect();
    admins.push(("gateway".to_string(), plan.gateway_admin));
    for (what, addr) in &admins {
        wait::until_ok(what, *addr, "/ready", deadline).await?;
    }
    // A proxy is ready before its app answers; the controller hears of each
    // app's readiness from its sidecar, and routes only to ready endpoints.
    // The demo is ready when every app is, not when the first answer of
    // each service gets through.
    let names: Vec<&str> = plan.workloads.iter().map(|w| w.name.as_str()).collect();
    wait::until(
        "every app ready at the controller",
        plan.controller_admin,
        "localhost",
        "/debug/proxies",
        deadline,
        |a| all_workloads_ready(&a.body, &names),
    )
    .await?;
    let answer = wait::until(
        "GET /api/products through the gateway",
        plan.gateway,
        "localhost",
        "/api/products",
        deadline,
        |a| a.status == 200 && has_products(&a.body),
    )
    .await?;
    serde_json::from_slice(&answer.body).context("the /api/products answer is not JSON")
}

/// Whether the controller's `/debug/proxies` lists each of `names` as a
/// registered, ready workload.
fn all_workloads_ready(body: &[u8], names: &[&str]) -> bool {
    let Ok(serde_json::Value::Array(proxies)) = serde_json::from_slice(body) else {
        return false;
    };
    names.iter().all(|name| {
        proxies
            .iter()
            .any(|p| p["workload"] == *name && p["ready"] == true)
    })
}

fn has_products(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("products")?.as_array().map(|p| !p.is_empty()))
        .unwrap_or(false)
}

/// The dependency calls the frontend reported as failed, one line each.
pub fn failed_calls(products: &serde_json::Value) -> Vec<String> {
    let Some(calls) = products.get("calls").and_then(|c| c.as_array()) else {
        return Vec::new();
    };
    calls
        .iter()
        .filter(|c| c.get("ok").and_then(|o| o.as_bool()) != Some(true))
        .map(|c| {
            let field = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            format!(
                "frontend's call to {} failed: {}",
                field("service"),
                field("error")
            )
        })
        .collect()
}

/// What to print once the demo is ready. The `gateway:` line is a contract
/// (tests look for it).
pub fn banner(plan: &DemoPlan, paths: &Paths, faults: &plan::Faults) -> String {
    let gw = plan.gateway;
    let mut out = String::new();
    let _ = writeln!(out, "\nMycel demo is ready.");
    let _ = writeln!(out, "gateway: http://{gw}");
    let https = plan.gateway_https.port();
    let _ = writeln!(
        out,
        "https: https://localhost:{https}/  (certificate from the local CA {})",
        paths.web_ca().display()
    );
    let _ = writeln!(out, "dashboard: http://{}/dashboard", plan.controller_admin);
    let orders = plan.workloads.iter().any(|w| w.service == "orders");
    let token = paths.demo_token();
    if orders {
        let _ = writeln!(
            out,
            "demo token: {}  (sub {}, scope \"{}\", valid 24 h)",
            token.display(),
            jwt::SUBJECT,
            jwt::SCOPE
        );
    }
    let _ = writeln!(out, "\nTry:");
    let _ = writeln!(
        out,
        "  curl http://{gw}/api/products     # JSON, with the identity each service saw"
    );
    let _ = writeln!(
        out,
        "  curl http://{gw}/                 # the shop page (or open it in a browser)"
    );
    let _ = writeln!(
        out,
        "  curl --cacert {} https://localhost:{https}/api/products   # over HTTPS (h2)",
        paths.web_ca().display()
    );
    let _ = writeln!(
        out,
        "  curl -i http://{gw}/api/products  # /api is rate-limited per client (GatewayPolicy {}): see RateLimit-*; 429 past it",
        plan::API_RATE_LIMIT
    );
    let _ = writeln!(
        out,
        "  curl http://{gw}/api/product-view/p1   # product and rating in one answer, merged by the gateway"
    );
    let _ = writeln!(
        out,
        "  curl -i http://{gw}/api/catalog   # the catalog's products from the gateway's cache (mycel-cache: hit, Age)"
    );
    if orders {
        // Double quotes around $(cat ...) so the command works as pasted
        // into any POSIX shell, whatever the data dir's path holds.
        let bearer = format!("-H \"Authorization: Bearer $(cat '{}')\"", token.display());
        let _ = writeln!(
            out,
            "  curl -i -X POST -d '{{\"product\":\"p1\",\"quantity\":1}}' http://{gw}/api/orders   # 401: /api/orders needs a token (GatewayPolicies {} and {})",
            plan::ORDERS_WRITE,
            plan::ORDERS_READ
        );
        let _ = writeln!(
            out,
            "  curl {bearer} -X POST -d '{{\"product\":\"p1\",\"quantity\":1}}' http://{gw}/api/orders   # 201: an order for {}",
            jwt::SUBJECT
        );
        let _ = writeln!(
            out,
            "  curl {bearer} http://{gw}/api/orders   # {}'s orders",
            jwt::SUBJECT
        );
    }
    let admin = plan.controller_admin;
    let _ = writeln!(
        out,
        "  curl http://{admin}/debug/proxies    # controller: connected proxies"
    );
    let _ = writeln!(out, "  curl http://{admin}/metrics");
    let _ = writeln!(out, "\nProxy admin (/ready /metrics /config_dump /certs):");
    let _ = writeln!(out, "  {:<12} http://{}", "gateway", plan.gateway_admin);
    for w in &plan.workloads {
        let _ = writeln!(out, "  {:<12} http://{}", w.name, w.admin);
    }
    let _ = writeln!(
        out,
        "\nTraffic policy: calls to ratings are retried (6 tries); see it hide\n  \
         failures with --ratings-error-rate 0.2 and mycel_retries_total on the\n  \
         frontend and reviews-v2 proxies' /metrics."
    );
    let _ = writeln!(
        out,
        "Routing: a GRPCRoute splits reviews calls {}/{} between v1 and v2\n  \
         (v2 shows stars): reload the page and watch the version change.",
        100 - plan::REVIEWS_V2_PERCENT,
        plan::REVIEWS_V2_PERCENT
    );
    if let Some(ratings) = plan.workloads.iter().find(|w| w.service == "ratings") {
        let _ = writeln!(
            out,
            "Authorization: only frontend may call catalog (AuthorizationPolicy {});
               a call from ratings' sidecar is refused with the reason:
               curl -i -H 'Host: catalog' http://{}/products",
            plan::CATALOG_POLICY,
            ratings.outbound
        );
    }
    if orders {
        let _ = writeln!(
            out,
            "Only the gateway may call orders (AuthorizationPolicy {}): orders trusts\n  \
             the x-user-id the gateway sets from the verified token's sub.",
            plan::ORDERS_POLICY
        );
    }
    let stores: Vec<&str> = plan
        .workloads
        .iter()
        .filter(|w| w.store.is_some())
        .map(|w| w.name.as_str())
        .collect();
    if !stores.is_empty() {
        let _ = writeln!(
            out,
            "Stores: {} run beside sidecars; each service reaches its own through its\n  \
             sidecar's mTLS tunnel, and only it may (AuthorizationPolicies <store>-users).",
            stores.join(", ")
        );
    }
    if orders && stores.contains(&"nats") {
        let _ = writeln!(
            out,
            "Order flow: orders commits the order and its OrderPlaced event together\n  \
             (outbox), publishes it to NATS; catalog lowers the stock and notifications\n  \
             records it: place an order, then reload the page."
        );
    }
    let described = faults.describe();
    if !described.is_empty() {
        let _ = writeln!(out, "\nFaults injected:");
        for line in described {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "\nLogs: {}/<name>.log", paths.logs().display());
    let _ = writeln!(out, "Press Ctrl-C to stop everything.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_waits_for_every_app_ready_at_the_controller() {
        let both = ["ratings", "reviews-v2"];
        let cases: &[(&str, bool)] = &[
            (
                r#"[{"workload":"ratings","ready":true},{"workload":"reviews-v2","ready":true},{"mode":"gateway","ready":null}]"#,
                true,
            ),
            (
                r#"[{"workload":"ratings","ready":true},{"workload":"reviews-v2","ready":false}]"#,
                false,
            ),
            (r#"[{"workload":"ratings","ready":true}]"#, false),
            (r#"{"not":"a list"}"#, false),
            ("not json", false),
        ];
        for (body, want) in cases {
            assert_eq!(all_workloads_ready(body.as_bytes(), &both), *want, "{body}");
        }
    }

    #[test]
    fn banner_has_the_gateway_line_and_admin_urls() {
        let plan = DemoPlan::new(17000).unwrap();
        let paths = Paths {
            data: PathBuf::from("/d"),
        };
        let text = banner(&plan, &paths, &plan::Faults::default());
        assert!(
            text.lines().any(|l| l == "gateway: http://127.0.0.1:17002"),
            "{text}"
        );
        assert!(text.contains("http://127.0.0.1:17001/debug/proxies"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("https: https://localhost:17005/ ")
                    && l.contains("/d/gateway-tls/ca.pem")),
            "{text}"
        );
        assert!(
            text.contains(
                "curl --cacert /d/gateway-tls/ca.pem https://localhost:17005/api/products"
            ),
            "{text}"
        );
        for w in &plan.workloads {
            assert!(text.contains(&format!("http://{}", w.admin)), "{}", w.name);
        }
        assert!(text.contains("/d/logs"));
        assert!(!text.contains("Faults"), "{text}");
    }

    #[test]
    fn banner_says_how_to_use_the_orders_token() {
        let plan = DemoPlan::new(17000).unwrap();
        let paths = Paths {
            data: PathBuf::from("/d"),
        };
        let text = banner(&plan, &paths, &plan::Faults::default());
        assert!(
            text.lines()
                .any(|l| l.starts_with("demo token: /d/demo-token.jwt ")),
            "{text}"
        );
        let post =
            r#"-X POST -d '{"product":"p1","quantity":1}' http://127.0.0.1:17002/api/orders"#;
        let with_token =
            format!(r#"curl -H "Authorization: Bearer $(cat '/d/demo-token.jwt')" {post}"#);
        assert!(text.contains(&with_token), "{text}");
        assert!(text.contains(&format!("curl -i {post}   # 401")), "{text}");
        assert!(text.contains("orders-callers"), "{text}");
    }

    #[test]
    fn banner_has_only_commands_every_platform_has() {
        let plan = DemoPlan::new(17000).unwrap();
        let paths = Paths {
            data: PathBuf::from("/d"),
        };
        let text = banner(&plan, &paths, &plan::Faults::default());
        for line in text.lines().map(str::trim_start) {
            let command = line.split_whitespace().next().unwrap_or("");
            // `open` exists on macOS only, `xdg-open` on some Linux desktops only.
            assert!(
                !["open", "xdg-open", "start"].contains(&command),
                "{line:?} in {text}"
            );
        }
        assert!(text.contains("curl http://127.0.0.1:17002/ "), "{text}");
    }

    #[test]
    fn banner_lists_the_faults_in_effect() {
        let plan = DemoPlan::new(17000).unwrap();
        let paths = Paths {
            data: PathBuf::from("/d"),
        };
        let faults = plan::Faults {
            services: [(
                "ratings",
                plan::Fault {
                    error_rate: 0.5,
                    latency: Duration::ZERO,
                },
            )]
            .into(),
            ..plan::Faults::default()
        };
        let text = banner(&plan, &paths, &faults);
        assert!(text.contains("ratings fails 50% of requests"), "{text}");
    }

    #[test]
    fn failed_calls_lists_only_failures() {
        let v = serde_json::json!({"products": [], "calls": [
            {"service": "catalog", "ok": true, "caller": "x"},
            {"service": "ratings", "ok": false, "error": "HTTP 503"},
        ]});
        assert_eq!(
            failed_calls(&v),
            ["frontend's call to ratings failed: HTTP 503"]
        );
        assert!(failed_calls(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn has_products_table() {
        assert!(has_products(br#"{"products":[{"id":"p1"}]}"#));
        assert!(!has_products(br#"{"products":[]}"#));
        assert!(!has_products(b"not json"));
    }

    #[test]
    fn busy_port_is_named() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let Ok(plan) = DemoPlan::new(port) else {
            return; // too close to 65535 for a whole plan; nothing to check
        };
        let err = check_ports_free(&plan).unwrap_err().to_string();
        assert!(
            err.contains(&port.to_string()) && err.contains("controller gRPC"),
            "{err}"
        );
    }

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::find(Some(dir.path().to_path_buf()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
        assert!(
            err.contains("mycel-controller") && err.contains("mycel-demo"),
            "{err}"
        );
    }
}
