use std::sync::atomic::AtomicBool;

use super::*;
use crate::admin::{self, AdminState, RotationAdmin};
use crate::ca::authority::fingerprint;
use crate::model::{ResourceBody, ResourceKey};
use crate::registry::now_rfc3339;

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Setup {
    dir: tempfile::TempDir,
    driver: Arc<RotationDriver>,
    authority: Arc<Authority>,
    registry: Arc<ProxyRegistry>,
    leaves: Arc<LeafTracker>,
    index: SharedIndex,
}

fn setup(overlap: Duration) -> Setup {
    setup_with(overlap, None)
}

/// `shared`: the CA Secret a cluster's CA follows.
fn setup_with(overlap: Duration, shared: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let authority = Arc::new(
        Authority::load_or_generate_with(dir.path(), "cluster.local", DAY, 30 * DAY).unwrap(),
    );
    let certs = ServingCerts::new(&authority.serving_cert().unwrap()).unwrap();
    let registry = Arc::new(ProxyRegistry::default());
    let leaves = Arc::new(LeafTracker::default());
    let index = SharedIndex::default();
    let driver = RotationDriver::new(
        DriverParts {
            data_dir: dir.path().to_path_buf(),
            issuer_ttl: 30 * DAY,
            serving_ttl: DAY * 2,
            overlap,
            authority: authority.clone(),
            index: index.clone(),
            registry: registry.clone(),
            leaves: leaves.clone(),
            certs,
            client_roots: ClientRoots::new(&authority.trust_bundle_der()).unwrap(),
            metrics: Arc::new(Metrics::new()),
            roots: watch::channel(bundle_pem(&authority.trust_bundle_der())).0,
            shared: shared.map(str::to_string),
        },
        None,
    );
    Setup {
        dir,
        driver,
        authority,
        registry,
        leaves,
        index: index.clone(),
    }
}

fn saved(s: &Setup) -> Persisted {
    store::load(s.dir.path()).unwrap().unwrap()
}

/// A proxy connected with a leaf of the current root.
fn connect_proxy(s: &Setup, conn: u64) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let id = mycel_api::spiffe::SpiffeId::new("cluster.local", "shop", "ratings").unwrap();
    let issued = s.authority.sign_csr(csr.der(), &id, 3600).unwrap();
    let serial = crate::ca::rotation::leaves::serial_hex(&issued.chain_der[0]).unwrap();
    s.registry.insert(
        conn,
        ProxyRecord {
            proxy_id: format!("p{conn}"),
            workload: "ratings".into(),
            namespace: "shop".into(),
            spiffe_id: id.to_string(),
            mode: "sidecar".into(),
            registered: true,
            ready: Some(true),
            connected_since: now_rfc3339(),
            subscriptions: vec![],
            acked: Default::default(),
            last_nack: None,
            leaf_serial: serial.clone(),
            leaf_chain: issued.chain_der,
            admin_addr: None,
        },
    );
    serial
}

/// The proxy ACKs the bundle the controller pushes now.
fn ack_bundle(s: &Setup, conn: u64) {
    let version = crate::index::version_of(
        &ResourceKey::trust_bundle(),
        &ResourceBody::TrustBundle {
            roots_der: s.authority.trust_bundle_der(),
        },
    );
    s.registry.update(conn, |r| {
        r.acked
            .insert(ResourceKey::trust_bundle().to_string(), version);
    });
}

#[test]
fn with_no_proxy_a_rotation_runs_through_every_phase() {
    let s = setup(Duration::ZERO);
    let old = s.authority.root_der();
    let status = s.driver.start(StartRequest::default()).unwrap();
    assert_eq!(status.phase, Phase::Distributing);
    assert_eq!(saved(&s).phase, Phase::Distributing);
    let bundle = s.authority.trust_bundle_der();
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[0], old, "the old root still signs and comes first");
    assert_eq!(status.roots[1].role, "next");

    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Overlap);
    let new = s.authority.root_der();
    assert_ne!(new, old);
    assert_eq!(
        s.authority.trust_bundle_der(),
        vec![new.clone(), old.clone()]
    );
    let on_disk = std::fs::read_to_string(s.dir.path().join("ca/root.pem")).unwrap();
    assert_eq!(on_disk.trim(), s.authority.root_pem().trim());
    assert!(saved(&s).install.is_none());

    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Finishing);
    assert_eq!(s.authority.trust_bundle_der(), vec![new.clone()]);
    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Stable);
    let st = saved(&s);
    assert_eq!(st.phase, Phase::Stable);
    assert!(st.retired.contains(&fingerprint(&old)));
}

#[test]
fn proxies_gate_each_phase() {
    let s = setup(Duration::ZERO);
    let serial = connect_proxy(&s, 1);
    s.driver.start(StartRequest::default()).unwrap();
    s.driver.tick();
    assert_eq!(
        s.driver.phase(),
        Phase::Distributing,
        "the proxy has not ACKed old+new"
    );
    assert_eq!(s.driver.status().proxies_not_acked, 1);
    ack_bundle(&s, 1);
    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Overlap);
    s.driver.tick();
    s.driver.tick();
    let status = s.driver.status();
    assert_eq!(status.phase, Phase::Overlap, "its leaf is of the old root");
    assert_eq!(status.proxies_on_old_root, 1);
    assert!(!status.proxies[0].on_current_root);
    assert_eq!(
        status.proxies[0].root.as_deref(),
        Some(status.roots[1].fingerprint.as_str()),
        "named by the previous root's fingerprint"
    );
    // It renews (authenticated by its stream's leaf) under the new root.
    let new_fp = s.authority.root_fingerprint();
    s.leaves
        .record(Some(&serial), "renewed", &new_fp, i64::MAX, 0);
    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Finishing);
    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Finishing, "new bundle not ACKed");
    ack_bundle(&s, 1);
    s.driver.tick();
    assert_eq!(s.driver.phase(), Phase::Stable);
    assert!(s.driver.status().proxies[0].on_current_root);
}

fn admin_state(s: &Setup) -> AdminState {
    AdminState {
        metrics: Arc::new(Metrics::new()),
        registry: s.registry.clone(),
        index: s.index.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        rotation: Some(RotationAdmin {
            driver: s.driver.clone(),
        }),
        dashboard: None,
    }
}

#[test]
fn admin_rotate_refusals() {
    let s = setup(DAY);
    let state = admin_state(&s);
    let cases: Vec<(bool, &[u8], u16, &str)> = vec![
        (false, b"", 403, "loopback"),
        (true, b"{", 400, "bad request body"),
        (
            true,
            br#"{"root_cert_pem": "x"}"#,
            400,
            "missing the issuer certificate",
        ),
        (true, br#"{"nonsense": 1}"#, 400, "unknown field"),
        (
            true,
            br#"{"root_cert_pem": "x", "issuer_cert_pem": "y", "issuer_key_pem": "z"}"#,
            400,
            "--root-cert: contains no CERTIFICATE block",
        ),
    ];
    for (loopback, body, code, want) in cases {
        let r = admin::rotate(&state, loopback, body);
        assert_eq!(r.status.as_u16(), code, "{}", r.body);
        assert!(r.body.contains(want), "{:?} lacks {want:?}", r.body);
    }
    assert!(
        !s.dir.path().join("ca/rotation.json").exists(),
        "a refusal writes nothing"
    );
    assert_eq!(s.authority.trust_bundle_der().len(), 1);

    let r = admin::rotate(&state, true, br#"{"overlap_secs": 5}"#);
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(saved(&s).overlap_secs, 5);
    let r = admin::rotate(&state, true, b"");
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);

    let k8s = admin_state(&setup_with(DAY, Some("mycel-system/mycel-ca")));
    let r = admin::rotate(&k8s, true, b"");
    assert_eq!(r.status.as_u16(), 403);
    assert!(
        r.body.contains("Kubernetes Secret mycel-system/mycel-ca")
            && r.body.contains("put the new root and issuer in it"),
        "{}",
        r.body
    );
    let r = admin::route(&k8s, &http::Method::GET, "/ca/status");
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.body.contains("\"phase\": \"stable\""), "{}", r.body);
}
