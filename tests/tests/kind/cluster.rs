//! The cluster the suite runs against, and the small verbs the tests use
//! on it: kubectl, helm and mycelctl as a user would type them, waiting,
//! and the gateway's address.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

pub const SHOP: &str = "shop";
pub const SYSTEM: &str = "mycel-system";
pub const TRUST_DOMAIN: &str = "cluster.local";

pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

/// The shop's ingress gateway on the host (`tests/kind/cluster.yaml` maps
/// the gateway's NodePort there).
pub fn gateway() -> SocketAddr {
    let url =
        std::env::var("MYCEL_KIND_GATEWAY").unwrap_or_else(|_| "http://127.0.0.1:30080".into());
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport
        .parse()
        .unwrap_or_else(|e| panic!("MYCEL_KIND_GATEWAY={url:?} is not http://IP:PORT: {e}"))
}

/// Where tests leave what a person may want to look at afterwards.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("MYCEL_KIND_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/kind-artifacts"
            ))
        });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub async fn client() -> Client {
    Client::try_default().await.unwrap_or_else(|e| {
        panic!("no cluster in KUBECONFIG ({e}); tests/kind/run.sh up sets one up")
    })
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it in PATH?): {e}"));
    if let Some(text) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("writing to {program}: {e}"));
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"))
}

fn must(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl; panics with its output when it fails.
pub fn kubectl(args: &[&str]) -> String {
    must("kubectl", args, run("kubectl", args, None))
}

/// kubectl whose failure the test looks at.
pub fn try_kubectl(args: &[&str]) -> Output {
    run("kubectl", args, None)
}

/// `kubectl apply -f -` of a manifest.
pub fn apply(manifest: &str) {
    let args = ["apply", "-f", "-"];
    must("kubectl", &args, run("kubectl", &args, Some(manifest)));
}

/// `kubectl delete -f -`, waiting for the objects to be gone.
pub fn delete(manifest: &str) {
    let args = [
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
        "-f",
        "-",
    ];
    must("kubectl", &args, run("kubectl", &args, Some(manifest)));
}

pub fn helm(args: &[&str]) -> String {
    must("helm", args, run("helm", args, None))
}

/// The workspace's `mycelctl` (built by tests/kind/run.sh before the suite).
pub fn mycelctl(args: &[&str]) -> Output {
    let path = mycel_tests::process::bin("mycelctl");
    run(&path.to_string_lossy(), args, None)
}

/// Polls `probe` every 200 ms until it gives a value, or panics naming
/// `what` and the last thing it said.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= limit => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("listing pods {selector} in {ns}: {e}"))
        .items
}

pub fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// `kubectl rollout status`, which also waits for old pods to be gone.
pub fn rollout_status(ns: &str, deployment: &str) {
    kubectl(&[
        "-n",
        ns,
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=240s",
    ]);
}

/// `kubectl scale` and wait until exactly `replicas` pods are ready and no
/// other pod of the Deployment is left.
pub async fn scale(client: &Client, ns: &str, deployment: &str, selector: &str, replicas: usize) {
    kubectl(&[
        "-n",
        ns,
        "scale",
        &format!("deployment/{deployment}"),
        &format!("--replicas={replicas}"),
    ]);
    eventually(
        &format!("{ns}/{deployment} at {replicas} ready pods"),
        Duration::from_secs(180),
        || async {
            let all = pods(client, ns, selector).await;
            let ready = all.iter().filter(|p| is_ready(p)).count();
            if ready == replicas && all.len() == replicas {
                Ok(())
            } else {
                Err(format!("{ready} ready of {} pods", all.len()))
            }
        },
    )
    .await;
}

/// A proxy's admin endpoint read through the API server's pod proxy, as
/// `mycelctl` does: no port of the pod is exposed for it.
pub async fn proxy_admin(
    client: &Client,
    ns: &str,
    pod: &str,
    path: &str,
) -> Result<String, String> {
    let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:15000/proxy{path}");
    let req = http::Request::get(&uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), client.request_text(req))
        .await
        .map_err(|_| format!("{uri}: no answer within 10 s"))?
        .map_err(|e| format!("{uri}: {e}"))
}

/// Sum of a counter over the lines of a Prometheus text exposition whose
/// name and labels contain every needle.
pub fn counter(metrics: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET through the gateway, as a browser on the host would.
pub async fn shop_get(path: &str) -> anyhow::Result<mycel_test_support::http::Reply> {
    mycel_test_support::http::get(gateway(), "shop.local", path).await
}

/// Restarts every workload of the shop, its Deployments (the gateway
/// included) and its stores' StatefulSets, and waits for the new pods: how
/// a test has each proxy ask for a new certificate. A pod left out keeps a
/// certificate of the CA it was given, which after a new CA no controller
/// accepts (its proxy turns unready).
pub fn restart_shop() {
    for kind in ["deployment", "statefulset"] {
        kubectl(&["-n", SHOP, "rollout", "restart", kind]);
    }
    for kind in ["deployment", "statefulset"] {
        kubectl(&["-n", SHOP, "rollout", "status", kind, "--timeout=240s"]);
    }
}

/// `mycelctl cert inspect -n NS TARGET -o json`'s report (it must succeed).
pub fn cert_report(ns: &str, target: &str) -> serde_json::Value {
    let out = mycelctl(&["cert", "inspect", "-n", ns, target, "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cert inspect {target}: not JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "cert inspect {target} failed: {doc}");
    doc
}

/// A pod running a harmless demo server (ratings), in `ns`, with the
/// given annotations: a workload whose only job is to exist.
pub fn demo_pod(name: &str, ns: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("\n    {k}: {v}"))
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("\n  annotations:{annotations}")
    };
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}{annotations}
spec:
  containers:
    - name: app
      image: mycel-demo:{tag}
      imagePullPolicy: IfNotPresent
      args: ["ratings", "--listen=0.0.0.0:8080"]
"#,
        tag = env!("CARGO_PKG_VERSION")
    )
}

/// `helm upgrade` of the release with the values it has and `sets`
/// (`key=value`), waiting for it. Run from the checkout (the chart's path).
pub fn helm_upgrade(sets: &[&str]) {
    let mut args = vec![
        "upgrade",
        "mycel",
        "helm/mycel",
        "-n",
        SYSTEM,
        "--reuse-values",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--wait", "--timeout", "5m"]);
    helm(&args);
}
