//! What a workload's proxy holds, asked from the CLI by its Deployment or
//! Pod the way an operator asks it: `mycelctl proxy-config` reads the
//! proxy's admin through the API server, as `cert inspect` does.

use crate::cluster::{self, spiffe, SHOP};

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn proxy_config_reads_the_frontends_and_catalogs_proxies_by_deployment_and_pod() {
    // A page through the gateway has the frontend call catalog, so its
    // proxy follows catalog.shop.
    let reply = cluster::shop_get("/api/products")
        .await
        .expect("the gateway answers");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let out = cluster::mycelctl(&["proxy-config", "-n", SHOP, "deploy/frontend", "services"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("Proxy: deploy/frontend in shop: pod frontend-"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("catalog.shop "))
        .unwrap_or_else(|| panic!("no catalog.shop row:\n{stdout}"));
    assert!(row.contains("known") && row.contains("ready"), "{stdout}");
    std::fs::write(
        cluster::artifacts().join("proxy-config-frontend.txt"),
        stdout.as_bytes(),
    )
    .expect("artifact");

    // A catalog pod by name: its certificate is catalog's, and it holds
    // the policy that lets only the frontend call it.
    let client = cluster::client().await;
    let pod = cluster::pods(&client, SHOP, "app=catalog")
        .await
        .into_iter()
        .find(cluster::is_ready)
        .map(|p| cluster::name(&p))
        .expect("a ready catalog pod");
    let target = format!("pod/{pod}");
    let out = cluster::mycelctl(&["proxy-config", "-n", SHOP, &target, "-o", "json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(doc["proxy"], format!("pod {SHOP}/{pod}"), "{doc}");
    assert_eq!(doc["synced"], true, "{doc}");
    assert_eq!(doc["certs"]["spiffe_id"], spiffe(SHOP, "catalog"), "{doc}");
    assert!(
        doc["authz"]["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["policy"] == "shop/catalog-callers")),
        "{doc}"
    );

    // The bare name with -n: the same pod.
    let out = cluster::mycelctl(&["proxy-config", "-n", SHOP, &pod, "authz"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("shop/catalog-callers ") && l.contains("ALLOW")),
        "{stdout}"
    );

    // What is wrong is said: a pod that does not exist, a Deployment
    // without a sidecar.
    let out = cluster::mycelctl(&["proxy-config", "-n", SHOP, "pod/no-such-pod"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no pod no-such-pod in namespace shop"),
        "{stderr}"
    );
    let out = cluster::mycelctl(&["proxy-config", "-n", "kube-system", "deploy/coredns"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deployment kube-system/coredns is not meshed"),
        "{stderr}"
    );
}
