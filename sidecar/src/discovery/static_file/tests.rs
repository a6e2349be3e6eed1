use super::*;

const GOOD: &str = r#"
identity: {cert: certs/chain.pem, key: /abs/key.pem, bundle: roots.pem}
services:
  - name: catalog
    namespace: shop
    ports:
      - {name: http, port: 80, targetPort: 8080, protocol: http}
      - {name: grpc, port: 9090, protocol: grpc}
    vips: [10.96.0.10]
    endpoints:
      - {address: 127.0.0.1, meshPort: 15006, spiffeId: "spiffe://cluster.local/ns/shop/sa/catalog", workload: catalog-1, zone: z1}
  - name: reviews
    namespace: shop
"#;

#[test]
fn parses_a_complete_snapshot() {
    let c = parse(GOOD, "s.yaml", Path::new("/etc/mycel")).unwrap();
    assert_eq!(c.identity.cert, PathBuf::from("/etc/mycel/certs/chain.pem"));
    assert_eq!(c.identity.key, PathBuf::from("/abs/key.pem"));
    assert_eq!(c.identity.bundle, PathBuf::from("/etc/mycel/roots.pem"));
    let Some(ServiceState::Known {
        service, endpoints, ..
    }) = c.snapshot.service("catalog.shop")
    else {
        panic!("catalog should be known")
    };
    assert_eq!(service.ports[1].target_port, 9090);
    assert_eq!(service.ports[1].protocol, Protocol::Grpc);
    assert_eq!(endpoints[0].mesh_addr, "127.0.0.1:15006".parse().unwrap());
    assert_eq!(endpoints[0].zone, "z1");
    assert!(
        matches!(c.snapshot.service("reviews.shop"), Some(ServiceState::Known { endpoints, .. }) if endpoints.is_empty())
    );
}

#[test]
fn errors_name_the_field() {
    let id = "identity: {cert: a, key: b, bundle: c}\n";
    let cases = [
        ("services: []\n", "identity"),
        (
            "identity: {cert: a, key: b}\n",
            "missing field `bundle`",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, color: red}}]"),
            "unknown field `color`",
        ),
        (
            &format!("{id}services: [{{name: A, namespace: b}}]"),
            "services[0].name",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b}}, {{name: x, namespace: 'b.c'}}]"),
            "services[1].namespace",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, ports: [{{port: 0}}]}}]"),
            "services[0].ports[0].port",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, ports: [{{port: 80, targetPort: 70000}}]}}]"),
            "services[0].ports[0].targetPort",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, ports: [{{port: 80, protocol: udp}}]}}]"),
            "services[0].ports[0].protocol",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, vips: [x]}}]"),
            "services[0].vips[0]",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, endpoints: [{{address: h, meshPort: 1, spiffeId: 'spiffe://t/ns/a/sa/b'}}]}}]"),
            "services[0].endpoints[0].address",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b, endpoints: [{{address: 127.0.0.1, meshPort: 1, spiffeId: nope}}]}}]"),
            "services[0].endpoints[0].spiffeId",
        ),
        (
            &format!("{id}services: [{{name: a, namespace: b}}, {{name: a, namespace: b}}]"),
            "listed twice",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text, "s.yaml", Path::new("/"))
            .expect_err(text)
            .to_string();
        assert!(err.starts_with("s.yaml: "), "{err}");
        assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
    }
}

/// The example that docs/static-config.md documents must stay valid.
#[test]
fn documented_example_parses() {
    let text = include_str!("../../../../examples/static-config.yaml");
    let c = parse(text, "examples/static-config.yaml", Path::new("/srv/mycel")).unwrap();
    assert_eq!(
        c.identity.cert,
        PathBuf::from("/srv/mycel/certs/frontend-chain.pem")
    );
    let Some(ServiceState::Known {
        service, endpoints, ..
    }) = c.snapshot.service("catalog.shop")
    else {
        panic!("catalog should be known")
    };
    assert_eq!(service.ports[0].target_port, 8080);
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0].workload, "catalog-1");
    assert!(
        matches!(c.snapshot.service("reviews.shop"), Some(ServiceState::Known { service, .. }) if service.ports[0].target_port == 9090 && service.ports[0].protocol == Protocol::Grpc)
    );
    assert!(
        matches!(c.snapshot.service("postgres.shop"), Some(ServiceState::Known { endpoints, .. }) if endpoints.is_empty())
    );
    assert_eq!(c.snapshot.vips.len(), 1);
}
