//! Trust-anchor rotation driven by the CA Secret (`--ca-secret`), against a
//! real kube-apiserver, with the controller running as a ServiceAccount
//! bound to exactly `rbac::REQUIRED` (so following the Secret needs no new
//! right): a new root put in the Secret is rotated to under constant load
//! with no failed request, the trust-bundle ConfigMaps holding both roots
//! during the overlap and only the new one at the end; a Secret that turns
//! invalid changes nothing and is reported (status, Event); a controller
//! restarted mid-rotation, even with an empty data dir, keeps both roots
//! until the overlap ends.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use mycel_tests::k8s::{self, ApiServer};
use mycel_tests::mesh::{Mesh, SidecarSpec, APP_PORT};
use mycel_tests::netns::{Node, Pod, PodSpec, CONTROLLER_ADMIN_PORT, NODE_IP};
use mycel_tests::{bin, http};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::k8s::{can_run_pods, create, sa_token, seed};
use super::k8s_ca::{cluster, cluster_on, controller_kubeconfig, some_ca, NS as SYSTEM};

const SHOP: &str = "shop";
const SECRET: &str = "mycel-ca";
const BUNDLE: &str = "mycel-trust-bundle";

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprints of the certificates in `pem`, in order.
fn fingerprints(pem: &str) -> Vec<String> {
    pem::parse_many(pem)
        .unwrap()
        .iter()
        .map(|p| fingerprint(p.contents()))
        .collect()
}

/// The CA Secret's data keys of a Mycel CA, as a merge patch (what a user
/// does with `kubectl patch` or `apply`).
fn mycel_ca_patch(texts: &[String; 4]) -> Value {
    let b64 = |s: &str| serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap();
    json!({"data": {
        "root.pem": b64(&texts[0]),
        "root.key": b64(&texts[1]),
        "issuer.pem": b64(&texts[2]),
        "issuer.key": b64(&texts[3]),
    }})
}

async fn patch_secret(admin: &Client, patch: &Value) {
    Api::<Secret>::namespaced(admin.clone(), SYSTEM)
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn secret(admin: &Client) -> Secret {
    Api::<Secret>::namespaced(admin.clone(), SYSTEM)
        .get(SECRET)
        .await
        .unwrap()
}

/// The PEM the trust-bundle ConfigMap in `ns` holds.
async fn bundle(admin: &Client, ns: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(BUNDLE)
        .await
        .unwrap()?;
    cm.data.unwrap_or_default().get("ca.crt").cloned()
}

async fn mesh_namespace(admin: &Client) {
    Api::<Namespace>::all(admin.clone())
        .patch(
            SHOP,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mycel.io/inject": "enabled"}}})),
        )
        .await
        .unwrap();
}

/// The rotation record the controllers keep in the Secret.
fn record(s: &Secret) -> Value {
    let text = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("rotation.mycel.io/state"))
        .cloned()
        .unwrap_or_else(|| "null".into());
    serde_json::from_str(&text).unwrap()
}

/// Waits until a controller's first poll recorded the root in force
/// (phase `stable`) in the Secret.
async fn until_root_recorded(admin: &Client) {
    until(
        "the root in force recorded",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                let r = record(&secret(&admin).await);
                match r["phase"] == "stable" {
                    true => Ok(()),
                    false => Err(r.to_string()),
                }
            }
        },
    )
    .await;
}

/// Data keys the controllers added to the Secret.
fn rotation_keys(s: &Secret) -> Vec<String> {
    s.data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("rotation."))
        .collect()
}

/// Events about the CA Secret with `reason`: their notes.
async fn events(admin: &Client, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(admin.clone(), SYSTEM)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SECRET)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// Polls `check` (every 200 ms) until it returns a value, or fails naming
/// `what` and the last thing seen.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------
// A whole rotation, with real sidecars in network-namespace pods.

/// Controller flags: the chart's, with short polls and overlap.
fn controller_args(kubeconfig: &str, overlap: &str) -> Vec<String> {
    [
        "--kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--proxy-mesh-port",
        "15006",
        "--ca-secret",
        "mycel-system/mycel-ca",
        "--ca-secret-poll",
        "1s",
        "--trust-bundle-configmap",
        BUNDLE,
        "--rotation-overlap",
        overlap,
    ]
    .map(String::from)
    .to_vec()
}

/// `/ca/status` of the node's controller.
fn node_status(node: &Node) -> Result<Value, String> {
    let url = format!("http://{NODE_IP}:{CONTROLLER_ADMIN_PORT}/ca/status");
    let r = node.exec("curl", &["-sf", "-m", "3", &url]);
    if !r.ok {
        return Err(format!("curl {url}: {}", r.stderr));
    }
    serde_json::from_str(&r.stdout).map_err(|e| format!("{e}: {}", r.stdout))
}

/// A meshed pod: the ratings app (when `serve`) and a transparent sidecar
/// holding a token of `sa`, whose `--ca-root` is the node's `root.pem`.
async fn pod(node: &mut Node, admin: &Client, name: &str, sa: &str, serve: bool) -> Pod {
    let token = sa_token(admin, node.dir.path(), sa, "mycel").await;
    let mut pod = Pod::new(node, name);
    let mut spec = PodSpec::new(name).token_file(token);
    spec.service_account = sa.into();
    if serve {
        let listen = format!("{}:{APP_PORT}", pod.ip);
        let demo = bin("mycel-demo").display().to_string();
        pod.app("app", &demo, &["ratings", "--listen", &listen]);
        spec = spec.app_port(&format!("http:{APP_PORT}:http"));
    } else {
        spec = spec.subscribe("web.shop");
    }
    pod.start_sidecar(node, &spec).await;
    pod
}

/// Requests from inside `pod` to `url`, one after another with a short
/// pause, until `stop` exists (at most `max` requests or 3 minutes); one
/// line `N CODE` each, in `out`.
struct Load {
    out: std::path::PathBuf,
    stop: std::path::PathBuf,
}

impl Load {
    fn start(node: &Node, pod: &mut Pod, url: &str, max: u32) -> Load {
        let (out, stop) = (node.path("load.out"), node.path("load.stop"));
        let script = format!(
            "i=0; end=$(( $(date +%s) + 180 )); \
             while [ ! -e {stop} ] && [ $i -lt {max} ] && [ $(date +%s) -lt $end ]; do \
               i=$((i+1)); \
               echo \"$i $(curl -s -o /dev/null -w '%{{http_code}}' -m 5 {url}/$i)\" >> {out}; \
               sleep 0.05; \
             done; echo end >> {out}",
            stop = stop.display(),
            out = out.display(),
        );
        pod.app("load", "sh", &["-c", &script]);
        Load { out, stop }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stops it; (answered 200, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        std::fs::write(&self.stop, "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.lines().last().map(String::as_str) != Some("end") {
            assert!(Instant::now() < deadline, "the load never stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lines = self.lines();
        let results = &lines[..lines.len() - 1];
        let ok = results.iter().filter(|l| l.ends_with(" 200")).count();
        let failed = results
            .iter()
            .filter(|l| !l.ends_with(" 200"))
            .cloned()
            .collect();
        (ok, failed)
    }
}

/// What a pod's proxy trusts and which root its leaf chains to.
fn proxy_roots(pod: &Pod) -> (Vec<String>, String) {
    let certs: Value = serde_json::from_str(&pod.admin("/certs").stdout).unwrap();
    let bundle = certs["trust_bundle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_string())
        .collect();
    let chain = pem::parse_many(certs["chain_pem"].as_str().unwrap()).unwrap();
    let top = chain.get(1).unwrap_or(&chain[0]);
    let (_, top) = x509_parser::parse_x509_certificate(top.contents()).unwrap();
    let root_pem = certs["trust_bundle_pem"].as_str().unwrap_or_default();
    let signer = pem::parse_many(root_pem)
        .unwrap()
        .into_iter()
        .find(|r| {
            x509_parser::parse_x509_certificate(r.contents())
                .map(|(_, r)| top.verify_signature(Some(r.public_key())).is_ok())
                .unwrap_or(false)
        })
        .map(|r| fingerprint(r.contents()))
        .unwrap_or_default();
    (bundle, signer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_in_the_ca_secret_is_rotated_to_under_load_without_a_failed_request() {
    if !k8s::available() || !can_run_pods() {
        return;
    }
    let mut node = Node::new();
    let (host_ip, _) = node.link_to_host();
    let (api, admin, _controller) = cluster_on(ApiServer::start_at(host_ip).await.unwrap()).await;
    seed(&admin, &[("web-0", "web")]).await;
    mesh_namespace(&admin).await;
    let svc: Service = create(
        &admin,
        Some(SHOP),
        json!({"metadata": {"name": "web"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    let vip = svc.spec.unwrap().cluster_ip.unwrap();
    let kubeconfig = controller_kubeconfig(&api).display().to_string();
    let args = controller_args(&kubeconfig, "10s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.start_controller_with(&args).await;

    let web = pod(&mut node, &admin, "web-0", "web", true).await;
    let mut client = pod(&mut node, &admin, "client-0", "client", false).await;
    let web_ip = web.ip.to_string();
    let _: EndpointSlice = create(
        &admin,
        Some(SHOP),
        json!({
            "metadata": {"name": "web-a", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": APP_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [web_ip], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "name": "web-0", "namespace": SHOP}}],
        }),
    )
    .await;
    let url = format!("http://{vip}/ratings");
    until(
        "the client reaching web through its VIP",
        Duration::from_secs(30),
        || {
            let r = client.exec("curl", &["-sf", "-m", "5", &format!("{url}/1")]);
            async move {
                if r.ok {
                    Ok(())
                } else {
                    Err(r.stderr)
                }
            }
        },
    )
    .await;
    let old_root = std::fs::read_to_string(node.path("data/ca/root.pem")).unwrap();
    let old_fp = fingerprints(&old_root).remove(0);
    until(
        "the old root published in shop",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let old_fp = old_fp.clone();
            async move {
                let b = bundle(&admin, SHOP).await.unwrap_or_default();
                match fingerprints(&b) == [old_fp] {
                    true => Ok(()),
                    false => Err(b),
                }
            }
        },
    )
    .await;
    // The first poll recorded the root in force; nothing else.
    until_root_recorded(&admin).await;

    let load = Load::start(&node, &mut client, &url, 3000);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The user (or cert-manager) puts a new CA in the Secret.
    let (_src, new_texts) = some_ca();
    let new_fp = fingerprints(&new_texts[0]).remove(0);
    let started = Instant::now();
    patch_secret(&admin, &mycel_ca_patch(&new_texts)).await;
    let s = until("distributing", Duration::from_secs(20), || {
        let s = node_status(&node);
        async move {
            let s = s?;
            match s["phase"] == "distributing" {
                true => Ok(s),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    let roots: Vec<&str> = s["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(roots, [old_fp.as_str(), new_fp.as_str()], "{s:#}");
    assert_eq!(s["secret"]["name"], "mycel-system/mycel-ca", "{s:#}");

    // Overlap: signing switched; the ConfigMap holds both roots, and a pod
    // started now (its --ca-root is the ConfigMap, as the injector mounts
    // it) joins and is served.
    until("overlap", Duration::from_secs(40), || {
        let s = node_status(&node);
        async move {
            let s = s?;
            match s["phase"] == "overlap" {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    let during = bundle(&admin, SHOP).await.unwrap();
    assert_eq!(node_status(&node).unwrap()["phase"], "overlap");
    let mut both = fingerprints(&during);
    both.sort();
    let mut want = vec![old_fp.clone(), new_fp.clone()];
    want.sort();
    assert_eq!(both, want, "the ConfigMap during the overlap:\n{during}");
    std::fs::write(node.path("root.pem"), &during).unwrap();
    let late = pod(&mut node, &admin, "late-0", "client", false).await;
    until("the late pod reaching web", Duration::from_secs(20), || {
        let r = late.exec("curl", &["-sf", "-m", "5", &format!("{url}/late")]);
        async move {
            if r.ok {
                Ok(())
            } else {
                Err(r.stderr)
            }
        }
    })
    .await;
    let (_, late_root) = proxy_roots(&late);
    assert_eq!(
        late_root, new_fp,
        "a pod joining in the overlap gets a new-root leaf"
    );

    let done = until("stable again", Duration::from_secs(60), || {
        let s = node_status(&node);
        async move {
            let s = s?;
            match s["phase"] == "stable" && s["roots"].as_array().map(Vec::len) == Some(1) {
                true => Ok(s),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    let took = started.elapsed();
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rotation: {:?}\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        client.sidecar_log()
    );
    assert!(ok > 50, "too little load to mean anything: {ok}");
    eprintln!("rotation driven by the Secret: {ok} requests, none failed, stable after {took:?}");

    assert_eq!(done["roots"][0]["fingerprint"], new_fp.as_str(), "{done:#}");
    assert_eq!(done["proxies_on_old_root"], 0, "{done:#}");
    for p in [&web, &client, &late] {
        let (trusted, leaf_root) = proxy_roots(p);
        assert_eq!(
            trusted,
            [new_fp.as_str()],
            "{} still trusts the old root",
            p.ns
        );
        assert_eq!(
            leaf_root, new_fp,
            "{}'s leaf is not from the new root",
            p.ns
        );
    }
    let after = bundle(&admin, SHOP).await.unwrap();
    assert_eq!(
        fingerprints(&after),
        [new_fp.as_str()],
        "the ConfigMap at the end"
    );

    // The Secret: the user's keys untouched, the new root recorded in
    // force, nothing of the rotation left.
    let s = secret(&admin).await;
    let data = s.data.as_ref().unwrap();
    assert_eq!(data["root.pem"].0, new_texts[0].as_bytes());
    assert_eq!(data["issuer.key"].0, new_texts[3].as_bytes());
    let r = record(&s);
    assert_eq!(r["phase"], "stable", "{r}");
    assert_eq!(
        fingerprints(r["root_pem"].as_str().unwrap()),
        [new_fp.as_str()]
    );
    assert!(rotation_keys(&s).is_empty(), "{:?}", rotation_keys(&s));
    let notes = events(&admin, "TrustAnchorRotation").await;
    assert!(
        notes.iter().any(|n| n.contains("rotation started"))
            && notes.iter().any(|n| n.contains("finished")),
        "{notes:?}"
    );
    drop(api);
}

// ---------------------------------------------------------------------
// Loopback: a controller and a sidecar, no traffic.

/// A cluster with namespace `shop` meshed, a controller following the CA
/// Secret, and a sidecar (`web-0`, account `web`) connected to it.
async fn loopback(overlap: &str) -> (ApiServer, Client, Mesh, mycel_tests::mesh::Sidecar) {
    let (api, admin, _controller) = cluster().await;
    seed(&admin, &[("web-0", "web")]).await;
    mesh_namespace(&admin).await;
    let kubeconfig = controller_kubeconfig(&api);
    let mesh = Mesh::start_kubernetes(
        &kubeconfig,
        &[
            "--ca-secret",
            "mycel-system/mycel-ca",
            "--ca-secret-poll",
            "1s",
            "--trust-bundle-configmap",
            BUNDLE,
            "--rotation-overlap",
            overlap,
        ],
    )
    .await;
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    let web = mesh
        .sidecar(SidecarSpec::new("web-0", "web").token_file(token))
        .await;
    (api, admin, mesh, web)
}

async fn status(mesh: &Mesh) -> Value {
    http::get(mesh.admin, "localhost", "/ca/status")
        .await
        .expect("GET /ca/status")
        .json()
}

fn status_roots(s: &Value) -> Vec<String> {
    s["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

/// The trust bundle a sidecar holds.
async fn sidecar_bundle(sc: &mycel_tests::mesh::Sidecar) -> Vec<String> {
    sc.admin_json("/certs").await["trust_bundle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_string())
        .collect()
}

/// A Secret changed to something unusable (bad PEM, an issuer key that is
/// not the issuer's, an issuer another root signed, a cert-manager-style
/// CA whose tls.crt does not chain to its ca.crt) is refused: the CA in
/// use keeps signing (a sidecar started then gets a leaf of the root in
/// force), nothing is recorded or trusted, and the reason is in
/// `/ca/status` (`mycelctl ca status` exits 1) and in a Warning Event on
/// the Secret. Putting the CA in force back clears it; a renewed issuer of
/// that root then signs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_secret_turned_invalid_changes_nothing_and_is_reported() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, mesh, web) = loopback("10s").await;
    let before = status(&mesh).await;
    let in_force = status_roots(&before);
    assert_eq!(in_force.len(), 1, "{before:#}");
    let original = secret(&admin).await;
    let own_keys = |s: &Secret| -> Vec<(String, Vec<u8>)> {
        s.data
            .iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with("rotation."))
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    };

    let (_a, a) = some_ca();
    let (_b, b) = some_ca();
    let b64 = |s: &str| serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap();
    let mycel = |root: &str, issuer: &str, key: &str| {
        json!({"data": {"root.pem": b64(root), "root.key": b64(&a[1]),
                        "issuer.pem": b64(issuer), "issuer.key": b64(key)}})
    };
    let bad_pem = "-----BEGIN CERTIFICATE-----\n%%%% not base64 %%%%\n-----END CERTIFICATE-----\n";
    let cases = [
        ("bad PEM", mycel(bad_pem, &a[2], &a[3]), "root.pem: bad PEM"),
        (
            "a key not matching",
            mycel(&a[0], &a[2], &b[3]),
            "issuer key issuer.key does not match issuer certificate issuer.pem",
        ),
        (
            "an issuer of another root",
            mycel(&a[0], &b[2], &b[3]),
            "issuer certificate issuer.pem is not signed by root certificate root.pem",
        ),
        (
            "a cert-manager-style CA not chaining",
            json!({"data": {"root.pem": Value::Null, "root.key": Value::Null,
                            "issuer.pem": Value::Null, "issuer.key": Value::Null,
                            "ca.crt": b64(&a[0]), "tls.crt": b64(&b[2]), "tls.key": b64(&b[3])}}),
            "issuer certificate tls.crt is not signed by root certificate ca.crt",
        ),
    ];
    for (what, patch, want) in cases {
        patch_secret(&admin, &patch).await;
        let s = until(&format!("{what} reported"), Duration::from_secs(15), || {
            let mesh = &mesh;
            async move {
                let s = status(mesh).await;
                let error = s["secret"]["error"].as_str().unwrap_or_default();
                match error.contains(want) {
                    true => Ok(s),
                    false => Err(s.to_string()),
                }
            }
        })
        .await;
        let error = s["secret"]["error"].as_str().unwrap();
        assert!(
            error.contains("mycel-system/mycel-ca") && error.contains("keeps signing"),
            "{what}: {error}"
        );
        assert_eq!(s["phase"], "stable", "{what}: {s:#}");
        assert_eq!(status_roots(&s), in_force, "{what}: the bundle changed");
        let notes = events(&admin, "InvalidCA").await;
        assert!(
            notes.iter().any(|n| n.contains(want)),
            "{what}: no Warning Event saying {want:?}: {notes:?}"
        );
        let out = tokio::process::Command::new(bin("mycelctl"))
            .args([
                "ca",
                "status",
                "--controller-admin",
                &mesh.admin.to_string(),
            ])
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{what}: ca status exit 0:\n{stdout}");
        assert!(
            stdout.contains("REFUSED") && stderr.contains(want),
            "{what}:\n{stdout}{stderr}"
        );
        let now = secret(&admin).await;
        assert_eq!(record(&now)["phase"], "stable", "{what}");
        assert!(
            rotation_keys(&now).is_empty(),
            "{what}: {:?}",
            rotation_keys(&now)
        );
    }

    // The CA in force keeps signing: a proxy started now is certified
    // under it, and the one connected still trusts it alone.
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    let late = mesh
        .sidecar(SidecarSpec::new("web-1", "web").token_file(token))
        .await;
    assert_eq!(sidecar_bundle(&late).await, in_force);
    assert_eq!(sidecar_bundle(&web).await, in_force);
    let chain = late.admin_json("/certs").await["chain_pem"]
        .as_str()
        .unwrap()
        .to_string();
    let issuer = pem::parse_many(&chain).unwrap().remove(1);
    let root_pem = std::fs::read_to_string(mesh.ca_root()).unwrap();
    let root = pem::parse_many(&root_pem).unwrap().remove(0);
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer.contents()).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(root.contents()).unwrap();
    assert!(issuer.verify_signature(Some(root.public_key())).is_ok());

    // The user puts the CA in force back: followed again, nothing rotated.
    let mut restore =
        json!({"data": {"ca.crt": Value::Null, "tls.crt": Value::Null, "tls.key": Value::Null}});
    for (k, v) in original.data.as_ref().unwrap() {
        restore["data"][k] = serde_json::to_value(v).unwrap();
    }
    patch_secret(&admin, &restore).await;
    until("the error cleared", Duration::from_secs(15), || {
        let mesh = &mesh;
        async move {
            let s = status(mesh).await;
            match s["secret"].get("error").is_none() {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    assert_eq!(own_keys(&secret(&admin).await), own_keys(&original));
    assert_eq!(status_roots(&status(&mesh).await), in_force);

    // A renewed intermediate of the root in force (what cert-manager does
    // before tls.crt expires) is no rotation: it signs at once.
    let data = original.data.as_ref().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let (issuer, issuer_key) = renewed_issuer(&text("root.pem"), &text("root.key"));
    patch_secret(
        &admin,
        &json!({"data": {"issuer.pem": b64(&issuer), "issuer.key": b64(&issuer_key)}}),
    )
    .await;
    let token = sa_token(&admin, mesh.dir.path(), "web", "mycel").await;
    let renewed = fingerprints(&issuer).remove(0);
    until(
        "leaves from the renewed issuer",
        Duration::from_secs(15),
        || {
            let (mesh, token, renewed) = (&mesh, token.clone(), renewed.clone());
            async move {
                let sc = mesh
                    .sidecar(SidecarSpec::new("web-2", "web").token_file(token))
                    .await;
                let chain = sc.admin_json("/certs").await["chain_pem"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let got = fingerprints(&chain).get(1).cloned().unwrap_or_default();
                match got == renewed {
                    true => Ok(()),
                    false => Err(format!("issuer {got}")),
                }
            }
        },
    )
    .await;
    let s = status(&mesh).await;
    assert_eq!(
        (s["phase"].as_str(), status_roots(&s)),
        (Some("stable"), in_force)
    );
    assert!(s["secret"].get("error").is_none(), "{s:#}");
}

/// A new intermediate signed by the root `root_pem` (its key `key_pem`).
fn renewed_issuer(root_pem: &str, key_pem: &str) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let root_key = KeyPair::from_pem(key_pem).unwrap();
    let root = CertificateParams::from_ca_cert_pem(root_pem)
        .unwrap()
        .self_signed(&root_key)
        .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "renewed issuer");
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(30);
    let cert = params.signed_by(&key, &root, &root_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A controller restarted in the overlap, its data dir emptied (a Pod
/// rescheduled: the chart's data dir is an emptyDir), resumes from the
/// Secret: it signs with the new root, still trusts the old one, keeps the
/// overlap's end, and drops the old root only after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_mid_rotation_keeps_both_roots_until_the_overlap_ends() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, mut mesh, web) = loopback("20s").await;
    let old_fp = status_roots(&status(&mesh).await).remove(0);
    until_root_recorded(&admin).await;
    let (_src, new_texts) = some_ca();
    let new_fp = fingerprints(&new_texts[0]).remove(0);
    patch_secret(&admin, &mycel_ca_patch(&new_texts)).await;
    let s = until("overlap", Duration::from_secs(40), || {
        let mesh = &mesh;
        async move {
            let s = status(mesh).await;
            match s["phase"] == "overlap" {
                true => Ok(s),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    let overlap_ends = s["overlap_ends"].as_str().unwrap().to_string();
    assert_eq!(status_roots(&s), [new_fp.clone(), old_fp.clone()]);

    mesh.kill_controller().await;
    for dir in ["ca", "ca-active", "ca-provided"] {
        let _ = std::fs::remove_dir_all(mesh.path("data").join(dir));
    }
    mesh.start_controller().await;
    let s = status(&mesh).await;
    assert_eq!(
        s["phase"], "overlap",
        "a restart continues the rotation: {s:#}"
    );
    assert_eq!(
        status_roots(&s),
        [new_fp.clone(), old_fp.clone()],
        "both roots after the restart: {s:#}"
    );
    assert_eq!(
        s["overlap_ends"],
        overlap_ends.as_str(),
        "the overlap keeps its end"
    );

    // Until the overlap's end both roots stay everywhere: the controller's
    // bundle, the ConfigMap, the connected sidecar's bundle.
    let ends = time::OffsetDateTime::parse(
        &overlap_ends,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let mut checked = 0;
    loop {
        let now = time::OffsetDateTime::now_utc();
        let s = status(&mesh).await;
        if now + time::Duration::seconds(1) >= ends {
            break;
        }
        assert_eq!(
            status_roots(&s).len(),
            2,
            "a root dropped before the overlap ended: {s:#}"
        );
        let cm = bundle(&admin, SHOP).await.unwrap_or_default();
        if time::OffsetDateTime::now_utc() + time::Duration::seconds(1) < ends {
            assert_eq!(
                fingerprints(&cm).len(),
                2,
                "the ConfigMap before the overlap ended:\n{cm}"
            );
        }
        checked += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(checked > 3, "the restart took the whole overlap");
    let mut held = sidecar_bundle(&web).await;
    held.sort();
    let mut want = vec![new_fp.clone(), old_fp.clone()];
    want.sort();
    let s = status(&mesh).await;
    if s["phase"] == "overlap" {
        assert_eq!(held, want, "the sidecar's bundle in the overlap");
    }

    until("stable on the new root", Duration::from_secs(60), || {
        let mesh = &mesh;
        async move {
            let s = status(mesh).await;
            match s["phase"] == "stable" && status_roots(&s).len() == 1 {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    assert_eq!(status_roots(&status(&mesh).await), [new_fp.as_str()]);
    until(
        "the new root alone in the ConfigMap and the sidecar",
        Duration::from_secs(20),
        || {
            let (admin, web, new_fp) = (admin.clone(), &web, new_fp.clone());
            async move {
                let cm = fingerprints(&bundle(&admin, SHOP).await.unwrap_or_default());
                let sc = sidecar_bundle(web).await;
                match cm == [new_fp.as_str()] && sc == [new_fp] {
                    true => Ok(()),
                    false => Err(format!("ConfigMap {cm:?}, sidecar {sc:?}")),
                }
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------
// Two replicas.

/// Two controller replicas share one CA Secret. A proxy of replica B
/// never acknowledges the bundle holding the new root: no replica may then
/// sign with the new root (a leaf of it would be refused by that proxy),
/// so replica A, whose own proxies are done, waits in `distributing`,
/// showing what B waits for. Once that proxy is gone, both finish the
/// rotation on the new root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_proxy_lacks_the_new_root_holds_back_every_replicas_switch() {
    use mycel_api::v1::{Hello, Workload};
    if !k8s::available() {
        return;
    }
    let (api, admin, mesh_a, web) = loopback("2s").await;
    let kubeconfig = controller_kubeconfig(&api);
    let mesh_b = Mesh::start_kubernetes(
        &kubeconfig,
        &[
            "--ca-secret",
            "mycel-system/mycel-ca",
            "--ca-secret-poll",
            "1s",
            "--trust-bundle-configmap",
            BUNDLE,
            "--rotation-overlap",
            "2s",
        ],
    )
    .await;
    let old_fp = status_roots(&status(&mesh_a).await).remove(0);
    assert_eq!(
        status_roots(&status(&mesh_b).await),
        [old_fp.as_str()],
        "one root"
    );
    let token = sa_token(&admin, mesh_b.dir.path(), "client", "mycel").await;
    let hello = Hello {
        proxy_id: "silent-probe".into(),
        workload: Some(Workload {
            name: "client-0".into(),
            namespace: SHOP.into(),
            service_account: "client".into(),
            ..Workload::default()
        }),
        mode: "sidecar".into(),
        ..Hello::default()
    };
    let token = std::fs::read_to_string(token).unwrap();
    let silent = super::k8s_routes::Proxy::open_hello(&mesh_b, token.trim(), hello, "none").await;
    until(
        "B counting the silent proxy",
        Duration::from_secs(10),
        || {
            let mesh_b = &mesh_b;
            async move {
                let s = status(mesh_b).await;
                match s["proxies"].as_array().map(Vec::len) == Some(1) {
                    true => Ok(()),
                    false => Err(s.to_string()),
                }
            }
        },
    )
    .await;

    let (_src, new_texts) = some_ca();
    let new_fp = fingerprints(&new_texts[0]).remove(0);
    patch_secret(&admin, &mycel_ca_patch(&new_texts)).await;
    // A sees B's report: B waits for its proxy to acknowledge.
    let s = until(
        "A showing B held back by its proxy",
        Duration::from_secs(40),
        || {
            let mesh_a = &mesh_a;
            async move {
                let s = status(mesh_a).await;
                let waits = s["secret"]["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| {
                        r["done"] == false
                            && r["waiting"]
                                .as_str()
                                .unwrap_or_default()
                                .contains("1 proxies have not acknowledged the trust bundle")
                    });
                match waits {
                    true => Ok(s),
                    false => Err(s.to_string()),
                }
            }
        },
    )
    .await;
    assert_eq!(s["phase"], "distributing", "{s:#}");
    // Long past the shortest phase, every replica still signs with the old
    // root: the one whose proxy lacks the new root holds the switch back.
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(6) {
        for (name, mesh) in [("A", &mesh_a), ("B", &mesh_b)] {
            let s = status(mesh).await;
            assert_eq!(s["phase"], "distributing", "replica {name} moved on: {s:#}");
            assert_eq!(
                status_roots(&s)[0],
                old_fp,
                "replica {name} signs with the new root"
            );
        }
        let r = record(&secret(&admin).await);
        assert_eq!(r["phase"], "distributing", "{r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let certs = web.admin_json("/certs").await;
    assert_eq!(
        certs["trust_bundle"].as_array().unwrap().len(),
        2,
        "A's proxy holds both roots: {certs}"
    );

    // The silent proxy leaves: the rotation goes through on both.
    drop(silent);
    for (name, mesh) in [("A", &mesh_a), ("B", &mesh_b)] {
        until(
            &format!("replica {name} stable on the new root"),
            Duration::from_secs(60),
            || {
                let new_fp = new_fp.clone();
                async move {
                    let s = status(mesh).await;
                    match s["phase"] == "stable" && status_roots(&s) == [new_fp] {
                        true => Ok(()),
                        false => Err(s.to_string()),
                    }
                }
            },
        )
        .await;
    }
    assert_eq!(sidecar_bundle(&web).await, [new_fp.as_str()]);
}

/// The Secret gets a new root while no controller runs. Restarted with its
/// data dir (a container restart), the controller still holds the retired
/// CA and rotates as usual, through `distributing`. Restarted with an empty
/// one (every Pod rescheduled), nobody holds the retired CA's key any more:
/// after waiting for a running replica that does not come, it signs with
/// the new root at once but keeps the old one trusted for the overlap,
/// instead of dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_changed_while_no_controller_ran_is_still_rotated_to_with_an_overlap() {
    if !k8s::available() {
        return;
    }
    let (_api, admin, mut mesh, _web) = loopback("3s").await;
    let first = status_roots(&status(&mesh).await).remove(0);
    until_root_recorded(&admin).await;

    // Data dir kept: an ordinary rotation.
    mesh.kill_controller().await;
    let (_a, second_texts) = some_ca();
    let second = fingerprints(&second_texts[0]).remove(0);
    patch_secret(&admin, &mycel_ca_patch(&second_texts)).await;
    mesh.start_controller().await;
    let s = status(&mesh).await;
    assert_eq!(status_roots(&s)[0], first, "the retired CA signs: {s:#}");
    until(
        "distributing to the new root",
        Duration::from_secs(15),
        || {
            let mesh = &mesh;
            async move {
                let s = status(mesh).await;
                match s["phase"] == "distributing" {
                    true => Ok(()),
                    false => Err(s.to_string()),
                }
            }
        },
    )
    .await;
    until("stable on the second root", Duration::from_secs(60), || {
        let (mesh, second) = (&mesh, second.clone());
        async move {
            let s = status(mesh).await;
            match s["phase"] == "stable" && status_roots(&s) == [second] {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;

    // Data dir emptied: overlap at once, both roots trusted.
    mesh.kill_controller().await;
    for dir in ["ca", "ca-active", "ca-provided"] {
        let _ = std::fs::remove_dir_all(mesh.path("data").join(dir));
    }
    let (_b, third_texts) = some_ca();
    let third = fingerprints(&third_texts[0]).remove(0);
    patch_secret(&admin, &mycel_ca_patch(&third_texts)).await;
    mesh.start_controller().await;
    let s = status(&mesh).await;
    assert_eq!(s["phase"], "overlap", "{s:#}");
    assert_eq!(
        status_roots(&s),
        [third.as_str(), second.as_str()],
        "the old root is kept for the overlap: {s:#}"
    );
    let r = record(&secret(&admin).await);
    assert_eq!(r["phase"], "overlap", "{r}");
    let cm = until(
        "both roots in the ConfigMap",
        Duration::from_secs(15),
        || {
            let admin = admin.clone();
            async move {
                let cm = bundle(&admin, SHOP).await.unwrap_or_default();
                match fingerprints(&cm).len() == 2 {
                    true => Ok(cm),
                    false => Err(cm),
                }
            }
        },
    )
    .await;
    assert!(fingerprints(&cm).contains(&second), "{cm}");
    until("stable on the third root", Duration::from_secs(60), || {
        let (mesh, third) = (&mesh, third.clone());
        async move {
            let s = status(mesh).await;
            match s["phase"] == "stable" && status_roots(&s) == [third] {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    assert!(rotation_keys(&secret(&admin).await).is_empty());
}

/// The injection webhook is served with the controller's certificate, so
/// its configuration's caBundle must follow a rotation: pinned to the root
/// the controller started with (as it was), the API server refuses every
/// Pod of a meshed namespace (failurePolicy Fail) once that certificate
/// comes from the new root. It holds both roots through the overlap and
/// the new one alone at the end, and Pods are admitted and injected
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_keeps_calling_the_injection_webhook_across_a_rotation() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Pod as KubePod;
    use kube::api::PostParams;
    if !k8s::available() {
        return;
    }
    let (api, admin, _controller) = cluster().await;
    seed(&admin, &[]).await;
    mesh_namespace(&admin).await;
    let port = mycel_tests::ports::free_block(1);
    super::k8s::register_webhook(&admin, &format!("https://127.0.0.1:{port}/inject")).await;
    let webhook = format!("127.0.0.1:{port}");
    let mesh = Mesh::start_kubernetes(
        &controller_kubeconfig(&api),
        &[
            "--ca-secret",
            "mycel-system/mycel-ca",
            "--ca-secret-poll",
            "1s",
            "--rotation-overlap",
            "5s",
            "--trust-bundle-configmap",
            BUNDLE,
            "--webhook-addr",
            &webhook,
            "--webhook-config",
            "mycel-injector",
        ],
    )
    .await;
    let ca_bundle = || {
        let admin = admin.clone();
        async move {
            let config = Api::<MutatingWebhookConfiguration>::all(admin)
                .get("mycel-injector")
                .await
                .unwrap();
            let bundle = config.webhooks.unwrap_or_default()[0]
                .client_config
                .ca_bundle
                .clone()
                .map(|b| String::from_utf8(b.0).unwrap())
                .unwrap_or_default();
            fingerprints(&bundle)
        }
    };
    let pods: Api<KubePod> = Api::namespaced(admin.clone(), SHOP);
    // Admitted (and injected) through the webhook, retried for a while: the
    // caBundle is written asynchronously.
    let admitted = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let pod: KubePod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"serviceAccountName": "client", "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "mycel-demo"}]},
            }))
            .unwrap();
            until(
                &format!("Pod {name} admitted"),
                Duration::from_secs(20),
                || {
                    let (pods, pod) = (pods.clone(), pod.clone());
                    async move {
                        let p = pods
                            .create(&PostParams::default(), &pod)
                            .await
                            .map_err(|e| e.to_string())?;
                        let init: Vec<String> = p
                            .spec
                            .and_then(|s| s.init_containers)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| c.name)
                            .collect();
                        match init.contains(&"mycel-proxy".to_string()) {
                            true => Ok(()),
                            false => Err(format!("not injected: {init:?}")),
                        }
                    }
                },
            )
            .await
        }
    };
    admitted("before").await;
    let old_fp = status_roots(&status(&mesh).await).remove(0);
    assert_eq!(ca_bundle().await, [old_fp.as_str()]);

    let (_src, new_texts) = some_ca();
    let new_fp = fingerprints(&new_texts[0]).remove(0);
    patch_secret(&admin, &mycel_ca_patch(&new_texts)).await;
    until("overlap", Duration::from_secs(40), || {
        let mesh = &mesh;
        async move {
            let s = status(mesh).await;
            match s["phase"] == "overlap" {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    let mut both = ca_bundle().await;
    both.sort();
    let mut want = vec![old_fp.clone(), new_fp.clone()];
    want.sort();
    assert_eq!(both, want, "the caBundle in the overlap");
    admitted("during").await;

    until("stable on the new root", Duration::from_secs(60), || {
        let (mesh, new_fp) = (&mesh, new_fp.clone());
        async move {
            let s = status(mesh).await;
            match s["phase"] == "stable" && status_roots(&s) == [new_fp] {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        }
    })
    .await;
    until(
        "the caBundle on the new root alone",
        Duration::from_secs(20),
        || {
            let (get, new_fp) = (ca_bundle(), new_fp.clone());
            async move {
                let b = get.await;
                match b == [new_fp] {
                    true => Ok(()),
                    false => Err(format!("{b:?}")),
                }
            }
        },
    )
    .await;
    admitted("after").await;
}
