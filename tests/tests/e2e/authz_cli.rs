//! `mycelctl authz explain` and `mycelctl proxy-config` as real processes
//! against a real controller and real sidecars: the explanation names the
//! policy that decides and agrees with what the server sidecar enforces;
//! exit codes say allowed (0), denied (1), bad question (2); proxy-config
//! tables show what a proxy holds. Traffic only to loopback.

use mycel_tests::http;
use mycel_tests::mesh::{Mesh, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload};
use serde_json::Value;

use super::cert_inspect::{mycelctl, text};

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: ratings}}}}\n  action: {action}\n  rules:\n{rules}"
    )
}

/// reviews and frontend may call ratings, frontend not under /admin/.
fn policies() -> String {
    policy(
        "ratings-callers",
        "ALLOW",
        "  - from: [{serviceAccounts: [shop/reviews, shop/frontend]}]\n",
    ) + &policy(
        "ratings-no-admin",
        "DENY",
        "  - from: [{serviceAccounts: [shop/frontend]}]\n    to: [{paths: [\"/admin/*\"]}]\n",
    )
}

/// Runs `mycelctl authz explain` against `mesh`'s controller.
async fn explain(mesh: &Mesh, args: &[&str]) -> (Option<i32>, String, String) {
    let admin = mesh.admin.to_string();
    let mut all = vec!["authz", "explain", "--controller-admin", admin.as_str()];
    all.extend_from_slice(args);
    let out = mycelctl(&all).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_deciding_policy_and_exits_by_decision() {
    let mesh = Mesh::start(&mesh_yaml(&policies())).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;

    // Allowed: the ALLOW policy and its rule, for the one ratings workload.
    let (code, out, err) = explain(
        &mesh,
        &["--from", "shop/reviews", "--to", "ratings.shop:80"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("ALLOW policy shop/ratings-callers (rule 0)"),
        "{out}"
    );
    assert!(
        out.contains("ratings ") && out.contains("80->8080/http"),
        "{out}"
    );

    // Denied by the DENY policy: exit 1, the policy named on both streams.
    let (code, out, err) = explain(
        &mesh,
        &[
            "--from",
            "spiffe://cluster.local/ns/shop/sa/frontend",
            "--to",
            "ratings.shop",
            "--path",
            "/admin/users",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("DENY policy shop/ratings-no-admin (rule 0)"),
        "{out}"
    );
    assert!(
        err.contains("DENY") && err.contains("shop/ratings-no-admin"),
        "{err}"
    );

    // Nobody's ALLOW: exit 1, said so.
    let (code, out, err) =
        explain(&mesh, &["--from", "shop/catalog", "--to", "ratings.shop"]).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("no ALLOW policy matched"), "{out}");

    // The sidecar enforces what was explained.
    let frontend = mesh
        .sidecar(SidecarSpec::new("frontend-0", "frontend"))
        .await;
    let r = http::get(frontend.outbound(), "ratings", "/admin/users")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http::get(frontend.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // JSON parses and carries the same answer.
    let (code, out, err) = explain(
        &mesh,
        &[
            "--from",
            "shop/frontend",
            "--to",
            "ratings.shop:80",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).expect("-o json parses");
    assert_eq!(doc["allowed"], true);
    assert_eq!(doc["service"], "ratings.shop");
    assert_eq!(doc["caller"], "spiffe://cluster.local/ns/shop/sa/frontend");
    assert_eq!(doc["decisions"][0]["workload"], "ratings");
    assert_eq!(doc["decisions"][0]["policy"], "shop/ratings-callers");
    assert_eq!(doc["decisions"][0]["target_port"], 8080);
    let (code, out, _) = explain(
        &mesh,
        &[
            "--from",
            "shop/frontend",
            "--to",
            "ratings.shop:80",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(out.contains("allowed: true"), "{out}");

    // A service without workloads is explained from its selector.
    let (code, out, err) = explain(
        &mesh,
        &["--from", "unauthenticated", "--to", "catalog.shop"],
    )
    .await;
    // A plaintext caller meets peer authentication first: none is set, so
    // the answer depends on the sidecar's own --mtls-mode and says so.
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("No workload backs catalog.shop yet"), "{out}");
    assert!(out.contains("MTLS"), "{out}");
    assert!(
        out.contains(
            "default: mesh-authenticated (plaintext admitted) if --mtls-mode is permissive"
        ),
        "{out}"
    );

    // Bad questions: exit 2, naming what is wrong.
    for (args, says) in [
        (
            &["--from", "shop/reviews", "--to", "nope.shop"][..],
            "no service nope.shop",
        ),
        (
            &["--from", "shop/reviews", "--to", "ratings.shop:81"][..],
            "has no port 81",
        ),
        (
            &["--from", "reviews", "--to", "ratings.shop"][..],
            "is not a caller",
        ),
        (
            &["--from", "spiffe://x/ns/a", "--to", "ratings.shop"][..],
            "spiffe://",
        ),
        (
            &["--from", "Shop/x", "--to", "ratings.shop"][..],
            "NAMESPACE/SERVICE-ACCOUNT",
        ),
        (
            &["--from", "shop/reviews", "--to", "ratings"][..],
            "<name>.<namespace>",
        ),
        (
            &[
                "--from",
                "shop/reviews",
                "--to",
                "ratings.shop",
                "--header",
                "x-a",
            ][..],
            "NAME=VALUE",
        ),
    ] {
        let (code, out, err) = explain(&mesh, args).await;
        assert_eq!(code, Some(2), "{args:?}: {out}\n{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    drop(ratings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_shows_what_a_proxy_holds() {
    let mesh = Mesh::start(&mesh_yaml(&policies())).await;
    let ratings = workload(&mesh, "ratings", "ratings", "http", &[], |s| s).await;
    let reviews = mesh.sidecar(SidecarSpec::new("reviews-0", "reviews")).await;
    // A first call subscribes the client proxy to ratings.shop.
    let r = http::get(reviews.outbound(), "ratings", "/ratings/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    let client = reviews.admin.to_string();
    let server = ratings.sidecar.admin.to_string();
    let run = |args: Vec<String>| async move {
        let mut all = vec!["proxy-config".to_string()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = mycelctl(&all).await;
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, out, err) = run(args(&[&client, "services"])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with("SERVICE "), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("ratings.shop "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("known") && row.contains("http 80->8080/http") && row.contains("1/1 ready"),
        "{out}"
    );

    let (code, out, err) = run(args(&[&client, "endpoints"])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("ratings.shop "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains(&ratings.sidecar.spiffe_id) && row.contains(&ratings.spec.ip.to_string()),
        "{out}"
    );
    assert!(row.contains("true"), "{out}");

    let (code, out, err) = run(args(&[&server, "authz"])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("(default)") && out.contains("mesh-authenticated"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("shop/ratings-callers "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("ALLOW") && row.trim_end().ends_with('1'),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("shop/ratings-no-admin ") && l.contains("DENY")),
        "{out}"
    );

    let (code, out, err) = run(args(&[&server, "certs"])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&ratings.sidecar.spiffe_id) && out.contains("TIME LEFT"),
        "{out}"
    );

    // Every section at once, as JSON.
    let (code, out, err) = run(args(&[&client, "-o", "json"])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).expect("-o json parses");
    assert_eq!(doc["synced"], true);
    let services = doc["services"].as_array().unwrap();
    assert!(
        services
            .iter()
            .any(|s| s["service"] == "ratings.shop" && s["state"] == "known"),
        "{doc}"
    );
    assert!(
        doc["endpoints"].as_array().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );
    assert_eq!(doc["certs"]["spiffe_id"], reviews.spiffe_id.as_str());

    // Nothing listening: non-zero, saying so.
    let (code, out, err) = run(args(&["127.0.0.1:1", "services"])).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("cannot reach the proxy's admin at 127.0.0.1:1"),
        "{err}"
    );
    // Neither an address nor a Kubernetes target (a bare name needs -n):
    // a usage error that says what is accepted.
    let (code, _, err) = run(args(&["ratings-0"])).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("HOST:PORT") && err.contains("pod/NAME"),
        "{err}"
    );
    // And the controller unreachable for explain.
    let out = mycelctl(&[
        "authz",
        "explain",
        "--from",
        "shop/a",
        "--to",
        "a.shop",
        "--controller-admin",
        "127.0.0.1:1",
    ])
    .await;
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach the controller's admin at 127.0.0.1:1"),
        "{err}"
    );
}
