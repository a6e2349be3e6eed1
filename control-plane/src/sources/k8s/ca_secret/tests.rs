use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;

const SECRET: &str = "mycel-system/mycel-ca";

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

#[test]
fn secrets_are_classified_or_refused_naming_the_key() {
    let mycel = [
        ("root.pem", "R"),
        ("root.key", "RK"),
        ("issuer.pem", "I"),
        ("issuer.key", "IK"),
    ];
    let provided = [("tls.crt", "I"), ("tls.key", "IK"), ("ca.crt", "R")];
    assert_eq!(
        classify(SECRET, &data(&mycel)).unwrap(),
        SecretCa::Mycel(["RK", "IK", "R", "I"].map(String::from))
    );
    assert_eq!(
        classify(SECRET, &data(&provided)).unwrap(),
        SecretCa::Provided(["I", "IK", "R"].map(String::from))
    );
    // Keys of neither set are ignored.
    let mut extra = mycel.to_vec();
    extra.push(("note", "x"));
    assert!(matches!(
        classify(SECRET, &data(&extra)),
        Ok(SecretCa::Mycel(_))
    ));

    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&mycel[..3], &["mycel-system/mycel-ca", "no issuer.key"]),
        (&[("root.pem", "R")], &["no root.key", "has root.pem"]),
        (&provided[1..], &["no tls.crt"]),
        (&provided[..2], &["no ca.crt"]),
        (
            &[
                ("root.pem", "R"),
                ("root.key", ""),
                ("issuer.pem", "I"),
                ("issuer.key", "IK"),
            ],
            &["root.key is empty"],
        ),
        (
            &[("root.pem", "R"), ("tls.crt", "I")],
            &["mixes", "root.pem", "tls.crt"],
        ),
        (&[("password", "x")], &["holds none", "password"]),
        (&[], &["no keys"]),
    ];
    for (pairs, wants) in cases {
        let err = classify(SECRET, &data(pairs)).unwrap_err().to_string();
        for want in *wants {
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }

    let mut binary = data(&mycel);
    binary.insert("issuer.key".into(), ByteString(vec![0xff, 0xfe]));
    let err = classify(SECRET, &binary).unwrap_err().to_string();
    assert!(err.contains("issuer.key is not PEM text"), "{err}");
}

#[test]
fn the_created_secret_holds_the_four_files_labelled() {
    let texts = ["RK", "IK", "R", "I"].map(String::from);
    let s = secret_for("mycel-system", "mycel-ca", &texts, &Ownership::Leave);
    assert_eq!(s.metadata.name.as_deref(), Some("mycel-ca"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("mycel-system"));
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        s.metadata.labels.unwrap().get("app.kubernetes.io/part-of"),
        Some(&"mycel".to_string())
    );
    assert_eq!(s.metadata.owner_references, None);
    let back = classify(SECRET, &s.data.unwrap()).unwrap();
    assert_eq!(back, SecretCa::Mycel(texts.clone()));

    // Owned by the webhook configuration from its creation on; the user's
    // (never owned) gets no reference.
    let hook = webhook("u-1");
    let owned = secret_for(
        "mycel-system",
        "mycel-ca",
        &texts,
        &Ownership::By(hook.clone()),
    );
    assert_eq!(owned.metadata.owner_references, Some(vec![hook]));
    let kept = secret_for(
        "mycel-system",
        "mycel-ca",
        &texts,
        &Ownership::NeverBy("mycel-injector".into()),
    );
    assert_eq!(kept.metadata.owner_references, None);
}

fn webhook(uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "MutatingWebhookConfiguration".into(),
        name: "mycel-injector".into(),
        uid: uid.into(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

#[test]
fn only_a_secret_the_controller_may_have_created_is_owned() {
    let by = Ownership::By(webhook("u-1"));
    let never = Ownership::NeverBy("mycel-injector".into());
    for origin in [CaOrigin::Created, CaOrigin::Existing, CaOrigin::LostRace] {
        assert_eq!(secret_ownership(origin, &by), by, "{origin:?}");
        assert_eq!(secret_ownership(origin, &never), never, "{origin:?}");
    }
    // cert-manager's (or the user's) Secret: never given an owner, and a
    // reference to the webhook configuration is still taken off.
    assert_eq!(secret_ownership(CaOrigin::Provided, &by), Ownership::Leave);
    assert_eq!(secret_ownership(CaOrigin::Provided, &never), never);
    assert_eq!(
        secret_ownership(CaOrigin::Existing, &Ownership::Leave),
        Ownership::Leave
    );
}

#[test]
fn the_users_secret_is_never_owned_and_ours_is_owned_like_the_rest() {
    let by = Ownership::By(webhook("u-1"));
    let absent = Ownership::Absent("mycel-injector".into());
    // (--webhook-config, --keep-ca-secret, the others' ownership, the Secret's)
    let cases = [
        (Some("mycel-injector"), false, &by, by.clone()),
        (
            Some("mycel-injector"),
            true,
            &by,
            Ownership::NeverBy("mycel-injector".into()),
        ),
        // The configuration absent at start: the user's still loses a
        // stale reference to it; ours is created unowned, or left as it is.
        (
            Some("mycel-injector"),
            true,
            &absent,
            Ownership::NeverBy("mycel-injector".into()),
        ),
        (Some("mycel-injector"), false, &absent, absent.clone()),
        (None, true, &Ownership::Leave, Ownership::Leave),
        (None, false, &Ownership::Leave, Ownership::Leave),
    ];
    for (config, keep, others, want) in cases {
        assert_eq!(
            ownership(config, keep, others),
            want,
            "{config:?} keep={keep}"
        );
    }
}

static LEAVE: Ownership = Ownership::Leave;

fn loader(dir: &Path) -> Loader<'_> {
    Loader {
        secret: SECRET.into(),
        data_dir: dir,
        trust_domain: "cluster.local",
        cert_ttl: Duration::from_secs(3600),
        issuer_ttl: Duration::from_secs(7 * 24 * 3600),
        ownership: &LEAVE,
        poll: Duration::from_secs(1),
        overlap: Duration::from_secs(60),
    }
}

/// A CA generated by the authority in a directory of its own, as a Secret
/// would hold it.
fn generated() -> (tempfile::TempDir, [String; 4]) {
    let dir = tempfile::tempdir().unwrap();
    Authority::load_or_generate(dir.path(), "cluster.local", Duration::from_secs(3600)).unwrap();
    let texts = read_mycel_files(dir.path()).unwrap();
    (dir, texts)
}

#[test]
fn a_secret_overrides_the_data_dir_and_a_stale_rotation() {
    let (_src, texts) = generated();
    let secret = secret_for("mycel-system", "mycel-ca", &texts, &Ownership::Leave);
    // The data dir holds another CA and a half-finished rotation of it.
    let (data_dir, _) = generated();
    let ca = data_dir.path().join("ca");
    std::fs::write(ca.join("issuer-next.pem"), "stale").unwrap();

    let got = loader(data_dir.path()).load_secret(&secret).unwrap();
    assert_eq!(got.origin, CaOrigin::Existing);
    assert_eq!(got.authority.root_pem(), texts[2]);
    assert_eq!(read_mycel_files(data_dir.path()).unwrap(), texts);
    assert!(!ca.join("issuer-next.pem").exists());
    use std::os::unix::fs::PermissionsExt;
    for key in MYCEL_KEYS {
        let mode = std::fs::metadata(ca.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn a_cert_manager_secret_loads_without_rotation_and_a_bad_one_names_the_secret() {
    let (_src, [_root_key, issuer_key, root, issuer]) = generated();
    let data_dir = tempfile::tempdir().unwrap();
    let secret = |pairs: &[(&str, &str)]| Secret {
        data: Some(data(pairs)),
        ..Default::default()
    };
    let got = loader(data_dir.path())
        .load_secret(&secret(&[
            ("tls.crt", &issuer),
            ("tls.key", &issuer_key),
            ("ca.crt", &root),
        ]))
        .unwrap();
    assert_eq!(got.origin, CaOrigin::Provided);
    assert_eq!(got.authority.root_pem(), root);
    assert_eq!(got.authority.issuer_rotation_due(), None);
    assert!(!data_dir.path().join("ca").exists());

    // The issuer given as the root: not self-signed.
    let err = loader(data_dir.path())
        .load_secret(&secret(&[
            ("tls.crt", &issuer),
            ("tls.key", &issuer_key),
            ("ca.crt", &issuer),
        ]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(SECRET) && err.contains("ca.crt"), "{err}");
}

/// Attack: a Secret whose root is not a certificate, or whose issuer was
/// not signed by its root (someone edited one key). The start is refused
/// naming the Secret; nothing is signed with a CA that does not chain.
#[test]
fn a_tampered_mycel_secret_is_refused_naming_it() {
    let (_a, texts) = generated();
    let (_b, other) = generated();
    let data_dir = tempfile::tempdir().unwrap();
    let garbage_root = [
        texts[0].clone(),
        texts[1].clone(),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".to_string(),
        texts[3].clone(),
    ];
    // The issuer of another CA under this one's root.
    let foreign_issuer = [
        texts[0].clone(),
        other[1].clone(),
        texts[2].clone(),
        other[3].clone(),
    ];
    for texts in [garbage_root, foreign_issuer] {
        let secret = secret_for("mycel-system", "mycel-ca", &texts, &Ownership::Leave);
        let err = loader(data_dir.path())
            .load_secret(&secret)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(SECRET), "{err}");
    }
}
