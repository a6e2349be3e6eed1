use super::*;
use crate::ca::authority::generate_material;
use crate::sources::k8s::ca_secret::SecretCa;

const SECRET: &str = "mycel-system/mycel-ca";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> CaMaterial {
    generate_material("cluster.local", 30 * DAY).unwrap()
}

fn own(m: &CaMaterial) -> SecretCa {
    SecretCa::Mycel([
        m.root_key_pem.clone().unwrap(),
        m.issuer_key_pem.clone(),
        m.root_pem.clone(),
        m.issuer_pem.clone(),
    ])
}

fn der(pem: &str) -> Vec<u8> {
    first_cert_der(Path::new("x"), pem).unwrap()
}

fn held(own_ca: Option<&CaMaterial>, record: Option<Record>) -> Held {
    Held {
        resource_version: Some("1".into()),
        own: own_ca.map(own).ok_or(CaSecretError::NoCa {
            secret: SECRET.into(),
            present: "no keys".into(),
        }),
        record,
        record_error: None,
        previous: None,
        next: None,
        reports: Vec::new(),
    }
}

fn record(phase: Phase, root: &CaMaterial, to: Option<&CaMaterial>) -> Record {
    Record {
        phase,
        phase_since_unix: 1,
        started_unix: 1,
        overlap_secs: 60,
        root_pem: root.root_pem.clone(),
        to: to.and_then(|t| root_fp(&t.root_pem)),
    }
}

fn kept(r: Resolved) -> (CaMaterial, Vec<Vec<u8>>) {
    match r {
        Resolved::Kept { material, also, .. } => (material, also),
        Resolved::Own => panic!("Own"),
        Resolved::Changed => panic!("Changed"),
    }
}

/// A restart mid-rotation signs with what the phase signs with and trusts
/// what it trusts, whatever the Secret's own keys and the data dir hold:
/// the old root is never dropped before the overlap has passed.
#[test]
fn a_restart_mid_rotation_resumes_the_recorded_phase() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ca(), ca());
    let with = |phase| {
        let mut h = held(Some(&new), Some(record(phase, &old, Some(&new))));
        h.previous = Some(CaMaterial {
            root_key_pem: None,
            ..old.clone()
        });
        h.next = Some(new.clone());
        h
    };

    let (signs, also) = kept(resolve(SECRET, &with(Phase::Distributing), dir.path()).unwrap());
    assert_eq!(
        signs.root_pem, old.root_pem,
        "distributing signs with the old CA"
    );
    assert_eq!(also, vec![der(&new.root_pem)]);

    let mut overlap = with(Phase::Overlap);
    overlap.previous = None;
    let (signs, also) = kept(resolve(SECRET, &overlap, dir.path()).unwrap());
    assert_eq!(signs.root_pem, new.root_pem);
    assert_eq!(also, vec![der(&old.root_pem)], "the old root trusted");

    let (signs, also) = kept(resolve(SECRET, &with(Phase::Finishing), dir.path()).unwrap());
    assert_eq!((signs.root_pem, also), (new.root_pem.clone(), Vec::new()));

    // Stable on a kept CA (the Secret changed again before the end).
    let mut stable = held(Some(&ca()), Some(record(Phase::Stable, &new, None)));
    stable.next = Some(new.clone());
    let (signs, _) = kept(resolve(SECRET, &stable, dir.path()).unwrap());
    assert_eq!(signs.root_pem, new.root_pem);

    // A record missing what its phase needs is refused, naming it.
    let mut broken = with(Phase::Distributing);
    broken.previous = None;
    let e = resolve(SECRET, &broken, dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(SECRET) && e.contains("the CA being retired"),
        "{e}"
    );
    let mut broken = with(Phase::Overlap);
    broken.next = None;
    let e = resolve(SECRET, &broken, dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("the CA rotated to"), "{e}");
}

#[test]
fn a_secret_changed_while_no_controller_ran() {
    let (old, new) = (ca(), ca());
    let empty = tempfile::tempdir().unwrap();
    // Nothing recorded, or the Secret's CA is the one recorded in force.
    assert!(matches!(
        resolve(SECRET, &held(Some(&new), None), empty.path()).unwrap(),
        Resolved::Own
    ));
    let same = held(Some(&old), Some(record(Phase::Stable, &old, None)));
    assert!(matches!(
        resolve(SECRET, &same, empty.path()).unwrap(),
        Resolved::Own
    ));

    // A new root, the old CA nowhere here: wait for a running replica.
    let changed = held(Some(&new), Some(record(Phase::Stable, &old, None)));
    assert!(matches!(
        resolve(SECRET, &changed, empty.path()).unwrap(),
        Resolved::Changed
    ));
    // The data dir still holds the CA in force (a container restart): it
    // signs, and the follower starts the rotation.
    let data = tempfile::tempdir().unwrap();
    write_ca_dir(&data.path().join("ca"), &old).unwrap();
    let (signs, also) = kept(resolve(SECRET, &changed, data.path()).unwrap());
    assert_eq!(signs.root_pem, old.root_pem);
    assert!(also.is_empty());
    // Another CA in the data dir is not taken for it.
    let other = tempfile::tempdir().unwrap();
    write_ca_dir(&other.path().join(ACTIVE_DIR), &ca()).unwrap();
    assert!(matches!(
        resolve(SECRET, &changed, other.path()).unwrap(),
        Resolved::Changed
    ));
    // An unusable Secret without the CA in force anywhere fails the start
    // as it always did (the loader reports why).
    let unusable = held(None, Some(record(Phase::Stable, &old, None)));
    assert!(matches!(
        resolve(SECRET, &unusable, empty.path()).unwrap(),
        Resolved::Own
    ));
    let (signs, _) = kept(resolve(SECRET, &unusable, data.path()).unwrap());
    assert_eq!(
        signs.root_pem, old.root_pem,
        "the data dir's CA in force is kept"
    );
}
