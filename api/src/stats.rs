//! Golden signals (success rate, requests per second, latency percentiles)
//! per workload, per edge and per route, from two scrapes of every proxy's
//! `/metrics` some seconds apart. Pure: fetching is the caller's business
//! (`mycelctl stat`/`top` and the controller's dashboard share this).
//!
//! A workload's figures come from its proxies' inbound series (a gateway's
//! from its gateway series); an edge caller → service from the caller's
//! outbound series for that service, paired with the callee proxies whose
//! inbound series name the caller's SPIFFE ID as `peer`.

pub mod histogram;
pub mod prom;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use prom::{parse, ParseError, Sample};

/// The latency histogram every proxy keeps per request.
pub const DURATION: &str = "mycel_request_duration_seconds";
/// The older request counter, used when a proxy has no histogram yet.
pub const REQUESTS: &str = "mycel_requests_total";

/// Who a scrape came from, as the controller lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyInfo {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub spiffe_id: String,
    /// `sidecar` or `gateway`.
    pub mode: String,
}

/// Two scrapes of one proxy, `elapsed` apart.
#[derive(Clone, Debug)]
pub struct ProxyWindow {
    pub proxy: ProxyInfo,
    pub before: Vec<Sample>,
    pub after: Vec<Sample>,
    pub elapsed: Duration,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Requests completed in the window.
    pub requests: f64,
    pub rps: f64,
    /// Share of requests not answered 5xx; `None` without requests.
    pub success_rate: Option<f64>,
    /// `None` without requests or without the latency histogram.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkloadStats {
    pub namespace: String,
    pub name: String,
    pub mode: String,
    /// Proxies scraped for this workload.
    pub proxies: usize,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EdgeStats {
    pub from_namespace: String,
    pub from: String,
    pub from_identity: String,
    /// `outbound` or `gateway`.
    pub direction: String,
    /// The service called, `<name>.<namespace>`.
    pub to: String,
    /// Workloads whose inbound side saw this caller's identity.
    pub to_workloads: Vec<String>,
    /// As the caller measured it.
    #[serde(flatten)]
    pub stats: Stats,
    /// As the callees measured it (mTLS-authenticated caller), if any.
    pub server: Option<Stats>,
    /// The same, per callee workload (a service split across versions).
    #[serde(default)]
    pub servers: BTreeMap<String, Stats>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteStats {
    pub namespace: String,
    pub workload: String,
    pub direction: String,
    pub service: String,
    /// `<namespace>/<name>` of the route; empty when none matched.
    pub route: String,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The longest window of any proxy, in seconds.
    pub window_secs: f64,
    /// False when no proxy had the latency histogram (no percentiles).
    pub latency: bool,
    pub workloads: Vec<WorkloadStats>,
    pub edges: Vec<EdgeStats>,
    pub routes: Vec<RouteStats>,
}

impl Report {
    /// Keeps what concerns namespace `ns` and workload `name` (edges from
    /// or to it).
    pub fn retain(&mut self, ns: Option<&str>, name: Option<&str>) {
        let ns_ok = |n: &str| ns.is_none_or(|want| want == n);
        let name_ok = |n: &str| name.is_none_or(|want| want == n);
        self.workloads
            .retain(|w| ns_ok(&w.namespace) && name_ok(&w.name));
        self.routes
            .retain(|r| ns_ok(&r.namespace) && name_ok(&r.workload));
        self.edges.retain(|e| {
            let (svc, svc_ns) = split_service(&e.to);
            let from = ns_ok(&e.from_namespace) && name_ok(&e.from);
            let to = ns_ok(svc_ns) && (name_ok(svc) || e.to_workloads.iter().any(|w| name_ok(w)));
            from || to
        });
    }
}

/// `<name>.<namespace>` → (name, namespace).
fn split_service(key: &str) -> (&str, &str) {
    key.split_once('.').unwrap_or((key, ""))
}

/// Increase of one series (labels without `le`) over the window.
#[derive(Clone, Debug, Default)]
struct Series {
    labels: BTreeMap<String, String>,
    count: f64,
    /// (upper bound, cumulative increase), sorted by bound.
    buckets: Vec<(f64, f64)>,
}

impl Series {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Absolute values of one series in one scrape.
#[derive(Default)]
struct Raw {
    count: f64,
    buckets: BTreeMap<u64, (f64, f64)>,
}

fn le_key(le: f64) -> u64 {
    // Bounds are non-negative, so the bit pattern orders like the value.
    le.max(0.0).to_bits()
}

fn collect_histogram(samples: &[Sample]) -> BTreeMap<BTreeMap<String, String>, Raw> {
    let mut out: BTreeMap<BTreeMap<String, String>, Raw> = BTreeMap::new();
    let bucket = format!("{DURATION}_bucket");
    let count = format!("{DURATION}_count");
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        if s.name == bucket {
            let Some(le) = prom_le(s.label("le")) else {
                continue;
            };
            let mut labels = s.labels.clone();
            labels.remove("le");
            out.entry(labels)
                .or_default()
                .buckets
                .insert(le_key(le), (le, s.value));
        } else if s.name == count {
            out.entry(s.labels.clone()).or_default().count = s.value;
        }
    }
    out
}

fn prom_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => v.parse().ok().filter(|x: &f64| *x >= 0.0),
    }
}

/// `mycel_requests_total{direction,service,code}` as count-only series
/// with a `code_class`.
fn collect_counter(samples: &[Sample]) -> BTreeMap<BTreeMap<String, String>, Raw> {
    let mut out: BTreeMap<BTreeMap<String, String>, Raw> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == REQUESTS) {
        if !s.value.is_finite() {
            continue;
        }
        let class = match s.label("code").as_bytes().first() {
            Some(d @ b'1'..=b'5') => format!("{}xx", *d as char),
            _ => "other".to_string(),
        };
        let mut labels = BTreeMap::new();
        for k in ["direction", "service"] {
            labels.insert(k.to_string(), s.label(k).to_string());
        }
        labels.insert("code_class".into(), class);
        out.entry(labels).or_default().count += s.value;
    }
    out
}

/// What each series grew by. A series that went down was reset (the proxy
/// restarted): all of its current value is new, as Prometheus' `increase`
/// assumes. A series absent before started at zero.
fn increases(before: &[Sample], after: &[Sample]) -> (Vec<Series>, bool) {
    let hist_after = collect_histogram(after);
    let histogram = !hist_after.is_empty();
    let (b, a) = if histogram {
        (collect_histogram(before), hist_after)
    } else {
        (collect_counter(before), collect_counter(after))
    };
    let out = a
        .into_iter()
        .map(|(labels, now)| {
            let then = b.get(&labels);
            let reset = then.is_some_and(|t| {
                t.count > now.count
                    || t.buckets
                        .iter()
                        .any(|(k, (_, v))| now.buckets.get(k).is_some_and(|(_, n)| n < v))
            });
            let base = |k: &u64| {
                if reset {
                    0.0
                } else {
                    then.and_then(|t| t.buckets.get(k)).map_or(0.0, |x| x.1)
                }
            };
            let count = now.count
                - if reset {
                    0.0
                } else {
                    then.map_or(0.0, |t| t.count)
                };
            let buckets = now
                .buckets
                .iter()
                .map(|(k, (le, v))| (*le, v - base(k)))
                .collect();
            Series {
                labels,
                count,
                buckets,
            }
        })
        .collect();
    (out, histogram)
}

/// Requests of several series (possibly of several proxies) added up.
#[derive(Clone, Debug, Default)]
struct Acc {
    requests: f64,
    failures: f64,
    rps: f64,
    buckets: BTreeMap<u64, (f64, f64)>,
    has_buckets: bool,
}

impl Acc {
    fn add(&mut self, s: &Series, elapsed_secs: f64) {
        self.requests += s.count;
        if s.label("code_class") == "5xx" {
            self.failures += s.count;
        }
        if elapsed_secs > 0.0 {
            self.rps += s.count / elapsed_secs;
        }
        for (le, v) in &s.buckets {
            self.has_buckets = true;
            self.buckets.entry(le_key(*le)).or_insert((*le, 0.0)).1 += v;
        }
    }

    fn stats(&self) -> Stats {
        let buckets: Vec<(f64, f64)> = self.buckets.values().copied().collect();
        let q = |q: f64| {
            if self.requests > 0.0 && self.has_buckets {
                histogram::quantile(q, &buckets).map(|s| s * 1000.0)
            } else {
                None
            }
        };
        Stats {
            requests: self.requests,
            rps: self.rps,
            success_rate: (self.requests > 0.0)
                .then(|| (self.requests - self.failures) / self.requests),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }
}

/// The report over every proxy's window.
pub fn compute(windows: &[ProxyWindow]) -> Report {
    let mut report = Report::default();
    let series: Vec<(Vec<Series>, f64)> = windows
        .iter()
        .map(|w| {
            let (s, hist) = increases(&w.before, &w.after);
            report.latency |= hist;
            (s, w.elapsed.as_secs_f64())
        })
        .collect();
    report.window_secs = windows
        .iter()
        .map(|w| w.elapsed.as_secs_f64())
        .fold(0.0, f64::max);

    // Workloads.
    let mut workloads: BTreeMap<(String, String), (String, usize, Acc)> = BTreeMap::new();
    for (w, (ss, secs)) in windows.iter().zip(&series) {
        let own = if w.proxy.mode == "gateway" {
            "gateway"
        } else {
            "inbound"
        };
        let entry = workloads
            .entry((w.proxy.namespace.clone(), w.proxy.workload.clone()))
            .or_insert_with(|| (w.proxy.mode.clone(), 0, Acc::default()));
        entry.1 += 1;
        for s in ss.iter().filter(|s| s.label("direction") == own) {
            entry.2.add(s, *secs);
        }
    }
    report.workloads = workloads
        .into_iter()
        .map(|((namespace, name), (mode, proxies, acc))| WorkloadStats {
            namespace,
            name,
            mode,
            proxies,
            stats: acc.stats(),
        })
        .collect();

    // Edges, keyed by caller workload and called service.
    type EdgeKey = (String, String, String, String, String);
    let mut edges: BTreeMap<EdgeKey, Acc> = BTreeMap::new();
    let mut routes: BTreeMap<EdgeKey, Acc> = BTreeMap::new();
    for (w, (ss, secs)) in windows.iter().zip(&series) {
        for s in ss {
            let dir = s.label("direction");
            if dir == "outbound" || dir == "gateway" {
                let key = (
                    w.proxy.namespace.clone(),
                    w.proxy.workload.clone(),
                    w.proxy.spiffe_id.clone(),
                    dir.to_string(),
                    s.label("service").to_string(),
                );
                edges.entry(key).or_default().add(s, *secs);
            }
            let key = (
                w.proxy.namespace.clone(),
                w.proxy.workload.clone(),
                dir.to_string(),
                s.label("service").to_string(),
                s.label("route").to_string(),
            );
            routes.entry(key).or_default().add(s, *secs);
        }
    }
    report.edges = edges
        .into_iter()
        .filter(|(k, _)| !k.4.is_empty())
        .map(
            |((from_namespace, from, from_identity, direction, to), acc)| {
                let (servers, server) = callee_side(windows, &series, &from_identity, &to);
                EdgeStats {
                    from_namespace,
                    from,
                    from_identity,
                    direction,
                    to,
                    to_workloads: servers.keys().cloned().collect(),
                    stats: acc.stats(),
                    server,
                    servers,
                }
            },
        )
        .collect();
    report.routes = routes
        .into_iter()
        .map(
            |((namespace, workload, direction, service, route), acc)| RouteStats {
                namespace,
                workload,
                direction,
                service,
                route,
                stats: acc.stats(),
            },
        )
        .collect();
    report
}

/// The callee proxies of `service` whose inbound series name `caller` as
/// peer, and what they measured for it. Metrics do not say which service
/// a request came in for, so a callee is one in the service's namespace
/// whose workload is named after the service (`reviews`, `reviews-v2`);
/// when none is, every callee in that namespace that saw the caller.
fn callee_side(
    windows: &[ProxyWindow],
    series: &[(Vec<Series>, f64)],
    caller: &str,
    service: &str,
) -> (BTreeMap<String, Stats>, Option<Stats>) {
    let (svc, svc_ns) = split_service(service);
    if caller.is_empty() {
        return (BTreeMap::new(), None);
    }
    let saw_caller = |ss: &Vec<Series>| {
        ss.iter()
            .any(|s| s.label("direction") == "inbound" && s.label("peer") == caller)
    };
    let candidates: Vec<usize> = windows
        .iter()
        .enumerate()
        .filter(|(i, w)| w.proxy.namespace == svc_ns && saw_caller(&series[*i].0))
        .map(|(i, _)| i)
        .collect();
    let named = |i: &usize| {
        let n = &windows[*i].proxy.workload;
        n == svc || n.strip_prefix(svc).is_some_and(|r| r.starts_with('-'))
    };
    let chosen: Vec<usize> = if candidates.iter().any(named) {
        candidates.into_iter().filter(named).collect()
    } else {
        candidates
    };
    if chosen.is_empty() {
        return (BTreeMap::new(), None);
    }
    let mut acc = Acc::default();
    let mut each: BTreeMap<String, Acc> = BTreeMap::new();
    for i in chosen {
        let mine = each.entry(windows[i].proxy.workload.clone()).or_default();
        let (ss, secs) = &series[i];
        for s in ss
            .iter()
            .filter(|s| s.label("direction") == "inbound" && s.label("peer") == caller)
        {
            acc.add(s, *secs);
            mine.add(s, *secs);
        }
    }
    let each = each.into_iter().map(|(k, a)| (k, a.stats())).collect();
    (each, Some(acc.stats()))
}

#[cfg(test)]
mod tests;
