//! HTTPRoute and GRPCRoute specs to [`Converted`] routes: parentRefs,
//! hostnames, matches, backends, timeouts; filters are in
//! [`super::filters`]. A GRPCRoute's parentRefs and backendRefs have the
//! HTTPRoute's schema and are read through it.

use mycel_crds::gateway_api::grpcroutes::{
    GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesMethodType, GrpcRouteSpec,
};
use mycel_crds::gateway_api::httproutes::{
    HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteSpec,
};

use super::filters::{filters, recast, Place};
use super::gateway::{self, GatewayParent};
use super::model::{
    GrpcMethodMatch, HeaderMatch, PathMatch, QueryMatch, RouteBackend, RouteKind, RouteMatch,
    RouteRule, StringMatch,
};
use super::{validate, Converted, Reason, RouteError, ServiceParent, ServiceRef, Source};
use crate::model::ServiceKey;

/// Greatest backend weight the Gateway API allows.
const MAX_WEIGHT: i32 = 1_000_000;

/// What a conversion carries along: the object, and the Services it
/// references so far.
pub struct Ctx<'a> {
    pub source: &'a Source<'a>,
    refs: Vec<ServiceRef>,
    /// Where the first GatewayPolicy filter is.
    pub gateway_only: Option<String>,
}

impl<'a> Ctx<'a> {
    fn new(source: &'a Source<'a>) -> Self {
        Self {
            source,
            refs: Vec::new(),
            gateway_only: None,
        }
    }
}

pub fn http_route(source: &Source<'_>, spec: &HttpRouteSpec) -> Result<Converted, RouteError> {
    let mut ctx = Ctx::new(source);
    let (parents, gateways) = parents(&ctx, spec.parent_refs.as_deref().unwrap_or_default())?;
    let hostnames = hostnames(spec.hostnames.as_deref().unwrap_or_default())?;
    let rules = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| http_rule(&mut ctx, &format!("spec.rules[{i}]"), r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(converted(
        ctx,
        RouteKind::Http,
        (parents, gateways),
        hostnames,
        rules,
    ))
}

pub fn grpc_route(source: &Source<'_>, spec: &GrpcRouteSpec) -> Result<Converted, RouteError> {
    let mut ctx = Ctx::new(source);
    let parent_refs: Vec<HttpRouteParentRefs> = recast(
        "spec.parentRefs",
        &spec.parent_refs.clone().unwrap_or_default(),
    )?;
    let (parents, gateways) = parents(&ctx, &parent_refs)?;
    let hostnames = hostnames(spec.hostnames.as_deref().unwrap_or_default())?;
    let rules = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| grpc_rule(&mut ctx, &format!("spec.rules[{i}]"), r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(converted(
        ctx,
        RouteKind::Grpc,
        (parents, gateways),
        hostnames,
        rules,
    ))
}

fn converted(
    ctx: Ctx<'_>,
    kind: RouteKind,
    (parents, gateways): (Vec<ServiceParent>, Vec<GatewayParent>),
    hostnames: Vec<String>,
    rules: Vec<RouteRule>,
) -> Converted {
    Converted {
        kind,
        name: format!("{}/{}", ctx.source.namespace, ctx.source.name),
        parents,
        gateways,
        hostnames,
        rules,
        refs: ctx.refs,
        gateway_only: ctx.gateway_only,
    }
}

/// Whether a group names the core API ("" or its alias "core").
fn core_group(group: Option<&str>) -> bool {
    matches!(group, Some("" | "core"))
}

type Parents = (Vec<ServiceParent>, Vec<GatewayParent>);

/// The Service parents and the Gateway parents; other parents (another
/// group's kinds) are not this controller's and are left alone.
fn parents(ctx: &Ctx<'_>, refs: &[HttpRouteParentRefs]) -> Result<Parents, RouteError> {
    let mut out = Vec::new();
    let mut gateways = Vec::new();
    for (index, p) in refs.iter().enumerate() {
        let at = format!("spec.parentRefs[{index}]");
        // A parentRef's kind defaults to Gateway and its group to the
        // Gateway API's, as the schema says.
        let group = p.group.as_deref().unwrap_or(gateway::GROUP);
        if p.kind.as_deref().unwrap_or("Gateway") == "Gateway" && group == gateway::GROUP {
            gateways.push(gateway_parent(ctx, index, p)?);
            continue;
        }
        if p.kind.as_deref() != Some("Service") {
            continue;
        }
        if !core_group(p.group.as_deref()) {
            return Err(RouteError::invalid(
                format!("{at}.group"),
                format!(
                    "a Service parent needs group \"\" (core), found {:?} (the default is gateway.networking.k8s.io)",
                    p.group.as_deref().unwrap_or("gateway.networking.k8s.io")
                ),
            ));
        }
        if p.section_name.is_some() {
            return Err(RouteError::new(
                format!("{at}.sectionName"),
                "a Service parent takes no sectionName (name a port with `port`)",
                Reason::Unsupported,
            ));
        }
        let namespace = p.namespace.as_deref().unwrap_or(ctx.source.namespace);
        let service = ServiceKey::new(&p.name, namespace)
            .map_err(|e| RouteError::invalid(format!("{at}.name"), e.to_string()))?;
        let port = p
            .port
            .map(validate::port)
            .transpose()
            .map_err(|m| RouteError::invalid(format!("{at}.port"), m))?;
        out.push(ServiceParent {
            index,
            service,
            port,
        });
    }
    Ok((out, gateways))
}

fn gateway_parent(
    ctx: &Ctx<'_>,
    index: usize,
    p: &HttpRouteParentRefs,
) -> Result<GatewayParent, RouteError> {
    let at = format!("spec.parentRefs[{index}]");
    let namespace = p.namespace.as_deref().unwrap_or(ctx.source.namespace);
    let gateway = ServiceKey::new(&p.name, namespace).map_err(|e| {
        RouteError::invalid(
            format!("{at}.name"),
            format!("{e} (a Gateway name must be a DNS label)"),
        )
    })?;
    let port = p
        .port
        .map(validate::port)
        .transpose()
        .map_err(|m| RouteError::invalid(format!("{at}.port"), m))?;
    Ok(GatewayParent {
        index,
        gateway,
        section: p.section_name.clone(),
        port,
    })
}

fn hostnames(raw: &[String]) -> Result<Vec<String>, RouteError> {
    raw.iter()
        .enumerate()
        .map(|(i, h)| {
            validate::hostname(h, true)
                .map_err(|m| RouteError::invalid(format!("spec.hostnames[{i}]"), m))
        })
        .collect()
}

fn http_rule(ctx: &mut Ctx<'_>, at: &str, r: &HttpRouteRules) -> Result<RouteRule, RouteError> {
    let mut matches = r
        .matches
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| http_match(&format!("{at}.matches[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: Some(PathMatch::Prefix("/".into())),
            ..RouteMatch::default()
        });
    }
    let prefix_only = matches
        .iter()
        .all(|m| matches!(m.path, Some(PathMatch::Prefix(_))));
    let rule_filters = filters(
        ctx,
        &format!("{at}.filters"),
        r.filters.as_deref().unwrap_or_default(),
        Place::Rule { prefix_only },
    )?;
    let backends = r
        .backend_refs
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, b)| backend(ctx, &format!("{at}.backendRefs[{i}]"), b, prefix_only))
        .collect::<Result<Vec<_>, _>>()?;
    let mut timeout_ms = 0;
    if let Some(t) = &r.timeouts {
        if let Some(raw) = &t.request {
            timeout_ms = validate::duration_ms(raw)
                .map_err(|m| RouteError::invalid(format!("{at}.timeouts.request"), m))?;
        }
        if t.backend_request.is_some() {
            return Err(RouteError::new(
                format!("{at}.timeouts.backendRequest"),
                "not supported (set a per-try timeout in a TrafficPolicy's retry section instead)",
                Reason::Unsupported,
            ));
        }
    }
    Ok(RouteRule {
        matches,
        filters: rule_filters,
        backends,
        timeout_ms,
    })
}

fn grpc_rule(ctx: &mut Ctx<'_>, at: &str, r: &GrpcRouteRules) -> Result<RouteRule, RouteError> {
    let mut matches = r
        .matches
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| grpc_match(&format!("{at}.matches[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    if matches.is_empty() {
        matches.push(RouteMatch::default());
    }
    let field = format!("{at}.filters");
    let list: Vec<HttpRouteRulesFilters> = recast(&field, &r.filters.clone().unwrap_or_default())?;
    // A gRPC path is never rewritten by prefix: there is no path match.
    let rule_filters = filters(ctx, &field, &list, Place::Rule { prefix_only: false })?;
    let field = format!("{at}.backendRefs");
    let refs: Vec<HttpRouteRulesBackendRefs> =
        recast(&field, &r.backend_refs.clone().unwrap_or_default())?;
    let backends = refs
        .iter()
        .enumerate()
        .map(|(i, b)| backend(ctx, &format!("{field}[{i}]"), b, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteRule {
        matches,
        filters: rule_filters,
        backends,
        timeout_ms: 0,
    })
}

fn string_match(at: &str, regex: bool, value: &str) -> Result<StringMatch, RouteError> {
    if regex {
        validate::regex(value).map_err(|m| RouteError::invalid(at, m))?;
        Ok(StringMatch::Regex(value.to_string()))
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}

fn header_matches(
    at: &str,
    headers: &[HttpRouteRulesMatchesHeaders],
) -> Result<Vec<HeaderMatch>, RouteError> {
    let mut out: Vec<HeaderMatch> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let at = format!("{at}.headers[{i}]");
        let name = validate::header_name(&h.name)
            .map_err(|m| RouteError::invalid(format!("{at}.name"), m))?;
        if out.iter().any(|o| o.name == name) {
            return Err(RouteError::invalid(
                format!("{at}.name"),
                format!("header {name:?} is matched twice (names are case-insensitive)"),
            ));
        }
        let regex = h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression);
        let value = string_match(&format!("{at}.value"), regex, &h.value)?;
        out.push(HeaderMatch { name, value });
    }
    Ok(out)
}

fn http_match(at: &str, m: &HttpRouteRulesMatches) -> Result<RouteMatch, RouteError> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            // The schema's defaults: PathPrefix, "/".
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            let field = format!("{at}.path.value");
            match p.r#type {
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => {
                    validate::path(&value).map_err(|e| RouteError::invalid(&field, e))?;
                    PathMatch::Prefix(value)
                }
                Some(HttpRouteRulesMatchesPathType::Exact) => {
                    validate::path(&value).map_err(|e| RouteError::invalid(&field, e))?;
                    PathMatch::Exact(value)
                }
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    validate::regex(&value).map_err(|e| RouteError::invalid(&field, e))?;
                    PathMatch::Regex(value)
                }
            }
        }
    };
    let headers = header_matches(at, m.headers.as_deref().unwrap_or_default())?;
    let mut query: Vec<QueryMatch> = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let at = format!("{at}.queryParams[{i}]");
        validate::query_name(&q.name).map_err(|e| RouteError::invalid(format!("{at}.name"), e))?;
        if query.iter().any(|o| o.name == q.name) {
            return Err(RouteError::invalid(
                format!("{at}.name"),
                format!("query parameter {:?} is matched twice", q.name),
            ));
        }
        let regex = q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression);
        query.push(QueryMatch {
            name: q.name.clone(),
            value: string_match(&format!("{at}.value"), regex, &q.value)?,
        });
    }
    Ok(RouteMatch {
        path: Some(path),
        headers,
        query,
        method: m.method.as_ref().map(method),
        grpc: None,
    })
}

fn method(m: &HttpRouteRulesMatchesMethod) -> String {
    use HttpRouteRulesMatchesMethod as M;
    match m {
        M::Get => "GET",
        M::Head => "HEAD",
        M::Post => "POST",
        M::Put => "PUT",
        M::Delete => "DELETE",
        M::Connect => "CONNECT",
        M::Options => "OPTIONS",
        M::Trace => "TRACE",
        M::Patch => "PATCH",
    }
    .to_string()
}

fn grpc_match(at: &str, m: &GrpcRouteRulesMatches) -> Result<RouteMatch, RouteError> {
    let headers: Vec<HttpRouteRulesMatchesHeaders> =
        recast(at, &m.headers.clone().unwrap_or_default())?;
    let headers = header_matches(at, &headers)?;
    let grpc = match &m.method {
        None => None,
        Some(mm) => {
            let at = format!("{at}.method");
            if mm.service.is_none() && mm.method.is_none() {
                return Err(RouteError::invalid(
                    &at,
                    "one of service and method must be set",
                ));
            }
            let regex = mm.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression);
            let one =
                |name: &str, value: &Option<String>, exact: fn(&str) -> Result<(), String>| {
                    value
                        .as_deref()
                        .map(|v| {
                            let field = format!("{at}.{name}");
                            if !regex {
                                exact(v).map_err(|e| RouteError::invalid(&field, e))?;
                            }
                            string_match(&field, regex, v)
                        })
                        .transpose()
                };
            Some(GrpcMethodMatch {
                service: one("service", &mm.service, validate::grpc_service)?,
                method: one("method", &mm.method, validate::grpc_method)?,
            })
        }
    };
    Ok(RouteMatch {
        path: None,
        headers,
        query: Vec::new(),
        method: None,
        grpc,
    })
}

fn backend(
    ctx: &mut Ctx<'_>,
    at: &str,
    b: &HttpRouteRulesBackendRefs,
    prefix_only: bool,
) -> Result<RouteBackend, RouteError> {
    // A backendRef's group and kind default to the core Service.
    let group = Some(b.group.as_deref().unwrap_or(""));
    let kind = Some(b.kind.as_deref().unwrap_or("Service"));
    let (service, port) = service_ref(
        ctx,
        at,
        group,
        kind,
        &b.name,
        b.namespace.as_deref(),
        b.port,
    )?;
    let weight = match b.weight {
        None => 1,
        Some(w @ 0..=MAX_WEIGHT) => w.unsigned_abs(),
        Some(w) => {
            return Err(RouteError::invalid(
                format!("{at}.weight"),
                format!("{w} is not 0-{MAX_WEIGHT}"),
            ))
        }
    };
    let field = format!("{at}.filters");
    let list: Vec<HttpRouteRulesFilters> = recast(&field, &b.filters.clone().unwrap_or_default())?;
    let filters = filters(ctx, &field, &list, Place::Backend { prefix_only })?;
    Ok(RouteBackend {
        service,
        port,
        weight,
        filters,
    })
}

/// A reference to a Service of the route's namespace with a port (a
/// backend or a mirror), recorded for the source to check it exists.
pub fn service_ref(
    ctx: &mut Ctx<'_>,
    at: &str,
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
    port: Option<i32>,
) -> Result<(ServiceKey, u16), RouteError> {
    let kind = kind.unwrap_or("Service");
    if kind != "Service" || !core_group(Some(group.unwrap_or(""))) {
        return Err(RouteError::new(
            format!("{at}.kind"),
            format!(
                "{}/{kind} is not supported (only core Services can be sent to)",
                group.unwrap_or("")
            ),
            Reason::Unsupported,
        ));
    }
    let own = ctx.source.namespace;
    if let Some(ns) = namespace.filter(|ns| *ns != own) {
        return Err(RouteError::new(
            format!("{at}.namespace"),
            format!(
                "{ns:?} is not the route's namespace {own:?}; a reference to another namespace needs a ReferenceGrant, which Mycel does not support yet"
            ),
            Reason::RefNotPermitted,
        ));
    }
    let service = ServiceKey::new(name, own)
        .map_err(|e| RouteError::invalid(format!("{at}.name"), e.to_string()))?;
    let port = port
        .ok_or_else(|| {
            RouteError::invalid(
                format!("{at}.port"),
                "is required for a Service (the Gateway API asks for it)",
            )
        })
        .and_then(|p| {
            validate::port(p).map_err(|m| RouteError::invalid(format!("{at}.port"), m))
        })?;
    ctx.refs.push(ServiceRef {
        field: at.to_string(),
        service: service.clone(),
        port,
    });
    Ok((service, port))
}
