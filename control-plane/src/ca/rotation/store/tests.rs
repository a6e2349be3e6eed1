use std::time::Duration;

use super::*;
use crate::ca::authority::{fingerprint, generate_material};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn settings(dir: &Path) -> LoadSettings<'_> {
    LoadSettings {
        data_dir: dir,
        trust_domain: "cluster.local",
        cert_ttl: DAY,
        issuer_ttl: 30 * DAY,
        files: None,
    }
}

fn generated() -> CaMaterial {
    generate_material("cluster.local", 30 * DAY).unwrap()
}

fn err(a: &Authority, dir: &Path, m: &CaMaterial) -> String {
    match a.check_new_ca(m, dir) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

/// Every way a new CA can be wrong is refused, naming what is wrong.
#[test]
fn a_bad_new_ca_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = load_ca(&settings(dir.path())).unwrap();
    let good = generated();
    let other = generated();
    let current = CaMaterial {
        root_pem: a.root_pem(),
        root_key_pem: None,
        issuer_pem: a.issuer_pem(),
        issuer_key_pem: std::fs::read_to_string(dir.path().join("ca/issuer.key")).unwrap(),
    };
    let leafy = {
        // A leaf the current CA issued: not a CA certificate.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let id = mycel_api::spiffe::SpiffeId::new("cluster.local", "a", "b").unwrap();
        let issued = a.sign_csr(csr.der(), &id, 3600).unwrap();
        cert_pem(&issued.chain_der[0])
    };
    let cases: Vec<(CaMaterial, &str)> = vec![
        (
            CaMaterial {
                root_pem: leafy.clone(),
                ..good.clone()
            },
            "--root-cert: is not a CA certificate",
        ),
        (
            CaMaterial {
                issuer_pem: other.issuer_pem.clone(),
                issuer_key_pem: other.issuer_key_pem.clone(),
                ..good.clone()
            },
            "is not signed by root certificate --root-cert",
        ),
        (
            CaMaterial {
                issuer_key_pem: other.issuer_key_pem.clone(),
                ..good.clone()
            },
            "issuer key --issuer-key does not match issuer certificate --issuer-cert",
        ),
        (
            CaMaterial {
                root_key_pem: other.root_key_pem.clone(),
                ..good.clone()
            },
            "--root-key does not match",
        ),
        (
            CaMaterial {
                root_pem: "not pem".into(),
                ..good.clone()
            },
            "--root-cert: contains no CERTIFICATE block",
        ),
        (current, "is the current root already"),
    ];
    for (material, want) in cases {
        let got = err(&a, dir.path(), &material);
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
    assert!(a.check_new_ca(&good, dir.path()).is_ok());
}

#[test]
fn an_expired_new_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = load_ca(&settings(dir.path())).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let root = params.self_signed(&key).unwrap();
    let m = CaMaterial {
        root_pem: root.pem(),
        root_key_pem: None,
        ..generated()
    };
    let got = err(&a, dir.path(), &m);
    assert!(got.contains("--root-cert: is not valid now"), "{got}");
}

/// A crash after the Overlap commit (state written with `install`, CA
/// files not yet) is finished at the next start: the new CA is loaded,
/// the old root still trusted.
#[test]
fn an_interrupted_install_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = load_ca(&settings(dir.path())).unwrap();
    let new = generated();
    let state = Persisted {
        phase: Phase::Overlap,
        previous_roots_pem: vec![old.root_pem()],
        install: Some(new.clone()),
        ..Persisted::stable(1, DAY)
    };
    save(dir.path(), &state).unwrap();
    let (a, st) = load_ca(&settings(dir.path())).unwrap();
    assert_eq!(a.root_pem().trim(), new.root_pem.trim());
    assert!(a.holds_root_key());
    let bundle = a.trust_bundle_der();
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[1], old.root_der(), "old root still trusted");
    assert!(st.unwrap().install.is_none());
    assert!(load(dir.path()).unwrap().unwrap().install.is_none());
}

/// Distributing: the next root is trusted after the current one, which
/// still signs.
#[test]
fn distributing_trusts_the_next_root_second() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = load_ca(&settings(dir.path())).unwrap();
    let next = generated();
    save(
        dir.path(),
        &Persisted {
            phase: Phase::Distributing,
            next: Some(next.clone()),
            ..Persisted::stable(1, DAY)
        },
    )
    .unwrap();
    let (a, _) = load_ca(&settings(dir.path())).unwrap();
    assert_eq!(a.root_der(), old.root_der());
    let bundle = a.trust_bundle_der();
    assert_eq!(bundle.len(), 2);
    assert_eq!(
        fingerprint(&bundle[1]),
        fingerprint(&first_cert_der(Path::new("x"), &next.root_pem).unwrap())
    );
}

/// A user's CA without its root key, installed by a rotation, loads
/// without `root.key`; flags naming the retired root give way to it.
#[test]
fn keyless_rotated_ca_loads_and_retired_flags_give_way() {
    let dir = tempfile::tempdir().unwrap();
    let user = tempfile::tempdir().unwrap();
    let first = generated();
    for (n, t) in [
        ("root.pem", &first.root_pem),
        ("issuer.pem", &first.issuer_pem),
        ("issuer.key", &first.issuer_key_pem),
    ] {
        std::fs::write(user.path().join(n), t).unwrap();
    }
    let files = CaFiles {
        root_cert: user.path().join("root.pem"),
        issuer_cert: user.path().join("issuer.pem"),
        issuer_key: user.path().join("issuer.key"),
    };
    let with_flags = LoadSettings {
        files: Some(&files),
        ..settings(dir.path())
    };
    let (a, _) = load_ca(&with_flags).unwrap();
    assert!(!a.holds_root_key());
    let second = CaMaterial {
        root_key_pem: None,
        ..generated()
    };
    install_files(dir.path(), &second).unwrap();
    save(
        dir.path(),
        &Persisted {
            retired: vec![a.root_fingerprint()],
            ..Persisted::stable(1, DAY)
        },
    )
    .unwrap();
    let (b, _) = load_ca(&with_flags).unwrap();
    assert_eq!(b.root_pem().trim(), second.root_pem.trim());
    assert!(!b.holds_root_key());
    assert_eq!(b.trust_bundle_der().len(), 1);
}
