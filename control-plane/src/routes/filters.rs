//! Route filters. Upstream declares the same filter schema in several
//! places (rule, backend; HTTPRoute, GRPCRoute), and kopium generates one
//! Rust type per place; the other places are re-read as the HTTPRoute
//! rule's type ([`recast`]), so one conversion serves them all.

use mycel_crds::gateway_api::httproutes::{
    HttpRouteRulesFilters, HttpRouteRulesFiltersExtensionRef,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestRedirect, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePathType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::convert::{service_ref, Ctx};
use super::model::{
    GatewayPolicy, HeaderModifier, PathModifier, RequestMirror, RequestRedirect, RouteFilter,
    UrlRewrite,
};
use super::{validate, PolicyFault, Reason, RouteError};

/// The group of the `ExtensionRef`s Mycel reads.
pub const EXTENSION_GROUP: &str = "mycel.io";
/// A TrafficPolicy, whose fault section applies to the requests.
pub const EXTENSION_KIND: &str = "TrafficPolicy";
/// A GatewayPolicy: authentication and a rate limit, at gateways only.
pub const GATEWAY_POLICY_KIND: &str = "GatewayPolicy";

/// Re-reads a value as another generated type of the same schema.
pub fn recast<T: Serialize, U: DeserializeOwned>(field: &str, value: &T) -> Result<U, RouteError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| RouteError::invalid(field, e.to_string()))
}

/// Where the filter list sits, which decides what it may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A rule's `filters`; `prefix_only`: every match of the rule is a
    /// path prefix (what `ReplacePrefixMatch` needs).
    Rule { prefix_only: bool },
    /// A backendRef's `filters`.
    Backend { prefix_only: bool },
}

impl Place {
    fn prefix_only(self) -> bool {
        match self {
            Place::Rule { prefix_only } | Place::Backend { prefix_only } => prefix_only,
        }
    }
}

pub fn filters(
    ctx: &mut Ctx<'_>,
    at: &str,
    list: &[HttpRouteRulesFilters],
    place: Place,
) -> Result<Vec<RouteFilter>, RouteError> {
    let mut out = Vec::with_capacity(list.len());
    let mut seen: Vec<&HttpRouteRulesFiltersType> = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        // The schema allows each of these once per list.
        let once = matches!(
            f.r#type,
            HttpRouteRulesFiltersType::RequestHeaderModifier
                | HttpRouteRulesFiltersType::ResponseHeaderModifier
                | HttpRouteRulesFiltersType::RequestRedirect
                | HttpRouteRulesFiltersType::UrlRewrite
        );
        if once && seen.contains(&&f.r#type) {
            return Err(RouteError::invalid(
                format!("{at}.type"),
                format!("{:?} may appear once in a filter list", f.r#type),
            ));
        }
        seen.push(&f.r#type);
        out.push(filter(ctx, &at, f, place)?);
    }
    let has = |t: HttpRouteRulesFiltersType| seen.contains(&&t);
    if has(HttpRouteRulesFiltersType::RequestRedirect) && has(HttpRouteRulesFiltersType::UrlRewrite)
    {
        return Err(RouteError::invalid(
            at,
            "RequestRedirect and URLRewrite cannot be used together (a redirect answers the request, a rewrite forwards it)",
        ));
    }
    Ok(out)
}

fn filter(
    ctx: &mut Ctx<'_>,
    at: &str,
    f: &HttpRouteRulesFilters,
    place: Place,
) -> Result<RouteFilter, RouteError> {
    use HttpRouteRulesFiltersType as T;
    let missing = |name: &str| {
        RouteError::invalid(
            format!("{at}.{name}"),
            format!("must be set when type is {:?}", f.r#type),
        )
    };
    match f.r#type {
        T::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            Ok(RouteFilter::RequestHeaderModifier(header_modifier(
                &format!("{at}.requestHeaderModifier"),
                m,
            )?))
        }
        T::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            let field = format!("{at}.responseHeaderModifier");
            // Same schema as the request one.
            let m: HttpRouteRulesFiltersRequestHeaderModifier = recast(&field, m)?;
            Ok(RouteFilter::ResponseHeaderModifier(header_modifier(
                &field, &m,
            )?))
        }
        T::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            Ok(RouteFilter::RequestRedirect(redirect(
                &format!("{at}.requestRedirect"),
                r,
                place.prefix_only(),
            )?))
        }
        T::UrlRewrite => {
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            Ok(RouteFilter::UrlRewrite(rewrite(
                &format!("{at}.urlRewrite"),
                r,
                place.prefix_only(),
            )?))
        }
        T::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            Ok(RouteFilter::RequestMirror(mirror(
                ctx,
                &format!("{at}.requestMirror"),
                m,
            )?))
        }
        T::ExtensionRef => {
            let e = f
                .extension_ref
                .as_ref()
                .ok_or_else(|| missing("extensionRef"))?;
            extension(ctx, &format!("{at}.extensionRef"), e)
        }
        T::Cors => Err(RouteError::new(
            format!("{at}.type"),
            "CORS filters are not supported by Mycel",
            Reason::Unsupported,
        )),
    }
}

fn header_modifier(
    at: &str,
    m: &HttpRouteRulesFiltersRequestHeaderModifier,
) -> Result<HeaderModifier, RouteError> {
    let mut names: Vec<String> = Vec::new();
    let mut once = |field: String, raw: &str| -> Result<String, RouteError> {
        let name = validate::header_name(raw).map_err(|m| RouteError::invalid(&field, m))?;
        if names.contains(&name) {
            return Err(RouteError::invalid(
                field,
                format!("header {name:?} appears more than once across set, add and remove"),
            ));
        }
        names.push(name.clone());
        Ok(name)
    };
    let mut out = HeaderModifier::default();
    for (i, h) in m.set.iter().flatten().enumerate() {
        let name = once(format!("{at}.set[{i}].name"), &h.name)?;
        validate::header_value(&h.value)
            .map_err(|e| RouteError::invalid(format!("{at}.set[{i}].value"), e))?;
        out.set.push((name, h.value.clone()));
    }
    for (i, h) in m.add.iter().flatten().enumerate() {
        let name = once(format!("{at}.add[{i}].name"), &h.name)?;
        validate::header_value(&h.value)
            .map_err(|e| RouteError::invalid(format!("{at}.add[{i}].value"), e))?;
        out.add.push((name, h.value.clone()));
    }
    for (i, raw) in m.remove.iter().flatten().enumerate() {
        out.remove.push(once(format!("{at}.remove[{i}]"), raw)?);
    }
    Ok(out)
}

/// A path modifier of a redirect or rewrite (`full`: `ReplaceFullPath`).
fn path_modifier(
    at: &str,
    full: bool,
    replace_full: Option<&String>,
    replace_prefix: Option<&String>,
    prefix_only: bool,
) -> Result<PathModifier, RouteError> {
    let (value, name) = if full {
        (replace_full, "replaceFullPath")
    } else {
        (replace_prefix, "replacePrefixMatch")
    };
    let value = value.ok_or_else(|| {
        RouteError::invalid(
            format!("{at}.{name}"),
            format!("must be set for type {name}"),
        )
    })?;
    if !value.is_empty() {
        validate::path(value).map_err(|m| RouteError::invalid(format!("{at}.{name}"), m))?;
    }
    if full {
        return Ok(PathModifier::ReplaceFullPath(value.clone()));
    }
    if !prefix_only {
        return Err(RouteError::invalid(
            format!("{at}.type"),
            "ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match",
        ));
    }
    Ok(PathModifier::ReplacePrefixMatch(value.clone()))
}

fn redirect(
    at: &str,
    r: &HttpRouteRulesFiltersRequestRedirect,
    prefix_only: bool,
) -> Result<RequestRedirect, RouteError> {
    let status_code = match r.status_code {
        None => 302,
        Some(c @ (301 | 302 | 303 | 307 | 308)) => c as u16,
        Some(c) => {
            return Err(RouteError::invalid(
                format!("{at}.statusCode"),
                format!("{c} is not one of 301, 302, 303, 307, 308"),
            ))
        }
    };
    let hostname = r
        .hostname
        .as_deref()
        .map(|h| validate::hostname(h, false))
        .transpose()
        .map_err(|m| RouteError::invalid(format!("{at}.hostname"), m))?;
    let port = r
        .port
        .map(validate::port)
        .transpose()
        .map_err(|m| RouteError::invalid(format!("{at}.port"), m))?;
    let path = r
        .path
        .as_ref()
        .map(|p| {
            path_modifier(
                &format!("{at}.path"),
                p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
                prefix_only,
            )
        })
        .transpose()?;
    Ok(RequestRedirect {
        scheme: r.scheme.as_ref().map(|s| match s {
            HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_string(),
            HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_string(),
        }),
        hostname,
        path,
        port,
        status_code,
    })
}

fn rewrite(
    at: &str,
    r: &HttpRouteRulesFiltersUrlRewrite,
    prefix_only: bool,
) -> Result<UrlRewrite, RouteError> {
    let hostname = r
        .hostname
        .as_deref()
        .map(|h| validate::hostname(h, false))
        .transpose()
        .map_err(|m| RouteError::invalid(format!("{at}.hostname"), m))?;
    let path = r
        .path
        .as_ref()
        .map(|p| {
            path_modifier(
                &format!("{at}.path"),
                p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
                prefix_only,
            )
        })
        .transpose()?;
    Ok(UrlRewrite { hostname, path })
}

fn mirror(
    ctx: &mut Ctx<'_>,
    at: &str,
    m: &HttpRouteRulesFiltersRequestMirror,
) -> Result<RequestMirror, RouteError> {
    let b = &m.backend_ref;
    let (service, port) = service_ref(
        ctx,
        &format!("{at}.backendRef"),
        b.group.as_deref(),
        b.kind.as_deref(),
        &b.name,
        b.namespace.as_deref(),
        b.port,
    )?;
    let percent = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            return Err(RouteError::invalid(
                at,
                "percent and fraction cannot both be set",
            ))
        }
        (Some(p), None) => u32::try_from(p).ok().filter(|p| *p <= 100).ok_or_else(|| {
            RouteError::invalid(format!("{at}.percent"), format!("{p} is not 0-100"))
        })?,
        (None, Some(f)) => {
            let field = format!("{at}.fraction");
            let denominator = f.denominator.unwrap_or(100);
            if denominator < 1 || f.numerator < 0 || f.numerator > denominator {
                return Err(RouteError::invalid(
                    field,
                    format!(
                        "{}/{denominator} is not a fraction of at most 1 (denominator at least 1)",
                        f.numerator
                    ),
                ));
            }
            let hundredths = i64::from(f.numerator) * 100;
            if hundredths % i64::from(denominator) != 0 {
                return Err(RouteError::new(
                    field,
                    format!(
                        "{}/{denominator} is not a whole percent; Mycel mirrors whole percents",
                        f.numerator
                    ),
                    Reason::Unsupported,
                ));
            }
            // At most 100, since numerator <= denominator.
            u32::try_from(hundredths / i64::from(denominator)).unwrap_or(100)
        }
        (None, None) => 100,
    };
    Ok(RequestMirror {
        service,
        port,
        percent,
    })
}

fn extension(
    ctx: &mut Ctx<'_>,
    at: &str,
    e: &HttpRouteRulesFiltersExtensionRef,
) -> Result<RouteFilter, RouteError> {
    if e.group == EXTENSION_GROUP && e.kind == GATEWAY_POLICY_KIND {
        return gateway_policy(ctx, at, &e.name);
    }
    if e.group != EXTENSION_GROUP || e.kind != EXTENSION_KIND {
        return Err(RouteError::new(
            at,
            format!(
                "extension {}/{} is not supported (Mycel reads group {EXTENSION_GROUP}, kind {EXTENSION_KIND}: the fault section of that policy, or kind {GATEWAY_POLICY_KIND})",
                e.group, e.kind
            ),
            Reason::Unsupported,
        ));
    }
    match (ctx.source.policies)(&e.name) {
        PolicyFault::Fault(fault) => Ok(RouteFilter::Fault {
            policy: format!("{}/{}", ctx.source.namespace, e.name),
            fault,
        }),
        PolicyFault::NoFault => Err(RouteError::invalid(
            format!("{at}.name"),
            format!("TrafficPolicy {:?} has no fault section to apply", e.name),
        )),
        PolicyFault::Missing => Err(RouteError::new(
            format!("{at}.name"),
            format!(
                "no TrafficPolicy {:?} in namespace {:?}",
                e.name, ctx.source.namespace
            ),
            Reason::RefNotFound,
        )),
    }
}

/// A GatewayPolicy of the route's namespace, copied in whole; the route
/// remembers where, since no Service parent may take it.
fn gateway_policy(ctx: &mut Ctx<'_>, at: &str, name: &str) -> Result<RouteFilter, RouteError> {
    let namespace = ctx.source.namespace;
    let spec = (ctx.source.gateway_policies)(name).ok_or_else(|| {
        RouteError::new(
            format!("{at}.name"),
            format!("no {GATEWAY_POLICY_KIND} {name:?} in namespace {namespace:?}"),
            Reason::RefNotFound,
        )
    })?;
    ctx.gateway_only.get_or_insert_with(|| at.to_string());
    Ok(RouteFilter::GatewayPolicy(Box::new(GatewayPolicy {
        name: format!("{namespace}/{name}"),
        spec,
    })))
}
