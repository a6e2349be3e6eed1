//! Gateway API routes (HTTPRoute, GRPCRoute) as the data path uses them:
//! the routes attached to one parent (a Service, for GAMMA, or the ingress
//! gateway), already validated.
//!
//! Validation happens where the routes are received (names and values that
//! are not valid HTTP were refused there), so header names and values are
//! typed here and regular expressions are compiled once, not per request.
//! `outbound::route` is the engine that reads these types.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::{Serialize, Serializer};

/// Every route attached to one parent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceRoutes {
    /// Oldest first: the list order stands for the creation timestamp
    /// the Gateway API breaks ties with (routes created at the same time
    /// are sent ordered by `<namespace>/<name>`), so the engine breaks
    /// ties by position alone.
    pub routes: Vec<Route>,
}

impl ServiceRoutes {
    /// True when some route attaches to `port` of the parent: its requests
    /// are routed (and answered 404 when no rule matches them).
    pub fn routes_port(&self, port: u16) -> bool {
        self.routes
            .iter()
            .any(|r| r.ports.is_empty() || r.ports.contains(&port))
    }
}

/// One HTTPRoute or GRPCRoute.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// `<namespace>/<name>`, for log lines and `/config_dump`.
    pub name: String,
    pub kind: RouteKind,
    /// The ports of the parent the route attaches to (the parentRef's
    /// `port`); empty: every port.
    pub ports: Vec<u16>,
    /// Hostnames the route answers (exact or `*.` wildcard, lowercase);
    /// empty: any. Only the gateway checks them: GAMMA routes apply to
    /// the Service whatever name the caller used for it.
    pub hostnames: Vec<String>,
    /// Gateway parents: which of the gateway's sockets serve the route
    /// (by the protocol of the listeners it attached to). Service parents
    /// have no sockets: always `Any`.
    pub listener: ListenerProtocol,
    pub rules: Vec<RouteRule>,
}

/// The listeners a gateway route attached to, by protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// Both sockets (HTTP and HTTPS listeners alike, or not said).
    #[default]
    Any,
    /// The plaintext socket only (`--listen`).
    Http,
    /// The TLS socket only (`--tls-listen`).
    Https,
}

/// The gateway socket a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewaySocket {
    Plaintext,
    Tls,
}

impl GatewaySocket {
    /// For log lines: the scheme clients use on it.
    pub fn scheme(self) -> &'static str {
        match self {
            GatewaySocket::Plaintext => "http",
            GatewaySocket::Tls => "https",
        }
    }
}

impl ListenerProtocol {
    /// Whether a request that came in on `socket` may take the route.
    pub fn serves(self, socket: GatewaySocket) -> bool {
        matches!(
            (self, socket),
            (ListenerProtocol::Any, _)
                | (ListenerProtocol::Http, GatewaySocket::Plaintext)
                | (ListenerProtocol::Https, GatewaySocket::Tls)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Http,
    Grpc,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteRule {
    /// Any one of them matching selects the rule; empty: every request.
    pub matches: Vec<RouteMatch>,
    /// Applied in order to requests (and responses) the rule selects.
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    /// The rule's `timeouts.request`.
    pub timeout: Option<Duration>,
}

/// What a request must have for a rule to select it: every condition set
/// here holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteMatch {
    /// None: as Gateway API defaults an HTTPRoute match, prefix `/`.
    pub path: Option<PathMatch>,
    /// Only the first entry of a name counts (Gateway API ignores later
    /// ones).
    pub headers: Vec<HeaderMatch>,
    /// Only the first entry of a name counts.
    pub query: Vec<QueryMatch>,
    #[serde(serialize_with = "opt_display")]
    pub method: Option<Method>,
    /// GRPCRoute only: the gRPC service and method of the request path.
    pub grpc: Option<GrpcMethodMatch>,
}

impl RouteMatch {
    /// The match of a rule that lists none: every request.
    pub const ALL: RouteMatch = RouteMatch {
        path: None,
        headers: Vec::new(),
        query: Vec::new(),
        method: None,
        grpc: None,
    };
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Element by element: `/api` matches `/api` and `/api/x`, not
    /// `/apix`; a trailing `/` in the prefix is ignored.
    PathPrefix(String),
    RegularExpression(Pattern),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatch {
    /// `HeaderName` is lowercase, so names compare case-insensitively.
    #[serde(serialize_with = "display")]
    pub name: HeaderName,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryMatch {
    /// Compared exactly (query parameter names are case-sensitive).
    pub name: String,
    pub value: StringMatch,
}

/// A GRPCRoute method match; at least one of the two is set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrpcMethodMatch {
    /// `pkg.Service`, the first element of the request path.
    pub service: Option<StringMatch>,
    /// `Method`, the second element.
    pub method: Option<StringMatch>,
}

/// How a value (header, query parameter, gRPC name) is compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum StringMatch {
    /// Byte for byte, case-sensitive.
    Exact(String),
    /// The whole value must match.
    RegularExpression(Pattern),
}

/// A regular expression compiled once, matched against a whole value.
///
/// RE2 syntax, which the `regex` crate follows (no backreferences or
/// look-around, so matching is linear in the input), with a cap on the
/// compiled size so that one route cannot make every proxy hold a huge
/// automaton.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

/// Cap of one compiled pattern (the `regex` default is 10 MiB).
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        // Anchored: Gateway API implementations match the whole path or
        // value, and an unanchored `/admin` would match `/x/admin/y`.
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as written in the route.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// Two patterns are the same when written the same: `regex::Regex` has no
/// equality, and snapshots are compared to see whether anything changed.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Where a rule sends requests, and its share of them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    /// `<name>.<namespace>`.
    pub service_key: String,
    /// None: the port the request was sent to.
    pub port: Option<u16>,
    /// Relative share; 0: never chosen.
    pub weight: u32,
    /// Applied after the rule's filters, to requests sent to this backend.
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    UrlRewrite(UrlRewrite),
    RequestMirror(Mirror),
    /// Faults for the rule's requests (a Mycel extension, from an
    /// `ExtensionRef` to a TrafficPolicy), in place of the service's.
    Fault(super::policy::Fault),
    /// Authentication and a rate limit (a GatewayPolicy, from an
    /// `ExtensionRef`). Only a gateway enforces it; the mesh's route
    /// engine answers 500 for a rule that carries one.
    GatewayPolicy(std::sync::Arc<super::gateway_policy::GatewayPolicy>),
}

/// Each name appears at most once across the three lists (validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderModifier {
    /// Replaces every value of the header.
    pub set: Vec<Header>,
    /// Adds a value, keeping those already there.
    pub add: Vec<Header>,
    #[serde(serialize_with = "display_all")]
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Header {
    #[serde(serialize_with = "display")]
    pub name: HeaderName,
    #[serde(serialize_with = "lossy")]
    pub value: HeaderValue,
}

/// Answer the request with a redirect instead of forwarding it. What is
/// unset is taken from the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    #[serde(serialize_with = "status")]
    pub status_code: StatusCode,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path the rule's `PathPrefix` matched; only
    /// valid with a prefix match (validation).
    ReplacePrefixMatch(String),
}

/// Rewrite the request before forwarding it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UrlRewrite {
    /// Replaces the `Host` (and the authority of an absolute URI).
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// Send a copy of requests to another service, ignoring its answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    pub service_key: String,
    pub port: Option<u16>,
    /// Share of requests copied, 0..=100.
    pub percent: u32,
}

pub(super) fn display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(super) fn opt_display<S: Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(super) fn display_all_methods<S: Serializer>(v: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(Method::as_str))
}

pub(super) fn display_all<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

/// Header values may hold bytes that are not UTF-8; the dump shows them
/// replaced rather than failing.
fn lossy<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.as_bytes()))
}

fn status<S: Serializer>(v: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(v.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_values_and_compare_by_source() {
        let p = Pattern::new("/api/v[0-9]+").unwrap();
        assert!(p.matches("/api/v2"));
        assert!(!p.matches("/x/api/v2"));
        assert!(!p.matches("/api/v2/items"));
        assert_eq!(p, Pattern::new("/api/v[0-9]+").unwrap());
        assert_ne!(p, Pattern::new("/api/v[0-9]*").unwrap());
        // An alternation stays inside the anchors.
        let alt = Pattern::new("a|b").unwrap();
        assert!(alt.matches("a") && !alt.matches("ab"));
    }

    #[test]
    fn patterns_refuse_what_re2_refuses_and_huge_automata() {
        assert!(Pattern::new("(a)\\1").is_err());
        assert!(Pattern::new("(?=a)").is_err());
        assert!(Pattern::new("[").is_err());
        assert!(Pattern::new("\\w{1000}{1000}").is_err());
    }

    #[test]
    fn dumps_as_json() {
        let routes = ServiceRoutes {
            routes: vec![Route {
                name: "shop/api".into(),
                kind: RouteKind::Http,
                ports: vec![80],
                hostnames: vec![],
                listener: ListenerProtocol::Https,
                rules: vec![RouteRule {
                    matches: vec![RouteMatch {
                        path: Some(PathMatch::RegularExpression(
                            Pattern::new("/v[12]").unwrap(),
                        )),
                        method: Some(Method::GET),
                        ..RouteMatch::default()
                    }],
                    filters: vec![Filter::RequestHeaderModifier(HeaderModifier {
                        set: vec![Header {
                            name: HeaderName::from_static("x-a"),
                            value: HeaderValue::from_bytes(b"\xff").unwrap(),
                        }],
                        add: vec![],
                        remove: vec![HeaderName::from_static("x-b")],
                    })],
                    backends: vec![],
                    timeout: None,
                }],
            }],
        };
        let json = serde_json::to_value(&routes).unwrap();
        assert_eq!(json["routes"][0]["listener"], "https");
        let rule = &json["routes"][0]["rules"][0];
        assert_eq!(rule["matches"][0]["path"]["value"], "/v[12]");
        assert_eq!(rule["matches"][0]["method"], "GET");
        assert_eq!(rule["filters"][0]["set"][0]["value"], "\u{fffd}");
        assert_eq!(rule["filters"][0]["remove"][0], "x-b");
    }
}
