use super::*;

const DEPLOY: &str = include_str!("deploy.yaml");

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

fn names(containers: &Value) -> Vec<&str> {
    containers
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn a_real_deployment_gets_the_sidecar_and_the_rest_passes_through() {
    let cfg = InjectConfig::default();
    let (out, notes) = inject_documents(DEPLOY, &cfg).unwrap();
    let input = docs(DEPLOY);
    let output = docs(&out);
    assert_eq!(output.len(), 4);
    // Service and ConfigMap: untouched.
    assert_eq!(output[0], input[0]);
    assert_eq!(output[2], input[2]);
    // Deployment: the template is meshed, the rest of the object is kept.
    let deploy = &output[1];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["spec"]["strategy"], input[1]["spec"]["strategy"]);
    let template = &deploy["spec"]["template"];
    assert_eq!(
        names(&template["spec"]["initContainers"]),
        ["mycel-init", "mycel-proxy"]
    );
    assert_eq!(
        template["metadata"]["annotations"]["mycel.io/injected"],
        "native"
    );
    assert_eq!(template["metadata"]["labels"]["app"], "catalog");
    let proxy = &template["spec"]["initContainers"][1];
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--app-port=http:8080:http"), "{args:?}");
    assert!(args.contains(&"--opaque-port=6379"), "{args:?}");
    assert_eq!(
        template["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/app-health/catalog/readyz"
    );
    // The Job's pod opted out.
    assert_eq!(output[3], input[3]);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("Job shop/catalog-migrate") && notes[0].contains("disabled"));
}

#[test]
fn output_of_inject_is_left_alone_by_a_second_run() {
    let cfg = InjectConfig::default();
    let (once, _) = inject_documents(DEPLOY, &cfg).unwrap();
    let (twice, notes) = inject_documents(&once, &cfg).unwrap();
    assert_eq!(docs(&twice), docs(&once));
    assert!(
        notes.iter().any(|n| n.contains("already meshed")),
        "{notes:?}"
    );
}

#[test]
fn pods_lists_and_cronjobs_are_meshed_and_system_namespaces_are_not() {
    let yaml = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: shop}
    spec:
      containers: [{name: a, image: a}]
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: c, namespace: shop}
    spec:
      schedule: "* * * * *"
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: Never
              containers: [{name: c, image: c}]
  - apiVersion: v1
    kind: Pod
    metadata: {name: dns, namespace: kube-system}
    spec:
      containers: [{name: dns, image: dns}]
"#;
    let (out, notes) = inject_documents(yaml, &InjectConfig::default()).unwrap();
    let items = docs(&out)[0]["items"].clone();
    assert_eq!(
        names(&items[0]["spec"]["initContainers"]),
        ["mycel-init", "mycel-proxy"]
    );
    let cron = &items[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        names(&cron["initContainers"]),
        ["mycel-init", "mycel-proxy"]
    );
    assert!(items[2]["spec"]["initContainers"].is_null());
    assert!(notes[0].contains("kube-system"), "{notes:?}");
}

#[test]
fn bad_annotation_fails_naming_the_document_and_the_annotation() {
    let yaml = DEPLOY.replace(
        r#"mycel.io/opaque-ports: "6379""#,
        r#"mycel.io/opaque-ports: "redis""#,
    );
    let err = format!(
        "{:#}",
        inject_documents(&yaml, &InjectConfig::default()).unwrap_err()
    );
    assert!(
        err.contains("document 2 (Deployment shop/catalog)"),
        "{err}"
    );
    assert!(err.contains("mycel.io/opaque-ports"), "{err}");
    let err = format!(
        "{:#}",
        inject_documents("a: [", &InjectConfig::default()).unwrap_err()
    );
    assert!(err.contains("not YAML"), "{err}");
}
