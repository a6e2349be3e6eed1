//! `kind: HTTPRoute` and `kind: GRPCRoute` documents of mesh.yaml
//! (`gateway.networking.k8s.io/v1`): read strictly as the types generated
//! from the upstream CRDs, converted by [`crate::routes`] (the rules a
//! cluster's routes are held to), then attached to the Services of the
//! same file. A parent, backend, mirror, TrafficPolicy or GatewayPolicy
//! that the file does not hold is an error: the file is the whole mesh, so a dangling
//! reference is a mistake, and applying the rest would half-route it.

use std::collections::{BTreeMap, BTreeSet};

use mycel_crds::gateway_api::grpcroutes::GrpcRoute;
use mycel_crds::gateway_api::httproutes::HttpRoute;
use mycel_crds::traffic_policy::Fault;
use mycel_crds::GatewayPolicySpec;
use serde_json::Value;

use super::{check_header, deserialize_strict, object_key, Doc, ParseError};
use crate::model::{Route, Service, ServiceKey};
use crate::routes::gateway::{self, Attachment, Gateway};
use crate::routes::{self, Converted, PolicyFault, RouteKind, Source};

pub const HTTP_KIND: &str = "HTTPRoute";
pub const GRPC_KIND: &str = "GRPCRoute";
const API_VERSION: &str = "gateway.networking.k8s.io/v1";

enum Object {
    Http(Box<HttpRoute>),
    Grpc(Box<GrpcRoute>),
}

/// One route document, read but not yet converted (its TrafficPolicies
/// may come later in the file).
pub struct Parsed {
    document: usize,
    namespace: String,
    name: String,
    object: Object,
}

/// Whether a document's kind is a route's.
pub fn is_route(kind: Option<&str>) -> bool {
    matches!(kind, Some(HTTP_KIND | GRPC_KIND))
}

pub fn parse_document(document: usize, mut value: Value) -> Result<Parsed, ParseError> {
    let d = Doc { document };
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    check_header(&d, &mut value, API_VERSION, &kind)?;
    let (object, metadata) = if kind == HTTP_KIND {
        let r: HttpRoute =
            deserialize_strict(&d, value, "a gateway.networking.k8s.io/v1 HTTPRoute")?;
        let m = r.metadata.clone();
        (Object::Http(Box::new(r)), m)
    } else {
        let r: GrpcRoute =
            deserialize_strict(&d, value, "a gateway.networking.k8s.io/v1 GRPCRoute")?;
        let m = r.metadata.clone();
        (Object::Grpc(Box::new(r)), m)
    };
    let (namespace, name) = object_key(&d, &metadata)?;
    Ok(Parsed {
        document,
        namespace,
        name,
        object,
    })
}

/// The routes of a file by parent: Services, and Gateways (every Gateway
/// of the file, with an empty list when no route attaches to it).
#[derive(Default)]
pub struct Attached {
    pub services: BTreeMap<ServiceKey, Vec<Route>>,
    pub gateways: BTreeMap<ServiceKey, Vec<Route>>,
}

/// The policies of the file that routes' `ExtensionRef`s may name, by
/// `(namespace, name)`.
pub struct Policies<'a> {
    /// The fault section of each TrafficPolicy.
    pub faults: &'a BTreeMap<(String, String), Option<Fault>>,
    pub gateway_policies: &'a BTreeMap<(String, String), GatewayPolicySpec>,
}

/// Converts every route and groups them by parent Service and Gateway, in
/// file order (mesh.yaml has no creation times; the file's order stands
/// for them).
pub fn attach(
    services: &[Service],
    gateways: &BTreeMap<ServiceKey, Gateway>,
    policies: Policies<'_>,
    parsed: Vec<Parsed>,
) -> Result<Attached, ParseError> {
    let by_key: BTreeMap<ServiceKey, &Service> = services.iter().map(|s| (s.key(), s)).collect();
    let mut out: BTreeMap<ServiceKey, Vec<Route>> = BTreeMap::new();
    let mut on_gateways: BTreeMap<ServiceKey, Vec<Route>> =
        gateways.keys().map(|k| (k.clone(), Vec::new())).collect();
    let mut seen: BTreeMap<(RouteKind, String), usize> = BTreeMap::new();
    for p in parsed {
        let d = Doc {
            document: p.document,
        };
        let key = |name: &str| (p.namespace.clone(), name.to_string());
        let lookup = |name: &str| match policies.faults.get(&key(name)) {
            None => PolicyFault::Missing,
            Some(None) => PolicyFault::NoFault,
            Some(Some(f)) => PolicyFault::Fault(f.clone()),
        };
        let gateway_policy = |name: &str| policies.gateway_policies.get(&key(name)).cloned();
        let source = Source {
            namespace: &p.namespace,
            name: &p.name,
            policies: &lookup,
            gateway_policies: &gateway_policy,
        };
        let converted = match &p.object {
            Object::Http(r) => routes::http_route(&source, &r.spec),
            Object::Grpc(r) => routes::grpc_route(&source, &r.spec),
        }
        .map_err(|e| d.err(&e.field, e.message))?;
        if let Some(first) = seen.insert((converted.kind, converted.name.clone()), p.document) {
            return Err(ParseError::Document {
                document: p.document,
                message: format!(
                    "{} {} is already declared in document {first}",
                    converted.kind.as_str(),
                    converted.name
                ),
            });
        }
        check_refs(&d, &by_key, &converted)?;
        for parent in converted.parent_services() {
            if let Some(route) = converted.for_parent(&parent) {
                out.entry(parent).or_default().push(route);
            }
        }
        for (key, route) in gateway_routes(&d, gateways, &converted)? {
            on_gateways.entry(key).or_default().push(route);
        }
    }
    Ok(Attached {
        services: out,
        gateways: on_gateways,
    })
}

/// The route as each Gateway it names serves it. Every Gateway parent
/// must be in the file and take the route: a parentRef that attaches
/// nowhere is an error naming it (a cluster would say so in the route's
/// status, which the file does not have).
fn gateway_routes(
    d: &Doc,
    gateways: &BTreeMap<ServiceKey, Gateway>,
    route: &Converted,
) -> Result<Vec<(ServiceKey, Route)>, ParseError> {
    let mut attached: BTreeMap<&ServiceKey, Vec<Attachment>> = BTreeMap::new();
    let namespace = route.name.split('/').next().unwrap_or_default();
    for p in &route.gateways {
        let at = format!("spec.parentRefs[{}]", p.index);
        let Some(gw) = gateways.get(&p.gateway) else {
            return Err(d.err(
                &format!("{at}.name"),
                format!("no Gateway {} in this file", p.gateway),
            ));
        };
        let a = gateway::attach(gw, p, route.kind, namespace, &route.hostnames)
            .map_err(|e| d.err(&at, format!("{} ({})", e.message, e.reason.as_str())))?;
        attached.entry(&gw.key).or_default().push(a);
    }
    Ok(attached
        .into_iter()
        .flat_map(|(k, list)| {
            let refs: Vec<&Attachment> = list.iter().collect();
            gateway::gateway_route(route, &refs)
                .into_iter()
                .map(move |r| (k.clone(), r))
        })
        .collect())
}

/// Every parent and every Service sent or mirrored to must be in the file,
/// with the port named, and a route that names a GatewayPolicy has no
/// Service parent (a cluster would refuse that parent in the route's
/// status, which the file does not have).
fn check_refs(
    d: &Doc,
    services: &BTreeMap<ServiceKey, &Service>,
    route: &Converted,
) -> Result<(), ParseError> {
    let ports_of = |svc: &Service| {
        svc.ports
            .iter()
            .map(|p| p.port.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let (Some(why), Some(p)) = (route.mesh_refusal(), route.parents.first()) {
        return Err(d.err(&format!("spec.parentRefs[{}]", p.index), why));
    }
    for p in &route.parents {
        let at = format!("spec.parentRefs[{}]", p.index);
        let Some(svc) = services.get(&p.service) else {
            return Err(d.err(
                &format!("{at}.name"),
                format!("no Service {} in this file", p.service),
            ));
        };
        if let Some(port) = p
            .port
            .filter(|port| !svc.ports.iter().any(|sp| sp.port == *port))
        {
            return Err(d.err(
                &format!("{at}.port"),
                format!(
                    "service {} has no port {port} (it has {})",
                    p.service,
                    ports_of(svc)
                ),
            ));
        }
    }
    let mut checked = BTreeSet::new();
    for r in &route.refs {
        if !checked.insert((&r.service, r.port)) {
            continue;
        }
        let Some(svc) = services.get(&r.service) else {
            return Err(d.err(
                &format!("{}.name", r.field),
                format!("no Service {} in this file", r.service),
            ));
        };
        if !svc.ports.iter().any(|sp| sp.port == r.port) {
            return Err(d.err(
                &format!("{}.port", r.field),
                format!(
                    "service {} has no port {} (it has {})",
                    r.service,
                    r.port,
                    ports_of(svc)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
