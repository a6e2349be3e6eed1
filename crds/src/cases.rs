//! Validation cases as data, for the API-server test tier: every file in
//! `crds/tests/cases/valid/` must be accepted and every file in
//! `crds/tests/cases/invalid/` refused, with the error naming the field its
//! `# expect: <field path>` line gives.
//!
//! A file holds one object (created), or two YAML documents: the first is
//! created, then the second applied as an update of it (for rules on
//! `oldSelf`, such as the immutable trust domain).

use std::path::{Path, PathBuf};

/// One case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// File name without `.yaml`.
    pub name: String,
    pub path: PathBuf,
    /// Whether the API server must accept it.
    pub valid: bool,
    /// For an invalid case, the field path the refusal must name, e.g.
    /// `spec.identity.certificateTtl`.
    pub expect_field: Option<String>,
    /// Objects to create and then update, in order (one or two).
    pub objects: Vec<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Shape { path: PathBuf, message: String },
}

/// The directory of the case files in this repository.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Every case under `dir` (`valid/` and `invalid/`), sorted by name.
pub fn load(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut out = Vec::new();
    for (sub, valid) in [("valid", true), ("invalid", false)] {
        let sub_dir = dir.join(sub);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaseError::Io { path, source }
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&sub_dir)
            .map_err(io(&sub_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            out.push(parse(&path, &text, valid)?);
        }
    }
    Ok(out)
}

/// [`load`] of this repository's cases.
pub fn all() -> Result<Vec<Case>, CaseError> {
    load(&cases_dir())
}

fn parse(path: &Path, text: &str, valid: bool) -> Result<Case, CaseError> {
    let shape = |message: String| CaseError::Shape {
        path: path.to_path_buf(),
        message,
    };
    let expect_field = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("# expect:"))
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty());
    match (valid, &expect_field) {
        (false, None) => {
            return Err(shape(
                "an invalid case needs a line `# expect: <field path>`".into(),
            ))
        }
        (true, Some(_)) => return Err(shape("a valid case expects no error".into())),
        _ => {}
    }
    let objects: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| CaseError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let objects: Vec<_> = objects.into_iter().filter(|o| !o.is_null()).collect();
    if !(1..=2).contains(&objects.len()) {
        return Err(shape(format!(
            "{} documents; one (create) or two (create, then update)",
            objects.len()
        )));
    }
    Ok(Case {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        valid,
        expect_field,
        objects,
    })
}
