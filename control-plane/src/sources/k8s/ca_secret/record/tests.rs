use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::ca::rotation::Phase;

fn ca(root: &str, key: Option<&str>) -> CaMaterial {
    CaMaterial {
        root_pem: root.into(),
        root_key_pem: key.map(str::to_string),
        issuer_pem: format!("{root}-issuer"),
        issuer_key_pem: format!("{root}-issuer-key"),
    }
}

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

fn record() -> Record {
    Record {
        phase: Phase::Distributing,
        phase_since_unix: 100,
        started_unix: 100,
        overlap_secs: 60,
        root_pem: "OLD".into(),
        to: Some("fp".into()),
    }
}

#[test]
fn a_start_writes_the_record_both_cas_and_drops_reports_guarded_by_the_version() {
    let (old, new) = (
        ca("OLD", Some("OLD-root-key")),
        ca("NEW", Some("NEW-root-key")),
    );
    let r = record();
    let p = patch(&Write {
        resource_version: Some("42"),
        record: Some(&r),
        previous: Change::Set(&old),
        next: Change::Set(&new),
        reports: vec![("b".into(), None)],
    });
    assert_eq!(p["metadata"]["resourceVersion"], "42");
    let state: Record =
        serde_json::from_str(p["metadata"]["annotations"][STATE].as_str().unwrap()).unwrap();
    assert_eq!(state, r);
    assert_eq!(
        p["metadata"]["annotations"]["rotation.mycel.io/replica-b"],
        Value::Null
    );
    let data = &p["data"];
    assert_eq!(data["rotation.previous.root.pem"], b64("OLD"));
    assert_eq!(data["rotation.previous.issuer.key"], b64("OLD-issuer-key"));
    assert_eq!(
        data["rotation.previous.root.key"],
        Value::Null,
        "the retired CA's root key is not kept"
    );
    assert_eq!(data["rotation.next.root.key"], b64("NEW-root-key"));
    assert_eq!(data["rotation.next.issuer.pem"], b64("NEW-issuer"));
    // The user's own keys are never in a patch.
    for key in [
        "root.pem",
        "root.key",
        "issuer.pem",
        "issuer.key",
        "tls.crt",
        "ca.crt",
    ] {
        assert!(data.get(key).is_none(), "{key} written");
    }
}

#[test]
fn a_report_alone_carries_no_version_and_removal_nulls_every_file() {
    let report = Report {
        phase: Phase::Overlap,
        to: Some("fp".into()),
        done: false,
        at_unix: 7,
        waiting: "2 proxies hold leaves of the old root".into(),
    };
    let p = patch(&Write::reports_only(vec![(
        "a1".into(),
        Some(report.clone()),
    )]));
    assert!(p["metadata"].get("resourceVersion").is_none());
    assert!(p.get("data").is_none());
    let back: Report = serde_json::from_str(
        p["metadata"]["annotations"]["rotation.mycel.io/replica-a1"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(back, report);

    let p = patch(&Write {
        resource_version: Some("1"),
        record: None,
        previous: Change::Remove,
        next: Change::Keep,
        reports: Vec::new(),
    });
    let data = p["data"].as_object().unwrap();
    assert_eq!(data.len(), 4);
    assert!(data.values().all(Value::is_null));
    assert!(data.keys().all(|k| k.starts_with("rotation.previous.")));
}

fn secret(annotations: &[(&str, String)], data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            resource_version: Some("9".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[test]
fn what_the_secret_holds_is_read_back() {
    let report = Report {
        phase: Phase::Distributing,
        to: Some("fp".into()),
        done: true,
        at_unix: 5,
        waiting: String::new(),
    };
    let s = secret(
        &[
            (STATE, serde_json::to_string(&record()).unwrap()),
            (
                "rotation.mycel.io/replica-x",
                serde_json::to_string(&report).unwrap(),
            ),
            ("rotation.mycel.io/replica-y", "garbage".into()),
            ("other", "x".into()),
        ],
        &[
            ("tls.crt", "I"),
            ("tls.key", "K"),
            ("ca.crt", "R"),
            ("rotation.previous.root.pem", "OLD"),
            ("rotation.previous.issuer.pem", "OI"),
            ("rotation.previous.issuer.key", "OK"),
            ("rotation.next.root.pem", "NEW"),
            ("rotation.next.issuer.pem", "NI"),
            ("rotation.next.issuer.key", "NK"),
        ],
    );
    let held = read("mycel-system/mycel-ca", &s);
    assert_eq!(held.resource_version.as_deref(), Some("9"));
    assert_eq!(held.record, Some(record()));
    assert_eq!(held.reports, vec![("x".to_string(), report)]);
    assert!(
        matches!(held.own, Ok(SecretCa::Provided(_))),
        "{:?}",
        held.own
    );
    let previous = held.previous.unwrap();
    assert_eq!(
        (previous.root_pem.as_str(), previous.issuer_key_pem.as_str()),
        ("OLD", "OK")
    );
    let next = held.next.unwrap();
    assert_eq!((next.root_pem.as_str(), next.root_key_pem), ("NEW", None));

    // A record someone broke is reported and treated as absent.
    let broken = secret(&[(STATE, "{".into())], &[("ca.crt", "R")]);
    let held = read("mycel-system/mycel-ca", &broken);
    assert_eq!(held.record, None);
    assert!(held.record_error.unwrap().contains(STATE));
    assert!(held.previous.is_none() && held.next.is_none());
}

#[test]
fn the_secrets_own_ca_becomes_pem_material_with_its_key_names() {
    let mycel = SecretCa::Mycel(["RK", "IK", "R", "I"].map(String::from));
    let m = material(&mycel);
    assert_eq!(
        (
            m.root_pem.as_str(),
            m.root_key_pem.as_deref(),
            m.issuer_pem.as_str(),
            m.issuer_key_pem.as_str()
        ),
        ("R", Some("RK"), "I", "IK")
    );
    assert_eq!(own_labels(&mycel).issuer_key, Path::new("issuer.key"));
    let provided = SecretCa::Provided(["I", "IK", "R"].map(String::from));
    let m = material(&provided);
    assert_eq!(
        (m.root_pem.as_str(), m.root_key_pem, m.issuer_pem.as_str()),
        ("R", None, "I")
    );
    assert_eq!(own_labels(&provided).issuer, Path::new("tls.crt"));
}
