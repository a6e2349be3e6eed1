//! `PeerAuthentication` from mesh.yaml, in pods made of network namespaces:
//! a client outside the mesh sends plaintext that the server pod's
//! iptables rules hand to its sidecar's capture listener, and the mode of
//! the port (per namespace, workload or port, changed live) decides whether
//! it reaches the app, then authorization decides as for an
//! unauthenticated caller. Needs root and iptables; skips (or fails under
//! MYCEL_REQUIRE_ALL=1) elsewhere.

use std::time::{Duration, Instant};

use mycel_tests::bin;
use mycel_tests::netns::{self, Node, Pod, PodSpec};

const SERVICE: &str = "\
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
    - name: admin
      port: 2525
      targetPort: 2525
      appProtocol: http
";

fn peer_auth(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

fn authz(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

/// Whether a plaintext GET from `from` to `url` is answered.
fn answered(from: &Pod, url: &str) -> bool {
    from.exec("curl", &["-sS", "-m", "3", "-o", "/dev/null", url])
        .ok
}

/// Waits (at most 5 s) until `url` is answered (`want`) or refused, and
/// says how long the change took to apply.
async fn until(from: &Pod, url: &str, want: bool, what: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if answered(from, url) == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: {url} still {}",
        if want { "refused" } else { "answered" }
    );
}

#[tokio::test]
async fn peer_authentication_decides_plaintext_per_namespace_workload_and_port_live() {
    if !netns::can_run() {
        return;
    }
    let mut node = Node::new();
    node.start_controller(SERVICE).await;
    let mesh_yaml = node.path("mesh.yaml");
    let write = |extra: &str| std::fs::write(&mesh_yaml, format!("{SERVICE}{extra}")).unwrap();

    // The sidecar's own setting is permissive: without a policy, plaintext
    // from outside reaches both ports.
    let mut server = Pod::new(&mut node, "ratings");
    let demo = bin("mycel-demo").display().to_string();
    for port in [8080, 2525] {
        let listen = format!("{}:{port}", server.ip);
        server.app(
            &format!("ratings-{port}"),
            &demo,
            &["ratings", "--listen", &listen],
        );
    }
    let spec = PodSpec::new("ratings")
        .permissive()
        .app_port("http:8080")
        .app_port("admin:2525");
    server.start_sidecar(&node, &spec).await;
    let outsider = Pod::new(&mut node, "outsider");
    let main = format!("http://{}:8080/ratings/p1", server.ip);
    let admin = format!("http://{}:2525/ratings/p1", server.ip);
    until(&outsider, &main, true, "permissive flag, no policy").await;
    assert!(answered(&outsider, &admin));
    // A mesh caller, through its own sidecar and the service VIP.
    let mut client = Pod::new(&mut node, "client");
    client
        .start_sidecar(&node, &PodSpec::new("client").subscribe("ratings.shop"))
        .await;
    let vip = "http://198.19.0.10/ratings/p1";
    until(&client, vip, true, "mesh caller").await;

    // STRICT for the namespace: refused at accept, without a restart.
    write(&peer_auth("shop-strict", "{mtls: {mode: STRICT}}"));
    let took = until(&outsider, &main, false, "namespace STRICT").await;
    assert!(!answered(&outsider, &admin));
    eprintln!("STRICT applied in {took:?}");
    assert!(answered(&client, vip), "a mode never concerns mesh callers");
    let refused = [
        r#"direction="inbound""#,
        r#"protocol="plaintext""#,
        r#"target="refused""#,
    ];
    assert!(server.metric_sum("mycel_captured_connections_total", &refused) >= 2);
    assert!(
        server
            .sidecar_log()
            .contains("PeerAuthentication shop/shop-strict"),
        "the refusal names the policy: {}",
        server.sidecar_log()
    );

    // One port of the workload PERMISSIVE: that port only.
    let modes = format!(
        "{}{}",
        peer_auth("shop-strict", "{mtls: {mode: STRICT}}"),
        peer_auth(
            "ratings-admin",
            "{selector: {matchLabels: {app: ratings}}, portLevelMtls: {2525: {mode: PERMISSIVE}}}"
        )
    );
    write(&modes);
    until(&outsider, &admin, true, "port 2525 PERMISSIVE").await;
    assert!(!answered(&outsider, &main), "port 8080 stays STRICT");

    // plaintext_is_authorized_like_any_caller: once an ALLOW policy selects
    // the workload, an admitted plaintext caller must match it too.
    let allow_mesh =
        "{selector: {matchLabels: {app: ratings}}, rules: [{from: [{namespaces: [shop]}]}]}";
    write(&format!("{modes}{}", authz("mesh-only", allow_mesh)));
    until(&outsider, &admin, false, "ALLOW for mesh callers only").await;
    assert!(answered(&client, vip), "the shop caller is allowed");
    let denied = [r#"decision="deny""#, r#"protocol="tcp""#];
    assert!(
        server.metric_sum("mycel_authz_decisions_total", &denied) >= 1,
        "{}",
        server.admin("/metrics").stdout
    );

    // An ALLOW rule for unauthenticated callers from the outsider's address
    // lets it in again.
    let allow_outsider = format!(
        "{{selector: {{matchLabels: {{app: ratings}}}}, rules: [{{from: [{{namespaces: [shop]}}]}}, {{from: [{{unauthenticated: true, ipBlocks: [\"{}/32\"]}}]}}]}}",
        outsider.ip
    );
    write(&format!("{modes}{}", authz("mesh-only", &allow_outsider)));
    until(
        &outsider,
        &admin,
        true,
        "ALLOW unauthenticated from the outsider",
    )
    .await;
    assert!(!answered(&outsider, &main), "port 8080 stays STRICT");
}
