use super::*;

const POLL: Duration = Duration::from_secs(5);
const NOW: i64 = 10_000;

fn record(phase: Phase, since: i64) -> Record {
    Record {
        phase,
        phase_since_unix: since,
        started_unix: since,
        overlap_secs: 60,
        root_pem: "OLD PEM".into(),
        to: (phase != Phase::Stable).then(|| "new".to_string()),
    }
}

fn report(phase: Phase, done: bool, at: i64) -> Report {
    Report {
        phase,
        to: (phase != Phase::Stable).then(|| "new".to_string()),
        done,
        at_unix: at,
        waiting: String::new(),
    }
}

fn clock() -> Clock {
    Clock {
        now_unix: NOW,
        poll: POLL,
        overlap: Duration::from_secs(60),
    }
}

struct Case {
    what: &'static str,
    record: Option<Record>,
    desired: Option<&'static str>,
    next: Option<&'static str>,
    previous: bool,
    reports: Vec<(String, Report)>,
    me: (&'static str, bool),
    want: Step,
}

fn case(what: &'static str, record: Option<Record>, me: (&'static str, bool), want: Step) -> Case {
    let rotating = record.as_ref().is_some_and(|r| r.phase != Phase::Stable);
    Case {
        what,
        record,
        desired: Some(if rotating { "new" } else { "old" }),
        next: rotating.then_some("new"),
        previous: rotating,
        reports: Vec::new(),
        me,
        want,
    }
}

fn run(c: &Case) -> Step {
    let seen = Seen {
        record: c.record.as_ref(),
        record_root: c.record.as_ref().map(|_| "old"),
        desired: c.desired,
        next: c.next,
        previous: c.previous,
        reports: &c.reports,
    };
    let me = Me {
        active: c.me.0,
        done: c.me.1,
    };
    decide(&seen, &me, &clock())
}

#[test]
fn decisions() {
    let long_ago = NOW - 1000;
    let just_now = NOW - 3;
    let other = |r: Report| vec![("b".to_string(), r)];
    let cases = vec![
        case(
            "first sight: the root in force is recorded",
            None,
            ("old", true),
            Step::Init,
        ),
        Case {
            desired: Some("new"),
            ..case(
                "a new CA in the Secret, nothing recorded yet",
                None,
                ("old", true),
                Step::Start,
            )
        },
        Case {
            desired: None,
            ..case(
                "an unusable Secret starts nothing",
                None,
                ("old", true),
                Step::Stay,
            )
        },
        case(
            "stable, the Secret unchanged",
            Some(record(Phase::Stable, long_ago)),
            ("old", true),
            Step::Stay,
        ),
        Case {
            desired: Some("new"),
            ..case(
                "stable, a new CA in the Secret",
                Some(record(Phase::Stable, long_ago)),
                ("old", true),
                Step::Start,
            )
        },
        Case {
            desired: None,
            ..case(
                "stable, the Secret turned unusable: nothing changes",
                Some(record(Phase::Stable, long_ago)),
                ("old", true),
                Step::Stay,
            )
        },
        Case {
            desired: Some("new"),
            ..case(
                "a replica not on the recorded root only follows",
                Some(record(Phase::Stable, long_ago)),
                ("other", true),
                Step::Stay,
            )
        },
        Case {
            desired: Some("new"),
            next: Some("new"),
            ..case(
                "stable on a kept CA the Secret holds again: dropped",
                Some(record(Phase::Stable, long_ago)),
                ("new", true),
                Step::Init,
            )
        },
        Case {
            desired: Some("newer"),
            next: Some("new"),
            ..case(
                "stable on a kept CA, the Secret has another: rotate to it",
                Some(record(Phase::Stable, long_ago)),
                ("new", true),
                Step::Start,
            )
        },
        case(
            "distributing, every replica done",
            Some(record(Phase::Distributing, long_ago)),
            ("old", true),
            Step::Advance(Phase::Overlap),
        ),
        case(
            "distributing, this replica's proxies have not all ACKed",
            Some(record(Phase::Distributing, long_ago)),
            ("old", false),
            Step::Stay,
        ),
        case(
            "distributing for less than two polls: a replica may not have read it",
            Some(record(Phase::Distributing, just_now)),
            ("old", true),
            Step::Stay,
        ),
        Case {
            reports: other(report(Phase::Distributing, false, NOW - 2)),
            ..case(
                "another live replica is not done: no switch of signing",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Stay,
            )
        },
        Case {
            reports: other(report(Phase::Stable, true, NOW - 2)),
            ..case(
                "another live replica has not reported this phase",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Stay,
            )
        },
        Case {
            reports: other(report(Phase::Distributing, true, NOW - 16)),
            ..case(
                "a report from before the phase began does not count as done",
                Some(record(Phase::Distributing, NOW - 15)),
                ("old", true),
                Step::Stay,
            )
        },
        Case {
            reports: other(Report {
                to: Some("older".into()),
                ..report(Phase::Distributing, true, NOW - 2)
            }),
            ..case(
                "a report for another target does not count",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Stay,
            )
        },
        Case {
            reports: other(report(Phase::Distributing, true, NOW - 2)),
            ..case(
                "another live replica done too",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Advance(Phase::Overlap),
            )
        },
        Case {
            reports: other(report(Phase::Distributing, false, NOW - 100)),
            ..case(
                "a replica silent for three polls is gone",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Advance(Phase::Overlap),
            )
        },
        Case {
            desired: Some("newer"),
            ..case(
                "distributing, the Secret changed again: retarget",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Retarget,
            )
        },
        Case {
            desired: Some("old"),
            ..case(
                "distributing, the Secret has the old CA again: abort",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Abort,
            )
        },
        Case {
            desired: None,
            ..case(
                "distributing, the Secret turned unusable: the rotation goes on",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Advance(Phase::Overlap),
            )
        },
        Case {
            previous: false,
            ..case(
                "distributing without the retired CA kept: cannot go on",
                Some(record(Phase::Distributing, long_ago)),
                ("old", true),
                Step::Stay,
            )
        },
        case(
            "overlap not over",
            Some(record(Phase::Overlap, NOW - 30)),
            ("new", true),
            Step::Stay,
        ),
        case(
            "overlap over, every proxy on the new root",
            Some(record(Phase::Overlap, NOW - 60)),
            ("new", true),
            Step::Advance(Phase::Finishing),
        ),
        case(
            "overlap over, a proxy still on the old root",
            Some(record(Phase::Overlap, NOW - 600)),
            ("new", false),
            Step::Stay,
        ),
        Case {
            desired: Some("newer"),
            ..case(
                "overlap: a Secret changed again waits for the end",
                Some(record(Phase::Overlap, NOW - 600)),
                ("new", true),
                Step::Advance(Phase::Finishing),
            )
        },
        Case {
            reports: other(report(Phase::Overlap, false, NOW - 1)),
            ..case(
                "overlap: another replica's proxy still on the old root",
                Some(record(Phase::Overlap, NOW - 600)),
                ("new", true),
                Step::Stay,
            )
        },
        case(
            "finishing, every proxy ACKed",
            Some(record(Phase::Finishing, long_ago)),
            ("new", true),
            Step::Advance(Phase::Stable),
        ),
        case(
            "finishing, not yet",
            Some(record(Phase::Finishing, long_ago)),
            ("new", false),
            Step::Stay,
        ),
    ];
    for c in &cases {
        assert_eq!(run(c), c.want, "{}", c.what);
    }
}

#[test]
fn the_record_each_step_writes() {
    let c = clock();
    let stable = record(Phase::Stable, 5);
    let start = next_record(Some(&stable), Step::Start, "OLD PEM", Some("new"), None, &c).unwrap();
    assert_eq!(
        (start.phase, start.phase_since_unix, start.started_unix),
        (Phase::Distributing, NOW, NOW)
    );
    assert_eq!(
        (start.root_pem.as_str(), start.to.as_deref()),
        ("OLD PEM", Some("new"))
    );
    assert_eq!(start.overlap_secs, 60);

    let overlap = next_record(
        Some(&start),
        Step::Advance(Phase::Overlap),
        "x",
        None,
        None,
        &c,
    )
    .unwrap();
    assert_eq!(overlap.phase, Phase::Overlap);
    assert_eq!(overlap.root_pem, "OLD PEM", "the old root stays recorded");
    assert_eq!(overlap.started_unix, NOW);

    let done = next_record(
        Some(&overlap),
        Step::Advance(Phase::Stable),
        "x",
        None,
        Some("NEW PEM"),
        &c,
    )
    .unwrap();
    assert_eq!(
        (done.phase, done.root_pem.as_str(), done.to),
        (Phase::Stable, "NEW PEM", None)
    );
    assert_eq!(
        next_record(
            Some(&overlap),
            Step::Advance(Phase::Stable),
            "x",
            None,
            None,
            &c
        ),
        None,
        "no root to put in force: nothing written"
    );

    let abort = next_record(Some(&start), Step::Abort, "x", None, None, &c).unwrap();
    assert_eq!(
        (abort.phase, abort.root_pem.as_str(), abort.to),
        (Phase::Stable, "OLD PEM", None)
    );
    let retarget = next_record(Some(&start), Step::Retarget, "x", Some("newer"), None, &c).unwrap();
    assert_eq!(
        (retarget.phase, retarget.to.as_deref()),
        (Phase::Distributing, Some("newer"))
    );
    assert_eq!(
        next_record(Some(&start), Step::Stay, "x", None, None, &c),
        None
    );
    let init = next_record(None, Step::Init, "ROOT", Some("r"), None, &c).unwrap();
    assert_eq!(
        (init.phase, init.root_pem.as_str()),
        (Phase::Stable, "ROOT")
    );
}
