//! Transparent sidecars in pods made of network namespaces: unmodified
//! clients (curl, redis-cli, psql) call a service VIP that exists only in
//! the mesh config and reach the other pod through both sidecars over
//! mTLS. Needs root, iptables and the client/server packages; skips (or
//! fails under MYCEL_REQUIRE_ALL=1) elsewhere.

use std::time::Duration;

use mycel_tests::netns::{self, must, Node, Pod, PodSpec};
use mycel_tests::{bin, Proc};

const VIP: &str = "198.19.0.10";

const MESH_YAML: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: shop
spec:
  selector:
    app: ratings
  clusterIP: 198.19.0.10
  ports:
    - name: http
      port: 80
      targetPort: 8080
      appProtocol: http
    - name: redis
      port: 6379
      targetPort: 6379
      appProtocol: tcp
    - name: postgres
      port: 5432
      targetPort: 5432
      appProtocol: tcp
    - name: greeting
      port: 2525
      targetPort: 2525
      appProtocol: http
";

async fn node() -> Node {
    let mut node = Node::new();
    node.start_controller(MESH_YAML).await;
    node
}

/// A pod running `mycel-demo ratings` on :8080 behind its sidecar.
async fn ratings_pod(node: &mut Node, role: &str, spec: PodSpec) -> Pod {
    let mut pod = Pod::new(node, role);
    let demo = bin("mycel-demo").display().to_string();
    let listen = format!("{}:8080", pod.ip);
    pod.app("ratings", &demo, &["ratings", "--listen", &listen]);
    pod.start_sidecar(node, &spec.app_port("http:8080")).await;
    pod
}

/// A meshed client pod told about nothing: it waits only until the mesh-wide
/// VIP table names ratings' VIP, as a fresh pod would.
async fn plain_client_pod(node: &mut Node, role: &str) -> Pod {
    let mut pod = Pod::new(node, role);
    pod.start_sidecar(node, &PodSpec::new(role)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let dump = pod.admin("/config_dump").stdout;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&dump) {
            if v["snapshot"]["vips"][VIP] == "ratings.shop" {
                assert!(
                    v["snapshot"]["services"]["ratings.shop"].is_null(),
                    "the client subscribed to ratings before any call: {v}"
                );
                return pod;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "client never received the VIP table: {}",
        pod.admin("/config_dump").stdout
    );
}

/// A meshed client pod subscribed to ratings, waiting until its sidecar
/// knows the service with a ready endpoint.
async fn client_pod(node: &mut Node, role: &str, extra: &[&str]) -> Pod {
    let mut pod = Pod::new(node, role);
    let mut spec = PodSpec::new(role).subscribe("ratings.shop");
    for a in extra {
        spec = spec.arg(a);
    }
    pod.start_sidecar(node, &spec).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let dump = pod.admin("/config_dump").stdout;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&dump) {
            let svc = &v["snapshot"]["services"]["ratings.shop"];
            let ready = svc["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["ready"] == true));
            if ready && svc["service"]["vips"][0] == VIP {
                return pod;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "client never learned ratings.shop with a ready endpoint: {}",
        pod.admin("/config_dump").stdout
    );
}

/// Captures TCP on the node side of a pod's veth until stopped.
struct Capture {
    proc: Proc,
    file: std::path::PathBuf,
}

impl Capture {
    async fn start(node: &Node, pod: &Pod, name: &str) -> Capture {
        let file = node.path(&format!("{name}.pcap"));
        let dev = Node::veth_of(pod.ip);
        let out = file.display().to_string();
        let proc = node.spawn(
            &format!("tcpdump-{name}"),
            "tcpdump",
            &[
                "-i",
                &dev,
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-n",
                "-w",
                &out,
                "tcp",
            ],
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !proc.log().contains("listening on") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tcpdump did not start: {}",
                proc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Capture { proc, file }
    }

    /// Stops the capture and returns the raw pcap bytes.
    async fn stop(mut self) -> Vec<u8> {
        // Let the last segments reach the file (-U writes per packet).
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.proc.terminate(Duration::from_secs(5)).await;
        std::fs::read(&self.file).unwrap_or_default()
    }
}

/// `curl url` from `from`; must succeed with JSON. On failure the message
/// carries curl's output and the sidecar logs of `logs`.
fn curl_json(from: &Pod, url: &str, logs: &[&Pod]) -> serde_json::Value {
    let r = from.exec("curl", &["-sS", "-m", "10", url]);
    let sidecars: Vec<String> = logs.iter().map(|p| p.sidecar_log()).collect();
    assert!(
        r.ok,
        "curl {url}: {}{}\n{}",
        r.stdout,
        r.stderr,
        sidecars.join("\n")
    );
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("curl {url}: not JSON ({e}): {}", r.stdout))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn curl_to_a_service_vip_goes_over_mtls_and_the_app_sees_the_caller() {
    if !netns::can_run() {
        return;
    }
    let mut node = node().await;
    let server = ratings_pod(&mut node, "ratings", PodSpec::new("ratings")).await;
    node.wait_registered("ratings").await;
    // No --subscribe: the VIP is found in the mesh-wide table and the
    // service subscribed on the first connection to it.
    let client = plain_client_pod(&mut node, "client").await;

    let capture = Capture::start(&node, &server, "http").await;
    let url = format!("http://{VIP}/ratings/p1");
    let r = client.exec("curl", &["-sS", "-m", "10", &url]);
    let wire = capture.stop().await;
    assert!(
        r.ok,
        "curl {url}: {}{}\nclient sidecar:\n{}\nserver sidecar:\n{}",
        r.stdout,
        r.stderr,
        client.sidecar_log(),
        server.sidecar_log()
    );
    let body: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(body["caller"], client.spiffe_id.clone().unwrap(), "{body}");
    assert_eq!(body["product_id"], "p1");

    // Bytes crossed the veth, and none of them is the plaintext exchange.
    assert!(wire.len() > 1000, "capture too small: {} bytes", wire.len());
    for plain in ["GET /ratings", "HTTP/1.1", "product_id", "x-mycel-peer-id"] {
        assert!(!contains(&wire, plain), "plaintext {plain:?} on the wire");
    }

    // One captured connection, routed to the service; the proxy's own
    // connections (controller, peer) were never captured, and mesh traffic
    // reached the server on the mesh port, not through inbound capture.
    let outbound = "mycel_captured_connections_total";
    assert_eq!(
        client.metric_sum(outbound, &[r#"direction="outbound""#]),
        1,
        "{}",
        client.admin("/metrics").stdout
    );
    assert_eq!(
        client.metric_sum(outbound, &[r#"target="service""#, r#"protocol="http""#]),
        1
    );
    assert_eq!(server.metric_sum(outbound, &[r#"direction="inbound""#]), 0);

    // Probes from the node reach the admin port past the capture rules.
    let probe = format!("http://{}:15000/ready", server.ip);
    let r = node.exec("curl", &["-sf", "-m", "5", &probe]);
    assert!(
        r.ok && r.stdout.contains("ready"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

#[tokio::test]
async fn pod_ips_reach_the_endpoint_over_mtls_and_other_addresses_pass_through_or_are_denied() {
    if !netns::can_run() {
        return;
    }
    let mut node = node().await;
    let server = ratings_pod(&mut node, "ratings", PodSpec::new("ratings")).await;
    node.wait_registered("ratings").await;
    // A workload outside the mesh: no rules, no sidecar.
    let mut outside = Pod::new(&mut node, "outside");
    let demo = bin("mycel-demo").display().to_string();
    let listen = format!("{}:8080", outside.ip);
    outside.app("ratings", &demo, &["ratings", "--listen", &listen]);
    let passing = client_pod(&mut node, "passing", &[]).await;
    let denying = client_pod(&mut node, "denying", &["--unknown-destination", "deny"]).await;

    // The meshed pod's own address: that endpoint, over mTLS, identity kept.
    let direct = format!("http://{}:8080/ratings/p2", server.ip);
    let body = curl_json(&passing, &direct, &[&passing]);
    assert_eq!(body["caller"], passing.spiffe_id.clone().unwrap(), "{body}");

    // Not in the mesh: plain TCP, or refused.
    let wait_out = format!("{}:8080", outside.ip);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !node
        .exec(
            "curl",
            &["-sf", "-m", "2", &format!("http://{wait_out}/ratings/p1")],
        )
        .ok
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outside app never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plain = format!("http://{wait_out}/ratings/p3");
    let body = curl_json(&passing, &plain, &[&passing]);
    assert!(body["caller"].is_null(), "{body}");
    let r = denying.exec("curl", &["-sS", "-m", "10", &plain]);
    assert!(!r.ok, "denied destination answered: {}", r.stdout);

    let m = "mycel_captured_connections_total";
    assert_eq!(
        passing.metric_sum(
            m,
            &[
                r#"target="endpoint""#,
                r#"protocol="http""#,
                r#"port="8080""#
            ]
        ),
        1,
        "{}",
        passing.admin("/metrics").stdout
    );
    assert_eq!(passing.metric_sum(m, &[r#"target="passthrough""#]), 1);
    assert_eq!(denying.metric_sum(m, &[r#"target="denied""#]), 1);
}

/// initdb + postgres as the `postgres` user, listening on the pod IP.
fn start_postgres(node: &Node, pod: &mut Pod) {
    let bin_dir = netns::postgres_bin_dir().expect("a postgresql server under /usr/lib/postgresql");
    let data = node.path("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    let data_s = data.display().to_string();
    must(
        Duration::from_secs(10),
        "chown",
        &["postgres:postgres", &data_s],
    );
    let as_pg = ["--reuid=postgres", "--regid=postgres", "--init-groups"];
    let initdb = bin_dir.join("initdb").display().to_string();
    let mut args: Vec<&str> = as_pg.to_vec();
    args.extend([
        initdb.as_str(),
        "-D",
        &data_s,
        "-A",
        "trust",
        "-U",
        "postgres",
    ]);
    must(Duration::from_secs(120), "setpriv", &args);
    let hba = data.join("pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba).unwrap();
    text.push_str("host all all 0.0.0.0/0 trust\n");
    std::fs::write(&hba, text).unwrap();
    let postgres = bin_dir.join("postgres").display().to_string();
    let ip = pod.ip.to_string();
    let mut args: Vec<&str> = as_pg.to_vec();
    args.extend([
        postgres.as_str(),
        "-D",
        &data_s,
        "-h",
        &ip,
        "-p",
        "5432",
        "-k",
        &data_s,
    ]);
    pod.app("postgres", "setpriv", &args);
}

/// A server-first protocol: greets every connection before reading.
const GREETER: &str = r"import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 2525))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(b'220 greetings\r\n')
    c.close()
";

async fn wait_ok(pod: &Pod, what: &str, program: &str, args: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = pod.exec_for(Duration::from_secs(10), program, args);
        if r.ok {
            return r.stdout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never succeeded: {}{}",
            r.stdout,
            r.stderr
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn redis_psql_and_a_server_first_protocol_go_through_the_mesh() {
    if !netns::can_run() {
        return;
    }
    let mut node = node().await;
    let mut server = Pod::new(&mut node, "db");
    let ip = server.ip.to_string();
    server.app(
        "redis",
        "redis-server",
        &[
            "--bind",
            &ip,
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    start_postgres(&node, &mut server);
    let greeter = node.path("greeter.py");
    std::fs::write(&greeter, GREETER).unwrap();
    server.app("greeter", "python3", &[&greeter.display().to_string(), &ip]);
    // The apps must answer before the sidecar reports the workload ready.
    for port in ["6379", "5432", "2525"] {
        let target = format!("{ip}:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !server
            .exec(
                "bash",
                &["-c", &format!("exec 3<>/dev/tcp/{}/{}", ip, port)],
            )
            .ok
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{target} never listened; logs:\n{}",
                server
                    .apps
                    .iter()
                    .map(Proc::log)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let spec = PodSpec::new("db")
        .label("app", "ratings")
        .app_port("redis:6379:tcp")
        .app_port("postgres:5432:tcp")
        .app_port("greeting:2525:http");
    server.start_sidecar(&node, &spec).await;
    node.wait_registered("db").await;
    // Port 2525 is declared opaque on the client: no detection, so the
    // silent client is not kept waiting before the server greets.
    let client = client_pod(&mut node, "client", &["--opaque-port", "2525"]).await;

    let capture = Capture::start(&node, &server, "db").await;
    let set = wait_ok(
        &client,
        "redis-cli set",
        "redis-cli",
        &["-h", VIP, "-p", "6379", "set", "meshkey", "secret-value-42"],
    )
    .await;
    assert_eq!(set.trim(), "OK");
    let got = wait_ok(
        &client,
        "redis-cli get",
        "redis-cli",
        &["-h", VIP, "-p", "6379", "get", "meshkey"],
    )
    .await;
    assert_eq!(got.trim(), "secret-value-42");

    let sum = wait_ok(
        &client,
        "psql",
        "psql",
        &[
            "-h",
            VIP,
            "-p",
            "5432",
            "-U",
            "postgres",
            "-tAc",
            "select 40 + 2 as plaintext_marker",
        ],
    )
    .await;
    assert_eq!(sum.trim(), "42");

    let greeting = wait_ok(
        &client,
        "server-first greeting",
        "bash",
        &[
            "-c",
            &format!("exec 3<>/dev/tcp/{VIP}/2525; head -c 15 <&3"),
        ],
    )
    .await;
    assert_eq!(greeting, "220 greetings\r\n");
    let wire = capture.stop().await;

    assert!(wire.len() > 1000, "capture too small: {} bytes", wire.len());
    for plain in [
        "secret-value-42",
        "meshkey",
        "plaintext_marker",
        "220 greetings",
    ] {
        assert!(!contains(&wire, plain), "plaintext {plain:?} on the wire");
    }
    let m = "mycel_captured_connections_total";
    assert!(
        client.metric_sum(
            m,
            &[
                r#"target="service""#,
                r#"protocol="opaque_declared""#,
                r#"port="6379""#
            ]
        ) >= 2
    );
    assert!(client.metric_sum(m, &[r#"target="service""#, r#"port="5432""#]) >= 1);
    assert!(
        client.metric_sum(
            m,
            &[
                r#"target="service""#,
                r#"protocol="opaque_declared""#,
                r#"port="2525""#
            ]
        ) >= 1
    );
}

#[tokio::test]
async fn strict_refuses_and_permissive_admits_plaintext_from_outside_the_mesh() {
    if !netns::can_run() {
        return;
    }
    let mut node = node().await;
    let strict = ratings_pod(&mut node, "strict", PodSpec::new("ratings")).await;
    let open = ratings_pod(
        &mut node,
        "open",
        PodSpec::new("open").label("app", "open").permissive(),
    )
    .await;
    let outsider = Pod::new(&mut node, "outsider");

    let to_strict = format!("http://{}:8080/ratings/p1", strict.ip);
    let r = outsider.exec("curl", &["-sS", "-m", "5", &to_strict]);
    assert!(!r.ok, "strict pod answered plaintext: {}", r.stdout);

    let to_open = format!("http://{}:8080/ratings/p1", open.ip);
    let body = curl_json(&outsider, &to_open, &[&open]);
    assert_eq!(body["product_id"], "p1");
    assert!(body["caller"].is_null(), "no mesh identity: {body}");

    let m = "mycel_captured_connections_total";
    let marked = [
        r#"direction="inbound""#,
        r#"protocol="plaintext""#,
        r#"port="8080""#,
    ];
    let allowed: Vec<&str> = marked
        .iter()
        .copied()
        .chain([r#"target="allowed""#])
        .collect();
    let refused: Vec<&str> = marked
        .iter()
        .copied()
        .chain([r#"target="refused""#])
        .collect();
    assert_eq!(
        open.metric_sum(m, &allowed),
        1,
        "{}",
        open.admin("/metrics").stdout
    );
    assert_eq!(
        strict.metric_sum(m, &refused),
        1,
        "{}",
        strict.admin("/metrics").stdout
    );
    assert_eq!(strict.metric_sum(m, &allowed), 0);
}

/// A server bound to 127.0.0.1 inside a pod is for that pod alone: a
/// permissive sidecar whose app host is loopback (a real pod's default)
/// must not carry captured plaintext there, nor to undeclared ports.
#[tokio::test]
async fn permissive_capture_does_not_reach_localhost_only_server() {
    if !netns::can_run() {
        return;
    }
    let mut node = node().await;
    let mut open = Pod::new(&mut node, "open");
    let demo = bin("mycel-demo").display().to_string();
    open.app("ratings", &demo, &["ratings", "--listen", "0.0.0.0:8080"]);
    open.app(
        "local-only",
        &demo,
        &["ratings", "--listen", "127.0.0.1:6000"],
    );
    let spec = PodSpec::new("open")
        .permissive()
        .app_host("127.0.0.1")
        .app_port("http:8080");
    open.start_sidecar(&node, &spec).await;
    wait_ok(
        &open,
        "the loopback-only server",
        "curl",
        &["-sS", "-m", "2", "http://127.0.0.1:6000/ratings/p1"],
    )
    .await;
    let outsider = Pod::new(&mut node, "outsider");

    // The declared port is still served, at the pod IP.
    let to_app = format!("http://{}:8080/ratings/p1", open.ip);
    let body = curl_json(&outsider, &to_app, &[&open]);
    assert_eq!(body["product_id"], "p1");

    let to_local = format!("http://{}:6000/ratings/p1", open.ip);
    let r = outsider.exec("curl", &["-sS", "-m", "5", &to_local]);
    assert!(
        !r.ok,
        "a loopback-only server answered from outside the pod: {}",
        r.stdout
    );
    let m = "mycel_captured_connections_total";
    let refused = [r#"direction="inbound""#, r#"target="refused""#];
    assert!(
        open.metric_sum(m, &refused) >= 1,
        "{}",
        open.admin("/metrics").stdout
    );
}
