//! What a run found, as JSON (the record), markdown (the table people read)
//! and an SVG plot of latency against rate.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::client::Proto;
use crate::cpscale::CpReport;
use crate::probe::{BulkResult, HandshakeResult, RefusalCheck};
use crate::setup::collector::ExportCounters;
use crate::setup::gateway::{self, FrontCheck, PolicyDecisions};
use crate::stats::{ratio, Added, Summary};

pub mod pods;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mb: u64,
    pub kernel: String,
    pub load_avg_at_start: String,
    pub nginx: String,
    pub haproxy: String,
    /// Flags given to every mycel-proxy on top of the harness's own
    /// (`MYCEL_BENCH_PROXY_ARGS`).
    #[serde(default)]
    pub proxy_args: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigInfo {
    pub name: String,
    pub notes: Vec<String>,
    pub refusal_checks: Vec<RefusalCheck>,
    /// What an HTTPS front of the gateway scenario answered with and
    /// without the token before the measurement.
    #[serde(default)]
    pub front_check: Option<FrontCheck>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRow {
    pub config: String,
    pub proto: Proto,
    pub rate: u64,
    pub achieved_rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Errors by kind (`status 429`, `timeout`, ...).
    #[serde(default)]
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Summary,
    /// Each round's own percentiles (`latency` is of all rounds merged, so
    /// one round that hit a stall of the machine sets its tail).
    #[serde(default)]
    pub rounds: Vec<Summary>,
    /// Over direct at the same protocol and rate.
    pub added: Option<Added>,
    pub p99_ratio_to_direct: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub config: String,
    pub proto: Proto,
    pub connections: usize,
    pub rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    #[serde(default)]
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Summary,
    pub ratio_to_direct: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResourceRow {
    pub config: String,
    pub role: String,
    pub processes: usize,
    pub idle_rss_kb: u64,
    /// Largest RSS sampled right after a load run.
    pub loaded_rss_kb: u64,
    /// VmHWM at the end of the run (peak RSS).
    pub peak_rss_kb: u64,
    pub cpu_s: f64,
    pub requests: u64,
    pub cpu_s_per_1k_requests: f64,
    /// The same over the open-loop (fixed rate) runs only: the cost at
    /// 500-2,000 rps, without the batching a saturated proxy gets.
    pub open_loop_cpu_s: f64,
    pub open_loop_requests: u64,
    pub open_loop_cpu_s_per_1k_requests: f64,
    /// Largest RSS sampled right after a fixed-rate run (at most 2,000 rps
    /// in the default plans): the memory the goal "12 MB at 2,000 rps" is
    /// about, without the saturated runs.
    #[serde(default)]
    pub open_loop_rss_kb: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandshakeRow {
    pub config: String,
    pub result: HandshakeResult,
    /// Connections then held open to the same port, one request each.
    #[serde(default)]
    pub held: u64,
    /// What each held connection added to the accepting proxy's anonymous
    /// memory (RssAnon), kB: a pooled peer's cost on that side.
    #[serde(default)]
    pub server_kb_per_held: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TcpRow {
    pub config: String,
    pub result: BulkResult,
}

/// What became of the spans of one configuration: each proxy's export
/// counters read from its `/metrics` after the load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceRow {
    pub config: String,
    /// Requests the harness sent through the configuration, warm-ups
    /// included (each makes a client and a server span when traced).
    pub requests_sent: u64,
    /// Seconds between the last load run and the reading.
    pub read_after_s: f64,
    /// The collector's kind (None: no exporter).
    pub collector: Option<String>,
    /// OTLP transport.
    pub protocol: Option<String>,
    pub client: Option<ExportCounters>,
    pub server: Option<ExportCounters>,
    /// Spans the live receiver holds (it keeps at most 20,000).
    pub collector_spans_held: Option<u64>,
    /// Connections the black hole accepted (and never answered).
    pub collector_connections: Option<u64>,
    /// CPU seconds of the collector's thread in the harness process over
    /// the whole run (it shares the machine with the proxies).
    #[serde(default)]
    pub collector_cpu_s: Option<f64>,
    pub read_errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub mode: String,
    pub started_unix: u64,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub configs: Vec<ConfigInfo>,
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    pub resources: Vec<ResourceRow>,
    pub handshakes: Vec<HandshakeRow>,
    pub tcp: Vec<TcpRow>,
    pub control_plane: Option<CpReport>,
    /// Trace export counters (tracing configurations).
    #[serde(default)]
    pub trace_export: Vec<TraceRow>,
    /// The Mycel gateways' policy decisions after the load (gateway
    /// scenario).
    #[serde(default)]
    pub gateway_policy: Vec<PolicyDecisions>,
    /// New connection per request, closed loop (`close` scenario).
    #[serde(default)]
    pub close: Vec<ThroughputRow>,
    /// Bulk downloads over one connection (`bulk` scenario).
    #[serde(default)]
    pub bulk: Vec<pods::BulkRow>,
    /// The pod scenario (network namespaces, the transparent path).
    #[serde(default)]
    pub pods: Option<pods::PodsReport>,
    /// Configurations or parts that could not run, and why.
    pub problems: Vec<String>,
}

/// What a configuration's added latency and throughput ratio are against:
/// `direct-tls` for the gateway scenario's HTTPS fronts, `direct` for the
/// others.
pub fn baseline_of(config: &str) -> &'static str {
    if gateway::is_config(config) {
        gateway::DIRECT_TLS
    } else {
        "direct"
    }
}

/// Fills `added` and the ratios from the baseline rows ([`baseline_of`]).
pub fn compare_to_direct(r: &mut Report) {
    let direct: Vec<LatencyRow> = r
        .latency
        .iter()
        .filter(|l| l.config == "direct" || l.config == gateway::DIRECT_TLS)
        .cloned()
        .collect();
    for row in &mut r.latency {
        let base = baseline_of(&row.config);
        if let Some(d) = direct
            .iter()
            .find(|d| d.config == base && d.proto == row.proto && d.rate == row.rate)
        {
            row.added = Some(crate::stats::added(&row.latency, &d.latency));
            row.p99_ratio_to_direct = ratio(row.latency.p99_us, d.latency.p99_us);
        }
    }
    let direct: Vec<ThroughputRow> = r
        .throughput
        .iter()
        .filter(|l| l.config == "direct" || l.config == gateway::DIRECT_TLS)
        .cloned()
        .collect();
    for row in &mut r.throughput {
        let base = baseline_of(&row.config);
        if let Some(d) = direct
            .iter()
            .find(|d| d.config == base && d.proto == row.proto && d.connections == row.connections)
        {
            row.ratio_to_direct = ratio(row.rps, d.rps);
        }
    }
    let direct = r.close.iter().find(|c| c.config == "direct").map(|c| c.rps);
    for row in &mut r.close {
        row.ratio_to_direct = direct.and_then(|d| ratio(row.rps, d));
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// `errors/requests`, and the kinds when there are errors
/// (`3/2000 (status 429: 3)`), so a refusal shows as one.
fn errors_cell(errors: u64, ok: u64, kinds: &BTreeMap<String, u64>) -> String {
    let mut s = format!("{errors}/{}", ok + errors);
    if errors > 0 && !kinds.is_empty() {
        let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = write!(s, " ({})", k.join(", "));
    }
    s
}

/// A markdown table from a header and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "Run: scenario `{}`, mode `{}`, {:.0} s. Machine: {} CPUs ({}), {} MB RAM, kernel {}, load average at start {}.\n",
        r.scenario, r.mode, r.wall_seconds, m.cpus, m.cpu_model, m.mem_total_mb, m.kernel, m.load_avg_at_start
    );
    if !m.proxy_args.is_empty() {
        let _ = writeln!(
            s,
            "Every mycel-proxy also had `{}` ({}).\n",
            m.proxy_args.join(" "),
            crate::PROXY_ARGS_ENV
        );
    }
    s.push_str(&pods::markdown(r));
    s.push_str(&pods::loopback_markdown(r));
    if !r.trace_export.is_empty() {
        s.push_str(&tracing_markdown(r));
    }
    if r.configs.iter().any(|c| gateway::is_config(&c.name)) {
        s.push_str(&gateway_markdown(r));
    }
    if !r.latency.is_empty() {
        let _ = writeln!(
            s,
            "### Latency, open loop (µs; added = over direct at the same rate; over direct-tls for the HTTPS fronts of the gateway scenario)\n"
        );
        let rows: Vec<Vec<String>> = r
            .latency
            .iter()
            .map(|l| {
                let a = l.added.unwrap_or_default();
                let added = |v: f64| {
                    if l.config == "direct" || l.added.is_none() {
                        "-".to_string()
                    } else {
                        f1(v)
                    }
                };
                vec![
                    l.config.clone(),
                    l.proto.as_str().into(),
                    l.rate.to_string(),
                    f1(l.latency.p50_us),
                    f1(l.latency.p90_us),
                    f1(l.latency.p99_us),
                    f1(l.latency.p999_us),
                    f1(l.latency.max_us),
                    added(a.p50_us),
                    added(a.p90_us),
                    added(a.p99_us),
                    added(a.p999_us),
                    opt(l.p99_ratio_to_direct, |v| format!("{v:.2}")),
                    errors_cell(l.errors, l.ok, &l.error_kinds),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "proto",
                "rps",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                "+p50",
                "+p90",
                "+p99",
                "+p99.9",
                "p99 ÷ direct",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    if !r.throughput.is_empty() {
        let _ = writeln!(s, "### Maximum throughput, closed loop\n");
        let rows: Vec<Vec<String>> = r
            .throughput
            .iter()
            .map(|t| {
                vec![
                    t.config.clone(),
                    t.proto.as_str().into(),
                    t.connections.to_string(),
                    format!("{:.0}", t.rps),
                    opt(t.ratio_to_direct, |v| format!("{v:.2}")),
                    f1(t.latency.p50_us),
                    f1(t.latency.p99_us),
                    errors_cell(t.errors, t.ok, &t.error_kinds),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "proto",
                "conns",
                "rps",
                "÷ direct",
                "p50 µs",
                "p99 µs",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    if !r.resources.is_empty() {
        let _ = writeln!(s, "### Proxy processes: CPU and memory\n");
        let rows: Vec<Vec<String>> = r
            .resources
            .iter()
            .map(|x| {
                vec![
                    x.config.clone(),
                    x.role.clone(),
                    x.processes.to_string(),
                    format!("{:.1}", x.idle_rss_kb as f64 / 1024.0),
                    format!("{:.1}", x.open_loop_rss_kb as f64 / 1024.0),
                    format!("{:.1}", x.loaded_rss_kb as f64 / 1024.0),
                    format!("{:.1}", x.peak_rss_kb as f64 / 1024.0),
                    format!("{:.3}", x.open_loop_cpu_s_per_1k_requests),
                    format!("{:.3}", x.cpu_s_per_1k_requests),
                    format!("{:.2}", x.cpu_s),
                    x.requests.to_string(),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "process",
                "procs",
                "RSS idle MB",
                "RSS after fixed rate MB",
                "RSS after any load MB",
                "peak RSS MB",
                "CPU s / 1k req (fixed rate)",
                "CPU s / 1k req (all)",
                "CPU s",
                "requests",
            ],
            &rows,
        ));
        s.push('\n');
    }
    if !r.handshakes.is_empty() {
        let _ = writeln!(
            s,
            "### Full mTLS handshakes on new connections (to the mesh-side port)\n"
        );
        let rows: Vec<Vec<String>> = r
            .handshakes
            .iter()
            .map(|h| {
                vec![
                    h.config.clone(),
                    format!("{:.0}", h.result.per_second),
                    f1(h.result.latency.p50_us),
                    f1(h.result.latency.p99_us),
                    format!(
                        "{}/{}",
                        h.result.errors,
                        h.result.handshakes + h.result.errors
                    ),
                    match h.server_kb_per_held {
                        Some(kb) => format!("{kb:.1} ({})", h.held),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "handshakes/s",
                "p50 µs",
                "p99 µs",
                "errors",
                "server side kB per held connection (connections)",
            ],
            &rows,
        ));
        s.push('\n');
    }
    if !r.tcp.is_empty() {
        let _ = writeln!(s, "### Bulk TCP\n");
        let rows: Vec<Vec<String>> = r
            .tcp
            .iter()
            .map(|t| {
                vec![
                    t.config.clone(),
                    format!("{:.0}", t.result.bytes as f64 / 1e6),
                    format!("{:.2}", t.result.seconds),
                    format!("{:.0}", t.result.mb_per_s),
                ]
            })
            .collect();
        s.push_str(&table(&["config", "MB sent", "seconds", "MB/s"], &rows));
        s.push('\n');
    }
    if let Some(cp) = &r.control_plane {
        s.push_str(&crate::cpscale::markdown(cp));
    }
    let checks: Vec<Vec<String>> = r
        .configs
        .iter()
        .flat_map(|c| {
            c.refusal_checks.iter().map(move |k| {
                vec![
                    c.name.clone(),
                    k.port.to_string(),
                    k.plaintext.clone(),
                    k.tls_without_cert.clone(),
                    if k.refused { "yes".into() } else { "NO".into() },
                ]
            })
        })
        .collect();
    if !checks.is_empty() {
        let _ = writeln!(s, "### Mesh-side ports refuse clients without mTLS\n");
        s.push_str(&table(
            &[
                "config",
                "port",
                "plaintext HTTP",
                "TLS without client cert",
                "refused",
            ],
            &checks,
        ));
        s.push('\n');
    }
    for p in &r.problems {
        let _ = writeln!(s, "- problem: {p}");
    }
    s
}

/// The gateway scenario's own tables: latency of each HTTPS front with
/// what it adds over `direct-tls` and what a policy adds over
/// `gateway-tls`; throughput, CPU and memory per configuration (all its
/// proxy processes summed); and what each front enforced.
pub fn gateway_markdown(r: &Report) -> String {
    let mut s = String::new();
    let lat: Vec<&LatencyRow> = r
        .latency
        .iter()
        .filter(|l| gateway::is_config(&l.config))
        .collect();
    if !lat.is_empty() {
        let _ = writeln!(
            s,
            "### Gateway: HTTPS fronts, open-loop latency (µs; + = over `{}` at the same protocol and rate; Δ = config − `{}`)\n",
            gateway::DIRECT_TLS,
            gateway::GATEWAY_PLAIN
        );
        let mut rows = Vec::new();
        for l in &lat {
            let find = |name: &str| {
                lat.iter()
                    .find(|b| b.config == name && b.proto == l.proto && b.rate == l.rate)
            };
            let against = |name: &str, f: fn(&LatencyRow) -> Option<f64>| match find(name) {
                Some(b) if l.config != name => match (f(l), f(b)) {
                    (Some(v), Some(w)) => signed(v - w),
                    _ => "-".into(),
                },
                _ => "-".into(),
            };
            let policy = gateway::is_config(&l.config)
                && l.config.starts_with(gateway::GATEWAY_PLAIN)
                && l.config != gateway::GATEWAY_PLAIN;
            let delta = |f: fn(&LatencyRow) -> Option<f64>| {
                if policy {
                    against(gateway::GATEWAY_PLAIN, f)
                } else {
                    "-".into()
                }
            };
            rows.push(vec![
                l.proto.as_str().into(),
                l.rate.to_string(),
                l.config.clone(),
                format!("{:.0}", l.latency.p50_us),
                format!("{:.0}", l.latency.p90_us),
                format!("{:.0}", l.latency.p99_us),
                format!("{:.0}", l.latency.max_us),
                l.rounds
                    .iter()
                    .map(|r| format!("{:.0}", r.p99_us))
                    .collect::<Vec<_>>()
                    .join(", "),
                against(gateway::DIRECT_TLS, |x| Some(x.latency.p50_us)),
                against(gateway::DIRECT_TLS, |x| Some(x.latency.p99_us)),
                delta(|x| Some(x.latency.p50_us)),
                delta(median_round_p99),
                errors_cell(l.errors, l.ok, &l.error_kinds),
            ]);
        }
        s.push_str(&table(
            &[
                "proto",
                "rps",
                "config",
                "p50",
                "p90",
                "p99",
                "max",
                "p99 of each round",
                "+p50",
                "+p99",
                "Δp50",
                "Δ median round p99",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    let configs: Vec<&ConfigInfo> = r
        .configs
        .iter()
        .filter(|c| gateway::is_config(&c.name))
        .collect();
    let mut shapes: Vec<(Proto, usize)> = Vec::new();
    for t in r
        .throughput
        .iter()
        .filter(|t| gateway::is_config(&t.config))
    {
        if !shapes.contains(&(t.proto, t.connections)) {
            shapes.push((t.proto, t.connections));
        }
    }
    let mut header: Vec<String> = vec!["config".into()];
    header.extend(shapes.iter().map(|(p, c)| match p {
        Proto::Http1 => format!("max rps {} ×{c} conns", p.as_str()),
        _ => format!("max rps {} ×{c} streams", p.as_str()),
    }));
    header.extend(
        [
            "CPU s / 1k req, fixed rate",
            "CPU s / 1k req, all runs",
            "RSS idle MB",
            "RSS after fixed rate MB",
            "peak RSS MB",
        ]
        .map(String::from),
    );
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            let mut cells = vec![c.name.clone()];
            for (p, n) in &shapes {
                cells.push(
                    r.throughput
                        .iter()
                        .find(|t| t.config == c.name && t.proto == *p && t.connections == *n)
                        .map_or("-".into(), |t| {
                            let mut v = format!("{:.0}", t.rps);
                            if t.errors > 0 {
                                let _ =
                                    write!(v, " ({})", errors_cell(t.errors, t.ok, &t.error_kinds));
                            }
                            v
                        }),
                );
            }
            let procs: Vec<&ResourceRow> =
                r.resources.iter().filter(|x| x.config == c.name).collect();
            // Several processes: the sum, then each by role.
            let sum = |f: fn(&ResourceRow) -> f64, fmt: fn(f64) -> String| match procs.len() {
                0 => "- (in process)".to_string(),
                1 => fmt(f(procs[0])),
                _ => format!(
                    "{} ({})",
                    fmt(procs.iter().map(|x| f(x)).sum()),
                    procs
                        .iter()
                        .map(|x| format!("{} {}", x.role, fmt(f(x))))
                        .collect::<Vec<_>>()
                        .join(" + ")
                ),
            };
            let cpu = |v: f64| format!("{v:.3}");
            let mem = |kb: f64| format!("{:.1}", kb / 1024.0);
            cells.push(sum(|x| x.open_loop_cpu_s_per_1k_requests, cpu));
            cells.push(sum(|x| x.cpu_s_per_1k_requests, cpu));
            cells.push(sum(|x| x.idle_rss_kb as f64, mem));
            cells.push(sum(|x| x.open_loop_rss_kb as f64, mem));
            cells.push(sum(|x| x.peak_rss_kb as f64, mem));
            cells
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "### Gateway: throughput (closed loop), CPU and memory of the proxy processes\n"
        );
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        s.push_str(&table(&header, &rows));
        s.push('\n');
    }
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            let check = c.front_check.clone().unwrap_or_default();
            let decisions =
                r.gateway_policy
                    .iter()
                    .find(|d| d.config == c.name)
                    .map_or("-".to_string(), |d| {
                        let all: Vec<String> = d
                            .decisions
                            .iter()
                            .map(|(k, n)| format!("{k} {n}"))
                            .collect();
                        if all.is_empty() {
                            format!("none ({} requests sent)", d.requests_sent)
                        } else {
                            format!("{} ({} requests sent)", all.join(", "), d.requests_sent)
                        }
                    });
            vec![
                c.name.clone(),
                check.with_token,
                check.without_token,
                check.rate_limit_headers.unwrap_or_else(|| "-".into()),
                decisions,
                if check.expected {
                    "yes".into()
                } else {
                    "NO".into()
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "### Gateway: what each front enforced (HTTP/1.1 over TLS, before the load) and its policy decisions (after)\n"
        );
        s.push_str(&table(
            &[
                "config",
                "with the token",
                "without a token",
                "rate-limit headers",
                "policy decisions",
                "as configured",
            ],
            &rows,
        ));
        s.push('\n');
    }
    s
}

/// The configuration every tracing configuration is compared with.
const TRACE_BASELINE: &str = "mycel";

fn is_trace_config(name: &str) -> bool {
    name == TRACE_BASELINE || name.starts_with("mycel-trace-")
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{v:.0}")
    } else {
        format!("{v:.0}")
    }
}

/// The median of the rounds' p99 (less moved than the merged p99 by one
/// round that hit a stall of the machine); None without rounds.
fn median_round_p99(l: &LatencyRow) -> Option<f64> {
    let mut v: Vec<f64> = l.rounds.iter().map(|r| r.p99_us).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The tracing scenario's own tables: latency of each exporting pair
/// against the pair without export, then throughput, CPU and what became
/// of the spans.
pub fn tracing_markdown(r: &Report) -> String {
    let mut s = String::new();
    let lat: Vec<&LatencyRow> = r
        .latency
        .iter()
        .filter(|l| is_trace_config(&l.config))
        .collect();
    if !lat.is_empty() {
        let _ = writeln!(
            s,
            "### Tracing export: open-loop latency against `{TRACE_BASELINE}` (µs; Δ = config − `{TRACE_BASELINE}` at the same protocol and rate)\n"
        );
        let mut rows = Vec::new();
        for l in &lat {
            let base = lat
                .iter()
                .find(|b| b.config == TRACE_BASELINE && b.proto == l.proto && b.rate == l.rate);
            let delta = |f: fn(&Summary) -> f64| match base {
                Some(b) if l.config != TRACE_BASELINE => signed(f(&l.latency) - f(&b.latency)),
                _ => "-".into(),
            };
            let round_p99 = median_round_p99(l);
            let round_delta = match (base.and_then(|b| median_round_p99(b)), round_p99) {
                (Some(b), Some(v)) if l.config != TRACE_BASELINE => signed(v - b),
                _ => "-".into(),
            };
            rows.push(vec![
                l.proto.as_str().into(),
                l.rate.to_string(),
                l.config.clone(),
                format!("{:.0}", l.latency.p50_us),
                format!("{:.0}", l.latency.p99_us),
                format!("{:.0}", l.latency.p999_us),
                format!("{:.0}", l.latency.max_us),
                delta(|x| x.p50_us),
                delta(|x| x.p99_us),
                delta(|x| x.p999_us),
                l.rounds
                    .iter()
                    .map(|r| format!("{:.0}", r.p99_us))
                    .collect::<Vec<_>>()
                    .join(", "),
                round_p99.map_or("-".into(), |v| format!("{v:.0}")),
                round_delta,
                format!("{}/{}", l.errors, l.ok + l.errors),
            ]);
        }
        s.push_str(&table(
            &[
                "proto",
                "rps",
                "config",
                "p50",
                "p99",
                "p99.9",
                "max",
                "Δp50",
                "Δp99",
                "Δp99.9",
                "p99 of each round",
                "median round p99",
                "Δ median round p99",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    let mut shapes: Vec<(Proto, usize)> = Vec::new();
    for t in &r.throughput {
        if !shapes.contains(&(t.proto, t.connections)) {
            shapes.push((t.proto, t.connections));
        }
    }
    let mut header: Vec<String> = vec!["config".into()];
    header.extend(
        shapes
            .iter()
            .map(|(p, c)| format!("max rps {} ×{c}", p.as_str())),
    );
    header.extend(
        [
            "CPU s / 1k req, fixed rate (client / server)",
            "CPU s / 1k req, all (client / server)",
            "requests sent",
            "spans exported (client / server)",
            "spans dropped (client / server)",
            "failed export batches (client / server)",
        ]
        .map(String::from),
    );
    let pair = |row: &TraceRow, f: fn(&ExportCounters) -> u64| {
        let one =
            |c: &Option<ExportCounters>| c.as_ref().map_or("?".to_string(), |c| f(c).to_string());
        format!("{} / {}", one(&row.client), one(&row.server))
    };
    let cpu = |config: &str, f: fn(&ResourceRow) -> f64| {
        let one = |role: &str| {
            r.resources
                .iter()
                .find(|x| x.config == config && x.role == role)
                .map_or("-".to_string(), |x| format!("{:.3}", f(x)))
        };
        format!("{} / {}", one("client-side"), one("server-side"))
    };
    let rows: Vec<Vec<String>> = r
        .trace_export
        .iter()
        .map(|row| {
            let mut cells = vec![row.config.clone()];
            for (p, c) in &shapes {
                cells.push(
                    r.throughput
                        .iter()
                        .find(|t| t.config == row.config && t.proto == *p && t.connections == *c)
                        .map_or("-".into(), |t| format!("{:.0}", t.rps)),
                );
            }
            cells.push(cpu(&row.config, |x| x.open_loop_cpu_s_per_1k_requests));
            cells.push(cpu(&row.config, |x| x.cpu_s_per_1k_requests));
            cells.push(row.requests_sent.to_string());
            cells.push(pair(row, |c| c.exported));
            cells.push(pair(row, |c| c.dropped));
            cells.push(pair(row, |c| c.export_failures));
            cells
        })
        .collect();
    let _ = writeln!(
        s,
        "### Tracing export: throughput, CPU per request and what became of the spans\n"
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    s.push_str(&table(&header, &rows));
    let read_after = r.trace_export.first().map_or(0.0, |t| t.read_after_s);
    let _ = writeln!(
        s,
        "\nCounters read from each proxy's `/metrics` {read_after:.0} s after the last load run. Every traced request makes a client span (client side) and a server span (server side)."
    );
    for row in &r.trace_export {
        if let Some(n) = row.collector_spans_held {
            let _ = writeln!(
                s,
                "{}: the receiver held {n} spans at the end (it keeps the latest 20,000).",
                row.config
            );
        }
        if let Some(cpu) = row.collector_cpu_s {
            let _ = writeln!(
                s,
                "{}: the collector's thread used {cpu:.2} CPU s in the harness process ({:.3} s per 1k requests sent), on the same cores as the proxies.",
                row.config,
                cpu * 1000.0 / (row.requests_sent.max(1) as f64)
            );
        }
        if let Some(n) = row.collector_connections {
            let _ = writeln!(
                s,
                "{}: the black hole accepted {n} connections (never read, never answered).",
                row.config
            );
        }
        for e in &row.read_errors {
            let _ = writeln!(s, "{}: counters not read: {e}", row.config);
        }
    }
    s.push('\n');
    s
}

const COLORS: [&str; 8] = [
    "#444444", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
];

/// Latency (p50 solid, p99 dashed) against offered rate for one protocol,
/// one line per configuration; `None` when there is nothing to plot.
pub fn svg(r: &Report, proto: Proto) -> Option<String> {
    svg_of(r, proto, |c| !gateway::is_config(c))
}

/// The same plot for the gateway scenario's HTTPS fronts only (their
/// own file: in `all` they would crowd the plot and their grid differs).
pub fn gateway_svg(r: &Report, proto: Proto) -> Option<String> {
    svg_of(r, proto, gateway::is_config)
}

fn svg_of(r: &Report, proto: Proto, pick: impl Fn(&str) -> bool) -> Option<String> {
    let rows: Vec<&LatencyRow> = r
        .latency
        .iter()
        .filter(|l| l.proto == proto && pick(&l.config))
        .collect();
    let mut configs: Vec<&str> = Vec::new();
    for l in &rows {
        if !configs.contains(&l.config.as_str()) {
            configs.push(&l.config);
        }
    }
    let max_rate = rows.iter().map(|l| l.rate).max()? as f64;
    let max_us = rows
        .iter()
        .map(|l| l.latency.p99_us)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let (w, h, ml, mr, mt, mb) = (760.0, 440.0, 70.0, 170.0, 40.0, 50.0);
    let x = |rate: f64| ml + rate / max_rate * (w - ml - mr);
    let y = |us: f64| h - mb - us / max_us * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{ml}\" y=\"22\" font-size=\"14\">Latency vs rate, {} (solid p50, dashed p99), {} mode</text>",
        proto.as_str(),
        r.mode
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for i in 0..=5 {
        let v = max_us * i as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text><line x1=\"{ml}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            ml - 6.0,
            y(v) + 4.0,
            y(v),
            w - mr,
            y(v)
        );
    }
    let mut rates: Vec<u64> = rows.iter().map(|l| l.rate).collect();
    rates.sort_unstable();
    rates.dedup();
    for rate in &rates {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{rate}</text>",
            x(*rate as f64),
            h - mb + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">requests per second</text>",
        (ml + w - mr) / 2.0,
        h - 10.0
    );
    let _ = writeln!(s, "<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">latency µs</text>", h / 2.0, h / 2.0);
    for (i, c) in configs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<&&LatencyRow> = rows.iter().filter(|l| l.config == *c).collect();
        pts.sort_by_key(|l| l.rate);
        for (dash, pick) in [
            (
                "",
                (|l: &LatencyRow| l.latency.p50_us) as fn(&LatencyRow) -> f64,
            ),
            (" stroke-dasharray=\"6 4\"", |l: &LatencyRow| {
                l.latency.p99_us
            }),
        ] {
            let path: Vec<String> = pts
                .iter()
                .map(|l| format!("{:.1},{:.1}", x(l.rate as f64), y(pick(l))))
                .collect();
            let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>", path.join(" "));
            for l in &pts {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                    x(l.rate as f64),
                    y(pick(l))
                );
            }
        }
        let ly = mt + 20.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{c}</text>",
            w - mr + 15.0,
            w - mr + 40.0,
            w - mr + 46.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, rate: u64, p50: f64, p99: f64) -> LatencyRow {
        LatencyRow {
            config: config.into(),
            proto: Proto::Http1,
            rate,
            achieved_rps: rate as f64,
            ok: 100,
            errors: 0,
            first_error: None,
            error_kinds: BTreeMap::new(),
            latency: Summary {
                count: 100,
                p50_us: p50,
                p90_us: p50,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
                mean_us: p50,
            },
            rounds: Vec::new(),
            added: None,
            p99_ratio_to_direct: None,
        }
    }

    #[test]
    fn tracing_tables_compare_with_the_plain_pair_round_by_round() {
        let with_rounds = |config: &str, p99s: &[f64]| {
            let mut r = row(config, 1000, 500.0, 3000.0);
            r.rounds = p99s
                .iter()
                .map(|&p99| Summary {
                    p99_us: p99,
                    ..r.latency
                })
                .collect();
            r
        };
        let counters = |exported, dropped, export_failures| {
            Some(ExportCounters {
                exported,
                dropped,
                export_failures,
            })
        };
        let r = Report {
            latency: vec![
                with_rounds("mycel", &[2000.0, 900_000.0, 3000.0]),
                with_rounds("mycel-trace-dead", &[2500.0, 4000.0]),
            ],
            trace_export: vec![
                TraceRow {
                    config: "mycel".into(),
                    requests_sent: 100,
                    client: counters(0, 0, 0),
                    server: counters(0, 0, 0),
                    ..TraceRow::default()
                },
                TraceRow {
                    config: "mycel-trace-dead".into(),
                    requests_sent: 100,
                    client: counters(0, 60, 4),
                    server: None,
                    collector_cpu_s: Some(0.5),
                    ..TraceRow::default()
                },
            ],
            ..Report::default()
        };
        let md = tracing_markdown(&r);
        assert!(
            md.contains("| http1 | 1000 | mycel | 500 | 3000 | 3000 | 3000 | - | - | - | 2000, 900000, 3000 | 3000 | - | 0/100 |"),
            "{md}"
        );
        // Median of an even count is the mean of the middle two: 3250.
        assert!(
            md.contains("| http1 | 1000 | mycel-trace-dead | 500 | 3000 | 3000 | 3000 | 0 | 0 | 0 | 2500, 4000 | 3250 | +250 | 0/100 |"),
            "{md}"
        );
        assert!(
            md.contains("| mycel-trace-dead | - / - | - / - | 100 | 0 / ? | 60 / ? | 4 / ? |"),
            "{md}"
        );
        assert!(md.contains("5.000 s per 1k requests sent"), "{md}");
    }

    #[test]
    fn gateway_rows_are_compared_with_direct_tls_and_the_plain_gateway() {
        let config = |name: &str, expected: bool| ConfigInfo {
            name: name.into(),
            notes: Vec::new(),
            refusal_checks: Vec::new(),
            front_check: Some(FrontCheck {
                with_token: "200".into(),
                without_token: if name == "gateway-tls-jwt" {
                    "401"
                } else {
                    "200"
                }
                .into(),
                rate_limit_headers: None,
                expected,
            }),
        };
        let with_rounds = |config: &str, p50: f64, p99s: &[f64]| {
            let mut r = row(config, 1000, p50, 3000.0);
            r.rounds = p99s
                .iter()
                .map(|&p99| Summary {
                    p99_us: p99,
                    ..r.latency
                })
                .collect();
            r
        };
        let cpu = |role: &str, v: f64| ResourceRow {
            config: "gateway-tls-jwt".into(),
            role: role.into(),
            open_loop_cpu_s_per_1k_requests: v,
            open_loop_rss_kb: 10 * 1024,
            ..ResourceRow::default()
        };
        let mut limited = with_rounds("gateway-tls-jwt", 700.0, &[2000.0, 2600.0]);
        limited.errors = 2;
        limited.error_kinds = BTreeMap::from([("status 429".to_string(), 2)]);
        let mut r = Report {
            configs: vec![
                config("direct-tls", true),
                config("gateway-tls", true),
                config("gateway-tls-jwt", false),
            ],
            latency: vec![
                with_rounds("direct", 100.0, &[]),
                with_rounds("direct-tls", 300.0, &[1000.0, 1200.0]),
                with_rounds("gateway-tls", 600.0, &[1500.0, 2500.0]),
                limited,
            ],
            resources: vec![cpu("gateway", 0.2), cpu("backend-sidecar", 0.05)],
            gateway_policy: vec![PolicyDecisions {
                config: "gateway-tls-jwt".into(),
                decisions: BTreeMap::from([("allowed".to_string(), 98)]),
                requests_sent: 100,
            }],
            ..Report::default()
        };
        compare_to_direct(&mut r);
        // Against direct-tls, not direct.
        assert_eq!(r.latency[2].added.map(|a| a.p50_us), Some(300.0));
        let md = gateway_markdown(&r);
        assert!(
            md.contains("| http1 | 1000 | gateway-tls | 600 | 600 | 3000 | 3000 | 1500, 2500 | +300 | 0 | - | - | 0/100 |"),
            "{md}"
        );
        // Δ against gateway-tls: p50 +100, median round p99 2300 - 2000.
        assert!(
            md.contains("| http1 | 1000 | gateway-tls-jwt | 700 | 700 | 3000 | 3000 | 2000, 2600 | +400 | 0 | +100 | +300 | 2/102 (status 429: 2) |"),
            "{md}"
        );
        assert!(
            md.contains("| gateway-tls-jwt | 0.250 (gateway 0.200 + backend-sidecar 0.050) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| gateway-tls-jwt | 200 | 401 | - | allowed 98 (100 requests sent) | NO |"
            ),
            "{md}"
        );
        assert!(gateway_svg(&r, Proto::Http1).is_some_and(|s| s.contains("gateway-tls-jwt")));
        assert!(svg(&r, Proto::Http1).is_some_and(|s| !s.contains("gateway-tls")));
    }

    #[test]
    fn table_has_header_separator_and_rows() {
        let t = table(
            &["a", "b"],
            &[vec!["1".into(), "2".into()], vec!["3".into(), "4".into()]],
        );
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n");
    }

    #[test]
    fn added_latency_is_against_direct_at_the_same_rate() {
        let mut r = Report {
            latency: vec![
                row("direct", 500, 100.0, 200.0),
                row("mycel", 500, 180.0, 300.0),
                row("mycel", 1000, 1.0, 1.0),
            ],
            ..Report::default()
        };
        compare_to_direct(&mut r);
        let a = r.latency[1].added.unwrap();
        assert_eq!((a.p50_us, a.p99_us), (80.0, 100.0));
        assert_eq!(r.latency[1].p99_ratio_to_direct, Some(1.5));
        assert!(r.latency[2].added.is_none(), "no direct row at 1000 rps");
        let md = markdown(&r);
        assert!(md.contains("| mycel | http1 | 500 | 180.0 | 180.0 | 300.0 | 300.0 | 300.0 | 80.0 | 80.0 | 100.0 | 100.0 | 1.50 | 0/100 |"), "{md}");
        let svg = svg(&r, Proto::Http1).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("mycel") && svg.trim_end().ends_with("</svg>")
        );
        assert!(super::svg(&r, Proto::Grpc).is_none());
    }
}
