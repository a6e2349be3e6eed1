//! `kind: Secret` documents of mesh.yaml (`v1`, type `kubernetes.io/tls`):
//! the certificates a Gateway's HTTPS listeners name, read as Kubernetes'
//! own type so a manifest means the same here and in a cluster. Their
//! contents are checked where a listener names them
//! ([`crate::routes::gateway::certificates`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use mycel_api::names::{self, NameKind};
use serde_json::Value;

use super::{deserialize_strict, Doc, ParseError};
use crate::routes::gateway::certificates::{TlsSecret, TLS_SECRET_TYPE};

pub const KIND: &str = "Secret";

/// A TLS Secret, its `(namespace, name)` and the document it came from.
pub struct Parsed {
    pub document: usize,
    pub key: (String, String),
    pub secret: TlsSecret,
}

pub fn parse_document(document: usize, value: Value) -> Result<Parsed, ParseError> {
    let d = Doc { document };
    match value.get("apiVersion") {
        Some(Value::String(v)) if v == "v1" => {}
        Some(other) => {
            return Err(d.err(
                "apiVersion",
                format!("must be v1 for kind Secret, found {other}"),
            ))
        }
        None => return Err(d.err("apiVersion", "is missing (want v1)")),
    }
    let secret: Secret = deserialize_strict(&d, value, "a v1 Secret")?;
    let name = secret
        .metadata
        .name
        .clone()
        .ok_or_else(|| d.err("metadata.name", "is missing"))?;
    names::validate(NameKind::Secret, &name).map_err(|e| d.err("metadata.name", e.to_string()))?;
    let namespace = super::namespace(&d, secret.metadata.namespace.as_deref())?;
    let tls = TlsSecret::from_secret(&secret)
        .map_err(|e| d.err("data", e))?
        .ok_or_else(|| {
            d.err(
                "type",
                format!(
                    "mesh.yaml reads only Secrets of type {TLS_SECRET_TYPE} (the certificates of HTTPS listeners), found {:?}",
                    secret.type_.as_deref().unwrap_or("")
                ),
            )
        })?;
    Ok(Parsed {
        document,
        key: (namespace, name),
        secret: tls,
    })
}

/// The file's TLS Secrets by `(namespace, name)`; a second one of the
/// same name is an error.
pub fn by_key(parsed: Vec<Parsed>) -> Result<BTreeMap<(String, String), TlsSecret>, ParseError> {
    let mut out: BTreeMap<(String, String), (usize, TlsSecret)> = BTreeMap::new();
    for p in parsed {
        if let Some((first, _)) = out.get(&p.key) {
            return Err(ParseError::Document {
                document: p.document,
                message: format!(
                    "Secret {}/{} is already declared in document {first}",
                    p.key.0, p.key.1
                ),
            });
        }
        out.insert(p.key, (p.document, p.secret));
    }
    Ok(out.into_iter().map(|(k, (_, s))| (k, s)).collect())
}
