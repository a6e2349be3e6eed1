//! Control-plane scale: many simulated proxies on discovery streams against
//! the real `mycel-controller` process. Measures how long an endpoint change
//! takes to reach every subscribed proxy, the controller's memory and CPU,
//! and the CSR signing rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_api::v1::discovery_client::DiscoveryClient;
use mycel_api::v1::discovery_request::Kind;
use mycel_api::v1::identity_client::IdentityClient;
use mycel_api::v1::{resource, Ack, CertifyRequest, DiscoveryRequest, Hello, Workload};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Identity};

use crate::procstat;
use crate::setup::mycel::{pem_block, pem_chain, Bins, Controller, NAMESPACE};
use crate::setup::{start_err, SetupError};
use crate::stats::{self, histogram, Summary};

/// Streams per HTTP/2 connection to the controller; well under any
/// server stream limit.
const STREAMS_PER_CONN: usize = 50;
/// Longest the harness waits for one change to reach everyone.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct CpPlan {
    /// Simulated proxies (subscribing streams).
    pub proxies: usize,
    /// Services in mesh.yaml.
    pub services: usize,
    /// Registered endpoints per service (registering streams).
    pub endpoints: usize,
    /// Services each proxy subscribes to.
    pub subscriptions_per_proxy: usize,
    /// Endpoint changes timed.
    pub changes: usize,
    pub csrs: usize,
    pub csr_concurrency: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpReport {
    pub plan: Option<CpPlan>,
    /// From the first stream opened until every proxy had its initial view.
    pub initial_sync_seconds: f64,
    /// Per change: time until the last subscribed proxy had it (µs).
    pub change_to_all: Summary,
    /// Per (change, subscribed proxy): time until that proxy had it (µs).
    pub change_to_each: Summary,
    pub deliveries_missed: u64,
    pub controller_idle_rss_kb: u64,
    pub controller_loaded_rss_kb: u64,
    pub controller_peak_rss_kb: u64,
    pub controller_cpu_s_sync: f64,
    pub controller_cpu_s_changes: f64,
    pub csr_signed: u64,
    pub csr_errors: u64,
    pub csr_first_error: Option<String>,
    pub csr_per_second: f64,
    pub csr_latency: Summary,
    pub controller_cpu_ms_per_csr: f64,
}

/// Services proxy `j` subscribes to: `per` consecutive ones from `j * per`.
pub fn subscriptions(j: usize, per: usize, services: usize) -> Vec<usize> {
    let per = per.min(services);
    (0..per).map(|s| (j * per + s) % services.max(1)).collect()
}

fn service_key(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}")
}

fn mesh_yaml(services: usize) -> String {
    (0..services)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {NAMESPACE}}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
            )
        })
        .collect()
}

/// Hands out channels, opening a new connection every STREAMS_PER_CONN.
struct Pool {
    identity: Identity,
    channels: Vec<Channel>,
    used: usize,
}

impl Pool {
    async fn next(&mut self, ctl: &Controller) -> Result<Channel, SetupError> {
        if self.channels.len() * STREAMS_PER_CONN <= self.used {
            self.channels
                .push(ctl.channel(Some(self.identity.clone())).await?);
        }
        self.used += 1;
        self.channels
            .last()
            .cloned()
            .ok_or_else(|| start_err("channel pool", "empty"))
    }
}

/// A client identity from `token` (made by `mycelctl token create` for a
/// service account, with the labels its workloads must register with).
/// Every token is made before the first is used: the controller reads new
/// tokens when one it does not know is presented, at most once a second,
/// so making and using them in turn costs a second each.
async fn identity(ctl: &Controller, token: &str) -> Result<Identity, SetupError> {
    let cert = ctl.certify(ctl.channel(None).await?, token).await?;
    Ok(Identity::from_pem(
        pem_chain(&cert.chain),
        pem_block("PRIVATE KEY", &cert.key_pkcs8),
    ))
}

fn workload(name: &str, sa: &str, app: Option<usize>) -> Workload {
    Workload {
        name: name.into(),
        namespace: NAMESPACE.into(),
        service_account: sa.into(),
        labels: app
            .map(|a| [("app".to_string(), format!("svc-{a}"))].into())
            .unwrap_or_default(),
        address: "127.0.0.1".into(),
        mesh_port: 15006,
        ports: vec![],
        ready: true,
        zone: String::new(),
    }
}

/// What a subscriber saw: the endpoints (workload names) of one service.
struct Update {
    proxy: usize,
    service: String,
    workloads: Vec<String>,
    at: Instant,
}

/// Opens a discovery stream and keeps reading (and ACKing) it; endpoint
/// updates go to `updates` when given. Returns the sender that keeps the
/// stream open.
async fn open_stream(
    channel: Channel,
    hello: Hello,
    proxy: usize,
    updates: Option<mpsc::UnboundedSender<Update>>,
) -> Result<mpsc::Sender<DiscoveryRequest>, SetupError> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Hello(hello)),
    })
    .await
    .map_err(|e| start_err("discovery stream", e))?;
    let mut inbound = DiscoveryClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| start_err("open discovery stream", s.message()))?
        .into_inner();
    let ack_tx = tx.clone();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = inbound.message().await {
            let at = Instant::now();
            if let Some(u) = &updates {
                for r in &msg.resources {
                    if let Some(resource::Body::Endpoints(e)) = &r.body {
                        let _ = u.send(Update {
                            proxy,
                            service: e.service.clone(),
                            workloads: e.endpoints.iter().map(|p| p.workload.clone()).collect(),
                            at,
                        });
                    }
                }
            }
            let ack = DiscoveryRequest {
                kind: Some(Kind::Ack(Ack { nonce: msg.nonce })),
            };
            if ack_tx.send(ack).await.is_err() {
                return;
            }
        }
    });
    Ok(tx)
}

/// The latest endpoints every proxy has seen, keyed by (proxy, service),
/// and how many of those views hold at least `full` endpoints (kept as
/// updates arrive, so checking the initial sync is O(1)).
struct Views {
    latest: HashMap<(usize, String), (Vec<String>, Instant)>,
    full: usize,
    complete: usize,
}

impl Views {
    fn new(full: usize) -> Views {
        Views {
            latest: HashMap::new(),
            full,
            complete: 0,
        }
    }

    fn apply(&mut self, u: Update) {
        let new_len = u.workloads.len();
        let old = self
            .latest
            .insert((u.proxy, u.service), (u.workloads, u.at));
        let old_len = old.map_or(0, |(w, _)| w.len());
        match (old_len >= self.full, new_len >= self.full) {
            (false, true) => self.complete += 1,
            (true, false) => self.complete = self.complete.saturating_sub(1),
            _ => {}
        }
    }

    /// When `proxy` first had a view of `service` holding `workload`
    /// (the time of the update that is its current view).
    fn has(&self, proxy: usize, service: &str, workload: &str) -> Option<Instant> {
        let (names, at) = self.latest.get(&(proxy, service.to_string()))?;
        names.iter().any(|n| n == workload).then_some(*at)
    }
}

fn sample(pid: u32, ticks: u64) -> procstat::Sample {
    procstat::sample(pid, ticks).unwrap_or_default()
}

pub async fn run(bins: &Bins, plan: CpPlan) -> Result<CpReport, SetupError> {
    let dir = tempfile::tempdir()?;
    let ctl = Controller::start(bins, dir.path(), &mesh_yaml(plan.services)).await?;
    let pid = ctl.proc.pid().unwrap_or(0);
    let ticks = procstat::clock_ticks();
    let mut report = CpReport {
        plan: Some(plan),
        ..CpReport::default()
    };
    report.controller_idle_rss_kb = sample(pid, ticks).rss_kb;

    // One identity per service: an endpoint's labels come from its token.
    let tokens = (0..plan.services)
        .map(|i| ctl.token_with_labels(bins, "endpoints", &[&format!("app=svc-{i}")]))
        .collect::<Result<Vec<String>, SetupError>>()?;
    let proxies_token = ctl.token_with_labels(bins, "proxies", &[])?;
    let mut eps = Vec::with_capacity(plan.services);
    for token in &tokens {
        eps.push(Pool {
            identity: identity(&ctl, token).await?,
            channels: vec![],
            used: 0,
        });
    }
    let mut subs = Pool {
        identity: identity(&ctl, &proxies_token).await?,
        channels: vec![],
        used: 0,
    };
    let cpu0 = sample(pid, ticks).cpu_s;
    let start = Instant::now();
    let mut keep = Vec::new();
    for (i, pool) in eps.iter_mut().enumerate() {
        for k in 0..plan.endpoints {
            let name = format!("svc-{i}-{k}");
            let hello = Hello {
                proxy_id: name.clone(),
                workload: Some(workload(&name, "endpoints", Some(i))),
                register: true,
                subscriptions: vec![],
                known: vec![],
                mode: "sidecar".into(),
                gateway: String::new(),
                admin: None,
            };
            keep.push(open_stream(pool.next(&ctl).await?, hello, usize::MAX, None).await?);
        }
    }
    let (utx, mut urx) = mpsc::unbounded_channel();
    let mut subscribers_of: Vec<Vec<usize>> = vec![Vec::new(); plan.services];
    for j in 0..plan.proxies {
        let svcs = subscriptions(j, plan.subscriptions_per_proxy, plan.services);
        for &s in &svcs {
            subscribers_of[s].push(j);
        }
        let name = format!("proxy-{j}");
        let hello = Hello {
            proxy_id: name.clone(),
            workload: Some(workload(&name, "proxies", None)),
            register: false,
            subscriptions: svcs.iter().map(|&s| service_key(s)).collect(),
            known: vec![],
            mode: "sidecar".into(),
            gateway: String::new(),
            admin: None,
        };
        keep.push(open_stream(subs.next(&ctl).await?, hello, j, Some(utx.clone())).await?);
    }
    // Initial sync: every proxy has every subscribed service with all
    // its endpoints.
    let mut views = Views::new(plan.endpoints);
    let want: usize = subscribers_of.iter().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(180);
    while views.complete < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, urx.recv()).await {
            Ok(Some(u)) => views.apply(u),
            _ => {
                return Err(start_err(
                    "control-plane scale",
                    format!(
                        "initial sync incomplete after 180 s: {}/{want} (proxy, service) views",
                        views.complete
                    ),
                ))
            }
        }
    }
    report.initial_sync_seconds = start.elapsed().as_secs_f64();
    let cpu1 = sample(pid, ticks).cpu_s;
    report.controller_cpu_s_sync = cpu1 - cpu0;

    // Endpoint changes: a new endpoint registers; time until each
    // subscriber of its service has it.
    let mut all = histogram();
    let mut each = histogram();
    for e in 0..plan.changes {
        let s = (e * 7) % plan.services.max(1);
        let name = format!("chg-{e}");
        let key = service_key(s);
        let hello = Hello {
            proxy_id: name.clone(),
            workload: Some(workload(&name, "endpoints", Some(s))),
            register: true,
            subscriptions: vec![],
            known: vec![],
            mode: "sidecar".into(),
            gateway: String::new(),
            admin: None,
        };
        let channel = eps[s].next(&ctl).await?;
        let t0 = Instant::now();
        keep.push(open_stream(channel, hello, usize::MAX, None).await?);
        let deadline = t0 + CHANGE_TIMEOUT;
        let mut pending: Vec<usize> = subscribers_of[s].clone();
        let mut last = t0;
        while !pending.is_empty() {
            pending.retain(|&p| match views.has(p, &key, &name) {
                Some(at) => {
                    stats::record(&mut each, at.saturating_duration_since(t0));
                    last = last.max(at);
                    false
                }
                None => true,
            });
            if pending.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, urx.recv()).await {
                Ok(Some(u)) => views.apply(u),
                _ => break,
            }
        }
        report.deliveries_missed += pending.len() as u64;
        if pending.is_empty() {
            stats::record(&mut all, last.saturating_duration_since(t0));
        }
    }
    report.change_to_all = stats::summarize(&all);
    report.change_to_each = stats::summarize(&each);
    let after = sample(pid, ticks);
    report.controller_cpu_s_changes = after.cpu_s - cpu1;
    report.controller_loaded_rss_kb = after.rss_kb;

    csr_rate(&ctl, bins, plan, &mut report, pid, ticks).await?;
    report.controller_peak_rss_kb = sample(pid, ticks).hwm_kb;
    drop(keep);
    Ok(report)
}

async fn csr_rate(
    ctl: &Controller,
    bins: &Bins,
    plan: CpPlan,
    report: &mut CpReport,
    pid: u32,
    ticks: u64,
) -> Result<(), SetupError> {
    let token = ctl.token(bins, "csr")?;
    // Keys and CSRs are made before the clock starts: only signing is timed.
    let mut csrs = Vec::with_capacity(plan.csrs);
    for _ in 0..plan.csrs {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| start_err("key", e))?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| start_err("csr", e))?;
        csrs.push(csr.der().to_vec());
    }
    let csrs = Arc::new(csrs);
    let next = Arc::new(AtomicUsize::new(0));
    let channel = ctl.channel(None).await?;
    let cpu0 = sample(pid, ticks).cpu_s;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.csr_concurrency.max(1) {
        let (csrs, next, token) = (csrs.clone(), next.clone(), token.clone());
        let mut client = IdentityClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut err, mut first) = (0u64, 0u64, None::<String>);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(csr) = csrs.get(i) else { break };
                let t = Instant::now();
                let call = client.certify(CertifyRequest {
                    token: token.clone(),
                    csr_der: csr.clone(),
                    requested_ttl_seconds: 3600,
                });
                match tokio::time::timeout(Duration::from_secs(10), call).await {
                    Ok(Ok(_)) => {
                        stats::record(&mut h, t.elapsed());
                        ok += 1;
                    }
                    Ok(Err(s)) => {
                        err += 1;
                        first.get_or_insert_with(|| s.message().to_string());
                    }
                    Err(_) => {
                        err += 1;
                        first.get_or_insert_with(|| "timeout".into());
                    }
                }
            }
            (h, ok, err, first)
        }));
    }
    let mut h = histogram();
    for t in tasks {
        if let Ok((th, ok, err, first)) = t.await {
            let _ = h.add(&th);
            report.csr_signed += ok;
            report.csr_errors += err;
            if report.csr_first_error.is_none() {
                report.csr_first_error = first;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = sample(pid, ticks).cpu_s - cpu0;
    report.csr_per_second = report.csr_signed as f64 / secs;
    report.csr_latency = stats::summarize(&h);
    report.controller_cpu_ms_per_csr = cpu * 1000.0 / (report.csr_signed.max(1) as f64);
    Ok(())
}

pub fn markdown(cp: &CpReport) -> String {
    use std::fmt::Write;
    let mut s = String::from("### Control plane at scale\n\n");
    if let Some(p) = &cp.plan {
        let _ = writeln!(
            s,
            "{} simulated proxies, each subscribed to {} of {} services; {} endpoints per service ({} registering streams); {} endpoint changes timed; {} CSRs with {} in flight.\n",
            p.proxies,
            p.subscriptions_per_proxy,
            p.services,
            p.endpoints,
            p.services * p.endpoints,
            p.changes,
            p.csrs,
            p.csr_concurrency
        );
    }
    let ms = |us: f64| format!("{:.2}", us / 1000.0);
    s.push_str(&crate::report::table(
        &["measure", "value"],
        &[
            vec![
                "initial sync of all proxies".into(),
                format!("{:.2} s", cp.initial_sync_seconds),
            ],
            vec![
                "change → all subscribers have it, p50 / p99 / max".into(),
                format!(
                    "{} / {} / {} ms",
                    ms(cp.change_to_all.p50_us),
                    ms(cp.change_to_all.p99_us),
                    ms(cp.change_to_all.max_us)
                ),
            ],
            vec![
                "change → one subscriber has it, p50 / p99 / max".into(),
                format!(
                    "{} / {} / {} ms",
                    ms(cp.change_to_each.p50_us),
                    ms(cp.change_to_each.p99_us),
                    ms(cp.change_to_each.max_us)
                ),
            ],
            vec![
                "deliveries missed (10 s limit)".into(),
                cp.deliveries_missed.to_string(),
            ],
            vec![
                "controller RSS idle / loaded / peak".into(),
                format!(
                    "{:.1} / {:.1} / {:.1} MB",
                    cp.controller_idle_rss_kb as f64 / 1024.0,
                    cp.controller_loaded_rss_kb as f64 / 1024.0,
                    cp.controller_peak_rss_kb as f64 / 1024.0
                ),
            ],
            vec![
                "controller CPU: initial sync / changes".into(),
                format!(
                    "{:.2} s / {:.2} s",
                    cp.controller_cpu_s_sync, cp.controller_cpu_s_changes
                ),
            ],
            vec![
                "CSR signing rate, p50 / p99 latency".into(),
                format!(
                    "{:.0} /s, {} / {} ms",
                    cp.csr_per_second,
                    ms(cp.csr_latency.p50_us),
                    ms(cp.csr_latency.p99_us)
                ),
            ],
            vec![
                "controller CPU per CSR".into(),
                format!("{:.2} ms", cp.controller_cpu_ms_per_csr),
            ],
            vec![
                "CSR errors".into(),
                format!(
                    "{} {}",
                    cp.csr_errors,
                    cp.csr_first_error.clone().unwrap_or_default()
                ),
            ],
        ],
    ));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(proxy: usize, names: &[&str]) -> Update {
        Update {
            proxy,
            service: "svc-0.bench".into(),
            workloads: names.iter().map(|n| n.to_string()).collect(),
            at: Instant::now(),
        }
    }

    #[test]
    fn views_count_complete_ones_as_updates_arrive() {
        let mut v = Views::new(2);
        v.apply(update(1, &["a"]));
        assert_eq!(v.complete, 0);
        v.apply(update(1, &["a", "b"]));
        v.apply(update(2, &["a", "b", "c"]));
        assert_eq!(v.complete, 2);
        v.apply(update(1, &["a", "b", "c"]));
        assert_eq!(v.complete, 2, "already complete");
        v.apply(update(2, &["a"]));
        assert_eq!(v.complete, 1, "fell below");
        assert!(v.has(1, "svc-0.bench", "c").is_some());
        assert!(v.has(2, "svc-0.bench", "c").is_none());
        assert!(v.has(3, "svc-0.bench", "a").is_none());
    }

    #[test]
    fn subscriptions_spread_over_services() {
        assert_eq!(subscriptions(0, 3, 10), vec![0, 1, 2]);
        assert_eq!(subscriptions(3, 3, 10), vec![9, 0, 1]);
        assert_eq!(subscriptions(1, 20, 4), vec![0, 1, 2, 3]);
        // Every service gets subscribers when proxies * per >= services.
        let mut seen = [false; 10];
        for j in 0..4 {
            for s in subscriptions(j, 3, 10) {
                seen[s] = true;
            }
        }
        assert!(seen.iter().all(|&b| b));
    }
}
