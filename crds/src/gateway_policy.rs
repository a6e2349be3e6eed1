//! `GatewayPolicy`: authentication (a JWT, an API key) and a rate limit for
//! the requests of the route rules that name it, enforced by the ingress
//! gateway.
//!
//! Namespaced. An HTTPRoute or GRPCRoute of the same namespace names it with
//! an `ExtensionRef` filter (`{group: mycel.io, kind: GatewayPolicy, name}`)
//! on a rule or on a backendRef. Only a gateway enforces it: the controller
//! refuses such a route for a Service parent, whose sidecars would let the
//! requests through unchecked. The same kind is read from `mesh.yaml` in
//! local mode, where no API server checks the schema, so
//! [`GatewayPolicySpec::validate`] repeats every rule the schema and its CEL
//! rules hold, naming the field the same way.

use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::authorization_policy::AuthorizationPolicyStatus as GatewayPolicyStatus;
pub use crate::traffic_policy::FieldError;
use crate::traffic_policy::{duration_field, field_error, in_range};

/// Authentication and a rate limit for route rules
/// (`kubectl get gatewaypolicy -n shop`).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "mycel.io",
    version = "v1alpha1",
    kind = "GatewayPolicy",
    plural = "gatewaypolicies",
    singular = "gatewaypolicy",
    shortname = "gwp",
    category = "mycel",
    namespaced,
    status = "GatewayPolicyStatus",
    derive = "PartialEq",
    doc = "Authentication (JWT, API keys) and a rate limit the ingress gateway applies to the route rules whose ExtensionRef filter names this policy.",
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.jwt.issuer"),
    printcolumn(
        name = "Requests",
        type_ = "integer",
        json_path = ".spec.rateLimit.requests"
    ),
    printcolumn(name = "Per", type_ = "string", json_path = ".spec.rateLimit.per"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.jwt) || has(self.apiKeys) || has(self.rateLimit) || has(self.cors) || has(self.maxRequestBodyBytes) || has(self.cache) || has(self.aggregate)")
        .message("a GatewayPolicy needs at least one of jwt, apiKeys, rateLimit, cors, maxRequestBodyBytes, cache or aggregate")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.rateLimit) || self.rateLimit.key != 'JWTSubject' || has(self.jwt)")
        .message("rateLimit key JWTSubject needs jwt (the subject of the verified token)")
        .field_path(".rateLimit.key")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.rateLimit) || self.rateLimit.key != 'APIKey' || has(self.apiKeys)")
        .message("rateLimit key APIKey needs apiKeys (the name of the matching key)")
        .field_path(".rateLimit.key")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.apiKeys) || !has(self.apiKeys.forwardNameHeader) || !has(self.jwt) || !has(self.jwt.forwardClaims) || self.jwt.forwardClaims.all(f, f.header != self.apiKeys.forwardNameHeader)")
        .message("forwardNameHeader is also a header of jwt.forwardClaims; each forwarded header has one source")
        .field_path(".apiKeys.forwardNameHeader")
        .reason(Reason::FieldValueInvalid)
)]
pub struct GatewayPolicySpec {
    /// Admits requests with a valid JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,

    /// Admits requests with a known API key. With `jwt` too, either one
    /// admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeys>,

    /// Checked after authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Cross-origin requests from browsers: the gateway answers
    /// preflights itself (before any credential is asked for) and marks
    /// the responses of allowed origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,

    /// Request bodies larger than this many bytes are refused with 413
    /// (1 byte to 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1073741824))]
    pub max_request_body_bytes: Option<u64>,

    /// `{}`: the gateway's shared response cache (RFC 9111) answers the
    /// rule's GET and HEAD requests it can, after authentication and the
    /// rate limit. What is stored and for how long is the backend's
    /// `Cache-Control`; the cache's size is the gateway's
    /// (`--cache-max-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ResponseCache>,

    /// The gateway answers the rule's GET and HEAD requests itself: every
    /// part is called in parallel (after authentication and the rate
    /// limit) and their JSON answers merged into one object, keyed by part
    /// name. The rule's backendRefs are not called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// The pattern of a part's name: a JSON key a template can use.
const PART_NAME_PATTERN: &str = r"^[a-z][a-z0-9_]{0,62}$";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// 1 to 16 parts, names unique (a list map keyed by name: the API
    /// server refuses a second part of a name without a CEL rule, whose
    /// pairwise cost over the list it would refuse to estimate as cheap).
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub parts: Vec<AggregatePart>,
    /// Largest body read from one part (default 1 MiB; 1 KiB to 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 16777216))]
    pub max_part_bytes: Option<u64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AggregatePart {
    /// The key of the part's answer in the merged object.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]{0,62}$"))]
    pub name: String,
    /// A Service of the policy's namespace.
    pub backend_ref: PartBackend,
    /// Path and query sent: `/products/{last}`; `{last}` is the request
    /// path's last segment, `{path}` the whole path, `{query}` the
    /// request's query string.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: String,
    /// The part's own deadline, 1ms to 60s (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('60s')")
            .message("timeout must be between 1ms and 60s")
            .reason(Reason::FieldValueInvalid)
    )]
    pub timeout: Option<String>,
    /// A required part that fails fails the whole answer (default true);
    /// an optional one is null and listed under `_partial`.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartBackend {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// Nothing to set yet: presence turns the cache on for the rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseCache {}

/// An origin as browsers send it: lowercase `scheme://host[:port]`.
const ORIGIN_PATTERN: &str = r"^(\*|[a-z][a-z0-9+.-]*://[a-z0-9.\[\]:_-]+)$";
/// An HTTP method: a token.
const METHOD_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

/// CORS (the Fetch standard) for the rule's requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.allowOrigins.exists(o, o == '*') || size(self.allowOrigins) == 1")
        .message("\"*\" stands alone: it already allows every origin")
        .field_path(".allowOrigins")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.allowCredentials) || !self.allowCredentials || !self.allowOrigins.exists(o, o == '*')")
        .message("browsers refuse credentials with the origin \"*\"; name the origins")
        .field_path(".allowCredentials")
        .reason(Reason::FieldValueInvalid)
)]
pub struct Cors {
    /// Origins allowed, as browsers send them (`https://shop.example`,
    /// lowercase, no path), or `"*"` alone for any.
    #[schemars(
        length(min = 1, max = 64),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^(\*|[a-z][a-z0-9+.-]*://[a-z0-9.\[\]:_-]+)$")
        )
    )]
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for (default GET, HEAD, POST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 32),
            regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
        )
    )]
    pub allow_methods: Vec<String>,
    /// Lowercase request headers a preflight may ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
        )
    )]
    pub allow_headers: Vec<String>,
    /// Lowercase response headers scripts may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
        )
    )]
    pub expose_headers: Vec<String>,
    /// Allow cookies and HTTP authentication (never with `"*"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// How long browsers may keep a preflight's answer (0s to 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    #[x_kube(
        validation = Rule::new("duration(self) <= duration('24h')")
            .message("maxAge must be at most 24h")
            .reason(Reason::FieldValueInvalid)
    )]
    pub max_age: Option<String>,
}

/// The pattern of a header name the policy writes or reads: an HTTP token,
/// lowercase (HTTP/2 sends names lowercase).
const HEADER_PATTERN: &str = r"^[a-z0-9!#$%&'*+.^_`|~-]+$";

/// The CEL rule on a header the gateway sends to the backend: none the
/// gateway or the mesh owns.
const FORWARDED_HEADER_RULE: &str = "!(self in ['host', 'authorization', 'content-length', 'transfer-encoding', 'connection', 'te', 'upgrade', 'cookie']) && !self.startsWith('x-forwarded-') && !self.startsWith('mycel-')";
const FORWARDED_HEADER_MESSAGE: &str = "is a header the gateway or the mesh owns (host, authorization, content-length, transfer-encoding, connection, te, upgrade, cookie, x-forwarded-*, mycel-*)";

/// Headers a forwarded claim or key name may not be written to.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
];

/// The algorithms a token may be signed with: public-key ones only.
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Verification of a JWT: its signature by a key of the JWK set, `iss`,
/// `aud`, `exp` and `nbf`, and the claims required.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.tokenHeader) || !has(self.forwardClaims) || self.forwardClaims.all(f, f.header != self.tokenHeader)")
        .message("a forwarded claim's header is the token header")
        .field_path(".forwardClaims")
        .reason(Reason::FieldValueInvalid)
)]
pub struct JwtAuth {
    /// The `iss` a token must carry.
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// A token's `aud` must name one of them; empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 1024)))]
    pub audiences: Vec<String>,
    /// Where the gateway reads the keys that sign tokens.
    pub jwks: Jwks,
    /// How often the keys are read again (default 5m); 1s to 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')")
            .message("refreshInterval must be between 1s and 24h")
            .reason(Reason::FieldValueInvalid)
    )]
    pub refresh_interval: Option<String>,
    /// Algorithms a token may be signed with (default RS256, ES256,
    /// EdDSA): public-key ones only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(a, a in ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'])")
            .message("algorithms are RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA: HS256, HS384 and HS512 would need the shared secret in the gateway's configuration, and none accepts unsigned tokens")
            .reason(Reason::FieldValueForbidden)
    )]
    pub algorithms: Vec<String>,
    /// Leeway for `exp` and `nbf` (default 30s); 0s to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    #[x_kube(
        validation = Rule::new("duration(self) <= duration('5m')")
            .message("clockSkew must be at most 5m")
            .reason(Reason::FieldValueInvalid)
    )]
    pub clock_skew: Option<String>,
    /// Claims the token must carry; every one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub required_claims: Vec<RequiredClaim>,
    /// Claims sent to the backend as request headers (a copy the client
    /// sent is removed first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["header".into()]))]
    pub forward_claims: Vec<ForwardClaim>,
    /// The header that carries the whole token; absent:
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub token_header: Option<String>,
    /// Whether the token goes on to the backend (default true).
    #[serde(default = "yes")]
    pub forward_token: bool,
}

/// Exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.file) != has(self.url)")
        .message("jwks needs exactly one of file or url")
        .reason(Reason::FieldValueInvalid)
)]
pub struct Jwks {
    /// A JWK set file on the gateway's machine: an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/"))]
    pub file: Option<String>,
    /// An http:// URL the gateway fetches the JWK set from (https:// is
    /// not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^http://[^/?#\\\\s]+([/?#]\\\\S*)?$')")
            .message("must be an http:// URL with a host: https:// is not supported yet (serve the JWK set over http:// inside the cluster, or mount it as a file)")
            .reason(Reason::FieldValueInvalid)
    )]
    pub url: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequiredClaim {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Absent: present with any value. Else a string equal to it, an
    /// array holding it, or (for `scope` and `scp`) one of the
    /// space-separated words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub value: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardClaim {
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    /// A lowercase header name the gateway or the mesh does not own.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    #[x_kube(
        validation = Rule::new(FORWARDED_HEADER_RULE)
            .message(FORWARDED_HEADER_MESSAGE)
            .reason(Reason::FieldValueForbidden)
    )]
    pub header: String,
}

/// Keys are configured by their SHA-256 only: the configuration never
/// holds a key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    /// The lowercase header the client sends its key in.
    #[serde(default = "default_api_key_header")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: String,
    /// The header the matching key's name is sent to the backend in (a
    /// copy the client sent is removed first); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    #[x_kube(
        validation = Rule::new(FORWARDED_HEADER_RULE)
            .message(FORWARDED_HEADER_MESSAGE)
            .reason(Reason::FieldValueForbidden)
    )]
    pub forward_name_header: Option<String>,
    /// 1 to 1000 keys, names unique.
    #[schemars(length(min = 1, max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub keys: Vec<ApiKey>,
}

/// The header API keys are read from when `header` is not set.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

fn default_api_key_header() -> String {
    DEFAULT_API_KEY_HEADER.into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// Who holds the key: logs, metrics, the rate limit's key, the
    /// forwarded name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub name: String,
    /// SHA-256 of the key, 64 lowercase hex digits (`printf %s "$KEY" |
    /// sha256sum`).
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// `requests` per `per` for each key (client address, header value, token
/// subject or API key), at most `burst` at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.key == 'Header') == has(self.header)")
        .message("header is required by key Header and allowed only with it")
        .field_path(".header")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.onRedisFailure) || self.scope == 'Global'")
        .message("onRedisFailure applies to scope Global only (a Local limit never asks Redis)")
        .field_path(".onRedisFailure")
        .reason(Reason::FieldValueInvalid)
)]
pub struct RateLimit {
    #[schemars(range(min = 1, max = 1000000))]
    pub requests: u32,
    /// 1ms to 24h.
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('24h')")
            .message("per must be between 1ms and 24h")
            .reason(Reason::FieldValueInvalid)
    )]
    pub per: String,
    /// Requests admitted at once (default `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: Option<u32>,
    /// What requests are counted by.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Key Header: the lowercase header whose value is the key (requests
    /// without it share one bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: Option<String>,
    #[serde(default)]
    pub scope: RateLimitScope,
    /// Global: what happens while Redis cannot be asked (default Allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_redis_failure: Option<OnRedisFailure>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The client's address (the default).
    #[default]
    #[serde(rename = "ClientIP")]
    ClientIp,
    /// The value of `header`.
    Header,
    /// `sub` of the verified JWT (needs `jwt`).
    #[serde(rename = "JWTSubject")]
    JwtSubject,
    /// The name of the matching API key (needs `apiKeys`).
    #[serde(rename = "APIKey")]
    ApiKey,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateLimitScope {
    /// Each gateway replica counts alone (the default).
    #[default]
    Local,
    /// Every replica shares the counts through Redis (the proxy's
    /// `--rate-limit-redis`).
    Global,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRedisFailure {
    /// Let the request through (the default).
    #[default]
    Allow,
    /// Refuse it (503).
    Deny,
}

/// A lowercase header name, as [`HEADER_PATTERN`] and a length of 1-256.
fn header_name(field: &str, raw: &str) -> Result<(), FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= 256
        && raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+.^_`|~-".contains(&b)
        });
    if ok {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{raw:?} is not a lowercase HTTP header name (pattern {HEADER_PATTERN})"),
        ))
    }
}

/// A header the gateway writes for the backend: see [`FORWARDED_HEADER_RULE`].
fn forwarded_header(field: &str, raw: &str) -> Result<(), FieldError> {
    header_name(field, raw)?;
    if RESERVED_HEADERS.contains(&raw)
        || raw.starts_with("x-forwarded-")
        || raw.starts_with("mycel-")
    {
        return Err(field_error(
            field,
            format!("{raw:?} {FORWARDED_HEADER_MESSAGE}"),
        ));
    }
    Ok(())
}

fn length(field: &str, raw: &str, min: usize, max: usize) -> Result<(), FieldError> {
    if raw.len() < min || raw.len() > max {
        return Err(field_error(
            field,
            format!("{raw:?} must be {min}-{max} characters long"),
        ));
    }
    Ok(())
}

fn at_most<T>(field: &str, list: &[T], max: usize) -> Result<(), FieldError> {
    if list.len() > max {
        return Err(field_error(field, format!("at most {max} entries")));
    }
    Ok(())
}

fn duration_between(
    field: &str,
    raw: &str,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<Duration, FieldError> {
    let d = duration_field(field, raw)?;
    if d < min || d > max {
        return Err(field_error(
            field,
            format!("{raw:?} is out of range ({range})"),
        ));
    }
    Ok(d)
}

/// A `jwks.url` as the CEL rule admits it: `http://`, a host, then
/// nothing or a path, query or fragment, without whitespace.
fn http_url(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix("http://") else {
        return false;
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    host_end > 0 && !raw.chars().any(char::is_whitespace)
}

impl GatewayPolicySpec {
    /// Every rule of the CRD schema and its CEL rules, for `mesh.yaml`
    /// where no API server applies them. The first violation is returned.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.jwt.is_none()
            && self.api_keys.is_none()
            && self.rate_limit.is_none()
            && self.cors.is_none()
            && self.max_request_body_bytes.is_none()
            && self.cache.is_none()
            && self.aggregate.is_none()
        {
            return Err(FieldError {
                field: "spec".into(),
                message: "a GatewayPolicy needs at least one of jwt, apiKeys, rateLimit, cors, maxRequestBodyBytes, cache or aggregate".into(),
            });
        }
        if let Some(a) = &self.aggregate {
            a.validate()?;
        }
        if let Some(c) = &self.cors {
            c.validate()?;
        }
        if let Some(n) = self.max_request_body_bytes {
            in_range("maxRequestBodyBytes", n, 1, 1 << 30)?;
        }
        if let Some(j) = &self.jwt {
            j.validate()?;
        }
        if let Some(a) = &self.api_keys {
            a.validate()?;
        }
        if let Some(r) = &self.rate_limit {
            r.validate()?;
            match r.key {
                RateLimitKey::JwtSubject if self.jwt.is_none() => {
                    return Err(field_error(
                        "rateLimit.key",
                        "rateLimit key JWTSubject needs jwt (the subject of the verified token)",
                    ))
                }
                RateLimitKey::ApiKey if self.api_keys.is_none() => {
                    return Err(field_error(
                        "rateLimit.key",
                        "rateLimit key APIKey needs apiKeys (the name of the matching key)",
                    ))
                }
                _ => {}
            }
        }
        let name_header = self
            .api_keys
            .as_ref()
            .and_then(|a| a.forward_name_header.as_ref());
        if let (Some(h), Some(j)) = (name_header, &self.jwt) {
            if j.forward_claims.iter().any(|f| &f.header == h) {
                return Err(field_error(
                    "apiKeys.forwardNameHeader",
                    "forwardNameHeader is also a header of jwt.forwardClaims; each forwarded header has one source",
                ));
            }
        }
        Ok(())
    }
}

impl JwtAuth {
    fn validate(&self) -> Result<(), FieldError> {
        length("jwt.issuer", &self.issuer, 1, 1024)?;
        at_most("jwt.audiences", &self.audiences, 16)?;
        for (i, a) in self.audiences.iter().enumerate() {
            length(&format!("jwt.audiences[{i}]"), a, 1, 1024)?;
        }
        match (&self.jwks.file, &self.jwks.url) {
            (Some(file), None) => {
                length("jwt.jwks.file", file, 1, 4096)?;
                if !file.starts_with('/') {
                    return Err(field_error(
                        "jwt.jwks.file",
                        format!("{file:?} is not an absolute path"),
                    ));
                }
            }
            (None, Some(url)) => {
                length("jwt.jwks.url", url, 1, 2048)?;
                if !http_url(url) {
                    return Err(field_error(
                        "jwt.jwks.url",
                        format!("{url:?} must be an http:// URL with a host: https:// is not supported yet (serve the JWK set over http:// inside the cluster, or mount it as a file)"),
                    ));
                }
            }
            _ => {
                return Err(field_error(
                    "jwt.jwks",
                    "jwks needs exactly one of file or url",
                ))
            }
        }
        if let Some(raw) = &self.refresh_interval {
            duration_between(
                "jwt.refreshInterval",
                raw,
                Duration::from_secs(1),
                Duration::from_secs(24 * 3600),
                "1s-24h",
            )?;
        }
        at_most("jwt.algorithms", &self.algorithms, ALGORITHMS.len())?;
        for (i, a) in self.algorithms.iter().enumerate() {
            if !ALGORITHMS.contains(&a.as_str()) {
                let why = if a.starts_with("HS") {
                    "HMAC algorithms would need the shared secret in the gateway's configuration"
                } else if a.eq_ignore_ascii_case("none") {
                    "it accepts unsigned tokens"
                } else {
                    "it is not a JWS public-key algorithm the gateway verifies"
                };
                return Err(field_error(
                    "jwt.algorithms",
                    format!(
                        "{a:?} is refused: {why} (allowed: {})",
                        ALGORITHMS.join(", ")
                    ),
                ));
            }
            if self.algorithms[..i].contains(a) {
                return Err(field_error(
                    &format!("jwt.algorithms[{i}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        if let Some(raw) = &self.clock_skew {
            duration_between(
                "jwt.clockSkew",
                raw,
                Duration::ZERO,
                Duration::from_secs(300),
                "0s-5m",
            )?;
        }
        at_most("jwt.requiredClaims", &self.required_claims, 16)?;
        for (i, c) in self.required_claims.iter().enumerate() {
            length(&format!("jwt.requiredClaims[{i}].name"), &c.name, 1, 256)?;
            if let Some(v) = &c.value {
                length(&format!("jwt.requiredClaims[{i}].value"), v, 1, 1024)?;
            }
        }
        at_most("jwt.forwardClaims", &self.forward_claims, 16)?;
        if let Some(h) = &self.token_header {
            header_name("jwt.tokenHeader", h)?;
        }
        for (i, f) in self.forward_claims.iter().enumerate() {
            length(&format!("jwt.forwardClaims[{i}].claim"), &f.claim, 1, 256)?;
            forwarded_header(&format!("jwt.forwardClaims[{i}].header"), &f.header)?;
            if self.forward_claims[..i]
                .iter()
                .any(|o| o.header == f.header)
            {
                return Err(field_error(
                    &format!("jwt.forwardClaims[{i}]"),
                    format!("header {:?} is forwarded twice", f.header),
                ));
            }
        }
        if let Some(h) = &self.token_header {
            if self.forward_claims.iter().any(|f| &f.header == h) {
                return Err(field_error(
                    "jwt.forwardClaims",
                    "a forwarded claim's header is the token header",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `raw` matches a pattern of the simple shapes above (checked by
/// hand: the crate has no regex engine).
fn token(raw: &str, lowercase: bool) -> bool {
    !raw.is_empty()
        && raw.bytes().all(|b| {
            b.is_ascii_digit()
                || b.is_ascii_lowercase()
                || (!lowercase && b.is_ascii_uppercase())
                || b"!#$%&'*+.^_`|~-".contains(&b)
        })
}

fn origin(raw: &str) -> bool {
    if raw == "*" {
        return true;
    }
    let Some((scheme, host)) = raw.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".[]:_-".contains(&b));
    scheme_ok && host_ok
}

impl Cors {
    fn validate(&self) -> Result<(), FieldError> {
        if self.allow_origins.is_empty() {
            return Err(field_error("cors.allowOrigins", "at least one origin"));
        }
        at_most("cors.allowOrigins", &self.allow_origins, 64)?;
        for (i, o) in self.allow_origins.iter().enumerate() {
            length(&format!("cors.allowOrigins[{i}]"), o, 1, 256)?;
            if !origin(o) {
                return Err(field_error(
                    &format!("cors.allowOrigins[{i}]"),
                    format!("{o:?} is not a lowercase origin (scheme://host[:port], no path; pattern {ORIGIN_PATTERN}) nor \"*\""),
                ));
            }
        }
        let star = self.allow_origins.iter().any(|o| o == "*");
        if star && self.allow_origins.len() > 1 {
            return Err(field_error(
                "cors.allowOrigins",
                "\"*\" stands alone: it already allows every origin",
            ));
        }
        if star && self.allow_credentials {
            return Err(field_error(
                "cors.allowCredentials",
                "browsers refuse credentials with the origin \"*\"; name the origins",
            ));
        }
        at_most("cors.allowMethods", &self.allow_methods, 32)?;
        for (i, m) in self.allow_methods.iter().enumerate() {
            length(&format!("cors.allowMethods[{i}]"), m, 1, 32)?;
            if !token(m, false) {
                return Err(field_error(
                    &format!("cors.allowMethods[{i}]"),
                    format!("{m:?} is not an HTTP method (pattern {METHOD_PATTERN})"),
                ));
            }
        }
        for (list, items) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            at_most(&format!("cors.{list}"), items, 64)?;
            for (i, h) in items.iter().enumerate() {
                header_name(&format!("cors.{list}[{i}]"), h)?;
            }
        }
        if let Some(raw) = &self.max_age {
            duration_between(
                "cors.maxAge",
                raw,
                Duration::ZERO,
                Duration::from_secs(24 * 3600),
                "0s-24h",
            )?;
        }
        Ok(())
    }
}

impl Aggregate {
    fn validate(&self) -> Result<(), FieldError> {
        if self.parts.is_empty() || self.parts.len() > 16 {
            return Err(field_error(
                "aggregate.parts",
                format!("{} parts; 1 to 16", self.parts.len()),
            ));
        }
        if let Some(n) = self.max_part_bytes {
            in_range("aggregate.maxPartBytes", n, 1024, 16 << 20)?;
        }
        for (i, p) in self.parts.iter().enumerate() {
            let at = |f: &str| format!("aggregate.parts[{i}].{f}");
            let name_ok = p.name.len() <= 63
                && p.name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase())
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                return Err(field_error(
                    &at("name"),
                    format!(
                        "{:?} is not a part name (pattern {PART_NAME_PATTERN})",
                        p.name
                    ),
                ));
            }
            if self.parts[..i].iter().any(|o| o.name == p.name) {
                return Err(field_error("aggregate.parts", "part names must be unique"));
            }
            let svc = &p.backend_ref.name;
            let svc_ok = !svc.is_empty()
                && svc.len() <= 63
                && svc.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && !svc.ends_with('-')
                && svc
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !svc_ok {
                return Err(field_error(
                    &at("backendRef.name"),
                    format!("{svc:?} is not a Service name"),
                ));
            }
            in_range(&at("backendRef.port"), p.backend_ref.port.into(), 1, 65535)?;
            length(&at("path"), &p.path, 1, 1024)?;
            if !p.path.starts_with('/') {
                return Err(field_error(
                    &at("path"),
                    format!("{:?} does not start with '/'", p.path),
                ));
            }
            if let Some(raw) = &p.timeout {
                duration_between(
                    &at("timeout"),
                    raw,
                    Duration::from_millis(1),
                    Duration::from_secs(60),
                    "1ms-60s",
                )?;
            }
        }
        Ok(())
    }
}

impl ApiKeys {
    fn validate(&self) -> Result<(), FieldError> {
        header_name("apiKeys.header", &self.header)?;
        if let Some(h) = &self.forward_name_header {
            forwarded_header("apiKeys.forwardNameHeader", h)?;
        }
        if self.keys.is_empty() || self.keys.len() > 1000 {
            return Err(field_error(
                "apiKeys.keys",
                format!("{} keys; 1 to 1000", self.keys.len()),
            ));
        }
        for (i, k) in self.keys.iter().enumerate() {
            let name_ok = k.name.len() <= 63
                && k.name
                    .bytes()
                    .enumerate()
                    .all(|(n, b)| b.is_ascii_alphanumeric() || (n > 0 && b"._-".contains(&b)))
                && !k.name.is_empty();
            if !name_ok {
                return Err(field_error(
                    &format!("apiKeys.keys[{i}].name"),
                    format!(
                        "{:?} is not a key name (1-63 letters, digits, '.', '_' or '-', starting with a letter or digit)",
                        k.name
                    ),
                ));
            }
            let hex_ok = k.sha256.len() == 64
                && k.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(field_error(
                    &format!("apiKeys.keys[{i}].sha256"),
                    "is not a SHA-256 in 64 lowercase hex digits",
                ));
            }
            if self.keys[..i].iter().any(|o| o.name == k.name) {
                return Err(field_error(
                    &format!("apiKeys.keys[{i}]"),
                    format!("key name {:?} is used twice", k.name),
                ));
            }
        }
        Ok(())
    }
}

impl RateLimit {
    fn validate(&self) -> Result<(), FieldError> {
        in_range("rateLimit.requests", self.requests.into(), 1, 1_000_000)?;
        duration_between(
            "rateLimit.per",
            &self.per,
            Duration::from_millis(1),
            Duration::from_secs(24 * 3600),
            "1ms-24h",
        )?;
        if let Some(b) = self.burst {
            in_range("rateLimit.burst", b.into(), 1, 1_000_000)?;
        }
        match (&self.header, self.key == RateLimitKey::Header) {
            (Some(h), true) => header_name("rateLimit.header", h)?,
            (None, false) => {}
            _ => {
                return Err(field_error(
                    "rateLimit.header",
                    "header is required by key Header and allowed only with it",
                ))
            }
        }
        if self.on_redis_failure.is_some() && self.scope != RateLimitScope::Global {
            return Err(field_error(
                "rateLimit.onRedisFailure",
                "onRedisFailure applies to scope Global only (a Local limit never asks Redis)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
