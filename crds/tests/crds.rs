//! The generated manifests follow the types, and the schema holds a rule
//! for every refusal the validation cases expect (the API-server tier then
//! applies the same cases to a real kube-apiserver).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use mycel_crds::cases::{self, Case};
use mycel_crds::generate::{self, REGENERATE};
use mycel_crds::{GatewayPolicySpec, MeshConfig};
use serde_json::Value;

#[test]
fn generated_files_match_the_types() {
    let drift = generate::drift(&generate::repo_root()).unwrap();
    assert!(
        drift.is_empty(),
        "CRD manifests are stale; run `{REGENERATE}` and commit the result:\n{}",
        drift.join("\n")
    );
}

#[test]
fn drift_names_the_stale_missing_and_extra_files() {
    let root = tempfile::tempdir().unwrap();
    generate::write_all(root.path()).unwrap();
    assert!(generate::drift(root.path()).unwrap().is_empty());
    let [generated, chart] = generate::output_dirs(root.path());
    std::fs::write(generated.join("meshconfigs.mycel.io.yaml"), "edited\n").unwrap();
    std::fs::remove_file(chart.join("meshconfigs.mycel.io.yaml")).unwrap();
    std::fs::write(chart.join("gone.mycel.io.yaml"), "old\n").unwrap();
    let drift = generate::drift(root.path()).unwrap().join("\n");
    assert!(
        drift.contains("meshconfigs.mycel.io.yaml differs"),
        "{drift}"
    );
    assert!(
        drift.contains("meshconfigs.mycel.io.yaml is missing"),
        "{drift}"
    );
    assert!(
        drift.contains("gone.mycel.io.yaml belongs to no CRD type"),
        "{drift}"
    );
    // Regenerating repairs all three.
    generate::write_all(root.path()).unwrap();
    assert!(generate::drift(root.path()).unwrap().is_empty());
}

#[test]
fn drift_names_edited_missing_and_extra_upstream_copies() {
    let root = tempfile::tempdir().unwrap();
    let upstream = root.path().join(generate::UPSTREAM_DIR);
    std::fs::create_dir_all(&upstream).unwrap();
    let name = "gateway.networking.k8s.io_httproutes.yaml";
    std::fs::write(
        upstream.join(name),
        "# upstream\nkind: CustomResourceDefinition\n",
    )
    .unwrap();
    // Regenerating copies the vendored file into the chart only.
    generate::write_all(root.path()).unwrap();
    assert!(generate::drift(root.path()).unwrap().is_empty());
    let [generated, chart] = generate::output_dirs(root.path());
    assert!(chart.join(name).exists());
    assert!(!generated.join(name).exists());

    std::fs::write(chart.join(name), "# edited in the chart\n").unwrap();
    let drift = generate::drift(root.path()).unwrap().join("\n");
    assert!(
        drift.contains(&format!("{name} differs from crds/gateway-api/crds/{name}")),
        "{drift}"
    );
    std::fs::remove_file(chart.join(name)).unwrap();
    let drift = generate::drift(root.path()).unwrap().join("\n");
    assert!(drift.contains(&format!("{name} is missing")), "{drift}");
    // A chart file that is neither Mycel's nor vendored is stale.
    std::fs::write(
        chart.join("gateway.networking.k8s.io_udproutes.yaml"),
        "x\n",
    )
    .unwrap();
    let drift = generate::drift(root.path()).unwrap().join("\n");
    assert!(
        drift.contains("gateway.networking.k8s.io_udproutes.yaml belongs to no CRD type"),
        "{drift}"
    );
    generate::write_all(root.path()).unwrap();
    assert!(generate::drift(root.path()).unwrap().is_empty());
}

fn schema() -> Value {
    schema_of("MeshConfig")
}

/// The generated schema of one of Mycel's kinds.
fn schema_of(kind: &str) -> Value {
    let crds = generate::crds();
    let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
    let v = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(v.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// The schema node of a field path such as `spec.discovery.namespaces[1]`,
/// with its parent object and own name.
fn node<'a>(root: &'a Value, field: &str) -> Option<(&'a Value, &'a Value, String)> {
    let mut parent = root;
    let mut here = root;
    let mut last = String::new();
    for segment in field.split('.') {
        let (name, indexed) = match segment.split_once('[') {
            Some((name, _)) => (name, true),
            None => (segment, false),
        };
        parent = here;
        here = here.get("properties")?.get(name)?;
        last = name.to_string();
        if indexed {
            here = here.get("items")?;
        }
    }
    Some((parent, here, last))
}

/// Whether the API server has a reason to name `field`: a constraint on the
/// node itself, its list, a `required` entry, or a parent rule whose
/// fieldPath points at it.
fn constrained(root: &Value, field: &str) -> bool {
    let Some((parent, here, name)) = node(root, field) else {
        return false;
    };
    const KEYS: &[&str] = &[
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "maxItems",
        "x-kubernetes-validations",
    ];
    let own = KEYS.iter().any(|k| here.get(k).is_some());
    let list_set = field.ends_with(']')
        && node(root, field.rsplit_once('[').unwrap().0)
            .is_some_and(|(_, list, _)| list.get("x-kubernetes-list-type").is_some());
    let required = parent
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|x| x == name.as_str()));
    // Rules on any ancestor whose fieldPath ends at this field.
    let mut rule = false;
    let segments: Vec<&str> = field.split('.').collect();
    for i in 0..segments.len() {
        let ancestor = segments[..i].join(".");
        let holder = if ancestor.is_empty() {
            Some(root)
        } else {
            node(root, &ancestor).map(|(_, n, _)| n)
        };
        let rest = format!(".{}", segments[i..].join("."));
        rule |= holder
            .and_then(|h| h.get("x-kubernetes-validations"))
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.iter().any(|r| r["fieldPath"] == rest.as_str()));
    }
    own || list_set || required || rule
}

#[test]
fn schema_has_a_rule_for_every_invalid_case() {
    let root = schema();
    let all = cases::all().unwrap();
    assert!(all.iter().filter(|c| !c.valid).count() >= 10, "{all:?}");
    for case in all.iter().filter(|c| !c.valid) {
        let field = case.expect_field.as_deref().unwrap();
        assert!(
            constrained(&root, field),
            "{}: the schema has no rule that would name {field}",
            case.name
        );
    }
}

#[test]
fn valid_cases_are_mesh_configs() {
    for case in cases::all().unwrap().iter().filter(|c| c.valid) {
        for object in &case.objects {
            let mc: MeshConfig = serde_json::from_value(object.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(
                mc.metadata.name.as_deref(),
                Some("default"),
                "{}",
                case.name
            );
            let id = &mc.spec.identity;
            assert!(
                id.certificate_ttl().unwrap() < id.issuer_ttl().unwrap(),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn the_type_level_cases_fail_in_rust_too() {
    // Enums and required fields are in the Rust types as well, so a
    // controller never reads what the API server would refuse.
    let by_name = |name: &str| -> Case {
        cases::all()
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
    };
    for name in [
        "missing-trust-domain",
        "unknown-inbound-policy",
        "unknown-log-level",
    ] {
        let case = by_name(name);
        assert!(
            serde_json::from_value::<MeshConfig>(case.objects[0].clone()).is_err(),
            "{name}"
        );
    }
}

#[test]
fn the_schema_refuses_what_gateway_policy_validate_refuses() {
    // `validate` serves mesh.yaml, the schema a cluster: each refusal of
    // one must have a rule in the other that names the same field.
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let jwt = |extra: Value| {
        let mut j = serde_json::json!({"issuer": "https://a", "jwks": {"file": "/j.json"}});
        j.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "jwt": j })
    };
    let keys = |extra: Value| {
        let mut k = serde_json::json!({"keys": [{"name": "a", "sha256": hash}]});
        k.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "apiKeys": k })
    };
    let rate = |extra: Value| {
        let mut r = serde_json::json!({"requests": 10, "per": "1s"});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "rateLimit": r })
    };
    let cases = [
        serde_json::json!({}),
        jwt(serde_json::json!({"issuer": ""})),
        jwt(serde_json::json!({"audiences": [""]})),
        jwt(serde_json::json!({"jwks": {}})),
        jwt(serde_json::json!({"jwks": {"file": "j.json"}})),
        jwt(serde_json::json!({"jwks": {"url": "https://a/j"}})),
        jwt(serde_json::json!({"refreshInterval": "25h"})),
        jwt(serde_json::json!({"algorithms": ["HS256"]})),
        jwt(serde_json::json!({"algorithms": ["RS256", "RS256"]})),
        jwt(serde_json::json!({"clockSkew": "1h"})),
        jwt(serde_json::json!({"requiredClaims": [{"name": ""}]})),
        jwt(serde_json::json!({"forwardClaims": [{"claim": "sub", "header": "host"}]})),
        jwt(serde_json::json!({"forwardClaims": [{"claim": "sub", "header": "X-A"}]})),
        jwt(
            serde_json::json!({"forwardClaims": [{"claim": "a", "header": "x-a"}, {"claim": "b", "header": "x-a"}]}),
        ),
        jwt(
            serde_json::json!({"tokenHeader": "x-t", "forwardClaims": [{"claim": "a", "header": "x-t"}]}),
        ),
        jwt(serde_json::json!({"tokenHeader": "X T"})),
        keys(serde_json::json!({"header": "X"})),
        keys(serde_json::json!({"forwardNameHeader": "te"})),
        keys(serde_json::json!({"keys": []})),
        keys(serde_json::json!({"keys": [{"name": "_", "sha256": hash}]})),
        keys(serde_json::json!({"keys": [{"name": "a", "sha256": "ab"}]})),
        keys(
            serde_json::json!({"keys": [{"name": "a", "sha256": hash}, {"name": "a", "sha256": hash}]}),
        ),
        rate(serde_json::json!({"requests": 0})),
        rate(serde_json::json!({"per": "0ms"})),
        rate(serde_json::json!({"burst": 2000000})),
        rate(serde_json::json!({"key": "Header"})),
        rate(serde_json::json!({"header": "x-t"})),
        rate(serde_json::json!({"onRedisFailure": "Deny"})),
        rate(serde_json::json!({"key": "JWTSubject"})),
        rate(serde_json::json!({"key": "APIKey"})),
    ];
    let root = schema_of("GatewayPolicy");
    for case in cases {
        let spec: GatewayPolicySpec = serde_json::from_value(case.clone()).unwrap();
        let err = spec.validate().unwrap_err();
        assert!(
            constrained(&root, &err.field),
            "{case}: validate names {}, which the schema has no rule for",
            err.field
        );
    }
}
