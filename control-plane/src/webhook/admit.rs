//! One admission review, decided without I/O: parse the request, ask
//! `mycel_inject::should_inject` (pod annotation, then namespace label or
//! annotation), and answer with the injection patch, or allowed without
//! one. A pod the injector refuses (an annotation that is not a number, a
//! volume name the mesh needs) is denied with the injector's message, so
//! whoever applied it sees what is wrong; a pod is never half meshed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use mycel_inject::InjectConfig;

/// What the webhook knows of a namespace (from its watch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why a request body could not be answered at all (the API server gets a
/// 400 and applies the webhook's failure policy).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview of a Pod: {0}")]
    Body(#[source] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// The pod's namespace is not (yet) in the controller's watch: its
    /// labels decide whether the pod is meshed, so no answer is given
    /// rather than a guess (the caller retries, then fails).
    #[error("namespace {0} is not known to the controller yet")]
    UnknownNamespace(String),
}

/// Answers one AdmissionReview body with the response review (JSON).
pub fn review(
    body: &[u8],
    config: &InjectConfig,
    namespace: impl Fn(&str) -> Option<NamespaceInfo>,
) -> Result<serde_json::Value, ReviewError> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).map_err(ReviewError::Body)?;
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = decide(&request, config, namespace)?;
    serde_json::to_value(response.into_review()).map_err(ReviewError::Body)
}

fn decide(
    request: &AdmissionRequest<Pod>,
    config: &InjectConfig,
    namespace: impl Fn(&str) -> Option<NamespaceInfo>,
) -> Result<AdmissionResponse, ReviewError> {
    let allowed = AdmissionResponse::from(request);
    // Only creation meshes a pod; a pod's containers cannot change later.
    if request.operation != Operation::Create {
        return Ok(allowed);
    }
    let Some(pod) = request.object.as_ref() else {
        return Ok(allowed);
    };
    let ns_name = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    // The API server admits pods only into namespaces that exist, so a
    // miss is the watch lagging (or not synced after a restart), never an
    // absent namespace: guessing "not meshed" would start the pod without
    // its proxy for good.
    let ns = namespace(&ns_name).ok_or_else(|| ReviewError::UnknownNamespace(ns_name.clone()))?;
    let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let decision =
        mycel_inject::should_inject(&pod_annotations, &ns.labels, &ns.annotations, &ns_name);
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    if !decision.inject {
        tracing::debug!(namespace = %ns_name, pod = %name, reason = %decision.reason, "pod not meshed");
        return Ok(allowed);
    }
    if let Some(why) = mycel_inject::unchanged(pod) {
        tracing::debug!(namespace = %ns_name, pod = %name, reason = %why, "pod left as it is");
        return Ok(allowed);
    }
    let defaulted = namespace_defaults(pod, &ns);
    let from_namespace = defaulted.is_some();
    let patch = match defaulted {
        Some(with_defaults) => patch_with_defaults(pod, with_defaults, config),
        None => mycel_inject::patch(pod, config),
    };
    Ok(match patch {
        Ok(patch) => {
            tracing::info!(namespace = %ns_name, pod = %name, "sidecar injected");
            match allowed.with_patch(patch) {
                Ok(r) => r,
                Err(e) => AdmissionResponse::from(request)
                    .deny(format!("mycel: cannot encode the patch: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(namespace = %ns_name, pod = %name, error = %e, "injection refused");
            // A pod author who never wrote the annotation must learn where
            // the bad value is: on the namespace.
            let origin = if from_namespace && mycel_inject::patch(pod, config).is_ok() {
                format!(" (set on namespace {ns_name}, as the default of its pods)")
            } else {
                String::new()
            };
            AdmissionResponse::from(request).deny(format!("mycel sidecar injection: {e}{origin}"))
        }
    })
}

/// Annotations a namespace may set for every pod in it; a pod's own
/// annotation wins.
const NAMESPACE_DEFAULTS: [&str; 2] = [
    mycel_inject::annotations::TRACE_SAMPLING,
    mycel_inject::annotations::ACCESS_LOG,
];

/// The pod as the injector should read it when its namespace sets one of
/// [`NAMESPACE_DEFAULTS`] the pod does not; `None` when nothing changes.
/// Only the injected proxy's flags come from this copy: the patch adds no
/// annotation to the pod.
fn namespace_defaults(pod: &Pod, ns: &NamespaceInfo) -> Option<Pod> {
    let own = pod.metadata.annotations.as_ref();
    let missing: Vec<(&str, &String)> = NAMESPACE_DEFAULTS
        .iter()
        .filter(|key| !own.is_some_and(|a| a.contains_key(**key)))
        .filter_map(|key| Some((*key, ns.annotations.get(*key)?)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut copy = pod.clone();
    let annotations = copy
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (key, value) in missing {
        annotations.insert(key.to_string(), value.clone());
    }
    Some(copy)
}

/// The patch of `pod` that meshes it as the injector reads `with_defaults`
/// (the pod plus its namespace's defaults): the patch is diffed from `pod`,
/// the object the API server applies it to, and the defaults are taken out
/// of the result again, so a pod without annotations gets a patch that
/// adds them, and none of the namespace's.
fn patch_with_defaults(
    pod: &Pod,
    with_defaults: Pod,
    config: &InjectConfig,
) -> Result<json_patch::Patch, mycel_inject::InjectError> {
    let own = pod.metadata.annotations.clone().unwrap_or_default();
    let mut meshed = mycel_inject::inject_pod(with_defaults, config)?;
    if let Some(annotations) = meshed.metadata.annotations.as_mut() {
        annotations
            .retain(|key, _| own.contains_key(key) || !NAMESPACE_DEFAULTS.contains(&key.as_str()));
    }
    let json = |p: &Pod| {
        serde_json::to_value(p).map_err(|e| mycel_inject::InjectError::Serialize(e.to_string()))
    };
    Ok(json_patch::diff(&json(pod)?, &json(&meshed)?))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn body(operation: &str, ns: &str, pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "1d7b4c3e-0000-4000-8000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": ns,
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": null,
            },
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1",
                                      "ports": [{"name": "http", "containerPort": 8080}]}]},
        })
    }

    /// `shop` is labelled for injection, `new-team` is not in the watch
    /// yet, every other namespace exists unlabelled.
    fn meshed_ns(name: &str) -> Option<NamespaceInfo> {
        match name {
            "shop" => Some(NamespaceInfo {
                labels: BTreeMap::from([("mycel.io/inject".to_string(), "enabled".to_string())]),
                annotations: BTreeMap::new(),
            }),
            "new-team" => None,
            _ => Some(NamespaceInfo::default()),
        }
    }

    #[test]
    fn a_pod_in_a_namespace_the_watch_has_not_seen_gets_no_guess() {
        let e = review(
            &body("CREATE", "new-team", pod(json!({}))),
            &InjectConfig::default(),
            meshed_ns,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ReviewError::UnknownNamespace(ns) if ns == "new-team"),
            "{e}"
        );
    }

    fn answer(b: &[u8]) -> Value {
        review(b, &InjectConfig::default(), meshed_ns).unwrap()["response"].clone()
    }

    fn patch_text(r: &Value) -> String {
        let bytes: Vec<u8> = serde_json::from_value(r["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        serde_json::to_string(&patch).unwrap()
    }

    #[test]
    fn a_namespace_sets_the_trace_sampling_and_access_log_of_its_pods_unless_a_pod_says_otherwise()
    {
        let traced_ns = |name: &str| {
            meshed_ns(name).map(|mut ns| {
                ns.annotations = BTreeMap::from([
                    ("mycel.io/trace-sampling".to_string(), "0.25".to_string()),
                    ("mycel.io/access-log".to_string(), "stdout".to_string()),
                ]);
                ns
            })
        };
        let answer_in = |annotations: Value| {
            review(
                &body("CREATE", "shop", pod(annotations)),
                &InjectConfig::default(),
                traced_ns,
            )
            .unwrap()["response"]
                .clone()
        };
        let text = patch_text(&answer_in(json!({})));
        assert!(text.contains("--trace-sampling=0.25"), "{text}");
        assert!(text.contains("--access-log=stdout"), "{text}");
        let text = patch_text(&answer_in(json!({
            "mycel.io/trace-sampling": "1",
            "mycel.io/access-log": "off",
        })));
        assert!(text.contains("--trace-sampling=1"), "{text}");
        assert!(!text.contains("--trace-sampling=0.25"), "{text}");
        assert!(!text.contains("--access-log"), "{text}");
        // A bad namespace value refuses the pod, naming the annotation.
        let bad_ns = |name: &str| {
            meshed_ns(name).map(|mut ns| {
                ns.annotations =
                    BTreeMap::from([("mycel.io/trace-sampling".to_string(), "lots".to_string())]);
                ns
            })
        };
        let r = review(
            &body("CREATE", "shop", pod(json!({}))),
            &InjectConfig::default(),
            bad_ns,
        )
        .unwrap()["response"]
            .clone();
        assert_eq!(r["allowed"], false, "{r}");
        let message = r["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("mycel.io/trace-sampling")
                && message.contains("lots")
                && message.contains("set on namespace shop"),
            "the value and where it is: {message}"
        );
        // The pod's own bad value is the pod's: no namespace named.
        let r = review(
            &body(
                "CREATE",
                "shop",
                pod(json!({"mycel.io/trace-sampling": "many"})),
            ),
            &InjectConfig::default(),
            meshed_ns,
        )
        .unwrap()["response"]
            .clone();
        let message = r["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("many") && !message.contains("namespace shop"),
            "{message}"
        );
    }

    /// The API server applies the patch to the pod it sent, which may have
    /// no annotations at all: the patch must apply to it, mesh it with the
    /// namespace's defaults, and not copy them onto the pod.
    #[test]
    fn a_namespace_default_patch_applies_to_a_pod_without_annotations() {
        let traced_ns = |name: &str| {
            meshed_ns(name).map(|mut ns| {
                ns.annotations = BTreeMap::from([
                    ("mycel.io/trace-sampling".to_string(), "0.5".to_string()),
                    ("mycel.io/access-log".to_string(), "stdout".to_string()),
                ]);
                ns
            })
        };
        for annotations in [None, Some(json!({"mycel.io/trace-sampling": "0"}))] {
            let mut sent = pod(json!({}));
            match &annotations {
                Some(a) => sent["metadata"]["annotations"] = a.clone(),
                None => {
                    sent["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("annotations");
                }
            }
            let r = review(
                &body("CREATE", "shop", sent.clone()),
                &InjectConfig::default(),
                traced_ns,
            )
            .unwrap()["response"]
                .clone();
            assert_eq!(r["allowed"], true, "{r}");
            let bytes: Vec<u8> = serde_json::from_value(r["patch"].clone()).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut stored = sent.clone();
            json_patch::patch(&mut stored, &patch)
                .unwrap_or_else(|e| panic!("{annotations:?}: the patch does not apply: {e}"));
            let proxy = stored["spec"]["initContainers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "mycel-proxy")
                .unwrap()
                .clone();
            let args = proxy["args"].to_string();
            let want = if annotations.is_some() { "0" } else { "0.5" };
            assert!(
                args.contains(&format!("\"--trace-sampling={want}\"")),
                "{args}"
            );
            assert!(args.contains("--access-log=stdout"), "{args}");
            let on_pod = &stored["metadata"]["annotations"];
            assert_eq!(on_pod["mycel.io/injected"], "native", "{on_pod}");
            assert!(on_pod.get("mycel.io/access-log").is_none(), "{on_pod}");
            assert_eq!(
                on_pod.get("mycel.io/trace-sampling").is_some(),
                annotations.is_some(),
                "{on_pod}"
            );
        }
    }

    #[test]
    fn pods_of_meshed_namespaces_get_the_patch_and_others_do_not() {
        let r = answer(&body("CREATE", "shop", pod(json!({}))));
        assert_eq!(r["allowed"], true);
        assert_eq!(r["uid"], "1d7b4c3e-0000-4000-8000-000000000001");
        assert_eq!(r["patchType"], "JSONPatch");
        // kube serializes the patch bytes as a list of numbers, which the
        // API server's decoder takes as it takes base64.
        let bytes: Vec<u8> = serde_json::from_value(r["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("mycel-proxy") && text.contains("mycel.io/meshed"),
            "{text}"
        );

        for (op, ns, annotations) in [
            ("CREATE", "other", json!({})),
            ("CREATE", "shop", json!({"mycel.io/inject": "disabled"})),
            ("CREATE", "shop", json!({"mycel.io/injected": "native"})),
            ("UPDATE", "shop", json!({})),
            (
                "CREATE",
                "kube-system",
                json!({"mycel.io/inject": "enabled"}),
            ),
        ] {
            let r = answer(&body(op, ns, pod(annotations.clone())));
            assert_eq!(r["allowed"], true, "{op} {ns} {annotations}");
            assert!(
                r.get("patch").is_none_or(Value::is_null),
                "{op} {ns} {annotations}: {r}"
            );
        }
    }

    #[test]
    fn a_pod_the_injector_refuses_is_denied_naming_the_annotation() {
        for (key, value, wants) in [
            ("mycel.io/proxy-cpu-limit", "lots", &[][..]),
            // A mode the proxy does not know: the accepted ones are named.
            ("mycel.io/mtls-mode", "off", &["strict", "permissive"][..]),
        ] {
            let r = answer(&body("CREATE", "shop", pod(json!({ key: value }))));
            assert_eq!(r["allowed"], false, "{key}: {r}");
            let msg = r["status"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains(key), "{r}");
            for want in wants {
                assert!(msg.contains(want), "{want}: {r}");
            }
        }
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        let cfg = InjectConfig::default();
        for b in [
            &b""[..],
            b"{}",
            b"[1,2]",
            b"{\"request\": 5}",
            &[0xff; 64][..],
        ] {
            assert!(
                review(b, &cfg, meshed_ns).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
