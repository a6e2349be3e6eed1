//! The `ROUTES` resource into the data path's model
//! ([`crate::core::directory::routes`]). The controller validated the
//! routes already; this checks again what the data path relies on (valid
//! header names and values, patterns that compile within their size limit,
//! service keys, status codes), so a controller that sends nonsense gets a
//! NACK naming the field and the last good routes stay.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mycel_api::names::ServiceKey;
use mycel_api::v1 as pb;

use super::{ConvertError, Ctx};
use crate::core::directory::routes::{
    Backend, Filter, GrpcMethodMatch, Header, HeaderMatch, HeaderModifier, ListenerProtocol,
    Mirror, PathMatch, PathModifier, Pattern, QueryMatch, Redirect, Route, RouteKind, RouteMatch,
    RouteRule, ServiceRoutes, StringMatch, UrlRewrite,
};

/// Caps on what one parent may carry, so one resource cannot make every
/// subscribed proxy hold (and scan per request) an unbounded table.
const MAX_ROUTES: usize = 256;
const MAX_RULES: usize = 64;
const MAX_MATCHES: usize = 64;
const MAX_BACKENDS: usize = 64;
/// Matches across every route of one parent: each request may be checked
/// against all of them.
const MAX_TOTAL_MATCHES: usize = 4096;

pub(super) fn routes(ctx: &Ctx, key: &str, r: &pb::Routes) -> Result<ServiceRoutes, ConvertError> {
    if r.parent != key {
        return Err(ctx.err(
            "routes.parent",
            format!("{:?} is not the resource key", r.parent),
        ));
    }
    if r.routes.len() > MAX_ROUTES {
        return Err(ctx.err(
            "routes.routes",
            format!("{} routes; at most {MAX_ROUTES}", r.routes.len()),
        ));
    }
    let total: usize = r
        .routes
        .iter()
        .flat_map(|route| &route.rules)
        .map(|rule| rule.matches.len().max(1))
        .sum();
    if total > MAX_TOTAL_MATCHES {
        return Err(ctx.err(
            "routes.routes",
            format!("{total} matches in all; at most {MAX_TOTAL_MATCHES}"),
        ));
    }
    let routes = r
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| convert_route(ctx, &format!("routes.routes[{i}]"), route))
        .collect::<Result<_, _>>()?;
    Ok(ServiceRoutes { routes })
}

fn convert_route(ctx: &Ctx, at: &str, r: &pb::Route) -> Result<Route, ConvertError> {
    if r.name.is_empty() {
        return Err(ctx.err(format!("{at}.name"), "missing"));
    }
    let kind = match pb::RouteKind::try_from(r.kind) {
        Ok(pb::RouteKind::Http) => RouteKind::Http,
        Ok(pb::RouteKind::Grpc) => RouteKind::Grpc,
        _ => {
            return Err(ctx.err(
                format!("{at}.kind"),
                format!("unknown route kind {}", r.kind),
            ))
        }
    };
    let listener = match pb::ListenerProtocol::try_from(r.listener_protocol) {
        Ok(pb::ListenerProtocol::Unspecified) => ListenerProtocol::Any,
        Ok(pb::ListenerProtocol::Http) => ListenerProtocol::Http,
        Ok(pb::ListenerProtocol::Https) => ListenerProtocol::Https,
        Err(_) => {
            return Err(ctx.err(
                format!("{at}.listener_protocol"),
                format!("unknown listener protocol {}", r.listener_protocol),
            ))
        }
    };
    let ports = r
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| super::port(ctx, format!("{at}.ports[{i}]"), *p))
        .collect::<Result<_, _>>()?;
    let hostnames = r
        .hostnames
        .iter()
        .enumerate()
        .map(|(i, h)| hostname(ctx, &format!("{at}.hostnames[{i}]"), h))
        .collect::<Result<_, _>>()?;
    if r.rules.len() > MAX_RULES {
        return Err(ctx.err(
            format!("{at}.rules"),
            format!("{} rules; at most {MAX_RULES}", r.rules.len()),
        ));
    }
    let rules = r
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| convert_rule(ctx, &format!("{at}.rules[{i}]"), kind, rule))
        .collect::<Result<_, _>>()?;
    Ok(Route {
        name: r.name.clone(),
        kind,
        ports,
        hostnames,
        listener,
        rules,
    })
}

fn hostname(ctx: &Ctx, at: &str, h: &str) -> Result<String, ConvertError> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return Err(ctx.err(
            at,
            format!("{h:?} is not a lowercase hostname (optionally *.-prefixed)"),
        ));
    }
    Ok(h.to_string())
}

fn convert_rule(
    ctx: &Ctx,
    at: &str,
    kind: RouteKind,
    r: &pb::RouteRule,
) -> Result<RouteRule, ConvertError> {
    if r.matches.len() > MAX_MATCHES {
        return Err(ctx.err(
            format!("{at}.matches"),
            format!("{} matches; at most {MAX_MATCHES}", r.matches.len()),
        ));
    }
    if r.backends.len() > MAX_BACKENDS {
        return Err(ctx.err(
            format!("{at}.backends"),
            format!("{} backends; at most {MAX_BACKENDS}", r.backends.len()),
        ));
    }
    let matches: Vec<RouteMatch> = r
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| route_match(ctx, &format!("{at}.matches[{i}]"), kind, m))
        .collect::<Result<_, _>>()?;
    let filters = filters(ctx, &format!("{at}.filters"), &r.filters)?;
    // ReplacePrefixMatch replaces what a PathPrefix matched: with any other
    // path match the data path would have nothing to replace.
    let replaces_prefix = filters.iter().any(|f| match f {
        Filter::RequestRedirect(Redirect { path, .. })
        | Filter::UrlRewrite(UrlRewrite { path, .. }) => {
            matches!(path, Some(PathModifier::ReplacePrefixMatch(_)))
        }
        _ => false,
    });
    if replaces_prefix
        && matches.iter().any(|m| {
            matches!(
                m.path,
                Some(PathMatch::Exact(_) | PathMatch::RegularExpression(_))
            )
        })
    {
        return Err(ctx.err(
            format!("{at}.filters"),
            "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
        ));
    }
    let backends = r
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend(ctx, &format!("{at}.backends[{i}]"), b))
        .collect::<Result<_, _>>()?;
    Ok(RouteRule {
        matches,
        filters,
        backends,
        timeout: (r.timeout_ms != 0).then(|| Duration::from_millis(r.timeout_ms)),
    })
}

fn route_match(
    ctx: &Ctx,
    at: &str,
    kind: RouteKind,
    m: &pb::RouteMatch,
) -> Result<RouteMatch, ConvertError> {
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(pb::path_match::Kind::Exact(p)) => Some(PathMatch::Exact(path(ctx, at, p)?)),
        Some(pb::path_match::Kind::Prefix(p)) => Some(PathMatch::PathPrefix(path(ctx, at, p)?)),
        Some(pb::path_match::Kind::Regex(p)) => Some(PathMatch::RegularExpression(pattern(
            ctx,
            &format!("{at}.path.regex"),
            p,
        )?)),
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let hat = format!("{at}.headers[{i}]");
        headers.push(HeaderMatch {
            name: header_name(ctx, &format!("{hat}.name"), &h.name)?,
            value: string_match(ctx, &format!("{hat}.value"), h.value.as_ref())?,
        });
    }
    let mut query = Vec::with_capacity(m.query.len());
    for (i, q) in m.query.iter().enumerate() {
        let qat = format!("{at}.query[{i}]");
        if q.name.is_empty() {
            return Err(ctx.err(format!("{qat}.name"), "missing"));
        }
        query.push(QueryMatch {
            name: q.name.clone(),
            value: string_match(ctx, &format!("{qat}.value"), q.value.as_ref())?,
        });
    }
    let method = if m.method.is_empty() {
        None
    } else {
        Some(Method::from_bytes(m.method.as_bytes()).map_err(|_| {
            ctx.err(
                format!("{at}.method"),
                format!("{:?} is not an HTTP method", m.method),
            )
        })?)
    };
    let grpc = match &m.grpc {
        None => None,
        Some(_) if kind != RouteKind::Grpc => {
            return Err(ctx.err(
                format!("{at}.grpc"),
                "only a GRPCRoute matches gRPC methods",
            ))
        }
        Some(g) => {
            let opt = |field: &str, v: Option<&pb::StringMatch>| {
                v.map(|v| string_match(ctx, &format!("{at}.grpc.{field}"), Some(v)))
                    .transpose()
            };
            let service = opt("service", g.service.as_ref())?;
            let method = opt("method", g.method.as_ref())?;
            if service.is_none() && method.is_none() {
                return Err(ctx.err(format!("{at}.grpc"), "names neither a service nor a method"));
            }
            Some(GrpcMethodMatch { service, method })
        }
    };
    Ok(RouteMatch {
        path,
        headers,
        query,
        method,
        grpc,
    })
}

fn path(ctx: &Ctx, at: &str, p: &str) -> Result<String, ConvertError> {
    if !p.starts_with('/') {
        return Err(ctx.err(
            format!("{at}.path"),
            format!("{p:?} does not start with '/'"),
        ));
    }
    Ok(p.to_string())
}

fn pattern(ctx: &Ctx, at: &str, p: &str) -> Result<Pattern, ConvertError> {
    Pattern::new(p).map_err(|e| ctx.err(at, format!("{p:?} is not a valid pattern: {e}")))
}

fn string_match(
    ctx: &Ctx,
    at: &str,
    m: Option<&pb::StringMatch>,
) -> Result<StringMatch, ConvertError> {
    match m.and_then(|m| m.kind.as_ref()) {
        Some(pb::string_match::Kind::Exact(v)) => Ok(StringMatch::Exact(v.clone())),
        Some(pb::string_match::Kind::Regex(v)) => {
            Ok(StringMatch::RegularExpression(pattern(ctx, at, v)?))
        }
        None => Err(ctx.err(at, "missing")),
    }
}

fn header_name(ctx: &Ctx, at: &str, name: &str) -> Result<HeaderName, ConvertError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ctx.err(at, format!("{name:?} is not an HTTP header name")))
}

fn service_key(ctx: &Ctx, at: &str, key: &str) -> Result<String, ConvertError> {
    ServiceKey::parse(key).map_err(|e| ctx.err(at, e.to_string()))?;
    Ok(key.to_string())
}

/// 0 stands for "the port the request was sent to".
fn optional_port(ctx: &Ctx, at: String, p: u32) -> Result<Option<u16>, ConvertError> {
    if p == 0 {
        return Ok(None);
    }
    super::port(ctx, at, p).map(Some)
}

fn backend(ctx: &Ctx, at: &str, b: &pb::RouteBackend) -> Result<Backend, ConvertError> {
    Ok(Backend {
        service_key: service_key(ctx, &format!("{at}.service"), &b.service)?,
        port: optional_port(ctx, format!("{at}.port"), b.port)?,
        weight: b.weight,
        filters: filters(ctx, &format!("{at}.filters"), &b.filters)?,
    })
}

fn filters(ctx: &Ctx, at: &str, fs: &[pb::RouteFilter]) -> Result<Vec<Filter>, ConvertError> {
    let mut out = Vec::with_capacity(fs.len());
    for (i, f) in fs.iter().enumerate() {
        let fat = format!("{at}[{i}]");
        let filter = match &f.kind {
            None => return Err(ctx.err(fat, "missing")),
            Some(pb::route_filter::Kind::RequestHeaderModifier(m)) => {
                Filter::RequestHeaderModifier(header_modifier(ctx, &fat, m)?)
            }
            Some(pb::route_filter::Kind::ResponseHeaderModifier(m)) => {
                Filter::ResponseHeaderModifier(header_modifier(ctx, &fat, m)?)
            }
            Some(pb::route_filter::Kind::RequestRedirect(r)) => {
                Filter::RequestRedirect(redirect(ctx, &format!("{fat}.request_redirect"), r)?)
            }
            Some(pb::route_filter::Kind::UrlRewrite(u)) => Filter::UrlRewrite(UrlRewrite {
                hostname: optional_hostname(
                    ctx,
                    &format!("{fat}.url_rewrite.hostname"),
                    &u.hostname,
                )?,
                path: path_modifier(ctx, &format!("{fat}.url_rewrite.path"), u.path.as_ref())?,
            }),
            Some(pb::route_filter::Kind::RequestMirror(m)) => {
                let mat = format!("{fat}.request_mirror");
                if m.percent > 100 {
                    return Err(ctx.err(
                        format!("{mat}.percent"),
                        format!("{} is out of range (0-100)", m.percent),
                    ));
                }
                Filter::RequestMirror(Mirror {
                    service_key: service_key(ctx, &format!("{mat}.service"), &m.service)?,
                    port: optional_port(ctx, format!("{mat}.port"), m.port)?,
                    percent: m.percent,
                })
            }
            Some(pb::route_filter::Kind::Fault(fault)) => {
                Filter::Fault(super::policy::fault(ctx, &format!("{fat}.fault"), fault)?)
            }
            Some(pb::route_filter::Kind::GatewayPolicy(p)) => {
                Filter::GatewayPolicy(std::sync::Arc::new(super::gateway_policy::gateway_policy(
                    ctx,
                    &format!("{fat}.gateway_policy"),
                    p,
                )?))
            }
        };
        out.push(filter);
    }
    let count = |want: fn(&Filter) -> bool| out.iter().filter(|f| want(f)).count();
    if count(|f| matches!(f, Filter::RequestRedirect(_))) > 0
        && count(|f| matches!(f, Filter::UrlRewrite(_))) > 0
    {
        return Err(ctx.err(at, "a redirect and a URL rewrite in the same list"));
    }
    Ok(out)
}

fn optional_hostname(ctx: &Ctx, at: &str, h: &str) -> Result<Option<String>, ConvertError> {
    if h.is_empty() {
        return Ok(None);
    }
    if h.starts_with("*.") {
        return Err(ctx.err(
            at,
            format!("{h:?}: a wildcard is not a hostname to send to"),
        ));
    }
    hostname(ctx, at, h).map(Some)
}

fn header_modifier(
    ctx: &Ctx,
    at: &str,
    m: &pb::HeaderModifier,
) -> Result<HeaderModifier, ConvertError> {
    let mut seen = HashSet::new();
    let mut once = |at: String, name: HeaderName| {
        if seen.insert(name.clone()) {
            Ok(name)
        } else {
            Err(ctx.err(at, format!("header {name} is named twice")))
        }
    };
    let mut pairs = |list: &str, hs: &[pb::HeaderPair]| -> Result<Vec<Header>, ConvertError> {
        hs.iter()
            .enumerate()
            .map(|(i, h)| {
                let hat = format!("{at}.{list}[{i}]");
                let name = header_name(ctx, &format!("{hat}.name"), &h.name)?;
                let value = HeaderValue::from_bytes(&h.value)
                    .map_err(|_| ctx.err(format!("{hat}.value"), "not a valid header value"))?;
                Ok(Header {
                    name: once(format!("{hat}.name"), name)?,
                    value,
                })
            })
            .collect()
    };
    let set = pairs("set", &m.set)?;
    let add = pairs("add", &m.add)?;
    let remove = m
        .remove
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let rat = format!("{at}.remove[{i}]");
            once(rat.clone(), header_name(ctx, &rat, n)?)
        })
        .collect::<Result<_, _>>()?;
    Ok(HeaderModifier { set, add, remove })
}

fn path_modifier(
    ctx: &Ctx,
    at: &str,
    p: Option<&pb::PathModifier>,
) -> Result<Option<PathModifier>, ConvertError> {
    Ok(match p.and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(pb::path_modifier::Kind::ReplaceFullPath(p)) => {
            Some(PathModifier::ReplaceFullPath(path(ctx, at, p)?))
        }
        Some(pb::path_modifier::Kind::ReplacePrefixMatch(p)) => {
            Some(PathModifier::ReplacePrefixMatch(path(ctx, at, p)?))
        }
    })
}

fn redirect(ctx: &Ctx, at: &str, r: &pb::RequestRedirect) -> Result<Redirect, ConvertError> {
    let scheme = match r.scheme.as_str() {
        "" => None,
        "http" | "https" => Some(r.scheme.clone()),
        other => {
            return Err(ctx.err(
                format!("{at}.scheme"),
                format!("{other:?} is neither http nor https"),
            ))
        }
    };
    let status_code = match r.status_code {
        0 => StatusCode::FOUND,
        301 | 302 | 303 | 307 | 308 => {
            StatusCode::from_u16(r.status_code as u16).unwrap_or(StatusCode::FOUND)
        }
        other => {
            return Err(ctx.err(
                format!("{at}.status_code"),
                format!("{other} is not a redirect status (301, 302, 303, 307, 308)"),
            ))
        }
    };
    Ok(Redirect {
        scheme,
        hostname: optional_hostname(ctx, &format!("{at}.hostname"), &r.hostname)?,
        path: path_modifier(ctx, &format!("{at}.path"), r.path.as_ref())?,
        port: optional_port(ctx, format!("{at}.port"), r.port)?,
        status_code,
    })
}
