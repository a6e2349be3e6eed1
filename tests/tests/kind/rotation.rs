//! Scenario 8: with a short certificate lifetime set in the chart's values,
//! every proxy renews its certificate before it expires, and no request
//! fails across the renewal.

use std::time::Duration;

use crate::cluster::{self, spiffe, SHOP};
use crate::load::Load;

fn set_cert_ttl(ttl: &str) {
    cluster::helm_upgrade(&[&format!("controller.certTTL={ttl}")]);
    // Certificates are issued for the lifetime in force when asked: restart
    // the shop so that every proxy asks again.
    cluster::restart_shop();
}

fn frontend_leaf() -> serde_json::Value {
    cluster::cert_report(SHOP, "deploy/frontend")["chain"][0].clone()
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn two_minute_certificates_renew_under_load_without_a_failed_request() {
    // helm's chart path is relative to the checkout.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .expect("cd to the checkout");
    set_cert_ttl("2m");
    let first = frontend_leaf();
    assert_eq!(first["spiffe_id"], spiffe(SHOP, "frontend"));
    let left = first["seconds_left"].as_i64().expect("seconds_left");
    assert!(
        left <= 120,
        "the certificate lives at most 2 minutes: {first}"
    );

    let load = Load::start(cluster::gateway(), "/api/products", 20);
    let serial = first["serial"].as_str().unwrap_or_default().to_string();
    let renewed = cluster::eventually(
        "the frontend's certificate renewed",
        Duration::from_secs(150),
        || async {
            let leaf = frontend_leaf();
            if leaf["serial"].as_str() != Some(serial.as_str()) {
                Ok(leaf)
            } else {
                Err(format!("still {serial}"))
            }
        },
    )
    .await;
    // Renewal comes at about 70% of the lifetime: 40 s more runs the load
    // past the first certificate's end, on the renewed ones alone.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let tally = load.stop().await;
    eprintln!("renewed: {} -> {} ({tally:?})", serial, renewed["serial"]);

    set_cert_ttl("24h");
    assert!(tally.ok > 100, "the load ran: {tally:?}");
    assert_eq!(
        tally.failed, 0,
        "no request failed across the renewal: {tally:?}"
    );
}
