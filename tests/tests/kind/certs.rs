//! Scenario 7: certificates inspected from the CLI through the API server,
//! the way an operator asks "what does this workload present?".

use crate::cluster::{self, spiffe, SHOP};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn cert_inspect_shows_the_frontends_chain_verified_against_the_trust_bundle() {
    let out = cluster::mycelctl(&["cert", "inspect", "-n", SHOP, "deploy/frontend"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        spiffe(SHOP, "frontend").as_str(),
        "Serial",
        "Issuer",
        "Not after",
        "verified",
    ] {
        assert!(
            text.to_lowercase().contains(&needle.to_lowercase()),
            "{needle:?} in:\n{text}"
        );
    }
    std::fs::write(
        cluster::artifacts().join("cert-inspect-frontend.txt"),
        text.as_bytes(),
    )
    .expect("artifact");

    let report = cluster::cert_report(SHOP, "deploy/frontend");
    assert_eq!(
        report["chain"][0]["spiffe_id"],
        spiffe(SHOP, "frontend"),
        "{report}"
    );
    assert_eq!(report["verification"]["status"], "verified", "{report}");
    assert!(
        report["chain"][0]["seconds_left"]
            .as_i64()
            .is_some_and(|s| s > 0),
        "{report}"
    );
    assert!(
        !report["trust_bundle"]
            .as_array()
            .expect("trust_bundle")
            .is_empty(),
        "{report}"
    );
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn cert_check_lists_every_meshed_pod_and_fails_when_one_expires_within_the_warning() {
    let out = cluster::mycelctl(&["cert", "check", "--all-namespaces", "-o", "json"]);
    let doc = json(&out);
    assert!(out.status.success(), "{doc}");
    let pods = doc["pods"].as_array().expect("pods");
    for app in ["frontend", "catalog", "ratings", "reviews-v1", "reviews-v2"] {
        let row = pods
            .iter()
            .find(|r| {
                r["namespace"] == SHOP && r["pod"].as_str().is_some_and(|p| p.starts_with(app))
            })
            .unwrap_or_else(|| panic!("no row for {app}: {doc}"));
        assert_eq!(row["verified"], true, "{row}");
        assert_eq!(row["ok"], true, "{row}");
    }
    let table = cluster::mycelctl(&["cert", "check", "-A"]);
    std::fs::write(cluster::artifacts().join("cert-check.txt"), &table.stdout).expect("artifact");

    // Workload certificates live 24 h by default: a 48 h warning fails every pod.
    let out = cluster::mycelctl(&["cert", "check", "--all-namespaces", "--warn", "48h"]);
    assert!(
        !out.status.success(),
        "exit status non-zero with --warn 48h"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("frontend"),
        "the failing pods are named:\n{text}"
    );
}
