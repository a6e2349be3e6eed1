//! `mycelctl install` prints the chart: its committed renderings
//! (`cli/src/install/rendered/`) are `helm template`'s output with default
//! values, and its substitution for another namespace gives exactly what
//! helm renders for that namespace.

use std::path::PathBuf;

use mycel_tests::{k8s, process};

use super::{chart, helm, repo, text};

/// The namespace `any-namespace.yaml` is rendered with (cli/src/install.rs).
const PLACEHOLDER: &str = "mycelctl-install-namespace";

fn helm_template(namespace: &str) -> String {
    let chart = chart();
    let args = [
        "template",
        "mycel",
        &chart,
        "-n",
        namespace,
        "--include-crds",
    ];
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn rendered(file: &str) -> PathBuf {
    repo().join("cli/src/install/rendered").join(file)
}

/// `MYCEL_UPDATE_GOLDEN=1` rewrites the renderings (then rebuild mycelctl,
/// which embeds them).
#[test]
fn committed_renderings_are_helm_templates_output() {
    if !k8s::tools_available() {
        return;
    }
    let update = std::env::var("MYCEL_UPDATE_GOLDEN").as_deref() == Ok("1");
    for (file, ns) in [
        ("mycel-system.yaml", "mycel-system"),
        ("any-namespace.yaml", PLACEHOLDER),
    ] {
        let fresh = helm_template(ns);
        if update {
            std::fs::write(rendered(file), &fresh).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(rendered(file)).unwrap();
        assert!(
            committed == fresh,
            "cli/src/install/rendered/{file} differs from `helm template mycel helm/mycel -n {ns} --include-crds`: \
             regenerate with MYCEL_UPDATE_GOLDEN=1 cargo test -p mycel-tests --test helm install::"
        );
    }
}

/// The chart part of `mycelctl install` output: everything after the
/// Namespace document it puts first.
fn chart_part(output: &str) -> &str {
    assert!(output.starts_with("---\n"), "{output}");
    let at = output[4..].find("\n---\n").unwrap() + 5;
    &output[at..]
}

#[test]
fn mycelctl_install_prints_what_helm_renders_for_any_namespace() {
    if !k8s::tools_available() {
        return;
    }
    for ns in ["mycel-system", "mesh-a"] {
        let out = std::process::Command::new(process::bin("mycelctl"))
            .args(["install", "--namespace", ns])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(
            printed.starts_with(&format!(
                "---\n# Source: mycelctl install (helm install --create-namespace)\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
            )),
            "{printed}"
        );
        assert!(
            chart_part(&printed) == helm_template(ns),
            "mycelctl install --namespace {ns} differs from helm template -n {ns}: a namespace the \
             substitution in cli/src/install.rs misses, or stale renderings"
        );
    }
}
