//! `kind: AuthorizationPolicy` documents of mesh.yaml: read as the CRD's
//! type and converted (and checked) as the Kubernetes source does.

use mycel_crds::AuthorizationPolicy;
use serde_json::Value;

use super::{check_header, deserialize_strict, is_dns_label, Doc, ParseError};
use crate::authz::{from_spec, SelectedPolicy};

pub const KIND: &str = "AuthorizationPolicy";
const API_VERSION: &str = "mycel.io/v1alpha1";

pub fn parse_document(document: usize, mut value: Value) -> Result<SelectedPolicy, ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let policy: AuthorizationPolicy =
        deserialize_strict(&d, value, "a mycel.io/v1alpha1 AuthorizationPolicy")?;
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or_else(|| d.err("metadata.name", "is missing"))?;
    if !is_dns_label(&name) {
        return Err(d.err(
            "metadata.name",
            format!("{name:?} is not a valid name (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    if !is_dns_label(&namespace) {
        return Err(d.err(
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    from_spec(&namespace, &name, &policy.spec).map_err(|e| d.err(&e.field, e.problem))
}
