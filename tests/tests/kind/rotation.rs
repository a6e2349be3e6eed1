//! Scenario 8: with a short certificate lifetime set in the chart's values,
//! every proxy renews its certificate before it expires, and no request
//! fails across the renewal. One minute (the example is two): the
//! same renewal, in half the suite's time.

use std::time::{Duration, Instant};

use crate::cluster::{self, spiffe, SHOP};
use crate::load::Load;

fn set_cert_ttl(ttl: &str) {
    cluster::helm_upgrade(&[&format!("controller.certTTL={ttl}")]);
}

fn frontend_leaf() -> serde_json::Value {
    cluster::cert_report(SHOP, "deploy/frontend")["chain"][0].clone()
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn one_minute_certificates_renew_under_load_without_a_failed_request() {
    // helm's chart path is relative to the checkout.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .expect("cd to the checkout");
    set_cert_ttl("1m");
    // Certificates are issued for the lifetime in force when asked: restart
    // the shop so that every proxy asks again.
    cluster::restart_shop();
    let first = frontend_leaf();
    let read_at = Instant::now();
    assert_eq!(first["spiffe_id"], spiffe(SHOP, "frontend"));
    let left = first["seconds_left"].as_i64().expect("seconds_left");
    assert!(
        left <= 60,
        "the certificate lives at most a minute: {first}"
    );

    let load = Load::start(cluster::gateway(), "/api/products", 20);
    let serial = first["serial"].as_str().unwrap_or_default().to_string();
    let renewed = cluster::eventually(
        "the frontend's certificate renewed",
        Duration::from_secs(90),
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
    // Renewal comes at about 70% of the lifetime: the load goes on past the
    // first certificate's end, on the renewed ones alone.
    let first_ends = Duration::from_secs(u64::try_from(left).unwrap_or(0) + 3);
    tokio::time::sleep(first_ends.saturating_sub(read_at.elapsed())).await;
    let tally = load.stop().await;
    eprintln!("renewed: {} -> {} ({tally:?})", serial, renewed["serial"]);

    // The proxies' next renewals (within the minute) bring 24-hour
    // certificates again; nothing needs a restart.
    set_cert_ttl("24h");
    assert!(tally.ok > 100, "the load ran: {tally:?}");
    assert_eq!(
        tally.failed, 0,
        "no request failed across the renewal: {tally:?}"
    );
}
