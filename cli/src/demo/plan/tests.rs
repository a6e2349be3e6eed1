use std::collections::HashSet;
use std::time::Duration;

use super::*;

fn plan() -> DemoPlan {
    DemoPlan::new(17000).unwrap()
}

fn paths() -> Paths {
    Paths {
        data: PathBuf::from("/tmp/demo"),
    }
}

#[test]
fn base_port_table() {
    let cases = [
        (80, Err(PlanError::Privileged(80))),
        (1023, Err(PlanError::Privileged(1023))),
        (1024, Ok(())),
        (17000, Ok(())),
        (u16::MAX - SPAN + 1, Ok(())),
        (
            u16::MAX - SPAN + 2,
            Err(PlanError::TooHigh {
                base: u16::MAX - SPAN + 2,
                last: 65536,
            }),
        ),
        (
            u16::MAX,
            Err(PlanError::TooHigh {
                base: u16::MAX,
                last: u32::from(u16::MAX) + u32::from(SPAN) - 1,
            }),
        ),
    ];
    for (base, want) in cases {
        assert_eq!(DemoPlan::new(base).map(|_| ()), want, "base {base}");
    }
}

#[test]
fn listeners_are_unique_and_in_range() {
    for base in [1024, 17000, u16::MAX - SPAN + 1] {
        let plan = DemoPlan::new(base).unwrap();
        let listeners = plan.listeners();
        let unique: HashSet<_> = listeners.iter().map(|(a, _)| *a).collect();
        assert_eq!(unique.len(), listeners.len(), "{listeners:?}");
        for (addr, who) in &listeners {
            assert!(addr.ip().is_loopback(), "{who}: {addr}");
            let port = u32::from(addr.port());
            assert!(
                port >= u32::from(base) && port < u32::from(base) + u32::from(SPAN),
                "{who}: {addr} outside {base}+{SPAN}"
            );
        }
        // 5 fixed ports plus 4 per workload and one per store tunnel.
        let tunnels: usize = plan.workloads.iter().map(|w| w.upstreams.len()).sum();
        assert_eq!(tunnels, 7);
        assert_eq!(listeners.len(), 5 + 4 * plan.workloads.len() + tunnels);
    }
}

#[test]
fn reviews_versions_share_the_target_port_on_two_addresses() {
    let plan = plan();
    let v1 = plan
        .workloads
        .iter()
        .find(|w| w.name == "reviews-v1")
        .unwrap();
    let v2 = plan
        .workloads
        .iter()
        .find(|w| w.name == "reviews-v2")
        .unwrap();
    assert_eq!(v1.app.port(), v2.app.port());
    assert_ne!(v1.app.ip(), v2.app.ip());
    let args = sidecar_args(&plan, &paths(), v2);
    let host = args.iter().position(|a| a == "--app-host").unwrap();
    assert_eq!(args[host + 1], "127.0.0.2");
    assert!(!sidecar_args(&plan, &paths(), v1).contains(&"--app-host".to_string()));
}

#[test]
fn mesh_yaml_parses_back_with_selectors_and_ports() {
    let plan = plan();
    let text = mesh_yaml(&plan, &paths()).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let docs: Vec<ServiceDoc> = docs
        .into_iter()
        .filter(|d| d["kind"] == "Service")
        .map(|d| serde_json::from_value(d).unwrap())
        .collect();
    let by_name: BTreeMap<_, _> = docs.iter().map(|d| (d.metadata.name.as_str(), d)).collect();
    let names: Vec<_> = by_name.keys().copied().collect();
    assert_eq!(
        names,
        [
            "catalog",
            "catalog-postgres",
            "frontend",
            "nats",
            "notifications",
            "notifications-redis",
            "orders",
            "orders-postgres",
            "ratings",
            "ratings-redis",
            "reviews",
            "reviews-v1",
            "reviews-v2"
        ]
    );
    for doc in &docs {
        assert_eq!(doc.api_version, "v1");
        assert_eq!(doc.kind, "Service");
        assert_eq!(doc.metadata.namespace, "shop");
        assert_eq!(doc.spec.ports.len(), 1);
    }
    for (name, port, proto) in [
        ("frontend", 80, "http"),
        ("catalog", 80, "http"),
        ("ratings", 80, "http"),
        ("orders", 80, "http"),
        ("notifications", 80, "http"),
        ("reviews", 9090, "grpc"),
        ("catalog-postgres", 5432, "tcp"),
        ("orders-postgres", 5432, "tcp"),
        ("ratings-redis", 6379, "tcp"),
        ("notifications-redis", 6379, "tcp"),
        ("nats", 4222, "tcp"),
    ] {
        let doc = by_name[name];
        assert_eq!(
            doc.spec.selector,
            [("app".to_string(), name.to_string())].into()
        );
        let p = &doc.spec.ports[0];
        assert_eq!((p.port, p.app_protocol.as_str()), (port, proto), "{name}");
        let app = plan
            .workloads
            .iter()
            .find(|w| w.service == name)
            .unwrap()
            .app;
        assert_eq!(p.target_port, app.port(), "{name}");
    }
    let v2 = by_name["reviews-v2"];
    assert_eq!(
        v2.spec.selector.get("version").map(String::as_str),
        Some("v2")
    );
    assert_eq!(
        v2.spec.selector.get("app").map(String::as_str),
        Some("reviews")
    );
}

#[test]
fn mesh_yaml_is_what_the_controller_reads() {
    // Field names the local source reads (docs/architecture.md).
    let text = mesh_yaml(&plan(), &paths()).unwrap();
    for key in [
        "apiVersion: v1",
        "kind: Service",
        "targetPort:",
        "appProtocol: grpc",
        "namespace: shop",
    ] {
        assert!(text.contains(key), "missing {key}:\n{text}");
    }
}

#[test]
fn command_lines() {
    let plan = plan();
    let paths = paths();
    assert_eq!(
        controller_args(&plan, &paths),
        [
            "--data-dir",
            "/tmp/demo/controller",
            "--grpc-addr",
            "127.0.0.1:17000",
            "--admin-addr",
            "127.0.0.1:17001",
            "--mesh-config",
            "/tmp/demo/mesh.yaml",
            "--dashboard"
        ]
    );
    let frontend = plan
        .workloads
        .iter()
        .find(|w| w.name == "frontend")
        .unwrap();
    let app = app_args(frontend, &paths, &Faults::default());
    assert_eq!(app[0], "frontend");
    assert_eq!(
        app[1..3],
        ["--listen".to_string(), frontend.app.to_string()]
    );
    assert_eq!(
        app[3..5],
        ["--proxy".to_string(), frontend.outbound.to_string()]
    );

    let v2 = plan
        .workloads
        .iter()
        .find(|w| w.name == "reviews-v2")
        .unwrap();
    assert!(app_args(v2, &paths, &Faults::default())
        .ends_with(&["--version".to_string(), "v2".to_string()]));
    let sc = sidecar_args(&plan, &paths, v2).join(" ");
    for want in [
        "--controller 127.0.0.1:17000",
        "--ca-root /tmp/demo/controller/ca/root.pem",
        "--token-file /tmp/demo/tokens/reviews-v2.token",
        "--workload reviews-v2",
        "--namespace shop",
        "--service-account reviews",
        "--label app=reviews",
        "--label version=v2",
        "--app-port grpc:",
    ] {
        assert!(sc.contains(want), "{want:?} not in {sc}");
    }
    let gw = gateway_args(&plan, &paths).join(" ");
    for want in [
        "--mode gateway",
        "--token-file /tmp/demo/tokens/gateway.token",
        "--service-account gateway",
        "--listen 127.0.0.1:17002",
        "--gateway shop-gateway",
        "--admin 127.0.0.1:17003",
        "--tls-listen 127.0.0.1:17005",
        "--tls-cert /tmp/demo/gateway-tls/shop.crt,/tmp/demo/gateway-tls/shop.key",
    ] {
        assert!(gw.contains(want), "{want:?} not in {gw}");
    }
}

#[test]
fn every_proxy_has_a_token_with_its_labels() {
    let p = plan();
    let tokens = tokens(&p);
    assert_eq!(tokens.len(), p.workloads.len() + 1);
    for w in &p.workloads {
        let t = tokens
            .iter()
            .find(|t| t.proxy == w.name)
            .unwrap_or_else(|| panic!("no token for {}", w.name));
        assert_eq!(t.service_account, w.service_account);
        let labels = &t.labels;
        // The token's labels are exactly the --label flags of the sidecar.
        let args = sidecar_args(&p, &paths(), w).join(" ");
        for (k, v) in labels {
            assert!(args.contains(&format!("--label {k}={v}")), "{args}");
        }
        assert_eq!(args.matches("--label").count(), labels.len(), "{args}");
        assert!(args.contains(&format!("tokens/{}.token", w.name)), "{args}");
    }
}

#[test]
fn controller_accepts_the_mesh_yaml() {
    let text = mesh_yaml(&plan(), &paths()).unwrap();
    let config = mycel_control_plane::sources::local::parse_mesh_config(&text)
        .unwrap_or_else(|e| panic!("controller rejects mesh.yaml: {e}\n{text}"));
    assert_eq!(config.services.len(), 13);
    // Ratings is retried, so its fault knob shows retries at work.
    let ratings = mycel_control_plane::model::ServiceKey::new("ratings", "shop").unwrap();
    let retry = config.policies[&ratings]
        .service_wide
        .as_ref()
        .and_then(|p| p.retry.as_ref())
        .unwrap();
    assert_eq!(retry.attempts, 6);
    // The gateway serves the Gateway's one route to the frontend, on any
    // host; the reviews split stays a mesh route.
    let gw = mycel_control_plane::model::ServiceKey::new("shop-gateway", "shop").unwrap();
    let routes = &config.gateways[&gw];
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "shop/shop");
    assert!(routes[0].hostnames.is_empty());
    assert_eq!(
        routes[0].rules[0].backends[0].service.to_string(),
        "frontend.shop"
    );
    let reviews = mycel_control_plane::model::ServiceKey::new("reviews", "shop").unwrap();
    assert_eq!(config.routes[&reviews][0].name, "shop/reviews-split");
}

#[test]
fn faults_reach_the_apps_of_their_service() {
    let plan = plan();
    let faults = Faults {
        services: [
            (
                "ratings",
                Fault {
                    error_rate: 0.5,
                    latency: Duration::ZERO,
                },
            ),
            (
                "reviews",
                Fault {
                    error_rate: 0.0,
                    latency: Duration::from_millis(300),
                },
            ),
        ]
        .into(),
        ..Faults::default()
    };
    // (workload, flags its app must get, flags it must not get)
    let cases: [(&str, &[&str], &[&str]); 7] = [
        ("ratings", &["--error-rate 0.5"], &["--latency-ms"]),
        ("reviews-v1", &["--latency-ms 300"], &["--error-rate"]),
        (
            "reviews-v2",
            &["--latency-ms 300", "--version v2"],
            &["--error-rate"],
        ),
        ("catalog", &[], &["--error-rate", "--latency-ms"]),
        ("orders", &[], &["--error-rate", "--latency-ms"]),
        ("frontend", &[], &["--error-rate", "--latency-ms"]),
        ("nats", &["store nats"], &["--error-rate", "--latency-ms"]),
    ];
    for (name, want, unwanted) in cases {
        let w = plan.workloads.iter().find(|w| w.name == name).unwrap();
        let args = app_args(w, &paths(), &faults).join(" ");
        for flag in want {
            assert!(args.contains(flag), "{name}: {flag:?} not in {args}");
        }
        for flag in unwanted {
            assert!(!args.contains(flag), "{name}: {flag:?} in {args}");
        }
    }
}

/// `/api/orders` to the orders' `/orders`: POST under the write policy,
/// anything else under the read one, both reading the demo's JWKS by an
/// absolute path and forwarding `sub` as `x-user-id`; only the gateway
/// may call orders.
#[test]
fn orders_are_behind_the_demo_issuer_and_only_the_gateway_calls_them() {
    let plan = plan();
    let docs = gateway(&plan, &paths());
    let route = docs.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
    let orders_rules: Vec<&serde_json::Value> = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["matches"][0]["path"]["value"] == "/api/orders")
        .collect();
    assert_eq!(orders_rules.len(), 2, "{route:#}");
    for (rule, method, policy) in [
        (orders_rules[0], Some("POST"), ORDERS_WRITE),
        (orders_rules[1], None, ORDERS_READ),
    ] {
        assert_eq!(rule["matches"][0]["method"].as_str(), method, "{rule:#}");
        assert_eq!(
            rule["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"],
            "/orders"
        );
        assert_eq!(rule["filters"][1]["extensionRef"]["name"], policy);
        assert_eq!(rule["backendRefs"][0]["name"], "orders");
    }
    for (name, scope) in [(ORDERS_WRITE, "orders:write"), (ORDERS_READ, "orders:read")] {
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "GatewayPolicy" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no GatewayPolicy {name}"));
        let jwt = &policy["spec"]["jwt"];
        assert_eq!(jwt["issuer"], crate::demo::jwt::ISSUER);
        assert_eq!(jwt["audiences"], serde_json::json!(["shop"]));
        assert_eq!(jwt["jwks"]["file"], "/tmp/demo/gateway-jwt/jwks.json");
        assert_eq!(jwt["algorithms"], serde_json::json!(["ES256"]));
        assert_eq!(
            jwt["requiredClaims"],
            serde_json::json!([{"name": "scope", "value": scope}])
        );
        assert_eq!(
            jwt["forwardClaims"],
            serde_json::json!([{"claim": "sub", "header": "x-user-id"}])
        );
        // The same per-client limit as the rest of /api.
        assert_eq!(policy["spec"]["rateLimit"]["requests"], 50);
    }
    let authz = authorization(&plan);
    let orders = authz
        .iter()
        .find(|d| d["metadata"]["name"] == ORDERS_POLICY)
        .unwrap();
    assert_eq!(orders["spec"]["selector"]["matchLabels"]["app"], "orders");
    assert_eq!(
        orders["spec"]["rules"],
        serde_json::json!([{"from": [{"serviceAccounts": ["shop/gateway"]}]}])
    );
    // The controller reads both policies and both rules.
    let text = mesh_yaml(&plan, &paths()).unwrap();
    let config = mycel_control_plane::sources::local::parse_mesh_config(&text)
        .unwrap_or_else(|e| panic!("controller rejects mesh.yaml: {e}\n{text}"));
    let gw = mycel_control_plane::model::ServiceKey::new("shop-gateway", "shop").unwrap();
    let to_orders = config.gateways[&gw][0]
        .rules
        .iter()
        .filter(|r| {
            r.backends
                .iter()
                .any(|b| b.service.to_string() == "orders.shop")
        })
        .count();
    assert_eq!(to_orders, 2);
}

fn workload<'a>(plan: &'a DemoPlan, name: &str) -> &'a WorkloadPlan {
    plan.workloads
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}

/// A store runs `mycel-demo store <kind>` in its own directory beside a
/// sidecar that declares its port opaque TCP; its users reach it only
/// through their own sidecar's tunnel, on a local port the app is given.
#[test]
fn stores_are_reached_only_through_the_owners_sidecar() {
    let plan = plan();
    let paths = paths();
    let db = workload(&plan, "catalog-postgres");
    assert_eq!(
        app_args(db, &paths, &Faults::default()),
        [
            "store",
            "postgres",
            "--dir",
            "/tmp/demo/stores/catalog-postgres",
            "--listen",
            &db.app.to_string()
        ]
    );
    let db_proxy = sidecar_args(&plan, &paths, db).join(" ");
    assert!(
        db_proxy.contains(&format!("--app-port postgres:{}:tcp", db.app.port())),
        "{db_proxy}"
    );
    assert!(db_proxy.contains("--service-account catalog-postgres"));
    assert!(!db_proxy.contains("--tcp-upstream"), "{db_proxy}");

    let catalog = workload(&plan, "catalog");
    let app = app_args(catalog, &paths, &Faults::default()).join(" ");
    let proxy = sidecar_args(&plan, &paths, catalog).join(" ");
    for up in &catalog.upstreams {
        assert!(up.listen.ip().is_loopback());
        let flag = format!("{} {}", up.store.kind.app_flag(), up.listen);
        assert!(app.contains(&flag), "{flag} not in {app}");
        let tunnel = format!(
            "--tcp-upstream {}={}.shop:{}",
            up.listen,
            up.store.name,
            up.store.kind.port()
        );
        assert!(proxy.contains(&tunnel), "{tunnel} not in {proxy}");
    }
    assert_eq!(
        catalog
            .upstreams
            .iter()
            .map(|u| u.store.name)
            .collect::<Vec<_>>(),
        ["catalog-postgres", "nats"]
    );
    let notifications = app_args(workload(&plan, "notifications"), &paths, &Faults::default());
    assert!(
        notifications.contains(&"--redis".to_string()),
        "{notifications:?}"
    );
    assert!(
        notifications.contains(&"--nats".to_string()),
        "{notifications:?}"
    );
    // Stores start first, so their servers come up while the rest start.
    assert_eq!(plan.workloads[0].name, "catalog-postgres");
}

/// Each store admits only its users, and the controller reads the policies.
#[test]
fn each_store_admits_only_the_services_that_own_it() {
    let plan = plan();
    let authz = authorization(&plan);
    let admitted = |name: &str| {
        authz
            .iter()
            .find(|d| d["spec"]["selector"]["matchLabels"]["app"] == name)
            .unwrap_or_else(|| panic!("no policy selecting {name}"))["spec"]["rules"][0]["from"][0]
            ["serviceAccounts"]
            .clone()
    };
    assert_eq!(
        admitted("catalog-postgres"),
        serde_json::json!(["shop/catalog"])
    );
    assert_eq!(
        admitted("orders-postgres"),
        serde_json::json!(["shop/orders"])
    );
    assert_eq!(
        admitted("ratings-redis"),
        serde_json::json!(["shop/ratings"])
    );
    assert_eq!(
        admitted("notifications-redis"),
        serde_json::json!(["shop/notifications"])
    );
    assert_eq!(
        admitted("nats"),
        serde_json::json!(["shop/catalog", "shop/orders", "shop/notifications"])
    );
    assert_eq!(
        admitted("notifications"),
        serde_json::json!(["shop/frontend"])
    );
    let text = mesh_yaml(&plan, &paths()).unwrap();
    mycel_control_plane::sources::local::parse_mesh_config(&text)
        .unwrap_or_else(|e| panic!("controller rejects mesh.yaml: {e}\n{text}"));
}

/// Without a store's server its workload, Service, policy and tunnels are
/// left out, and its users get no flag (they keep their data in memory).
#[test]
fn a_missing_server_leaves_its_stores_out_and_their_users_in_memory() {
    let stores = Stores {
        available: [StoreKind::Redis].into(),
    };
    let plan = DemoPlan::with_stores(17000, &stores).unwrap();
    let names: Vec<_> = plan.workloads.iter().map(|w| w.name.as_str()).collect();
    assert!(names.contains(&"ratings-redis") && names.contains(&"notifications-redis"));
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-postgres") || *n == "nats"),
        "{names:?}"
    );
    let catalog = app_args(workload(&plan, "catalog"), &paths(), &Faults::default()).join(" ");
    assert!(
        !catalog.contains("--postgres") && !catalog.contains("--nats"),
        "{catalog}"
    );
    let ratings = app_args(workload(&plan, "ratings"), &paths(), &Faults::default()).join(" ");
    assert!(ratings.contains("--redis"), "{ratings}");
    let text = mesh_yaml(&plan, &paths()).unwrap();
    assert!(!text.contains("catalog-postgres"), "{text}");

    // Orders publishes through its database's outbox: no broker without it.
    let broker_only = Stores {
        available: [StoreKind::Nats].into(),
    };
    let plan = DemoPlan::with_stores(17000, &broker_only).unwrap();
    let orders = app_args(workload(&plan, "orders"), &paths(), &Faults::default()).join(" ");
    assert!(!orders.contains("--nats"), "{orders}");
    let catalog = app_args(workload(&plan, "catalog"), &paths(), &Faults::default()).join(" ");
    assert!(catalog.contains("--nats"), "{catalog}");

    let none = DemoPlan::with_stores(17000, &Stores::none()).unwrap();
    assert!(none
        .workloads
        .iter()
        .all(|w| w.store.is_none() && w.upstreams.is_empty()));
    assert_eq!(none.workloads.len(), 7);
}
