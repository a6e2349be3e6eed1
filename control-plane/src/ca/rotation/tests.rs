use super::*;

fn at(now: i64, since: i64, not_acked: usize, on_old_root: usize) -> Progress {
    Progress {
        now_unix: now,
        phase_since_unix: since,
        overlap: Duration::from_secs(60),
        not_acked,
        on_old_root,
    }
}

#[test]
fn next_phase_table() {
    use Phase::*;
    let cases = [
        // (phase, progress, expected, why)
        (
            Stable,
            at(1000, 0, 3, 3),
            None,
            "stable never moves by itself",
        ),
        (
            Distributing,
            at(1000, 1000, 1, 0),
            None,
            "a proxy has not ACKed both roots",
        ),
        (
            Distributing,
            at(1000, 1000, 0, 5),
            Some(Overlap),
            "all ACKed: switch issuer",
        ),
        (Overlap, at(1059, 1000, 0, 0), None, "overlap not over"),
        (
            Overlap,
            at(1060, 1000, 0, 1),
            None,
            "a proxy still on the old root",
        ),
        (
            Overlap,
            at(5000, 1000, 0, 1),
            None,
            "never drop a root a proxy uses",
        ),
        (
            Overlap,
            at(1060, 1000, 0, 0),
            Some(Finishing),
            "all renewed, overlap over",
        ),
        (
            Overlap,
            at(1060, 1000, 4, 0),
            Some(Finishing),
            "ACKs do not gate the overlap",
        ),
        (
            Finishing,
            at(1061, 1060, 2, 0),
            None,
            "waiting for ACKs of the new bundle",
        ),
        (Finishing, at(1061, 1060, 0, 0), Some(Stable), "done"),
    ];
    for (phase, progress, want, why) in cases {
        assert_eq!(next_phase(phase, &progress), want, "{why}");
    }
}

#[test]
fn stuck_table() {
    use Phase::*;
    let grace = STUCK_GRACE.as_secs() as i64;
    let cases = [
        (Stable, at(1_000_000, 0, 9, 9), false),
        (Distributing, at(1000 + grace - 1, 1000, 1, 0), false),
        (Distributing, at(1000 + grace, 1000, 1, 0), true),
        (Distributing, at(1000 + grace * 9, 1000, 0, 0), false),
        (Overlap, at(1060 + grace - 1, 1000, 0, 2), false),
        (Overlap, at(1060 + grace, 1000, 0, 2), true),
        (Overlap, at(1060 + grace * 9, 1000, 0, 0), false),
        (Finishing, at(1000 + grace, 1000, 1, 0), true),
    ];
    for (phase, progress, want) in cases {
        assert_eq!(
            stuck(phase, &progress).is_some(),
            want,
            "{phase:?} {progress:?}"
        );
    }
    let why = stuck(Overlap, &at(1060 + grace, 1000, 0, 2)).unwrap();
    assert!(
        why.contains("2 proxies still hold leaves of the old root"),
        "{why}"
    );
}

#[test]
fn phases_serialize_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&Phase::Distributing).unwrap(),
        "\"distributing\""
    );
    assert_eq!(Phase::Finishing.as_str(), "finishing");
}
