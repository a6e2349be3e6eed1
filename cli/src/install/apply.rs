//! `mycelctl install --apply`: server-side apply of the rendered documents,
//! CRDs first (and established) so that nothing applied later names a kind
//! the API server does not serve yet, then the Namespace, then the rest in
//! helm's order.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::{pinned_kind, Scope};
use kube::{Api, Client};

/// What one API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the API server may take to serve a new CRD.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// The field manager of everything mycelctl applies.
pub const FIELD_MANAGER: &str = "mycelctl";

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = kube::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {CALL_TIMEOUT:?}"),
    }
}

fn rank(doc: &serde_json::Value) -> u8 {
    match doc.get("kind").and_then(|k| k.as_str()) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

pub async fn apply(client: &Client, mut docs: Vec<serde_json::Value>) -> anyhow::Result<()> {
    // A stable sort keeps helm's order within each rank.
    docs.sort_by_key(rank);
    let mut crds: Vec<String> = Vec::new();
    for doc in docs {
        if rank(&doc) > 0 && !crds.is_empty() {
            for name in std::mem::take(&mut crds) {
                established(client, &name).await?;
            }
        }
        let gvk = super::gvk(&doc)?;
        let obj: DynamicObject =
            serde_json::from_value(doc).context("a rendered document is not an object")?;
        let name = obj
            .metadata
            .name
            .clone()
            .context("a rendered document has no name")?;
        let what = format!("{} {name}", gvk.kind);
        let (resource, caps) = timed(
            &format!("finding {} in the API", gvk.kind),
            pinned_kind(client, &gvk),
        )
        .await?;
        let api: Api<DynamicObject> = match (&caps.scope, &obj.metadata.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => bail!("{what} is namespaced but has no namespace"),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        // force: a rerun of install takes back fields someone else changed,
        // which is what installing means.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        timed(
            &format!("applying {what}"),
            api.patch(&name, &params, &Patch::Apply(&obj)),
        )
        .await?;
        println!("applied {what}");
        if gvk.kind == "CustomResourceDefinition" {
            crds.push(name);
        }
    }
    for name in crds {
        established(client, &name).await?;
    }
    Ok(())
}

/// Waits until the API server serves the CRD `name`.
async fn established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        let crd = timed(
            &format!("reading CustomResourceDefinition {name}"),
            api.get(name),
        )
        .await?;
        let ready = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if ready {
            println!("established CustomResourceDefinition {name}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CustomResourceDefinition {name} not established within {ESTABLISH_TIMEOUT:?}: kubectl describe crd {name}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
