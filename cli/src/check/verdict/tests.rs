use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use super::*;

const DAY: i64 = 86_400;

/// A Secret's data, as the check reads it.
type Data = BTreeMap<String, Vec<u8>>;
/// Each webhook's caBundle, `None` for a missing configuration.
type Bundles = Option<Vec<Option<Vec<u8>>>>;

/// A self-signed CA valid from `from` to `to` (unix seconds), and its key.
fn ca(from: i64, to: i64) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    (p.self_signed(&key).unwrap(), key)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn versions() {
    let table = [
        ("1", "35+", true),
        ("1", "29", true),
        ("1", "28", false),
        ("2", "0", true),
        ("", "", false),
        ("1", "x", false),
    ];
    for (major, minor, ok) in table {
        let c = version(major, minor, "v?");
        assert_eq!(c.ok, ok, "{major}.{minor}: {c:?}");
        assert_eq!(c.hint.is_empty(), ok, "{major}.{minor}: {c:?}");
    }
    assert!(version("1", "28", "v1.28.9").hint.contains("1.29"));
}

#[test]
fn ca_days_left_are_judged() {
    let t = now();
    let table = [
        // (not before, not after, status, words)
        (
            t - DAY,
            t + 100 * DAY,
            Status::Ok,
            "valid for 100 more days",
        ),
        (
            t - DAY,
            t + 10 * DAY + 60,
            Status::Warn,
            "expires in 10 days",
        ),
        (
            t - 5 * DAY,
            t - 3 * DAY - 60,
            Status::Fail,
            "expired 3 days ago",
        ),
        (t + DAY, t + 9 * DAY, Status::Fail, "not valid yet"),
    ];
    for (from, to, status, words) in table {
        let (cert, _) = ca(from, to);
        let c = ca_validity(cert.der(), t, "root");
        assert_eq!(c.status, status, "{c:?}");
        assert!(c.detail.contains(words), "{c:?}");
    }
    assert_eq!(ca_validity(b"junk", t, "root").status, Status::Fail);
}

#[test]
fn ca_secret_formats() {
    let t = now();
    let (root, _) = ca(t - DAY, t + 400 * DAY);
    let (issuer, _) = ca(t - DAY, t + 300 * DAY);
    let map = |pairs: &[(&str, &str)]| -> Data {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let mycel = map(&[
        ("root.pem", &root.pem()),
        ("issuer.pem", &issuer.pem()),
        ("root.key", "secret"),
    ]);
    let got = ca_secret("ns/ca", "ns", Some(&mycel)).unwrap();
    assert_eq!(got.root, root.der().to_vec());
    assert_eq!(got.issuer.as_deref(), Some(issuer.der().as_ref()));
    let cm = map(&[("ca.crt", &root.pem()), ("tls.crt", &issuer.pem())]);
    assert_eq!(
        ca_secret("ns/ca", "ns", Some(&cm)).unwrap().root,
        root.der().to_vec()
    );
    let table: [(Option<Data>, &str); 3] = [
        (None, "no CA Secret"),
        (Some(map(&[("root.pem", "not pem")])), "no readable root"),
        (Some(map(&[("tls.key", "k")])), "no readable root"),
    ];
    for (data, words) in table {
        let err = ca_secret("ns/ca", "ns", data.as_ref()).unwrap_err();
        assert!(!err.ok && err.detail.contains(words), "{err:?}");
    }
}

#[test]
fn webhook_bundles_must_be_or_chain_to_the_mesh_root() {
    let t = now();
    let (root, root_key) = ca(t - DAY, t + 400 * DAY);
    let (other, _) = ca(t - DAY, t + 400 * DAY);
    let issuer = {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.signed_by(&key, &root, &root_key).unwrap()
    };
    let pem = |c: &rcgen::Certificate| Some(c.pem().into_bytes());
    let both = Some(format!("{}{}", other.pem(), root.pem()).into_bytes());
    let r = Some(root.der().as_ref());
    let table: Vec<(Bundles, Option<&[u8]>, Status)> = vec![
        (Some(vec![pem(&root)]), r, Status::Ok),
        (Some(vec![pem(&issuer)]), r, Status::Ok),
        (Some(vec![both]), r, Status::Ok),
        (Some(vec![pem(&other)]), r, Status::Fail),
        (Some(vec![pem(&root), pem(&other)]), r, Status::Fail),
        (Some(vec![None]), r, Status::Fail),
        (Some(vec![Some(b"not a pem".to_vec())]), r, Status::Fail),
        (Some(vec![]), r, Status::Fail),
        (None, r, Status::Fail),
        (Some(vec![pem(&other)]), None, Status::Warn),
    ];
    for (i, (bundles, root, status)) in table.into_iter().enumerate() {
        let c = webhook("mycel-injector", "ns", bundles.as_deref(), root);
        assert_eq!(c.status, status, "case {i}: {c:?}");
    }
}

#[test]
fn crds_missing_or_drifted_fail_naming_the_crd() {
    let want = mycel_crds::generate::crds().remove(0);
    assert!(crd(&want, Some(&want)).ok);
    let missing = crd(&want, None);
    assert!(!missing.ok && missing.detail.contains("meshconfigs.mycel.io"));
    let mut drifted = want.clone();
    drifted.spec.versions[0].schema = None;
    let c = crd(&want, Some(&drifted));
    assert!(!c.ok && c.detail.contains("meshconfigs.mycel.io") && c.detail.contains("differs"));
}

#[test]
fn controller_replicas() {
    let table = [
        (None, Status::Fail, "no Deployment"),
        (Some((0, 2)), Status::Fail, "no ready replica"),
        (Some((1, 2)), Status::Warn, "1 of 2"),
        (Some((2, 2)), Status::Ok, "2 replica(s) ready"),
    ];
    for (replicas, status, words) in table {
        let c = controller("mycel-system", replicas);
        assert_eq!(c.status, status, "{c:?}");
        assert!(c.detail.contains(words), "{c:?}");
    }
}

#[test]
fn proxy_cert_answers() {
    let id = "spiffe://cluster.local/ns/shop/sa/web";
    let t = 1_000;
    let table = [
        (
            r#"{"spiffe_id":"spiffe://cluster.local/ns/shop/sa/web","not_after_unix":2000}"#,
            None,
        ),
        (
            r#"{"spiffe_id":"spiffe://cluster.local/ns/shop/sa/db","not_after_unix":2000}"#,
            Some("not spiffe"),
        ),
        (
            r#"{"spiffe_id":"spiffe://cluster.local/ns/shop/sa/web","not_after_unix":999}"#,
            Some("expired"),
        ),
        (
            r#"{"spiffe_id":"spiffe://cluster.local/ns/shop/sa/web"}"#,
            Some("no not_after"),
        ),
        ("not found; try /live", Some("not JSON")),
    ];
    for (json, want) in table {
        let got = proxy_cert(json, id, t);
        match (want, &got) {
            (None, None) => {}
            (Some(words), Some(g)) => assert!(g.contains(words), "{json}: {g}"),
            _ => panic!("{json}: {got:?}"),
        }
    }
}

#[test]
fn webhook_dry_runs() {
    let ns = || "shop".to_string();
    let table = [
        (DryRun::NoNamespace, Status::Ok),
        (
            DryRun::Answered {
                ns: ns(),
                injected: true,
            },
            Status::Ok,
        ),
        (
            DryRun::Answered {
                ns: ns(),
                injected: false,
            },
            Status::Fail,
        ),
        (
            DryRun::WebhookFailed(ns(), "failed calling webhook".into()),
            Status::Fail,
        ),
        (DryRun::Other(ns(), "forbidden".into()), Status::Warn),
    ];
    for (d, status) in table {
        let c = webhook_call(&d);
        assert_eq!(c.status, status, "{d:?}: {c:?}");
        assert_eq!(c.hint.is_empty(), status == Status::Ok, "{d:?}: {c:?}");
    }
}

#[test]
fn lists_and_lines() {
    let many: Vec<String> = (0..12).map(|i| format!("shop/p{i}")).collect();
    let table = [
        (proxies(&[], 3), Status::Ok),
        (proxies(&many, 20), Status::Fail),
        (proxy_certs(&[], 3), Status::Ok),
        (proxy_certs(&many[..1], 3), Status::Fail),
        (trust_bundles(&[], &[], 2), Status::Ok),
        (trust_bundles(&many[..1], &[], 2), Status::Fail),
        (trust_bundles(&[], &many[..1], 2), Status::Fail),
        (webhook_endpoints("ns", "mycel-webhook", 0), Status::Fail),
        (webhook_endpoints("ns", "mycel-webhook", 2), Status::Ok),
        (access(&[], 12), Status::Ok),
        (access(&many[..2], 12), Status::Fail),
    ];
    for (c, status) in table {
        assert_eq!(c.status, status, "{c:?}");
        assert_eq!(c.hint.is_empty(), status == Status::Ok, "{c:?}");
    }
    assert!(proxies(&many, 20).detail.ends_with("and 2 more"));
    let l = line(&fail("crds", "x is not installed", "install it"));
    assert!(
        l.starts_with("[FAIL] crds") && l.contains("hint: install it"),
        "{l}"
    );
    assert!(line(&pass("ca", "fine")).starts_with("[ok]"));
    assert!(line(&warn("ca", "soon", "rotate")).starts_with("[warn]"));
}
