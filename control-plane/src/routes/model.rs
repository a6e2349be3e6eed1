//! The controller's model of the Gateway API routes attached to one
//! parent Service: what a route object says once it is validated and its
//! defaults filled in, in the shape of the `ROUTES` wire resource. Plain
//! data (regular expressions are kept as written; they were compiled once
//! to be validated), serialized to compute content versions.

use mycel_crds::traffic_policy::Fault;
use mycel_crds::GatewayPolicySpec;
use serde::Serialize;

use crate::model::ServiceKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    /// The kind as route objects spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
        }
    }
}

/// Which of a gateway proxy's listening sockets serve a Gateway's route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ListenerSide {
    /// Both: every Service parent's route, and the routes of a Gateway
    /// that has no HTTPS listener (a gateway's TLS socket with its
    /// `--tls-cert` files is then one more way in to its HTTP listeners).
    #[default]
    Any,
    /// Only the plaintext socket: a route of HTTP listeners of a Gateway
    /// that has HTTPS listeners too, which then says itself what TLS
    /// serves (so an HTTP listener's redirect to HTTPS never answers on
    /// the TLS socket, where it would loop).
    Http,
    /// Only the TLS socket: the route attached to HTTPS listeners, so it
    /// is never served in plaintext.
    Https,
}

/// One HTTPRoute or GRPCRoute as attached to one parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `<namespace>/<name>` of the object.
    pub name: String,
    pub kind: RouteKind,
    /// Ports of the parent the route attaches to; empty: every port.
    pub ports: Vec<u16>,
    /// Lowercase, exact or `*.` wildcard; empty: any.
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
    /// Gateway parents only; always [`ListenerSide::Any`] for a Service.
    pub listener: ListenerSide,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteRule {
    /// Never empty: a rule without matches gets the default one (prefix
    /// `/`, or any gRPC method), so the proxy reads no implicit default.
    pub matches: Vec<RouteMatch>,
    pub filters: Vec<RouteFilter>,
    /// Empty: the proxy answers 500 (Gateway API: nothing to send to).
    pub backends: Vec<RouteBackend>,
    /// `timeouts.request` in milliseconds; 0: none.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    /// None: any path (GRPCRoute, whose matches read the method instead).
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    /// Uppercase HTTP method; None: any.
    pub method: Option<String>,
    pub grpc: Option<GrpcMethodMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// RE2, matched against the whole path.
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueryMatch {
    /// As written: query parameter names are case-sensitive.
    pub name: String,
    pub value: StringMatch,
}

/// At least one of the two is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrpcMethodMatch {
    pub service: Option<StringMatch>,
    pub method: Option<StringMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteBackend {
    pub service: ServiceKey,
    pub port: u16,
    /// Relative share; 0: never chosen.
    pub weight: u32,
    pub filters: Vec<RouteFilter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RouteFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(RequestRedirect),
    UrlRewrite(UrlRewrite),
    RequestMirror(RequestMirror),
    /// The fault section of a TrafficPolicy (an `ExtensionRef`), copied
    /// in so that a change of that policy changes this resource's version.
    Fault {
        policy: String,
        fault: Fault,
    },
    /// A GatewayPolicy (an `ExtensionRef`), copied in whole for the same
    /// reason. Only routes of Gateway parents carry one. Boxed: it is
    /// several times the size of every other filter.
    GatewayPolicy(Box<GatewayPolicy>),
}

/// Authentication and a rate limit the gateway applies to a rule's
/// requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayPolicy {
    /// `<namespace>/<name>` of the object.
    pub name: String,
    /// Passed [`GatewayPolicySpec::validate`]; its defaults filled in by
    /// deserialization.
    pub spec: GatewayPolicySpec,
}

/// Names lowercase; each name at most once across the three lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    ReplacePrefixMatch(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRedirect {
    /// `http` or `https`; None: the request's.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308 (302 when the route leaves it out).
    pub status_code: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestMirror {
    pub service: ServiceKey,
    pub port: u16,
    /// 0-100.
    pub percent: u32,
}
