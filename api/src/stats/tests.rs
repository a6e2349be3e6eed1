use super::*;

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

fn info(workload: &str, mode: &str) -> ProxyInfo {
    ProxyInfo {
        proxy_id: format!("{workload}-1"),
        workload: workload.into(),
        namespace: "shop".into(),
        spiffe_id: format!("spiffe://cluster.local/ns/shop/sa/{workload}"),
        mode: mode.into(),
    }
}

/// A histogram series in exposition text: `counts` per bucket (not
/// cumulative) for bounds 0.01, 0.1, 1.
fn hist(labels: &str, counts: [u64; 4]) -> String {
    let mut out = String::new();
    let mut cum = 0;
    for (le, c) in ["0.01", "0.1", "1", "+Inf"].iter().zip(counts) {
        cum += c;
        out.push_str(&format!(
            "{DURATION}_bucket{{{labels},le=\"{le}\"}} {cum}\n"
        ));
    }
    out.push_str(&format!("{DURATION}_count{{{labels}}} {cum}\n"));
    out.push_str(&format!("{DURATION}_sum{{{labels}}} 1.5\n"));
    out
}

fn window(proxy: ProxyInfo, before: &str, after: &str, secs: u64) -> ProxyWindow {
    ProxyWindow {
        proxy,
        before: parse(before).unwrap(),
        after: parse(after).unwrap(),
        elapsed: Duration::from_secs(secs),
    }
}

fn inbound(peer: &str, class: &str) -> String {
    format!("direction=\"inbound\",service=\"app:8080\",route=\"\",code_class=\"{class}\",peer=\"{peer}\"")
}

fn outbound(service: &str, class: &str) -> String {
    format!(
        "direction=\"outbound\",service=\"{service}\",route=\"\",code_class=\"{class}\",peer=\"\""
    )
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn workload_and_edge_from_two_scrapes() {
    let catalog_before = hist(&inbound(FRONTEND, "2xx"), [10, 0, 0, 0]);
    // +10 fast, +20 in (0.01, 0.1], +10 in (0.1, 1] as 2xx; +10 5xx fast.
    let catalog_after = hist(&inbound(FRONTEND, "2xx"), [20, 20, 10, 0])
        + &hist(&inbound(FRONTEND, "5xx"), [10, 0, 0, 0]);
    let frontend_before = hist(&outbound("catalog.shop", "2xx"), [0, 0, 0, 0]);
    let frontend_after = hist(&outbound("catalog.shop", "2xx"), [0, 30, 10, 0])
        + &hist(&outbound("catalog.shop", "5xx"), [0, 10, 0, 0]);
    let r = compute(&[
        window(
            info("catalog", "sidecar"),
            &catalog_before,
            &catalog_after,
            10,
        ),
        window(
            info("frontend", "sidecar"),
            &frontend_before,
            &frontend_after,
            10,
        ),
    ]);
    assert!(r.latency);
    assert_eq!(r.window_secs, 10.0);
    let catalog = r.workloads.iter().find(|w| w.name == "catalog").unwrap();
    assert_eq!(catalog.proxies, 1);
    assert_eq!(catalog.stats.requests, 50.0);
    assert_eq!(catalog.stats.rps, 5.0);
    assert_eq!(catalog.stats.success_rate, Some(0.8));
    // Increases: 20 in (0, 0.01], 20 in (0.01, 0.1], 10 in (0.1, 1].
    // p50: rank 25 → 0.01 + 0.09 * 5/20 = 0.0325 s.
    assert!(close(catalog.stats.p50_ms, 32.5), "{:?}", catalog.stats);
    // p95: rank 47.5 → 0.1 + 0.9 * 7.5/10 = 0.775 s.
    assert!(close(catalog.stats.p95_ms, 775.0), "{:?}", catalog.stats);
    // p99: rank 49.5 → 0.1 + 0.9 * 9.5/10 = 0.955 s.
    assert!(close(catalog.stats.p99_ms, 955.0), "{:?}", catalog.stats);

    let frontend = r.workloads.iter().find(|w| w.name == "frontend").unwrap();
    assert_eq!(frontend.stats.requests, 0.0);
    assert_eq!(frontend.stats.success_rate, None);
    assert_eq!(frontend.stats.p99_ms, None);

    assert_eq!(r.edges.len(), 1);
    let e = &r.edges[0];
    assert_eq!(
        (e.from.as_str(), e.to.as_str()),
        ("frontend", "catalog.shop")
    );
    assert_eq!(e.to_workloads, vec!["catalog".to_string()]);
    assert_eq!(e.stats.rps, 5.0);
    assert_eq!(e.stats.success_rate, Some(0.8));
    // Client side: 40 in (0.01, 0.1], 10 in (0.1, 1]; p50 rank 25 →
    // 0.01 + 0.09 * 25/40.
    assert!(close(e.stats.p50_ms, 66.25), "{:?}", e.stats);
    let server = e.server.as_ref().unwrap();
    assert_eq!(server.requests, 50.0);
}

#[test]
fn counter_reset_counts_the_new_value() {
    let before = hist(&inbound(FRONTEND, "2xx"), [100, 0, 0, 0]);
    let after = hist(&inbound(FRONTEND, "2xx"), [4, 0, 0, 0]);
    let r = compute(&[window(info("catalog", "sidecar"), &before, &after, 2)]);
    assert_eq!(r.workloads[0].stats.requests, 4.0);
    assert_eq!(r.workloads[0].stats.rps, 2.0);
    // All 4 in (0, 0.01]: p50 at rank 2 → 0.005 s.
    assert!(close(r.workloads[0].stats.p50_ms, 5.0));
}

#[test]
fn empty_window_has_no_rates() {
    let text = hist(&inbound(FRONTEND, "2xx"), [3, 0, 0, 0]);
    let r = compute(&[window(info("catalog", "sidecar"), &text, &text, 5)]);
    let s = &r.workloads[0].stats;
    assert_eq!((s.requests, s.rps), (0.0, 0.0));
    assert_eq!((s.success_rate, s.p50_ms), (None, None));
    let r = compute(&[window(info("catalog", "sidecar"), "", "", 0)]);
    assert_eq!(r.workloads[0].stats, Stats::default());
    assert!(!r.latency);
    assert!(compute(&[]).workloads.is_empty());
}

#[test]
fn new_series_count_from_zero() {
    let after = hist(&inbound(FRONTEND, "2xx"), [0, 6, 0, 0]);
    let r = compute(&[window(info("catalog", "sidecar"), "", &after, 3)]);
    assert_eq!(r.workloads[0].stats.rps, 2.0);
}

#[test]
fn counter_fallback_without_histogram() {
    let before =
        "mycel_requests_total{direction=\"inbound\",service=\"app:8080\",code=\"200\"} 10\n";
    let after =
        "mycel_requests_total{direction=\"inbound\",service=\"app:8080\",code=\"200\"} 19\n\
        mycel_requests_total{direction=\"inbound\",service=\"app:8080\",code=\"503\"} 1\n\
        mycel_requests_total{direction=\"outbound\",service=\"ratings.shop\",code=\"200\"} 4\n";
    let r = compute(&[window(info("reviews", "sidecar"), before, after, 5)]);
    assert!(!r.latency);
    let s = &r.workloads[0].stats;
    assert_eq!((s.requests, s.rps, s.success_rate), (10.0, 2.0, Some(0.9)));
    assert_eq!(s.p99_ms, None);
    assert_eq!(r.edges[0].to, "ratings.shop");
    assert_eq!(r.edges[0].stats.requests, 4.0);
    assert_eq!(r.edges[0].server, None);
}

#[test]
fn gateway_workload_and_proxies_of_one_workload_add_up() {
    let gw =
        "direction=\"gateway\",service=\"frontend.shop\",route=\"\",code_class=\"2xx\",peer=\"\"";
    let r = compute(&[
        window(info("gateway", "gateway"), "", &hist(gw, [10, 0, 0, 0]), 5),
        window(
            info("catalog", "sidecar"),
            "",
            &hist(&inbound(FRONTEND, "2xx"), [4, 0, 0, 0]),
            2,
        ),
        window(
            info("catalog", "sidecar"),
            "",
            &hist(&inbound(FRONTEND, "2xx"), [6, 0, 0, 0]),
            3,
        ),
    ]);
    let gw = r.workloads.iter().find(|w| w.name == "gateway").unwrap();
    assert_eq!(gw.stats.rps, 2.0);
    let catalog = r.workloads.iter().find(|w| w.name == "catalog").unwrap();
    assert_eq!((catalog.proxies, catalog.stats.rps), (2, 4.0));
    assert_eq!(r.edges[0].direction, "gateway");
    assert_eq!(r.window_secs, 5.0);
}

#[test]
fn callees_named_after_the_service_win() {
    let call = hist(&outbound("reviews.shop", "2xx"), [1, 0, 0, 0])
        + &hist(&outbound("catalog.shop", "2xx"), [1, 0, 0, 0]);
    let seen = hist(&inbound(FRONTEND, "2xx"), [1, 0, 0, 0]);
    let r = compute(&[
        window(info("frontend", "sidecar"), "", &call, 1),
        window(info("reviews-v1", "sidecar"), "", &seen, 1),
        window(info("reviews-v2", "sidecar"), "", &seen, 1),
        window(info("catalog", "sidecar"), "", &seen, 1),
    ]);
    let reviews = r.edges.iter().find(|e| e.to == "reviews.shop").unwrap();
    assert_eq!(reviews.to_workloads, vec!["reviews-v1", "reviews-v2"]);
    assert_eq!(reviews.server.as_ref().unwrap().requests, 2.0);
    assert_eq!(reviews.servers["reviews-v2"].requests, 1.0);
    let catalog = r.edges.iter().find(|e| e.to == "catalog.shop").unwrap();
    assert_eq!(catalog.to_workloads, vec!["catalog"]);

    let mut only = r.clone();
    only.retain(Some("shop"), Some("catalog"));
    assert_eq!(only.workloads.len(), 1);
    assert_eq!(only.edges.len(), 1);
    let mut none = r;
    none.retain(Some("other"), None);
    assert!(none.workloads.is_empty() && none.edges.is_empty() && none.routes.is_empty());
}

#[test]
fn garbage_values_are_skipped_not_fatal() {
    let after = format!(
        "{DURATION}_bucket{{direction=\"inbound\",le=\"bogus\"}} 3\n\
         {DURATION}_count{{direction=\"inbound\"}} NaN\n"
    );
    let r = compute(&[window(info("catalog", "sidecar"), "", &after, 1)]);
    assert_eq!(r.workloads[0].stats.requests, 0.0);
}
