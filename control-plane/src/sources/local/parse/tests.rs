use std::net::IpAddr;

use super::*;
use crate::model::{Protocol, ServiceKey, ServicePort};

fn err(text: &str) -> String {
    parse_mesh_config(text).unwrap_err().to_string()
}

const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: catalog
  namespace: shop
spec:
  selector:
    app: catalog
  clusterIP: 10.96.0.10
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector: {app: reviews, version: "2"}
  clusterIPs: ["10.96.0.11", "fd00::11"]
  ports:
    - name: grpc
      port: 9090
      appProtocol: grpc
    - name: raw
      port: 6379
      targetPort: 16379
      appProtocol: tcp
---
"#;

#[test]
fn parses_full_example() {
    let svcs = parse_mesh_config(SHOP).unwrap().services;
    assert_eq!(svcs.len(), 2);
    let c = &svcs[0];
    assert_eq!((c.name.as_str(), c.namespace.as_str()), ("catalog", "shop"));
    assert_eq!(c.selector.get("app").map(String::as_str), Some("catalog"));
    assert_eq!(c.vips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        c.ports,
        vec![ServicePort {
            name: "http".into(),
            port: 80,
            target_port: 8080,
            protocol: Protocol::Http
        }]
    );
    let r = &svcs[1];
    assert_eq!(r.namespace, "default");
    assert_eq!(r.selector.get("version").map(String::as_str), Some("2"));
    assert_eq!(r.vips.len(), 2);
    assert_eq!(r.ports[0].target_port, 9090);
    assert_eq!(r.ports[0].protocol, Protocol::Grpc);
    assert_eq!(r.ports[1].protocol, Protocol::Tcp);
    assert_eq!(r.ports[1].target_port, 16379);
}

#[test]
fn empty_file_is_no_services() {
    assert_eq!(parse_mesh_config("").unwrap().services, vec![]);
    assert_eq!(parse_mesh_config("---\n---\n").unwrap().services, vec![]);
}

#[test]
fn headless_service_has_no_vip() {
    let svcs = parse_mesh_config(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: None, ports: [{port: 80}]}\n",
    )
    .unwrap()
    .services;
    assert!(svcs[0].vips.is_empty());
    assert_eq!(svcs[0].ports[0].name, "");
}

#[test]
fn errors_name_document_and_field() {
    let base = |spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: ns}}\nspec: {spec}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n".into(),
            "document 1: unsupported kind \"Deployment\"",
        ),
        (
            "kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n".into(),
            "document 1: apiVersion: is missing",
        ),
        (
            "apiVersion: v2\nkind: Service\nmetadata: {name: a}\n".into(),
            "document 1: apiVersion: must be v1",
        ),
        (
            "apiVersion: v1\nmetadata: {name: a}\n".into(),
            "document 1: kind: is missing",
        ),
        ("- a\n- b\n".into(), "document 1: must be a mapping"),
        (
            "apiVersion: v1\nkind: Service\nspec: {}\n".into(),
            "document 1: metadata: is missing",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {}\n".into(),
            "document 1: metadata.name: is missing",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\n".into(),
            "metadata.name: \"Bad_Name\" is not a valid service name",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: 1abc}\n".into(),
            "metadata.name: \"1abc\" is not a valid service name",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a.b}\n".into(),
            "metadata.name: \"a.b\"",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: Shop}\n".into(),
            "metadata.namespace: \"Shop\"",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n".into(),
            "document 1: spec: is missing",
        ),
        (base("{}"), "spec.ports: is missing"),
        (base("{ports: []}"), "spec.ports: is empty"),
        (
            base("{ports: [{port: 0}]}"),
            "spec.ports[0].port: 0 is not a port number",
        ),
        (
            base("{ports: [{port: 70000}]}"),
            "spec.ports[0].port: 70000 is not a port number",
        ),
        (
            base("{ports: [{port: -1}]}"),
            "spec.ports[0].port: -1 is not a port number",
        ),
        (
            base("{ports: [{port: http}]}"),
            "spec.ports[0].port: invalid type: string \"http\"",
        ),
        (
            base("{ports: [{name: x}]}"),
            "spec.ports[0].port: is missing",
        ),
        (
            base("{ports: [{port: 80, targetPort: web}]}"),
            "spec.ports[0].targetPort: \"web\": named target ports are not supported",
        ),
        (
            base("{ports: [{port: 80, targetPort: 99999}]}"),
            "spec.ports[0].targetPort: 99999 is not a port number",
        ),
        (
            base("{ports: [{port: 80, appProtocol: udp}]}"),
            "spec.ports[0].appProtocol: \"udp\" is not one of http, http2, grpc, tcp",
        ),
        (
            base("{ports: [{port: 80, protocol: UDP}]}"),
            "spec.ports[0].protocol: \"UDP\" is not supported",
        ),
        (
            base("{ports: [{name: a, port: 80}, {port: 81}]}"),
            "spec.ports[1].name: is required",
        ),
        (
            base("{ports: [{name: a, port: 80}, {name: a, port: 81}]}"),
            "spec.ports[1].name: port name \"a\" is used twice",
        ),
        (
            base("{ports: [{name: a, port: 80}, {name: b, port: 80}]}"),
            "spec.ports[1].port: port 80 is declared twice",
        ),
        (
            base("{ports: [{name: A_B, port: 80}]}"),
            "spec.ports[0].name: \"A_B\" is not a valid port name",
        ),
        (
            base("{clusterIP: 10.0.0.300, ports: [{port: 80}]}"),
            "spec.clusterIP: \"10.0.0.300\" is not an IP address",
        ),
        (
            base("{clusterIPs: [10.0.0.1, nope], ports: [{port: 80}]}"),
            "spec.clusterIPs[1]: \"nope\" is not an IP address",
        ),
        (
            base("{clusterIPs: 10.0.0.1, ports: [{port: 80}]}"),
            "spec.clusterIPs: invalid type: string",
        ),
        (
            base("{selector: [a], ports: [{port: 80}]}"),
            "spec.selector: invalid type: sequence",
        ),
        (
            base("{selector: {app: [x]}, ports: [{port: 80}]}"),
            "spec.selector.app: invalid type: sequence",
        ),
        (base("{ports: {port: 80}}"), "spec.ports: invalid type: map"),
        (base("[1]"), "spec: invalid type: sequence"),
        (
            base("{ports: [{port: 80, targetport: 8080}]}"),
            "spec.ports[0].targetport: unknown field",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, labelz: {}}\nspec: {ports: [{port: 80}]}\n".into(),
            "metadata.labelz: unknown field",
        ),
        (
            base("{selector: {version: 2}, ports: [{port: 80}]}"),
            "spec.selector.version: invalid type: integer",
        ),
        ("a: [unclosed\n".into(), "invalid YAML"),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(
            got.contains(want),
            "for\n{text}\nwant {want:?}\ngot  {got:?}"
        );
    }
}

#[test]
fn error_names_later_document_index() {
    let text = format!("{SHOP}\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
    let e = parse_mesh_config(&text).unwrap_err();
    assert_eq!(
        e,
        ParseError::Document {
            document: 3,
            message: "unsupported kind \"ConfigMap\" (mesh.yaml reads kind: Service, Secret, TrafficPolicy, GatewayPolicy, AuthorizationPolicy, PeerAuthentication, Gateway, HTTPRoute and GRPCRoute)".into()
        }
    );
}

#[test]
fn duplicate_services_name_both_documents() {
    let one = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n";
    let e = err(&format!("{one}---\n{one}"));
    assert_eq!(
        e,
        "document 2: service a.x is already declared in document 1"
    );
}

#[test]
fn same_name_in_other_namespace_is_fine() {
    let a = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n";
    let b = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: z}\nspec: {ports: [{port: 80}]}\n";
    assert_eq!(
        parse_mesh_config(&format!("{a}---\n{b}"))
            .unwrap()
            .services
            .len(),
        2
    );
}

#[test]
fn label_names() {
    for (s, label, svc) in [
        ("abc", true, true),
        ("a-b-1", true, true),
        ("1ab", true, false),
        ("-ab", false, false),
        ("ab-", false, false),
        ("", false, false),
        ("aB", false, false),
        (&"a".repeat(64), false, false),
    ] {
        assert_eq!(is_dns_label(s), label, "{s}");
        assert_eq!(is_service_name(s), svc, "{s}");
    }
}

const RATINGS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 81}]
"#;

fn with_policy(policy: &str) -> String {
    format!("{RATINGS}---\n{policy}")
}

#[test]
fn traffic_policies_attach_to_their_service_and_port() {
    let text = with_policy(
        r#"
apiVersion: mycel.io/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings, namespace: shop}
spec:
  targetRef: {kind: Service, name: ratings}
  retry: {attempts: 3, retryOn: [5xx]}
---
apiVersion: mycel.io/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings-admin, namespace: shop}
spec:
  targetRef: {kind: Service, name: ratings, port: 81}
  timeouts: {request: 1s}
"#,
    );
    let config = parse_mesh_config(&text).unwrap();
    assert_eq!(config.services.len(), 1);
    let key = ServiceKey::new("ratings", "shop").unwrap();
    let p = &config.policies[&key];
    assert_eq!(p.sources, vec!["shop/ratings", "shop/ratings-admin"]);
    assert_eq!(
        p.service_wide
            .as_ref()
            .unwrap()
            .retry
            .as_ref()
            .unwrap()
            .attempts,
        3
    );
    assert_eq!(
        p.ports[&81].timeouts.as_ref().unwrap().request.as_deref(),
        Some("1s")
    );
}

#[test]
fn invalid_traffic_policies_name_document_and_field() {
    let policy = |spec: &str| {
        with_policy(&format!(
            "apiVersion: mycel.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p, namespace: shop}}\nspec: {spec}\n"
        ))
    };
    let cases = [
        (
            policy("{targetRef: {kind: Service, name: ratings}, retry: {attempts: 11}}"),
            "document 2: spec.retry.attempts: 11 is out of range (2-10)",
        ),
        (
            policy("{targetRef: {kind: Service, name: ratings}, retry: {attemps: 3}}"),
            "document 2: spec.retry.attemps: unknown field (not part of a mycel.io/v1alpha1 TrafficPolicy)",
        ),
        (
            policy("{targetRef: {kind: Service, name: ratings}, loadBalancer: {algorithm: Random}}"),
            "document 2: spec.loadBalancer.algorithm: unknown variant `Random`",
        ),
        (
            policy("{targetRef: {kind: Service, name: nope}}"),
            "document 2: spec.targetRef.name: no Service \"nope\" in namespace \"shop\" in this file",
        ),
        (
            policy("{targetRef: {kind: Service, name: ratings, port: 9}}"),
            "document 2: spec.targetRef.port: service ratings.shop has no port 9 (it has 80, 81)",
        ),
        (
            policy("{targetRef: {kind: Service, name: ratings}, timeouts: {request: 5 seconds}}"),
            "document 2: spec.timeouts.request: \"5 seconds\" is not a duration",
        ),
        (
            with_policy("apiVersion: mycel.io/v1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec: {targetRef: {kind: Service, name: ratings}}\n"),
            "document 2: apiVersion: must be mycel.io/v1alpha1 for kind TrafficPolicy, found \"mycel.io/v1\"",
        ),
        (
            format!(
                "{}---\n{}",
                policy("{targetRef: {kind: Service, name: ratings}}"),
                "apiVersion: mycel.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: q, namespace: shop}\nspec: {targetRef: {kind: Service, name: ratings}}\n"
            ),
            "document 3: service ratings.shop already has a traffic policy (document 2)",
        ),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}

fn authz_doc(name: &str, spec: &str) -> String {
    format!("---\napiVersion: mycel.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n")
}

#[test]
fn authorization_policies_are_read_sorted_and_checked() {
    let text = format!(
        "{SHOP}{}{}",
        authz_doc("b", "{selector: {matchLabels: {app: ratings}}, rules: [{from: [{serviceAccounts: [shop/reviews]}]}]}"),
        authz_doc("a", "{action: DENY, rules: [{from: [{namespaces: [evil]}]}]}")
    );
    let cfg = parse_mesh_config(&text).unwrap();
    let names: Vec<&str> = cfg.authz.iter().map(|p| p.policy.name.as_str()).collect();
    assert_eq!(names, ["shop/a", "shop/b"]);

    for (extra, want) in [
        (
            authz_doc("p", "{rules: [{from: [{principals: [reviews]}]}]}"),
            "spec.rules[0].from[0].principals[0]",
        ),
        (authz_doc("p", "{action: MAYBE}"), "MAYBE"),
        (
            format!("{}{}", authz_doc("p", "{}"), authz_doc("p", "{}")),
            "AuthorizationPolicy shop/p is already declared in document",
        ),
    ] {
        let got = err(&format!("{SHOP}{extra}"));
        assert!(got.contains(want), "want {want:?} in {got:?}");
    }
}

fn peer_doc(name: &str, spec: &str) -> String {
    format!("---\napiVersion: mycel.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n")
}

#[test]
fn peer_authentications_are_read_with_numeric_port_keys_and_checked() {
    use mycel_api::authz::MtlsMode;
    let text = format!(
        "{SHOP}{}{}",
        peer_doc(
            "strict",
            "{mtls: {mode: STRICT}, portLevelMtls: {9090: {mode: PERMISSIVE}}}"
        ),
        peer_doc(
            "db",
            "{selector: {matchLabels: {app: db}}, portLevelMtls: {\"5432\": {mode: DISABLE}}}"
        )
    );
    let cfg = parse_mesh_config(&text).unwrap();
    let names: Vec<&str> = cfg.peer_auth.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["shop/db", "shop/strict"]);
    assert_eq!(cfg.peer_auth[1].mode, Some(MtlsMode::Strict));
    assert_eq!(cfg.peer_auth[1].ports[&9090], MtlsMode::Permissive);
    assert_eq!(cfg.peer_auth[0].ports[&5432], MtlsMode::Disable);

    for (extra, want) in [
        (peer_doc("p", "{mtls: {mode: MAYBE}}"), "MAYBE"),
        (
            peer_doc("p", "{portLevelMtls: {web: {mode: STRICT}}}"),
            "spec.portLevelMtls[\"web\"]",
        ),
        (
            peer_doc("p", "{portLevelMtls: {80: {}}}"),
            "needs STRICT, PERMISSIVE or DISABLE",
        ),
        (
            peer_doc("p", "{mtls: {mode: STRICT}, extra: 1}"),
            "spec.extra",
        ),
        (
            format!("{}{}", peer_doc("p", "{}"), peer_doc("p", "{}")),
            "PeerAuthentication shop/p is already declared in document",
        ),
    ] {
        let got = err(&format!("{SHOP}{extra}"));
        assert!(got.contains(want), "want {want:?} in {got:?}");
    }
}

/// A self-signed certificate for `host` as a Secret document of namespace
/// shop, its PEM in stringData as a hand-written manifest would have it.
fn tls_secret(name: &str, host: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}

fn https_gateway(annotations: &str, refs: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: shop{annotations}}}
spec:
  gatewayClassName: mycel
  listeners:
    - {{name: http, port: 80, protocol: HTTP}}
    - {{name: https, port: 443, protocol: HTTPS, hostname: api.shop.example, tls: {{certificateRefs: [{refs}]}}}}
"#
    )
}

const API_ROUTE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{name: web, sectionName: https}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"#;

#[test]
fn an_https_listener_gets_its_secrets_for_the_gateways_service_account() {
    let text = format!(
        "{}---\n{}---\n{API_ROUTE}",
        tls_secret("api-cert", "api.shop.example"),
        https_gateway(
            ", annotations: {mycel.io/gateway-service-account: edge}",
            "{name: api-cert}"
        )
    );
    let cfg = parse_mesh_config(&text).unwrap();
    let web = ServiceKey::parse("web.shop").unwrap();
    let certs = &cfg.gateway_certificates[&web];
    assert_eq!(certs.service_account, "edge");
    assert_eq!(certs.certificates.len(), 1);
    assert_eq!(certs.certificates[0].source, "shop/api-cert");
    assert!(String::from_utf8_lossy(&certs.certificates[0].chain_pem)
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let routes = &cfg.gateways[&web];
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].listener,
        crate::routes::ListenerSide::Https,
        "only on the TLS socket"
    );
    assert_eq!(routes[0].hostnames, ["api.shop.example"]);

    // Without the annotation the Gateway's own name is the account.
    let text = format!(
        "{}---\n{}",
        tls_secret("api-cert", "api.shop.example"),
        https_gateway("", "{name: api-cert}")
    );
    assert_eq!(
        parse_mesh_config(&text).unwrap().gateway_certificates[&web].service_account,
        "web"
    );
}

#[test]
fn https_listener_secrets_that_cannot_serve_are_refused_naming_the_listener() {
    let good = tls_secret("api-cert", "api.shop.example");
    let cases = [
        (
            format!("{good}---\n{}", https_gateway("", "{name: nope}")),
            "document 2: spec.listeners[1].tls.certificateRefs: Secret shop/nope does not exist",
        ),
        (
            format!(
                "{}---\n{}",
                good.replace("-----BEGIN PRIVATE KEY-----", "-----BEGIN NONSENSE-----"),
                https_gateway("", "{name: api-cert}")
            ),
            "document 2: spec.listeners[1].tls.certificateRefs: Secret shop/api-cert: tls.key",
        ),
        (
            good.replace("type: kubernetes.io/tls", "type: Opaque"),
            "document 1: type: mesh.yaml reads only Secrets of type kubernetes.io/tls",
        ),
        (
            good.replace("tls.key: |", "tls.kee: |"),
            "document 1: data: a kubernetes.io/tls Secret needs tls.key in data or stringData",
        ),
        (
            format!("{good}---\n{good}"),
            "document 2: Secret shop/api-cert is already declared in document 1",
        ),
        (
            https_gateway(", annotations: {mycel.io/gateway-service-account: Not_Valid}", "{name: a}"),
            "document 1: metadata.annotations[mycel.io/gateway-service-account]: service account \"Not_Valid\" is not valid",
        ),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.starts_with(want), "got: {got}\nwant: {want}");
    }
}
