use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::convert::{self, PodInfo, Strictness};
use super::*;
use crate::model::{Protocol, ServiceKey};

fn settings() -> ClusterSettings {
    ClusterSettings {
        trust_domain: "cluster.local".into(),
        mesh_port: 15006,
    }
}

fn svc(
    ns: &str,
    name: &str,
    ports: &[(&str, i32, Option<IntOrString>, Option<&str>)],
) -> core::Service {
    core::Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(core::ServiceSpec {
            cluster_ips: Some(vec!["198.19.0.10".into()]),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, t, ap)| core::ServicePort {
                        name: Some(n.to_string()),
                        port: *p,
                        target_port: t.clone(),
                        app_protocol: ap.map(str::to_string),
                        ..Default::default()
                    })
                    .collect(),
            ),
            selector: Some(BTreeMap::from([("app".into(), "x".into())])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Ep<'a> {
    ip: &'a str,
    pod: &'a str,
    ready: Option<bool>,
    terminating: Option<bool>,
}

fn ep<'a>(ip: &'a str, pod: &'a str) -> Ep<'a> {
    Ep {
        ip,
        pod,
        ready: Some(true),
        terminating: None,
    }
}

fn slice(
    ns: &str,
    name: &str,
    service: &str,
    eps: &[Ep],
    ports: &[(&str, i32)],
) -> discovery::EndpointSlice {
    discovery::EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                convert::SERVICE_NAME_LABEL.to_string(),
                service.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|e| discovery::Endpoint {
                addresses: vec![e.ip.into()],
                conditions: Some(discovery::EndpointConditions {
                    ready: e.ready,
                    serving: e.ready,
                    terminating: e.terminating,
                }),
                target_ref: Some(core::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(e.pod.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                }),
                zone: Some("z1".into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| discovery::EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn meshed(sa: &str) -> PodInfo {
    PodInfo {
        service_account: sa.into(),
        meshed: true,
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.into(), name.into())
}

fn skey(name: &str, ns: &str) -> ServiceKey {
    ServiceKey::new(name, ns).unwrap()
}

fn addresses(c: &Cluster, k: &ServiceKey) -> Vec<(String, String)> {
    c.service_view(k)
        .endpoints
        .into_iter()
        .map(|e| (e.address, e.spiffe_id))
        .collect()
}

#[test]
fn port_protocol_follows_app_protocol_then_name() {
    let cases = [
        ("web", Some("grpc"), Ok(Protocol::Grpc)),
        ("grpc-api", Some("http"), Ok(Protocol::Http)),
        ("x", Some("kubernetes.io/h2c"), Ok(Protocol::Http2)),
        ("x", Some("kubernetes.io/ws"), Ok(Protocol::Http)),
        ("grpc", None, Ok(Protocol::Grpc)),
        ("grpc-web", None, Ok(Protocol::Grpc)),
        ("http2-api", None, Ok(Protocol::Http2)),
        ("tcp-db", None, Ok(Protocol::Tcp)),
        ("postgres", None, Ok(Protocol::Http)),
        ("", None, Ok(Protocol::Http)),
        ("tcpish", None, Ok(Protocol::Http)),
    ];
    for (name, ap, want) in cases {
        assert_eq!(convert::port_protocol(name, ap), want, "{name} {ap:?}");
    }
    assert!(convert::port_protocol("x", Some("mqtt")).is_err());
}

#[test]
fn cluster_service_skips_what_the_mesh_cannot_use() {
    let mut s = svc(
        "shop",
        "web",
        &[
            ("http", 80, Some(IntOrString::String("web".into())), None),
            ("api", 81, None, Some("mqtt")),
        ],
    );
    if let Some(spec) = s.spec.as_mut() {
        spec.ports
            .get_or_insert_with(Vec::new)
            .push(core::ServicePort {
                name: Some("dns".into()),
                port: 53,
                protocol: Some("UDP".into()),
                ..Default::default()
            });
    }
    let named = BTreeMap::from([("http".to_string(), 8080u16)]);
    let got = convert::service(&s, Strictness::Cluster, &named).unwrap();
    assert_eq!(got.ports.len(), 2, "the UDP port is left out");
    assert_eq!(
        got.ports[0].target_port, 8080,
        "named target from the slice"
    );
    assert_eq!(
        got.ports[1].protocol,
        Protocol::Http,
        "unknown appProtocol falls back"
    );
    assert!(
        got.selector.is_empty(),
        "cluster endpoints come from slices only"
    );
    assert_eq!(
        got.vips,
        vec!["198.19.0.10".parse::<std::net::IpAddr>().unwrap()]
    );

    let err = convert::service(&s, Strictness::Manifest, &named).unwrap_err();
    assert_eq!(err.field, "spec.ports[0].targetPort");
}

#[test]
fn endpoints_need_a_known_meshed_pod_and_carry_its_identity() {
    let mut c = Cluster::new(settings());
    let k = c
        .apply_service(svc("shop", "web", &[("http", 80, None, None)]))
        .unwrap();
    c.apply_slice(
        key("shop", "web-1"),
        convert::slice(&slice(
            "shop",
            "web-1",
            "web",
            &[ep("198.18.0.1", "a"), ep("198.18.0.2", "b")],
            &[],
        )),
    );
    assert!(addresses(&c, &k).is_empty(), "pods not known yet");

    let affected = c.apply_pod(key("shop", "a"), meshed("web-sa"));
    assert_eq!(affected, [k.clone()].into());
    c.apply_pod(
        key("shop", "b"),
        PodInfo {
            service_account: "web-sa".into(),
            meshed: false,
        },
    );
    assert_eq!(
        addresses(&c, &k),
        vec![(
            "198.18.0.1".into(),
            "spiffe://cluster.local/ns/shop/sa/web-sa".into()
        )]
    );
    let view = c.service_view(&k);
    assert_eq!(view.endpoints[0].mesh_port, 15006);
    assert_eq!(view.endpoints[0].zone, "z1");
    assert_eq!(view.endpoints[0].workload, "a");
}

#[test]
fn not_ready_and_terminating_endpoints_are_left_out() {
    let mut c = Cluster::new(settings());
    let k = c
        .apply_service(svc("shop", "web", &[("http", 80, None, None)]))
        .unwrap();
    for p in ["a", "b", "c"] {
        c.apply_pod(key("shop", p), meshed("sa"));
    }
    let eps = [
        ep("198.18.0.1", "a"),
        Ep {
            ready: Some(false),
            ..ep("198.18.0.2", "b")
        },
        Ep {
            terminating: Some(true),
            ..ep("198.18.0.3", "c")
        },
    ];
    c.apply_slice(
        key("shop", "s"),
        convert::slice(&slice("shop", "s", "web", &eps, &[])),
    );
    assert_eq!(addresses(&c, &k).len(), 1);
    // An unset `ready` means ready, as Kubernetes defines it.
    let eps = [Ep {
        ready: None,
        ..ep("198.18.0.2", "b")
    }];
    c.apply_slice(
        key("shop", "s"),
        convert::slice(&slice("shop", "s", "web", &eps, &[])),
    );
    assert_eq!(addresses(&c, &k)[0].0, "198.18.0.2");
}

#[test]
fn an_address_in_two_slices_counts_once_and_survives_one_removal() {
    let mut c = Cluster::new(settings());
    let k = c
        .apply_service(svc("shop", "web", &[("http", 80, None, None)]))
        .unwrap();
    c.apply_pod(key("shop", "a"), meshed("sa"));
    for s in ["s1", "s2"] {
        c.apply_slice(
            key("shop", s),
            convert::slice(&slice("shop", s, "web", &[ep("198.18.0.1", "a")], &[])),
        );
    }
    assert_eq!(addresses(&c, &k).len(), 1);
    assert_eq!(c.delete_slice(&key("shop", "s1")), [k.clone()].into());
    assert_eq!(addresses(&c, &k).len(), 1);
    // The pod is still referenced by s2: a change of its account shows.
    assert_eq!(
        c.apply_pod(key("shop", "a"), meshed("other")),
        [k.clone()].into()
    );
    c.delete_slice(&key("shop", "s2"));
    assert!(addresses(&c, &k).is_empty());
    assert!(
        c.apply_pod(key("shop", "a"), meshed("third")).is_empty(),
        "no slice names it any more"
    );
}

#[test]
fn deleted_service_has_no_view_and_slices_wait_for_it() {
    let mut c = Cluster::new(settings());
    c.apply_pod(key("shop", "a"), meshed("sa"));
    let affected = c.apply_slice(
        key("shop", "s"),
        convert::slice(&slice(
            "shop",
            "s",
            "web",
            &[ep("198.18.0.1", "a")],
            &[("http", 8080)],
        )),
    );
    let k = skey("web", "shop");
    assert_eq!(affected, [k.clone()].into());
    assert_eq!(c.service_view(&k).service, None);
    c.apply_service(svc(
        "shop",
        "web",
        &[("http", 80, Some(IntOrString::String("http".into())), None)],
    ));
    let view = c.service_view(&k);
    assert_eq!(view.service.unwrap().ports[0].target_port, 8080);
    assert_eq!(view.endpoints.len(), 1);
    assert_eq!(c.delete_service(&key("shop", "web")), Some(k.clone()));
    assert_eq!(c.service_view(&k).service, None);
}

#[test]
fn slices_without_a_service_label_or_with_fqdn_addresses_are_ignored() {
    let mut s = slice("shop", "s", "web", &[ep("198.18.0.1", "a")], &[]);
    s.metadata.labels = None;
    assert!(convert::slice(&s).is_none());
    let mut s = slice("shop", "s", "web", &[ep("198.18.0.1", "a")], &[]);
    s.address_type = "FQDN".into();
    assert!(convert::slice(&s).is_none());
    let mut s = slice("shop", "s", "web", &[ep("not-an-ip", "a")], &[]);
    s.address_type = "IPv4".into();
    assert!(convert::slice(&s).unwrap().endpoints.is_empty());
}

#[test]
fn pod_identity_defaults_to_the_default_account() {
    let p = core::Pod {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                convert::INJECTED_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(convert::pod(&p), meshed("default"));
}
