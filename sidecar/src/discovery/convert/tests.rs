use super::*;
use crate::core::directory::model::ServiceState;
use crate::discovery::cache::Cache;
use pb::resource::Body;

pub(crate) fn key(t: pb::ResourceType, name: &str) -> Option<pb::ResourceKey> {
    Some(pb::ResourceKey {
        r#type: t as i32,
        name: name.into(),
    })
}

pub(crate) fn svc_resource(name: &str, ns: &str) -> pb::Resource {
    pb::Resource {
        key: key(pb::ResourceType::Service, &format!("{name}.{ns}")),
        version: "v1".into(),
        body: Some(Body::Service(pb::Service {
            name: name.into(),
            namespace: ns.into(),
            ports: vec![pb::ServicePort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                protocol: pb::Protocol::Http as i32,
            }],
            vips: vec!["10.96.0.10".into()],
        })),
    }
}

pub(crate) fn eps_resource(key_name: &str) -> pb::Resource {
    pb::Resource {
        key: key(pb::ResourceType::Endpoints, key_name),
        version: "e1".into(),
        body: Some(Body::Endpoints(pb::Endpoints {
            service: key_name.into(),
            endpoints: vec![pb::Endpoint {
                address: "127.0.0.1".into(),
                mesh_port: 15006,
                spiffe_id: "spiffe://cluster.local/ns/shop/sa/catalog".into(),
                workload: "catalog-1".into(),
                zone: "z1".into(),
                weight: 0,
                ready: true,
            }],
        })),
    }
}

#[test]
fn valid_service_and_endpoints() {
    let Converted::Service { key, service } =
        resource(0, &svc_resource("catalog", "shop")).unwrap()
    else {
        panic!("service expected")
    };
    assert_eq!(key, "catalog.shop");
    assert_eq!(service.ports[0].target_port, 8080);
    assert_eq!(service.ports[0].protocol, Protocol::Http);
    assert_eq!(service.vips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);

    let Converted::Endpoints { endpoints, .. } =
        resource(1, &eps_resource("catalog.shop")).unwrap()
    else {
        panic!("endpoints expected")
    };
    assert_eq!(endpoints[0].mesh_addr, "127.0.0.1:15006".parse().unwrap());
    assert_eq!(endpoints[0].weight, 1, "unset weight is the default");
    assert_eq!(endpoints[0].identity.service_account(), "catalog");
}

#[test]
fn defaults_for_unset_fields() {
    let mut r = svc_resource("catalog", "shop");
    if let Some(Body::Service(s)) = &mut r.body {
        s.ports[0].target_port = 0;
        s.ports[0].protocol = 0;
    }
    let Converted::Service { service, .. } = resource(0, &r).unwrap() else {
        panic!("service expected")
    };
    assert_eq!(service.ports[0].target_port, 80);
    assert_eq!(service.ports[0].protocol, Protocol::Http);
}

#[test]
fn not_found_and_trust_bundle() {
    let r = pb::Resource {
        key: key(pb::ResourceType::Service, "ghost.shop"),
        version: "nf".into(),
        body: Some(Body::NotFound(pb::NotFound {})),
    };
    assert_eq!(
        resource(0, &r).unwrap(),
        Converted::NotFound {
            key: "ghost.shop".into()
        }
    );
    let ca = crate::identity::fake::FakeCa::new(
        "spiffe://cluster.local/ns/a/sa/b".parse().unwrap(),
        std::time::Duration::from_secs(60),
    );
    let r = pb::Resource {
        key: key(pb::ResourceType::TrustBundle, ""),
        version: "b1".into(),
        body: Some(Body::TrustBundle(pb::TrustBundle {
            roots_der: vec![ca.root_der().to_vec()],
        })),
    };
    assert!(
        matches!(resource(0, &r).unwrap(), Converted::TrustBundle { roots } if roots.len() == 1)
    );
}

/// Each invalid case: (mutation, expected resource, expected field).
#[test]
fn invalid_resources_name_resource_and_field() {
    type Mutate = fn(&mut pb::Resource);
    let cases: Vec<(&str, Mutate, &str, &str)> = vec![
        ("no key", |r| r.key = None, "#0", "key"),
        (
            "bad type",
            |r| r.key.as_mut().unwrap().r#type = 99,
            "#0",
            "key.type",
        ),
        (
            "unspecified type",
            |r| r.key.as_mut().unwrap().r#type = 0,
            "#0",
            "key.type",
        ),
        (
            "bad key",
            |r| r.key.as_mut().unwrap().name = "catalog".into(),
            "service/catalog",
            "key.name",
        ),
        (
            "no version",
            |r| r.version.clear(),
            "service/catalog.shop",
            "version",
        ),
        ("no body", |r| r.body = None, "service/catalog.shop", "body"),
        (
            "wrong body",
            |r| r.body = Some(Body::Endpoints(pb::Endpoints::default())),
            "service/catalog.shop",
            "body",
        ),
        (
            "no name",
            |r| svc_mut(r).name.clear(),
            "service/catalog.shop",
            "service.name",
        ),
        (
            "no namespace",
            |r| svc_mut(r).namespace.clear(),
            "service/catalog.shop",
            "service.namespace",
        ),
        (
            "other name",
            |r| svc_mut(r).name = "reviews".into(),
            "service/catalog.shop",
            "service.name",
        ),
        (
            "port 0",
            |r| svc_mut(r).ports[0].port = 0,
            "service/catalog.shop",
            "service.ports[0].port",
        ),
        (
            "port too big",
            |r| svc_mut(r).ports[0].port = 70000,
            "service/catalog.shop",
            "service.ports[0].port",
        ),
        (
            "target too big",
            |r| svc_mut(r).ports[0].target_port = 70000,
            "service/catalog.shop",
            "service.ports[0].target_port",
        ),
        (
            "protocol",
            |r| svc_mut(r).ports[0].protocol = 42,
            "service/catalog.shop",
            "service.ports[0].protocol",
        ),
        (
            "duplicate port",
            |r| {
                let p = svc_mut(r).ports[0].clone();
                svc_mut(r).ports.push(p)
            },
            "service/catalog.shop",
            "service.ports[1].port",
        ),
        (
            "vip",
            |r| svc_mut(r).vips.push("nope".into()),
            "service/catalog.shop",
            "service.vips[1]",
        ),
    ];
    for (what, mutate, res, field) in cases {
        let mut r = svc_resource("catalog", "shop");
        mutate(&mut r);
        let err = resource(0, &r).expect_err(what);
        assert_eq!(
            (err.resource.as_str(), err.field.as_str()),
            (res, field),
            "{what}: {err}"
        );
    }

    let ep_cases: Vec<(&str, Mutate, &str)> = vec![
        (
            "address",
            |r| ep_mut(r).address = "host".into(),
            "endpoints[0].address",
        ),
        (
            "mesh port",
            |r| ep_mut(r).mesh_port = 0,
            "endpoints[0].mesh_port",
        ),
        (
            "spiffe",
            |r| ep_mut(r).spiffe_id = "spiffe://x/y".into(),
            "endpoints[0].spiffe_id",
        ),
        (
            "service",
            |r| {
                if let Some(Body::Endpoints(e)) = &mut r.body {
                    e.service = "other.shop".into()
                }
            },
            "endpoints.service",
        ),
    ];
    for (what, mutate, field) in ep_cases {
        let mut r = eps_resource("catalog.shop");
        mutate(&mut r);
        let err = resource(0, &r).expect_err(what);
        assert_eq!(err.resource, "endpoints/catalog.shop", "{what}");
        assert_eq!(err.field, field, "{what}: {err}");
    }

    let bad_bundle = pb::Resource {
        key: key(pb::ResourceType::TrustBundle, ""),
        version: "b".into(),
        body: Some(Body::TrustBundle(pb::TrustBundle {
            roots_der: vec![b"junk".to_vec()],
        })),
    };
    let err = resource(0, &bad_bundle).unwrap_err();
    assert_eq!(err.field, "trust_bundle.roots_der[0]");
    let mut named_bundle = bad_bundle.clone();
    named_bundle.key = key(pb::ResourceType::TrustBundle, "x");
    assert_eq!(resource(0, &named_bundle).unwrap_err().field, "key.name");
}

fn svc_mut(r: &mut pb::Resource) -> &mut pb::Service {
    match &mut r.body {
        Some(Body::Service(s)) => s,
        _ => panic!("service body expected"),
    }
}

fn ep_mut(r: &mut pb::Resource) -> &mut pb::Endpoint {
    match &mut r.body {
        Some(Body::Endpoints(e)) => &mut e.endpoints[0],
        _ => panic!("endpoints body expected"),
    }
}

#[test]
fn cache_applies_whole_responses_only() {
    let mut cache = Cache::default();
    let subs = vec!["catalog.shop".to_string(), "reviews.shop".to_string()];
    cache
        .apply(&pb::DiscoveryResponse {
            nonce: "1".into(),
            resources: vec![
                svc_resource("catalog", "shop"),
                eps_resource("catalog.shop"),
            ],
            removed: vec![],
            refused: vec![],
        })
        .unwrap();
    let snap = cache.snapshot(&subs);
    assert!(
        matches!(snap.service("catalog.shop"), Some(ServiceState::Known { endpoints, .. }) if endpoints.len() == 1)
    );
    assert_eq!(snap.service("reviews.shop"), Some(&ServiceState::Pending));
    assert_eq!(
        snap.versions
            .get("service/catalog.shop")
            .map(String::as_str),
        Some("v1")
    );
    assert_eq!(cache.known().len(), 2);

    // One bad resource: nothing of this response applies.
    let mut bad = eps_resource("reviews.shop");
    ep_mut(&mut bad).address = "x".into();
    let mut good = svc_resource("reviews", "shop");
    good.version = "v2".into();
    let err = cache
        .apply(&pb::DiscoveryResponse {
            nonce: "2".into(),
            resources: vec![good, bad],
            removed: vec![],
            refused: vec![],
        })
        .unwrap_err();
    assert_eq!(err.resource, "endpoints/reviews.shop");
    assert_eq!(
        cache.snapshot(&subs).service("reviews.shop"),
        Some(&ServiceState::Pending)
    );

    // Removal drops the resource and its version.
    cache
        .apply(&pb::DiscoveryResponse {
            nonce: "3".into(),
            resources: vec![],
            removed: vec![key(pb::ResourceType::Endpoints, "catalog.shop").unwrap()],
            refused: vec![],
        })
        .unwrap();
    assert!(
        matches!(cache.snapshot(&subs).service("catalog.shop"), Some(ServiceState::Known { endpoints, .. }) if endpoints.is_empty())
    );
    assert_eq!(cache.known().len(), 1);
}

fn vips_resource(entries: &[(&str, &str)]) -> pb::Resource {
    pb::Resource {
        key: key(pb::ResourceType::ServiceVips, ""),
        version: "x1".into(),
        body: Some(Body::ServiceVips(pb::ServiceVips {
            vips: entries
                .iter()
                .map(|(a, s)| pb::ServiceVip {
                    address: a.to_string(),
                    service: s.to_string(),
                })
                .collect(),
        })),
    }
}

#[test]
fn service_vips_convert_and_reach_the_snapshot() {
    let table = vips_resource(&[("198.19.0.10", "ratings.shop"), ("fd00::a", "catalog.shop")]);
    let mut cache = Cache::default();
    cache
        .apply(&pb::DiscoveryResponse {
            nonce: "n".into(),
            resources: vec![table],
            removed: vec![],
            refused: vec![],
        })
        .unwrap();
    let snap = cache.snapshot(&[]);
    assert_eq!(
        snap.vip_owner("198.19.0.10".parse().unwrap()),
        Some("ratings.shop")
    );
    assert_eq!(
        snap.vip_owner("fd00::a".parse().unwrap()),
        Some("catalog.shop")
    );
    assert_eq!(snap.vip_owner("198.19.0.11".parse().unwrap()), None);
    // Known VIPs do not subscribe or invent services.
    assert!(snap.services.is_empty());
}

#[test]
fn bad_service_vips_name_the_entry() {
    for (entries, field) in [
        (vec![("not-an-ip", "a.b")], "service_vips.vips[0].address"),
        (
            vec![("198.19.0.1", "nodots")],
            "service_vips.vips[0].service",
        ),
        (
            vec![("198.19.0.1", "a.b"), ("198.19.0.1", "c.d")],
            "service_vips.vips[1].address",
        ),
    ] {
        let err = resource(0, &vips_resource(&entries)).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    let mut named = vips_resource(&[]);
    named.key = key(pb::ResourceType::ServiceVips, "x");
    assert_eq!(resource(0, &named).unwrap_err().field, "key.name");
}

fn policy_resource(rules: pb::PolicyRules) -> pb::Resource {
    pb::Resource {
        key: key(pb::ResourceType::TrafficPolicy, "catalog.shop"),
        version: "p1".into(),
        body: Some(Body::TrafficPolicy(pb::TrafficPolicy {
            service: "catalog.shop".into(),
            source: "shop/catalog".into(),
            rules: Some(rules),
            ports: vec![pb::PortPolicy {
                port: 80,
                rules: Some(pb::PolicyRules::default()),
            }],
        })),
    }
}

fn retry_rules() -> pb::PolicyRules {
    pb::PolicyRules {
        retry: Some(pb::RetryPolicy {
            attempts: 3,
            per_try_timeout_ms: 250,
            on_5xx: true,
            grpc_codes: vec![14],
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            budget_percent: 20,
            budget_min_per_second: 10,
            budget_window_ms: 10_000,
            max_body_bytes: 65_536,
            ..Default::default()
        }),
        circuit_breaker: Some(pb::CircuitBreaker {
            max_requests: 7,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn traffic_policy_reaches_the_snapshot_with_its_port_override() {
    let mut cache = Cache::default();
    let resp = pb::DiscoveryResponse {
        nonce: "n".into(),
        resources: vec![
            svc_resource("catalog", "shop"),
            eps_resource("catalog.shop"),
            policy_resource(retry_rules()),
        ],
        ..Default::default()
    };
    cache.apply(&resp).unwrap();
    let snap = cache.snapshot(&[]);
    let Some(ServiceState::Known { policy, .. }) = snap.service("catalog.shop") else {
        panic!("{snap:?}");
    };
    let r = policy.rules.retry.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(
        r.per_try_timeout,
        Some(std::time::Duration::from_millis(250))
    );
    assert!(r.retry_on.server_error && !r.retry_on.gateway_error);
    assert!((r.budget.ratio - 0.2).abs() < 1e-9);
    let cb = policy.rules.circuit_breaker.as_ref().unwrap();
    assert_eq!((cb.max_requests, cb.max_connections), (7, u32::MAX));
    // Port 80 has its own (empty) rules: no retries there.
    assert!(policy.for_port(80).retry.is_none());
    assert!(policy.for_port(81).retry.is_some());

    // Withdrawn: back to the defaults.
    cache
        .apply(&pb::DiscoveryResponse {
            nonce: "m".into(),
            removed: vec![key(pb::ResourceType::TrafficPolicy, "catalog.shop").unwrap()],
            ..Default::default()
        })
        .unwrap();
    let snap = cache.snapshot(&[]);
    let Some(ServiceState::Known { policy, .. }) = snap.service("catalog.shop") else {
        panic!("{snap:?}");
    };
    assert!(policy.rules.retry.is_none());
}

type Mutation = Box<dyn Fn(&mut pb::PolicyRules)>;

#[test]
fn invalid_traffic_policies_nack_naming_the_field() {
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|r| r.retry.as_mut().unwrap().attempts = 11),
            "traffic_policy.rules.retry.attempts: 11 is out of range (2-10)",
        ),
        (
            Box::new(|r| r.retry.as_mut().unwrap().budget_window_ms = 0),
            "traffic_policy.rules.retry.budget_window_ms",
        ),
        (
            Box::new(|r| r.retry.as_mut().unwrap().backoff_base_ms = 1_000),
            "traffic_policy.rules.retry.backoff_base_ms",
        ),
        (
            Box::new(|r| {
                r.load_balancer = Some(pb::LoadBalancer {
                    algorithm: 99,
                    ..Default::default()
                })
            }),
            "traffic_policy.rules.load_balancer.algorithm: unknown algorithm 99",
        ),
        (
            Box::new(|r| {
                r.load_balancer = Some(pb::LoadBalancer {
                    algorithm: pb::load_balancer::Algorithm::Maglev as i32,
                    ..Default::default()
                })
            }),
            "traffic_policy.rules.load_balancer.hash_key: missing",
        ),
        (
            Box::new(|r| {
                r.fault = Some(pb::Fault {
                    abort: Some(pb::FaultAbort {
                        http_status: 700,
                        percent: 10,
                    }),
                    delay: None,
                })
            }),
            "traffic_policy.rules.fault.abort.http_status",
        ),
    ];
    for (mutate, want) in cases {
        let mut rules = retry_rules();
        mutate(&mut rules);
        let err = resource(0, &policy_resource(rules))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("resource traffic_policy/catalog.shop: {want}")),
            "{err}"
        );
    }
}

fn exact(v: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        kind: Some(pb::string_match::Kind::Exact(v.into())),
    })
}

fn backend(service: &str, weight: u32) -> pb::RouteBackend {
    pb::RouteBackend {
        service: service.into(),
        port: 9080,
        weight,
        filters: vec![],
    }
}

/// reviews: `x-user: tester` → v2; everything else 90/10 to v1/v2.
fn split_route() -> pb::Route {
    pb::Route {
        name: "shop/reviews-split".into(),
        kind: pb::RouteKind::Http as i32,
        ports: vec![9080],
        hostnames: vec![],
        listener_protocol: 0,
        rules: vec![
            pb::RouteRule {
                matches: vec![pb::RouteMatch {
                    headers: vec![pb::HeaderMatch {
                        name: "x-user".into(),
                        value: exact("tester"),
                    }],
                    ..Default::default()
                }],
                backends: vec![backend("reviews-v2.shop", 1)],
                ..Default::default()
            },
            pb::RouteRule {
                filters: vec![pb::RouteFilter {
                    kind: Some(pb::route_filter::Kind::ResponseHeaderModifier(
                        pb::HeaderModifier {
                            set: vec![pb::HeaderPair {
                                name: "x-split".into(),
                                value: b"90-10".to_vec(),
                            }],
                            ..Default::default()
                        },
                    )),
                }],
                backends: vec![
                    backend("reviews-v1.shop", 90),
                    backend("reviews-v2.shop", 10),
                ],
                timeout_ms: 1_500,
                ..Default::default()
            },
        ],
    }
}

fn routes_resource(route: pb::Route) -> pb::Resource {
    pb::Resource {
        key: key(pb::ResourceType::Routes, "reviews.shop"),
        version: "r1".into(),
        body: Some(Body::Routes(pb::Routes {
            parent: "reviews.shop".into(),
            routes: vec![route],
        })),
    }
}

#[test]
fn routes_reach_the_snapshot_and_leave_it_when_withdrawn() {
    let mut cache = Cache::default();
    let resp = pb::DiscoveryResponse {
        nonce: "n".into(),
        resources: vec![
            svc_resource("reviews", "shop"),
            routes_resource(split_route()),
        ],
        ..Default::default()
    };
    cache.apply(&resp).unwrap();
    let snap = cache.snapshot(&[]);
    let Some(ServiceState::Known { routes, .. }) = snap.service("reviews.shop") else {
        panic!("{snap:?}");
    };
    assert!(routes.routes_port(9080) && !routes.routes_port(80));
    assert_eq!(
        routes.routes[0].listener,
        crate::core::directory::routes::ListenerProtocol::Any,
        "unspecified: both gateway sockets"
    );
    let rules = &routes.routes[0].rules;
    assert_eq!(rules[1].backends[0].service_key, "reviews-v1.shop");
    assert_eq!(rules[1].backends[0].port, Some(9080));
    assert_eq!(
        rules[1].timeout,
        Some(std::time::Duration::from_millis(1_500))
    );
    assert_eq!(
        snap.versions.get("routes/reviews.shop").map(String::as_str),
        Some("r1")
    );

    cache
        .apply(&pb::DiscoveryResponse {
            nonce: "m".into(),
            removed: vec![key(pb::ResourceType::Routes, "reviews.shop").unwrap()],
            ..Default::default()
        })
        .unwrap();
    let snap = cache.snapshot(&[]);
    let Some(ServiceState::Known { routes, .. }) = snap.service("reviews.shop") else {
        panic!("{snap:?}");
    };
    assert!(routes.routes.is_empty());
}

#[test]
fn a_routes_listener_protocol_says_which_gateway_socket_serves_it() {
    use crate::core::directory::routes::ListenerProtocol;
    for (wire, want) in [
        (pb::ListenerProtocol::Unspecified, ListenerProtocol::Any),
        (pb::ListenerProtocol::Http, ListenerProtocol::Http),
        (pb::ListenerProtocol::Https, ListenerProtocol::Https),
    ] {
        let mut route = split_route();
        route.listener_protocol = wire as i32;
        let Converted::Routes { routes, .. } = resource(0, &routes_resource(route)).unwrap() else {
            panic!("not routes");
        };
        assert_eq!(routes.routes[0].listener, want, "{wire:?}");
    }
}

type RouteMutation = Box<dyn Fn(&mut pb::Route)>;

#[test]
fn invalid_routes_nack_naming_the_field() {
    let filter = |kind| pb::RouteFilter { kind: Some(kind) };
    let cases: Vec<(RouteMutation, &str)> = vec![
        (
            Box::new(|r| r.kind = 7),
            "routes.routes[0].kind: unknown route kind 7",
        ),
        (
            Box::new(|r| r.listener_protocol = 9),
            "routes.routes[0].listener_protocol: unknown listener protocol 9",
        ),
        (
            Box::new(|r| r.rules[0].matches[0].headers[0].name = "bad name".into()),
            "routes.routes[0].rules[0].matches[0].headers[0].name",
        ),
        (
            Box::new(|r| {
                r.rules[0].matches[0].path = Some(pb::PathMatch {
                    kind: Some(pb::path_match::Kind::Regex("\\w{1000}{1000}".into())),
                })
            }),
            "routes.routes[0].rules[0].matches[0].path.regex",
        ),
        (
            Box::new(|r| {
                r.rules[0].matches[0].path = Some(pb::PathMatch {
                    kind: Some(pb::path_match::Kind::Prefix("api".into())),
                })
            }),
            "routes.routes[0].rules[0].matches[0].path: \"api\" does not start with '/'",
        ),
        (
            Box::new(|r| r.rules[1].backends[0].service = "Reviews".into()),
            "routes.routes[0].rules[1].backends[0].service",
        ),
        (
            Box::new(|r| r.rules[1].backends[0].port = 70_000),
            "routes.routes[0].rules[1].backends[0].port",
        ),
        (
            Box::new(move |r| {
                r.rules[1]
                    .filters
                    .push(filter(pb::route_filter::Kind::RequestRedirect(
                        pb::RequestRedirect {
                            status_code: 200,
                            ..Default::default()
                        },
                    )))
            }),
            "routes.routes[0].rules[1].filters[1].request_redirect.status_code",
        ),
        (
            Box::new(move |r| {
                r.rules[1]
                    .filters
                    .push(filter(pb::route_filter::Kind::RequestHeaderModifier(
                        pb::HeaderModifier {
                            set: vec![pb::HeaderPair {
                                name: "x-a".into(),
                                value: b"1".to_vec(),
                            }],
                            remove: vec!["X-A".into()],
                            ..Default::default()
                        },
                    )))
            }),
            "routes.routes[0].rules[1].filters[1].remove[0]: header x-a is named twice",
        ),
        (
            Box::new(move |r| {
                r.rules[1]
                    .filters
                    .push(filter(pb::route_filter::Kind::RequestHeaderModifier(
                        pb::HeaderModifier {
                            add: vec![pb::HeaderPair {
                                name: "x-a".into(),
                                value: b"line\nbreak".to_vec(),
                            }],
                            ..Default::default()
                        },
                    )))
            }),
            "routes.routes[0].rules[1].filters[1].add[0].value",
        ),
        (
            Box::new(move |r| {
                r.rules[0]
                    .filters
                    .push(filter(pb::route_filter::Kind::UrlRewrite(pb::UrlRewrite {
                        hostname: String::new(),
                        path: Some(pb::PathModifier {
                            kind: Some(pb::path_modifier::Kind::ReplacePrefixMatch("/v2".into())),
                        }),
                    })));
                r.rules[0].matches[0].path = Some(pb::PathMatch {
                    kind: Some(pb::path_match::Kind::Exact("/x".into())),
                });
            }),
            "routes.routes[0].rules[0].filters: ReplacePrefixMatch needs",
        ),
        (
            Box::new(move |r| {
                r.rules[1]
                    .filters
                    .push(filter(pb::route_filter::Kind::RequestMirror(
                        pb::RequestMirror {
                            service: "shadow.shop".into(),
                            port: 0,
                            percent: 101,
                        },
                    )))
            }),
            "routes.routes[0].rules[1].filters[1].request_mirror.percent",
        ),
        (
            Box::new(|r| {
                r.rules[0].matches[0].grpc = Some(pb::GrpcMethodMatch {
                    service: exact("shop.Reviews"),
                    method: None,
                })
            }),
            "routes.routes[0].rules[0].matches[0].grpc: only a GRPCRoute",
        ),
        (
            Box::new(|r| r.rules = vec![pb::RouteRule::default(); 65]),
            "routes.routes[0].rules: 65 rules; at most 64",
        ),
    ];
    for (mutate, want) in cases {
        let mut route = split_route();
        mutate(&mut route);
        let err = resource(0, &routes_resource(route))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("resource routes/reviews.shop: {want}")),
            "want {want}\n got {err}"
        );
    }
}

#[test]
fn a_routes_resource_for_another_parent_is_refused() {
    let mut r = routes_resource(split_route());
    if let Some(Body::Routes(routes)) = &mut r.body {
        routes.parent = "catalog.shop".into();
    }
    let err = resource(0, &r).unwrap_err();
    assert_eq!(err.field, "routes.parent");
}

#[test]
fn a_flood_of_matches_across_routes_is_refused() {
    // 100 routes of 50 rules of one match: each within its own caps, too
    // many for one request to be checked against.
    let route = pb::Route {
        name: "shop/many".into(),
        kind: pb::RouteKind::Http as i32,
        rules: vec![
            pb::RouteRule {
                matches: vec![pb::RouteMatch::default()],
                ..Default::default()
            };
            50
        ],
        ..Default::default()
    };
    let r = pb::Resource {
        key: key(pb::ResourceType::Routes, "reviews.shop"),
        version: "r1".into(),
        body: Some(Body::Routes(pb::Routes {
            parent: "reviews.shop".into(),
            routes: vec![route; 100],
        })),
    };
    let err = resource(0, &r).unwrap_err().to_string();
    assert!(err.contains("5000 matches in all; at most 4096"), "{err}");
}

fn gateway_policy() -> pb::GatewayPolicy {
    pb::GatewayPolicy {
        name: "shop/orders".into(),
        jwt: Some(pb::JwtAuth {
            issuer: "https://issuer.test".into(),
            audiences: vec!["shop".into()],
            jwks: Some(pb::jwt_auth::Jwks::JwksUrl(
                "http://auth.shop:8080/jwks.json".into(),
            )),
            forward_claims: vec![pb::ForwardClaim {
                claim: "sub".into(),
                header: "x-user-id".into(),
            }],
            leeway_ms: Some(0),
            ..Default::default()
        }),
        api_keys: Some(pb::ApiKeyAuth {
            keys: vec![pb::ApiKey {
                name: "partner-a".into(),
                sha256: vec![7; 32],
            }],
            ..Default::default()
        }),
        rate_limit: Some(pb::RateLimit {
            requests: 10,
            per_ms: 1000,
            key: pb::RateLimitKey::JwtSubject as i32,
            global: true,
            fail_closed: true,
            ..Default::default()
        }),
        cors: Some(pb::Cors {
            allow_origins: vec![
                "https://shop.example".into(),
                "http://localhost:8080".into(),
            ],
            allow_methods: vec!["PUT".into()],
            allow_credentials: true,
            max_age_s: 600,
            ..Default::default()
        }),
        max_request_body_bytes: 4096,
        cache: Some(pb::ResponseCache {}),
        aggregate: Some(pb::Aggregate {
            parts: vec![pb::AggregatePart {
                name: "product".into(),
                service: "catalog.shop".into(),
                port: 80,
                path: "/products/{last}".into(),
                timeout_ms: 2000,
                required: true,
            }],
            max_part_bytes: 0,
        }),
    }
}

fn with_policy(p: pb::GatewayPolicy) -> pb::Route {
    let mut route = split_route();
    route.rules[1].filters.push(pb::RouteFilter {
        kind: Some(pb::route_filter::Kind::GatewayPolicy(p)),
    });
    route
}

#[test]
fn a_gateway_policy_reaches_the_routes_typed() {
    use crate::core::directory::gateway_policy::{JwksLocation, RateLimitKey};
    use crate::core::directory::routes::Filter;

    let routes = match resource(0, &routes_resource(with_policy(gateway_policy()))).unwrap() {
        Converted::Routes { routes, .. } => routes,
        other => panic!("{other:?}"),
    };
    let Some(Filter::GatewayPolicy(p)) = routes.routes[0].rules[1].filters.last() else {
        panic!("{routes:?}");
    };
    assert_eq!(p.name, "shop/orders");
    let jwt = p.jwt.as_ref().unwrap();
    assert!(matches!(&jwt.jwks, JwksLocation::Url(u) if u.port_u16() == Some(8080)));
    assert_eq!(
        jwt.leeway,
        Some(std::time::Duration::ZERO),
        "0 is a leeway, not unset"
    );
    assert_eq!(jwt.refresh, std::time::Duration::from_secs(300));
    assert_eq!(jwt.forward_claims[0].header, "x-user-id");
    let keys = p.api_keys.as_ref().unwrap();
    assert_eq!(
        (keys.header.as_str(), keys.keys[0].sha256),
        ("x-api-key", [7; 32])
    );
    let limit = p.rate_limit.as_ref().unwrap();
    assert_eq!(limit.key, RateLimitKey::JwtSubject);
    assert!(limit.global && limit.fail_closed && limit.burst.is_none());
    let cors = p.cors.as_ref().unwrap();
    assert!(matches!(&cors.allow_origins,
        crate::core::directory::gateway_policy::AllowOrigins::List(l) if l.len() == 2));
    assert_eq!(cors.allow_methods, [http::Method::PUT]);
    assert_eq!(p.max_request_body_bytes, Some(4096));
    assert!(p.cache);
    let a = p.aggregate.as_ref().unwrap();
    assert_eq!(a.max_part_bytes, 1024 * 1024, "0 is the default");
    assert_eq!(
        (
            a.parts[0].service_key.as_str(),
            a.parts[0].port,
            a.parts[0].timeout
        ),
        ("catalog.shop", 80, std::time::Duration::from_secs(2))
    );
}

#[test]
fn invalid_gateway_policies_nack_naming_the_field() {
    type Mutation = Box<dyn Fn(&mut pb::GatewayPolicy)>;
    let at = "routes.routes[0].rules[1].filters[1].gateway_policy";
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|p| p.name = "orders".into()), "name"),
        (
            Box::new(|p| {
                p.jwt = None;
                p.api_keys = None;
                p.rate_limit = None;
                p.cors = None;
                p.max_request_body_bytes = 0;
                p.cache = None;
                p.aggregate = None;
            }),
            ": a policy with nothing to enforce",
        ),
        (
            Box::new(|p| p.jwt.as_mut().unwrap().jwks = None),
            "jwt.jwks: missing",
        ),
        (
            Box::new(|p| {
                p.jwt.as_mut().unwrap().jwks =
                    Some(pb::jwt_auth::Jwks::JwksUrl("https://auth/jwks".into()))
            }),
            "jwt.jwks_url",
        ),
        (
            Box::new(|p| {
                p.jwt.as_mut().unwrap().jwks =
                    Some(pb::jwt_auth::Jwks::JwksFile("jwks.json".into()))
            }),
            "jwt.jwks_file: \"jwks.json\" is not an absolute path",
        ),
        (
            Box::new(|p| p.jwt.as_mut().unwrap().forward_claims[0].header = "X-User".into()),
            "jwt.forward_claims[0].header: \"X-User\" is not lowercase",
        ),
        (
            Box::new(|p| p.api_keys.as_mut().unwrap().keys[0].sha256 = vec![1; 20]),
            "api_keys.keys[0].sha256: 20 bytes",
        ),
        (
            Box::new(|p| {
                let k = p.api_keys.as_mut().unwrap();
                k.keys.push(k.keys[0].clone());
            }),
            "api_keys.keys[1].name",
        ),
        (
            Box::new(|p| p.rate_limit.as_mut().unwrap().requests = 0),
            "rate_limit.requests: must be at least 1",
        ),
        (
            Box::new(|p| p.rate_limit.as_mut().unwrap().per_ms = 0),
            "rate_limit.per_ms",
        ),
        (
            Box::new(|p| p.jwt = None),
            "rate_limit.key: JwtSubject needs the policy's jwt",
        ),
        (
            Box::new(|p| p.rate_limit.as_mut().unwrap().global = false),
            "rate_limit.fail_closed",
        ),
        (
            Box::new(|p| {
                let r = p.rate_limit.as_mut().unwrap();
                r.key = pb::RateLimitKey::Header as i32;
                r.header = String::new();
            }),
            "rate_limit.header",
        ),
        (
            Box::new(|p| p.cors.as_mut().unwrap().allow_origins = vec!["*".into()]),
            "cors.allow_credentials",
        ),
        (
            Box::new(|p| {
                p.cors.as_mut().unwrap().allow_origins = vec!["https://shop.example/app".into()]
            }),
            "cors.allow_origins[0]: \"https://shop.example/app\" is not a lowercase origin",
        ),
        (
            Box::new(|p| {
                p.cors.as_mut().unwrap().allow_origins = vec!["https://Shop.example".into()]
            }),
            "cors.allow_origins[0]",
        ),
        (
            Box::new(|p| p.cors.as_mut().unwrap().allow_methods = vec!["GE T".into()]),
            "cors.allow_methods[0]",
        ),
        (
            Box::new(|p| p.aggregate.as_mut().unwrap().parts[0].service = "catalog".into()),
            "aggregate.parts[0].service",
        ),
        (
            Box::new(|p| p.aggregate.as_mut().unwrap().parts[0].timeout_ms = 0),
            "aggregate.parts[0].timeout_ms",
        ),
        (
            Box::new(|p| {
                let a = p.aggregate.as_mut().unwrap();
                a.parts.push(a.parts[0].clone());
            }),
            "aggregate.parts[1].name",
        ),
    ];
    for (mutate, want) in cases {
        let mut p = gateway_policy();
        mutate(&mut p);
        let err = resource(0, &routes_resource(with_policy(p)))
            .unwrap_err()
            .to_string();
        let want = if want.starts_with(':') {
            format!("{at}{want}")
        } else {
            format!("{at}.{want}")
        };
        assert!(
            err.starts_with(&format!("resource routes/reviews.shop: {want}")),
            "want {want}\n got {err}"
        );
    }
}
