use super::*;
use mycel_api::protocol::Protocol;

const BASE: &[&str] = &[
    "mycel-proxy",
    "--workload",
    "catalog",
    "--namespace",
    "shop",
    "--service-account",
    "catalog",
];

fn parse(extra: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let args: Vec<&str> = BASE.iter().chain(extra).copied().collect();
    Config::from_args(args, &MapEnv::new(env.iter().copied()))
}

const CONTROLLER: &[&str] = &[
    "--controller",
    "127.0.0.1:15010",
    "--ca-root",
    "/ca.pem",
    "--token-file",
    "/tok",
];

fn ctl(extra: &[&str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = CONTROLLER.to_vec();
    for e in extra {
        v.push(Box::leak(e.to_string().into_boxed_str()));
    }
    v
}

#[test]
fn full_sidecar() {
    let c = parse(
        &ctl(&[
            "--inbound",
            "127.0.0.1:15006",
            "--outbound",
            "127.0.0.1:15001",
            "--admin",
            "127.0.0.1:15000",
            "--label",
            "app=catalog",
            "--label",
            "version=v1",
            "--app-port",
            "http:8080",
            "--app-port",
            "grpc:9090:grpc",
            "--tcp-upstream",
            "127.0.0.1:6379=redis.db:6379",
            "--cert-ttl",
            "1h",
            "--zone",
            "z1",
            "--address",
            "10.0.0.5",
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Sidecar);
    assert_eq!(
        c.source,
        Source::Controller {
            address: "127.0.0.1:15010".into(),
            server_name: names::DEFAULT_CONTROLLER_NAME.into(),
            ca_root: "/ca.pem".into(),
            token: TokenSource::File("/tok".into()),
        }
    );
    assert_eq!(c.workload.labels.len(), 2);
    assert_eq!(
        c.workload.app_ports,
        vec![
            AppPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Http
            },
            AppPort {
                name: "grpc".into(),
                port: 9090,
                protocol: Protocol::Grpc
            },
        ]
    );
    assert_eq!(
        c.tcp_upstreams,
        vec![TcpUpstream {
            listen: "127.0.0.1:6379".parse().unwrap(),
            service: "redis.db".into(),
            port: 6379
        }]
    );
    assert_eq!(c.cert_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(c.mesh_port(), 15006);
    assert_eq!(c.workload.address.to_string(), "10.0.0.5");
    assert_eq!(c.app_host.to_string(), "127.0.0.1");
    assert_eq!(c.trust_domain, "cluster.local");
    let dump = serde_json::to_value(&c).unwrap();
    assert_eq!(dump["source"]["token"], "file:/tok");
    assert_eq!(dump["cert_ttl"], "1h");
}

#[test]
fn token_from_env_is_redacted() {
    let c = parse(
        &[
            "--controller",
            "ctl:15010",
            "--ca-root",
            "/ca.pem",
            "--inbound",
            "127.0.0.1:1",
        ],
        &[("MYCEL_TOKEN", "mycel.secret\n")],
    )
    .unwrap();
    let Source::Controller { token, .. } = &c.source else {
        panic!("controller source expected")
    };
    assert_eq!(token, &TokenSource::Value("mycel.secret".into()));
    let dump = serde_json::to_string(&c).unwrap();
    assert!(!dump.contains("secret"), "{dump}");
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn gateway_routes() {
    let c = parse(
        &[
            "--mode",
            "gateway",
            "--static-config",
            "/s.yaml",
            "--listen",
            "127.0.0.1:8080",
            "--route",
            "/=frontend.shop:80",
            "--route",
            "API.example.com/v1=catalog.shop:8080",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Gateway);
    assert_eq!(
        c.routes,
        vec![
            GatewayRoute {
                host: None,
                prefix: "/".into(),
                service: "frontend.shop".into(),
                port: 80
            },
            GatewayRoute {
                host: Some("api.example.com".into()),
                prefix: "/v1".into(),
                service: "catalog.shop".into(),
                port: 8080
            },
        ]
    );
    assert_eq!(c.mesh_port(), 0);
}

/// (extra args, env, substring the error must contain)
type Case = (
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

#[test]
fn errors_name_the_problem() {
    let cases: Vec<Case> = vec![
        (
            vec!["--inbound", "127.0.0.1:1"],
            vec![],
            "one of --controller or --static-config",
        ),
        (
            ctl(&["--static-config", "/s", "--inbound", "127.0.0.1:1"]),
            vec![],
            "'--controller <HOST:PORT>' cannot be used with '--static-config <PATH>'",
        ),
        (ctl(&[]), vec![], "--inbound is required in sidecar mode"),
        (
            vec![
                "--controller",
                "c:1",
                "--token-file",
                "/t",
                "--inbound",
                "127.0.0.1:1",
            ],
            vec![],
            "--ca-root is required",
        ),
        (
            vec![
                "--controller",
                "c:1",
                "--ca-root",
                "/c",
                "--inbound",
                "127.0.0.1:1",
            ],
            vec![],
            "MYCEL_TOKEN",
        ),
        (
            vec![
                "--controller",
                "nohost",
                "--ca-root",
                "/c",
                "--token-file",
                "/t",
            ],
            vec![],
            "invalid value 'nohost' for '--controller <HOST:PORT>': expected HOST:PORT",
        ),
        (
            ctl(&["--inbound", "localhost:1"]),
            vec![],
            "invalid value 'localhost:1' for '--inbound <ADDR>'",
        ),
        (
            ctl(&["--inbound", "127.0.0.1:1", "--app-port", "http:99999"]),
            vec![],
            "'http:99999' for '--app-port <NAME:PORT[:PROTO]>': port \"99999\"",
        ),
        (
            ctl(&["--inbound", "127.0.0.1:1", "--app-port", "http:80:udp"]),
            vec![],
            "protocol \"udp\"",
        ),
        (
            ctl(&[
                "--inbound",
                "127.0.0.1:1",
                "--app-port",
                "a:80",
                "--app-port",
                "b:80",
            ]),
            vec![],
            "given twice",
        ),
        (
            ctl(&["--inbound", "127.0.0.1:1", "--label", "novalue"]),
            vec![],
            "'novalue' for '--label <KEY=VALUE>': expected KEY=VALUE",
        ),
        (
            ctl(&["--inbound", "127.0.0.1:1", "--cert-ttl", "soon"]),
            vec![],
            "'soon' for '--cert-ttl <DURATION>': not a duration",
        ),
        (
            ctl(&[
                "--inbound",
                "127.0.0.1:1",
                "--tcp-upstream",
                "127.0.0.1:1=redis:6379",
            ]),
            vec![],
            "<name>.<namespace>",
        ),
        (
            ctl(&[
                "--inbound",
                "127.0.0.1:1",
                "--tcp-upstream",
                "x=redis.db:6379",
            ]),
            vec![],
            "listen address \"x\"",
        ),
        (
            ctl(&["--inbound", "127.0.0.1:1", "--address", "host"]),
            vec![],
            "'host' for '--address <IP>': invalid IP address syntax",
        ),
        (
            ctl(&["--mode", "gateway", "--route", "/=a.b:1"]),
            vec![],
            "one of --listen or --tls-listen is required in gateway mode",
        ),
        (
            ctl(&["--mode", "gateway", "--listen", "127.0.0.1:1"]),
            vec![],
            "one of --route or --gateway is required in gateway mode",
        ),
        (
            ctl(&[
                "--mode",
                "gateway",
                "--listen",
                "127.0.0.1:1",
                "--route",
                "/=a.b:1",
                "--gateway",
                "shop-gw",
            ]),
            vec![],
            "the argument '--route <[HOST]/PREFIX=SVC.NS:PORT>' cannot be used with '--gateway <NAME>'",
        ),
        (
            ctl(&[
                "--mode",
                "gateway",
                "--listen",
                "127.0.0.1:1",
                "--gateway",
                "Shop_GW",
            ]),
            vec![],
            "--gateway \"Shop_GW\":",
        ),
        (
            ctl(&[
                "--mode",
                "gateway",
                "--listen",
                "127.0.0.1:1",
                "--route",
                "api=a.b:1",
            ]),
            vec![],
            "must start with '/'",
        ),
        (
            ctl(&[
                "--mode",
                "gateway",
                "--listen",
                "127.0.0.1:1",
                "--route",
                "/x=a.b",
            ]),
            vec![],
            "'/x=a.b' for '--route <[HOST]/PREFIX=SVC.NS:PORT>': target must be SVC.NS:PORT",
        ),
        (
            ctl(&[
                "--mode",
                "gateway",
                "--listen",
                "127.0.0.1:1",
                "--route",
                "h:80/=a.b:1",
            ]),
            vec![],
            "without port",
        ),
        (ctl(&["--mode", "mesh"]), vec![], "invalid value 'mesh'"),
        (ctl(&["--bogus"]), vec![], "unexpected argument '--bogus'"),
    ];
    for (extra, env, want) in cases {
        let err = parse(&extra, &env).expect_err(&format!("{extra:?} should fail"));
        let msg = err.to_string();
        assert!(msg.contains(want), "{extra:?}: {msg:?} lacks {want:?}");
    }
}

#[test]
fn missing_identity_flags_are_cli_errors() {
    let err = Config::from_args(["mycel-proxy", "--static-config", "/s"], &MapEnv::default())
        .unwrap_err();
    assert!(matches!(err, ConfigError::Cli(_)));
    assert!(err.to_string().contains("--workload"));
}

#[test]
fn transparent_mode_flags() {
    let c = parse(
        &ctl(&[
            "--inbound",
            "10.0.0.5:15006",
            "--transparent-outbound",
            "127.0.0.1:15001",
            "--inbound-capture",
            "0.0.0.0:15008",
            "--mtls-mode",
            "strict",
            "--unknown-destination",
            "deny",
            "--subscribe",
            "ratings.shop",
            "--subscribe",
            "db.data",
            "--opaque-port",
            "2525",
        ]),
        &[],
    )
    .unwrap();
    let t = &c.transparent;
    assert_eq!(t.outbound, Some("127.0.0.1:15001".parse().unwrap()));
    assert_eq!(t.inbound_capture, Some("0.0.0.0:15008".parse().unwrap()));
    assert_eq!(t.mtls_mode, MtlsMode::Strict);
    assert_eq!(t.unknown_destination, UnknownDestination::Deny);
    assert_eq!(t.subscribe, vec!["ratings.shop", "db.data"]);
    assert_eq!(t.opaque_ports, vec![2525]);

    // Defaults: explicit mode only, permissive, passthrough.
    let d = parse(&ctl(&["--inbound", "127.0.0.1:15006"]), &[]).unwrap();
    assert_eq!(d.transparent.outbound, None);
    assert_eq!(d.transparent.mtls_mode, MtlsMode::Permissive);
    assert_eq!(
        d.transparent.unknown_destination,
        UnknownDestination::Passthrough
    );
}

#[test]
fn transparent_mode_errors_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--subscribe", "ratings"],
            "'ratings' for '--subscribe <SVC.NS>'",
        ),
        (
            &["--subscribe", "Ratings.shop"],
            "service name \"Ratings\" is not valid",
        ),
        (
            &["--transparent-outbound", "15001"],
            "--transparent-outbound",
        ),
        (&["--inbound-capture", "x:1"], "--inbound-capture"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--inbound", "127.0.0.1:15006"];
        args.extend_from_slice(extra);
        let err = parse(&ctl(&args), &[]).unwrap_err().to_string();
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    for extra in [["--mtls-mode", "loose"], ["--unknown-destination", "drop"]] {
        let mut args = vec!["--inbound", "127.0.0.1:15006"];
        args.extend_from_slice(&extra);
        assert!(matches!(parse(&ctl(&args), &[]), Err(ConfigError::Cli(_))));
    }
}

#[test]
fn worker_threads_default_by_mode_and_are_checked() {
    let sidecar = parse(&ctl(&["--inbound", "127.0.0.1:1"]), &[]).unwrap();
    assert_eq!(sidecar.worker_threads, 1);
    let four = parse(
        &ctl(&["--inbound", "127.0.0.1:1", "--worker-threads", "4"]),
        &[],
    )
    .unwrap();
    assert_eq!(four.worker_threads, 4);
    let gateway = parse(
        &ctl(&[
            "--mode",
            "gateway",
            "--listen",
            "127.0.0.1:8080",
            "--route",
            "/=a.b:80",
        ]),
        &[],
    )
    .unwrap();
    assert!(gateway.worker_threads >= 1);
    for bad in ["0", "many", "1000"] {
        let err = parse(
            &ctl(&["--inbound", "127.0.0.1:1", "--worker-threads", bad]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--worker-threads") && err.contains(bad),
            "{err}"
        );
    }
}

#[test]
fn subscription_limits_and_capture_ports() {
    let d = parse(&ctl(&["--inbound", "127.0.0.1:15006"]), &[]).unwrap();
    assert_eq!(d.subscriptions.max, 1000);
    assert_eq!(d.subscriptions.idle, Duration::from_secs(600));
    assert!(!d.transparent.capture_all_ports);
    let c = parse(
        &ctl(&[
            "--inbound",
            "127.0.0.1:15006",
            "--max-subscriptions",
            "50",
            "--subscription-idle",
            "90s",
            "--capture-all-ports",
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(c.subscriptions.max, 50);
    assert_eq!(c.subscriptions.idle, Duration::from_secs(90));
    assert!(c.transparent.capture_all_ports);
    for (flag, value) in [
        ("--max-subscriptions", "0"),
        ("--max-subscriptions", "many"),
        ("--subscription-idle", "soon"),
        ("--subscription-idle", "0s"),
    ] {
        let err = parse(&ctl(&["--inbound", "127.0.0.1:15006", flag, value]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(flag.trim_start_matches('-')),
            "{flag} {value}: {err}"
        );
    }
}

#[test]
fn limits_default_and_parse() {
    let base = ["--inbound", "127.0.0.1:1"];
    let d = parse(&ctl(&base), &[]).unwrap().limits;
    assert_eq!(d, Limits::default());
    assert_eq!(d.max_header_bytes, 64 * 1024);
    assert_eq!(d.shutdown_grace, Duration::from_secs(5));
    let c = parse(&ctl(&base), &[]).unwrap();
    assert_eq!(c.memory_release_interval, Duration::from_secs(30));
    let mut release = base.to_vec();
    release.extend(["--memory-release-interval", "500ms"]);
    assert_eq!(
        parse(&ctl(&release), &[]).unwrap().memory_release_interval,
        Duration::from_millis(500)
    );
    let mut args = base.to_vec();
    args.extend([
        "--max-connections",
        "10",
        "--max-header-bytes",
        "32768",
        "--header-read-timeout",
        "2s",
        "--idle-timeout",
        "500ms",
        "--request-timeout",
        "off",
        "--mesh-keepalive",
        "5s",
        "--app-pool-idle-timeout",
        "1m",
        "--shutdown-grace",
        "0s",
    ]);
    let l = parse(&ctl(&args), &[]).unwrap().limits;
    assert_eq!(
        l,
        Limits {
            max_connections: 10,
            max_header_bytes: 32768,
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(500),
            request_timeout: None,
            mesh_keepalive: Duration::from_secs(5),
            app_pool_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::ZERO,
        }
    );
}

#[test]
fn bad_limits_name_the_flag() {
    let cases = [
        ("--max-connections", "0"),
        ("--max-connections", "lots"),
        ("--max-header-bytes", "100"),
        ("--max-header-bytes", "64KiB"),
        ("--header-read-timeout", "0s"),
        ("--idle-timeout", "forever"),
        ("--request-timeout", "10ms"),
        ("--mesh-keepalive", "2d"),
        ("--shutdown-grace", "1h"),
        // A zero period would make the release timer's interval panic.
        ("--memory-release-interval", "0s"),
        ("--memory-release-interval", "2d"),
    ];
    for (flag, bad) in cases {
        let err = parse(&ctl(&["--inbound", "127.0.0.1:1", flag, bad]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(flag) && err.contains(bad),
            "{flag} {bad}: {err}"
        );
    }
}

#[test]
fn missing_settings_are_typed() {
    let cases: Vec<(Vec<&'static str>, Needed, When)> = vec![
        (
            vec!["--inbound", "127.0.0.1:1"],
            Needed::OneOf(names::CONTROLLER, names::STATIC_CONFIG),
            When::Always,
        ),
        (
            ctl(&[]),
            Needed::Flag(names::INBOUND),
            When::InMode(Mode::Sidecar),
        ),
        (
            ctl(&["--mode", "gateway", "--listen", "127.0.0.1:1"]),
            Needed::OneOf(names::ROUTE, names::GATEWAY),
            When::InMode(Mode::Gateway),
        ),
        (
            vec![
                "--controller",
                "c:1",
                "--ca-root",
                "/c",
                "--inbound",
                "127.0.0.1:1",
            ],
            Needed::FlagOrEnv {
                flag: names::TOKEN_FILE,
                env: names::ENV_TOKEN,
            },
            When::With {
                flag: names::CONTROLLER,
                because: None,
            },
        ),
    ];
    for (extra, want_needed, want_when) in cases {
        match parse(&extra, &[]) {
            Err(ConfigError::Missing { needed, when }) => {
                assert_eq!((needed, when), (want_needed, want_when), "{extra:?}")
            }
            other => panic!("{extra:?}: {other:?}"),
        }
    }
}

#[test]
fn repeated_label_names_flag_and_value() {
    let err = parse(
        &ctl(&[
            "--inbound",
            "127.0.0.1:1",
            "--label",
            "app=a",
            "--label",
            "app=b",
        ]),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--label \"app=b\": label \"app\" given twice"
    );
}

#[test]
fn init_is_a_subcommand_only_in_first_place() {
    let env = MapEnv::default();
    let init = Invocation::from_args(["mycel-proxy", "init", "--dry-run"], &env).unwrap();
    assert!(matches!(init, Invocation::Init(_)), "{init:?}");
    // A flag value spelled `init` is a value.
    let args: Vec<&str> = [
        "mycel-proxy",
        "--workload",
        "init",
        "--namespace",
        "shop",
        "--service-account",
        "sa",
        "--static-config",
        "/s",
        "--inbound",
        "127.0.0.1:1",
    ]
    .to_vec();
    match Invocation::from_args(args, &env).unwrap() {
        Invocation::Run(c) => assert_eq!(c.workload.name, "init"),
        other => panic!("{other:?}"),
    }
    // Proxy flags and the subcommand do not mix.
    let mixed = Invocation::from_args(["mycel-proxy", "--admin", "127.0.0.1:1", "init"], &env);
    assert!(matches!(mixed, Err(ConfigError::Cli(_))), "{mixed:?}");
}

#[test]
fn help_subcommand_prints_help_like_the_other_binaries() {
    let env = MapEnv::default();
    for line in [
        vec!["mycel-proxy", "help"],
        vec!["mycel-proxy", "help", "init"],
        vec!["mycel-proxy", "init", "--help"],
    ] {
        match Invocation::from_args(line.clone(), &env) {
            Err(ConfigError::Cli(e)) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{line:?}");
                assert!(!e.use_stderr(), "{line:?}");
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }
}

#[test]
fn every_flag_has_a_help_line() {
    let mut cmd = command();
    cmd.build();
    let mut commands = vec![&cmd];
    commands.extend(cmd.get_subcommands());
    for c in commands {
        for arg in c.get_arguments() {
            assert!(
                arg.get_help().is_some() || arg.get_long_help().is_some(),
                "{} --{:?} has no help line",
                c.get_name(),
                arg.get_long()
            );
        }
    }
}

#[test]
fn reference_page_matches_the_flags() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/mycel-proxy.md");
    let page = mycel_api::clidoc::Page {
        command: command(),
        env: ENVIRONMENT,
        test: "cargo test -p mycel-sidecar --lib reference_page",
    };
    if let Err(e) = mycel_api::clidoc::check(&path, page) {
        panic!("{e}");
    }
}

#[test]
fn gateway_https_flags_parse_and_need_each_other() {
    let gw = |extra: &[&str]| {
        let mut v = vec![
            "--mode",
            "gateway",
            "--static-config",
            "/s.yaml",
            "--route",
            "/=frontend.shop:80",
        ];
        v.extend_from_slice(extra);
        parse(&v, &[])
    };
    let c = gw(&[
        "--listen",
        "127.0.0.1:8080",
        "--tls-listen",
        "127.0.0.1:8443",
        "--tls-cert",
        "/a.crt,/a.key",
        "--tls-cert",
        " /b.crt , /b.key ",
        "--tls-client-ca",
        "/partners.pem",
        "--tls-reload-interval",
        "30s",
        "--https-redirect",
    ])
    .unwrap();
    let https = c.https.expect("https");
    assert_eq!(https.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(
        https.certs,
        [
            crate::gateway::tls::CertFiles {
                cert: "/a.crt".into(),
                key: "/a.key".into()
            },
            crate::gateway::tls::CertFiles {
                cert: "/b.crt".into(),
                key: "/b.key".into()
            }
        ]
    );
    assert_eq!(https.client_ca, Some("/partners.pem".into()));
    assert_eq!(https.reload_interval, Duration::from_secs(30));
    assert!(https.redirect);

    // HTTPS alone is a gateway.
    let c = gw(&[
        "--tls-listen",
        "127.0.0.1:8443",
        "--tls-cert",
        "/a.crt,/a.key",
    ])
    .unwrap();
    assert_eq!(c.listen, None);
    assert!(!c.https.unwrap().redirect);

    let with = |flag| When::With {
        flag,
        because: None,
    };
    let missing: Vec<(Vec<&str>, Needed, When)> = vec![
        (
            vec![],
            Needed::OneOf(names::LISTEN, names::TLS_LISTEN),
            When::InMode(Mode::Gateway),
        ),
        (
            vec!["--tls-listen", "127.0.0.1:8443"],
            Needed::AtLeastOne(names::TLS_CERT),
            with(names::TLS_LISTEN),
        ),
        (
            vec!["--listen", "127.0.0.1:1", "--tls-cert", "/a.crt,/a.key"],
            Needed::Flag(names::TLS_LISTEN),
            with(names::TLS_CERT),
        ),
        (
            vec!["--listen", "127.0.0.1:1", "--tls-client-ca", "/ca.pem"],
            Needed::Flag(names::TLS_LISTEN),
            with(names::TLS_CLIENT_CA),
        ),
        (
            vec!["--listen", "127.0.0.1:1", "--https-redirect"],
            Needed::Flag(names::TLS_LISTEN),
            with(names::HTTPS_REDIRECT),
        ),
        (
            vec![
                "--tls-listen",
                "127.0.0.1:8443",
                "--tls-cert",
                "/a.crt,/a.key",
                "--https-redirect",
            ],
            Needed::Flag(names::LISTEN),
            When::With {
                flag: names::HTTPS_REDIRECT,
                because: Some("it is the listener that redirects"),
            },
        ),
    ];
    for (extra, want_needed, want_when) in missing {
        match gw(&extra) {
            Err(ConfigError::Missing { needed, when }) => {
                assert_eq!((needed, when), (want_needed, want_when), "{extra:?}")
            }
            other => panic!("{extra:?}: {other:?}"),
        }
    }

    for (extra, want) in [
        (vec!["--tls-cert", "/a.crt"], "CERT_PEM,KEY_PEM"),
        (vec!["--tls-cert", "/a.crt,"], "CERT_PEM,KEY_PEM"),
        (vec!["--tls-reload-interval", "10ms"], "between 1s and 1h"),
        (vec!["--tls-reload-interval", "soon"], "soon"),
    ] {
        let mut all = vec!["--tls-listen", "127.0.0.1:8443"];
        all.extend(extra.iter().copied());
        let e = gw(&all).unwrap_err().to_string();
        assert!(e.contains(want), "{extra:?}: {e}");
    }
}

#[test]
fn a_gateway_following_a_gateway_may_take_all_its_certificates_from_it() {
    let gateway = |extra: &[&str]| {
        let mut v = ctl(&["--mode", "gateway", "--tls-listen", "127.0.0.1:8443"]);
        v.extend(extra.iter().copied());
        parse(&v, &[])
    };
    let c = gateway(&["--gateway", "shop-gw"]).unwrap();
    let https = c.https.expect("https");
    assert!(https.certs.is_empty(), "{:?}", https.certs);
    assert_eq!(c.gateway.as_deref(), Some("shop-gw.shop"));
    // Files still come first when given.
    let c = gateway(&["--gateway", "shop-gw", "--tls-cert", "/a.crt,/a.key"]).unwrap();
    assert_eq!(c.https.expect("https").certs.len(), 1);

    // Without --gateway nothing brings certificates: refused as before.
    let e = gateway(&["--route", "/=frontend.shop:80"]).unwrap_err();
    match &e {
        ConfigError::Missing { needed, when } => assert_eq!(
            (needed, when),
            (
                &Needed::AtLeastOne(names::TLS_CERT),
                &When::With {
                    flag: names::TLS_LISTEN,
                    because: None
                }
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        parse(
            &[
                "--mode",
                "gateway",
                "--static-config",
                "/s.yaml",
                "--route",
                "/=frontend.shop:80",
                "--tls-listen",
                "127.0.0.1:8443",
            ],
            &[]
        )
        .unwrap_err()
        .to_string(),
        "the same message as with a static config"
    );
}
