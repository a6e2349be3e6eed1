//! Scenario 6: the controllers may all go away; traffic does not notice,
//! the new ones resync, and a pod started after them gets its certificate.

use std::time::Duration;

use crate::cluster::{self, SHOP, SYSTEM};
use crate::load::Load;

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn deleting_every_controller_pod_fails_no_request_and_new_pods_still_get_certificates() {
    let client = cluster::client().await;
    let selector = "app.kubernetes.io/component=controller";
    let old: Vec<String> = cluster::pods(&client, SYSTEM, selector)
        .await
        .iter()
        .map(cluster::name)
        .collect();
    assert!(!old.is_empty(), "controller pods in {SYSTEM}");

    let load = Load::start(cluster::gateway(), "/api/products", 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster::kubectl(&[
        "-n",
        SYSTEM,
        "delete",
        "pod",
        "-l",
        selector,
        "--wait=false",
    ]);
    cluster::eventually(
        "new controllers ready",
        Duration::from_secs(120),
        || async {
            let pods = cluster::pods(&client, SYSTEM, selector).await;
            let fresh = pods.iter().filter(|p| !old.contains(&cluster::name(p)));
            let ready = fresh.filter(|p| cluster::is_ready(p)).count();
            if ready == old.len() && pods.len() == old.len() {
                Ok(())
            } else {
                Err(format!("{ready} new ready of {} pods", pods.len()))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    assert!(tally.ok > 50, "the load ran: {tally:?}");
    assert_eq!(
        tally.failed, 0,
        "no request failed while the controllers were replaced: {tally:?}"
    );

    // A pod created now is certified by the new controllers: its proxy is
    // ready only once it holds a certificate and discovery answered.
    cluster::scale(&client, SHOP, "ratings", "app=ratings", 2).await;
    let pods = cluster::pods(&client, SHOP, "app=ratings").await;
    for pod in &pods {
        let certs = cluster::proxy_admin(&client, SHOP, &cluster::name(pod), "/certs")
            .await
            .expect("the proxy's certificate");
        assert!(
            certs.contains(&cluster::spiffe(SHOP, "ratings")),
            "{}: {certs}",
            cluster::name(pod)
        );
    }
    cluster::scale(&client, SHOP, "ratings", "app=ratings", 1).await;
    let reply = cluster::shop_get("/api/products")
        .await
        .expect("the shop answers");
    assert_eq!(reply.status, 200, "{}", reply.body);
}
