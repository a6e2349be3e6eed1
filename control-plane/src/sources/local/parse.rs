//! mesh.yaml parsing and validation: Kubernetes manifests, of which this
//! version reads `kind: Service`, as `k8s_openapi`'s own type, so a manifest
//! means the same here and in a cluster, and `kind: TrafficPolicy`
//! (`mycel.io/v1alpha1`) as the CRD's own type, checked by the rules its
//! schema holds (see [`policies`]; `kind: GatewayPolicy` likewise, see
//! [`gateway_policies`]), and `kind: Gateway`, `kind: HTTPRoute`
//! and `kind: GRPCRoute` (`gateway.networking.k8s.io/v1`) as the Gateway
//! API's own types, held to the rules of [`crate::routes`]. What Kubernetes would accept but
//! Mycel cannot honour, and every field Kubernetes does not know, is an
//! error. The whole file is valid or rejected; every error names the
//! document (1-based) and the field.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core;
use mycel_api::names::{self, NameKind};
use serde_json::Value;

use crate::model::{Route, Service, ServiceKey, ServicePolicy};
use crate::routes::gateway::certificates::{self, GatewayCertificates};
use crate::sources::k8s::convert::{self, Strictness};

mod authz;
mod gateway_policies;
mod gateways;
mod peer_auth;
mod policies;
mod routes;
mod secrets;

/// Why a mesh config was rejected. The file name is added by the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("document {document}: {message}")]
    Document { document: usize, message: String },
    #[error("document {document}: {field}: {message}")]
    Field {
        document: usize,
        field: String,
        message: String,
    },
    #[error("document {document}: service {key} is already declared in document {first}")]
    Duplicate {
        document: usize,
        first: usize,
        key: String,
    },
}

/// What a mesh config holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    pub services: Vec<Service>,
    /// Traffic policies by the service they are attached to.
    pub policies: BTreeMap<ServiceKey, ServicePolicy>,
    /// Routes by their parent service, in file order.
    pub routes: BTreeMap<ServiceKey, Vec<Route>>,
    /// Every Gateway of the file with the routes attached to it, in file
    /// order.
    pub gateways: BTreeMap<ServiceKey, Vec<Route>>,
    /// Authorization policies, sorted by namespace and name.
    pub authz: Vec<crate::authz::SelectedPolicy>,
    /// PeerAuthentication objects, sorted by namespace and name.
    pub peer_auth: Vec<crate::authz::peer::PeerAuthPolicy>,
    /// The certificates of the Gateways with HTTPS listeners, from the
    /// file's `kubernetes.io/tls` Secrets.
    pub gateway_certificates: BTreeMap<ServiceKey, GatewayCertificates>,
}

impl MeshConfig {
    /// How many route objects the routes come from (one may attach to
    /// several parents).
    pub fn route_count(&self) -> usize {
        self.routes
            .values()
            .chain(self.gateways.values())
            .flatten()
            .map(|r| (r.kind, r.name.as_str()))
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// Parses every document of a mesh config.
pub fn parse_mesh_config(text: &str) -> Result<MeshConfig, ParseError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
    let mut services = Vec::new();
    let mut policies = Vec::new();
    let mut routes = Vec::new();
    let mut gateways = Vec::new();
    let mut gateway_policies = Vec::new();
    let mut secrets = Vec::new();
    let mut authz: Vec<(usize, crate::authz::SelectedPolicy)> = Vec::new();
    let mut peer_auth: Vec<(usize, crate::authz::peer::PeerAuthPolicy)> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, value) in docs.into_iter().enumerate() {
        let document = i + 1;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        if value.get("kind").and_then(Value::as_str) == Some(policies::KIND) {
            policies.push(policies::parse_document(document, value)?);
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some(gateway_policies::KIND) {
            gateway_policies.push(gateway_policies::parse_document(document, value)?);
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some(authz::KIND) {
            authz.push((document, authz::parse_document(document, value)?));
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some(peer_auth::KIND) {
            peer_auth.push((document, peer_auth::parse_document(document, value)?));
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some(gateways::KIND) {
            gateways.push(gateways::parse_document(document, value)?);
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some(secrets::KIND) {
            secrets.push(secrets::parse_document(document, value)?);
            continue;
        }
        if routes::is_route(value.get("kind").and_then(Value::as_str)) {
            routes.push(routes::parse_document(document, value)?);
            continue;
        }
        let svc = parse_document(document, value)?;
        let key = svc.key().to_string();
        if let Some(first) = seen.insert(key.clone(), document) {
            return Err(ParseError::Duplicate {
                document,
                first,
                key,
            });
        }
        services.push(svc);
    }
    let faults = policies::faults(&policies);
    let policies = policies::attach(&services, policies)?;
    let gateway_documents: BTreeMap<ServiceKey, usize> = gateways
        .iter()
        .map(|p| (p.gateway.key.clone(), p.document))
        .collect();
    let gateways = gateways::by_key(gateways)?;
    let secrets = secrets::by_key(secrets)?;
    let mut gateway_certificates = BTreeMap::new();
    for (key, gw) in &gateways {
        if !gw.listeners.iter().any(|l| l.https) {
            continue;
        }
        let (certs, unresolved) = certificates::resolve(gw, &gw.service_account, |r| {
            secrets.get(&(r.namespace.clone(), r.name.clone())).map(Ok)
        });
        // The file has no status to show a listener's refused Secret in.
        if let Some((i, list)) = unresolved.into_iter().next() {
            let why = list
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ParseError::Field {
                document: gateway_documents.get(key).copied().unwrap_or(0),
                field: format!("spec.listeners[{i}].tls.certificateRefs"),
                message: why,
            });
        }
        gateway_certificates.insert(key.clone(), certs);
    }
    let gateway_policies = gateway_policies::by_name(gateway_policies)?;
    let attached = routes::attach(
        &services,
        &gateways,
        routes::Policies {
            faults: &faults,
            gateway_policies: &gateway_policies,
        },
        routes,
    )?;
    let authz = unique_by_name(authz, authz::KIND, |p| &p.policy.name)?;
    let peer_auth = unique_by_name(peer_auth, peer_auth::KIND, |p| &p.name)?;
    Ok(MeshConfig {
        authz,
        peer_auth,
        services,
        policies,
        routes: attached.services,
        gateways: attached.gateways,
        gateway_certificates,
    })
}

/// Builds the errors of one document.
struct Doc {
    document: usize,
}

impl Doc {
    fn err(&self, field: &str, message: impl Into<String>) -> ParseError {
        ParseError::Field {
            document: self.document,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// RFC 1123 label: what Kubernetes requires of namespaces and port names.
pub fn is_dns_label(s: &str) -> bool {
    names::validate(NameKind::Namespace, s).is_ok()
}

/// RFC 1035 label: what Kubernetes requires of service names.
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn parse_document(document: usize, value: Value) -> Result<Service, ParseError> {
    let d = Doc { document };
    let Some(root) = value.as_object() else {
        return Err(ParseError::Document {
            document,
            message: format!("must be a mapping, found {}", kind_of(&value)),
        });
    };
    let string = |field: &str| match root.get(field) {
        None | Some(Value::Null) => Err(d.err(field, "is missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(d.err(field, format!("must be a string, found {}", kind_of(other)))),
    };
    let kind = string("kind")?;
    if kind != "Service" {
        return Err(ParseError::Document {
            document,
            message: format!(
                "unsupported kind {kind:?} (mesh.yaml reads kind: Service, {}, {}, {}, {}, {}, {}, {} and {})",
                secrets::KIND,
                policies::KIND,
                gateway_policies::KIND,
                authz::KIND,
                peer_auth::KIND,
                gateways::KIND,
                routes::HTTP_KIND,
                routes::GRPC_KIND
            ),
        });
    }
    let api_version = string("apiVersion")?;
    if api_version != "v1" {
        return Err(d.err(
            "apiVersion",
            format!("must be v1 for kind Service, found {api_version:?}"),
        ));
    }
    if root.get("metadata").is_none_or(Value::is_null) {
        return Err(d.err("metadata", "is missing"));
    }
    let has_spec = root.get("spec").is_some_and(|v| !v.is_null());
    // k8s_openapi reads a missing port as 0; say what is wrong instead.
    let raw_ports = root
        .get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array);
    for (i, p) in raw_ports.into_iter().flatten().enumerate() {
        if p.is_object() && p.get("port").is_none_or(Value::is_null) {
            return Err(d.err(&format!("spec.ports[{i}].port"), "is missing"));
        }
    }

    let svc = deserialize_service(&d, value)?;
    check_names(&d, &svc)?;
    let spec = svc
        .spec
        .as_ref()
        .filter(|_| has_spec)
        .ok_or_else(|| d.err("spec", "is missing"))?;
    check_selector(&d, spec)?;
    check_ports(&d, spec)?;
    convert::service(&svc, Strictness::Manifest, &BTreeMap::new())
        .map_err(|e| d.err(&e.field, e.message))
}

/// The document as a Kubernetes Service; a field of the wrong type names
/// its path, and a field the type does not have is refused (Kubernetes
/// would drop it silently, and a typo such as `targetport` would go
/// unnoticed).
fn deserialize_service(d: &Doc, value: Value) -> Result<core::Service, ParseError> {
    deserialize_strict(d, value, "a Kubernetes v1 Service")
}

/// Checks the header of a document of a Kubernetes kind read as its own
/// type (`apiVersion` must be `api_version`, a `spec` must be there), then
/// drops `apiVersion` and `kind`: the generated types take them as given
/// rather than as fields, and a strict read would call them unknown.
/// `(namespace, name)` of a namespaced object: a name is required, the
/// namespace defaults to `default`, both DNS labels.
fn object_key(
    d: &Doc,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String), ParseError> {
    let name = meta
        .name
        .clone()
        .ok_or_else(|| d.err("metadata.name", "is missing"))?;
    if !is_dns_label(&name) {
        return Err(d.err(
            "metadata.name",
            format!("{name:?} is not a valid name (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    Ok((namespace(d, meta.namespace.as_deref())?, name))
}

/// A document's `metadata.namespace`, `default` when absent, checked.
fn namespace(d: &Doc, namespace: Option<&str>) -> Result<String, ParseError> {
    let namespace = namespace.unwrap_or("default").to_string();
    if !is_dns_label(&namespace) {
        return Err(d.err(
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    Ok(namespace)
}

fn check_header(
    d: &Doc,
    value: &mut Value,
    api_version: &str,
    kind: &str,
) -> Result<(), ParseError> {
    match value.get("apiVersion") {
        Some(Value::String(v)) if v == api_version => {}
        Some(Value::String(v)) => {
            return Err(d.err(
                "apiVersion",
                format!("must be {api_version} for kind {kind}, found {v:?}"),
            ))
        }
        _ => return Err(d.err("apiVersion", format!("is missing (want {api_version})"))),
    }
    if value.get("spec").is_none_or(Value::is_null) {
        return Err(d.err("spec", "is missing"));
    }
    if let Some(root) = value.as_object_mut() {
        root.remove("apiVersion");
        root.remove("kind");
    }
    Ok(())
}

/// Sorts namespaced objects of one kind by name (`<namespace>/<name>`),
/// refusing a name declared twice.
fn unique_by_name<T>(
    mut objects: Vec<(usize, T)>,
    kind: &str,
    name: impl Fn(&T) -> &String,
) -> Result<Vec<T>, ParseError> {
    objects.sort_by(|(_, a), (_, b)| name(a).cmp(name(b)));
    if let Some(w) = objects.windows(2).find(|w| name(&w[0].1) == name(&w[1].1)) {
        let (first, second) = (w[0].0.min(w[1].0), w[0].0.max(w[1].0));
        return Err(Doc { document: second }.err(
            "metadata.name",
            format!(
                "{kind} {} is already declared in document {first}",
                name(&w[0].1)
            ),
        ));
    }
    Ok(objects.into_iter().map(|(_, p)| p).collect())
}

/// Deserializes a document as `T`, naming the path of a field of the wrong
/// type and refusing any field `T` does not have (`what` says whose).
fn deserialize_strict<T: serde::de::DeserializeOwned>(
    d: &Doc,
    value: Value,
    what: &str,
) -> Result<T, ParseError> {
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path| unknown.push(path_string(&path));
    let parsed: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut track));
    let parsed = parsed.map_err(|e| {
        let field = e.path().to_string();
        d.err(&field, e.into_inner().to_string())
    })?;
    if let Some(field) = unknown.into_iter().next() {
        return Err(d.err(&field, format!("unknown field (not part of {what})")));
    }
    Ok(parsed)
}

/// `spec.ports[0].name`, as Kubernetes' own messages write paths.
fn path_string(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => {
            let p = path_string(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

fn check_names(d: &Doc, svc: &core::Service) -> Result<(), ParseError> {
    let name = svc
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| d.err("metadata.name", "is missing"))?;
    if !is_service_name(name) {
        return Err(d.err(
            "metadata.name",
            format!("{name:?} is not a valid service name (lowercase letters, digits and '-', starting with a letter, at most 63)"),
        ));
    }
    if let Some(ns) = svc.metadata.namespace.as_deref() {
        if !is_dns_label(ns) {
            return Err(d.err(
                "metadata.namespace",
                format!("{ns:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"),
            ));
        }
    }
    Ok(())
}

fn check_selector(d: &Doc, spec: &core::ServiceSpec) -> Result<(), ParseError> {
    for (key, value) in spec.selector.iter().flatten() {
        let field = format!("spec.selector.{key}");
        if key.is_empty() || key.len() > 317 {
            return Err(d.err(&field, "label keys must be 1 to 317 characters"));
        }
        if value.len() > 63 {
            return Err(d.err(&field, "label values must be at most 63 characters"));
        }
    }
    Ok(())
}

/// What Kubernetes' API validation would refuse in the ports, checked here
/// since no API server sees mesh.yaml.
fn check_ports(d: &Doc, spec: &core::ServiceSpec) -> Result<(), ParseError> {
    let ports = match &spec.ports {
        None => {
            return Err(d.err(
                "spec.ports",
                "is missing (a service needs at least one port)",
            ))
        }
        Some(p) if p.is_empty() => {
            return Err(d.err("spec.ports", "is empty (a service needs at least one port)"))
        }
        Some(p) => p,
    };
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match p.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                return Err(d.err(
                    &format!("{at}.name"),
                    "is required when a service has more than one port",
                ))
            }
            None | Some("") => {}
            Some(name) if !is_dns_label(name) => {
                return Err(d.err(
                    &format!("{at}.name"),
                    format!("{name:?} is not a valid port name"),
                ))
            }
            Some(name) => {
                if !names.insert(name) {
                    return Err(d.err(
                        &format!("{at}.name"),
                        format!("port name {name:?} is used twice"),
                    ));
                }
            }
        }
        if !numbers.insert(p.port) {
            return Err(d.err(
                &format!("{at}.port"),
                format!("port {} is declared twice", p.port),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
