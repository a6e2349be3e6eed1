use super::*;

fn reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

fn hook(uid: &str) -> OwnerReference {
    reference(API_VERSION, KIND, "mycel-injector", uid)
}

#[test]
fn the_reference_names_the_configuration_by_uid_and_blocks_nothing() {
    let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mycel-injector", "uid": "u-1"},
    }))
    .unwrap();
    let r = owner_reference(&config).unwrap();
    assert_eq!(r, hook("u-1"));
    // Not a controller reference, and deleting the owner waits for nothing.
    assert_eq!(
        (r.controller, r.block_owner_deletion),
        (Some(false), Some(false))
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(json["kind"], "MutatingWebhookConfiguration");

    // One not read from the API server has no uid: no reference.
    let unsaved: MutatingWebhookConfiguration =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "mycel-injector"}}))
            .unwrap();
    assert_eq!(owner_reference(&unsaved), None);
}

/// What, the ownership, the references found, those written (`None`: left
/// as they are).
type Case<'a> = (
    &'a str,
    &'a Ownership,
    Vec<OwnerReference>,
    Option<Vec<OwnerReference>>,
);

#[test]
fn references_are_added_fixed_removed_or_left() {
    let by = Ownership::By(hook("u-1"));
    let never = Ownership::NeverBy("mycel-injector".into());
    let absent = Ownership::Absent("mycel-injector".into());
    let other = reference("cert-manager.io/v1", "Certificate", "mesh-ca", "c-1");
    let same_name_other_kind = reference("v1", "ConfigMap", "mycel-injector", "x-1");
    let old_version = reference(
        "admissionregistration.k8s.io/v1beta1",
        KIND,
        "mycel-injector",
        "u-0",
    );
    let another_hook = reference(API_VERSION, KIND, "another-webhook", "a-1");
    let mut flagged = hook("u-1");
    flagged.block_owner_deletion = Some(true);

    let cases: Vec<Case> = vec![
        ("new object", &by, vec![], Some(vec![hook("u-1")])),
        ("already owned", &by, vec![hook("u-1")], None),
        (
            "an older install's object",
            &by,
            vec![other.clone()],
            Some(vec![other.clone(), hook("u-1")]),
        ),
        (
            "configuration created again",
            &by,
            vec![hook("u-0")],
            Some(vec![hook("u-1")]),
        ),
        (
            "older API version",
            &by,
            vec![old_version.clone()],
            Some(vec![hook("u-1")]),
        ),
        (
            "twice",
            &by,
            vec![hook("u-1"), hook("u-0")],
            Some(vec![hook("u-1")]),
        ),
        ("other flags", &by, vec![flagged], Some(vec![hook("u-1")])),
        (
            "others are not ours",
            &by,
            vec![
                same_name_other_kind.clone(),
                another_hook.clone(),
                hook("u-1"),
            ],
            None,
        ),
        ("the user's, unowned", &never, vec![], None),
        (
            "the user's, owned elsewhere",
            &never,
            vec![other.clone()],
            None,
        ),
        (
            "the user's, owned by us",
            &never,
            vec![other.clone(), hook("u-0")],
            Some(vec![other.clone()]),
        ),
        (
            "the user's, every version",
            &never,
            vec![old_version, hook("u-1")],
            Some(vec![]),
        ),
        ("left", &Ownership::Leave, vec![hook("u-0")], None),
        ("left, new", &Ownership::Leave, vec![], None),
        ("owner absent", &absent, vec![hook("u-0")], None),
        ("owner absent, new", &absent, vec![], None),
    ];
    for (what, ownership, found, written) in cases {
        assert_eq!(ownership.references(&found), written, "{what}");
    }
}

#[test]
fn new_objects_get_a_reference_only_when_owned() {
    assert_eq!(
        Ownership::By(hook("u-1")).for_new(),
        Some(vec![hook("u-1")])
    );
    assert_eq!(Ownership::NeverBy("mycel-injector".into()).for_new(), None);
    assert_eq!(Ownership::Leave.for_new(), None);
    assert_eq!(Ownership::Absent("mycel-injector".into()).for_new(), None);
}
