use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mycel_api::authz::DefaultPolicy;

use super::*;
use crate::authz::{from_spec, Authorization};
use crate::index::SharedIndex;
use crate::metrics::Metrics;
use std::collections::BTreeMap;

use crate::model::{Protocol, Service, ServicePort, Workload};
use crate::registry::ProxyRegistry;

fn state() -> AdminState {
    AdminState {
        metrics: Arc::new(Metrics::new()),
        registry: Arc::new(ProxyRegistry::default()),
        index: SharedIndex::default(),
        ready: Arc::new(AtomicBool::new(true)),
        rotation: None,
        dashboard: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `ratings.shop` (80 → 8080) with two registered workloads, v1 and v2,
/// and a policy that lets only frontend call v2.
fn shop(s: &AdminState) {
    let mut ix = s.index.lock();
    ix.apply_service(Service {
        name: "ratings".into(),
        namespace: "shop".into(),
        selector: labels(&[("app", "ratings")]),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            target_port: 8080,
            protocol: Protocol::Http,
        }],
        vips: vec![],
    });
    for (name, version) in [("ratings-v1", "v1"), ("ratings-v2", "v2"), ("other", "v2")] {
        let conn = ix.allocate_conn();
        let app = if name == "other" { "other" } else { "ratings" };
        ix.register_workload(
            conn,
            Workload {
                proxy_id: name.into(),
                name: name.into(),
                identity: SpiffeId::new("cluster.local", "shop", name).unwrap(),
                labels: labels(&[("app", app), ("version", version)]),
                address: "127.0.0.9".into(),
                mesh_port: 15006,
                ports: vec![],
                ready: true,
                zone: String::new(),
            },
        );
    }
    let spec = serde_saphyr::from_str(
        "selector: {matchLabels: {version: v2}}\nrules: [{from: [{serviceAccounts: [shop/frontend]}]}]",
    )
    .unwrap();
    ix.set_authorization(Authorization {
        default: DefaultPolicy::MeshAuthenticated,
        policies: vec![from_spec("shop", "v2-callers", &spec).unwrap()],
        ..Authorization::default()
    });
}

fn ask(s: &AdminState, query: &str) -> (StatusCode, serde_json::Value) {
    let r = reply(s, &Method::GET, Some(query));
    let v = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    (r.status, v)
}

#[test]
fn explains_each_workload_behind_the_service() {
    let s = state();
    shop(&s);
    let (status, v) = ask(
        &s,
        "from=spiffe%3A%2F%2Fcluster.local%2Fns%2Fshop%2Fsa%2Freviews&to=ratings.shop&port=80&path=%2Fratings%2F1",
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["from_selector"], false);
    let rows: Vec<(String, String, String)> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["workload"].as_str().unwrap().to_string(),
                d["decision"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // "other" is not selected by the service (app=other).
    assert_eq!(
        rows,
        [
            (
                "ratings-v1".into(),
                "ALLOW".into(),
                "default: mesh-authenticated".into()
            ),
            (
                "ratings-v2".into(),
                "DENY".into(),
                "no ALLOW policy matched".into()
            ),
        ]
    );
    assert_eq!(v["decisions"][1]["target_port"], 8080);
}

#[test]
fn bad_questions_are_400_and_unknown_services_404() {
    let s = state();
    shop(&s);
    for (query, status, says) in [
        (
            "to=ratings.shop",
            StatusCode::BAD_REQUEST,
            "missing query parameter \"from\"",
        ),
        (
            "from=unauthenticated",
            StatusCode::BAD_REQUEST,
            "missing query parameter \"to\"",
        ),
        (
            "from=shop%2Fx&to=ratings.shop",
            StatusCode::BAD_REQUEST,
            "does not start with spiffe://",
        ),
        (
            "from=unauthenticated&to=ratings",
            StatusCode::BAD_REQUEST,
            "<name>.<namespace>",
        ),
        (
            "from=unauthenticated&to=ratings.shop&port=x",
            StatusCode::BAD_REQUEST,
            "not a port number",
        ),
        (
            "from=unauthenticated&to=ratings.shop&port=81",
            StatusCode::BAD_REQUEST,
            "has no port 81",
        ),
        (
            "from=unauthenticated&to=ratings.shop&header=nocolon",
            StatusCode::BAD_REQUEST,
            "<name>:<value>",
        ),
        (
            "from=unauthenticated&to=ratings.shop&path=x",
            StatusCode::BAD_REQUEST,
            "does not start with /",
        ),
        (
            "from=unauthenticated&to=ratings.shop&color=red",
            StatusCode::BAD_REQUEST,
            "unknown parameter",
        ),
        (
            "from=unauthenticated&to=ratings.shop&path=%zz",
            StatusCode::BAD_REQUEST,
            "percent-encoded",
        ),
        (
            "from=unauthenticated&to=nope.shop",
            StatusCode::NOT_FOUND,
            "no service nope.shop",
        ),
    ] {
        let (got, v) = ask(&s, query);
        assert_eq!(got, status, "{query}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{query}: {msg}");
    }
    let r = reply(&s, &Method::POST, None);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn headers_and_unauthenticated_callers() {
    let s = state();
    shop(&s);
    let (status, v) = ask(
        &s,
        "from=unauthenticated&to=ratings.shop&header=x-a%3A+b&header=x-a:c&method=post",
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["caller"], "unauthenticated");
    assert_eq!(
        v["decisions"][0]["reason"],
        "default: mesh-authenticated (plaintext admitted) if --mtls-mode is permissive"
    );
    assert_eq!(v["decisions"][0]["decision"], "ALLOW");
    assert_eq!(v["decisions"][0]["mtls"], "the sidecar's --mtls-mode");
    let (_, q) =
        parse("from=unauthenticated&to=a.b&header=x-a%3A+b&header=x-a:c&method=post").unwrap();
    let values: Vec<&str> = q
        .headers
        .get_all("x-a")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(values, ["b", "c"]);
    assert_eq!(q.method, "POST");
}

#[test]
fn percent_decoding() {
    assert_eq!(decode("a%2Fb+c").unwrap(), "a/b c");
    assert_eq!(decode("%E2%9C%93").unwrap(), "✓");
    for bad in ["%", "%2", "%g0", "%FF"] {
        assert_eq!(decode(bad), Err(QueryError::Encoding), "{bad}");
    }
}
