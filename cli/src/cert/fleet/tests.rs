use super::super::describe::{CertInfo, Role, Verification};
use super::*;

const HOUR: i64 = 3600;

fn cert(role: Role, seconds_left: i64, validity: Validity) -> CertInfo {
    CertInfo {
        role,
        subject: String::new(),
        issuer: "O=mycel".into(),
        spiffe_id: (role == Role::Leaf).then(|| "spiffe://cluster.local/ns/shop/sa/web".into()),
        uris: vec![],
        dns_names: vec![],
        ip_addresses: vec![],
        serial: "0a".into(),
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2026-01-02T00:00:00Z".into(),
        seconds_left,
        time_left: match validity {
            Validity::Valid => super::super::describe::human(seconds_left),
            Validity::Expired => format!(
                "expired {} ago",
                super::super::describe::human(-seconds_left)
            ),
            Validity::NotYetValid => "not valid for another 5m".into(),
        },
        validity,
        key_type: "ECDSA P-256".into(),
        ca: role != Role::Leaf,
        sha256: "00".into(),
    }
}

fn read(leaf_left: i64, issuer_left: i64, verified: bool) -> Outcome {
    let validity = |s: i64| {
        if s < 0 {
            Validity::Expired
        } else {
            Validity::Valid
        }
    };
    Outcome::Read {
        report: Report {
            ok: verified,
            chain: vec![
                cert(Role::Leaf, leaf_left, validity(leaf_left)),
                cert(Role::Intermediate, issuer_left, validity(issuer_left)),
            ],
            verification: Verification {
                status: if verified {
                    VerifyStatus::Verified
                } else {
                    VerifyStatus::NotVerified
                },
                reason: if verified { "" } else { "unknown issuer" }.into(),
            },
            trust_bundle: vec![],
        },
        trust_bundle_source: "ConfigMap shop/mycel-trust-bundle (key ca.crt)".into(),
    }
}

const WARN: Duration = Duration::from_secs(6 * 3600);

#[test]
fn judgment_table() {
    for (what, outcome, want) in [
        ("healthy", read(20 * HOUR, 300 * HOUR, true), vec![]),
        (
            "leaf within --warn",
            read(2 * HOUR, 300 * HOUR, true),
            vec!["leaf expires in 2h (within --warn 6h)"],
        ),
        (
            "issuer within --warn",
            read(20 * HOUR, HOUR, true),
            vec!["intermediate CA expires in 1h (within --warn 6h)"],
        ),
        (
            "expired and so not verified",
            read(-HOUR, 300 * HOUR, false),
            vec!["not verified: unknown issuer", "leaf expired 1h ago"],
        ),
        (
            "unreadable",
            Outcome::Unreadable("its proxy is not ready (waiting: CrashLoopBackOff)".into()),
            vec!["its proxy is not ready (waiting: CrashLoopBackOff)"],
        ),
    ] {
        let r = row("shop", "web-0", outcome, WARN);
        assert_eq!(r.problems, want, "{what}");
        assert_eq!(r.ok, want.is_empty(), "{what}");
    }
    let r = row("shop", "web-0", read(20 * HOUR, 300 * HOUR, true), WARN);
    assert_eq!(
        r.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/web")
    );
    assert_eq!((r.seconds_left, r.verified), (Some(20 * HOUR), Some(true)));
    let r = row("shop", "web-0", Outcome::Unreadable("x".into()), WARN);
    assert_eq!((r.spiffe_id, r.verified), (None, None));
}

fn rows() -> Vec<Row> {
    vec![
        row(
            "shop",
            "frontend-7d9f",
            read(20 * HOUR, 300 * HOUR, true),
            WARN,
        ),
        row("payments", "ledger-0", read(HOUR, 300 * HOUR, true), WARN),
        row(
            "shop",
            "web-0",
            Outcome::Unreadable("its proxy is not ready (waiting)".into()),
            WARN,
        ),
    ]
}

fn strip(text: &str) -> String {
    text.replace("\x1b[31m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[0m", "")
}

#[test]
fn the_table_is_aligned_with_and_without_colour() {
    let rows = rows();
    let plain = text(&rows, "in all namespaces", WARN, Style { color: false });
    assert!(!plain.contains('\x1b'), "{plain}");
    let coloured = text(&rows, "in all namespaces", WARN, Style { color: true });
    assert!(
        coloured.contains("\x1b[32myes\x1b[0m") && coloured.contains("\x1b[31m1h\x1b[0m"),
        "{coloured}"
    );
    assert_eq!(strip(&coloured), plain);
    let lines: Vec<&str> = plain.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  POD"), "{plain}");
    // Every column starts at the same place on every line.
    for column in &HEADER[1..] {
        let at = lines[0].find(column).unwrap();
        for line in &lines[1..4] {
            // An ok row has no PROBLEM: its line ends before the column.
            if *column == "PROBLEM" && line.len() <= at {
                continue;
            }
            let before = &line[..at];
            assert!(
                before.ends_with("  ") && !line[at..].starts_with(' '),
                "{column} misaligned in {line:?}\n{plain}"
            );
        }
    }
    assert!(
        lines[2].contains("leaf expires in 1h (within --warn 6h)"),
        "{plain}"
    );
    assert!(
        lines[3].contains("web-0") && lines[3].contains(" -  ") && lines[3].ends_with("(waiting)"),
        "{plain}"
    );
    assert!(
        plain.ends_with("\n3 meshed pod(s) in all namespaces: 1 ok, 2 not\n"),
        "{plain}"
    );
    assert_eq!(
        text(&[], "in namespace shop", WARN, Style { color: false }),
        "No meshed pod in namespace shop.\n"
    );
}

#[test]
fn failures_name_each_pod_and_why() {
    let rows = rows();
    assert_eq!(
        failures(&rows).unwrap(),
        "2 of 3 meshed pod(s) failed: payments/ledger-0: leaf expires in 1h (within --warn 6h); shop/web-0: its proxy is not ready (waiting)"
    );
    assert_eq!(failures(&rows[..1]), None);
    let json = serde_json::to_value(Document {
        ok: false,
        namespace: None,
        warn_seconds: WARN.as_secs(),
        pods: &rows,
    })
    .unwrap();
    assert!(json.get("namespace").is_none());
    assert_eq!(json["pods"][0]["verified"], true);
    assert_eq!(json["pods"][2]["verified"], serde_json::Value::Null);
    assert_eq!(
        json["pods"][1]["problems"][0],
        "leaf expires in 1h (within --warn 6h)"
    );
}
