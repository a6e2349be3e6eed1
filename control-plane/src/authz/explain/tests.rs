use std::collections::BTreeMap;

use mycel_api::authz::DefaultPolicy;

use super::*;
use crate::authz::{from_spec, Authorization};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `catalog.shop`: http 80 → 8080, grpc 9090 → 9091, tcp 5432 → 5433.
fn catalog() -> Service {
    let port = |name: &str, port, target_port, protocol| ServicePort {
        name: name.into(),
        port,
        target_port,
        protocol,
    };
    Service {
        name: "catalog".into(),
        namespace: "shop".into(),
        selector: labels(&[("app", "catalog")]),
        ports: vec![
            port("http", 80, 8080, Protocol::Http),
            port("grpc", 9090, 9091, Protocol::Grpc),
            port("tcp", 5432, 5433, Protocol::Tcp),
        ],
        vips: vec![],
    }
}

/// `(namespace, name, spec)` policies and a default.
fn authz(default: DefaultPolicy, docs: &[(&str, &str, &str)]) -> Authorization {
    let mut a = Authorization {
        default,
        ..Authorization::default()
    };
    for (ns, name, yaml) in docs {
        let spec = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        a.policies
            .push(from_spec(ns, name, &spec).unwrap_or_else(|e| panic!("{yaml}: {e}")));
    }
    a.policies.sort_by(|x, y| x.policy.name.cmp(&y.policy.name));
    a
}

fn id(ns: &str, sa: &str) -> Option<SpiffeId> {
    Some(SpiffeId::new("cluster.local", ns, sa).unwrap())
}

fn question(caller: Option<SpiffeId>, port: u16) -> Question {
    Question {
        caller,
        port: Some(port),
        method: "GET".into(),
        path: "/items".into(),
        ..Question::default()
    }
}

const ONLY_FRONTEND: (&str, &str, &str) = (
    "shop",
    "catalog-callers",
    "selector: {matchLabels: {app: catalog}}\nrules: [{from: [{serviceAccounts: [shop/frontend]}]}]",
);
const NO_RATINGS: (&str, &str, &str) = (
    "shop",
    "no-ratings",
    "action: DENY\nrules:\n- from: [{serviceAccounts: [shop/other]}]\n- from: [{serviceAccounts: [shop/ratings]}]",
);
const AUDIT_ADMIN: (&str, &str, &str) = (
    "shop",
    "audit-admin",
    "action: AUDIT\nrules: [{to: [{paths: [\"/admin/*\"]}]}]",
);
const PORT_8080_ONLY: (&str, &str, &str) = (
    "shop",
    "http-port",
    "selector: {matchLabels: {app: catalog}}\nrules: [{to: [{ports: [8080]}]}]",
);

#[test]
fn decisions_table() {
    struct Case {
        name: &'static str,
        default: DefaultPolicy,
        policies: &'static [(&'static str, &'static str, &'static str)],
        caller: Option<SpiffeId>,
        port: u16,
        path: &'static str,
        want: (&'static str, &'static str),
        audit: Option<(&'static str, usize)>,
    }
    let cases = [
        Case {
            name: "allowed caller",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[ONLY_FRONTEND],
            caller: id("shop", "frontend"),
            port: 80,
            path: "/items",
            want: ("ALLOW", "ALLOW policy shop/catalog-callers (rule 0)"),
            audit: None,
        },
        Case {
            name: "no ALLOW matched",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[ONLY_FRONTEND],
            caller: id("shop", "reviews"),
            port: 80,
            path: "/items",
            want: ("DENY", "no ALLOW policy matched"),
            audit: None,
        },
        Case {
            name: "DENY wins over ALLOW and names its rule",
            default: DefaultPolicy::AllowAll,
            policies: &[ONLY_FRONTEND, NO_RATINGS],
            caller: id("shop", "ratings"),
            port: 80,
            path: "/items",
            want: ("DENY", "DENY policy shop/no-ratings (rule 1)"),
            audit: None,
        },
        Case {
            name: "default mesh-authenticated: a mesh identity",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[],
            caller: id("other", "x"),
            port: 80,
            path: "/items",
            want: ("ALLOW", "default: mesh-authenticated"),
            audit: None,
        },
        Case {
            // No PeerAuthentication: the sidecar's own mode decides
            // whether plaintext gets this far, and the answer says so.
            name: "default mesh-authenticated: plaintext",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[],
            caller: None,
            port: 80,
            path: "/items",
            want: (
                "ALLOW",
                "default: mesh-authenticated (plaintext admitted) if --mtls-mode is permissive",
            ),
            audit: None,
        },
        Case {
            name: "default deny",
            default: DefaultPolicy::Deny,
            policies: &[],
            caller: id("shop", "frontend"),
            port: 80,
            path: "/items",
            want: ("DENY", "default: deny"),
            audit: None,
        },
        Case {
            name: "default allow-all, plaintext",
            default: DefaultPolicy::AllowAll,
            policies: &[],
            caller: None,
            port: 80,
            path: "/items",
            want: ("ALLOW", "default: allow-all if --mtls-mode is permissive"),
            audit: None,
        },
        Case {
            name: "AUDIT reported beside the decision",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[AUDIT_ADMIN],
            caller: id("shop", "frontend"),
            port: 80,
            path: "/admin/users",
            want: ("ALLOW", "default: mesh-authenticated"),
            audit: Some(("shop/audit-admin", 0)),
        },
        Case {
            name: "service port 80 is workload port 8080",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[PORT_8080_ONLY],
            caller: id("shop", "frontend"),
            port: 80,
            path: "/",
            want: ("ALLOW", "ALLOW policy shop/http-port (rule 0)"),
            audit: None,
        },
        Case {
            name: "service port 9090 is workload port 9091",
            default: DefaultPolicy::MeshAuthenticated,
            policies: &[PORT_8080_ONLY],
            caller: id("shop", "frontend"),
            port: 9090,
            path: "/",
            want: ("DENY", "no ALLOW policy matched"),
            audit: None,
        },
    ];
    let workload = labels(&[("app", "catalog")]);
    let backends = [Backend {
        name: "catalog-0",
        namespace: "shop",
        labels: &workload,
        ready: true,
    }];
    for c in cases {
        let mut q = question(c.caller.clone(), c.port);
        q.path = c.path.into();
        let got = explain(&authz(c.default, c.policies), &catalog(), &backends, &q)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(got.decisions.len(), 1, "{}", c.name);
        let d = &got.decisions[0];
        assert_eq!((d.decision, d.reason.as_str()), c.want, "{}", c.name);
        assert_eq!(got.allowed, c.want.0 == "ALLOW", "{}", c.name);
        let audit = d.audit.as_ref().map(|a| (a.policy.as_str(), a.rule));
        assert_eq!(audit, c.audit, "{}", c.name);
        assert!(!got.from_selector, "{}", c.name);
    }
}

#[test]
fn each_workload_gets_its_own_policies() {
    let a = authz(
        DefaultPolicy::MeshAuthenticated,
        &[(
            "shop",
            "v2-only-frontend",
            "selector: {matchLabels: {version: v2}}\nrules: [{from: [{serviceAccounts: [shop/frontend]}]}]",
        )],
    );
    let (v1, v2) = (
        labels(&[("app", "catalog"), ("version", "v1")]),
        labels(&[("app", "catalog"), ("version", "v2")]),
    );
    let backends = [
        Backend {
            name: "catalog-v1",
            namespace: "shop",
            labels: &v1,
            ready: true,
        },
        Backend {
            name: "catalog-v2",
            namespace: "shop",
            labels: &v2,
            ready: false,
        },
    ];
    let got = explain(
        &a,
        &catalog(),
        &backends,
        &question(id("shop", "ratings"), 80),
    )
    .unwrap();
    let rows: Vec<(&str, &str, Option<bool>)> = got
        .decisions
        .iter()
        .map(|d| (d.workload.as_str(), d.decision, d.ready))
        .collect();
    assert_eq!(
        rows,
        [
            ("catalog-v1", "ALLOW", Some(true)),
            ("catalog-v2", "DENY", Some(false))
        ]
    );
    assert!(!got.allowed);
    assert_eq!(got.decisions[1].policies, ["shop/v2-only-frontend"]);
    assert!(got.decisions[0].policies.is_empty());
}

#[test]
fn without_workloads_the_selector_labels_stand_in() {
    let a = authz(DefaultPolicy::MeshAuthenticated, &[ONLY_FRONTEND]);
    let got = explain(&a, &catalog(), &[], &question(id("shop", "frontend"), 80)).unwrap();
    assert!(got.from_selector);
    let d = &got.decisions[0];
    assert_eq!(d.workload, "");
    assert_eq!(d.labels, labels(&[("app", "catalog")]));
    assert_eq!(d.ready, None);
    assert_eq!(d.policy.as_deref(), Some("shop/catalog-callers"));
    assert_eq!(d.rule, Some(0));
}

#[test]
fn every_port_without_a_port_and_tcp_without_http_fields() {
    // ALLOW on a path: HTTP ports match it, the TCP port cannot show a path
    // and so fails closed, as the sidecar does for a tunnel.
    let a = authz(
        DefaultPolicy::MeshAuthenticated,
        &[(
            "shop",
            "items",
            "selector: {matchLabels: {app: catalog}}\nrules: [{to: [{paths: [\"/items\"]}]}]",
        )],
    );
    let mut q = question(id("shop", "frontend"), 0);
    q.port = None;
    let got = explain(&a, &catalog(), &[], &q).unwrap();
    let rows: Vec<(u16, u16, &str, &str)> = got
        .decisions
        .iter()
        .map(|d| (d.service_port, d.target_port, d.protocol, d.decision))
        .collect();
    assert_eq!(
        rows,
        [
            (80, 8080, "http", "ALLOW"),
            (9090, 9091, "grpc", "ALLOW"),
            (5432, 5433, "tcp", "DENY")
        ]
    );
}

#[test]
fn grpc_rules_match_on_a_grpc_port() {
    let a = authz(
        DefaultPolicy::AllowAll,
        &[(
            "shop",
            "no-admin-rpc",
            "action: DENY\nrules: [{to: [{grpc: [shop.v1.Catalog/*]}]}]",
        )],
    );
    let mut q = question(id("shop", "frontend"), 9090);
    q.path = "/shop.v1.Catalog/List".into();
    let got = explain(&a, &catalog(), &[], &q).unwrap();
    assert_eq!(
        got.decisions[0].reason,
        "DENY policy shop/no-admin-rpc (rule 0)"
    );
    // The same path on the HTTP port is not a gRPC request.
    q.port = Some(80);
    let got = explain(&a, &catalog(), &[], &q).unwrap();
    assert_eq!(got.decisions[0].reason, "default: allow-all");
}

#[test]
fn an_unknown_port_names_the_service_ports() {
    let a = Authorization::default();
    let err = explain(&a, &catalog(), &[], &question(id("shop", "x"), 81)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service catalog.shop has no port 81 (its ports: 80 (http), 9090 (grpc), 5432 (tcp))"
    );
    let mut none = catalog();
    none.ports.clear();
    let err = explain(&a, &none, &[], &question(id("shop", "x"), 80)).unwrap_err();
    assert_eq!(err, ExplainError::NoPorts("catalog.shop".into()));
}

#[test]
fn the_caller_is_named_in_the_answer() {
    let a = Authorization::default();
    let got = explain(&a, &catalog(), &[], &question(None, 80)).unwrap();
    assert_eq!(got.caller, "unauthenticated");
    let got = explain(&a, &catalog(), &[], &question(id("shop", "x"), 80)).unwrap();
    assert_eq!(got.caller, "spiffe://cluster.local/ns/shop/sa/x");
}

#[test]
fn a_plaintext_caller_meets_peer_authentication_first() {
    use crate::authz::peer;
    let mut a = authz(DefaultPolicy::MeshAuthenticated, &[]);
    let yaml = "mtls: {mode: STRICT}\nportLevelMtls: {\"5433\": {mode: PERMISSIVE}}";
    a.peer
        .push(peer::from_spec("shop", "strict", &serde_saphyr::from_str(yaml).unwrap()).unwrap());
    let got = explain(&a, &catalog(), &[], &question(None, 80)).unwrap();
    let d = &got.decisions[0];
    assert_eq!(d.decision, "DENY");
    assert_eq!(
        d.reason,
        "peer authentication STRICT (PeerAuthentication shop/strict) refuses plaintext"
    );
    // The TCP port is PERMISSIVE: plaintext reaches authorization, and
    // with no ALLOW policy the default lets it through.
    let got = explain(&a, &catalog(), &[], &question(None, 5432)).unwrap();
    let d = &got.decisions[0];
    assert_eq!(
        (d.decision, d.reason.as_str(), d.mtls.as_str()),
        (
            "ALLOW",
            "default: mesh-authenticated (plaintext admitted)",
            "PERMISSIVE (shop/strict)"
        )
    );
    // A mesh caller is not concerned by the mode, which is still shown.
    let got = explain(&a, &catalog(), &[], &question(id("shop", "x"), 80)).unwrap();
    let d = &got.decisions[0];
    assert_eq!(d.decision, "ALLOW");
    assert_eq!(d.mtls, "STRICT (shop/strict)");
    // Once an ALLOW policy selects the workload, plaintext must match it.
    let mut b = a.clone();
    b.policies = authz(DefaultPolicy::MeshAuthenticated, &[ONLY_FRONTEND]).policies;
    let got = explain(&b, &catalog(), &[], &question(None, 5432)).unwrap();
    assert_eq!(got.decisions[0].decision, "DENY");
    assert_eq!(got.decisions[0].reason, "no ALLOW policy matched");
}
