use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

use super::pattern::{glob_path, host_matches, value_matches};
use super::*;
use crate::spiffe::SpiffeId;

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        action,
        rules,
    }
}

fn from(src: Source) -> Rule {
    Rule {
        from: vec![src],
        ..Rule::default()
    }
}

fn principals(p: &[&str]) -> Source {
    Source {
        principals: p.iter().map(|s| s.to_string()).collect(),
        ..Source::default()
    }
}

struct Req {
    peer: Option<SpiffeId>,
    ip: Option<IpAddr>,
    port: u16,
    /// method, path, host; None: TCP only.
    http: Option<(&'static str, &'static str, &'static str)>,
    headers: HeaderMap,
}

fn http_req(peer: Option<SpiffeId>, method: &'static str, path: &'static str) -> Req {
    Req {
        peer,
        ip: Some("198.18.0.7".parse().unwrap()),
        port: 8080,
        http: Some((method, path, "catalog.shop")),
        headers: HeaderMap::new(),
    }
}

fn tcp_req(peer: Option<SpiffeId>, port: u16) -> Req {
    Req {
        peer,
        ip: Some("198.18.0.7".parse().unwrap()),
        port,
        http: None,
        headers: HeaderMap::new(),
    }
}

fn run<'p>(p: &'p InboundPolicy, r: &Req) -> Decision<'p> {
    let attrs = Attributes {
        peer: r.peer.as_ref(),
        source_ip: r.ip,
        port: r.port,
        http: r.http.map(|(method, path, host)| HttpAttributes {
            method,
            path,
            host,
            headers: &r.headers,
            claims: None,
        }),
    };
    decide(p, &attrs)
}

#[test]
fn defaults_decide_when_no_allow_policy_selects() {
    let frontend = Some(id("shop", "frontend"));
    let cases = [
        (DefaultPolicy::AllowAll, None, true),
        (DefaultPolicy::AllowAll, frontend.clone(), true),
        (DefaultPolicy::MeshAuthenticated, None, false),
        (DefaultPolicy::MeshAuthenticated, frontend.clone(), true),
        (DefaultPolicy::Deny, frontend.clone(), false),
        (DefaultPolicy::Deny, None, false),
    ];
    for (default, peer, want) in cases {
        let p = InboundPolicy {
            default,
            policies: vec![],
            ..InboundPolicy::default()
        };
        let d = run(&p, &http_req(peer.clone(), "GET", "/"));
        assert_eq!(d.allowed, want, "{default:?} {peer:?}");
        assert_eq!(d.by, DecidedBy::Default(default));
    }
}

#[test]
fn deny_wins_over_allow() {
    let p = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![
            policy(
                "shop/allow-frontend",
                Action::Allow,
                vec![from(principals(&[
                    "spiffe://cluster.local/ns/shop/sa/frontend",
                ]))],
            ),
            policy(
                "shop/deny-frontend",
                Action::Deny,
                vec![from(principals(&["spiffe://cluster.local/ns/shop/*"]))],
            ),
        ],
        ..InboundPolicy::default()
    };
    let d = run(&p, &http_req(Some(id("shop", "frontend")), "GET", "/"));
    assert!(!d.allowed);
    assert_eq!(
        d.by,
        DecidedBy::Policy {
            name: "shop/deny-frontend",
            action: Action::Deny,
            rule: 0
        }
    );
}

#[test]
fn an_allow_policy_denies_everyone_it_does_not_match() {
    let p = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy(
            "shop/catalog-callers",
            Action::Allow,
            vec![from(Source {
                service_accounts: vec!["shop/frontend".into()],
                ..Source::default()
            })],
        )],
        ..InboundPolicy::default()
    };
    assert!(run(&p, &http_req(Some(id("shop", "frontend")), "GET", "/")).allowed);
    let d = run(&p, &http_req(Some(id("shop", "ratings")), "GET", "/"));
    assert!(!d.allowed);
    assert_eq!(d.by, DecidedBy::NoAllowMatched);
    // The default (allow-all) no longer applies to this workload.
    assert!(!run(&p, &http_req(None, "GET", "/")).allowed);
}

#[test]
fn an_allow_policy_without_rules_allows_nobody() {
    let p = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy("shop/nobody", Action::Allow, vec![])],
        ..InboundPolicy::default()
    };
    assert!(!run(&p, &http_req(Some(id("shop", "frontend")), "GET", "/")).allowed);
    // An empty rule matches everything.
    let p = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "shop/everyone",
            Action::Allow,
            vec![Rule::default()],
        )],
        ..InboundPolicy::default()
    };
    assert!(run(&p, &http_req(None, "GET", "/")).allowed);
}

#[test]
fn sources_match_by_principal_namespace_service_account_and_address() {
    type Case = (Source, Option<SpiffeId>, bool);
    let cases: Vec<Case> = vec![
        (
            principals(&["spiffe://cluster.local/ns/shop/sa/frontend"]),
            Some(id("shop", "frontend")),
            true,
        ),
        (
            principals(&["spiffe://cluster.local/ns/shop/sa/frontend"]),
            Some(id("shop", "frontend2")),
            false,
        ),
        (
            principals(&["spiffe://cluster.local/ns/shop/sa/front*"]),
            Some(id("shop", "frontend2")),
            true,
        ),
        (
            principals(&["spiffe://cluster.local/ns/shop/*"]),
            Some(id("other", "frontend")),
            false,
        ),
        (principals(&["*"]), Some(id("other", "x")), true),
        (principals(&["*"]), None, false),
        (
            Source {
                namespaces: vec!["shop".into()],
                ..Source::default()
            },
            Some(id("shop", "x")),
            true,
        ),
        (
            Source {
                namespaces: vec!["shop".into()],
                ..Source::default()
            },
            Some(id("shopping", "x")),
            false,
        ),
        (
            Source {
                namespaces: vec!["shop".into()],
                ..Source::default()
            },
            None,
            false,
        ),
        (
            Source {
                service_accounts: vec!["shop/x".into()],
                ..Source::default()
            },
            Some(id("other", "x")),
            false,
        ),
        (
            Source {
                unauthenticated: true,
                ..Source::default()
            },
            None,
            true,
        ),
        (
            Source {
                unauthenticated: true,
                ..Source::default()
            },
            Some(id("shop", "x")),
            false,
        ),
        (
            Source {
                ip_blocks: vec!["198.18.0.0/24".parse().unwrap()],
                ..Source::default()
            },
            None,
            true,
        ),
        (
            Source {
                ip_blocks: vec!["198.18.1.0/24".parse().unwrap()],
                ..Source::default()
            },
            Some(id("shop", "x")),
            false,
        ),
        // Every field of one source must match.
        (
            Source {
                namespaces: vec!["shop".into()],
                ip_blocks: vec!["198.18.1.0/24".parse().unwrap()],
                ..Source::default()
            },
            Some(id("shop", "x")),
            false,
        ),
    ];
    for (src, peer, want) in cases {
        let p = InboundPolicy {
            default: DefaultPolicy::Deny,
            policies: vec![policy("t/p", Action::Allow, vec![from(src.clone())])],
            ..InboundPolicy::default()
        };
        assert_eq!(
            run(&p, &http_req(peer.clone(), "GET", "/")).allowed,
            want,
            "{src:?} {peer:?}"
        );
    }
}

#[test]
fn a_dual_stack_ipv4_caller_matches_ipv4_blocks() {
    let p = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "t/p",
            Action::Allow,
            vec![from(Source {
                ip_blocks: vec!["198.18.0.0/24".parse().unwrap()],
                ..Source::default()
            })],
        )],
        ..InboundPolicy::default()
    };
    let mut r = tcp_req(None, 80);
    r.ip = Some("::ffff:198.18.0.9".parse().unwrap());
    assert!(run(&p, &r).allowed);
}

#[test]
fn operations_match_ports_paths_methods_hosts_headers_and_grpc() {
    let op = |f: &dyn Fn(&mut Operation)| {
        let mut o = Operation::default();
        f(&mut o);
        o
    };
    type Case = (Operation, (&'static str, &'static str), bool);
    let cases: Vec<Case> = vec![
        (op(&|o| o.ports = vec![8080]), ("GET", "/"), true),
        (op(&|o| o.ports = vec![9090]), ("GET", "/"), false),
        (
            op(&|o| o.paths = vec!["/api/items".into()]),
            ("GET", "/api/items"),
            true,
        ),
        (
            op(&|o| o.paths = vec!["/api/items".into()]),
            ("GET", "/api/items/1"),
            false,
        ),
        (
            op(&|o| o.paths = vec!["/api/*".into()]),
            ("GET", "/api/items/1"),
            true,
        ),
        (
            op(&|o| o.paths = vec!["/api/*".into()]),
            ("GET", "/apix"),
            false,
        ),
        (
            op(&|o| o.paths = vec!["/users/*/orders".into()]),
            ("GET", "/users/7/orders"),
            true,
        ),
        (
            op(&|o| o.paths = vec!["/users/*/orders".into()]),
            ("GET", "/users/7/8/orders"),
            false,
        ),
        (
            op(&|o| o.paths = vec!["/users/*/orders".into()]),
            ("GET", "/users//orders"),
            false,
        ),
        (
            op(&|o| o.paths = vec!["/users/*/orders/*".into()]),
            ("GET", "/users/7/orders/1/x"),
            true,
        ),
        (
            op(&|o| o.methods = vec!["GET".into(), "HEAD".into()]),
            ("HEAD", "/"),
            true,
        ),
        (
            op(&|o| o.methods = vec!["GET".into()]),
            ("POST", "/"),
            false,
        ),
        (op(&|o| o.hosts = vec!["*.shop".into()]), ("GET", "/"), true),
        (
            op(&|o| o.hosts = vec!["catalog.other".into()]),
            ("GET", "/"),
            false,
        ),
        (
            op(&|o| {
                o.headers = vec![ValueMatch {
                    name: "x-tenant".into(),
                    values: vec!["blue*".into()],
                }]
            }),
            ("GET", "/"),
            true,
        ),
        (
            op(&|o| {
                o.headers = vec![ValueMatch {
                    name: "x-missing".into(),
                    values: vec!["*".into()],
                }]
            }),
            ("GET", "/"),
            false,
        ),
        (
            op(&|o| o.grpc = vec!["shop.Catalog/*".into()]),
            ("POST", "/shop.Catalog/Get"),
            true,
        ),
        (
            op(&|o| o.grpc = vec!["shop.Catalog/Get".into()]),
            ("POST", "/shop.Catalog/List"),
            false,
        ),
        (
            op(&|o| o.grpc = vec!["shop.Catalog/*".into()]),
            ("POST", "/shop.CatalogX/Get"),
            false,
        ),
    ];
    for (o, (method, path), want) in cases {
        let p = InboundPolicy {
            default: DefaultPolicy::Deny,
            policies: vec![policy(
                "t/p",
                Action::Allow,
                vec![Rule {
                    to: vec![o.clone()],
                    ..Rule::default()
                }],
            )],
            ..InboundPolicy::default()
        };
        let mut r = http_req(Some(id("shop", "frontend")), method, path);
        r.headers
            .insert("x-tenant", HeaderValue::from_static("blue-7"));
        if path.starts_with("/shop.") {
            r.headers
                .insert("content-type", HeaderValue::from_static("application/grpc"));
        }
        assert_eq!(run(&p, &r).allowed, want, "{o:?} {method} {path}");
    }
    // A gRPC pattern never matches a request that is not gRPC.
    let p = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "t/p",
            Action::Allow,
            vec![Rule {
                to: vec![op(&|o| o.grpc = vec!["shop.Catalog/*".into()])],
                ..Rule::default()
            }],
        )],
        ..InboundPolicy::default()
    };
    assert!(
        !run(
            &p,
            &http_req(Some(id("shop", "f")), "POST", "/shop.Catalog/Get")
        )
        .allowed
    );
}

#[test]
fn tcp_requests_fail_closed_on_http_fields() {
    let http_only = Rule {
        to: vec![Operation {
            paths: vec!["/admin/*".into()],
            ..Operation::default()
        }],
        ..Rule::default()
    };
    // ALLOW: an HTTP-only rule cannot be checked, so it does not allow.
    let allow = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy(
            "t/allow-admin",
            Action::Allow,
            vec![http_only.clone()],
        )],
        ..InboundPolicy::default()
    };
    assert!(!run(&allow, &tcp_req(Some(id("shop", "f")), 5432)).allowed);
    // DENY: the path is ignored, so the whole port is refused.
    let deny = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy("t/deny-admin", Action::Deny, vec![http_only])],
        ..InboundPolicy::default()
    };
    assert!(!run(&deny, &tcp_req(Some(id("shop", "f")), 5432)).allowed);
    // But an HTTP request outside the path passes.
    assert!(run(&deny, &http_req(Some(id("shop", "f")), "GET", "/public")).allowed);
    // Ports alone are known at the TCP level.
    let ports = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "t/pg",
            Action::Allow,
            vec![Rule {
                to: vec![Operation {
                    ports: vec![5432],
                    ..Operation::default()
                }],
                ..Rule::default()
            }],
        )],
        ..InboundPolicy::default()
    };
    assert!(run(&ports, &tcp_req(Some(id("shop", "f")), 5432)).allowed);
    assert!(!run(&ports, &tcp_req(Some(id("shop", "f")), 22)).allowed);
}

#[test]
fn audit_reports_without_changing_the_outcome() {
    let p = InboundPolicy {
        default: DefaultPolicy::MeshAuthenticated,
        policies: vec![policy(
            "shop/audit-ratings",
            Action::Audit,
            vec![from(principals(&[
                "spiffe://cluster.local/ns/shop/sa/ratings",
            ]))],
        )],
        ..InboundPolicy::default()
    };
    let d = run(&p, &http_req(Some(id("shop", "ratings")), "GET", "/"));
    assert!(d.allowed);
    assert_eq!(d.audit, Some(("shop/audit-ratings", 0)));
    assert_eq!(
        run(&p, &http_req(Some(id("shop", "frontend")), "GET", "/")).audit,
        None
    );
}

#[test]
fn conditions_on_headers_and_claims() {
    let header = Rule {
        when: vec![Condition::Header(ValueMatch {
            name: "x-env".into(),
            values: vec!["prod".into()],
        })],
        ..Rule::default()
    };
    let claim = Rule {
        when: vec![Condition::Claim(ValueMatch {
            name: "groups".into(),
            values: vec!["admins".into()],
        })],
        ..Rule::default()
    };
    let allow = |r: Rule| InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy("t/p", Action::Allow, vec![r])],
        ..InboundPolicy::default()
    };
    let mut r = http_req(Some(id("shop", "f")), "GET", "/");
    assert!(!run(&allow(header.clone()), &r).allowed);
    r.headers.insert("x-env", HeaderValue::from_static("prod"));
    assert!(run(&allow(header), &r).allowed);
    // No verified token in a sidecar: an ALLOW on a claim never matches.
    assert!(!run(&allow(claim.clone()), &r).allowed);
    // At the gateway, with claims.
    let claims = serde_json::json!({"groups": ["users", "admins"], "sub": "u1"});
    let p = allow(claim);
    let attrs = Attributes {
        peer: None,
        source_ip: None,
        port: 443,
        http: Some(HttpAttributes {
            method: "GET",
            path: "/",
            host: "shop.example",
            headers: &r.headers,
            claims: Some(&claims),
        }),
    };
    assert!(decide(&p, &attrs).allowed);
}

#[test]
fn patterns() {
    for (p, v, want) in [
        ("*", "", true),
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("ab*", "abcd", true),
        ("*cd", "abcd", true),
        ("*cd", "abce", false),
    ] {
        assert_eq!(value_matches(p, v), want, "{p} {v}");
    }
    for (p, h, want) in [
        ("*.shop", "catalog.shop", true),
        ("*.shop", "CATALOG.Shop", true),
        ("*.shop", ".shop", false),
        ("*.shop", "shop", false),
        ("catalog.shop", "Catalog.shop", true),
    ] {
        assert_eq!(host_matches(p, h), want, "{p} {h}");
    }
    for (p, path, want) in [
        ("/", "/", true),
        ("/*", "/anything/at/all", true),
        ("*", "/x", true),
        ("/a/*/c/*", "/a/b/c/", true),
        ("/a/*/c/*", "/a/b/c", false),
    ] {
        assert_eq!(glob_path(p, path), want, "{p} {path}");
    }
}

#[test]
fn invalid_policies_name_the_field() {
    let cases: Vec<(Policy, &str)> = vec![
        (
            policy("t/p", Action::Allow, vec![from(principals(&["frontend"]))]),
            "rules[0].from[0].principals[0]",
        ),
        (
            policy(
                "t/p",
                Action::Allow,
                vec![from(principals(&["spiffe://td/ns/*/sa/x"]))],
            ),
            "rules[0].from[0].principals[0]",
        ),
        (
            policy(
                "t/p",
                Action::Allow,
                vec![from(Source {
                    unauthenticated: true,
                    namespaces: vec!["shop".into()],
                    ..Source::default()
                })],
            ),
            "rules[0].from[0].unauthenticated",
        ),
        (
            policy(
                "t/p",
                Action::Allow,
                vec![from(Source {
                    service_accounts: vec!["frontend".into()],
                    ..Source::default()
                })],
            ),
            "rules[0].from[0].serviceAccounts[0]",
        ),
        (
            policy(
                "t/p",
                Action::Deny,
                vec![Rule {
                    to: vec![Operation {
                        paths: vec!["/a*b".into()],
                        ..Operation::default()
                    }],
                    ..Rule::default()
                }],
            ),
            "rules[0].to[0].paths[0]",
        ),
        (
            policy(
                "t/p",
                Action::Deny,
                vec![Rule {
                    to: vec![Operation {
                        grpc: vec!["shop.Catalog".into()],
                        ..Operation::default()
                    }],
                    ..Rule::default()
                }],
            ),
            "rules[0].to[0].grpc[0]",
        ),
        (
            policy(
                "t/p",
                Action::Deny,
                vec![Rule {
                    when: vec![Condition::Header(ValueMatch {
                        name: "bad header".into(),
                        values: vec!["x".into()],
                    })],
                    ..Rule::default()
                }],
            ),
            "rules[0].when[0].header.name",
        ),
        (
            policy("t/p", Action::Allow, vec![Rule::default(); MAX_RULES + 1]),
            "rules",
        ),
    ];
    for (p, field) in cases {
        let e = validate_policy(&p).expect_err(field);
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn a_flood_of_policies_on_one_workload_is_refused() {
    let p = InboundPolicy {
        default: DefaultPolicy::MeshAuthenticated,
        policies: vec![policy("t/p", Action::Allow, vec![]); MAX_POLICIES + 1],
        ..InboundPolicy::default()
    };
    assert_eq!(validate_inbound(&p).unwrap_err().field, "policies");
}

#[test]
fn the_wire_form_round_trips_and_is_validated_on_arrival() {
    let p = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "shop/p",
            Action::Audit,
            vec![Rule {
                from: vec![Source {
                    ip_blocks: vec!["198.18.0.0/15".parse().unwrap()],
                    unauthenticated: true,
                    ..Source::default()
                }],
                to: vec![Operation {
                    ports: vec![80],
                    paths: vec!["/a/*".into()],
                    methods: vec!["GET".into()],
                    hosts: vec!["*.shop".into()],
                    headers: vec![ValueMatch {
                        name: "x-a".into(),
                        values: vec!["b".into()],
                    }],
                    grpc: vec!["a.B/*".into()],
                }],
                when: vec![Condition::Claim(ValueMatch {
                    name: "sub".into(),
                    values: vec!["u*".into()],
                })],
            }],
        )],
        peer_authentication: PeerAuthentication {
            mode: Some(ModeFrom {
                mode: MtlsMode::Strict,
                policy: "shop/strict".into(),
            }),
            ports: vec![
                PortMode {
                    port: 2525,
                    mode: MtlsMode::Permissive,
                    policy: "shop/admin".into(),
                },
                PortMode {
                    port: 9090,
                    mode: MtlsMode::Disable,
                    policy: "shop/admin".into(),
                },
            ],
        },
    };
    assert_eq!(from_proto(&to_proto(&p)).unwrap(), p);
    // a_peer_that_lies: ports out of order (the sidecar binary-searches
    // them), a port 0, an unknown mode.
    let mut wire = to_proto(&p);
    wire.peer_authentication.as_mut().unwrap().ports.swap(0, 1);
    assert_eq!(
        from_proto(&wire).unwrap_err().field,
        "peerAuthentication.ports[1].port"
    );
    let mut wire = to_proto(&p);
    wire.peer_authentication.as_mut().unwrap().ports[0].port = 0;
    assert_eq!(
        from_proto(&wire).unwrap_err().field,
        "peerAuthentication.ports[0].port"
    );
    let mut wire = to_proto(&p);
    wire.peer_authentication.as_mut().unwrap().ports[1].mode = 9;
    assert_eq!(
        from_proto(&wire).unwrap_err().field,
        "peerAuthentication.ports[1].mode"
    );
    let mut wire = to_proto(&p);
    wire.policies[0].rules[0].to[0].ports[0] = 70000;
    assert_eq!(
        from_proto(&wire).unwrap_err().field,
        "policies[0].rules[0].to[0].ports[0]"
    );
    let mut wire = to_proto(&p);
    wire.policies[0].rules[0].to[0].paths[0] = "no-slash".into();
    assert_eq!(
        from_proto(&wire).unwrap_err().field,
        "policies[0] (shop/p).rules[0].to[0].paths[0]"
    );
    let mut wire = to_proto(&p);
    wire.default = 42;
    assert_eq!(from_proto(&wire).unwrap_err().field, "default");
}

fn deny_admin() -> InboundPolicy {
    InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy(
            "shop/no-admin",
            Action::Deny,
            vec![Rule {
                to: vec![Operation {
                    paths: vec!["/admin/*".into()],
                    ..Operation::default()
                }],
                ..Rule::default()
            }],
        )],
        ..InboundPolicy::default()
    }
}

#[test]
fn a_deny_on_a_path_holds_against_encoded_doubled_dotted_and_backslashed_forms() {
    let p = deny_admin();
    for path in [
        "/admin/users",
        "/%61dmin/users",
        "/%2561dmin/users", // decoded once: "%61dmin", not admin: passes
        "//admin/users",
        "/public/../admin/users",
        "/./admin/users",
        "/admin%2Fusers",
        "\\admin\\users",
        "/x/%2e%2e/admin/users",
        "/../../admin/users",
    ] {
        let d = run(&p, &http_req(Some(id("shop", "f")), "GET", leak(path)));
        let want_denied = path != "/%2561dmin/users";
        assert_eq!(!d.allowed, want_denied, "{path}");
    }
    assert!(
        run(
            &p,
            &http_req(Some(id("shop", "f")), "GET", "/administrator")
        )
        .allowed
    );
}

#[test]
fn an_allow_on_a_path_cannot_be_stretched_with_dot_segments() {
    let p = InboundPolicy {
        default: DefaultPolicy::Deny,
        policies: vec![policy(
            "shop/public",
            Action::Allow,
            vec![Rule {
                to: vec![Operation {
                    paths: vec!["/public/*".into()],
                    ..Operation::default()
                }],
                ..Rule::default()
            }],
        )],
        ..InboundPolicy::default()
    };
    let f = Some(id("shop", "f"));
    assert!(run(&p, &http_req(f.clone(), "GET", "/public/a")).allowed);
    for path in [
        "/public/../admin",
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
    ] {
        assert!(
            !run(&p, &http_req(f.clone(), "GET", leak(path))).allowed,
            "{path}"
        );
    }
}

#[test]
fn a_deny_on_a_header_holds_for_a_value_that_is_not_utf8() {
    let p = InboundPolicy {
        default: DefaultPolicy::AllowAll,
        policies: vec![policy(
            "shop/no-evil",
            Action::Deny,
            vec![Rule {
                when: vec![Condition::Header(ValueMatch {
                    name: "x-user".into(),
                    values: vec!["evil*".into()],
                })],
                ..Rule::default()
            }],
        )],
        ..InboundPolicy::default()
    };
    let mut r = http_req(Some(id("shop", "f")), "GET", "/");
    r.headers
        .insert("x-user", HeaderValue::from_bytes(b"evil\xff\xfe").unwrap());
    assert!(!run(&p, &r).allowed);
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn normalized_paths() {
    use super::pattern::normalize_path;
    for (input, want) in [
        ("/a/b", "/a/b"),
        ("/a//b/", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/%41%2f", "/A/"),
        ("/a%", "/a%"),
    ] {
        assert_eq!(normalize_path(input), want, "{input}");
    }
}

#[test]
fn the_port_mode_wins_over_the_workload_mode_which_wins_over_the_sidecar_flag() {
    let none = PeerAuthentication::default();
    let m = none.mode_for(8080, MtlsMode::Permissive);
    assert_eq!((m.mode, m.policy), (MtlsMode::Permissive, None));
    assert_eq!(m.to_string(), "PERMISSIVE (the sidecar's --mtls-mode)");
    let set = PeerAuthentication {
        mode: Some(ModeFrom {
            mode: MtlsMode::Strict,
            policy: "shop/strict".into(),
        }),
        ports: vec![PortMode {
            port: 2525,
            mode: MtlsMode::Disable,
            policy: "shop/admin".into(),
        }],
    };
    let m = set.mode_for(8080, MtlsMode::Permissive);
    assert_eq!((m.mode, m.policy), (MtlsMode::Strict, Some("shop/strict")));
    let m = set.mode_for(2525, MtlsMode::Strict);
    assert_eq!((m.mode, m.policy), (MtlsMode::Disable, Some("shop/admin")));
    assert!(m.mode.admits_plaintext());
    assert!(!MtlsMode::Strict.admits_plaintext());
}

#[test]
fn an_admitted_plaintext_caller_is_authorized_like_any_other() {
    let plain = tcp_req(None, 8080);
    let decide_plain = |p: &InboundPolicy| {
        let attrs = Attributes {
            peer: None,
            source_ip: plain.ip,
            port: plain.port,
            http: None,
        };
        let d = decide_plaintext(p, &attrs);
        (d.allowed, d.by.to_string())
    };
    // No ALLOW policy: the mesh-authenticated default admits it (the mode
    // was the opt-in), the other defaults keep their meaning.
    let mut p = InboundPolicy::default();
    assert_eq!(
        decide_plain(&p),
        (
            true,
            "default: mesh-authenticated (plaintext admitted)".into()
        )
    );
    p.default = DefaultPolicy::Deny;
    assert_eq!(decide_plain(&p), (false, "default: deny".into()));
    p.default = DefaultPolicy::AllowAll;
    assert!(decide_plain(&p).0);
    // An ALLOW policy for mesh callers: plaintext does not match it.
    let mesh_only = InboundPolicy {
        policies: vec![policy(
            "shop/mesh",
            Action::Allow,
            vec![from(Source {
                namespaces: vec!["shop".into()],
                ..Source::default()
            })],
        )],
        ..InboundPolicy::default()
    };
    assert_eq!(
        decide_plain(&mesh_only),
        (false, "no ALLOW policy matched".into())
    );
    // A DENY by address holds for plaintext.
    let deny_net = InboundPolicy {
        policies: vec![policy(
            "shop/no-lab",
            Action::Deny,
            vec![from(Source {
                ip_blocks: vec!["198.18.0.0/24".parse().unwrap()],
                ..Source::default()
            })],
        )],
        ..InboundPolicy::default()
    };
    assert!(!decide_plain(&deny_net).0);
    // unauthenticated + address: allowed.
    let allow_plain = InboundPolicy {
        policies: vec![policy(
            "shop/lab",
            Action::Allow,
            vec![from(Source {
                unauthenticated: true,
                ip_blocks: vec!["198.18.0.0/24".parse().unwrap()],
                ..Source::default()
            })],
        )],
        ..InboundPolicy::default()
    };
    assert_eq!(
        decide_plain(&allow_plain),
        (true, "ALLOW policy shop/lab (rule 0)".into())
    );
}
