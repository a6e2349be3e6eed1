//! `kind: Gateway` documents of mesh.yaml (`gateway.networking.k8s.io/v1`),
//! read strictly as the type generated from the upstream CRD and checked
//! by [`crate::routes::gateway`]. mesh.yaml has no GatewayClass objects:
//! every Gateway of the file is this controller's, whatever its
//! `gatewayClassName` (the file is the whole mesh, so a Gateway in it is
//! meant to be served). A listener Mycel does not serve (TLS, TCP, a
//! namespace selector, an HTTPS listener without usable certificateRefs)
//! is an error here, where a cluster would show it in the Gateway's
//! status: the file has no status to read.

use std::collections::BTreeMap;

use mycel_crds::gateway_api::gateways::Gateway as GatewayObject;
use serde_json::Value;

use super::{check_header, deserialize_strict, Doc, ParseError};
use crate::model::ServiceKey;
use crate::routes::gateway::{self, Gateway};

pub const KIND: &str = "Gateway";
const API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// A valid Gateway and the document it came from.
pub struct Parsed {
    pub document: usize,
    pub gateway: Gateway,
}

pub fn parse_document(document: usize, mut value: Value) -> Result<Parsed, ParseError> {
    let d = Doc { document };
    check_header(&d, &mut value, API_VERSION, KIND)?;
    let object: GatewayObject =
        deserialize_strict(&d, value, "a gateway.networking.k8s.io/v1 Gateway")?;
    let name = object
        .metadata
        .name
        .clone()
        .ok_or_else(|| d.err("metadata.name", "is missing"))?;
    let namespace = super::namespace(&d, object.metadata.namespace.as_deref())?;
    if object
        .spec
        .addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(d.err(
            "spec.addresses",
            "is not supported in local mode (a gateway proxy listens where its --listen says)",
        ));
    }
    let gw = gateway::gateway(&namespace, &name, &object.spec)
        .and_then(|g| g.with_annotations(object.metadata.annotations.as_ref()))
        .map_err(|e| d.err(&e.field, e.message))?;
    for (i, l) in gw.listeners.iter().enumerate() {
        if let Some(r) = &l.refused {
            return Err(d.err(&format!("spec.listeners[{i}]"), r.message.clone()));
        }
        if !l.invalid_kinds.is_empty() {
            return Err(d.err(
                &format!("spec.listeners[{i}].allowedRoutes.kinds"),
                format!(
                    "{} is not a route kind Mycel serves (HTTPRoute, GRPCRoute)",
                    l.invalid_kinds.join(", ")
                ),
            ));
        }
    }
    Ok(Parsed {
        document,
        gateway: gw,
    })
}

/// The file's Gateways by key; a second one of the same key is an error.
pub fn by_key(parsed: Vec<Parsed>) -> Result<BTreeMap<ServiceKey, Gateway>, ParseError> {
    let mut out: BTreeMap<ServiceKey, (usize, Gateway)> = BTreeMap::new();
    for p in parsed {
        if let Some((first, _)) = out.get(&p.gateway.key) {
            return Err(ParseError::Document {
                document: p.document,
                message: format!(
                    "Gateway {} is already declared in document {first}",
                    p.gateway.key
                ),
            });
        }
        out.insert(p.gateway.key.clone(), (p.document, p.gateway));
    }
    Ok(out.into_iter().map(|(k, (_, g))| (k, g)).collect())
}

#[cfg(test)]
mod tests;
