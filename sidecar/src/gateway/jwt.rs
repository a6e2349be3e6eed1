//! JWT authentication at the gateway (issue 14): a token from the request
//! verified against an issuer's JWKS ([`jwks`]), its registered claims
//! checked (`iss`, `aud`, `exp`, `nbf` with leeway), the claims a route
//! requires checked, and chosen claims handed to the backend as headers
//! ([`forward`]).
//!
//! A GatewayPolicy's `jwt` becomes a [`JwtRule`] in
//! [`super::policy`], which calls [`JwtVerifier::verify`] for the requests
//! of the rules carrying it.
//!
//! Only public-key algorithms are verified (RS*, PS*, ES256, ES384,
//! EdDSA). `alg: none` and HMAC are refused before any key is looked at,
//! and a key only verifies the algorithms of its kind, so a token signed
//! with HS256 using an issuer's public key as the secret (the HS/RS
//! confusion attack) can never pass.

pub mod forward;
pub mod jwks;
pub mod ring_crypto;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub use forward::{forward_claims, strip_forwarded};
pub use jwks::{JwksError, JwksFetch, JwksSource, KeySet, KeySetSummary, RefreshSettings};

/// Largest token accepted; checked before any parsing. Real tokens are
/// one or two KiB; the cap bounds the work an attacker can ask for.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The `realm` of every `WWW-Authenticate` the gateway sends.
pub const REALM: &str = "mycel";

/// Default algorithms: what issuers commonly sign with.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Default clock leeway for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Largest leeway accepted: beyond it, expiry means little.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Where the token is read from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750).
    #[default]
    Bearer,
    /// The whole value of a header, e.g. `x-jwt-assertion`.
    Header(HeaderName),
}

impl TokenSource {
    fn header(&self) -> &HeaderName {
        match self {
            TokenSource::Bearer => &http::header::AUTHORIZATION,
            TokenSource::Header(h) => h,
        }
    }
}

/// What a required claim must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRequirement {
    /// Present, any value.
    Present,
    /// A string equal to this; an array containing it; for `scope` and
    /// `scp` strings (space-separated, RFC 8693), one of the words.
    Equals(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequiredClaim {
    /// A top-level claim name.
    pub name: String,
    pub requirement: ClaimRequirement,
}

/// A claim handed to the backend as a request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardClaim {
    pub claim: String,
    pub header: HeaderName,
}

/// How tokens are checked for one issuer (and route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtRule {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// A token's `aud` must name at least one of these; empty means `aud`
    /// is not checked.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Only public-key algorithms; see [`parse_algorithm`].
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub required_claims: Vec<RequiredClaim>,
    pub forward: Vec<ForwardClaim>,
    pub token_source: TokenSource,
    /// Whether the token's header goes on to the backend.
    pub forward_token: bool,
    pub refresh: RefreshSettings,
    /// For URL sources: the whole fetch, connect to last byte.
    pub jwks_timeout: Duration,
    pub jwks_max_bytes: usize,
}

impl JwtRule {
    /// A rule with the defaults: RS256/ES256/EdDSA, 30 s leeway, bearer
    /// token, token forwarded, no audience check, no required claims.
    pub fn new(issuer: impl Into<String>, jwks: JwksSource) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            audiences: Vec::new(),
            jwks,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            leeway: DEFAULT_LEEWAY,
            required_claims: Vec::new(),
            forward: Vec::new(),
            token_source: TokenSource::Bearer,
            forward_token: true,
            refresh: RefreshSettings::default(),
            jwks_timeout: Duration::from_secs(5),
            jwks_max_bytes: jwks::DEFAULT_MAX_JWKS_BYTES,
        }
    }

    /// Refuses settings that cannot be safe or cannot work.
    pub fn check(&self) -> Result<(), JwtConfigError> {
        if self.issuer.is_empty() {
            return Err(JwtConfigError::NoIssuer);
        }
        if self.algorithms.is_empty() {
            return Err(JwtConfigError::NoAlgorithm);
        }
        for alg in &self.algorithms {
            check_algorithm(*alg)?;
        }
        if self.leeway > MAX_LEEWAY {
            return Err(JwtConfigError::Leeway {
                leeway: self.leeway,
                max: MAX_LEEWAY,
            });
        }
        if let JwksSource::Url(url) = &self.jwks {
            jwks::HttpFetch::new(url.clone(), self.jwks_timeout, self.jwks_max_bytes)?;
        }
        if self.refresh.every.is_zero() {
            return Err(JwtConfigError::RefreshInterval);
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.forward {
            if RESERVED_HEADERS.contains(&f.header.as_str())
                || f.header == *self.token_source.header()
            {
                return Err(JwtConfigError::ReservedHeader(f.header.clone()));
            }
            if !seen.insert(&f.header) {
                return Err(JwtConfigError::DuplicateHeader(f.header.clone()));
            }
        }
        Ok(())
    }
}

/// Headers a claim may not be forwarded as: they frame or route the
/// request, or carry credentials.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "connection",
    "content-length",
    "content-type",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
];

/// Why a [`JwtRule`] is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("JWT: no issuer given")]
    NoIssuer,
    #[error("JWT: no algorithm allowed")]
    NoAlgorithm,
    #[error("JWT: algorithm {0} is symmetric (HMAC); only public-key algorithms are allowed (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA), as an HMAC algorithm next to public keys opens the HS/RS confusion attack")]
    Symmetric(String),
    #[error("JWT: algorithm \"none\" is never allowed: it means an unsigned token")]
    NoneAlgorithm,
    #[error("JWT: unknown algorithm {0:?} (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
    UnknownAlgorithm(String),
    #[error("JWT: leeway {leeway:?} is over the maximum of {max:?}")]
    Leeway { leeway: Duration, max: Duration },
    #[error("JWT: the JWKS refresh interval must be more than zero")]
    RefreshInterval,
    #[error("JWT: claims cannot be forwarded as {0}: the header frames or routes the request, or carries the token or credentials")]
    ReservedHeader(HeaderName),
    #[error("JWT: two claims are forwarded as {0}")]
    DuplicateHeader(HeaderName),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// An algorithm name from configuration, refused unless public-key.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, JwtConfigError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(JwtConfigError::NoneAlgorithm);
    }
    let alg: Algorithm = name
        .parse()
        .map_err(|_| JwtConfigError::UnknownAlgorithm(name.to_string()))?;
    check_algorithm(alg)?;
    Ok(alg)
}

fn check_algorithm(alg: Algorithm) -> Result<(), JwtConfigError> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Err(JwtConfigError::Symmetric(format!("{alg:?}")))
        }
        _ => Ok(()),
    }
}

/// Why a request's token is refused. Each maps to an HTTP answer with
/// [`JwtError::challenge`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("no token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("no key for the token (kid {kid:?})")]
    UnknownKey { kid: Option<String> },
    #[error("bad signature")]
    BadSignature,
    /// `alg` as the token says it, cut short.
    #[error("algorithm {alg:?} not allowed")]
    AlgorithmNotAllowed { alg: String },
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim {name}")]
    MissingClaim { name: String },
    #[error("claim {name} does not hold the required value")]
    WrongClaim { name: String },
}

impl JwtError {
    /// The status and `WWW-Authenticate` value to answer with (RFC 6750
    /// section 3): 401 `invalid_token` for a bad token, 403
    /// `insufficient_scope` for a good token without the required claims,
    /// and a bare challenge when no token was sent. The description is
    /// fixed text, never from the token.
    pub fn challenge(&self) -> (StatusCode, HeaderValue) {
        let (status, error, description) = match self {
            JwtError::Missing => {
                return (
                    StatusCode::UNAUTHORIZED,
                    HeaderValue::from_static("Bearer realm=\"mycel\""),
                )
            }
            JwtError::Malformed(_) => (401, "invalid_token", "malformed token"),
            JwtError::UnknownKey { .. } => (401, "invalid_token", "unknown signing key"),
            JwtError::BadSignature => (401, "invalid_token", "bad signature"),
            JwtError::AlgorithmNotAllowed { .. } => (401, "invalid_token", "algorithm not allowed"),
            JwtError::Expired => (401, "invalid_token", "token expired"),
            JwtError::NotYetValid => (401, "invalid_token", "token not yet valid"),
            JwtError::WrongIssuer => (401, "invalid_token", "wrong issuer"),
            JwtError::WrongAudience => (401, "invalid_token", "wrong audience"),
            JwtError::MissingClaim { .. } => (403, "insufficient_scope", "required claim missing"),
            JwtError::WrongClaim { .. } => {
                (403, "insufficient_scope", "required claim value missing")
            }
        };
        let value = format!(
            "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\""
        );
        let status = if status == 403 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        // Built from the fixed text above only: always a valid value.
        let value = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"mycel\""));
        (status, value)
    }
}

/// The claims of a verified token.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedClaims {
    pub claims: Map<String, Value>,
    pub kid: Option<String>,
    pub alg: Algorithm,
}

impl VerifiedClaims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Checks a rule's tokens against an issuer's keys.
#[derive(Debug)]
pub struct JwtVerifier {
    rule: Arc<JwtRule>,
    keys: Arc<KeySet>,
    /// The registered-claim checks, algorithms set per token.
    validation: Validation,
}

impl JwtVerifier {
    /// Checks the rule; `keys` is the set of the rule's JWKS source
    /// (several rules for one issuer may share one set).
    pub fn new(rule: Arc<JwtRule>, keys: Arc<KeySet>) -> Result<JwtVerifier, JwtConfigError> {
        rule.check()?;
        ring_crypto::install();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = rule.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&rule.issuer]);
        // jsonwebtoken checks `iss` and `aud` only when present: required
        // here so a token without them fails instead of passing.
        let mut required = vec!["exp", "iss"];
        if rule.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&rule.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            rule,
            keys,
            validation,
        })
    }

    pub fn rule(&self) -> &JwtRule {
        &self.rule
    }

    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Verifies the request's token and the rule's required claims.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<VerifiedClaims, JwtError> {
        let token = token_of(&self.rule.token_source, headers)?;
        let claims = self.verify_token(token).await?;
        check_claims(&claims, &self.rule.required_claims)?;
        Ok(claims)
    }

    /// Verifies a token's signature and registered claims.
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedClaims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("token over the size limit"));
        }
        let header = TokenHeader::parse(token)?;
        let alg = self.allowed(&header.alg)?;
        let keys = self.keys.keys();
        let candidates: Vec<Arc<jwks::Key>> = match &header.kid {
            Some(kid) => match keys.by_kid(kid) {
                Some(k) => vec![k.clone()],
                None => match self.keys.refresh_for_kid(kid).await {
                    Some(k) => vec![k],
                    None => {
                        return Err(JwtError::UnknownKey {
                            kid: Some(cut(kid)),
                        })
                    }
                },
            },
            // Without a `kid`, every key that can verify the algorithm is
            // tried (sets hold a handful of keys).
            None => keys
                .all()
                .iter()
                .filter(|k| k.allows(alg))
                .cloned()
                .collect(),
        };
        if candidates.is_empty() {
            if keys.is_empty() {
                tracing::warn!(jwks = %self.keys.source_name(), "JWT: no keys loaded; token refused");
            }
            return Err(JwtError::UnknownKey { kid: None });
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        for key in candidates {
            // A key verifies only its own kind's algorithms: an RSA key is
            // never an HMAC secret, whatever the token's header says.
            if !key.allows(alg) {
                return Err(JwtError::AlgorithmNotAllowed {
                    alg: header.alg.clone(),
                });
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => {
                    return Ok(VerifiedClaims {
                        claims: data.claims,
                        kid: header.kid,
                        alg,
                    })
                }
                Err(e) => match error_of(e.kind()) {
                    // Without a `kid`, the next key may be the signer.
                    JwtError::BadSignature => continue,
                    JwtError::AlgorithmNotAllowed { .. } => {
                        return Err(JwtError::AlgorithmNotAllowed {
                            alg: header.alg.clone(),
                        })
                    }
                    other => return Err(other),
                },
            }
        }
        Err(JwtError::BadSignature)
    }

    /// The token's algorithm if the rule allows it.
    fn allowed(&self, alg: &str) -> Result<Algorithm, JwtError> {
        let refused = || JwtError::AlgorithmNotAllowed { alg: cut(alg) };
        // `none` is not an Algorithm, so it fails here; HS* parse but are
        // never in a checked rule's list.
        let parsed: Algorithm = alg.parse().map_err(|_| refused())?;
        if !self.rule.algorithms.contains(&parsed) || check_algorithm(parsed).is_err() {
            return Err(refused());
        }
        Ok(parsed)
    }
}

/// Token-controlled text kept in errors and logs, cut short.
fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The token of a request, or why there is none.
pub fn token_of<'a>(source: &TokenSource, headers: &'a HeaderMap) -> Result<&'a str, JwtError> {
    let mut values = headers.get_all(source.header()).iter();
    let Some(value) = values.next() else {
        return Err(JwtError::Missing);
    };
    if values.next().is_some() {
        return Err(JwtError::Malformed("several token headers"));
    }
    // Before anything looks inside the value.
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(JwtError::Malformed("token over the size limit"));
    }
    let value = value
        .to_str()
        .map_err(|_| JwtError::Malformed("token header is not ASCII"))?
        .trim();
    let token = match source {
        TokenSource::Bearer => match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            // Another scheme (Basic, ...): no bearer token was sent.
            _ => return Err(JwtError::Missing),
        },
        TokenSource::Header(_) => value,
    };
    if token.is_empty() {
        return Err(JwtError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed("token over the size limit"));
    }
    Ok(token)
}

/// The parts of a JOSE header read before verifying: which key and
/// algorithm to use. Anything else in it (`jku`, `x5u`, `jwk`) is
/// ignored: keys come only from the configured JWKS.
#[derive(Debug)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, JwtError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            alg: String,
            kid: Option<String>,
            crit: Option<Value>,
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let json = jwks::b64url(header).ok_or(JwtError::Malformed("header is not base64url"))?;
        let raw: Raw = serde_json::from_slice(&json)
            .map_err(|_| JwtError::Malformed("header is not a JOSE header"))?;
        // RFC 7515 4.1.11: extensions listed in `crit` must be understood;
        // this gateway understands none.
        if raw.crit.is_some() {
            return Err(JwtError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        Ok(TokenHeader {
            alg: raw.alg,
            kid: raw.kid,
        })
    }
}

/// What a jsonwebtoken error means for the request.
fn error_of(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        // The key cannot verify this token (wrong size, wrong curve).
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::AlgorithmNotAllowed { alg: String::new() },
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "iss" => JwtError::WrongIssuer,
            "aud" => JwtError::WrongAudience,
            "exp" => JwtError::Malformed("no exp claim"),
            _ => JwtError::Malformed("a registered claim is missing"),
        },
        ErrorKind::InvalidClaimFormat(_) => {
            JwtError::Malformed("a registered claim has the wrong type")
        }
        _ => JwtError::Malformed("token does not decode"),
    }
}

/// Checks required claims of a verified token; for routes that share an
/// issuer's verifier and require claims of their own.
pub fn check_claims(claims: &VerifiedClaims, required: &[RequiredClaim]) -> Result<(), JwtError> {
    for r in required {
        let Some(value) = claims.get(&r.name) else {
            return Err(JwtError::MissingClaim {
                name: r.name.clone(),
            });
        };
        let ok = match &r.requirement {
            ClaimRequirement::Present => !value.is_null(),
            ClaimRequirement::Equals(want) => holds(&r.name, value, want),
        };
        if !ok {
            return Err(JwtError::WrongClaim {
                name: r.name.clone(),
            });
        }
    }
    Ok(())
}

fn holds(name: &str, value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) if name == "scope" || name == "scp" => s.split(' ').any(|w| w == want),
        Value::Array(items) => items.iter().any(|v| scalar_is(v, want)),
        other => scalar_is(other, want),
    }
}

/// A string, number or boolean claim written as `want`; objects and null
/// never match.
fn scalar_is(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        _ => false,
    }
}
