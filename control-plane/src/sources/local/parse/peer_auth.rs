//! `kind: PeerAuthentication` documents of mesh.yaml: read as the CRD's
//! type and converted (and checked) as the Kubernetes source does.

use mycel_crds::PeerAuthentication;
use serde_json::Value;

use super::{check_header, deserialize_strict, object_key, Doc, ParseError};
use crate::authz::peer::{from_spec, PeerAuthPolicy};

pub const KIND: &str = "PeerAuthentication";
const API_VERSION: &str = "mycel.io/v1alpha1";

pub fn parse_document(document: usize, mut value: Value) -> Result<PeerAuthPolicy, ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let policy: PeerAuthentication =
        deserialize_strict(&d, value, "a mycel.io/v1alpha1 PeerAuthentication")?;
    let (namespace, name) = object_key(&d, &policy.metadata)?;
    from_spec(&namespace, &name, &policy.spec).map_err(|e| d.err(&e.field, e.problem))
}
