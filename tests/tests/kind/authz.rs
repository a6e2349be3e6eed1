//! Authorization in the cluster: the demo's AuthorizationPolicy lets only
//! frontend's identity call catalog. A call from inside the ratings pod
//! (its app container, captured by its sidecar, so it carries ratings'
//! identity) is refused by catalog's sidecar, which logs why; the same call
//! from frontend's pod goes through.

use crate::cluster;

/// One GET of catalog from the app container of `deploy`: the status line
/// `mycel-demo fetch` prints, and the whole output.
fn fetch_catalog_from(deploy: &str) -> String {
    let out = cluster::try_kubectl(&[
        "-n",
        "shop",
        "exec",
        &format!("deploy/{deploy}"),
        "-c",
        deploy,
        "--",
        "mycel-demo",
        "fetch",
        "http://catalog.shop/products",
        "--count",
        "1",
        "--timeout",
        "5000",
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
#[ignore = "needs a kind cluster with Mycel and the shop: tests/kind/run.sh test"]
async fn only_frontend_may_call_catalog_and_a_call_from_ratings_is_refused_with_the_reason_logged()
{
    let from_frontend = fetch_catalog_from("frontend");
    assert!(
        from_frontend.contains("\"status\":200"),
        "frontend is the one caller catalog-callers allows: {from_frontend}"
    );
    let from_ratings = fetch_catalog_from("ratings");
    assert!(
        from_ratings.contains("\"status\":403"),
        "ratings is not allowed to call catalog: {from_ratings}"
    );
    let logs = cluster::kubectl(&[
        "-n",
        "shop",
        "logs",
        "deploy/catalog",
        "-c",
        "mycel-proxy",
        "--tail",
        "500",
    ]);
    assert!(
        logs.lines()
            .any(|l| l.contains("inbound: request denied") && l.contains("sa/ratings")),
        "catalog's sidecar logs the denial with the caller:\n{logs}"
    );
}
