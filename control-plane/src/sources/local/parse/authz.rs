//! `kind: AuthorizationPolicy` documents of mesh.yaml: read as the CRD's
//! type and converted (and checked) as the Kubernetes source does.

use mycel_crds::AuthorizationPolicy;
use serde_json::Value;

use super::{check_header, deserialize_strict, object_key, Doc, ParseError};
use crate::authz::{from_spec, SelectedPolicy};

pub const KIND: &str = "AuthorizationPolicy";
const API_VERSION: &str = "mycel.io/v1alpha1";

pub fn parse_document(document: usize, mut value: Value) -> Result<SelectedPolicy, ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let policy: AuthorizationPolicy =
        deserialize_strict(&d, value, "a mycel.io/v1alpha1 AuthorizationPolicy")?;
    let (namespace, name) = object_key(&d, &policy.metadata)?;
    from_spec(&namespace, &name, &policy.spec).map_err(|e| d.err(&e.field, e.problem))
}
