//! The tables `stat` and `top` print.

use mycel_api::stats::{Report, Stats};

use super::Scope;
use crate::proxy_config::table::Table;

/// " in namespace X" / " via the controller at X", for "none found".
pub fn where_(scope: &Scope) -> String {
    match (&scope.controller_admin, &scope.namespace) {
        (Some(c), _) => format!(" via the controller at {c}"),
        (None, Some(n)) => format!(" in namespace {n}"),
        (None, None) => String::new(),
    }
}

fn rate(s: &Stats) -> String {
    format!("{:.1}", s.rps)
}

fn success(s: &Stats) -> String {
    s.success_rate
        .map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}ms"),
        Some(v) => format!("{v:.0}ms"),
        None => "-".into(),
    }
}

fn signals(s: &Stats) -> Vec<String> {
    vec![
        success(s),
        rate(s),
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.p99_ms),
    ]
}

/// Workloads, then edges, as `mycelctl stat` prints them.
pub fn stat(r: &Report) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        "WORKLOAD",
        "MESHED",
        "SUCCESS",
        "RPS",
        "P50",
        "P95",
        "P99",
    ]);
    for w in &r.workloads {
        let mut row = vec![w.namespace.clone(), w.name.clone(), w.proxies.to_string()];
        row.extend(signals(&w.stats));
        t.row(row);
    }
    let mut out = t.render();
    out.push('\n');
    out.push_str(&edges(r, usize::MAX));
    out.push_str(&footer(r));
    out
}

/// The edges, busiest first, at most `most`.
pub fn edges(r: &Report, most: usize) -> String {
    let mut t = Table::new(&[
        "FROM", "TO", "SERVER", "SUCCESS", "RPS", "P50", "P95", "P99", "SECURED",
    ]);
    let mut edges: Vec<_> = r.edges.iter().collect();
    edges.sort_by(|a, b| b.stats.rps.total_cmp(&a.stats.rps).then(a.to.cmp(&b.to)));
    for e in edges.into_iter().take(most) {
        let mut row = vec![
            format!("{}/{}", e.from_namespace, e.from),
            e.to.clone(),
            if e.to_workloads.is_empty() {
                "-".into()
            } else {
                e.to_workloads.join(",")
            },
        ];
        row.extend(signals(&e.stats));
        // The callee saw the caller's certificate identity: mutual TLS.
        row.push(if e.server.is_some() { "mTLS" } else { "-" }.into());
        t.row(row);
    }
    if t.is_empty() {
        return "no edges: no proxy called another in the window\n".into();
    }
    t.render()
}

/// The busiest routes, for `top`.
pub fn routes(r: &Report, most: usize) -> String {
    let mut t = Table::new(&[
        "WORKLOAD",
        "DIRECTION",
        "SERVICE",
        "ROUTE",
        "SUCCESS",
        "RPS",
        "P50",
        "P99",
    ]);
    let mut routes: Vec<_> = r.routes.iter().filter(|x| x.stats.requests > 0.0).collect();
    routes.sort_by(|a, b| b.stats.rps.total_cmp(&a.stats.rps));
    for x in routes.into_iter().take(most) {
        t.row(vec![
            format!("{}/{}", x.namespace, x.workload),
            x.direction.clone(),
            x.service.clone(),
            if x.route.is_empty() {
                "-".into()
            } else {
                x.route.clone()
            },
            success(&x.stats),
            rate(&x.stats),
            ms(x.stats.p50_ms),
            ms(x.stats.p99_ms),
        ]);
    }
    if t.is_empty() {
        return "no requests in the window\n".into();
    }
    t.render()
}

fn footer(r: &Report) -> String {
    let mut out = format!("\nwindow {:.1}s", r.window_secs);
    if !r.latency {
        out.push_str("; no latency histogram on these proxies, so no percentiles");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_api::stats::{EdgeStats, WorkloadStats};

    #[test]
    fn stat_table() {
        let s = Stats {
            requests: 50.0,
            rps: 5.0,
            success_rate: Some(1.0),
            p50_ms: Some(2.5),
            p95_ms: Some(9.0),
            p99_ms: Some(48.0),
        };
        let r = Report {
            window_secs: 10.0,
            latency: true,
            workloads: vec![WorkloadStats {
                namespace: "shop".into(),
                name: "catalog".into(),
                mode: "sidecar".into(),
                proxies: 1,
                stats: s.clone(),
            }],
            edges: vec![EdgeStats {
                from_namespace: "shop".into(),
                from: "frontend".into(),
                from_identity: "spiffe://x/ns/shop/sa/frontend".into(),
                direction: "outbound".into(),
                to: "catalog.shop".into(),
                to_workloads: vec!["catalog".into()],
                stats: s.clone(),
                server: Some(s),
                servers: Default::default(),
            }],
            routes: vec![],
        };
        assert_eq!(
            stat(&r),
            "NAMESPACE  WORKLOAD  MESHED  SUCCESS  RPS  P50     P95     P99\n\
             shop       catalog   1       100.00%  5.0  2.50ms  9.00ms  48ms\n\
             \n\
             FROM           TO            SERVER   SUCCESS  RPS  P50     P95     P99   SECURED\n\
             shop/frontend  catalog.shop  catalog  100.00%  5.0  2.50ms  9.00ms  48ms  mTLS\n\
             \n\
             window 10.0s\n"
        );
    }
}
