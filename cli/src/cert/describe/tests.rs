//! Table tests of `describe` on chains made with rcgen.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType, SignatureAlgorithm,
};
use time::OffsetDateTime;

use super::*;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
/// A fixed RSA key: ring (rcgen's backend) cannot generate RSA keys, only
/// sign with them. Test material only, made for these tests.
const RSA_KEY: &str = include_str!("rsa2048.key.pem");

const DAY: i64 = 86_400;

fn now() -> SystemTime {
    SystemTime::now()
}

fn at(offset_secs: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs)
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &rcgen::PKCS_RSA_SHA256 {
        KeyPair::from_pem(RSA_KEY).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = at(-DAY);
    p.not_after = at(365 * DAY);
    p
}

fn root(name: &str) -> Ca {
    let key = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = ca_params(name).self_signed(&key).unwrap();
    Ca { cert, key }
}

fn intermediate(name: &str, parent: &Ca) -> Ca {
    let key = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = ca_params(name)
        .signed_by(&key, &parent.cert, &parent.key)
        .unwrap();
    Ca { cert, key }
}

struct LeafSpec {
    alg: &'static SignatureAlgorithm,
    not_before: i64,
    not_after: i64,
}

impl Default for LeafSpec {
    fn default() -> Self {
        Self {
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            not_before: -60,
            not_after: DAY,
        }
    }
}

fn leaf(spec: LeafSpec, issuer: &Ca) -> Vec<u8> {
    let mut p = CertificateParams::new(vec!["frontend.shop.svc".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::URI(ID.try_into().unwrap()));
    p.subject_alt_names
        .push(SanType::IpAddress([10, 0, 0, 7].into()));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = at(spec.not_before);
    p.not_after = at(spec.not_after);
    p.serial_number = Some(vec![0x01, 0xab, 0xcd].into());
    p.signed_by(&key(spec.alg), &issuer.cert, &issuer.key)
        .unwrap()
        .der()
        .to_vec()
}

fn der(ca: &Ca) -> Vec<u8> {
    ca.cert.der().to_vec()
}

#[test]
fn verification_table() {
    let mesh = root("mesh root");
    let other = root("other root");
    let inter = intermediate("mesh intermediate", &mesh);
    let good = leaf(LeafSpec::default(), &mesh);
    let via_inter = leaf(LeafSpec::default(), &inter);
    let expired = leaf(
        LeafSpec {
            not_before: -2 * DAY,
            not_after: -3_600,
            ..LeafSpec::default()
        },
        &mesh,
    );
    let future = leaf(
        LeafSpec {
            not_before: 3_600,
            not_after: 2 * DAY,
            ..LeafSpec::default()
        },
        &mesh,
    );
    // A leaf whose signature does not match: its issuer's name, another key.
    let impostor = Ca {
        cert: ca_params("mesh root")
            .self_signed(&key(&rcgen::PKCS_ECDSA_P256_SHA256))
            .unwrap(),
        key: key(&rcgen::PKCS_ECDSA_P256_SHA256),
    };
    let forged = leaf(LeafSpec::default(), &impostor);

    struct Case<'a> {
        name: &'a str,
        chain: Vec<Vec<u8>>,
        roots: Option<Vec<Vec<u8>>>,
        status: VerifyStatus,
        reason: &'a str,
        ok: bool,
    }
    let cases = [
        Case {
            name: "valid chain, its root",
            chain: vec![good.clone()],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::Verified,
            reason: "",
            ok: true,
        },
        Case {
            name: "through an intermediate",
            chain: vec![via_inter.clone(), der(&inter)],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::Verified,
            reason: "",
            ok: true,
        },
        Case {
            name: "intermediate missing",
            chain: vec![via_inter],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::NotVerified,
            reason: "unknown issuer",
            ok: false,
        },
        Case {
            name: "wrong root",
            chain: vec![good.clone()],
            roots: Some(vec![der(&other)]),
            status: VerifyStatus::NotVerified,
            reason: "unknown issuer",
            ok: false,
        },
        Case {
            name: "bundle of two roots, the second the right one",
            chain: vec![good.clone()],
            roots: Some(vec![der(&other), der(&mesh)]),
            status: VerifyStatus::Verified,
            reason: "",
            ok: true,
        },
        Case {
            name: "a root of the bundle, inspected itself",
            chain: vec![der(&mesh)],
            roots: Some(vec![der(&other), der(&mesh)]),
            status: VerifyStatus::Verified,
            reason: "",
            ok: true,
        },
        Case {
            name: "a root not in the bundle",
            chain: vec![der(&other)],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::NotVerified,
            reason: "the first certificate is a CA",
            ok: false,
        },
        Case {
            name: "empty bundle",
            chain: vec![good.clone()],
            roots: Some(vec![]),
            status: VerifyStatus::NotVerified,
            reason: "the trust bundle holds no certificate",
            ok: false,
        },
        Case {
            name: "no bundle: not checked, still ok",
            chain: vec![good],
            roots: None,
            status: VerifyStatus::Skipped,
            reason: "no trust bundle given (--ca-root)",
            ok: true,
        },
        Case {
            name: "expired leaf",
            chain: vec![expired.clone()],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::NotVerified,
            reason: "expired",
            ok: false,
        },
        Case {
            name: "expired leaf without a bundle still fails",
            chain: vec![expired],
            roots: None,
            status: VerifyStatus::Skipped,
            reason: "no trust bundle",
            ok: false,
        },
        Case {
            name: "not yet valid",
            chain: vec![future],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::NotVerified,
            reason: "not yet valid",
            ok: false,
        },
        Case {
            name: "bad signature",
            chain: vec![forged],
            roots: Some(vec![der(&mesh)]),
            status: VerifyStatus::NotVerified,
            reason: "bad signature",
            ok: false,
        },
    ];
    for c in cases {
        let r = describe(&c.chain, c.roots.as_deref(), now(), Usage::Any)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(
            r.verification.status, c.status,
            "{}: {:?}",
            c.name, r.verification
        );
        assert!(
            r.verification.reason.starts_with(c.reason),
            "{}: {:?}",
            c.name,
            r.verification.reason
        );
        assert_eq!(r.ok, c.ok, "{}", c.name);
        assert_eq!(
            r.trust_bundle.len(),
            c.roots.as_ref().map_or(0, Vec::len),
            "{}",
            c.name
        );
    }
}

#[test]
fn leaf_fields_are_read() {
    let mesh = root("mesh root");
    let r = describe(
        &[leaf(LeafSpec::default(), &mesh)],
        Some(&[der(&mesh)]),
        now(),
        Usage::Server,
    )
    .unwrap();
    let c = &r.chain[0];
    assert_eq!(c.role, Role::Leaf);
    assert_eq!(c.spiffe_id.as_deref(), Some(ID));
    assert_eq!(c.dns_names, ["frontend.shop.svc"]);
    assert_eq!(c.ip_addresses, ["10.0.0.7"]);
    assert_eq!(c.serial, "01abcd");
    assert_eq!(c.issuer, "CN=mesh root");
    assert!(!c.ca);
    assert_eq!(c.validity, Validity::Valid);
    assert!(
        (DAY - 120..=DAY).contains(&c.seconds_left),
        "{}",
        c.seconds_left
    );
    assert!(
        c.time_left.starts_with("23h 5") || c.time_left == "1d",
        "{}",
        c.time_left
    );
    assert!(
        c.not_after.ends_with('Z') && c.not_after.contains('T'),
        "{}",
        c.not_after
    );
    assert_eq!(c.sha256.len(), 64);
    let root = &r.trust_bundle[0];
    assert_eq!((root.role, root.ca), (Role::Root, true));
    assert_eq!(root.subject, "CN=mesh root");
}

#[test]
fn key_types() {
    let mesh = root("mesh root");
    for (alg, want) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ECDSA P-256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
        (&rcgen::PKCS_ED25519, "Ed25519"),
        (&rcgen::PKCS_RSA_SHA256, "RSA 2048"),
    ] {
        let chain = [leaf(
            LeafSpec {
                alg,
                ..LeafSpec::default()
            },
            &mesh,
        )];
        let r = describe(&chain, Some(&[der(&mesh)]), now(), Usage::Any).unwrap();
        assert_eq!(r.chain[0].key_type, want);
        // Every key type the mesh could meet verifies the same way.
        assert_eq!(r.verification.status, VerifyStatus::Verified, "{want}");
    }
}

#[test]
fn expired_says_how_long_ago() {
    let mesh = root("mesh root");
    let chain = [leaf(
        LeafSpec {
            not_before: -3 * DAY,
            not_after: -(2 * DAY + 3 * 3_600 + 60),
            ..LeafSpec::default()
        },
        &mesh,
    )];
    let r = describe(&chain, None, now(), Usage::Any).unwrap();
    assert_eq!(r.chain[0].validity, Validity::Expired);
    assert_eq!(r.chain[0].time_left, "expired 2d 3h ago");
    assert!(r.chain[0].seconds_left < 0);
    // The same chain, seen from before it expired.
    let then = now() - Duration::from_secs(3 * DAY as u64 - 600);
    let r = describe(&chain, None, then, Usage::Any).unwrap();
    assert_eq!(r.chain[0].validity, Validity::Valid);
}

#[test]
fn garbage_der_is_named_by_position() {
    let mesh = root("mesh root");
    let err = describe(
        &[leaf(LeafSpec::default(), &mesh), b"junk".to_vec()],
        None,
        now(),
        Usage::Any,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("certificate 2 of the chain"),
        "{err}"
    );
    let err = describe(&[der(&mesh)], Some(&[b"junk".to_vec()]), now(), Usage::Any).unwrap_err();
    assert!(
        err.to_string().starts_with("root 1 of the trust bundle"),
        "{err}"
    );
    assert!(matches!(
        describe(&[], None, now(), Usage::Any),
        Err(DescribeError::Empty)
    ));
}

#[test]
fn human_table() {
    for (secs, want) in [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (61, "1m 1s"),
        (3_600, "1h"),
        (86_399, "23h 59m"),
        (86_400, "1d"),
        (30 * 86_400 + 7_200, "30d 2h"),
        (-5, "0s"),
    ] {
        assert_eq!(human(secs), want, "{secs}");
    }
}
