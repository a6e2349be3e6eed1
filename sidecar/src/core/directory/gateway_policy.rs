//! A GatewayPolicy as the data path receives it: authentication (a JWT, an
//! API key) and a rate limit for the requests of one route rule. Values
//! are typed (header names, durations, key digests) where they are
//! received; the gateway turns them into verifiers and limiters
//! (`gateway::policy`), which hold keys and counters and so outlive a
//! routes update that leaves the policy as it was.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayPolicy {
    /// `<namespace>/<name>`: log lines, metric labels and the Redis keys
    /// the replicas of a gateway share.
    pub name: String,
    pub jwt: Option<JwtAuth>,
    pub api_keys: Option<ApiKeyAuth>,
    pub rate_limit: Option<RateLimit>,
    pub cors: Option<Cors>,
    /// Larger request bodies are refused (413).
    pub max_request_body_bytes: Option<u64>,
    /// The gateway's response cache answers what it can.
    pub cache: bool,
    /// The gateway answers by merging these parts' JSON.
    pub aggregate: Option<Aggregate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Aggregate {
    pub parts: Vec<AggregatePart>,
    pub max_part_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AggregatePart {
    /// The key of its answer in the merged object.
    pub name: String,
    /// `<name>.<namespace>`.
    pub service_key: String,
    pub port: u16,
    /// The path template, checked when the gateway builds the part.
    pub path: String,
    pub timeout: Duration,
    pub required: bool,
}

impl GatewayPolicy {
    /// Whether a request must prove who it is before the rate limit.
    pub fn authenticates(&self) -> bool {
        self.jwt.is_some() || self.api_keys.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JwtAuth {
    pub issuer: String,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    pub jwks: JwksLocation,
    pub refresh: Duration,
    /// RFC 7518 names; empty: the gateway's defaults. Checked when the
    /// verifier is built (only public-key algorithms).
    pub algorithms: Vec<String>,
    /// None: the gateway's default.
    pub leeway: Option<Duration>,
    pub required_claims: Vec<RequiredClaim>,
    pub forward_claims: Vec<ForwardClaim>,
    /// None: `Authorization: Bearer`.
    #[serde(serialize_with = "super::routes::opt_display")]
    pub token_header: Option<HeaderName>,
    pub strip_token: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksLocation {
    File(PathBuf),
    #[serde(serialize_with = "super::routes::display")]
    Url(http::Uri),
}

/// Cross-origin requests from browsers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cors {
    pub allow_origins: AllowOrigins,
    #[serde(serialize_with = "super::routes::display_all_methods")]
    pub allow_methods: Vec<http::Method>,
    #[serde(serialize_with = "super::routes::display_all")]
    pub allow_headers: Vec<HeaderName>,
    #[serde(serialize_with = "super::routes::display_all")]
    pub expose_headers: Vec<HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowOrigins {
    Any,
    /// Lowercase, as browsers send them.
    List(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredClaim {
    pub name: String,
    /// None: present with any value.
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardClaim {
    pub claim: String,
    #[serde(serialize_with = "super::routes::display")]
    pub header: HeaderName,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyAuth {
    #[serde(serialize_with = "super::routes::display")]
    pub header: HeaderName,
    pub keys: Vec<ApiKey>,
    #[serde(serialize_with = "super::routes::opt_display")]
    pub forward_name_header: Option<HeaderName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the key; `/config_dump` shows neither key nor digest.
    #[serde(skip)]
    pub sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
    /// None: `requests`.
    pub burst: Option<u32>,
    pub key: RateLimitKey,
    /// Shared by the gateway's replicas through Redis.
    pub global: bool,
    /// Global only: refuse (503) when Redis cannot be asked.
    pub fail_closed: bool,
}

/// Whose bucket a request takes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    ClientIp,
    /// The header's value; requests without it share one bucket.
    #[serde(serialize_with = "super::routes::display")]
    Header(HeaderName),
    /// `sub` of the verified JWT.
    JwtSubject,
    /// The matching API key's name.
    ApiKey,
}
