//! `mycelctl install`: the chart's manifests without helm, printed for
//! `kubectl apply -f -` or applied here with server-side apply.
//!
//! The manifests are the chart itself, rendered by `helm template` with its
//! default values and committed under `install/rendered/` (the helm test
//! suite fails when they differ from a fresh rendering, and
//! `MYCEL_UPDATE_GOLDEN=1` rewrites them): `mycel-system.yaml` for the
//! default namespace, `any-namespace.yaml` rendered with the namespace
//! [`PLACEHOLDER`]. Another `--namespace` replaces that word and recomputes
//! the one value derived from it (the `checksum/config` annotation, a
//! sha256 of the ConfigMap as helm computes it). The helm suite checks that
//! the result equals `helm template -n <other>` byte for byte, so the
//! substitution cannot miss a place where the chart spells the namespace.
//! The placeholder's rendering is separate from the default one because the
//! chart dedupes its never-injected namespace list (`mycel-system` and the
//! release namespace).

mod apply;

use std::path::PathBuf;

use anyhow::{bail, Context};
use kube::core::{ApiResource, GroupVersionKind};
use sha2::{Digest, Sha256};

/// The namespace the chart is rendered for by default.
pub const DEFAULT_NAMESPACE: &str = "mycel-system";
/// The namespace `any-namespace.yaml` was rendered with.
pub const PLACEHOLDER: &str = "mycelctl-install-namespace";
/// `helm template mycel helm/mycel -n mycel-system --include-crds`.
pub const RENDERED_DEFAULT: &str = include_str!("install/rendered/mycel-system.yaml");
/// The same with `-n mycelctl-install-namespace`.
pub const RENDERED_ANY: &str = include_str!("install/rendered/any-namespace.yaml");

/// Where helm says each document comes from; the ConfigMap's document is
/// what `checksum/config` hashes.
const CONFIGMAP_SOURCE: &str = "# Source: mycel/templates/configmap.yaml\n";
const CHECKSUM_KEY: &str = "checksum/config: ";

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Namespace to install the controller into (created if absent).
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Apply the manifests to the cluster (server-side apply, field manager
    /// mycelctl; CRDs first, then waits until they are established) instead
    /// of printing them.
    #[arg(long)]
    pub apply: bool,
    /// Kubeconfig for --apply (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH", requires = "apply")]
    pub kubeconfig: Option<PathBuf>,
}

pub async fn run(args: InstallArgs) -> anyhow::Result<()> {
    let text = manifests(&args.namespace)?;
    if !args.apply {
        print!("{text}");
        return Ok(());
    }
    let docs = documents(&text)?;
    let client = crate::kubeconfig::client(args.kubeconfig.as_deref(), None, apply::CALL_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)
        .context("connecting to the API server")?;
    apply::apply(&client, docs).await
}

/// Refuses a namespace Kubernetes would refuse (a DNS label), and the
/// system namespaces the webhook must never see.
fn check_namespace(ns: &str) -> anyhow::Result<()> {
    let label = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !label {
        bail!("--namespace {ns:?}: not a namespace name (lowercase letters, digits and '-', at most 63)");
    }
    if ns.starts_with("kube-") || ns == "default" {
        bail!(
            "--namespace {ns}: Mycel gets a namespace of its own, not a system or the default one"
        );
    }
    Ok(())
}

/// The whole install for `namespace`: its Namespace, then the chart.
pub fn manifests(namespace: &str) -> anyhow::Result<String> {
    check_namespace(namespace)?;
    let chart = if namespace == DEFAULT_NAMESPACE {
        RENDERED_DEFAULT.to_string()
    } else {
        with_checksum(&RENDERED_ANY.replace(PLACEHOLDER, namespace))?
    };
    // The chart leaves the namespace to `helm install --create-namespace`.
    Ok(format!(
        "---\n# Source: mycelctl install (helm install --create-namespace)\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    app.kubernetes.io/part-of: mycel\n{chart}"
    ))
}

/// Sets `checksum/config` to the sha256 of the ConfigMap's document, as
/// the chart's `include ... | sha256sum` computes it.
fn with_checksum(text: &str) -> anyhow::Result<String> {
    let start = text
        .find(CONFIGMAP_SOURCE)
        .context("the rendered chart has no configmap.yaml")?
        + CONFIGMAP_SOURCE.len();
    let end = text[start..]
        .find("\n---\n")
        .map_or(text.len(), |i| start + i + 1);
    let sum = hex::encode(Sha256::digest(&text.as_bytes()[start..end]));
    let at = text
        .find(CHECKSUM_KEY)
        .context("the rendered chart has no checksum/config")?
        + CHECKSUM_KEY.len();
    let old_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    Ok(format!("{}{sum}{}", &text[..at], &text[old_end..]))
}

/// The documents of a rendering, as JSON values (empty ones dropped).
pub fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let docs = serde_saphyr::from_multiple::<serde_json::Value>(text)
        .context("parsing the rendered manifests")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// One kind of object the install creates, where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub group: String,
    pub plural: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
}

/// The kinds of object `manifests(namespace)` creates, each once, for
/// `check --pre`'s access reviews.
pub fn resources(namespace: &str) -> anyhow::Result<Vec<Resource>> {
    let mut out = Vec::new();
    for doc in documents(&manifests(namespace)?)? {
        let gvk = gvk(&doc)?;
        let plural = ApiResource::from_gvk(&gvk).plural;
        let namespace = doc
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .map(String::from);
        let r = Resource {
            group: gvk.group,
            plural,
            namespace,
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A document's group, version and kind.
pub fn gvk(doc: &serde_json::Value) -> anyhow::Result<GroupVersionKind> {
    let field = |f: &str| {
        doc.get(f)
            .and_then(|v| v.as_str())
            .with_context(|| format!("a rendered document has no {f}"))
    };
    let (api_version, kind) = (field("apiVersion")?, field("kind")?);
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Ok(GroupVersionKind::gvk(group, version, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_checked() {
        for ok in ["mycel-system", "mesh-a", "m1"] {
            assert!(manifests(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Mesh",
            "-a",
            "a-",
            "kube-system",
            "default",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(manifests(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn another_namespace_replaces_every_placeholder_and_the_checksum() {
        let text = manifests("mesh-a").unwrap();
        assert!(!text.contains(PLACEHOLDER));
        assert!(!text.contains("namespace: mycel-system"), "{text}");
        assert!(text.contains("--ca-secret=mesh-a/mycel-ca"));
        let sum = |t: &str| {
            let at = t.find(CHECKSUM_KEY).unwrap() + CHECKSUM_KEY.len();
            t[at..at + 64].to_string()
        };
        assert_ne!(sum(&text), sum(RENDERED_ANY));
        // The default rendering is helm's own: recomputing changes nothing.
        assert_eq!(with_checksum(RENDERED_DEFAULT).unwrap(), RENDERED_DEFAULT);
    }

    /// Without helm at hand, the embedded CRDs still cannot fall behind
    /// the Rust types (`cargo run -p mycel-crds` then the helm suite's
    /// MYCEL_UPDATE_GOLDEN=1 brings them along), nor behind the upstream
    /// Gateway API CRDs the chart ships (`crds/gateway-api/update.sh`).
    #[test]
    fn embedded_crds_are_the_generated_and_vendored_ones() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let value = |crd: CustomResourceDefinition| serde_json::to_value(crd).unwrap();
        let mut want: Vec<serde_json::Value> = mycel_crds::generate::crds()
            .into_iter()
            .map(value)
            .collect();
        let root = mycel_crds::generate::repo_root();
        for (_, text) in mycel_crds::generate::upstream_files(&root).unwrap() {
            want.push(value(serde_saphyr::from_str(&text).unwrap()));
        }
        let name = |v: &serde_json::Value| v["metadata"]["name"].as_str().unwrap().to_string();
        want.sort_by_key(name);
        for text in [RENDERED_DEFAULT, RENDERED_ANY] {
            let mut embedded: Vec<serde_json::Value> = documents(text)
                .unwrap()
                .into_iter()
                .filter(|d| d["kind"] == "CustomResourceDefinition")
                .map(|d| value(serde_json::from_value(d).unwrap()))
                .collect();
            embedded.sort_by_key(name);
            assert!(
                embedded == want,
                "cli/src/install/rendered/ holds other CRDs than crds/src and crds/gateway-api/crds: \
                 run cargo run -p mycel-crds, then MYCEL_UPDATE_GOLDEN=1 cargo test -p mycel-tests --test helm install::"
            );
        }
    }

    #[test]
    fn resources_cover_every_kind_the_chart_creates() {
        let r = resources("mesh-a").unwrap();
        let has = |group: &str, plural: &str, namespaced: bool| {
            r.iter().any(|x| {
                x.group == group && x.plural == plural && x.namespace.is_some() == namespaced
            })
        };
        assert!(has("", "namespaces", false), "{r:?}");
        assert!(has(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            false
        ));
        assert!(has("rbac.authorization.k8s.io", "clusterroles", false));
        assert!(has(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            false
        ));
        assert!(has("apps", "deployments", true));
        assert!(has("networking.k8s.io", "networkpolicies", true));
        assert!(r
            .iter()
            .all(|x| x.namespace.as_deref().is_none_or(|n| n == "mesh-a")));
    }
}
