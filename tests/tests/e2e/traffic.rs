//! Traffic policy between real sidecars: a controller reads `TrafficPolicy`
//! documents from mesh.yaml and pushes them; a client sidecar calls
//! `ratings` instances (real `mycel-demo` apps with fault knobs) and the
//! counters of the client and of each instance's sidecar show what the
//! policy did. Loads are bounded in count and time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use mycel_tests::http;
use mycel_tests::mesh::{Mesh, Sidecar, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload, Workload};

/// The tests of this module run one at a time: each puts a few thousand
/// requests through real processes, and latency-based balancing is judged
/// on a machine with two cores, where a neighbour's load is noise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A ratings instance with its fault knobs.
async fn ratings(mesh: &Mesh, name: &str, knobs: &[&str]) -> Workload {
    workload(mesh, name, "ratings", "http", knobs, |s| s).await
}

/// `mesh.yaml` of the shop plus one TrafficPolicy for ratings.
fn with_policy(spec: &str) -> String {
    mesh_yaml(&format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: ratings\n  namespace: shop\nspec:\n  targetRef: {{kind: Service, name: ratings}}\n{spec}"
    ))
}

/// How a batch of requests went.
#[derive(Debug, Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    /// `mycel-proxy-error` values of the proxy's own answers.
    proxy_errors: BTreeMap<String, u64>,
    slowest: Duration,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.by_status.get(&200).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// `count` GETs of `/ratings/<i>` through `outbound`, `concurrency` at a
/// time, each on its own connection; stops early after 120 s.
async fn load(outbound: SocketAddr, count: u64, concurrency: usize) -> Tally {
    let started = Instant::now();
    let replies: Vec<_> = stream::iter(0..count)
        .map(|i| async move {
            if started.elapsed() > Duration::from_secs(120) {
                return None;
            }
            let t = Instant::now();
            let r = http::get(outbound, "ratings", &format!("/ratings/{}", i % 50 + 1)).await;
            Some((r, t.elapsed()))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut tally = Tally::default();
    for (r, took) in replies.into_iter().flatten() {
        let r = r.unwrap();
        *tally.by_status.entry(r.status).or_default() += 1;
        if let Some(kind) = r.headers.get("mycel-proxy-error") {
            *tally
                .proxy_errors
                .entry(kind.to_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        tally.slowest = tally.slowest.max(took);
    }
    tally
}

/// Sum of a counter family's samples whose line contains every `filter`.
async fn counter(sidecar: &Sidecar, family: &str, filters: &[&str]) -> u64 {
    sidecar
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(family) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the client's snapshot holds a policy for ratings that
/// `holds` accepts (pushed after its first request subscribed it).
async fn wait_policy(client: &Sidecar, holds: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = client.admin_json("/config_dump").await;
        let policy = &dump["snapshot"]["services"]["ratings.shop"]["policy"];
        if holds(policy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client never got the policy; it holds {policy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// First request subscribes the client to ratings; then the policy arrives.
async fn client_with_policy(mesh: &Mesh, holds: impl Fn(&serde_json::Value) -> bool) -> Sidecar {
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    let _ = http::get(client.outbound(), "ratings", "/ratings/1").await;
    wait_policy(&client, holds).await;
    client
}

fn has_retry(p: &serde_json::Value) -> bool {
    !p["rules"]["retry"].is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_an_endpoint_that_fails_half_its_requests() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  loadBalancer: {algorithm: RoundRobin}\n  retry:\n    attempts: 3\n    retryOn: [5xx]\n    backoff: {base: 1ms, max: 5ms}\n    budget: {percent: 60, minPerSecond: 10}\n",
    ))
    .await;
    let flaky = ratings(
        &mesh,
        "ratings-flaky",
        &["--error-rate", "0.5", "--seed", "7"],
    )
    .await;
    let _good = ratings(&mesh, "ratings-good", &[]).await;
    let client = client_with_policy(&mesh, has_retry).await;

    let tally = load(client.outbound(), 5_000, 8).await;
    assert_eq!(tally.total(), 5_000, "{tally:?}");
    assert!(
        tally.ok() as f64 >= 0.999 * 5_000.0,
        "fewer than 99.9% succeeded: {tally:?}"
    );
    let retries = counter(
        &client,
        "mycel_retries_total",
        &["service=\"ratings.shop\""],
    )
    .await;
    let flaky_failed = counter(
        &flaky.sidecar,
        "mycel_requests_total",
        &["direction=\"inbound\"", "code=\"503\""],
    )
    .await;
    assert!(
        flaky_failed > 500,
        "the flaky endpoint failed only {flaky_failed} times"
    );
    assert!(
        retries >= flaky_failed.saturating_sub(tally.total() - tally.ok()),
        "each failure the caller did not see was retried: {retries} retries, {flaky_failed} failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_when_every_endpoint_fails() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  retry:\n    attempts: 5\n    retryOn: [5xx]\n    backoff: {base: 1ms, max: 2ms}\n    budget: {percent: 20, minPerSecond: 1, window: 10s}\n",
    ))
    .await;
    let a = ratings(&mesh, "ratings-a", &["--error-rate", "1"]).await;
    let b = ratings(&mesh, "ratings-b", &["--error-rate", "1"]).await;
    let client = client_with_policy(&mesh, has_retry).await;
    let before = a.sidecar.served_inbound().await + b.sidecar.served_inbound().await;

    let requests = 500;
    let started = Instant::now();
    let tally = load(client.outbound(), requests, 8).await;
    let secs = started.elapsed().as_secs() + 1;
    assert_eq!(tally.by_status.get(&503), Some(&requests), "{tally:?}");

    let retries = counter(
        &client,
        "mycel_retries_total",
        &["service=\"ratings.shop\""],
    )
    .await;
    let refused = counter(&client, "mycel_retry_budget_exhausted_total", &[]).await;
    let served = a.sidecar.served_inbound().await + b.sidecar.served_inbound().await - before;
    // Without a budget, 4 retries per request: 2,000. The budget allows 20%
    // of the requests in its 10 s window plus 1 per second of it; a run
    // longer than the window adds a second's floor per second (the request
    // that subscribed the client counts too).
    let cap = (requests + 1) / 5 + 10 + secs.saturating_sub(10) + 1;
    eprintln!("{requests} requests, {retries} retries (cap {cap}), {refused} refused by the budget, {served} reached the apps");
    assert!(retries > 0, "no retry at all");
    assert!(retries <= cap, "{retries} retries over the budget's {cap}");
    assert!(refused > 0, "the budget never refused a retry");
    assert!(
        served <= requests + cap,
        "the apps got {served} requests: retries multiplied the load"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_a_slow_endpoint_less_than_a_tenth() {
    let _serial = SERIAL.lock().await;
    // No policy: P2C over peak-EWMA latency is the default.
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let slow = ratings(&mesh, "ratings-slow", &["--latency-ms", "50"]).await;
    let fast1 = ratings(&mesh, "ratings-fast1", &[]).await;
    let fast2 = ratings(&mesh, "ratings-fast2", &[]).await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;

    let tally = load(client.outbound(), 1_000, 4).await;
    assert_eq!(tally.ok(), 1_000, "{tally:?}");
    let slow_n = slow.sidecar.served_inbound().await;
    let fast_n = fast1.sidecar.served_inbound().await + fast2.sidecar.served_inbound().await;
    eprintln!("slow endpoint: {slow_n}, fast endpoints: {fast_n}");
    assert!(
        slow_n * 10 < slow_n + fast_n,
        "the slow endpoint got {slow_n} of {}",
        slow_n + fast_n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_endpoint_until_its_time_is_up() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  loadBalancer: {algorithm: RoundRobin}\n  outlierDetection:\n    consecutive5xx: 3\n    interval: 1s\n    baseEjectionTime: 2s\n    maxEjectionPercent: 50\n",
    ))
    .await;
    let bad = ratings(&mesh, "ratings-bad", &["--error-rate", "1"]).await;
    let good = ratings(&mesh, "ratings-good", &[]).await;
    let client = client_with_policy(&mesh, |p| !p["rules"]["outlier_detection"].is_null()).await;

    // Round robin alternates: after three failures in a row the bad one is
    // ejected and every later request lands on the good one.
    let first = load(client.outbound(), 10, 1).await;
    let failed_first = first.by_status.get(&503).copied().unwrap_or(0);
    assert!(failed_first <= 4, "{first:?}");
    let bad_before = bad.sidecar.served_inbound().await;
    let ejected = load(client.outbound(), 40, 1).await;
    assert_eq!(
        ejected.ok(),
        40,
        "requests reached the ejected endpoint: {ejected:?}"
    );
    assert_eq!(bad.sidecar.served_inbound().await, bad_before);
    assert!(good.sidecar.served_inbound().await >= 40);
    assert_eq!(
        counter(
            &client,
            "mycel_outlier_ejections_total",
            &["reason=\"consecutive_5xx\""]
        )
        .await,
        1
    );

    // After the ejection time the endpoint is tried again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let _ = load(client.outbound(), 6, 1).await;
    assert!(
        bad.sidecar.served_inbound().await > bad_before,
        "the endpoint never came back after its ejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_beats_a_hung_endpoint() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  loadBalancer: {algorithm: RoundRobin}\n  retry:\n    attempts: 2\n    perTryTimeout: 200ms\n    retryOn: [gateway-error]\n",
    ))
    .await;
    let _hung = ratings(&mesh, "ratings-hung", &["--latency-ms", "20000"]).await;
    let _fine = ratings(&mesh, "ratings-fine", &[]).await;
    let client = client_with_policy(&mesh, has_retry).await;

    let tally = load(client.outbound(), 10, 2).await;
    assert_eq!(tally.ok(), 10, "{tally:?}");
    // Each request waits at most one per-try timeout on the hung endpoint,
    // never its 20 s.
    assert!(tally.slowest < Duration::from_secs(5), "{tally:?}");
    assert!(counter(&client, "mycel_retries_total", &["reason=\"timeout\""]).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_sheds_load_fast_with_the_overflow_header() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy("  circuitBreaker: {maxRequests: 2}\n")).await;
    let _slow = ratings(&mesh, "ratings-slow", &["--latency-ms", "1000"]).await;
    let client = client_with_policy(&mesh, |p| !p["rules"]["circuit_breaker"].is_null()).await;

    let tally = load(client.outbound(), 8, 8).await;
    assert_eq!(tally.total(), 8);
    assert!(tally.ok() >= 2 && tally.ok() <= 3, "{tally:?}");
    let shed = tally.proxy_errors.get("overflow").copied().unwrap_or(0);
    assert_eq!(shed + tally.ok(), 8, "{tally:?}");
    assert_eq!(tally.by_status.get(&503).copied().unwrap_or(0), shed);
    assert_eq!(
        counter(
            &client,
            "mycel_overflow_total",
            &["reason=\"max_requests\""]
        )
        .await,
        shed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_its_share_of_requests() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  fault:\n    abort: {httpStatus: 503, percentage: 50}\n",
    ))
    .await;
    let app = ratings(&mesh, "ratings", &[]).await;
    let client = client_with_policy(&mesh, |p| !p["rules"]["fault"].is_null()).await;
    let before = app.sidecar.served_inbound().await;

    let tally = load(client.outbound(), 400, 4).await;
    let aborted = tally.proxy_errors.get("fault").copied().unwrap_or(0);
    assert_eq!(aborted + tally.ok(), 400, "{tally:?}");
    assert!(
        (120..=280).contains(&aborted),
        "{aborted} of 400 aborted at 50%"
    );
    // Aborted requests never reach the app.
    assert_eq!(app.sidecar.served_inbound().await - before, tally.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_is_refused_naming_the_field_and_the_old_one_stays() {
    let _serial = SERIAL.lock().await;
    let good = with_policy("  retry: {attempts: 3}\n");
    let mesh = Mesh::start(&good).await;
    let _app = ratings(&mesh, "ratings", &[]).await;
    let client = client_with_policy(&mesh, |p| p["rules"]["retry"]["attempts"] == 3).await;

    mesh.write_mesh_yaml(&with_policy("  retry: {attempts: 11}\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = mesh
            .controller
            .as_ref()
            .map(|c| c.log())
            .unwrap_or_default();
        if log.contains("spec.retry.attempts") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.contains("spec.retry.attempts: 11 is out of range (2-10)"),
        "the controller did not name the field:\n{log}"
    );
    let r = http::get(client.outbound(), "ratings", "/ratings/2")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_policy(&client, |p| p["rules"]["retry"]["attempts"] == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_each_user_on_one_endpoint() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start(&with_policy(
        "  loadBalancer: {algorithm: RingHash, hashOn: {header: x-user}}\n",
    ))
    .await;
    let mut instances = Vec::new();
    for i in 0..4 {
        instances.push(ratings(&mesh, &format!("ratings-{i}"), &[]).await);
    }
    let client = client_with_policy(&mesh, |p| {
        p["rules"]["load_balancer"]["algorithm"]["type"] == "ring_hash"
    })
    .await;
    let mut homes = std::collections::BTreeSet::new();
    for user in ["ann", "bob", "cyd", "dee", "eve", "fay"] {
        let mut before = Vec::new();
        for w in &instances {
            before.push(w.sidecar.served_inbound().await);
        }
        for i in 0..10 {
            let r = http::request(
                client.outbound(),
                "ratings",
                &format!("/ratings/{i}"),
                &[("x-user", user)],
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let mut got = Vec::new();
        for (w, b) in instances.iter().zip(&before) {
            got.push(w.sidecar.served_inbound().await - b);
        }
        let home: Vec<usize> = (0..got.len()).filter(|i| got[*i] > 0).collect();
        assert_eq!(home.len(), 1, "user {user} was spread over {got:?}");
        assert_eq!(got[home[0]], 10, "{user}: {got:?}");
        homes.insert(home[0]);
    }
    assert!(
        homes.len() >= 2,
        "six users all hashed to one endpoint: {homes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_respected_by_the_client_sidecar() {
    let _serial = SERIAL.lock().await;
    // No policy at all: the caller's own deadline bounds the call.
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let _slow = workload(
        &mesh,
        "reviews-slow",
        "reviews",
        "grpc",
        &["--latency-ms", "5000"],
        |s| s,
    )
    .await;
    let client = mesh.sidecar(SidecarSpec::new("client", "frontend")).await;
    // A plain HTTP/2 client, so that only the sidecar keeps the deadline
    // (tonic would enforce `grpc-timeout` itself and race it).
    let tcp = tokio::net::TcpStream::connect(client.outbound())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // GetReviewsRequest{product_id: "1"}: field 1, length 1, "1".
    const MESSAGE: [u8; 8] = [0, 0, 0, 0, 3, 0x0a, 0x01, b'1'];
    let req = ::http::Request::post("http://reviews:9090/shop.v1.Reviews/GetReviews")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            &MESSAGE,
        )))
        .unwrap();
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        res.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..]),
        "{res:?}"
    );
    assert_eq!(res.headers()["mycel-proxy-error"], "timeout");
    assert!(
        took < Duration::from_secs(3),
        "the answer waited for the slow app: {took:?}"
    );
    assert_eq!(
        counter(&client, "mycel_errors_total", &["kind=\"timeout\""]).await,
        1
    );
}
