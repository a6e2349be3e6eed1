//! One benchmark run: start the backend and every configuration, measure
//! them in alternation, collect the report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::client::Proto;
use crate::cpscale::{self, CpPlan};
use crate::load::{self, RunResult, Shape};
use crate::probe;
use crate::procstat::{self, Sample};
use crate::report::{
    ConfigInfo, HandshakeRow, LatencyRow, Report, ResourceRow, TcpRow, ThroughputRow, TraceRow,
};
use crate::schedule::Schedule;
use crate::setup::collector::{self, CollectorKind};
use crate::setup::gateway::{self, PolicyDecisions};
use crate::setup::mycel::TraceExport;
use crate::setup::{self, mycel::Bins, Setup};
use crate::stats;

mod conns;

/// What to measure and for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: &'static str,
    /// Protocol and the rates it is measured at.
    pub latency_grid: Vec<(Proto, Vec<u64>)>,
    pub latency_duration: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    pub open_loop_workers: usize,
    pub throughput: Vec<(Proto, usize)>,
    pub throughput_duration: Duration,
    pub handshake_duration: Duration,
    pub handshake_concurrency: usize,
    /// Connections the handshake scenario then holds open to measure what
    /// each costs the accepting side.
    pub held_connections: usize,
    pub bulk_bytes: u64,
    /// Workers of the `close` scenario, each opening a connection per
    /// request.
    pub close_concurrency: usize,
    /// Body size of the `bulk` scenario's HTTP download.
    pub download_bytes: u64,
    pub cp: CpPlan,
    /// The open-loop grid of the tracing scenario (it replaces
    /// `latency_grid` there).
    pub trace_grid: Vec<(Proto, Vec<u64>)>,
    /// How long after the last load run the trace export counters are
    /// read: the export queue's batch delay (`OTEL_BSP_SCHEDULE_DELAY`,
    /// 5 s by default) and a second, so queued spans are sent by then.
    pub trace_settle: Duration,
    /// The gateway scenario's own grid, closed-loop shapes and lengths
    /// (they replace the fields above there, and in `all` for its part):
    /// five TLS configurations at the main grid's lengths would make
    /// `all` too long.
    pub gateway_grid: Vec<(Proto, Vec<u64>)>,
    pub gateway_throughput: Vec<(Proto, usize)>,
    pub gateway_latency_duration: Duration,
    pub gateway_throughput_duration: Duration,
}

impl Plan {
    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            latency_grid: vec![
                (Proto::Http1, vec![500, 1000, 2000]),
                (Proto::H2, vec![1000]),
                (Proto::Grpc, vec![1000]),
            ],
            latency_duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(250),
            rounds: 2,
            open_loop_workers: 32,
            throughput: vec![(Proto::Http1, 16), (Proto::Grpc, 16)],
            throughput_duration: Duration::from_secs(2),
            handshake_duration: Duration::from_secs(1),
            handshake_concurrency: 4,
            held_connections: 200,
            bulk_bytes: 256 << 20,
            close_concurrency: 8,
            download_bytes: 64_000_000,
            cp: CpPlan {
                proxies: 200,
                services: 50,
                endpoints: 5,
                subscriptions_per_proxy: 5,
                changes: 20,
                csrs: 2000,
                csr_concurrency: 8,
            },
            trace_grid: vec![
                (Proto::Http1, vec![500, 1000, 2000]),
                (Proto::Grpc, vec![1000]),
            ],
            trace_settle: Duration::from_secs(6),
            // 5 configurations x (2 points x 2 rounds x 1.25 s + 1 s):
            // about 30 s of measuring.
            gateway_grid: vec![(Proto::Http1, vec![1000]), (Proto::H2, vec![1000])],
            gateway_throughput: vec![(Proto::Http1, 16)],
            gateway_latency_duration: Duration::from_secs(1),
            gateway_throughput_duration: Duration::from_secs(1),
        }
    }

    pub fn full() -> Plan {
        Plan {
            mode: "full",
            latency_grid: vec![
                (Proto::Http1, vec![500, 1000, 2000]),
                (Proto::H2, vec![500, 1000, 2000]),
                (Proto::Grpc, vec![500, 1000, 2000]),
            ],
            latency_duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rounds: 3,
            open_loop_workers: 64,
            throughput: vec![
                (Proto::Http1, 1),
                (Proto::Http1, 16),
                (Proto::Http1, 64),
                (Proto::H2, 64),
                (Proto::Grpc, 64),
            ],
            throughput_duration: Duration::from_secs(10),
            handshake_duration: Duration::from_secs(5),
            handshake_concurrency: 8,
            held_connections: 1000,
            bulk_bytes: 2 << 30,
            close_concurrency: 8,
            download_bytes: 1_000_000_000,
            // 1,000 x 10 registering streams (11,000 in all) did not finish:
            // registration slows to ~7/s at 4,400 connected streams (see
            // docs/benchmarks.md), so full mode registers 100 x 10.
            cp: CpPlan {
                proxies: 1000,
                services: 100,
                endpoints: 10,
                subscriptions_per_proxy: 10,
                changes: 100,
                csrs: 20000,
                csr_concurrency: 16,
            },
            trace_grid: vec![
                (Proto::Http1, vec![500, 1000, 2000]),
                (Proto::H2, vec![1000]),
                (Proto::Grpc, vec![500, 1000, 2000]),
            ],
            trace_settle: Duration::from_secs(6),
            // 5 configurations x (5 points x 3 rounds x 6 s + 4 x 5 s):
            // about 9.5 minutes of measuring.
            gateway_grid: vec![
                (Proto::Http1, vec![500, 1000, 2000]),
                (Proto::H2, vec![1000, 2000]),
            ],
            gateway_throughput: vec![
                (Proto::Http1, 1),
                (Proto::Http1, 16),
                (Proto::Http1, 64),
                (Proto::H2, 64),
            ],
            gateway_latency_duration: Duration::from_secs(5),
            gateway_throughput_duration: Duration::from_secs(5),
        }
    }

    /// The plan as `scenario` runs it: the tracing scenario measures its
    /// own, smaller latency grid.
    pub fn for_scenario(mut self, scenario: Scenario) -> Plan {
        match scenario {
            Scenario::Tracing => self.latency_grid = self.trace_grid.clone(),
            Scenario::Gateway => self = self.gateway_part(),
            _ => {}
        }
        self
    }

    /// The plan of the gateway scenario's configurations.
    pub fn gateway_part(&self) -> Plan {
        Plan {
            latency_grid: self.gateway_grid.clone(),
            throughput: self.gateway_throughput.clone(),
            latency_duration: self.gateway_latency_duration,
            throughput_duration: self.gateway_throughput_duration,
            ..self.clone()
        }
    }
}

/// Which parts of the benchmark a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Everything below except tracing (the gateway part with its own,
    /// shorter grid, after the others).
    All,
    /// Open-loop latency at fixed rates (plus CPU and memory).
    Latency,
    /// Closed-loop maximum rps.
    Throughput,
    /// Full mTLS handshakes per second.
    Handshake,
    /// Bulk TCP through the tunnel.
    Tcp,
    /// Control-plane scale (controller only).
    CpScale,
    /// Latency, throughput and CPU of the pair exporting spans to a live,
    /// a dead and a black-hole OTLP collector, with the export counters.
    Tracing,
    /// HTTPS fronts of the backend: the Mycel gateway (routing only, with
    /// JWT, with JWT and a rate limit) against nginx and the backend's own
    /// TLS; latency, throughput, CPU and memory.
    Gateway,
    /// HTTP/1.1 with a new connection per request (`Connection: close`),
    /// closed loop.
    Close,
    /// One large HTTP/1.1 download over one connection.
    Bulk,
    /// Two pods (network namespaces) per configuration, the Mycel sidecars
    /// on the transparent path (`mycel-proxy init` iptables capture)
    /// against direct, nginx and HAProxy pairs and an nginx L4 mTLS tunnel;
    /// needs root (not part of `all`).
    Pods,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::All => "all",
            Scenario::Latency => "latency",
            Scenario::Throughput => "throughput",
            Scenario::Handshake => "handshake",
            Scenario::Tcp => "tcp",
            Scenario::CpScale => "cp-scale",
            Scenario::Tracing => "tracing",
            Scenario::Gateway => "gateway",
            Scenario::Close => "close",
            Scenario::Bulk => "bulk",
            Scenario::Pods => "pods",
        }
    }

    /// The configurations compared when none are given.
    pub fn default_configs(self) -> Vec<&'static str> {
        const MAIN: [&str; 7] = [
            "direct",
            "mycel",
            "mycel-policy",
            "mycel-routes",
            "mycel-authz",
            "nginx",
            "haproxy",
        ];
        match self {
            Scenario::Tracing => vec![
                "mycel",
                "mycel-trace-live",
                "mycel-trace-dead",
                "mycel-trace-blackhole",
            ],
            Scenario::Gateway => gateway::CONFIGS.to_vec(),
            Scenario::Pods => crate::pods::pairs::CONFIGS.to_vec(),
            Scenario::All => MAIN.into_iter().chain(gateway::CONFIGS).collect(),
            _ => MAIN.to_vec(),
        }
    }

    fn has(self, part: Scenario) -> bool {
        self == Scenario::All
            || self == part
            || (matches!(self, Scenario::Tracing | Scenario::Gateway)
                && matches!(part, Scenario::Latency | Scenario::Throughput))
    }

    fn needs_data_path(self) -> bool {
        !matches!(self, Scenario::CpScale | Scenario::Pods)
    }
}

/// CPU and requests per watched process, across all load runs.
#[derive(Default)]
struct Usage {
    rows: BTreeMap<(String, String), (u32, ResourceRow)>,
    ticks: u64,
    /// Requests sent through each configuration, warm-ups included.
    sent: BTreeMap<String, u64>,
}

impl Usage {
    fn idle(&mut self, s: &Setup) {
        for w in &s.watched {
            let sample = procstat::sample(w.pid, self.ticks).unwrap_or_default();
            self.rows.insert(
                (s.name.to_string(), w.role.to_string()),
                (
                    w.pid,
                    ResourceRow {
                        config: s.name.into(),
                        role: w.role.into(),
                        processes: sample.processes,
                        idle_rss_kb: sample.rss_kb,
                        ..ResourceRow::default()
                    },
                ),
            );
        }
    }

    fn snapshot(&self, s: &Setup) -> Vec<Sample> {
        s.watched
            .iter()
            .map(|w| procstat::sample(w.pid, self.ticks).unwrap_or_default())
            .collect()
    }

    fn warmed_up(&mut self, s: &Setup, requests: u64) {
        *self.sent.entry(s.name.to_string()).or_default() += requests;
    }

    fn account(&mut self, s: &Setup, before: &[Sample], requests: u64, open_loop: bool) {
        *self.sent.entry(s.name.to_string()).or_default() += requests;
        for (w, b) in s.watched.iter().zip(before) {
            let after = procstat::sample(w.pid, self.ticks).unwrap_or_default();
            if let Some((_, row)) = self.rows.get_mut(&(s.name.to_string(), w.role.to_string())) {
                row.cpu_s += after.cpu_s - b.cpu_s;
                row.requests += requests;
                if open_loop {
                    row.open_loop_cpu_s += after.cpu_s - b.cpu_s;
                    row.open_loop_requests += requests;
                    row.open_loop_rss_kb = row.open_loop_rss_kb.max(after.rss_kb);
                }
                row.loaded_rss_kb = row.loaded_rss_kb.max(after.rss_kb);
                row.processes = row.processes.max(after.processes);
            }
        }
    }

    fn finish(mut self) -> Vec<ResourceRow> {
        for (pid, row) in self.rows.values_mut() {
            let s = procstat::sample(*pid, self.ticks).unwrap_or_default();
            // The kernel updates VmHWM lazily; a sampled VmRSS can be higher.
            row.peak_rss_kb = s.hwm_kb.max(row.loaded_rss_kb);
            row.cpu_s_per_1k_requests = per_1k(row.cpu_s, row.requests);
            row.open_loop_cpu_s_per_1k_requests =
                per_1k(row.open_loop_cpu_s, row.open_loop_requests);
        }
        self.rows.into_values().map(|(_, r)| r).collect()
    }
}

fn per_1k(cpu_s: f64, requests: u64) -> f64 {
    if requests > 0 {
        cpu_s * 1000.0 / requests as f64
    } else {
        0.0
    }
}

pub struct Options {
    pub scenario: Scenario,
    pub plan: Plan,
    pub configs: Vec<String>,
    pub bins: Option<std::path::PathBuf>,
    /// How the `mycel-trace-*` configurations export.
    pub trace: TraceExport,
    /// The pod scenario's run length instead of its plan's.
    pub pod_run: Option<Duration>,
}

pub(crate) fn machine() -> crate::report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let version = |p: &str, a: &str| {
        std::process::Command::new(p)
            .arg(a)
            .output()
            .map(|o| {
                let t = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                t.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|_| "not installed".into())
    };
    crate::report::Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
        mem_total_mb: procstat::mem_total_kb() / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_avg_at_start: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        nginx: version("nginx", "-v"),
        haproxy: version("haproxy", "-v"),
        proxy_args: crate::extra_proxy_args(),
    }
}

async fn start_setups(
    opts: &Options,
    configs: &[String],
    backend: &Backend,
    report: &mut Report,
) -> Vec<Setup> {
    let mut setups = Vec::new();
    for name in configs {
        let started = match name.as_str() {
            "direct" => setup::direct(&backend.addrs),
            gw if gateway::is_config(gw) => {
                gateway::start(gw, opts.bins.as_deref(), &backend.addrs).await
            }
            "mycel" => match Bins::find(opts.bins.as_deref()) {
                Ok(bins) => setup::mycel::start(&bins, &backend.addrs).await,
                Err(e) => Err(e),
            },
            "mycel-policy" => match Bins::find(opts.bins.as_deref()) {
                Ok(bins) => setup::mycel::start_with_policy(&bins, &backend.addrs).await,
                Err(e) => Err(e),
            },
            "mycel-authz" => match Bins::find(opts.bins.as_deref()) {
                Ok(bins) => setup::mycel::start_with_authz(&bins, &backend.addrs).await,
                Err(e) => Err(e),
            },
            "mycel-routes" => match Bins::find(opts.bins.as_deref()) {
                Ok(bins) => setup::mycel::start_with_routes(&bins, &backend.addrs).await,
                Err(e) => Err(e),
            },
            "nginx" => setup::nginx::start(&backend.addrs).await,
            "haproxy" => setup::haproxy::start(&backend.addrs).await,
            other => match CollectorKind::from_config_name(other) {
                Some(kind) => match Bins::find(opts.bins.as_deref()) {
                    Ok(bins) => {
                        setup::mycel::start_tracing(&bins, &backend.addrs, kind, opts.trace).await
                    }
                    Err(e) => Err(e),
                },
                None => Err(setup::SetupError::Missing(format!(
                    "unknown configuration {other:?} (direct, mycel, mycel-policy, mycel-routes, mycel-authz, nginx, haproxy, mycel-trace-live, mycel-trace-dead, mycel-trace-blackhole, {})",
                    gateway::CONFIGS.join(", ")
                ))),
            },
        };
        let mut s = match started {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[bench] {name}: not measured: {e}");
                report.problems.push(format!("{name}: not measured: {e}"));
                continue;
            }
        };
        if let Err(e) = setup::wait_working(&mut s, Duration::from_secs(20)).await {
            eprintln!("[bench] {name}: not measured: {e}");
            report.problems.push(format!("{name}: not measured: {e}"));
            continue;
        }
        let mut checks = Vec::new();
        for port in &s.mesh_ports {
            let c = probe::check_refuses_without_mtls(*port, crate::certs::SERVER_NAME).await;
            if !c.refused {
                report.problems.push(format!(
                    "{name}: mesh port {port} answered a client without mTLS: {c:?}"
                ));
            }
            checks.push(c);
        }
        eprintln!(
            "[bench] {name}: ready ({} mesh ports refuse plaintext: {})",
            checks.len(),
            checks.iter().all(|c| c.refused)
        );
        let front_check = if gateway::is_config(s.name) {
            let c = gateway::check(&s).await;
            eprintln!(
                "[bench] {name}: with the token {}, without {}{}",
                c.with_token,
                c.without_token,
                c.rate_limit_headers
                    .as_deref()
                    .map(|h| format!(", {h}"))
                    .unwrap_or_default()
            );
            if !c.expected {
                report.problems.push(format!(
                    "{name}: does not enforce what it should: with the token {}, without {}, rate-limit headers {:?}",
                    c.with_token, c.without_token, c.rate_limit_headers
                ));
            }
            Some(c)
        } else {
            None
        };
        report.configs.push(ConfigInfo {
            name: s.name.into(),
            notes: s.notes.clone(),
            refusal_checks: checks,
            front_check,
        });
        setups.push(s);
    }
    setups
}

/// The configurations in round `round`'s order: rotated so none is always
/// first (right after another configuration's load).
pub(crate) fn rotated(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n.max(1)).collect()
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let mut report = Report {
        scenario: opts.scenario.name().into(),
        mode: opts.plan.mode.into(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        machine: machine(),
        ..Report::default()
    };
    let plan = opts.plan.clone();
    if opts.scenario.needs_data_path() {
        let backend = Backend::start().await?;
        // In `all`, the gateway scenario's configurations are started and
        // measured after the others, with their own grid; elsewhere every
        // configuration named runs in the one part.
        let (gateway_configs, others): (Vec<String>, Vec<String>) =
            if opts.scenario == Scenario::All {
                opts.configs
                    .iter()
                    .cloned()
                    .partition(|c| gateway::is_config(c))
            } else {
                (Vec::new(), opts.configs.clone())
            };
        if !others.is_empty() {
            data_path(&opts, opts.scenario, &plan, &others, &backend, &mut report).await?;
        }
        if !gateway_configs.is_empty() {
            data_path(
                &opts,
                Scenario::Gateway,
                &plan.gateway_part(),
                &gateway_configs,
                &backend,
                &mut report,
            )
            .await?;
        }
        crate::report::compare_to_direct(&mut report);
    }
    if opts.scenario.has(Scenario::CpScale) {
        match Bins::find(opts.bins.as_deref()) {
            Ok(bins) => match cpscale::run(&bins, plan.cp).await {
                Ok(cp) => report.control_plane = Some(cp),
                Err(e) => report.problems.push(format!("control-plane scale: {e}")),
            },
            Err(e) => report.problems.push(format!("control-plane scale: {e}")),
        }
    }
    if opts.scenario == Scenario::Pods {
        let pods_plan = if plan.mode == "full" {
            crate::pods::PodPlan::full()
        } else {
            crate::pods::PodPlan::quick()
        };
        let pods_plan = crate::pods::PodPlan {
            run: opts.pod_run.unwrap_or(pods_plan.run),
            ..pods_plan
        };
        crate::pods::run(
            pods_plan,
            opts.configs.clone(),
            opts.bins.clone(),
            &mut report,
        )
        .await;
    }
    report.wall_seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Starts `configs` and measures what `scenario` measures with `plan`;
/// the rows go to `report`.
async fn data_path(
    opts: &Options,
    scenario: Scenario,
    plan: &Plan,
    configs: &[String],
    backend: &Backend,
    report: &mut Report,
) -> anyhow::Result<()> {
    let setups = start_setups(opts, configs, backend, report).await;
    let mut usage = Usage {
        ticks: procstat::clock_ticks(),
        ..Usage::default()
    };
    for s in &setups {
        usage.idle(s);
    }
    if scenario.has(Scenario::Latency) {
        latency(plan, &setups, &mut usage, report).await;
    }
    if scenario.has(Scenario::Throughput) {
        throughput(plan, &setups, &mut usage, report).await;
    }
    if setups.iter().any(|s| s.collector.is_some()) {
        trace_export(plan, &setups, &usage, report).await;
    }
    gateway_decisions(&setups, &usage, report).await;
    if scenario.has(Scenario::Handshake) {
        for s in &setups {
            let Some(h) = &s.handshake else { continue };
            let config = probe::client_config(Some(&h.cert), h.alpn.clone())?;
            let result = probe::handshakes(
                h.addr,
                config,
                &h.server_name,
                plan.handshake_concurrency,
                plan.handshake_duration,
            )
            .await;
            eprintln!(
                "[bench] handshake {}: {:.0}/s ({} errors)",
                s.name, result.per_second, result.errors
            );
            let (held, server_kb_per_held) =
                match held_memory(s, h, plan.held_connections, &usage).await {
                    Ok(v) => v,
                    Err(e) => {
                        report
                            .problems
                            .push(format!("held connections {}: {e}", s.name));
                        (0, None)
                    }
                };
            report.handshakes.push(HandshakeRow {
                config: s.name.into(),
                result,
                held,
                server_kb_per_held,
            });
        }
    }
    if scenario.has(Scenario::Close) {
        conns::close(plan, &setups, &mut usage, report).await;
    }
    if scenario.has(Scenario::Bulk) {
        conns::bulk(plan, &setups, &usage, report).await;
    }
    if scenario.has(Scenario::Tcp) {
        for s in &setups {
            let Some(addr) = s.tcp else { continue };
            match probe::tcp_bulk(addr, plan.bulk_bytes).await {
                Ok(result) => {
                    eprintln!("[bench] tcp {}: {:.0} MB/s", s.name, result.mb_per_s);
                    report.tcp.push(TcpRow {
                        config: s.name.into(),
                        result,
                    });
                }
                Err(e) => report.problems.push(format!("tcp {}: {e}", s.name)),
            }
        }
    }
    report.resources.extend(usage.finish());
    drop(setups);
    Ok(())
}

/// Holds `n` connections to the setup's mesh-side port, one request each,
/// and returns how many and what each added to the server side's
/// anonymous memory (kB), read half a second after the last opened.
async fn held_memory(
    s: &Setup,
    h: &crate::setup::HandshakeTarget,
    n: usize,
    usage: &Usage,
) -> Result<(u64, Option<f64>), probe::ProbeError> {
    let Some(server) = s.watched.iter().find(|w| w.role == "server-side") else {
        return Ok((0, None));
    };
    let before = procstat::sample(server.pid, usage.ticks).unwrap_or_default();
    let config = probe::client_config(Some(&h.cert), h.alpn.clone())?;
    let held = probe::held_connections(h.addr, config, &h.server_name, n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = procstat::sample(server.pid, usage.ticks).unwrap_or_default();
    let answered = held.answered;
    drop(held);
    let grown = after.anon_kb.saturating_sub(before.anon_kb) as f64;
    eprintln!(
        "[bench] held {}: {answered} connections, server side +{:.0} kB anonymous",
        s.name, grown
    );
    Ok((answered, (answered > 0).then(|| grown / answered as f64)))
}

/// Reads each Mycel gateway's policy decision counters after the load:
/// with a policy, every measured request must have been allowed (the
/// setup's check adds one refusal without a token); a request the rate
/// limit refused means the limit was not set high enough to measure its
/// cost alone, which the run reports as a problem.
async fn gateway_decisions(setups: &[Setup], usage: &Usage, report: &mut Report) {
    for s in setups.iter().filter(|s| gateway::is_config(s.name)) {
        for (_, admin) in &s.admins {
            let decisions = match gateway::read_decisions(*admin).await {
                Ok(d) => d,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{}: policy counters not read: {e}", s.name));
                    continue;
                }
            };
            let allowed = decisions.get("allowed").copied().unwrap_or(0);
            let refused: u64 = decisions
                .iter()
                .filter(|(d, _)| d.as_str() != "allowed")
                .map(|(_, n)| n)
                .sum();
            eprintln!(
                "[bench] gateway policy {}: {decisions:?} ({} requests sent)",
                s.name,
                usage.sent.get(s.name).copied().unwrap_or(0)
            );
            let expect_refused = u64::from(gateway::checks_jwt(s.name));
            if gateway::checks_jwt(s.name) && allowed == 0 {
                report
                    .problems
                    .push(format!("{}: the policy allowed no request", s.name));
            }
            if refused > expect_refused {
                report.problems.push(format!(
                    "{}: the gateway refused {refused} requests ({decisions:?}); the setup's check accounts for {expect_refused}",
                    s.name
                ));
            }
            report.gateway_policy.push(PolicyDecisions {
                config: s.name.into(),
                decisions,
                requests_sent: usage.sent.get(s.name).copied().unwrap_or(0),
            });
        }
    }
}

fn log_run(what: &str, s: &Setup, proto: Proto, x: u64, r: &RunResult) {
    let sum = stats::summarize(&r.hist);
    eprintln!(
        "[bench] {what} {:8} {:5} {x:5}: {:7.0} rps  p50 {:7.1} p99 {:8.1} max {:9.1} µs  errors {}{}{}",
        s.name,
        proto.as_str(),
        r.achieved_rps(),
        sum.p50_us,
        sum.p99_us,
        sum.max_us,
        r.errors,
        if r.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.error_kinds)
        },
        r.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    );
}

async fn latency(plan: &Plan, setups: &[Setup], usage: &mut Usage, report: &mut Report) {
    for (proto, rates) in &plan.latency_grid {
        for &rate in rates {
            let mut merged: BTreeMap<usize, (RunResult, u64)> = BTreeMap::new();
            let mut rounds: BTreeMap<usize, Vec<stats::Summary>> = BTreeMap::new();
            for round in 0..plan.rounds.max(1) {
                for i in rotated(setups.len(), round) {
                    let s = &setups[i];
                    let Some(target) = s.targets.get(proto) else {
                        continue;
                    };
                    let shape = Shape::for_proto(*proto, plan.open_loop_workers, 1);
                    // Warm-up at the same rate, not recorded (but its
                    // requests make spans: counted as sent).
                    if let Ok(w) =
                        load::open_loop(*proto, target, Schedule::new(rate, plan.warmup), shape)
                            .await
                    {
                        usage.warmed_up(s, w.ok + w.errors);
                    }
                    let before = usage.snapshot(s);
                    match load::open_loop(
                        *proto,
                        target,
                        Schedule::new(rate, plan.latency_duration),
                        shape,
                    )
                    .await
                    {
                        Ok(r) => {
                            usage.account(s, &before, r.ok + r.errors, true);
                            log_run("open  ", s, *proto, rate, &r);
                            rounds.entry(i).or_default().push(stats::summarize(&r.hist));
                            match merged.get_mut(&i) {
                                Some((m, _)) => m.absorb(r),
                                None => {
                                    merged.insert(i, (r, rate));
                                }
                            }
                        }
                        Err(e) => report.problems.push(format!(
                            "latency {} {} {rate}: {e}",
                            s.name,
                            proto.as_str()
                        )),
                    }
                }
            }
            for (i, (r, rate)) in merged {
                report.latency.push(LatencyRow {
                    config: setups[i].name.into(),
                    proto: *proto,
                    rate,
                    achieved_rps: r.achieved_rps(),
                    ok: r.ok,
                    errors: r.errors,
                    first_error: r.first_error,
                    error_kinds: r.error_kinds,
                    latency: stats::summarize(&r.hist),
                    rounds: rounds.remove(&i).unwrap_or_default(),
                    added: None,
                    p99_ratio_to_direct: None,
                });
            }
        }
    }
}

async fn throughput(plan: &Plan, setups: &[Setup], usage: &mut Usage, report: &mut Report) {
    for (round, (proto, conns)) in plan.throughput.iter().enumerate() {
        for i in rotated(setups.len(), round) {
            let s = &setups[i];
            let Some(target) = s.targets.get(proto) else {
                continue;
            };
            let shape = Shape::for_proto(*proto, *conns, 1);
            let before = usage.snapshot(s);
            match load::closed_loop(*proto, target, shape, plan.throughput_duration, 50_000_000)
                .await
            {
                Ok(r) => {
                    usage.account(s, &before, r.ok + r.errors, false);
                    log_run("closed", s, *proto, *conns as u64, &r);
                    report.throughput.push(ThroughputRow {
                        config: s.name.into(),
                        proto: *proto,
                        connections: *conns,
                        rps: r.achieved_rps(),
                        ok: r.ok,
                        errors: r.errors,
                        first_error: r.first_error.clone(),
                        error_kinds: r.error_kinds.clone(),
                        latency: stats::summarize(&r.hist),
                        ratio_to_direct: None,
                    });
                }
                Err(e) => {
                    report
                        .problems
                        .push(format!("throughput {} {}: {e}", s.name, proto.as_str()))
                }
            }
        }
    }
}

/// Reads every Mycel proxy's trace export counters once the export queues
/// had time to send what they hold, and checks that each tracing
/// configuration exercised what it is there for: spans reached the live
/// collector, and the dead and black-hole ones lost spans visibly (counted
/// as dropped or as failed batches), not silently.
async fn trace_export(plan: &Plan, setups: &[Setup], usage: &Usage, report: &mut Report) {
    eprintln!(
        "[bench] waiting {:?} for the export queues before reading /metrics",
        plan.trace_settle
    );
    tokio::time::sleep(plan.trace_settle).await;
    for s in setups.iter().filter(|s| !s.admins.is_empty()) {
        let mut row = TraceRow {
            config: s.name.into(),
            requests_sent: usage.sent.get(s.name).copied().unwrap_or(0),
            read_after_s: plan.trace_settle.as_secs_f64(),
            collector: s.collector.as_ref().map(|c| c.kind.config_name().into()),
            protocol: s.collector.as_ref().map(|c| c.protocol.as_str().into()),
            collector_spans_held: s.collector.as_ref().and_then(|c| c.received_spans()),
            collector_cpu_s: s.collector.as_ref().and_then(|c| c.cpu_s()),
            collector_connections: s
                .collector
                .as_ref()
                .filter(|c| c.kind == CollectorKind::Blackhole)
                .map(|c| c.accepted_connections()),
            ..TraceRow::default()
        };
        for (role, admin) in &s.admins {
            match collector::read_counters(*admin).await {
                Ok(c) => {
                    if *role == "client-side" {
                        row.client = Some(c);
                    } else {
                        row.server = Some(c);
                    }
                }
                Err(e) => row.read_errors.push(format!("{role}: {e}")),
            }
        }
        let sum = |f: fn(&collector::ExportCounters) -> u64| {
            row.client.as_ref().map_or(0, f) + row.server.as_ref().map_or(0, f)
        };
        let (exported, lost) = (sum(|c| c.exported), sum(|c| c.dropped + c.export_failures));
        eprintln!(
            "[bench] trace export {}: {} requests sent; exported {exported}, dropped {}, failed batches {}",
            s.name,
            row.requests_sent,
            sum(|c| c.dropped),
            sum(|c| c.export_failures)
        );
        let kind = s.collector.as_ref().map(|c| c.kind);
        let problem = if !row.read_errors.is_empty() {
            Some(format!(
                "cannot read the counters: {}",
                row.read_errors.join("; ")
            ))
        } else {
            match kind {
                Some(CollectorKind::Live) if exported == 0 => {
                    Some("no span reached the live collector".to_string())
                }
                Some(CollectorKind::Dead | CollectorKind::Blackhole) if lost == 0 => Some(
                    "the unreachable collector lost no span visibly (no drop, no failed batch)"
                        .to_string(),
                ),
                Some(CollectorKind::Dead | CollectorKind::Blackhole) if exported > 0 => Some(
                    format!("{exported} spans counted as exported to an unreachable collector"),
                ),
                None if exported + lost > 0 => {
                    Some("spans exported or lost without an exporter".to_string())
                }
                _ => None,
            }
        };
        if let Some(p) = problem {
            report
                .problems
                .push(format!("trace export {}: {p}", s.name));
        }
        report.trace_export.push(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_changes_who_goes_first() {
        assert_eq!(rotated(4, 0), vec![0, 1, 2, 3]);
        assert_eq!(rotated(4, 1), vec![1, 2, 3, 0]);
        assert_eq!(rotated(4, 5), vec![1, 2, 3, 0]);
        assert!(rotated(0, 3).is_empty());
    }
}
