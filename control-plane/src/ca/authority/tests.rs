use std::os::unix::fs::PermissionsExt;

use rcgen::{CertificateParams, KeyPair};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca(dir: &Path) -> Authority {
    Authority::load_or_generate(dir, "cluster.local", DAY).unwrap()
}

fn csr_for(sans: Vec<String>) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(sans).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://evil.example/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    params.distinguished_name.push(DnType::CommonName, "admin");
    let csr = params.serialize_request(&key).unwrap();
    (csr.der().to_vec(), key)
}

fn sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                out.push(match n {
                    GeneralName::URI(u) => format!("uri:{u}"),
                    GeneralName::DNSName(d) => format!("dns:{d}"),
                    GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                    other => format!("{other:?}"),
                });
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn generates_then_reloads_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = ca(dir.path());
    let cadir = dir.path().join("ca");
    assert_eq!(mode(&cadir), 0o700);
    for f in ["root.pem", "root.key", "issuer.pem", "issuer.key"] {
        assert_eq!(mode(&cadir.join(f)), 0o600, "{f}");
    }
    let second = ca(dir.path());
    assert_eq!(first.trust_bundle_der(), second.trust_bundle_der());
    assert_eq!(first.issuer_pem(), second.issuer_pem());
    assert_eq!(
        second.root_pem(),
        std::fs::read_to_string(cadir.join("root.pem")).unwrap()
    );
}

#[test]
fn generated_root_and_issuer_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let root_der = &a.trust_bundle_der()[0];
    let (_, root) = x509_parser::parse_x509_certificate(root_der).unwrap();
    assert!(root.is_ca());
    let life = root.validity().not_after.timestamp() - root.validity().not_before.timestamp();
    assert!(life >= 3650 * 86400, "{life}");
    let issuer_der = a.issuer_der();
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
    let bc = issuer.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let life = issuer.validity().not_after.timestamp() - issuer.validity().not_before.timestamp();
    assert!((365 * 86400..=366 * 86400).contains(&life), "{life}");
    assert!(issuer.verify_signature(Some(root.public_key())).is_ok());
}

#[test]
fn incomplete_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path());
    std::fs::remove_file(dir.path().join("ca/issuer.key")).unwrap();
    let e = Authority::load_or_generate(dir.path(), "cluster.local", DAY).unwrap_err();
    assert!(e.to_string().contains("issuer.key is missing"), "{e}");
}

#[test]
fn bad_trust_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Authority::load_or_generate(dir.path(), "Bad Domain", DAY).unwrap_err();
    assert!(e.to_string().contains("invalid trust domain"), "{e}");
}

fn files(dir: &Path) -> CaFiles {
    CaFiles {
        root_cert: dir.join("ca/root.pem"),
        issuer_cert: dir.join("ca/issuer.pem"),
        issuer_key: dir.join("ca/issuer.key"),
    }
}

#[test]
fn loads_user_given_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let generated = ca(dir.path());
    let loaded = Authority::from_files(&files(dir.path()), "cluster.local", DAY).unwrap();
    assert_eq!(loaded.trust_bundle_der(), generated.trust_bundle_der());
    // It can sign, and its leaves chain to the same issuer.
    let (csr, _) = csr_for(vec![]);
    let id = SpiffeId::new("cluster.local", "shop", "catalog").unwrap();
    let issued = loaded.sign_csr(&csr, &id, 0).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(&issued.chain_der[1]).unwrap();
    assert_eq!(leaf.issuer().as_raw(), issuer.subject().as_raw());
    assert!(leaf.verify_signature(Some(issuer.public_key())).is_ok());
}

#[test]
fn user_pem_errors_are_clear() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    ca(a.path());
    ca(b.path());
    let fa = files(a.path());
    let fb = files(b.path());

    let mismatched_key = CaFiles {
        issuer_key: a.path().join("ca/root.key"),
        ..fa.clone()
    };
    let e = Authority::from_files(&mismatched_key, "cluster.local", DAY).unwrap_err();
    assert!(matches!(e, LoadError::KeyMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("does not match issuer certificate"),
        "{e}"
    );

    let other_root = CaFiles {
        root_cert: fb.root_cert.clone(),
        ..fa.clone()
    };
    let e = Authority::from_files(&other_root, "cluster.local", DAY).unwrap_err();
    assert!(matches!(e, LoadError::NotChained { .. }), "{e}");

    let missing = CaFiles {
        root_cert: a.path().join("nope.pem"),
        ..fa.clone()
    };
    let e = Authority::from_files(&missing, "cluster.local", DAY).unwrap_err();
    assert!(e.to_string().starts_with("cannot read "), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let not_pem = a.path().join("garbage.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let e = Authority::from_files(
        &CaFiles {
            root_cert: not_pem,
            ..fa.clone()
        },
        "cluster.local",
        DAY,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("contains no CERTIFICATE block"),
        "{e}"
    );

    let bad_key = a.path().join("bad.key");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = Authority::from_files(
        &CaFiles {
            issuer_key: bad_key,
            ..fa.clone()
        },
        "cluster.local",
        DAY,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("is not a usable PKCS#8 private key"),
        "{e}"
    );

    // A leaf is not a CA.
    let leaf_pem = a.path().join("leaf.pem");
    let generated = Authority::from_files(&fa, "cluster.local", DAY).unwrap();
    let serving = generated.serving_cert().unwrap();
    std::fs::write(&leaf_pem, &serving.chain_pem).unwrap();
    let e = Authority::from_files(
        &CaFiles {
            issuer_cert: leaf_pem,
            ..fa
        },
        "cluster.local",
        DAY,
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not a CA certificate"), "{e}");
}

#[test]
fn csr_identity_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let (csr, key) = csr_for(vec!["evil.example".into(), "10.0.0.1".into()]);
    let id = SpiffeId::new("cluster.local", "shop", "catalog").unwrap();
    let issued = a.sign_csr(&csr, &id, 0).unwrap();
    assert_eq!(issued.chain_der.len(), 2);
    assert_eq!(issued.chain_der[1], a.issuer_der());
    assert_eq!(issued.spiffe_id, id);
    assert_eq!(
        sans(&issued.chain_der[0]),
        ["uri:spiffe://cluster.local/ns/shop/sa/catalog"]
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    assert_eq!(
        leaf.subject().iter().count(),
        0,
        "subject from the CSR must not be copied"
    );
    assert!(!leaf.is_ca());
    // The leaf carries the CSR's public key.
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(leaf.raw_serial().len(), 16);
    assert_eq!(SpiffeId::from_cert_der(&issued.chain_der[0]).unwrap(), id);
}

#[test]
fn serials_differ() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let (csr, _) = csr_for(vec![]);
    let id = SpiffeId::new("cluster.local", "shop", "catalog").unwrap();
    let one = a.sign_csr(&csr, &id, 0).unwrap();
    let two = a.sign_csr(&csr, &id, 0).unwrap();
    let s = |d: &[u8]| {
        x509_parser::parse_x509_certificate(d)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(s(&one.chain_der[0]), s(&two.chain_der[0]));
}

#[test]
fn ttl_is_capped_and_backdated() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let (csr, _) = csr_for(vec![]);
    let id = SpiffeId::new("cluster.local", "shop", "catalog").unwrap();
    let now = OffsetDateTime::now_utc();
    for (requested, want) in [
        (0u64, DAY),
        (3600, Duration::from_secs(3600)),
        (10 * 86400, DAY),
        (1, MIN_TTL),
    ] {
        let issued = a.sign_csr(&csr, &id, requested).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
        let nb = leaf.validity().not_before.timestamp();
        let na = leaf.validity().not_after.timestamp();
        assert!(
            (nb - (now.unix_timestamp() - 60)).abs() <= 5,
            "backdated: {nb}"
        );
        let life = (na - nb - 60) as u64;
        assert!(
            life.abs_diff(want.as_secs()) <= 5,
            "requested {requested}: life {life}"
        );
        assert_eq!(issued.not_after.unix_timestamp(), na);
        assert_eq!(issued.not_before.unix_timestamp(), nb);
    }
}

#[test]
fn effective_ttl_table() {
    let max = Duration::from_secs(100);
    for (requested, want) in [(0, 100), (1, 2), (2, 2), (50, 50), (100, 100), (1000, 100)] {
        assert_eq!(
            effective_ttl(max, requested),
            Duration::from_secs(want),
            "{requested}"
        );
    }
    // A max below the floor wins over the floor.
    assert_eq!(
        effective_ttl(Duration::from_secs(1), 5),
        Duration::from_secs(1)
    );
}

#[test]
fn bad_csr_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let id = SpiffeId::new("cluster.local", "shop", "catalog").unwrap();
    let e = a.sign_csr(b"not a csr", &id, 0).unwrap_err();
    assert!(e.to_string().starts_with("the CSR is not valid"), "{e}");
    // A CSR whose signature does not match its key.
    let (mut csr, _) = csr_for(vec![]);
    let n = csr.len();
    csr[n - 3] ^= 0x55;
    assert!(a.sign_csr(&csr, &id, 0).is_err());
}

#[test]
fn serving_cert_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let s = a.serving_cert().unwrap();
    assert_eq!(
        s.spiffe_id.to_string(),
        "spiffe://cluster.local/ns/mycel-system/sa/mycel-controller"
    );
    let der = CertificateDer::pem_slice_iter(s.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(der.len(), 2);
    assert_eq!(
        sans(&der[0]),
        [
            "uri:spiffe://cluster.local/ns/mycel-system/sa/mycel-controller",
            "dns:localhost",
            "dns:mycel-controller",
            "dns:mycel-controller.mycel-system.svc",
            "ip:[127, 0, 0, 1]",
        ]
    );
    assert!(KeyPair::from_pem(&s.key_pem).is_ok());
}

#[test]
fn cert_pem_round_trips_with_lf_lines() {
    let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let text = cert_pem(&der);
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"), "{text}");
    assert!(!text.contains('\r'));
    assert!(text.lines().all(|l| l.len() <= 64));
    assert_eq!(pem::parse(&text).unwrap().contents(), der.as_slice());
}

fn id() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "catalog").unwrap()
}

/// Whether `leaf` verifies against `root` (with its own chain).
fn chains_to(chain: &[Vec<u8>], root: &[u8]) -> bool {
    let anchor = webpki_anchor(root);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    leaf.verify_signature(Some(issuer.public_key())).is_ok()
        && issuer.verify_signature(Some(&anchor)).is_ok()
}

fn webpki_anchor(root: &[u8]) -> x509_parser::x509::SubjectPublicKeyInfo<'_> {
    x509_parser::parse_x509_certificate(root)
        .unwrap()
        .1
        .tbs_certificate
        .subject_pki
}

#[test]
fn workload_san_is_critical() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let (csr, _) = csr_for(vec![]);
    let issued = a.sign_csr(&csr, &id(), 3600).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    assert!(leaf.subject().as_raw().len() <= 2, "subject must be empty");
    let san = leaf
        .extensions()
        .iter()
        .find(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectAlternativeName(_)
            )
        })
        .expect("a SAN extension");
    assert!(
        san.critical,
        "SAN of a leaf with an empty subject must be critical"
    );
    assert_eq!(
        sans(&issued.chain_der[0]),
        vec!["uri:spiffe://cluster.local/ns/shop/sa/catalog"]
    );
    // The serving cert's names survive the hand encoding.
    let s = a.serving_cert().unwrap();
    let der = CertificateDer::pem_slice_iter(s.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let names = sans(&der);
    assert!(names.contains(&"dns:mycel-controller.mycel-system.svc".to_string()));
    assert!(
        names.contains(&"ip:[127, 0, 0, 1]".to_string()),
        "{names:?}"
    );
}

#[test]
fn rotated_issuer_is_persisted_and_old_leaves_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::load_or_generate_with(dir.path(), "cluster.local", DAY, 30 * DAY).unwrap();
    let root = a.trust_bundle_der()[0].clone();
    let (csr, _) = csr_for(vec![]);
    let before = a.sign_csr(&csr, &id(), 3600).unwrap();
    let old_issuer = a.issuer_der();
    a.rotate_issuer().unwrap();
    assert_ne!(a.issuer_der(), old_issuer);
    let after = a.sign_csr(&csr, &id(), 3600).unwrap();
    assert_eq!(
        after.chain_der[1],
        a.issuer_der(),
        "new leaves use the new issuer"
    );
    assert!(chains_to(&before.chain_der, &root), "old leaf still chains");
    assert!(
        chains_to(&after.chain_der, &root),
        "new leaf chains to the same root"
    );
    assert_eq!(a.trust_bundle_der(), vec![root.clone()]);
    // A restart loads the rotated issuer, not the first one.
    let reloaded = ca(dir.path());
    assert_eq!(reloaded.issuer_der(), a.issuer_der());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("next") || n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rotation_is_due_at_three_quarters_of_the_issuer_life() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::load_or_generate_with(dir.path(), "cluster.local", DAY, 40 * DAY).unwrap();
    let due = a.issuer_rotation_due().unwrap();
    let expected = OffsetDateTime::now_utc() + 30 * DAY;
    assert!((due - expected).whole_seconds().abs() < 120, "{due}");
}

#[test]
fn leaf_ttl_is_not_cut_by_a_nearly_expired_issuer() {
    let dir = tempfile::tempdir().unwrap();
    // An issuer with 10 s left cannot carry a one-hour leaf: it is rotated
    // first, and the leaf gets its whole hour.
    let a =
        Authority::load_or_generate_with(dir.path(), "cluster.local", DAY, Duration::from_secs(10))
            .unwrap();
    let first = a.issuer_der();
    // The rotated issuer lives long enough for the leaf.
    let a = Authority {
        issuer_ttl: 2 * DAY,
        ..a
    };
    let (csr, _) = csr_for(vec![]);
    let issued = a.sign_csr(&csr, &id(), 3600).unwrap();
    assert_ne!(a.issuer_der(), first, "the issuer was rotated");
    let life = issued.not_after - OffsetDateTime::now_utc();
    assert!(life.whole_seconds() > 3500, "leaf life {life}");
}

#[test]
fn user_given_ca_cannot_rotate_but_still_signs() {
    let dir = tempfile::tempdir().unwrap();
    let _ = ca(dir.path());
    let a = Authority::from_files(&files(dir.path()), "cluster.local", DAY).unwrap();
    assert!(a.issuer_rotation_due().is_none());
    assert!(matches!(a.rotate_issuer(), Err(RotateError::NoRootKey)));
}

#[test]
fn interrupted_rotation_is_completed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca(dir.path());
    let cadir = dir.path().join("ca");
    // Simulate a crash after the key rename: the new key is installed, the
    // new certificate is still under its temporary name.
    let root_state = a.root();
    let root = root_state.signer.as_ref().unwrap();
    let next = Issuer::generate(
        "cluster.local",
        DAY,
        &root.cert_for_test(),
        root.key_for_test(),
    )
    .unwrap();
    std::fs::write(cadir.join("issuer.key"), next.key.serialize_pem()).unwrap();
    std::fs::write(cadir.join("issuer-next.pem"), &next.pem).unwrap();
    let reloaded = ca(dir.path());
    assert_eq!(reloaded.issuer_der(), next.der);
    assert!(!cadir.join("issuer-next.pem").exists());
}

#[test]
fn issuer_expired_while_down_is_replaced_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::load_or_generate_with(
        dir.path(),
        "cluster.local",
        Duration::from_secs(1),
        Duration::from_secs(2),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let again = ca(dir.path());
    assert_ne!(again.issuer_der(), first.issuer_der());
    assert!(again.issuer_not_after() > OffsetDateTime::now_utc());
    assert_eq!(again.trust_bundle_der(), first.trust_bundle_der());
}
