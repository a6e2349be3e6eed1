use mycel_api::v1;
use tonic::Code;

use super::*;

fn peer() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "catalog").unwrap()
}

fn hello() -> Hello {
    Hello {
        proxy_id: "p1".into(),
        workload: Some(v1::Workload {
            name: "catalog".into(),
            namespace: "shop".into(),
            service_account: "catalog".into(),
            labels: Default::default(),
            address: "127.0.0.1".into(),
            mesh_port: 15001,
            ports: vec![],
            ready: true,
            zone: String::new(),
        }),
        register: true,
        subscriptions: vec!["reviews.shop".into()],
        known: vec![v1::ResourceVersion {
            key: Some(v1::ResourceKey {
                r#type: v1::ResourceType::TrustBundle as i32,
                name: String::new(),
            }),
            version: "abc".into(),
        }],
        mode: String::new(),
        gateway: String::new(),
        admin: None,
    }
}

#[test]
fn valid_hello() {
    let s = check_hello(&peer(), hello()).unwrap();
    assert_eq!(s.proxy_id, "p1");
    assert_eq!(s.mode, "sidecar");
    assert_eq!(
        s.subscriptions,
        vec![ServiceKey::new("reviews", "shop").unwrap()]
    );
    assert_eq!(
        s.known,
        vec![(ResourceKey::trust_bundle(), "abc".to_string())]
    );
    let w = s.registration.unwrap();
    assert_eq!(w.identity, peer());
}

#[test]
fn bad_subscription_in_hello_is_refused_alone() {
    let mut h = hello();
    h.subscriptions.push(".shop".into());
    h.subscriptions.push("x".repeat(1000));
    let s = check_hello(&peer(), h).unwrap();
    assert!(s.registration.is_some(), "the registration stays");
    assert_eq!(
        s.subscriptions,
        vec![ServiceKey::new("reviews", "shop").unwrap()]
    );
    assert_eq!(s.refused.len(), 2);
    assert_eq!(s.refused[0].0, ".shop");
    assert!(
        s.refused[0].1.contains("not of the form"),
        "{:?}",
        s.refused
    );
    assert!(s.refused[1].0.len() < 300, "long keys are cut");
}

#[test]
fn hello_without_register_has_no_registration() {
    let mut h = hello();
    h.register = false;
    // A non-registering proxy need not describe a dialable workload.
    h.workload.as_mut().unwrap().address = String::new();
    h.mode = "gateway".into();
    let s = check_hello(&peer(), h.clone()).unwrap();
    assert!(s.registration.is_none());
    assert_eq!(s.mode, "gateway");
    assert_eq!(s.gateway, None);
    h.gateway = "web.shop".into();
    let s = check_hello(&peer(), h).unwrap();
    assert_eq!(s.gateway, Some(ServiceKey::new("web", "shop").unwrap()));
}

#[test]
fn hello_errors() {
    type Mutate = fn(&mut Hello);
    let cases: Vec<(Mutate, Code, &str)> = vec![
        (
            |h| h.proxy_id.clear(),
            Code::InvalidArgument,
            "proxy_id is empty",
        ),
        (
            |h| h.workload = None,
            Code::InvalidArgument,
            "hello.workload is missing",
        ),
        (
            |h| h.workload.as_mut().unwrap().namespace = "other".into(),
            Code::PermissionDenied,
            "but the client certificate is spiffe://cluster.local/ns/shop/sa/catalog",
        ),
        (
            |h| h.workload.as_mut().unwrap().service_account = "admin".into(),
            Code::PermissionDenied,
            "service account \"admin\"",
        ),
        (
            |h| h.mode = "mesh".into(),
            Code::InvalidArgument,
            "hello.mode \"mesh\"",
        ),
        (
            |h| h.gateway = "web.shop".into(),
            Code::InvalidArgument,
            "hello.mode is not gateway",
        ),
        (
            |h| {
                h.mode = "gateway".into();
                h.gateway = "web".into();
            },
            Code::InvalidArgument,
            "hello.gateway \"web\" is not <name>.<namespace>",
        ),
        (
            |h| {
                h.mode = "gateway".into();
                h.gateway = "web.payments".into();
            },
            Code::PermissionDenied,
            "may only follow a Gateway of its own namespace",
        ),
        (
            |h| h.workload.as_mut().unwrap().address = "catalog.shop".into(),
            Code::InvalidArgument,
            "workload.address: \"catalog.shop\" is not an IP address",
        ),
        (
            |h| h.workload.as_mut().unwrap().mesh_port = 0,
            Code::InvalidArgument,
            "workload.mesh_port",
        ),
    ];
    for (mutate, code, want) in cases {
        let mut h = hello();
        mutate(&mut h);
        let e = Status::from(check_hello(&peer(), h).unwrap_err());
        assert_eq!(e.code(), code, "{want}");
        assert!(
            e.message().contains(want),
            "want {want:?} in {:?}",
            e.message()
        );
    }
}

#[test]
fn peer_identity_requires_a_cert() {
    let none: Option<&[Vec<u8>]> = None;
    let e = Status::from(peer_identity(none, "cluster.local").unwrap_err());
    assert_eq!(e.code(), Code::Unauthenticated);
    let empty: Vec<Vec<u8>> = vec![];
    assert_eq!(
        Status::from(peer_identity(Some(&empty[..]), "cluster.local").unwrap_err()).code(),
        Code::Unauthenticated
    );
    let garbage = [vec![1u8, 2, 3]];
    assert_eq!(
        Status::from(peer_identity(Some(&garbage[..]), "cluster.local").unwrap_err()).code(),
        Code::Unauthenticated
    );
}

#[test]
fn peer_identity_checks_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::ca::Authority::load_or_generate(
        dir.path(),
        "cluster.local",
        Duration::from_secs(60),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let other = SpiffeId::new("other.domain", "shop", "catalog").unwrap();
    let issued = ca.sign_csr(csr.der(), &other, 0).unwrap();
    let e = peer_identity(Some(&issued.chain_der[..]), "cluster.local").unwrap_err();
    assert!(matches!(e, AcceptError::ForeignTrustDomain { .. }), "{e}");
    assert_eq!(
        peer_identity(Some(&issued.chain_der[..]), "other.domain").unwrap(),
        other
    );
}

#[test]
fn hello_gives_the_proxys_origin_for_its_discovery_scope() {
    let mut h = hello();
    h.mode = "gateway".into();
    if let Some(w) = h.workload.as_mut() {
        w.labels.insert(
            crate::index::DISCOVERY_NAMESPACES_KEY.into(),
            "billing,ops".into(),
        );
    }
    let s = check_hello(&peer(), h).unwrap();
    // A gateway is scoped too: the origin does not depend on the mode.
    assert!(s.inbound.is_none());
    assert_eq!(s.origin.namespace, "shop");
    assert_eq!(s.origin.name, "catalog");
    assert_eq!(s.origin.requested.as_deref(), Some("billing,ops"));
}
