//! Gateway parents: a Gateway (`gateway.networking.k8s.io/v1`) read into
//! its listeners, and the pure decisions of attaching a route to it —
//! which listeners a parentRef selects (`sectionName`, `port`), whether
//! they allow the route (`allowedRoutes`), and which hostnames the route
//! serves there (the Gateway API's hostname intersection). Shared by
//! mesh.yaml and the Kubernetes watch, like the rest of [`crate::routes`].
//!
//! A gateway proxy serves every listener of its Gateway on its own
//! listening socket, so a route for a Gateway carries no ports: the
//! listener's port only selects listeners (`parentRef.port`).

use std::collections::BTreeMap;

use mycel_api::names::{self, NameKind};
use mycel_crds::gateway_api::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTls,
    GatewayListenersTlsMode, GatewaySpec,
};

use super::model::{ListenerSide, Route, RouteKind};
use super::{validate, Converted, RouteError};
use crate::model::ServiceKey;

pub mod certificates;

#[cfg(test)]
mod tests;

/// The `controllerName` of this controller's GatewayClasses and of its
/// entries in a route's `status.parents` for Gateway parents.
pub const GATEWAY_CONTROLLER_NAME: &str = "mycel.io/gateway-controller";

/// The Gateway API group, a parentRef's default.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// A parentRef that names a Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayParent {
    /// Position in `spec.parentRefs`.
    pub index: usize,
    /// `<name>.<namespace>` of the Gateway.
    pub gateway: ServiceKey,
    pub section: Option<String>,
    pub port: Option<u16>,
}

/// Which namespaces a listener takes routes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedNamespaces {
    /// The Gateway's own (the default).
    Same,
    All,
}

/// Why a listener is not served: the `reason` of its `Accepted=False`
/// condition (a Gateway API listener reason) and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRefusal {
    pub reason: &'static str,
    pub message: String,
}

/// A Secret (`kubernetes.io/tls`) an HTTPS listener's
/// `tls.certificateRefs` names; always in the Gateway's namespace (a
/// reference to another is refused: it would need a ReferenceGrant).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertificateRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for CertificateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    /// HTTP or HTTPS (other protocols are refused).
    pub https: bool,
    /// HTTPS: the Secrets its certificates are read from, in spec order;
    /// never empty for a served HTTPS listener.
    pub certificates: Vec<CertificateRef>,
    /// Lowercase, exact or `*.` wildcard; None: any.
    pub hostname: Option<String>,
    pub namespaces: AllowedNamespaces,
    /// Route kinds it takes; never empty for a served listener.
    pub kinds: Vec<RouteKind>,
    /// Kinds of `allowedRoutes.kinds` that are not routes this controller
    /// serves (`ResolvedRefs=False, InvalidRouteKinds`), as written.
    pub invalid_kinds: Vec<String>,
    /// None: served.
    pub refused: Option<ListenerRefusal>,
}

impl Listener {
    pub fn served(&self) -> bool {
        self.refused.is_none()
    }

    /// The gateway sockets that serve the routes attached here, on a
    /// Gateway that has (`with_https`) or has no served HTTPS listener.
    pub fn side(&self, with_https: bool) -> ListenerSide {
        match (self.https, with_https) {
            (true, _) => ListenerSide::Https,
            (false, true) => ListenerSide::Http,
            (false, false) => ListenerSide::Any,
        }
    }
}

/// A valid Gateway: its key, class and listeners in spec order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub key: ServiceKey,
    pub class: String,
    pub listeners: Vec<Listener>,
    /// The service account whose gateway proxies may hold its HTTPS
    /// listeners' keys: the Gateway's name unless its metadata says
    /// otherwise ([`Gateway::with_annotations`]).
    pub service_account: String,
}

impl Gateway {
    /// Reads the Gateway's annotations: the service account of
    /// [`certificates::SERVICE_ACCOUNT_ANNOTATION`], checked.
    pub fn with_annotations(
        mut self,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Gateway, RouteError> {
        if let Some(sa) = annotations.and_then(|a| a.get(certificates::SERVICE_ACCOUNT_ANNOTATION))
        {
            names::validate(NameKind::ServiceAccount, sa).map_err(|e| {
                RouteError::invalid(
                    format!(
                        "metadata.annotations[{}]",
                        certificates::SERVICE_ACCOUNT_ANNOTATION
                    ),
                    e.to_string(),
                )
            })?;
            self.service_account = sa.clone();
        }
        Ok(self)
    }

    /// Whether at least one listener is served (`Programmed=True`).
    pub fn programmed(&self) -> bool {
        self.listeners.iter().any(Listener::served)
    }
}

/// Reads a Gateway spec. A value the Gateway API refuses is an error; a
/// valid listener Mycel does not serve yet (HTTPS, TLS, TCP, UDP, a
/// namespace selector) is kept with a [`ListenerRefusal`], so the rest of
/// the Gateway still works and its status says why.
pub fn gateway(namespace: &str, name: &str, spec: &GatewaySpec) -> Result<Gateway, RouteError> {
    let key = ServiceKey::new(name, namespace).map_err(|e| {
        RouteError::invalid(
            "metadata.name",
            format!("{e} (a Gateway name must be a DNS label: proxies name it <name>.<namespace>)"),
        )
    })?;
    if spec.listeners.is_empty() {
        return Err(RouteError::invalid(
            "spec.listeners",
            "a Gateway needs at least one listener",
        ));
    }
    let mut listeners: Vec<Listener> = Vec::with_capacity(spec.listeners.len());
    for (i, l) in spec.listeners.iter().enumerate() {
        let next = listener(&format!("spec.listeners[{i}]"), namespace, l)?;
        if listeners.iter().any(|o| o.name == next.name) {
            return Err(RouteError::invalid(
                format!("spec.listeners[{i}].name"),
                format!("listener name {:?} is used twice", next.name),
            ));
        }
        listeners.push(next);
    }
    Ok(Gateway {
        service_account: key.name().to_string(),
        key,
        class: spec.gateway_class_name.clone(),
        listeners,
    })
}

fn listener(at: &str, namespace: &str, l: &GatewayListeners) -> Result<Listener, RouteError> {
    if names::validate(NameKind::Namespace, &l.name).is_err() {
        return Err(RouteError::invalid(
            format!("{at}.name"),
            format!("{:?} is not a valid listener name (a DNS label)", l.name),
        ));
    }
    let port = validate::port(l.port).map_err(|m| RouteError::invalid(format!("{at}.port"), m))?;
    let hostname = l
        .hostname
        .as_deref()
        .map(|h| validate::hostname(h, true))
        .transpose()
        .map_err(|m| RouteError::invalid(format!("{at}.hostname"), m))?;
    let mut refused = None;
    let https = l.protocol == "HTTPS";
    let mut certificates = Vec::new();
    if https {
        match certificate_refs(namespace, l.tls.as_ref()) {
            Ok(refs) => certificates = refs,
            Err(r) => refused = Some(r),
        }
    } else if l.protocol != "HTTP" {
        refused = Some(ListenerRefusal {
            reason: "UnsupportedProtocol",
            message: format!(
                "protocol {} is not served (HTTP and HTTPS are; TLS passthrough, TCP and UDP are not)",
                l.protocol
            ),
        });
    }
    let allowed = l.allowed_routes.as_ref();
    let namespaces = match allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_ref())
    {
        None | Some(From::Same) => AllowedNamespaces::Same,
        Some(From::All) => AllowedNamespaces::All,
        Some(From::Selector) => {
            refused.get_or_insert(ListenerRefusal {
                reason: "UnsupportedValue",
                message:
                    "allowedRoutes.namespaces.from: Selector is not supported yet (use Same or All)"
                        .into(),
            });
            AllowedNamespaces::Same
        }
    };
    let mut kinds = Vec::new();
    let mut invalid_kinds = Vec::new();
    match allowed.and_then(|a| a.kinds.as_ref()) {
        None => kinds.extend([RouteKind::Http, RouteKind::Grpc]),
        Some(list) => {
            for k in list {
                let group = k.group.as_deref().unwrap_or(GROUP);
                let kind = match (group, k.kind.as_str()) {
                    (GROUP, "HTTPRoute") => Some(RouteKind::Http),
                    (GROUP, "GRPCRoute") => Some(RouteKind::Grpc),
                    _ => None,
                };
                match kind {
                    Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
                    Some(_) => {}
                    None => invalid_kinds.push(format!("{group}/{}", k.kind)),
                }
            }
            if kinds.is_empty() {
                refused.get_or_insert(ListenerRefusal {
                    reason: "InvalidRouteKinds",
                    message: "allowedRoutes.kinds names no route kind Mycel serves (HTTPRoute, GRPCRoute)"
                        .into(),
                });
            }
        }
    }
    Ok(Listener {
        name: l.name.clone(),
        port,
        https,
        certificates,
        hostname,
        namespaces,
        kinds,
        invalid_kinds,
        refused,
    })
}

/// The Secrets an HTTPS listener's certificates come from, or why the
/// listener cannot be served.
fn certificate_refs(
    namespace: &str,
    tls: Option<&GatewayListenersTls>,
) -> Result<Vec<CertificateRef>, ListenerRefusal> {
    let invalid = |message: String| ListenerRefusal {
        reason: "InvalidCertificateRef",
        message,
    };
    let Some(tls) = tls else {
        return Err(invalid(
            "an HTTPS listener needs tls.certificateRefs (a Secret of type kubernetes.io/tls)"
                .into(),
        ));
    };
    if tls.mode == Some(GatewayListenersTlsMode::Passthrough) {
        return Err(ListenerRefusal {
            reason: "UnsupportedValue",
            message:
                "tls.mode Passthrough is not served on HTTPS listeners (the gateway terminates TLS)"
                    .into(),
        });
    }
    let refs = tls.certificate_refs.as_deref().unwrap_or_default();
    if refs.is_empty() {
        return Err(invalid(
            "an HTTPS listener needs at least one tls.certificateRefs entry".into(),
        ));
    }
    let mut out: Vec<CertificateRef> = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Err(invalid(format!(
                "tls.certificateRefs[{i}] names a {kind} of group {group:?}; only core Secrets hold certificates"
            )));
        }
        let ns = r.namespace.as_deref().unwrap_or(namespace);
        if ns != namespace {
            return Err(ListenerRefusal {
                reason: "RefNotPermitted",
                message: format!(
                    "tls.certificateRefs[{i}] names Secret {ns}/{}: a Secret of another namespace needs a ReferenceGrant, which Mycel does not read; keep the Secret in the Gateway's namespace",
                    r.name
                ),
            });
        }
        if names::validate(NameKind::Secret, &r.name).is_err() {
            return Err(invalid(format!(
                "tls.certificateRefs[{i}].name {:?} is not a valid Secret name",
                r.name
            )));
        }
        let cert = CertificateRef {
            namespace: namespace.to_string(),
            name: r.name.clone(),
        };
        if !out.contains(&cert) {
            out.push(cert);
        }
    }
    Ok(out)
}

/// Why a route does not attach to a Gateway through one parentRef: the
/// `reason` of its `Accepted=False` parent condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachReason {
    /// `sectionName` or `port` selects no served listener.
    NoMatchingParent,
    /// The selected listeners do not take routes of this kind or from
    /// this namespace.
    NotAllowedByListeners,
    /// No hostname of the route is one the selected listeners serve.
    NoMatchingListenerHostname,
}

impl AttachReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMatchingParent => "NoMatchingParent",
            Self::NotAllowedByListeners => "NotAllowedByListeners",
            Self::NoMatchingListenerHostname => "NoMatchingListenerHostname",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttachError {
    pub reason: AttachReason,
    pub message: String,
}

fn refuse(reason: AttachReason, message: impl Into<String>) -> AttachError {
    AttachError {
        reason,
        message: message.into(),
    }
}

/// Where one parentRef attaches a route: the listeners (by position) and
/// the hostnames served there (empty: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub listeners: Vec<usize>,
    pub hostnames: Vec<String>,
    /// The hostnames served by the listeners of each side (empty: any),
    /// by [`Listener::side`].
    pub sides: BTreeMap<ListenerSide, Vec<String>>,
}

/// Attaches a route (of `kind`, from `namespace`, with `hostnames`)
/// through one parentRef naming `gw`.
pub fn attach(
    gw: &Gateway,
    parent: &GatewayParent,
    kind: RouteKind,
    namespace: &str,
    hostnames: &[String],
) -> Result<Attachment, AttachError> {
    let selected: Vec<(usize, &Listener)> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .collect();
    if selected.is_empty() {
        return Err(refuse(
            AttachReason::NoMatchingParent,
            format!(
                "Gateway {} has no listener{}{}",
                gw.key,
                parent
                    .section
                    .as_deref()
                    .map(|s| format!(" named {s:?}"))
                    .unwrap_or_default(),
                parent
                    .port
                    .map(|p| format!(" on port {p}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let served: Vec<(usize, &Listener)> =
        selected.into_iter().filter(|(_, l)| l.served()).collect();
    if served.is_empty() {
        return Err(refuse(
            AttachReason::NoMatchingParent,
            format!("no listener of Gateway {} it selects is served", gw.key),
        ));
    }
    let own = gw.key.namespace();
    let allowed: Vec<(usize, &Listener)> = served
        .into_iter()
        .filter(|(_, l)| l.kinds.contains(&kind))
        .filter(|(_, l)| l.namespaces == AllowedNamespaces::All || namespace == own)
        .collect();
    if allowed.is_empty() {
        return Err(refuse(
            AttachReason::NotAllowedByListeners,
            format!(
                "the listeners of Gateway {} it selects take no {} from namespace {namespace:?}",
                gw.key,
                kind.as_str()
            ),
        ));
    }
    let mut out = Attachment {
        listeners: Vec::new(),
        hostnames: Vec::new(),
        sides: BTreeMap::new(),
    };
    let mut any = false;
    // Per side: whether some listener serves any host, and the names.
    let mut sides: BTreeMap<ListenerSide, (bool, Vec<String>)> = BTreeMap::new();
    let with_https = gw.listeners.iter().any(|l| l.https && l.served());
    for (i, l) in allowed {
        let Some(names) = intersect(l.hostname.as_deref(), hostnames) else {
            continue;
        };
        out.listeners.push(i);
        any |= names.is_empty();
        let side = sides.entry(l.side(with_https)).or_default();
        side.0 |= names.is_empty();
        side.1.extend(names.iter().cloned());
        out.hostnames.extend(names);
    }
    out.sides = sides
        .into_iter()
        .map(|(side, (any, names))| (side, if any { Vec::new() } else { sorted(names) }))
        .collect();
    if out.listeners.is_empty() {
        return Err(refuse(
            AttachReason::NoMatchingListenerHostname,
            format!(
                "no hostname of the route matches a listener of Gateway {} it selects",
                gw.key
            ),
        ));
    }
    if any {
        out.hostnames.clear();
    }
    out.hostnames.sort();
    out.hostnames.dedup();
    Ok(out)
}

/// The hostnames a route serves on a listener: None when none match,
/// `Some([])` for any host (neither names one).
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![l.to_string()]);
    }
    let out: Vec<String> = route.iter().filter_map(|r| intersect_one(l, r)).collect();
    (!out.is_empty()).then_some(out)
}

/// Two hostnames' intersection: the more specific of the two when one
/// covers the other. A wildcard `*.example.com` covers every name under
/// `example.com` (one or more labels), never `example.com` itself.
fn intersect_one(a: &str, b: &str) -> Option<String> {
    if a == b {
        return Some(a.to_string());
    }
    if covers(a, b) {
        return Some(b.to_string());
    }
    if covers(b, a) {
        return Some(a.to_string());
    }
    None
}

/// Whether wildcard `pattern` covers `name` (exact or a narrower wildcard).
fn covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `suffix` is ".example.com"; `name` needs at least one label before it.
    name.len() > suffix.len() && name.ends_with(suffix)
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

/// A route as one Gateway serves it, from the attachments of its
/// parentRefs to that Gateway (at least one), with no ports: on a Gateway
/// without HTTPS listeners once, for both of the gateway's sockets, with
/// the hostnames of all its listeners (any when one serves any host); on
/// one with HTTPS listeners once per side it attached to (plaintext for
/// its HTTP listeners, TLS for its HTTPS ones), each with its listeners'
/// hostnames, or once for both when those are the same.
pub fn gateway_route(route: &Converted, attachments: &[&Attachment]) -> Vec<Route> {
    let side = |side: ListenerSide| -> Option<Vec<String>> {
        let lists: Vec<&Vec<String>> = attachments
            .iter()
            .filter_map(|a| a.sides.get(&side))
            .collect();
        if lists.is_empty() {
            return None;
        }
        if lists.iter().any(|l| l.is_empty()) {
            return Some(Vec::new());
        }
        Some(sorted(lists.into_iter().flatten().cloned().collect()))
    };
    let make = |hostnames: Vec<String>, listener: ListenerSide| Route {
        name: route.name.clone(),
        kind: route.kind,
        ports: Vec::new(),
        hostnames,
        rules: route.rules.clone(),
        listener,
    };
    let (http, https) = (side(ListenerSide::Http), side(ListenerSide::Https));
    if http.is_some() && http == https {
        return http
            .map(|h| make(h, ListenerSide::Any))
            .into_iter()
            .collect();
    }
    [
        (side(ListenerSide::Any), ListenerSide::Any),
        (http, ListenerSide::Http),
        (https, ListenerSide::Https),
    ]
    .into_iter()
    .filter_map(|(hosts, listener)| hosts.map(|h| make(h, listener)))
    .collect()
}
