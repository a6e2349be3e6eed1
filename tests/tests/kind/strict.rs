//! Scenario 4: a caller outside the mesh reaches a meshed service only
//! where the service's pods admit plaintext (permissive), never in strict
//! mode.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::cluster::{self, SHOP};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: kind-outside
@CALLER@@SERVICES@"#;

fn service(name: &str, mode: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
  selector:
    app: {name}
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
      annotations:
        mycel.io/mtls-mode: {mode}
    spec:
      containers:
        - name: app
          image: mycel-demo:@TAG@
          imagePullPolicy: IfNotPresent
          args: ["ratings", "--listen=0.0.0.0:8080"]
          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
"#
    )
}

/// `mycel-demo fetch` from the pod outside the mesh; true when it got 200.
fn fetch_from_outside(url: &str) -> (bool, String) {
    let out = cluster::try_kubectl(&[
        "-n",
        "kind-outside",
        "exec",
        "caller",
        "--",
        "mycel-demo",
        "fetch",
        url,
        "--count",
        "3",
        "--timeout",
        "3000",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn a_pod_outside_the_mesh_is_refused_by_strict_pods_and_admitted_by_permissive_ones() {
    let services = format!(
        "{}{}",
        service("echo-strict", "strict"),
        service("echo-permissive", "permissive")
    );
    // Outside the mesh: the namespace is not labelled for injection.
    let caller = cluster::demo_pod("caller", "kind-outside", &[]);
    let manifest = MANIFEST
        .replace("@CALLER@", &caller)
        .replace("@SERVICES@", &services)
        .replace("@TAG@", env!("CARGO_PKG_VERSION"));
    // What a failed run may have left.
    cluster::delete(&manifest);
    cluster::apply(&manifest);
    let client = cluster::client().await;
    for d in ["echo-strict", "echo-permissive"] {
        cluster::rollout_status(SHOP, d);
    }
    let caller: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "kind-outside");
    cluster::eventually(
        "the caller pod running",
        Duration::from_secs(90),
        || async {
            let pod = caller.get("caller").await.map_err(|e| e.to_string())?;
            if cluster::is_ready(&pod) {
                Ok(())
            } else {
                Err("not ready".into())
            }
        },
    )
    .await;

    // A caller in the mesh reaches the strict pod: its sidecar speaks mTLS.
    // (Eventually: kube-proxy programs a new Service's address a moment
    // after its pod is ready.)
    cluster::eventually(
        "the frontend (meshed) reaches the strict pod",
        Duration::from_secs(30),
        || async {
            let out = cluster::try_kubectl(&[
                "-n",
                SHOP,
                "exec",
                "deploy/frontend",
                "-c",
                "frontend",
                "--",
                "mycel-demo",
                "fetch",
                "http://echo-strict.shop/healthz",
                "--timeout",
                "3000",
            ]);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        },
    )
    .await;
    cluster::eventually(
        "the permissive pod admits the caller outside the mesh",
        Duration::from_secs(30),
        || async {
            let (ok, text) = fetch_from_outside("http://echo-permissive.shop/healthz");
            if ok {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    let (ok, text) = fetch_from_outside("http://echo-strict.shop/healthz");
    assert!(!ok, "strict pods refuse a caller outside the mesh:\n{text}");
    assert!(
        !text.contains("\"status\":2"),
        "no request got through:\n{text}"
    );

    cluster::delete(&manifest);
}
