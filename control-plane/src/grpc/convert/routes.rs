//! The routes of one parent service (validated, defaults filled in by
//! `crate::routes`) to the `ROUTES` wire resource.

use mycel_api::v1;

use crate::model::ServiceKey;
use crate::routes::model::{
    GrpcMethodMatch, HeaderModifier, ListenerSide, PathMatch, PathModifier, Route, RouteBackend,
    RouteFilter, RouteKind, RouteMatch, RouteRule, StringMatch,
};

pub fn routes_to_proto(parent: &ServiceKey, routes: &[Route]) -> v1::Routes {
    v1::Routes {
        parent: parent.to_string(),
        routes: routes.iter().map(route).collect(),
    }
}

fn route(r: &Route) -> v1::Route {
    let kind = match r.kind {
        RouteKind::Http => v1::RouteKind::Http,
        RouteKind::Grpc => v1::RouteKind::Grpc,
    };
    v1::Route {
        name: r.name.clone(),
        kind: kind as i32,
        ports: r.ports.iter().copied().map(u32::from).collect(),
        hostnames: r.hostnames.clone(),
        rules: r.rules.iter().map(rule).collect(),
        listener_protocol: match r.listener {
            ListenerSide::Any => v1::ListenerProtocol::Unspecified,
            ListenerSide::Http => v1::ListenerProtocol::Http,
            ListenerSide::Https => v1::ListenerProtocol::Https,
        } as i32,
    }
}

fn rule(r: &RouteRule) -> v1::RouteRule {
    v1::RouteRule {
        matches: r.matches.iter().map(route_match).collect(),
        filters: r.filters.iter().map(filter).collect(),
        backends: r.backends.iter().map(backend).collect(),
        timeout_ms: r.timeout_ms,
    }
}

fn string_match(m: &StringMatch) -> v1::StringMatch {
    use v1::string_match::Kind;
    v1::StringMatch {
        kind: Some(match m {
            StringMatch::Exact(v) => Kind::Exact(v.clone()),
            StringMatch::Regex(v) => Kind::Regex(v.clone()),
        }),
    }
}

fn route_match(m: &RouteMatch) -> v1::RouteMatch {
    use v1::path_match::Kind;
    v1::RouteMatch {
        path: m.path.as_ref().map(|p| v1::PathMatch {
            kind: Some(match p {
                PathMatch::Exact(v) => Kind::Exact(v.clone()),
                PathMatch::Prefix(v) => Kind::Prefix(v.clone()),
                PathMatch::Regex(v) => Kind::Regex(v.clone()),
            }),
        }),
        headers: m
            .headers
            .iter()
            .map(|h| v1::HeaderMatch {
                name: h.name.clone(),
                value: Some(string_match(&h.value)),
            })
            .collect(),
        query: m
            .query
            .iter()
            .map(|q| v1::QueryMatch {
                name: q.name.clone(),
                value: Some(string_match(&q.value)),
            })
            .collect(),
        method: m.method.clone().unwrap_or_default(),
        grpc: m
            .grpc
            .as_ref()
            .map(|g: &GrpcMethodMatch| v1::GrpcMethodMatch {
                service: g.service.as_ref().map(string_match),
                method: g.method.as_ref().map(string_match),
            }),
    }
}

fn backend(b: &RouteBackend) -> v1::RouteBackend {
    v1::RouteBackend {
        service: b.service.to_string(),
        port: u32::from(b.port),
        weight: b.weight,
        filters: b.filters.iter().map(filter).collect(),
    }
}

fn header_modifier(m: &HeaderModifier) -> v1::HeaderModifier {
    let pairs = |list: &[(String, String)]| {
        list.iter()
            .map(|(name, value)| v1::HeaderPair {
                name: name.clone(),
                value: value.as_bytes().to_vec(),
            })
            .collect()
    };
    v1::HeaderModifier {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.clone(),
    }
}

fn path_modifier(p: &PathModifier) -> v1::PathModifier {
    use v1::path_modifier::Kind;
    v1::PathModifier {
        kind: Some(match p {
            PathModifier::ReplaceFullPath(v) => Kind::ReplaceFullPath(v.clone()),
            PathModifier::ReplacePrefixMatch(v) => Kind::ReplacePrefixMatch(v.clone()),
        }),
    }
}

fn filter(f: &RouteFilter) -> v1::RouteFilter {
    use v1::route_filter::Kind;
    let kind = match f {
        RouteFilter::RequestHeaderModifier(m) => Kind::RequestHeaderModifier(header_modifier(m)),
        RouteFilter::ResponseHeaderModifier(m) => Kind::ResponseHeaderModifier(header_modifier(m)),
        RouteFilter::RequestRedirect(r) => Kind::RequestRedirect(v1::RequestRedirect {
            scheme: r.scheme.clone().unwrap_or_default(),
            hostname: r.hostname.clone().unwrap_or_default(),
            path: r.path.as_ref().map(path_modifier),
            port: r.port.map(u32::from).unwrap_or(0),
            status_code: u32::from(r.status_code),
        }),
        RouteFilter::UrlRewrite(r) => Kind::UrlRewrite(v1::UrlRewrite {
            hostname: r.hostname.clone().unwrap_or_default(),
            path: r.path.as_ref().map(path_modifier),
        }),
        RouteFilter::RequestMirror(m) => Kind::RequestMirror(v1::RequestMirror {
            service: m.service.to_string(),
            port: u32::from(m.port),
            percent: m.percent,
        }),
        RouteFilter::Fault { fault, .. } => Kind::Fault(super::policy::fault(fault)),
        RouteFilter::GatewayPolicy(p) => {
            Kind::GatewayPolicy(super::gateway_policy::gateway_policy(p))
        }
    };
    v1::RouteFilter { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use mycel_crds::traffic_policy::{Fault, FaultAbort};

    use super::*;
    use crate::routes::model::{HeaderMatch, RequestMirror, RequestRedirect};

    fn key(s: &str) -> ServiceKey {
        ServiceKey::parse(s).unwrap()
    }

    #[test]
    fn every_part_reaches_the_wire() {
        let route = Route {
            name: "shop/reviews".into(),
            kind: RouteKind::Http,
            ports: vec![9080],
            hostnames: vec!["reviews.shop".into()],
            listener: ListenerSide::Https,
            rules: vec![RouteRule {
                matches: vec![RouteMatch {
                    path: Some(PathMatch::Prefix("/v2".into())),
                    headers: vec![HeaderMatch {
                        name: "x-canary".into(),
                        value: StringMatch::Regex("y.*".into()),
                    }],
                    method: Some("GET".into()),
                    ..RouteMatch::default()
                }],
                filters: vec![
                    RouteFilter::RequestHeaderModifier(HeaderModifier {
                        set: vec![("x-a".into(), "1".into())],
                        add: vec![],
                        remove: vec!["x-b".into()],
                    }),
                    RouteFilter::RequestRedirect(RequestRedirect {
                        scheme: Some("https".into()),
                        hostname: None,
                        path: Some(PathModifier::ReplacePrefixMatch("/v3".into())),
                        port: None,
                        status_code: 301,
                    }),
                    RouteFilter::RequestMirror(RequestMirror {
                        service: key("shadow.shop"),
                        port: 80,
                        percent: 10,
                    }),
                    RouteFilter::Fault {
                        policy: "shop/chaos".into(),
                        fault: Fault {
                            delay: None,
                            abort: Some(FaultAbort {
                                http_status: 503,
                                percentage: 5,
                            }),
                        },
                    },
                ],
                backends: vec![RouteBackend {
                    service: key("reviews-v2.shop"),
                    port: 9080,
                    weight: 0,
                    filters: vec![],
                }],
                timeout_ms: 1500,
            }],
        };
        let out = routes_to_proto(&key("reviews.shop"), &[route]);
        assert_eq!(out.parent, "reviews.shop");
        let r = &out.routes[0];
        assert_eq!(r.listener_protocol, v1::ListenerProtocol::Https as i32);
        assert_eq!(
            (r.kind, r.ports.as_slice()),
            (v1::RouteKind::Http as i32, &[9080][..])
        );
        let rule = &r.rules[0];
        assert_eq!(rule.timeout_ms, 1500);
        let m = &rule.matches[0];
        assert_eq!(m.method, "GET");
        assert_eq!(
            m.path.as_ref().unwrap().kind,
            Some(v1::path_match::Kind::Prefix("/v2".into()))
        );
        assert_eq!(
            m.headers[0].value.as_ref().unwrap().kind,
            Some(v1::string_match::Kind::Regex("y.*".into()))
        );
        let b = &rule.backends[0];
        assert_eq!(
            (b.service.as_str(), b.port, b.weight),
            ("reviews-v2.shop", 9080, 0)
        );
        use v1::route_filter::Kind;
        match &rule.filters[1].kind {
            Some(Kind::RequestRedirect(r)) => {
                assert_eq!(
                    (r.scheme.as_str(), r.port, r.status_code),
                    ("https", 0, 301)
                )
            }
            other => panic!("{other:?}"),
        }
        match &rule.filters[3].kind {
            Some(Kind::Fault(f)) => {
                let a = f.abort.as_ref().unwrap();
                assert_eq!((a.http_status, a.percent), (503, 5));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&rule.filters[0].kind, Some(Kind::RequestHeaderModifier(h)) if h.set[0].value == b"1" && h.remove == ["x-b"])
        );
        assert!(
            matches!(&rule.filters[2].kind, Some(Kind::RequestMirror(m)) if m.service == "shadow.shop" && m.percent == 10)
        );
    }
}
