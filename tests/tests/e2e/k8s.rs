//! The controller against a real kube-apiserver (and etcd) on loopback:
//! Services and EndpointSlices created, changed and deleted through the API
//! reach real proxies; proxies get certificates for exactly the service
//! account of their token (TokenReview).
//!
//! No kubelet runs, so the tests write EndpointSlices themselves (as the
//! endpoint-slice controller would). The API server refuses loopback
//! endpoint addresses, so the endpoint test runs its Pods as network
//! namespaces on a bridge (198.18.0.0/24, needs root), with the API server
//! reached over a link of its own.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod as KubePod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mycel_tests::http;
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::mesh::{Mesh, SidecarSpec, APP_PORT};
use mycel_tests::netns::{self, Node, Pod, PodSpec, ADMIN_PORT};
use mycel_tests::{bin, skip};
use serde_json::json;

const NS: &str = "shop";

/// Creates a namespaced object from its JSON.
pub(super) async fn create<K>(client: &Client, ns: Option<&str>, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or(NS));
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {obj:?}: {e}"))
}

/// Namespace `shop`, service accounts, and a meshed Pod per `(pod, sa)`.
pub(super) async fn seed(client: &Client, pods: &[(&str, &str)]) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let mut accounts: Vec<&str> = pods.iter().map(|(_, sa)| *sa).collect();
    accounts.push("client");
    accounts.sort();
    accounts.dedup();
    for sa in accounts {
        let _: ServiceAccount = create(client, Some(NS), json!({"metadata": {"name": sa}})).await;
    }
    for (pod, sa) in pods {
        let _: KubePod = create(client, Some(NS), meshed_pod(pod, sa)).await;
    }
}

fn meshed_pod(name: &str, sa: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {"app": "web", "mycel.io/meshed": "true"},
            "annotations": {"mycel.io/injected": "true"},
        },
        "spec": {
            "serviceAccountName": sa,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "mycel-demo"}],
        },
    })
}

fn slice(name: &str, endpoints: &[(&str, &str)]) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": APP_PORT, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, pod)| json!({
            "addresses": [ip],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": NS},
        })).collect::<Vec<_>>(),
    })
}

/// A projected-style token for `sa` (TokenRequest), written to a file.
pub(super) async fn sa_token(
    client: &Client,
    dir: &std::path::Path,
    sa: &str,
    audience: &str,
) -> PathBuf {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let req: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [audience], "expirationSeconds": 600},
    }))
    .unwrap();
    let answer = api
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap();
    let token = answer.status.unwrap().token;
    let safe: String = audience
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("{sa}-{safe}.jwt"));
    std::fs::write(&path, token).unwrap();
    // Pod proxies run as their own UID.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    path
}

/// Waits until `f(config_dump of the pod's proxy)` holds, or fails with it.
async fn wait_dump(pod: &Pod, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dump = pod.admin("/config_dump").stdout;
        if f(&dump) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in {dump}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A meshed Pod in its own network namespace: the demo app and a
/// transparent proxy holding the Pod's service-account token, talking to
/// the node's first controller.
async fn pod(node: &mut Node, client: &Client, name: &str, sa: &str, subscribe: &[&str]) -> Pod {
    pod_of(node, client, name, sa, subscribe, None).await
}

/// [`pod`], its proxy talking to the controller replica at `controller`.
async fn pod_of(
    node: &mut Node,
    client: &Client,
    name: &str,
    sa: &str,
    subscribe: &[&str],
    controller: Option<SocketAddr>,
) -> Pod {
    let token = sa_token(client, node.dir.path(), sa, "mycel").await;
    let mut pod = Pod::new(node, name);
    let listen = format!("{}:{APP_PORT}", pod.ip);
    let demo = bin("mycel-demo").display().to_string();
    pod.app("app", &demo, &["ratings", "--listen", &listen]);
    let mut spec = PodSpec::new(name)
        .token_file(token)
        .app_port(&format!("http:{APP_PORT}:http"));
    spec.service_account = sa.into();
    for s in subscribe {
        spec = spec.subscribe(s);
    }
    if let Some(addr) = controller {
        spec = spec.controller(addr);
    }
    pod.start_sidecar(node, &spec).await;
    pod
}

pub(super) fn can_run_pods() -> bool {
    let missing = netns::missing_requirements();
    skip::require(
        &format!(
            "root and ip netns: {}",
            missing.as_deref().unwrap_or("available")
        ),
        missing.is_none(),
    )
}

/// A node with an API server linked in, namespace `shop` seeded with Pods
/// web-0 and web-1 (service account `web`), and Service `web`; its VIP.
async fn web_cluster() -> (Node, ApiServer, Client, String) {
    let mut node = Node::new();
    let (host_ip, _) = node.link_to_host();
    let api = ApiServer::start_at(host_ip).await.unwrap();
    let client = api.client().await.unwrap();
    seed(&client, &[("web-0", "web"), ("web-1", "web")]).await;
    let svc: Service = create(
        &client,
        Some(NS),
        json!({
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }),
    )
    .await;
    let vip = svc.spec.unwrap().cluster_ip.unwrap();
    (node, api, client, vip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_follows_services_and_endpoint_slices_through_restarts() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let (mut node, api, client, vip) = web_cluster().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let kubeconfig = api.kubeconfig.display().to_string();
    let source = [
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--proxy-mesh-port",
        "15006",
    ];
    node.start_controller_with(&source).await;

    let web0 = pod(&mut node, &client, "web-0", "web", &[]).await;
    let web1 = pod(&mut node, &client, "web-1", "web", &[]).await;
    let caller = pod(&mut node, &client, "client-0", "client", &["web.shop"]).await;
    let (ip0, ip1) = (web0.ip.to_string(), web1.ip.to_string());
    let certs = caller.admin("/certs").stdout;
    assert!(
        certs.contains("spiffe://cluster.local/ns/shop/sa/client"),
        "the client's certificate names its service account: {certs}"
    );
    let url = format!("http://{vip}/ratings/1");
    let served = |p: &Pod| p.metric_sum("mycel_requests_total", &["direction=\"inbound\""]);

    // An EndpointSlice appears: the client reaches web-0 over mTLS through
    // the VIP the API server allocated.
    let _: EndpointSlice = create(&client, Some(NS), slice("web-a", &[(&ip0, "web-0")])).await;
    wait_dump(&caller, "web-0 as an endpoint", |d| d.contains(&ip0)).await;
    let r = caller.exec("curl", &["-sf", "-m", "5", &url]);
    assert!(
        r.ok,
        "curl {url}: {}{}\n{}",
        r.stdout,
        r.stderr,
        caller.sidecar_log()
    );
    assert!(served(&web0) >= 1, "web-0 served nothing");

    // A second slice adds web-1; deleting the first leaves only web-1.
    let _: EndpointSlice = create(&client, Some(NS), slice("web-b", &[(&ip1, "web-1")])).await;
    wait_dump(&caller, "web-1 added", |d| {
        d.contains(&ip0) && d.contains(&ip1)
    })
    .await;
    slices
        .delete("web-a", &DeleteParams::default())
        .await
        .unwrap();
    wait_dump(&caller, "web-0 removed", |d| {
        !d.contains(&ip0) && d.contains(&ip1)
    })
    .await;
    let before = served(&web1);
    for _ in 0..5 {
        let r = caller.exec("curl", &["-sf", "-m", "5", &url]);
        assert!(r.ok, "curl {url}: {}", r.stderr);
    }
    assert_eq!(served(&web1) - before, 5, "every request lands on web-1");

    // Controller restart: a slice deleted and another created while it is
    // down are seen after it lists again, as on a fresh start.
    node.controller.take();
    slices
        .delete("web-b", &DeleteParams::default())
        .await
        .unwrap();
    let _: EndpointSlice = create(&client, Some(NS), slice("web-c", &[(&ip0, "web-0")])).await;
    node.start_controller_with(&source).await;
    wait_dump(&caller, "state after the controller restart", |d| {
        d.contains(&ip0) && !d.contains(&ip1)
    })
    .await;

    // The Service is deleted: its VIP no longer leads anywhere.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_dump(&caller, "web gone", |d| !d.contains(&ip0)).await;
    let r = caller.exec("curl", &["-sf", "-m", "5", &url]);
    assert!(
        !r.ok,
        "a deleted service must not be reachable: {}",
        r.stdout
    );
}

/// `mycelctl check --proxy` reads a real proxy's `/certs` through the API
/// server's pod proxy (no port of the pod exposed to the CLI): the Pod's
/// proxy holds its service account's certificate; a Pod whose account
/// differs from the certificate's is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_proxy_reads_a_real_proxy_certificate_through_the_api_server() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let (_node, api, client, web) = cluster_with_live_proxy(&[]).await;
    let kubeconfig = api.kubeconfig.display().to_string();
    // The netns pods' admin port, where check looks (the chart's settings).
    let _: Namespace = Api::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "mycel-system"}})).unwrap(),
        )
        .await
        .unwrap();
    let _: ConfigMap = create(
        &client,
        Some("mycel-system"),
        json!({"metadata": {"name": "mycel-config"},
               "data": {"inject.yaml": format!("ports:\n  admin: {ADMIN_PORT}\n")}}),
    )
    .await;
    // Two Pod objects at the live proxy's IP: one runs as `web` (its
    // certificate's account), one claims `client`.
    for (name, sa) in [("web-live", "web"), ("web-liar", "client")] {
        running_meshed_pod(&client, name, sa, &web, &[], None).await;
    }
    let certs = check_line(&kubeconfig, &["--proxy"], "proxy-certs").await;
    let detail = certs["detail"].as_str().unwrap_or_default();
    assert_eq!(certs["status"], "fail", "{certs}");
    assert!(
        detail.starts_with("1 of 2:")
            && detail.contains("shop/web-liar")
            && detail.contains("spiffe://cluster.local/ns/shop/sa/web")
            && !detail.contains("shop/web-live"),
        "only the Pod whose account differs from its proxy's certificate is named: {certs}"
    );
}

/// Runs `mycelctl check -o json` with `args`; the check named `name`.
async fn check_line(kubeconfig: &str, args: &[&str], name: &str) -> serde_json::Value {
    let out = tokio::process::Command::new(bin("mycelctl"))
        .args(["check", "-o", "json", "--kubeconfig", kubeconfig])
        .args(args)
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report}"))
        .clone()
}

/// [`web_cluster`] with the controller following it (`controller_args`
/// added to its flags), and a real proxy (pod `web-live`, account `web`)
/// the API server can reach. The Pod objects are the test's to create
/// ([`running_meshed_pod`]).
pub(super) async fn cluster_with_live_proxy(
    controller_args: &[&str],
) -> (Node, ApiServer, Client, Pod) {
    let (mut node, api, client, _vip) = web_cluster().await;
    let kubeconfig = api.kubeconfig.display().to_string();
    let mut args = vec![
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--proxy-mesh-port",
        "15006",
    ];
    args.extend_from_slice(controller_args);
    node.start_controller_with(&args).await;
    let web = pod(&mut node, &client, "web-live", "web", &[]).await;
    reach_from_api_server(&node, &web);
    (node, api, client, web)
}

/// Lets the API server (the host's namespace) reach `pod` through the
/// node, as a control plane reaches pod IPs: a /32 route over the test's
/// own link, which goes with it.
fn reach_from_api_server(node: &Node, pod: &Pod) {
    let (_, node_ip) = node
        .host_link()
        .expect("the node is linked to the host (web_cluster does it)");
    let fwd = node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(fwd.ok, "sysctl in the node: {}", fwd.stderr);
    let r = netns::run(
        Duration::from_secs(10),
        "ip",
        &[
            "route",
            "replace",
            &format!("{}/32", pod.ip),
            "via",
            &node_ip.to_string(),
        ],
    );
    assert!(r.ok, "ip route: {}", r.stderr);
}

/// A meshed Pod object at `live`'s IP, running as `sa`, its native sidecar
/// ready: what a kubelet would report for it (there is none here).
/// `admin_port` names the proxy's admin port in the spec, as the injector
/// does; labels are added to `mycel.io/meshed`.
pub(super) async fn running_meshed_pod(
    client: &Client,
    name: &str,
    sa: &str,
    live: &Pod,
    labels: &[(&str, &str)],
    admin_port: Option<u16>,
) {
    let mut all = serde_json::Map::new();
    all.insert("mycel.io/meshed".into(), json!("true"));
    for (k, v) in labels {
        all.insert((*k).into(), json!(v));
    }
    let ports: Vec<serde_json::Value> = admin_port
        .map(|p| json!({"name": "mycel-admin", "containerPort": p}))
        .into_iter()
        .collect();
    let _: KubePod = create(
        client,
        Some(NS),
        json!({
            "metadata": {"name": name, "labels": all},
            "spec": {
                "serviceAccountName": sa,
                "automountServiceAccountToken": false,
                "initContainers": [{"name": "mycel-proxy", "image": "mycel-proxy",
                                    "restartPolicy": "Always", "ports": ports}],
                "containers": [{"name": "app", "image": "mycel-demo"}],
            },
        }),
    )
    .await;
    let ip = live.ip.to_string();
    Api::<KubePod>::namespaced(client.clone(), NS)
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "initContainerStatuses": [{
                    "name": "mycel-proxy", "ready": true, "restartCount": 0,
                    "image": "mycel-proxy", "imageID": "", "started": true,
                    "state": {"running": {}},
                }],
            }})),
        )
        .await
        .unwrap();
}

/// Two replicas with one CA Secret, no leader: both certify and both serve
/// discovery at once. A caller certified by replica 1 reaches a server
/// certified by replica 0 over mTLS, and keeps reaching new endpoints
/// while replica 0 is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controller_replicas_share_the_ca_secret_and_serve_at_once() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let (mut node, api, client, vip) = web_cluster().await;
    let system: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "mycel-system"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &system)
        .await
        .unwrap();
    let kubeconfig = api.kubeconfig.display().to_string();
    let source = [
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--proxy-mesh-port",
        "15006",
        "--ca-secret",
        "mycel-system/mycel-ca",
    ];
    node.start_controller_with(&source).await;
    let (replica1, grpc1) = node.start_replica(1, &source).await;
    let root = |dir: &str| std::fs::read_to_string(node.path(dir).join("ca/root.pem")).unwrap();
    assert_eq!(
        root("data"),
        root("data-1"),
        "replica 1 signs under another root than replica 0"
    );

    let web0 = pod(&mut node, &client, "web-0", "web", &[]).await;
    let caller = pod_of(
        &mut node,
        &client,
        "client-0",
        "client",
        &["web.shop"],
        Some(grpc1),
    )
    .await;
    let ip0 = web0.ip.to_string();
    let _: EndpointSlice = create(&client, Some(NS), slice("web-a", &[(&ip0, "web-0")])).await;
    wait_dump(&caller, "web-0 from replica 1", |d| d.contains(&ip0)).await;
    let url = format!("http://{vip}/ratings/1");
    let served = |p: &Pod| p.metric_sum("mycel_requests_total", &["direction=\"inbound\""]);
    let r = caller.exec("curl", &["-sf", "-m", "5", &url]);
    assert!(
        r.ok,
        "a caller certified by replica 1 cannot reach a server certified by replica 0: {}{}\n{}",
        r.stdout,
        r.stderr,
        caller.sidecar_log()
    );
    assert!(served(&web0) >= 1, "web-0 served nothing");

    // Replica 0 goes away: replica 1 alone certifies a new Pod and tells
    // the caller about it.
    node.controller.take();
    let web1 = pod_of(&mut node, &client, "web-1", "web", &[], Some(grpc1)).await;
    let ip1 = web1.ip.to_string();
    let _: EndpointSlice = create(&client, Some(NS), slice("web-b", &[(&ip1, "web-1")])).await;
    wait_dump(&caller, "web-1 from replica 1 alone", |d| {
        d.contains(&ip0) && d.contains(&ip1)
    })
    .await;
    // Enough requests that the balancer's random choice between the two
    // endpoints passes over the new one with odds of one in a million (six
    // missed it once in a CI rehearsal: one in 64).
    const CALLS: u64 = 20;
    let before = served(&web0) + served(&web1);
    for _ in 0..CALLS {
        let r = caller.exec("curl", &["-sf", "-m", "5", &url]);
        assert!(r.ok, "curl {url} with replica 0 down: {}", r.stderr);
    }
    assert_eq!(served(&web0) + served(&web1) - before, CALLS);
    assert!(served(&web1) >= 1, "the new endpoint got no traffic");
    drop(replica1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_buy_certificates_for_exactly_that_account() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let client = api.client().await.unwrap();
    seed(&client, &[("web-0", "web")]).await;
    let mesh = Mesh::start_kubernetes(&api.kubeconfig, &[]).await;
    let dir = mesh.dir.path();

    // The right audience: a certificate for exactly that account.
    let good = sa_token(&client, dir, "web", "mycel").await;
    let sc = mesh
        .sidecar(SidecarSpec::new("web-0", "web").token_file(good))
        .await;
    let certs = sc.admin_json("/certs").await.to_string();
    assert!(
        certs.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{certs}"
    );

    // Refused: a token for another audience, a token whose account was
    // deleted, and a token that is not one.
    let other_audience = sa_token(&client, dir, "web", "https://kubernetes.default.svc").await;
    let doomed = sa_token(&client, dir, "client", "mycel").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    accounts
        .delete("client", &DeleteParams::default())
        .await
        .unwrap();
    let web_uid = accounts.get("web").await.unwrap().metadata.uid.unwrap();
    let expired = dir.join("expired.jwt");
    std::fs::write(&expired, api.expired_token(NS, "web", &web_uid).unwrap()).unwrap();
    let forged = dir.join("forged.jwt");
    std::fs::write(&forged, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").unwrap();
    for (what, token, sa, want) in [
        ("another audience", other_audience, "web", "audience"),
        (
            "a deleted account",
            doomed,
            "client",
            "refused by the API server",
        ),
        ("an expired token", expired, "web", "expired"),
        ("a forged token", forged, "web", "refused by the API server"),
    ] {
        let sc = mesh.sidecar_unready(SidecarSpec::new(&format!("bad-{sa}"), sa).token_file(token));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = sc.proc.log();
            if log.contains(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the proxy's log never says {want:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Not ready, or not even serving its admin port yet.
        if let Ok(r) = http::get(sc.admin, "localhost", "/ready").await {
            assert_ne!(
                r.status, 200,
                "{what}: a proxy without a certificate is not ready"
            );
        }
    }
}

/// Registers `mycel-injector` pointing at `url` (no caBundle: the
/// controller patches it in), for Pods of namespaces labelled for Mycel.
pub(super) async fn register_webhook(client: &Client, url: &str) {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "mycel-injector"},
        "webhooks": [{
            "name": "inject.mycel.io",
            "clientConfig": {"url": url},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"mycel.io/inject": "enabled"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
}

fn app_pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{
                "name": "app", "image": "mycel-demo",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            }],
        },
    })
}

fn init_names(p: &KubePod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_calls_the_webhook_and_pods_are_meshed_once() {
    if !k8s::available() {
        return;
    }
    let api = ApiServer::start().await.unwrap();
    let client = api.client().await.unwrap();
    let port = mycel_tests::ports::free_block(1);
    register_webhook(&client, &format!("https://127.0.0.1:{port}/inject")).await;
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": NS, "labels": {"mycel.io/inject": "enabled"}},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let _: ServiceAccount = create(&client, Some(NS), json!({"metadata": {"name": "web"}})).await;
    let webhook = format!("127.0.0.1:{port}");
    let _mesh = Mesh::start_kubernetes(
        &api.kubeconfig,
        &[
            "--webhook-addr",
            &webhook,
            "--webhook-config",
            "mycel-injector",
        ],
    )
    .await;

    // The controller sets the caBundle; until then the API server cannot
    // verify the webhook and (failurePolicy Fail) refuses Pods.
    let pods: Api<KubePod> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let injected = loop {
        match pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(app_pod("web-0", json!({}))).unwrap(),
            )
            .await
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the API server never admitted a Pod through the webhook: {e}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert_eq!(
        init_names(&injected),
        ["mycel-init", "mycel-proxy"],
        "{injected:?}"
    );
    let labels = injected.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("mycel.io/meshed").map(String::as_str),
        Some("true")
    );
    let probe = injected.spec.as_ref().unwrap().containers[0]
        .readiness_probe
        .clone()
        .unwrap()
        .http_get
        .unwrap();
    assert_eq!(
        probe.path.as_deref(),
        Some("/app-health/app/readyz"),
        "probe rewritten to the proxy"
    );

    // The stored (meshed) Pod created again under another name is not
    // meshed twice.
    let mut again = injected.clone();
    again.metadata = kube::api::ObjectMeta {
        name: Some("web-1".into()),
        annotations: injected.metadata.annotations.clone(),
        labels: injected.metadata.labels.clone(),
        ..Default::default()
    };
    let again = pods.create(&PostParams::default(), &again).await.unwrap();
    assert_eq!(
        init_names(&again),
        ["mycel-init", "mycel-proxy"],
        "injected twice: {again:?}"
    );

    // An update of a meshed Pod changes nothing of the mesh's.
    let mut labelled = pods.get("web-0").await.unwrap();
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("tier".into(), "front".into());
    let updated = pods
        .replace("web-0", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(init_names(&updated), ["mycel-init", "mycel-proxy"]);

    // Annotation off: untouched.
    let off = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(app_pod("plain", json!({"mycel.io/inject": "disabled"})))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(init_names(&off).is_empty(), "{off:?}");

    // A bad override is refused with the annotation named, not half meshed.
    let err = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(app_pod("bad", json!({"mycel.io/proxy-cpu-limit": "lots"})))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("mycel.io/proxy-cpu-limit"),
        "{err}"
    );

    // `mycelctl check` asks the API server for a dry-run Pod in the meshed
    // namespace, so the API server calls this webhook: reachable, trusted
    // through the caBundle, answering.
    let _: ServiceAccount =
        create(&client, Some(NS), json!({"metadata": {"name": "default"}})).await;
    let kubeconfig = api.kubeconfig.display().to_string();
    let call = check_line(&kubeconfig, &[], "webhook-call").await;
    assert_eq!(call["status"], "ok", "{call}");
}
