//! Scenario 5: scaling and rolling updates under load lose no request, and
//! new pods take traffic as soon as they are ready.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster::{self, SHOP};
use crate::load::Load;

/// Requests a second through the gateway. Each page is a dozen calls
/// inside the mesh (catalog, then reviews and ratings per product), so this
/// is some 500 mesh requests a second on a two-core machine.
const RPS: u32 = 40;

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn new_catalog_pods_get_traffic_within_two_seconds_and_scaling_down_fails_nothing() {
    let client = cluster::client().await;
    let before: BTreeSet<String> = cluster::pods(&client, SHOP, "app=catalog")
        .await
        .iter()
        .map(cluster::name)
        .collect();
    assert_eq!(
        before.len(),
        1,
        "the shop starts with one catalog pod: {before:?}"
    );

    let load = Load::start(cluster::gateway(), "/api/products", RPS);
    cluster::scale(&client, SHOP, "catalog", "app=catalog", 3).await;
    let ready_at = Instant::now();
    let new: Vec<String> = cluster::pods(&client, SHOP, "app=catalog")
        .await
        .iter()
        .map(cluster::name)
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(new.len(), 2, "two new catalog pods");
    // Every new pod has served a request from the frontend within 2 s of
    // being ready (its proxy counts what it let in).
    for pod in &new {
        let served =
            cluster::eventually(&format!("{pod} serves"), Duration::from_secs(2), || async {
                let metrics = cluster::proxy_admin(&client, SHOP, pod, "/metrics").await?;
                let n = cluster::counter(&metrics, &["mycel_inbound_requests"]);
                if n > 0.0 {
                    Ok(n)
                } else {
                    Err(format!("{n} inbound requests"))
                }
            })
            .await;
        eprintln!(
            "{pod}: {served} requests {:?} after all were ready",
            ready_at.elapsed()
        );
    }

    cluster::scale(&client, SHOP, "catalog", "app=catalog", 1).await;
    // A little more traffic once the removed pods are gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    assert!(tally.ok >= 100, "the load ran: {tally:?}");
    assert_eq!(
        tally.failed, 0,
        "no request failed while scaling up and down: {tally:?}"
    );
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn a_rolling_update_of_the_catalog_under_load_fails_no_request() {
    let load = Load::start(cluster::gateway(), "/api/products", RPS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster::kubectl(&["-n", SHOP, "rollout", "restart", "deployment/catalog"]);
    cluster::rollout_status(SHOP, "catalog");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    assert!(tally.ok >= 100, "the load ran: {tally:?}");
    assert_eq!(
        tally.failed, 0,
        "no request failed during the rolling update: {tally:?}"
    );
}
