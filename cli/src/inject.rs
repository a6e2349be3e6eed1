//! `mycelctl inject -f FILE|-`: the webhook's injection, offline. Reads
//! multi-document YAML, meshes every Pod and the pod template of every
//! Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob (and the
//! items of a `List`), and writes all documents to stdout; other kinds pass
//! through unchanged. A pod that says `mycel.io/inject: disabled`, or lives
//! in a namespace that is never meshed, is left alone (noted on stderr).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use mycel_inject::{annotations, should_inject, InjectConfig, InjectError};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifest to mesh (multi-document YAML), or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub file: PathBuf,
    /// Injector settings (YAML, the webhook's `InjectConfig`: proxyImage,
    /// controllerAddress, sidecarMode, ...); defaults otherwise.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: InjectArgs) -> anyhow::Result<()> {
    let input = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg: InjectConfig = serde_saphyr::from_str(&text)
                .with_context(|| format!("{}: not an injector config", path.display()))?;
            mycel_inject::check_config(&cfg).with_context(|| path.display().to_string())?;
            cfg
        }
        None => InjectConfig::default(),
    };
    let (out, notes) = inject_documents(&input, &cfg)?;
    for note in notes {
        eprintln!("{note}");
    }
    print!("{out}");
    Ok(())
}

/// The meshed documents as YAML, and one note per object left alone.
pub fn inject_documents(input: &str, cfg: &InjectConfig) -> anyhow::Result<(String, Vec<String>)> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).context("the input is not YAML")?;
    let mut notes = Vec::new();
    let mut rendered = Vec::new();
    for (i, mut doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
        let what = describe(&doc);
        mesh_object(&mut doc, cfg, &mut notes)
            .with_context(|| format!("document {} ({what})", i + 1))?;
        rendered.push(
            serde_saphyr::to_string(&doc).with_context(|| format!("writing document {}", i + 1))?,
        );
    }
    Ok((rendered.join("---\n"), notes))
}

/// `Deployment shop/web`, for messages.
fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("object");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn mesh_object(doc: &mut Value, cfg: &InjectConfig, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let what = describe(doc);
    match doc["kind"].as_str().unwrap_or_default() {
        "Pod" => {
            let pod: Pod = serde_json::from_value(doc.clone()).context("not a Pod")?;
            if let Some(pod) = mesh_pod(pod, &namespace, cfg, &what, notes)? {
                *doc = serde_json::to_value(pod)?;
            }
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            mesh_template(&mut doc["spec"]["template"], &namespace, cfg, &what, notes)?;
        }
        "CronJob" => {
            let template = &mut doc["spec"]["jobTemplate"]["spec"]["template"];
            mesh_template(template, &namespace, cfg, &what, notes)?;
        }
        "List" => {
            if let Some(items) = doc["items"].as_array_mut() {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_what = describe(item);
                    mesh_object(item, cfg, notes)
                        .with_context(|| format!("items[{i}] ({item_what})"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn mesh_template(
    template: &mut Value,
    namespace: &str,
    cfg: &InjectConfig,
    what: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    if template.is_null() {
        anyhow::bail!("no pod template (spec.template)");
    }
    let t: PodTemplateSpec =
        serde_json::from_value(template.clone()).context("spec.template is not a pod template")?;
    let pod = Pod {
        metadata: t.metadata.unwrap_or_default(),
        spec: t.spec,
        status: None,
    };
    if let Some(pod) = mesh_pod(pod, namespace, cfg, what, notes)? {
        let meshed = PodTemplateSpec {
            metadata: Some(pod.metadata),
            spec: pod.spec,
        };
        *template = serde_json::to_value(meshed)?;
    }
    Ok(())
}

/// The meshed pod, or `None` when it is left alone (with a note).
fn mesh_pod(
    pod: Pod,
    namespace: &str,
    cfg: &InjectConfig,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Pod>, InjectError> {
    // Offline, the user asked for this manifest to be meshed: it stands in
    // for a namespace labelled enabled; the pod's own annotation and the
    // system namespaces still win.
    let asked = BTreeMap::from([(annotations::INJECT.to_string(), "enabled".to_string())]);
    let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let decision = should_inject(&pod_annotations, &asked, &BTreeMap::new(), namespace);
    if !decision.inject {
        notes.push(format!("{what}: left alone: {}", decision.reason));
        return Ok(None);
    }
    if let Some(why) = mycel_inject::unchanged(&pod) {
        notes.push(format!("{what}: left alone: {why}"));
        return Ok(None);
    }
    mycel_inject::inject_pod(pod, cfg).map(Some)
}

#[cfg(test)]
mod tests;
