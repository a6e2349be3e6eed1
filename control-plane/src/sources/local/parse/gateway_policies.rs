//! `kind: GatewayPolicy` documents of mesh.yaml: read strictly as the
//! CRD's type, checked by [`GatewayPolicySpec::validate`] (the schema's
//! rules, as the API server would apply them in a cluster), and kept by
//! `(namespace, name)` for the `ExtensionRef`s of routes, which copy them
//! in. A name declared twice is an error.

use std::collections::BTreeMap;

use mycel_crds::{GatewayPolicy, GatewayPolicySpec};
use serde_json::Value;

use super::{check_header, deserialize_strict, object_key, unique_by_name, Doc, ParseError};

pub const KIND: &str = "GatewayPolicy";
const API_VERSION: &str = "mycel.io/v1alpha1";

/// One policy document, validated on its own.
pub struct Parsed {
    namespace: String,
    name: String,
    /// `<namespace>/<name>`, for duplicates.
    key: String,
    spec: GatewayPolicySpec,
}

pub fn parse_document(document: usize, mut value: Value) -> Result<(usize, Parsed), ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let policy: GatewayPolicy = deserialize_strict(&d, value, "a mycel.io/v1alpha1 GatewayPolicy")?;
    let (namespace, name) = object_key(&d, &policy.metadata)?;
    policy
        .spec
        .validate()
        .map_err(|e| d.err(&e.field, e.message))?;
    Ok((
        document,
        Parsed {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            spec: policy.spec,
        },
    ))
}

/// Every policy by `(namespace, name)`, for routes' `ExtensionRef`s.
pub fn by_name(
    parsed: Vec<(usize, Parsed)>,
) -> Result<BTreeMap<(String, String), GatewayPolicySpec>, ParseError> {
    Ok(unique_by_name(parsed, KIND, |p| &p.key)?
        .into_iter()
        .map(|p| ((p.namespace, p.name), p.spec))
        .collect())
}

#[cfg(test)]
mod tests;
