//! CRD manifests from the types: one YAML file per CRD, written to
//! `crds/generated/` and to the chart's `helm/mycel/crds/`. The chart also
//! ships the upstream Gateway API CRDs that `crds/gateway-api/update.sh`
//! vendors into [`UPSTREAM_DIR`]; its copies must equal those.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSON,
};
use kube::CustomResourceExt;

use crate::{AuthorizationPolicy, GatewayPolicy, MeshConfig, PeerAuthentication, TrafficPolicy};

/// Every CRD of the mesh.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut mesh_config = MeshConfig::crd();
    only_name(&mut mesh_config, crate::mesh_config::NAME);
    vec![
        mesh_config,
        TrafficPolicy::crd(),
        AuthorizationPolicy::crd(),
        PeerAuthentication::crd(),
        GatewayPolicy::crd(),
    ]
}

/// Restricts a singleton's `metadata.name` to one value. A CRD schema may
/// constrain only `metadata.name` and `metadata.generateName`; a refusal
/// then names `metadata.name`, which a root CEL rule could not.
fn only_name(crd: &mut CustomResourceDefinition, name: &str) {
    for version in &mut crd.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(root) = root {
            let metadata = JSONSchemaProps {
                type_: Some("object".into()),
                properties: Some(BTreeMap::from([(
                    "name".to_string(),
                    JSONSchemaProps {
                        type_: Some("string".into()),
                        enum_: Some(vec![JSON(serde_json::Value::String(name.into()))]),
                        ..JSONSchemaProps::default()
                    },
                )])),
                ..JSONSchemaProps::default()
            };
            root.properties
                .get_or_insert_with(BTreeMap::new)
                .insert("metadata".into(), metadata);
        }
    }
}

/// The command that rewrites the files, for messages about stale ones.
pub const REGENERATE: &str = "cargo run -p mycel-crds";

const HEADER: &str =
    "# Generated from the Rust types in crds/src by `cargo run -p mycel-crds`; do not edit.\n";

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("rendering {name}: {source}")]
    Render {
        name: String,
        source: serde_saphyr::SerializeError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `(file name, YAML text)` for every CRD: `<plural>.<group>.yaml`.
pub fn files() -> Result<Vec<(String, String)>, GenerateError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_saphyr::to_string(&crd).map_err(|source| GenerateError::Render {
                name: name.clone(),
                source,
            })?;
            Ok((format!("{name}.yaml"), format!("{HEADER}{body}")))
        })
        .collect()
}

/// The directories that hold the generated files, from the repository root.
pub fn output_dirs(repo_root: &Path) -> [PathBuf; 2] {
    [
        repo_root.join("crds/generated"),
        repo_root.join("helm/mycel/crds"),
    ]
}

/// The repository root, for the binary and the tests.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where `crds/gateway-api/update.sh` puts the upstream CRDs the chart
/// ships beside Mycel's own, from the repository root.
pub const UPSTREAM_DIR: &str = "crds/gateway-api/crds";
/// The command that vendors them anew.
pub const UPDATE_UPSTREAM: &str = "crds/gateway-api/update.sh";

/// `(file name, YAML text)` of every upstream CRD in [`UPSTREAM_DIR`]
/// (none when the directory does not exist), sorted by name.
pub fn upstream_files(repo_root: &Path) -> Result<Vec<(String, String)>, GenerateError> {
    let dir = repo_root.join(UPSTREAM_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        if let (Some(name), true) = (name, path.extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}

/// A file an output directory must hold, and what to say when it does not.
#[derive(Clone)]
struct Expected {
    name: String,
    text: String,
    /// Where its content comes from, for "differs from ...".
    origin: String,
}

/// What each output directory must hold: Mycel's CRDs in both, the
/// upstream ones in the chart's only.
fn expected(repo_root: &Path) -> Result<Vec<(PathBuf, Vec<Expected>)>, GenerateError> {
    let ours: Vec<Expected> = files()?
        .into_iter()
        .map(|(name, text)| Expected {
            name,
            text,
            origin: "the types".into(),
        })
        .collect();
    let upstream = upstream_files(repo_root)?;
    let [generated, chart] = output_dirs(repo_root);
    let mut in_chart = ours.clone();
    in_chart.extend(upstream.into_iter().map(|(name, text)| Expected {
        origin: format!("{UPSTREAM_DIR}/{name}"),
        name,
        text,
    }));
    Ok(vec![(generated, ours), (chart, in_chart)])
}

fn is_expected(files: &[Expected], path: &Path) -> bool {
    files
        .iter()
        .any(|e| path.file_name().is_some_and(|f| f == e.name.as_str()))
}

/// Writes every file into every output directory (created if missing),
/// copies the upstream CRDs into the chart, and removes files of CRDs that
/// no longer exist.
pub fn write_all(repo_root: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let mut written = Vec::new();
    for (dir, files) in expected(repo_root)? {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GenerateError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "yaml") && !is_expected(&files, &path) {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        for e in &files {
            let path = dir.join(&e.name);
            std::fs::write(&path, &e.text).map_err(io(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// What differs between the files on disk and the types or the vendored
/// upstream CRDs: one line per missing, stale or extra file.
pub fn drift(repo_root: &Path) -> Result<Vec<String>, GenerateError> {
    let mut out = Vec::new();
    for (dir, files) in expected(repo_root)? {
        for e in &files {
            let path = dir.join(&e.name);
            match std::fs::read_to_string(&path) {
                Ok(on_disk) if on_disk == e.text => {}
                Ok(_) => out.push(format!("{} differs from {}", path.display(), e.origin)),
                Err(_) => out.push(format!("{} is missing", path.display())),
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if path.extension().is_some_and(|e| e == "yaml") && !is_expected(&files, &path) {
                    out.push(format!("{} belongs to no CRD type", path.display()));
                }
            }
        }
    }
    Ok(out)
}
