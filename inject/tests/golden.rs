//! Golden files: `golden/<case>.in.yaml` is a pod as a user writes it,
//! `golden/<case>.out.yaml` the pod the injector makes of it with the
//! default settings. `MYCEL_UPDATE_GOLDEN=1 cargo test -p mycel-inject
//! --test golden` rewrites the outputs; review the diff before committing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use mycel_inject::{inject_pod, patch, InjectConfig};

fn cases() -> Vec<(String, PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".in.yaml")?
                .to_string();
            let expected = dir.join(format!("{name}.out.yaml"));
            Some((name, path, expected))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "golden cases missing in {}", dir.display());
    out
}

fn read_pod(path: &Path) -> Pod {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(pod: &Pod) -> String {
    let value = serde_json::to_value(pod).unwrap();
    serde_saphyr::to_string(&value).unwrap()
}

#[test]
fn injected_pods_match_the_golden_files() {
    let update = std::env::var_os("MYCEL_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cfg = InjectConfig::default();
    let mut stale = Vec::new();
    for (name, input, expected) in cases() {
        let got = inject_pod(read_pod(&input), &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        if update {
            std::fs::write(&expected, yaml(&got)).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected)
            .ok()
            .and_then(|t| serde_saphyr::from_str::<serde_json::Value>(&t).ok());
        if want.as_ref() != Some(&serde_json::to_value(&got).unwrap()) {
            stale.push(format!("{name}:\n{}", yaml(&got)));
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (MYCEL_UPDATE_GOLDEN=1 cargo test -p mycel-inject --test golden rewrites them):\n{}",
        stale.join("\n")
    );
}

#[test]
fn golden_outputs_are_fixed_points_and_patches_reproduce_them() {
    let cfg = InjectConfig::default();
    for (name, input, _) in cases() {
        let pod = read_pod(&input);
        let once = inject_pod(pod.clone(), &cfg).unwrap();
        assert_eq!(
            inject_pod(once.clone(), &cfg).unwrap(),
            once,
            "{name}: injected twice"
        );
        assert!(
            patch(&once, &cfg).unwrap().0.is_empty(),
            "{name}: non-empty second patch"
        );
        let mut doc = serde_json::to_value(&pod).unwrap();
        json_patch::patch(&mut doc, &patch(&pod, &cfg).unwrap()).unwrap();
        assert_eq!(doc, serde_json::to_value(&once).unwrap(), "{name}: patch");
    }
}
