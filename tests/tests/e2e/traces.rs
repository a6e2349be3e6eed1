//! Distributed tracing through real processes: the gateway starts a trace,
//! every sidecar adds its span, the demo apps carry the context across, and
//! an OTLP receiver inside the test gets the whole trace. A collector that
//! is down changes nothing for the requests.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mycel_tests::http;
use mycel_tests::mesh::spiffe;
use mycel_tests::otlp::{self, ReceivedSpan};
use mycel_tests::shop::Shop;
use mycel_tests::SidecarSpec;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn exporting(endpoint: &str, protocol: &'static str) -> impl Fn(SidecarSpec) -> SidecarSpec {
    let endpoint = endpoint.to_string();
    move |s: SidecarSpec| {
        s.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
    }
}

fn trace_of<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

fn describe(spans: &[&ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} kind={} id={} parent={}",
                s.service, s.name, s.kind, s.span_id, s.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_the_shop_is_one_trace_across_every_hop() {
    let (collector, received) = otlp::grpc_receiver().await;
    let logs = tempfile::tempdir().expect("tempdir");
    let log_dir = logs.path().to_path_buf();
    let endpoint = format!("http://{collector}");
    let export = exporting(&endpoint, "grpc");
    let shop = Shop::start_with_env(
        move |s| {
            let log = log_dir.join(format!("{}.access.log", s.workload));
            export(s)
                .arg("--access-log")
                .arg(&log.display().to_string())
        },
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let reply = http::get(shop.gateway.listen(), "shop.example", "/api/products")
        .await
        .expect("GET /api/products");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let services = [
        "gateway-gateway",
        "frontend-proxy",
        "catalog-proxy",
        "reviews-v2-proxy",
        "ratings-proxy",
    ];
    // The gateway's span is the trace's root; wait until every hop's span
    // of that trace has arrived (a parent ends, and is sent, after its
    // children).
    let spans = received
        .wait_for(Duration::from_secs(20), |spans| {
            spans
                .iter()
                .find(|s| s.service == "gateway-gateway" && s.parent_span_id.is_empty())
                .is_some_and(|root| {
                    let trace: Vec<_> = trace_of(spans, &root.trace_id);
                    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
                    services
                        .iter()
                        .all(|svc| trace.iter().any(|s| s.service == *svc))
                        && trace.iter().all(|s| {
                            s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str())
                        })
                })
        })
        .await;
    let root = spans
        .iter()
        .find(|s| s.service == "gateway-gateway" && s.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root span from the gateway; got {spans:#?}"));
    let trace = trace_of(&spans, &root.trace_id);
    let all = describe(&trace);
    for svc in services {
        assert!(
            trace.iter().any(|s| s.service == svc),
            "no span from {svc}:\n{all}"
        );
    }
    assert!(trace.len() >= 8, "only {} spans:\n{all}", trace.len());
    assert_eq!(root.kind, SERVER, "{all}");
    assert_eq!(root.attr("http.response.status_code"), Some("200"), "{all}");

    // Parent links: every span but the root has its parent in the trace; a
    // sidecar's server span hangs off the caller's client span (the
    // frontend's off the gateway's server span); a client span off the
    // server span of the same workload's request (the app carried it).
    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    assert_eq!(by_id.len(), trace.len(), "span ids repeat:\n{all}");
    for s in &trace {
        if s.span_id == root.span_id {
            continue;
        }
        let parent = by_id.get(s.parent_span_id.as_str()).unwrap_or_else(|| {
            panic!(
                "{} {:?}: parent not in the trace:\n{all}",
                s.service, s.name
            )
        });
        match s.kind {
            SERVER if s.service == "frontend-proxy" => {
                assert_eq!(parent.span_id, root.span_id, "{all}")
            }
            SERVER => assert_eq!(parent.kind, CLIENT, "{} {:?}:\n{all}", s.service, s.name),
            CLIENT => {
                assert_eq!(parent.kind, SERVER, "{all}");
                assert_eq!(parent.service, s.service, "{all}");
            }
            other => panic!("unexpected span kind {other}:\n{all}"),
        }
    }
    // The server side names the caller it authenticated.
    let catalog = trace
        .iter()
        .find(|s| s.service == "catalog-proxy" && s.kind == SERVER)
        .expect("catalog server span");
    assert_eq!(
        catalog.attr("mycel.peer.spiffe_id"),
        Some(spiffe("shop", "frontend").as_str()),
        "{catalog:?}"
    );
    let reviews_call = trace
        .iter()
        .find(|s| {
            s.service == "frontend-proxy"
                && s.kind == CLIENT
                && s.attr("rpc.system") == Some("grpc")
        })
        .unwrap_or_else(|| panic!("no gRPC client span from the frontend:\n{all}"));
    assert_eq!(
        reviews_call.attr("rpc.grpc.status_code"),
        Some("0"),
        "{reviews_call:?}"
    );
    assert_eq!(reviews_call.attr("mycel.service"), Some("reviews.shop"));

    // The access log line of the gateway's request carries the trace id.
    let gw_log = logs.path().join("gateway.access.log");
    let text = std::fs::read_to_string(&gw_log).unwrap_or_default();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["trace_id"] == root.trace_id.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no access line with the trace id in {}:\n{text}",
                gw_log.display()
            )
        });
    assert_eq!(line["path"], "/api/products");
    assert_eq!(line["status"], 200);
    assert_eq!(line["service"], "frontend.shop");
    assert!(line["bytes"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(line["upstream"].is_string(), "{line}");

    // The frontend's sidecar timed the request by its caller.
    let metrics = shop.frontend.sidecar.metrics().await;
    let gateway_id = spiffe("shop", "gateway");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mycel_request_duration_seconds_count{")
                && l.contains(r#"direction="inbound""#)
                && l.contains(&format!(r#"peer="{gateway_id}""#))
                && l.contains(r#"code_class="2xx""#)),
        "no inbound latency series for the gateway's calls:\n{metrics}"
    );
    // The controller's own spans: a certificate request per proxy and a
    // stream per proxy with its pushes under it.
    let spans = received
        .wait_for(Duration::from_secs(20), |spans| {
            let names: HashSet<&str> = spans
                .iter()
                .filter(|s| s.service == "mycel-controller")
                .map(|s| s.name.as_str())
                .collect();
            names.contains("csr") && names.contains("push")
        })
        .await;
    let controller: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "mycel-controller")
        .collect();
    let csr = controller
        .iter()
        .find(|s| s.name == "csr")
        .unwrap_or_else(|| panic!("no csr span from the controller: {controller:#?}"));
    assert_eq!(csr.attr("result"), Some("ok"), "{csr:?}");
    assert!(
        controller.iter().any(|s| s.name == "push"),
        "no push span from the controller: {controller:#?}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mycel_grpc_responses_total{")
                && l.contains(r#"service="reviews.shop""#)
                && l.contains(r#"grpc_status="0""#)),
        "no gRPC status counted for reviews:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_follows_b3_callers_and_unsampled_traces() {
    let (collector, received) = otlp::http_receiver().await;
    let export = exporting(&format!("http://{collector}"), "http/protobuf");
    let shop = Shop::start_with(export).await;
    let gw = shop.gateway.listen();

    // A caller that speaks B3 (multi header) and chose not to sample.
    let unsampled = "5b8aa5a2d2c872e8321cf37308d69df2";
    let reply = http::request(
        gw,
        "shop.example",
        "/api/products",
        &[
            ("x-b3-traceid", unsampled),
            ("x-b3-spanid", "051581bf3cb55c13"),
            ("x-b3-sampled", "0"),
        ],
    )
    .await
    .expect("unsampled GET");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A caller that speaks B3 (single header) and samples.
    let sampled = "80f198ee56343ba864fe8b2a57d3eff7";
    let caller_span = "e457b5a2e4d86bd1";
    let reply = http::request(
        gw,
        "shop.example",
        "/api/products",
        &[("b3", &format!("{sampled}-{caller_span}-1"))],
    )
    .await
    .expect("sampled GET");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let spans = received
        .wait_for(Duration::from_secs(20), |spans| {
            let t = trace_of(spans, sampled);
            t.iter().any(|s| s.service == "ratings-proxy")
                && t.iter().any(|s| s.service == "gateway-gateway")
                && t.len() >= 8
        })
        .await;
    let trace = trace_of(&spans, sampled);
    let all = describe(&trace);
    assert!(trace.len() >= 8, "only {} spans:\n{all}", trace.len());
    let gateway = trace
        .iter()
        .find(|s| s.service == "gateway-gateway")
        .unwrap_or_else(|| panic!("no gateway span:\n{all}"));
    assert_eq!(
        gateway.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    // Give stragglers of the unsampled request time to (wrongly) arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stray = trace_of(&received.spans(), unsampled).len();
    assert_eq!(
        stray, 0,
        "spans were recorded for a trace the caller did not sample"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_nothing_for_requests_and_is_counted() {
    // A port nothing listens on: every export is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let export = exporting(&format!("http://{dead}"), "grpc");
    let shop = Shop::start_with(move |s| export(s).env("OTEL_BSP_MAX_QUEUE_SIZE", "8")).await;
    let gw = shop.gateway.listen();
    let mut failures = Vec::new();
    // Long enough for export to fail, pause and try again: at most 400
    // requests, for at most 4 s.
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while sent < 400 && started.elapsed() < Duration::from_secs(4) {
        match http::get(gw, "shop.example", "/api/products").await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("#{sent}: {} {}", r.status, r.body)),
            Err(e) => failures.push(format!("#{sent}: {e:#}")),
        }
        sent += 1;
    }
    assert!(
        failures.is_empty(),
        "requests failed with the collector down: {failures:?}"
    );
    let value = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let m = shop.gateway.metrics().await;
    let (failed, skipped, exported) = (
        value(&m, "mycel_trace_export_failures_total"),
        value(&m, "mycel_trace_spans_skipped_total"),
        value(&m, "mycel_trace_spans_exported_total"),
    );
    assert_eq!(exported, 0, "nothing can be exported to a dead collector");
    assert!(failed >= 2, "the failed batches are counted:\n{m}");
    // Paused after two failures for 1 s, then 2 s: a handful of attempts in
    // 4 s, not one per batch of spans.
    assert!(
        failed <= 8,
        "export kept trying a dead collector ({failed} batches)"
    );
    assert!(
        skipped > 0,
        "while export is paused no span is made, and that is counted:\n{m}"
    );
}

/// An opaque TCP port: the tunnel is one client span in the sidecar that
/// opened it and one server span under it in the sidecar that piped it to
/// the app, each with the bytes both ways, the caller's identity on the
/// server side and the endpoint on the client side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_tunnel_is_a_client_and_a_server_span_carrying_its_bytes() {
    use mycel_tests::echo::tcp_echo;
    use mycel_tests::mesh::{Mesh, APP_PORT};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (collector, received) = otlp::grpc_receiver().await;
    let export = exporting(&format!("http://{collector}"), "grpc");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: shop\nspec:\n  selector:\n    app: db\n  ports:\n  - name: tcp\n    port: 5432\n    targetPort: {APP_PORT}\n    appProtocol: tcp\n"
    );
    let mesh = Mesh::start(&yaml).await;
    let server = SidecarSpec::new("db-0", "db")
        .label("app", "db")
        .app_port(&format!("tcp:{APP_PORT}:tcp"));
    tcp_echo(server.app_addr(), b"db:").await;
    let _server = mesh.sidecar(export(server)).await;
    mesh.wait_registered("db-0").await;
    let client_spec = SidecarSpec::new("catalog-0", "catalog");
    let upstream = std::net::SocketAddr::from((client_spec.ip, 16000));
    // Every tunnel opened here starts a trace.
    let _client = mesh
        .sidecar(
            export(client_spec)
                .arg("--tcp-upstream")
                .arg(&format!("{upstream}=db.shop:5432"))
                .arg("--trace-sampling")
                .arg("1"),
        )
        .await;

    let mut conn = tokio::net::TcpStream::connect(upstream)
        .await
        .expect("connect to the tcp upstream port");
    let (mut sent, mut got_back) = (0u64, 0u64);
    for query in ["SELECT 1;\n", "SELECT name FROM products;\n"] {
        conn.write_all(query.as_bytes()).await.expect("write");
        let mut reply = vec![0u8; 3 + query.len()];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut reply))
            .await
            .expect("the app answers in time")
            .expect("read");
        assert_eq!(reply, format!("db:{query}").into_bytes());
        sent += query.len() as u64;
        got_back += reply.len() as u64;
    }
    drop(conn);

    let spans = received
        .wait_for(Duration::from_secs(20), |spans| {
            spans.iter().filter(|s| s.name.starts_with("tcp ")).count() >= 2
        })
        .await;
    let tunnel: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name.starts_with("tcp "))
        .collect();
    let all = describe(&tunnel);
    assert_eq!(tunnel.len(), 2, "one span per side:\n{all}");
    let client = tunnel
        .iter()
        .find(|s| s.kind == CLIENT)
        .unwrap_or_else(|| panic!("no client span:\n{all}"));
    let server = tunnel
        .iter()
        .find(|s| s.kind == SERVER)
        .unwrap_or_else(|| panic!("no server span:\n{all}"));
    assert_eq!(client.name, "tcp db.shop:5432");
    assert!(
        client.parent_span_id.is_empty(),
        "the tunnel starts the trace"
    );
    assert_eq!(server.trace_id, client.trace_id, "one trace:\n{all}");
    assert_eq!(server.parent_span_id, client.span_id, "server under client");
    assert_eq!(server.name, format!("tcp app:{APP_PORT}"));
    for s in [client, server] {
        assert_eq!(s.attr("network.transport"), Some("tcp"), "{s:?}");
        assert_eq!(
            s.attr("mycel.tcp.bytes_to_server"),
            Some(sent.to_string().as_str()),
            "{s:?}"
        );
        assert_eq!(
            s.attr("mycel.tcp.bytes_to_client"),
            Some(got_back.to_string().as_str()),
            "{s:?}"
        );
        assert_ne!(s.status, 2, "a clean close is no error: {s:?}");
    }
    assert_eq!(
        server.attr("mycel.peer.spiffe_id"),
        Some(spiffe("shop", "catalog").as_str()),
        "the server side names the caller"
    );
    assert!(
        client.attr("mycel.endpoint").is_some(),
        "the client side names the endpoint: {client:?}"
    );
}
