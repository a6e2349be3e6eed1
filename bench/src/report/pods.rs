//! The pod scenario's rows and tables, and the loopback `close` and `bulk`
//! tables.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::{errors_cell, table, Report};
use crate::stats::Summary;

/// What the pod scenario measured, and what it could not.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodsReport {
    /// Parts not measured and why (not root, a program missing).
    pub skipped: Vec<String>,
    pub runs: Vec<PodRun>,
    pub bulk: Vec<BulkRow>,
    pub resources: Vec<PodResources>,
}

/// One load shape through one configuration, its rounds merged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodRun {
    pub config: String,
    /// `c1`, `c32` or `close-c8`.
    pub shape: String,
    pub connections: usize,
    pub new_conn_per_request: bool,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Over all rounds: requests / seconds of load.
    pub rps: f64,
    pub latency: Summary,
    pub rounds_rps: Vec<f64>,
    pub rounds: Vec<Summary>,
}

/// Downloads of one large body over one connection, one per round.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BulkRow {
    pub config: String,
    pub bytes: u64,
    pub rounds_mb_per_s: Vec<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU of the configuration's proxies (both sides) during the
    /// successful downloads, and the bytes those moved: loopback only.
    #[serde(default)]
    pub cpu_s: f64,
    #[serde(default)]
    pub downloaded: u64,
}

impl BulkRow {
    /// The median round's MB/s (0 without a successful round).
    pub fn median_mb_per_s(&self) -> f64 {
        let mut v = self.rounds_mb_per_s.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// CPU seconds the proxies spent per GB (10⁹ bytes) moved, when
    /// measured.
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        (self.downloaded > 0).then(|| self.cpu_s / (self.downloaded as f64 / 1e9))
    }
}

/// Memory and CPU of one proxy process (tree) of a pod configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodResources {
    pub config: String,
    /// `client pod` or `server pod`.
    pub role: String,
    pub processes: usize,
    /// VmRSS once ready, before any request.
    pub start_rss_kb: u64,
    /// VmRSS half a second after the warm-up.
    pub idle_rss_kb: u64,
    /// Highest VmRSS sampled (every 100 ms) during the measured runs.
    pub load_rss_kb: u64,
    /// VmHWM at the end, or the highest sample when higher.
    pub peak_rss_kb: u64,
    /// CPU seconds and requests of the measured request runs, by shape.
    pub cpu_s: BTreeMap<String, f64>,
    pub requests: BTreeMap<String, u64>,
}

impl PodResources {
    /// CPU seconds per 100,000 requests over `shape`'s runs, or over all
    /// request runs when None.
    pub fn cpu_per_100k(&self, shape: Option<&str>) -> Option<f64> {
        let pick = |k: &String| shape.is_none_or(|s| s == k);
        let cpu: f64 = self
            .cpu_s
            .iter()
            .filter(|(k, _)| pick(k))
            .map(|(_, v)| v)
            .sum();
        let n: u64 = self
            .requests
            .iter()
            .filter(|(k, _)| pick(k))
            .map(|(_, v)| v)
            .sum();
        (n > 0).then(|| cpu * 100_000.0 / n as f64)
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn us(v: f64) -> String {
    format!("{v:.0}")
}

fn configs_of(r: &PodsReport) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for c in r
        .runs
        .iter()
        .map(|x| &x.config)
        .chain(r.bulk.iter().map(|b| &b.config))
    {
        if !seen.contains(c) {
            seen.push(c.clone());
        }
    }
    seen
}

/// The pod scenario's tables.
pub fn markdown(r: &Report) -> String {
    let Some(p) = &r.pods else {
        return String::new();
    };
    let mut s = String::from("### Pods: the transparent path between two network namespaces\n\n");
    for c in &r.configs {
        let _ = writeln!(s, "* `{}`: {}", c.name, c.notes.join("; "));
    }
    for why in &p.skipped {
        let _ = writeln!(s, "* not measured: {why}");
    }
    if !r.configs.is_empty() && p.skipped.is_empty() {
        s.push('\n');
    }
    if !p.skipped.is_empty() {
        s.push('\n');
    }
    let run = |config: &str, shape: &str| {
        p.runs
            .iter()
            .find(|x| x.config == config && x.shape == shape)
    };
    let configs = configs_of(p);
    let direct = |shape: &str| run("direct", shape).map(|d| d.latency);
    let mut rows = Vec::new();
    for c in &configs {
        let Some(x) = run(c, "c1") else { continue };
        let d = direct("c1").filter(|_| c != "direct");
        rows.push(vec![
            c.clone(),
            us(x.latency.p50_us),
            us(x.latency.p90_us),
            us(x.latency.p99_us),
            us(x.latency.p999_us),
            d.map_or("-".into(), |d| {
                format!("{:+.0}", x.latency.p50_us - d.p50_us)
            }),
            d.map_or("-".into(), |d| {
                format!("{:+.0}", x.latency.p99_us - d.p99_us)
            }),
            format!("{:.0}", x.rps),
            errors_cell(x.errors, x.ok, &x.error_kinds),
        ]);
    }
    if !rows.is_empty() {
        s.push_str("One connection, one request at a time (c=1), HTTP/1.1, 17-byte body; µs:\n\n");
        s.push_str(&table(
            &[
                "config",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "p50 − direct",
                "p99 − direct",
                "rps",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    let mut rows = Vec::new();
    for c in &configs {
        let cell = |shape: &str| {
            run(c, shape).map_or("-".into(), |x| {
                let rounds: Vec<String> = x.rounds_rps.iter().map(|v| format!("{v:.0}")).collect();
                format!("{:.0} ({})", x.rps, rounds.join(", "))
            })
        };
        let p99 = |shape: &str| run(c, shape).map_or("-".into(), |x| us(x.latency.p99_us));
        let errors: u64 = p
            .runs
            .iter()
            .filter(|x| &x.config == c)
            .map(|x| x.errors)
            .sum();
        let bulk = p
            .bulk
            .iter()
            .find(|b| &b.config == c)
            .map_or("-".into(), |b| format!("{:.0}", b.median_mb_per_s()));
        rows.push(vec![
            c.clone(),
            cell("c32"),
            p99("c32"),
            cell("close-c8"),
            p99("close-c8"),
            bulk,
            errors.to_string(),
        ]);
    }
    if !rows.is_empty() {
        s.push_str("Throughput, closed loop: rps over all rounds (each round's in parentheses); p99 µs; bulk: one connection downloading one large body, MB/s (median round):\n\n");
        s.push_str(&table(
            &[
                "config",
                "c=32 rps",
                "c=32 p99",
                "new connection per request, c=8, rps",
                "close p99",
                "bulk MB/s",
                "errors",
            ],
            &rows,
        ));
        s.push('\n');
    }
    let mut rows = Vec::new();
    for x in &p.resources {
        let cpu = |shape: Option<&str>| {
            x.cpu_per_100k(shape)
                .map_or("-".into(), |v| format!("{v:.2}"))
        };
        rows.push(vec![
            x.config.clone(),
            format!("{} ({})", x.role, x.processes),
            mb(x.start_rss_kb),
            mb(x.idle_rss_kb),
            mb(x.load_rss_kb),
            mb(x.peak_rss_kb),
            cpu(Some("c1")),
            cpu(Some("c32")),
            cpu(Some("close-c8")),
            cpu(None),
        ]);
    }
    if !rows.is_empty() {
        s.push_str("Each proxy (process tree) in its pod: RSS in MB at start, idle after the warm-up, highest under load, peak (VmHWM); CPU seconds per 100,000 requests by shape and over all request runs:\n\n");
        s.push_str(&table(
            &[
                "config",
                "proxy (processes)",
                "start",
                "idle",
                "load",
                "peak",
                "CPU c1",
                "CPU c32",
                "CPU close",
                "CPU all",
            ],
            &rows,
        ));
        let mut both = Vec::new();
        for c in &configs {
            let xs: Vec<&PodResources> = p.resources.iter().filter(|x| &x.config == c).collect();
            if xs.is_empty() {
                continue;
            }
            let sum: f64 = xs.iter().filter_map(|x| x.cpu_per_100k(None)).sum();
            both.push(format!("{c} {sum:.2}"));
        }
        if !both.is_empty() {
            let _ = writeln!(
                s,
                "\nBoth proxies together, CPU s per 100,000 requests: {}.",
                both.join(", ")
            );
        }
        s.push('\n');
    }
    for x in p.runs.iter().filter(|x| x.errors > 0) {
        let _ = writeln!(
            s,
            "* {} {}: first error: {}",
            x.config,
            x.shape,
            x.first_error.as_deref().unwrap_or("?")
        );
    }
    for b in p.bulk.iter().filter(|b| b.errors > 0) {
        let _ = writeln!(
            s,
            "* {} bulk: first error: {}",
            b.config,
            b.first_error.as_deref().unwrap_or("?")
        );
    }
    s
}

/// The loopback `close` and `bulk` tables.
pub fn loopback_markdown(r: &Report) -> String {
    let mut s = String::new();
    if !r.close.is_empty() {
        s.push_str(
            "### New connection per request (closed loop, HTTP/1.1, `Connection: close`)\n\n",
        );
        let rows: Vec<Vec<String>> = r
            .close
            .iter()
            .map(|x| {
                vec![
                    x.config.clone(),
                    x.connections.to_string(),
                    format!("{:.0}", x.rps),
                    x.ratio_to_direct.map_or("-".into(), |v| format!("{v:.2}")),
                    us(x.latency.p50_us),
                    us(x.latency.p99_us),
                    errors_cell(x.errors, x.ok, &x.error_kinds),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "concurrent",
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
    if !r.bulk.is_empty() {
        s.push_str("### Bulk download over one HTTP/1.1 connection\n\n");
        let rows: Vec<Vec<String>> = r
            .bulk
            .iter()
            .map(|b| {
                vec![
                    b.config.clone(),
                    format!("{} MB", b.bytes / 1_000_000),
                    format!("{:.0}", b.median_mb_per_s()),
                    b.rounds_mb_per_s
                        .iter()
                        .map(|v| format!("{v:.0}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    b.cpu_s_per_gb()
                        .filter(|_| b.cpu_s > 0.0)
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    b.first_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "config",
                "body",
                "MB/s (median)",
                "rounds",
                "proxies' CPU s per GB",
                "error",
            ],
            &rows,
        ));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_100k_requests_by_shape_and_over_all() {
        let r = PodResources {
            cpu_s: BTreeMap::from([("c1".into(), 0.5), ("c32".into(), 1.5)]),
            requests: BTreeMap::from([("c1".into(), 50_000), ("c32".into(), 150_000)]),
            ..PodResources::default()
        };
        assert_eq!(r.cpu_per_100k(Some("c1")), Some(1.0));
        assert_eq!(r.cpu_per_100k(None), Some(1.0));
        assert_eq!(r.cpu_per_100k(Some("close-c8")), None);
    }

    #[test]
    fn pod_tables_name_every_configuration() {
        let mut report = Report::default();
        let run = |config: &str, shape: &str, p50: f64| PodRun {
            config: config.into(),
            shape: shape.into(),
            ok: 10,
            rps: 1000.0,
            latency: Summary {
                p50_us: p50,
                ..Summary::default()
            },
            rounds_rps: vec![990.0, 1010.0],
            ..PodRun::default()
        };
        report.pods = Some(PodsReport {
            skipped: vec!["haproxy: not installed".into()],
            runs: vec![
                run("direct", "c1", 50.0),
                run("mycel", "c1", 150.0),
                run("mycel", "c32", 0.0),
            ],
            bulk: vec![BulkRow {
                config: "mycel".into(),
                bytes: 64_000_000,
                rounds_mb_per_s: vec![300.0, 500.0, 400.0],
                ..BulkRow::default()
            }],
            resources: Vec::new(),
        });
        let md = markdown(&report);
        assert!(md.contains("not measured: haproxy"), "{md}");
        assert!(md.contains("| mycel | 150 |"), "{md}");
        assert!(md.contains("| +100 |"), "{md}");
        assert!(md.contains("| mycel | 1000 (990, 1010) |"), "{md}");
        assert!(md.contains("| 400 |"), "{md}");
        let two = BulkRow {
            rounds_mb_per_s: vec![300.0, 500.0],
            ..BulkRow::default()
        };
        assert_eq!(two.median_mb_per_s(), 400.0);
    }

    #[test]
    fn bulk_cpu_is_per_gb_moved_and_shown_only_when_measured() {
        let measured = BulkRow {
            config: "mycel".into(),
            bytes: 1_000_000_000,
            rounds_mb_per_s: vec![900.0, 1000.0],
            cpu_s: 3.0,
            downloaded: 2_000_000_000,
            ..BulkRow::default()
        };
        assert_eq!(measured.cpu_s_per_gb(), Some(1.5));
        let direct = BulkRow {
            config: "direct".into(),
            bytes: 1_000_000_000,
            rounds_mb_per_s: vec![2000.0],
            downloaded: 1_000_000_000,
            ..BulkRow::default()
        };
        assert_eq!(BulkRow::default().cpu_s_per_gb(), None);
        let report = Report {
            bulk: vec![direct, measured],
            ..Report::default()
        };
        let md = loopback_markdown(&report);
        assert!(md.contains("proxies' CPU s per GB"), "{md}");
        assert!(md.contains("| 950 | 900, 1000 | 1.50 |"), "{md}");
        assert!(md.contains("| 2000 | 2000 | - |"), "{md}");
    }
}
