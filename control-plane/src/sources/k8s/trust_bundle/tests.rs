use k8s_openapi::api::core::v1::NamespaceStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;

const NAME: &str = "mycel-trust-bundle";
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";

fn cm(data: &[(&str, &str)], labelled: bool) -> ConfigMap {
    let mut c = desired(NAME, "shop", KEY, ROOTS, &Ownership::Leave);
    c.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    if !labelled {
        c.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
    }
    c.metadata.resource_version = Some("42".into());
    c
}

#[test]
fn the_configmap_is_created_corrected_or_left_alone() {
    assert_eq!(
        plan(None, NAME, "shop", KEY, ROOTS, &Ownership::Leave),
        Action::Create(desired(NAME, "shop", KEY, ROOTS, &Ownership::Leave))
    );
    assert_eq!(
        plan(
            Some(cm(&[(KEY, ROOTS)], true)),
            NAME,
            "shop",
            KEY,
            ROOTS,
            &Ownership::Leave
        ),
        Action::Current
    );
    let mut with_binary = cm(&[(KEY, ROOTS)], true);
    with_binary.binary_data = Some(BTreeMap::from([("x".into(), Default::default())]));
    let stale = [
        cm(&[(KEY, "edited")], true),
        cm(&[], true),
        cm(&[(KEY, ROOTS), ("extra", "x")], true),
        cm(&[(KEY, ROOTS)], false),
        with_binary,
    ];
    for found in stale {
        let Action::Replace(fixed) = plan(
            Some(found.clone()),
            NAME,
            "shop",
            KEY,
            ROOTS,
            &Ownership::Leave,
        ) else {
            panic!("{found:?} should be replaced");
        };
        assert_eq!(
            fixed.data,
            Some(BTreeMap::from([(KEY.into(), ROOTS.into())]))
        );
        assert_eq!(fixed.binary_data, None);
        // Optimistic concurrency and others' labels are kept.
        assert_eq!(fixed.metadata.resource_version.as_deref(), Some("42"));
        let labels = fixed.metadata.labels.unwrap();
        assert_eq!(labels.get(PART_OF.0).map(String::as_str), Some(PART_OF.1));
        if let Some(team) = found.metadata.labels.unwrap().get("team") {
            assert_eq!(labels.get("team"), Some(team));
        }
    }
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
fn the_configmap_is_owned_by_the_webhook_configuration_when_asked() {
    let by = |uid: &str| Ownership::By(webhook(uid));
    let Action::Create(new) = plan(None, NAME, "shop", KEY, ROOTS, &by("u-1")) else {
        panic!("absent: created");
    };
    assert_eq!(new.metadata.owner_references, Some(vec![webhook("u-1")]));

    let owned = |refs: Option<Vec<OwnerReference>>| {
        let mut c = cm(&[(KEY, ROOTS)], true);
        c.metadata.owner_references = refs;
        c
    };
    assert_eq!(
        plan(
            Some(owned(Some(vec![webhook("u-1")]))),
            NAME,
            "shop",
            KEY,
            ROOTS,
            &by("u-1")
        ),
        Action::Current
    );
    // An older install's (no reference) and one naming a configuration
    // deleted since (old uid) get the current owner; nothing else changes.
    for refs in [None, Some(vec![]), Some(vec![webhook("u-0")])] {
        let found = owned(refs.clone());
        let Action::Replace(fixed) =
            plan(Some(found.clone()), NAME, "shop", KEY, ROOTS, &by("u-1"))
        else {
            panic!("{refs:?}: replaced");
        };
        assert_eq!(fixed.metadata.owner_references, Some(vec![webhook("u-1")]));
        assert_eq!(fixed.data, found.data);
        assert_eq!(fixed.metadata.resource_version.as_deref(), Some("42"));
    }
    // Without --webhook-config, or while the configuration is absent, the
    // references are left as they are...
    let absent = Ownership::Absent("mycel-injector".into());
    for ownership in [&Ownership::Leave, &absent] {
        let found = owned(Some(vec![webhook("u-0")]));
        assert_eq!(
            plan(Some(found), NAME, "shop", KEY, ROOTS, ownership),
            Action::Current
        );
    }
    // ...and while it is absent none is created: nothing would collect it.
    assert_eq!(
        plan(None, NAME, "shop", KEY, ROOTS, &absent),
        Action::AwaitOwner
    );
}

#[test]
fn retries_back_off_from_one_second_to_a_minute() {
    let got: Vec<u64> = [1, 2, 3, 4, 6, 7, 40, u32::MAX]
        .map(|n| backoff(n).as_secs())
        .to_vec();
    assert_eq!(got, [1, 2, 4, 8, 32, 60, 60, 60]);
}

fn ns(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_schedule_follows_the_watch_relists_and_outcomes() {
    let t0 = Instant::now();
    let resync = Duration::from_secs(300);
    let mut s = Schedule::default();
    s.on_event(Event::Apply(ns("a")), t0);
    s.on_event(Event::Apply(ns("b")), t0);
    assert_eq!(s.due(t0), ["a", "b"]);

    s.done("a", true, t0, resync);
    s.done("b", false, t0, resync);
    assert_eq!(s.next(), Some(t0 + Duration::from_secs(1)));
    assert!(s.due(t0).is_empty());
    assert_eq!(s.due(t0 + Duration::from_secs(1)), ["b"]);
    s.done("b", false, t0, resync);
    assert_eq!(s.due(t0 + Duration::from_secs(1)), Vec::<String>::new());
    assert_eq!(s.due(t0 + Duration::from_secs(2)), ["b"]);
    s.done("b", true, t0, resync);
    assert_eq!(s.due(t0 + resync), ["a", "b"]);

    // A re-list shows every namespace again at once, and drops those
    // unlabelled or deleted meanwhile.
    let t1 = t0 + Duration::from_secs(10);
    s.on_event(Event::Init, t1);
    s.on_event(Event::InitApply(ns("b")), t1);
    s.on_event(Event::InitApply(ns("c")), t1);
    s.on_event(Event::InitDone, t1);
    assert_eq!(s.namespaces(), ["b", "c"]);
    assert_eq!(s.due(t1), ["b", "c"]);

    s.on_event(Event::Delete(ns("b")), t1);
    let mut dying = ns("c");
    dying.metadata.deletion_timestamp = Some(Time(Default::default()));
    s.on_event(Event::Apply(dying), t1);
    assert!(s.namespaces().is_empty());
    assert_eq!(s.next(), None);
    // Outcomes for a namespace no longer meshed are dropped.
    s.done("b", false, t1, resync);
    assert!(s.namespaces().is_empty());
}

#[test]
fn a_new_owner_makes_every_namespace_due_at_once() {
    let t0 = Instant::now();
    let resync = Duration::from_secs(300);
    let mut s = Schedule::default();
    s.on_event(Event::Apply(ns("a")), t0);
    s.on_event(Event::Apply(ns("b")), t0);
    s.done("a", true, t0, resync);
    s.done("b", false, t0, resync);
    let t1 = t0 + Duration::from_millis(10);
    assert!(s.due(t1).is_empty());
    s.all_due(t1);
    assert_eq!(s.due(t1), ["a", "b"]);
}

#[test]
fn terminating_namespaces_are_not_published_to() {
    let mut n = ns("x");
    assert!(wanted(&n));
    n.status = Some(NamespaceStatus {
        phase: Some("Terminating".into()),
        ..Default::default()
    });
    assert!(!wanted(&n));
}

/// A shared rotation switches signing only once the bundle holding both
/// roots is everywhere: `published` must not say so before every meshed
/// namespace (all of them listed) was written with the new roots.
#[test]
fn published_only_once_every_listed_namespace_holds_the_new_roots() {
    let t0 = Instant::now();
    let resync = Duration::from_secs(300);
    let mut s = Schedule::default();
    assert!(!s.published(), "nothing listed yet");
    s.on_event(Event::Init, t0);
    s.on_event(Event::InitApply(ns("a")), t0);
    s.on_event(Event::InitApply(ns("b")), t0);
    assert!(!s.published(), "listing not finished");
    s.on_event(Event::InitDone, t0);
    s.done("a", true, t0, resync);
    assert!(!s.published(), "b not written yet");
    s.done("b", true, t0, resync);
    assert!(s.published());

    // New roots: none current until written again; a failure keeps it so.
    let t1 = t0 + Duration::from_secs(1);
    s.roots_changed(t1);
    assert_eq!(s.due(t1), ["a", "b"]);
    assert!(!s.published());
    s.done("a", true, t1, resync);
    s.done("b", false, t1, resync);
    assert!(!s.published());
    s.done("b", true, t1, resync);
    assert!(s.published());

    // A namespace meshed later is not published to until written; one
    // that leaves the mesh is no longer waited for.
    s.on_event(Event::Apply(ns("c")), t1);
    assert!(!s.published());
    s.on_event(Event::Delete(ns("c")), t1);
    assert!(s.published());
}
