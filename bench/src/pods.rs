//! The pod scenario (`mycel-bench pods`): per configuration a client pod
//! and a server pod (network namespaces on one node bridge), the server
//! running nginx with a 17-byte answer. Measured from the client pod, the
//! configurations alternating in rounds: c=1 latency, c=32 throughput, a
//! new connection per request at c=8, one bulk download; RSS of every
//! proxy at start, idle after a warm-up, under load and at peak; CPU per
//! 100,000 requests.
//!
//! Needs root, `ip`, `iptables`, `setpriv`, `curl` and nginx; without them
//! it prints why and measures nothing. HAProxy, nginx's stream module (the
//! `nginx-l4` tunnel) or the Mycel binaries missing skip only their
//! configuration.

pub mod confs;
pub mod netns;
pub mod pairs;
pub mod remote;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pairs::{Ctx, Pair};
use remote::{Spec, Work};

use crate::procstat;
use crate::report::pods::{BulkRow, PodResources, PodRun, PodsReport};
use crate::report::{ConfigInfo, Report};
use crate::setup::mycel::Bins;
use crate::setup::which;
use crate::stats;

/// How long and how much.
#[derive(Clone, Debug)]
pub struct PodPlan {
    pub rounds: usize,
    /// Each request run's length (c1, c32, close-c8).
    pub run: Duration,
    /// c=32 before measuring, once per configuration.
    pub warmup: Duration,
    pub bulk_bytes: u64,
}

impl PodPlan {
    /// About 45 s with the setup.
    pub fn quick() -> PodPlan {
        PodPlan {
            rounds: 2,
            run: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            bulk_bytes: 64_000_000,
        }
    }

    /// About 7 minutes.
    pub fn full() -> PodPlan {
        PodPlan {
            rounds: 3,
            run: Duration::from_secs(10),
            warmup: Duration::from_secs(3),
            bulk_bytes: 1_000_000_000,
        }
    }
}

/// The request shapes: name, connections, a new connection per request.
const SHAPES: [(&str, usize, bool); 3] =
    [("c1", 1, false), ("c32", 32, false), ("close-c8", 8, true)];

/// Upper bound on the requests of one run (the time ends it first).
const MAX_REQUESTS: u64 = 20_000_000;

/// Runs the scenario; Ctrl-C stops it and still removes every namespace.
pub async fn run(
    plan: PodPlan,
    configs: Vec<String>,
    bins: Option<std::path::PathBuf>,
    report: &mut Report,
) {
    let mut pods = PodsReport::default();
    tokio::select! {
        () = measure(&plan, &configs, bins, report, &mut pods) => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("[bench] pods: interrupted; removing the namespaces");
            report.problems.push("pods: interrupted".into());
        }
    }
    // `measure`'s pairs and node are dropped by now: processes ended,
    // namespaces deleted.
    report.pods = Some(pods);
}

fn skip(pods: &mut PodsReport, why: String) {
    eprintln!("[bench] pods: not measured: {why}");
    pods.skipped.push(why);
}

async fn measure(
    plan: &PodPlan,
    configs: &[String],
    bins: Option<std::path::PathBuf>,
    report: &mut Report,
    pods: &mut PodsReport,
) {
    if let Some(why) = netns::missing_requirements() {
        return skip(pods, format!("all pod configurations: {why}"));
    }
    if which("nginx").is_none() {
        return skip(
            pods,
            "all pod configurations: nginx (the app in the server pods) is not installed (apt-get install -y nginx)".into(),
        );
    }
    let mut node = match netns::Node::new() {
        Ok(n) => n,
        Err(e) => {
            report.problems.push(format!("pods: node namespace: {e}"));
            return;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            report
                .problems
                .push(format!("pods: temporary directory: {e}"));
            return;
        }
    };
    // The sidecars' UID and nginx's workers read files under it.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
    }
    let bins = Bins::find(bins.as_deref());
    let mut started: Vec<Pair> = Vec::new();
    for name in configs {
        let Some(&name) = pairs::CONFIGS.iter().find(|c| **c == name.as_str()) else {
            report.problems.push(format!(
                "pods: unknown configuration {name:?} ({})",
                pairs::CONFIGS.join(", ")
            ));
            continue;
        };
        if name == "haproxy" && which("haproxy").is_none() {
            skip(
                pods,
                "haproxy: not installed (apt-get install -y haproxy)".into(),
            );
            continue;
        }
        if name == "nginx-l4" && !std::path::Path::new(confs::NGINX_STREAM_MODULE).exists() {
            skip(
                pods,
                format!(
                    "nginx-l4: nginx's stream module ({}) is not installed (apt-get install -y libnginx-mod-stream)",
                    confs::NGINX_STREAM_MODULE
                ),
            );
            continue;
        }
        if name == "mycel" {
            if let Err(e) = &bins {
                skip(pods, format!("mycel: {e}"));
                continue;
            }
        }
        let mut ctx = Ctx {
            node: &mut node,
            dir: dir.path(),
            bins: bins.as_ref().ok(),
            bulk_bytes: plan.bulk_bytes,
        };
        match pairs::start(&mut ctx, name).await {
            Ok(pair) => {
                eprintln!(
                    "[bench] pods {name}: ready (client {} {}, server {} {})",
                    pair.client.ns, pair.client.ip, pair.server.ns, pair.server.ip
                );
                report.configs.push(ConfigInfo {
                    name: name.into(),
                    notes: pair.notes.clone(),
                    refusal_checks: Vec::new(),
                    front_check: None,
                });
                started.push(pair);
            }
            Err(e) => {
                eprintln!("[bench] pods {name}: not measured: {e}");
                report
                    .problems
                    .push(format!("pods {name}: not measured: {e}"));
            }
        }
    }
    measure_pairs(plan, &started, report, pods).await;
    for p in &started {
        match p.name {
            "mycel" => captured(p, report),
            "nginx-captured" => redirected(p, report),
            _ => {}
        }
    }
    // Pairs before the node: their processes end, then the namespaces go.
    drop(started);
    drop(node);
}

/// Checks that the Mycel load went through the capture: the client
/// sidecar's count of captured outbound connections to the service goes
/// to the configuration's notes, and none is a problem.
fn captured(p: &Pair, report: &mut Report) {
    let url = format!("http://127.0.0.1:{}/metrics", pairs::SIDECAR_ADMIN);
    let metrics = netns::exec(&p.client.ns, "curl", &["-sf", "-m", "3", &url]).unwrap_or_default();
    let n: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("mycel_captured_connections_total")
                && l.contains(r#"direction="outbound""#)
                && l.contains(r#"target="service""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!("[bench] pods mycel: the client sidecar captured {n:.0} outbound connections to the service");
    if n < 1.0 {
        report.problems.push(
            "pods mycel: the client sidecar counted no captured connection to the service".into(),
        );
    }
    if let Some(info) = report.configs.iter_mut().find(|c| c.name == p.name) {
        info.notes.push(format!(
            "client sidecar's mycel_captured_connections_total{{direction=\"outbound\",target=\"service\"}} after the run: {n:.0}"
        ));
    }
}

fn redirected(p: &Pair, report: &mut Report) {
    let n = match pairs::redirected_connections(p) {
        Ok(n) => n,
        Err(e) => {
            report.problems.push(format!(
                "pods {}: reading the REDIRECT counter: {e}",
                p.name
            ));
            return;
        }
    };
    eprintln!(
        "[bench] pods {}: the client pod's REDIRECT rule took {n} connections",
        p.name
    );
    if n < 1 {
        report.problems.push(format!(
            "pods {}: the client pod's REDIRECT rule took no connection",
            p.name
        ));
    }
    if let Some(info) = report.configs.iter_mut().find(|c| c.name == p.name) {
        info.notes.push(format!(
            "connections through the client pod's REDIRECT rule after the run: {n}"
        ));
    }
}

/// Resources of one watched proxy while the scenario runs.
struct Watch {
    pid: u32,
    row: PodResources,
}

fn sample(pid: u32, ticks: u64) -> procstat::Sample {
    procstat::sample(pid, ticks).unwrap_or_default()
}

async fn measure_pairs(plan: &PodPlan, pairs: &[Pair], report: &mut Report, pods: &mut PodsReport) {
    let ticks = procstat::clock_ticks();
    let mut watches: Vec<Vec<Watch>> = pairs
        .iter()
        .map(|p| {
            p.watched
                .iter()
                .map(|w| {
                    let s = sample(w.pid, ticks);
                    Watch {
                        pid: w.pid,
                        row: PodResources {
                            config: p.name.into(),
                            role: w.role.into(),
                            processes: s.processes,
                            start_rss_kb: s.rss_kb,
                            ..PodResources::default()
                        },
                    }
                })
                .collect()
        })
        .collect();
    let spec = |p: &Pair, work: Work| Spec {
        addr: p.addr,
        authority: p.authority.clone(),
        body_len: confs::BODY.len(),
        work,
    };
    let limit = plan.run + Duration::from_secs(60);
    for (p, ws) in pairs.iter().zip(&mut watches) {
        let warm = spec(
            p,
            Work::Closed {
                conns: 32,
                millis: plan.warmup.as_millis() as u64,
                max_requests: MAX_REQUESTS,
            },
        );
        if let Err(e) = remote::run_in(&p.client.ns, &warm, limit).await {
            report
                .problems
                .push(format!("pods {} warm-up: {e}", p.name));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for w in ws.iter_mut() {
            w.row.idle_rss_kb = sample(w.pid, ticks).rss_kb;
        }
    }
    let mut merged: BTreeMap<(usize, &str), (crate::load::RunResult, PodRun)> = BTreeMap::new();
    let mut bulk: Vec<BulkRow> = pairs
        .iter()
        .map(|p| BulkRow {
            config: p.name.into(),
            bytes: plan.bulk_bytes,
            ..BulkRow::default()
        })
        .collect();
    let t0 = Instant::now();
    for round in 0..plan.rounds.max(1) {
        for (shape, conns, fresh) in SHAPES {
            for i in crate::run::rotated(pairs.len(), round) {
                let (p, ws) = (&pairs[i], &mut watches[i]);
                let millis = plan.run.as_millis() as u64;
                let work = if fresh {
                    Work::NewConnPerRequest {
                        conns,
                        millis,
                        max_requests: MAX_REQUESTS,
                    }
                } else {
                    Work::Closed {
                        conns,
                        millis,
                        max_requests: MAX_REQUESTS,
                    }
                };
                let before: Vec<procstat::Sample> =
                    ws.iter().map(|w| sample(w.pid, ticks)).collect();
                let out = watched_run(&p.client.ns, &spec(p, work), limit, ws, ticks).await;
                let out = match out {
                    Ok(o) => o.into_run(),
                    Err(e) => {
                        report
                            .problems
                            .push(format!("pods {} {shape}: {e}", p.name));
                        continue;
                    }
                };
                let requests = out.ok + out.errors;
                for (w, b) in ws.iter_mut().zip(&before) {
                    let after = sample(w.pid, ticks);
                    *w.row.cpu_s.entry(shape.into()).or_default() += after.cpu_s - b.cpu_s;
                    *w.row.requests.entry(shape.into()).or_default() += requests;
                    w.row.processes = w.row.processes.max(after.processes);
                }
                let sum = stats::summarize(&out.hist);
                eprintln!(
                    "[bench] pods {:8} {shape:8} round {round}: {:7.0} rps  p50 {:7.1} p99 {:8.1} µs  errors {}{}",
                    p.name,
                    out.achieved_rps(),
                    sum.p50_us,
                    sum.p99_us,
                    out.errors,
                    out.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                );
                let rps = out.achieved_rps();
                match merged.get_mut(&(i, shape)) {
                    Some((m, row)) => {
                        row.rounds_rps.push(rps);
                        row.rounds.push(sum);
                        m.absorb(out);
                    }
                    None => {
                        let row = PodRun {
                            config: p.name.into(),
                            shape: shape.into(),
                            connections: conns,
                            new_conn_per_request: fresh,
                            rounds_rps: vec![rps],
                            rounds: vec![sum],
                            ..PodRun::default()
                        };
                        merged.insert((i, shape), (out, row));
                    }
                }
            }
        }
        for i in crate::run::rotated(pairs.len(), round) {
            let (p, ws) = (&pairs[i], &mut watches[i]);
            let work = Work::Download {
                path: confs::BULK_PATH.into(),
                bytes: plan.bulk_bytes,
            };
            match watched_run(&p.client.ns, &spec(p, work), limit, ws, ticks).await {
                Ok(o) => match o.download {
                    Some(d) => {
                        eprintln!(
                            "[bench] pods {:8} bulk     round {round}: {:.0} MB/s",
                            p.name, d.mb_per_s
                        );
                        bulk[i].rounds_mb_per_s.push(d.mb_per_s);
                    }
                    None => {
                        bulk[i].errors += 1;
                        bulk[i].first_error = bulk[i].first_error.take().or(o.first_error);
                    }
                },
                Err(e) => report.problems.push(format!("pods {} bulk: {e}", p.name)),
            }
        }
    }
    eprintln!(
        "[bench] pods: measured in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    for ((_, _), (m, mut row)) in merged {
        row.ok = m.ok;
        row.errors = m.errors;
        row.rps = m.achieved_rps();
        row.latency = stats::summarize(&m.hist);
        row.first_error = m.first_error;
        row.error_kinds = m.error_kinds;
        pods.runs.push(row);
    }
    // In configuration order, shapes in plan order.
    let order = |c: &str| pairs.iter().position(|p| p.name == c).unwrap_or(usize::MAX);
    let shape_order = |s: &str| SHAPES.iter().position(|x| x.0 == s).unwrap_or(usize::MAX);
    pods.runs
        .sort_by_key(|r| (order(&r.config), shape_order(&r.shape)));
    pods.bulk.extend(bulk);
    for ws in watches {
        for mut w in ws {
            let s = sample(w.pid, ticks);
            w.row.peak_rss_kb = s.hwm_kb.max(w.row.load_rss_kb);
            pods.resources.push(w.row);
        }
    }
}

/// One run in the client pod, sampling the proxies' RSS every 100 ms
/// meanwhile.
async fn watched_run(
    ns: &str,
    spec: &Spec,
    limit: Duration,
    ws: &mut [Watch],
    ticks: u64,
) -> Result<remote::Output, remote::RemoteError> {
    let run = remote::run_in(ns, spec, limit);
    tokio::pin!(run);
    loop {
        tokio::select! {
            r = &mut run => return r,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                for w in ws.iter_mut() {
                    let rss = sample(w.pid, ticks).rss_kb;
                    w.row.load_rss_kb = w.row.load_rss_kb.max(rss);
                }
            }
        }
    }
}
