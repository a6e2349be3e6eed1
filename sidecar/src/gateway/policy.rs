//! GatewayPolicies at the gateway: the [`PolicyGuard`] the route engine
//! calls for a rule that carries one. A request is authenticated (a JWT,
//! an API key, whichever the policy sets; with both, either admits), the
//! credentials' headers are rewritten for the backend, then the rate limit
//! counts it.
//!
//! What a policy needs at run time (a JWKS kept fresh, a limiter's
//! buckets) is built the first time a request meets the policy and kept
//! while the routes carry the same policy, so a routes update that leaves
//! a policy unchanged loses neither keys nor counts. Key sets are shared
//! by every policy that names the same JWKS.

mod cors;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Instant, SystemTime};

use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use super::aggregate::{aggregate, Aggregation, Fetch, Part, PathTemplate};
use super::cache::{make_conditional, Cache, Lookup};
use super::jwt::{
    self, ClaimRequirement, JwksSource, JwtRule, JwtVerifier, KeySet, RefreshSettings, TokenSource,
    VerifiedClaims,
};
use super::ratelimit::{
    headers as rl_headers, Decision, FailureMode, GlobalLimiter, GlobalPolicy, Limit, LocalConfig,
    LocalLimiter, Outcome,
};
use crate::core::budget::ByteBudget;
use crate::core::directory::gateway_policy::{
    self as core_policy, ApiKeyAuth, GatewayPolicy, JwksLocation, JwtAuth, RateLimit, RateLimitKey,
};
use crate::core::directory::routes::{Filter, ServiceRoutes};
use crate::core::http::{proxy_error, Caller};
use crate::core::serve::ClientAddr;
use crate::metrics::{Direction, ErrorKind, ProxyMetrics};
use crate::outbound::{Admission, Passed, PolicyGuard};

/// The gateway's policies: what each needs at run time, by policy name.
pub struct Policies {
    metrics: ProxyMetrics,
    /// None without `--rate-limit-redis`: a global limit then answers as
    /// its policy says Redis failures do.
    redis: Option<GlobalLimiter>,
    active: Mutex<HashMap<String, Arc<Active>>>,
    /// Shared by every policy with `cache`: one memory bound for the
    /// gateway.
    cache: Cache,
    /// How aggregation parts are asked (over the mesh); None: policies
    /// with `aggregate` cannot be applied.
    fetch: Option<Arc<dyn Fetch>>,
    /// Room for aggregation part bodies, shared by every aggregation.
    aggregation_room: ByteBudget,
    /// Shared by policies naming the same JWKS (and refresh interval);
    /// a set lives as long as a policy holds it.
    key_sets: Mutex<HashMap<String, Weak<KeySet>>>,
    /// The routes the policies were last swept against (see
    /// [`Policies::follow`]).
    /// Read lock-free on every request; written only when the routes
    /// change.
    swept: arc_swap::ArcSwapOption<ServiceRoutes>,
}

/// One policy, ready to apply.
struct Active {
    config: Arc<GatewayPolicy>,
    /// Err: the policy cannot be applied here (a JWT setting the verifier
    /// refuses, a limit out of range); its requests are refused.
    built: Result<Built, String>,
    counters: Counters,
}

struct Built {
    jwt: Option<JwtVerifier>,
    api_keys: Option<ApiKeyAuth>,
    limiter: Option<Limiter>,
    aggregation: Option<Aggregation>,
}

enum Limiter {
    Local(LocalLimiter),
    Global(GlobalPolicy),
}

/// The decision counters of one policy, resolved once.
struct Counters {
    allowed: Counter,
    unauthenticated: Counter,
    forbidden: Counter,
    rate_limited: Counter,
    body_too_large: Counter,
    preflight: Counter,
    failed_open: Counter,
    failed_closed: Counter,
    invalid: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_revalidate: Counter,
    cache_bypass: Counter,
}

impl Counters {
    fn new(metrics: &ProxyMetrics, policy: &str) -> Counters {
        let c = |d| metrics.policy_decision(policy, d);
        Counters {
            allowed: c("allowed"),
            unauthenticated: c("unauthenticated"),
            forbidden: c("forbidden"),
            rate_limited: c("rate_limited"),
            body_too_large: c("body_too_large"),
            preflight: c("cors_preflight"),
            failed_open: c("limiter_failed_open"),
            failed_closed: c("limiter_failed_closed"),
            invalid: c("invalid"),
            cache_hit: metrics.cache_lookup(policy, "hit"),
            cache_miss: metrics.cache_lookup(policy, "miss"),
            cache_revalidate: metrics.cache_lookup(policy, "revalidate"),
            cache_bypass: metrics.cache_lookup(policy, "bypass"),
        }
    }
}

/// A copy of the request's head (method, URI, version, headers).
fn request_head(parts: &Parts) -> Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// The request's `Content-Length`, when it states one.
fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Who a request proved to be.
enum Principal {
    Anonymous,
    Token(VerifiedClaims),
    ApiKey(String),
}

impl Policies {
    pub fn new(
        metrics: ProxyMetrics,
        redis: Option<GlobalLimiter>,
        cache: Cache,
        fetch: Option<Arc<dyn Fetch>>,
    ) -> Policies {
        Policies {
            metrics,
            redis,
            cache,
            fetch,
            aggregation_room: ByteBudget::new(super::aggregate::ROOM_TOTAL),
            active: Mutex::default(),
            key_sets: Mutex::default(),
            swept: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Forgets the state of policies `routes` no longer name (their rate
    /// limit buckets, their hold on a JWKS, which stops its refresh) when
    /// `routes` is not the set last seen. Called with the gateway's routes
    /// before each request; a new set costs one walk over its rules.
    pub fn follow(&self, routes: &Arc<ServiceRoutes>) {
        if self
            .swept
            .load()
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, routes))
        {
            return;
        }
        let named: HashSet<&str> = routes
            .routes
            .iter()
            .flat_map(|r| &r.rules)
            .flat_map(|rule| {
                rule.filters
                    .iter()
                    .chain(rule.backends.iter().flat_map(|b| &b.filters))
            })
            .filter_map(|f| match f {
                Filter::GatewayPolicy(p) => Some(p.name.as_str()),
                _ => None,
            })
            .collect();
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let before = active.len();
        active.retain(|name, _| named.contains(name.as_str()));
        if active.len() != before {
            tracing::debug!(
                dropped = before - active.len(),
                "gateway policies no route names any more were dropped"
            );
        }
        drop(active);
        self.key_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, set| set.strong_count() > 0);
        self.swept.store(Some(routes.clone()));
    }

    /// Names of the policies with run-time state, sorted.
    #[cfg(test)]
    pub(crate) fn active_names(&self) -> Vec<String> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = active.keys().cloned().collect();
        names.sort();
        names
    }

    /// The run-time state of `policy`, built when first met or when the
    /// policy of that name changed.
    fn active(&self, policy: &Arc<GatewayPolicy>) -> Arc<Active> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = active.get(&policy.name) {
            if Arc::ptr_eq(&a.config, policy) || *a.config == **policy {
                return a.clone();
            }
        }
        let built = self.build(policy);
        if let Err(e) = &built {
            tracing::error!(policy = %policy.name, error = %e, "gateway policy cannot be applied; its routes answer 500");
        }
        let a = Arc::new(Active {
            config: policy.clone(),
            built,
            counters: Counters::new(&self.metrics, &policy.name),
        });
        active.insert(policy.name.clone(), a.clone());
        a
    }

    fn build(&self, policy: &GatewayPolicy) -> Result<Built, String> {
        let jwt = policy.jwt.as_ref().map(|j| self.verifier(j)).transpose()?;
        let limiter = policy
            .rate_limit
            .as_ref()
            .map(|r| limiter(&policy.name, r))
            .transpose()?;
        if matches!(limiter, Some(Limiter::Global(_))) && self.redis.is_none() {
            tracing::warn!(policy = %policy.name, "global rate limit without --rate-limit-redis: every request is treated as a Redis failure");
        }
        let aggregation = policy
            .aggregate
            .as_ref()
            .map(|a| aggregation(a, identity_headers(policy)))
            .transpose()?;
        if aggregation.is_some() && self.fetch.is_none() {
            return Err("aggregation needs the gateway's mesh client".into());
        }
        Ok(Built {
            jwt,
            api_keys: policy.api_keys.clone(),
            limiter,
            aggregation,
        })
    }

    fn verifier(&self, j: &JwtAuth) -> Result<JwtVerifier, String> {
        let rule = jwt_rule(j).map_err(|e| e.to_string())?;
        let keys = self.key_set(&rule).map_err(|e| e.to_string())?;
        JwtVerifier::new(Arc::new(rule), keys).map_err(|e| e.to_string())
    }

    fn key_set(&self, rule: &JwtRule) -> Result<Arc<KeySet>, jwt::JwksError> {
        let id = format!("{}|{:?}", rule.jwks, rule.refresh.every);
        let mut sets = self.key_sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = sets.get(&id).and_then(Weak::upgrade) {
            return Ok(set);
        }
        let fetch = KeySet::fetcher(&rule.jwks, rule.jwks_timeout, rule.jwks_max_bytes)?;
        let set = KeySet::empty(fetch, rule.refresh);
        sets.retain(|_, w| w.strong_count() > 0);
        sets.insert(id, Arc::downgrade(&set));
        tokio::spawn(refresh_loop(Arc::downgrade(&set), rule.refresh));
        Ok(set)
    }

    async fn check(&self, policy: &Arc<GatewayPolicy>, parts: &mut Parts) -> Admission {
        let active = self.active(policy);
        let caller = Caller::of(&parts.headers, true);
        let refuse = |status: StatusCode, kind: ErrorKind, detail: &str| {
            // Debug, not info: refusals are what a flood of bad requests is
            // made of, and each is counted (policy decisions, errors).
            tracing::debug!(policy = %policy.name, kind = kind.as_str(), %detail, "gateway: request refused by policy");
            self.metrics.error(Direction::Gateway, kind);
            proxy_error(status, kind, detail, caller)
        };
        let built = match &active.built {
            Ok(b) => b,
            Err(e) => {
                active.counters.invalid.inc();
                return Admission::Answer(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::PolicyUnavailable,
                    &format!("gateway policy {} cannot be applied: {e}", policy.name),
                ));
            }
        };
        let mut passed = Passed {
            max_body: policy.max_request_body_bytes,
            ..Passed::default()
        };
        if let Some(c) = &policy.cors {
            match cors::check(c, parts) {
                cors::Outcome::NotCors => {}
                cors::Outcome::Preflight(res) => {
                    active.counters.preflight.inc();
                    return Admission::Answer(res);
                }
                cors::Outcome::Actual(headers) => passed.response_headers.extend(headers),
            }
        }
        if let (Some(max), Some(len)) = (policy.max_request_body_bytes, content_length(parts)) {
            if len > max {
                active.counters.body_too_large.inc();
                return Admission::Answer(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorKind::BodyTooLarge,
                    &format!("request body of {len} bytes; {} allows {max}", policy.name),
                ));
            }
        }
        let principal = match authenticate(built, parts).await {
            Ok(p) => p,
            Err(refusal) => {
                let (status, kind, challenge, detail) = refusal;
                let counter = if status == StatusCode::FORBIDDEN {
                    &active.counters.forbidden
                } else {
                    &active.counters.unauthenticated
                };
                counter.inc();
                let mut res = refuse(status, kind, &detail);
                if let Some(c) = challenge {
                    res.headers_mut().insert(http::header::WWW_AUTHENTICATE, c);
                }
                // A browser script may read why it was refused.
                res.headers_mut().extend(passed.response_headers);
                return Admission::Answer(res);
            }
        };
        forward_identity(built, &principal, &mut parts.headers);
        let headers = &mut passed.response_headers;
        if let (Some(limiter), Some(r)) = (&built.limiter, &policy.rate_limit) {
            let key = rate_key(&r.key, parts, &principal);
            let (limit, outcome) = match limiter {
                Limiter::Local(l) => (l.limit(), Outcome::Decided(l.check(&key, Instant::now()))),
                Limiter::Global(g) => {
                    let outcome = match &self.redis {
                        Some(redis) => redis.check(g, &key).await,
                        None => match g.on_failure() {
                            FailureMode::Open => Outcome::FailedOpen,
                            FailureMode::Closed => Outcome::FailedClosed,
                        },
                    };
                    (g.limit(), outcome)
                }
            };
            match outcome {
                Outcome::Decided(d) => {
                    rl_headers::set_decision_headers(limit, &d, headers);
                    if let Decision::Limited { .. } = d {
                        active.counters.rate_limited.inc();
                        let mut res = refuse(
                            StatusCode::TOO_MANY_REQUESTS,
                            ErrorKind::RateLimited,
                            &format!("rate limit of {} reached", policy.name),
                        );
                        res.headers_mut().extend(passed.response_headers);
                        return Admission::Answer(res);
                    }
                }
                Outcome::FailedOpen => {
                    active.counters.failed_open.inc();
                }
                Outcome::FailedClosed => {
                    active.counters.failed_closed.inc();
                    let mut res = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorKind::PolicyUnavailable,
                        &format!(
                            "rate limit of {} cannot be checked (Redis unavailable)",
                            policy.name
                        ),
                    );
                    rl_headers::set_unavailable_headers(res.headers_mut());
                    return Admission::Answer(res);
                }
            }
        }
        active.counters.allowed.inc();
        if let (Some(agg), Some(fetch)) = (&built.aggregation, &self.fetch) {
            let mut res = aggregate(
                agg,
                fetch.as_ref(),
                parts,
                &self.aggregation_room,
                &|part, result| {
                    self.metrics
                        .aggregate_part(&policy.name, &part.name, result)
                },
            )
            .await;
            res.headers_mut().extend(passed.response_headers);
            return Admission::Answer(res);
        }
        if policy.cache {
            if let Some(hit) = self.cached(&active.counters, &principal, parts, &mut passed) {
                let mut res = hit;
                res.headers_mut().extend(passed.response_headers);
                return Admission::Answer(res);
            }
        }
        Admission::Pass(passed)
    }

    /// The response cache's part: a stored response that answers now, or
    /// (in `passed`) the hook that stores or refreshes one from the
    /// backend's answer. Asked after authentication and the rate limit, so
    /// a hit is never served to a caller the policy refuses, and counted.
    fn cached(
        &self,
        counters: &Counters,
        principal: &Principal,
        parts: &mut Parts,
        passed: &mut Passed,
    ) -> Option<http::Response<crate::core::http::Body>> {
        // What the cache decides by: the request as it goes on, and, when
        // the policy authenticated it, an `Authorization` even if the
        // credential was stripped or sent in another header, so a response
        // for one authenticated caller is shared only when it says public.
        let mut head = request_head(parts);
        if !matches!(principal, Principal::Anonymous) {
            head.headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("authenticated-by-gateway"),
            );
        }
        let (pending, conditional) = match self.cache.lookup(&head, SystemTime::now()) {
            Lookup::Hit(res) => {
                counters.cache_hit.inc();
                return Some(res);
            }
            Lookup::Bypass => {
                counters.cache_bypass.inc();
                return None;
            }
            Lookup::Miss(pending) => {
                counters.cache_miss.inc();
                (pending, None)
            }
            Lookup::Revalidate {
                conditional,
                pending,
            } => {
                counters.cache_revalidate.inc();
                (pending, Some(conditional))
            }
        };
        if let Some(conditional) = conditional {
            make_conditional(&mut parts.headers, conditional);
        }
        let cache = self.cache.clone();
        passed.respond = Some(Box::new(move |res| {
            cache.complete(&head, pending, res, SystemTime::now())
        }));
        None
    }
}

impl PolicyGuard for Policies {
    fn admit<'a>(
        &'a self,
        policy: &'a Arc<GatewayPolicy>,
        parts: &'a mut Parts,
    ) -> Pin<Box<dyn Future<Output = Admission> + Send + 'a>> {
        Box::pin(self.check(policy, parts))
    }
}

/// A refused authentication: status, kind, `WWW-Authenticate`, detail.
type AuthRefusal = (StatusCode, ErrorKind, Option<HeaderValue>, String);

/// Who the request is, by the policy's credentials. A matching API key
/// admits at once; otherwise the JWT decides (and its challenge is the
/// answer); a policy with API keys only answers 401 naming the header.
async fn authenticate(built: &Built, parts: &mut Parts) -> Result<Principal, AuthRefusal> {
    if built.jwt.is_none() && built.api_keys.is_none() {
        return Ok(Principal::Anonymous);
    }
    if let Some(keys) = &built.api_keys {
        // The key is a credential: the backend never sees it.
        if let Some(presented) = parts.headers.remove(&keys.header) {
            // Digests are compared, not keys: equal digests reveal nothing
            // a timing attack could use to find the key.
            let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            if let Some(k) = keys.keys.iter().find(|k| k.sha256 == digest) {
                return Ok(Principal::ApiKey(k.name.clone()));
            }
            if built.jwt.is_none() {
                return Err(api_key_refusal(keys, "unknown API key"));
            }
        }
    }
    match &built.jwt {
        Some(verifier) => match verifier.verify(&parts.headers).await {
            Ok(claims) => Ok(Principal::Token(claims)),
            Err(e) => {
                let (status, challenge) = e.challenge();
                let kind = if status == StatusCode::FORBIDDEN {
                    ErrorKind::Forbidden
                } else {
                    ErrorKind::Unauthenticated
                };
                Err((status, kind, Some(challenge), format!("JWT: {e}")))
            }
        },
        None => {
            let keys = built.api_keys.as_ref().expect("checked above");
            Err(api_key_refusal(keys, "no API key"))
        }
    }
}

fn api_key_refusal(keys: &ApiKeyAuth, detail: &str) -> AuthRefusal {
    let challenge = HeaderValue::from_str(&format!(
        "ApiKey realm=\"{}\", header=\"{}\"",
        jwt::REALM,
        keys.header
    ))
    .ok();
    (
        StatusCode::UNAUTHORIZED,
        ErrorKind::Unauthenticated,
        challenge,
        format!("{detail} (header {})", keys.header),
    )
}

/// The headers the backend may trust: every one the policy sets is first
/// removed from what the client sent, then set from the credential.
fn forward_identity(built: &Built, principal: &Principal, headers: &mut HeaderMap) {
    if let Some(verifier) = &built.jwt {
        match principal {
            Principal::Token(claims) => jwt::forward_claims(claims, verifier.rule(), headers),
            _ => jwt::strip_forwarded(verifier.rule(), headers),
        }
    }
    if let Some(h) = built
        .api_keys
        .as_ref()
        .and_then(|k| k.forward_name_header.as_ref())
    {
        headers.remove(h);
        if let Principal::ApiKey(name) = principal {
            if let Ok(v) = HeaderValue::from_str(name) {
                headers.insert(h.clone(), v);
            }
        }
    }
}

/// The bucket a request takes from. Absent values (no header, no subject)
/// share the empty key's bucket: leaving out a header must not escape the
/// limit.
fn rate_key(key: &RateLimitKey, parts: &Parts, principal: &Principal) -> String {
    match key {
        RateLimitKey::ClientIp => parts
            .extensions
            .get::<ClientAddr>()
            .map(|ClientAddr(a): &ClientAddr| client_ip(*a))
            .unwrap_or_default(),
        RateLimitKey::Header(h) => parts
            .headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        RateLimitKey::JwtSubject => match principal {
            Principal::Token(c) => c.subject().unwrap_or_default().to_string(),
            _ => String::new(),
        },
        RateLimitKey::ApiKey => match principal {
            Principal::ApiKey(name) => name.clone(),
            _ => String::new(),
        },
    }
}

/// IPv4-mapped addresses count as the IPv4 client they are.
fn client_ip(a: SocketAddr) -> String {
    match a.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        ip => ip.to_string(),
    }
}

fn jwt_rule(j: &JwtAuth) -> Result<JwtRule, jwt::JwtConfigError> {
    let source = match &j.jwks {
        JwksLocation::File(p) => JwksSource::File(p.clone()),
        JwksLocation::Url(u) => JwksSource::Url(u.clone()),
    };
    let mut rule = JwtRule::new(j.issuer.clone(), source);
    rule.audiences = j.audiences.clone();
    if !j.algorithms.is_empty() {
        rule.algorithms = j
            .algorithms
            .iter()
            .map(|a| jwt::parse_algorithm(a))
            .collect::<Result<_, _>>()?;
    }
    if let Some(l) = j.leeway {
        rule.leeway = l;
    }
    rule.required_claims = j
        .required_claims
        .iter()
        .map(|c| jwt::RequiredClaim {
            name: c.name.clone(),
            requirement: match &c.value {
                None => ClaimRequirement::Present,
                Some(v) => ClaimRequirement::Equals(v.clone()),
            },
        })
        .collect();
    rule.forward = j
        .forward_claims
        .iter()
        .map(|f| jwt::ForwardClaim {
            claim: f.claim.clone(),
            header: f.header.clone(),
        })
        .collect();
    rule.token_source = match &j.token_header {
        None => TokenSource::Bearer,
        Some(h) => TokenSource::Header(h.clone()),
    };
    rule.forward_token = !j.strip_token;
    rule.refresh = RefreshSettings {
        every: j.refresh,
        ..RefreshSettings::default()
    };
    rule.check()?;
    Ok(rule)
}

/// The headers `policy` sets from what a request proved (its forwarded
/// claims, its API key's name).
fn identity_headers(policy: &GatewayPolicy) -> Vec<http::HeaderName> {
    let claims = policy
        .jwt
        .iter()
        .flat_map(|j| j.forward_claims.iter().map(|c| c.header.clone()));
    let key_name = policy
        .api_keys
        .iter()
        .filter_map(|k| k.forward_name_header.clone());
    claims.chain(key_name).collect()
}

fn aggregation(
    a: &core_policy::Aggregate,
    identity_headers: Vec<http::HeaderName>,
) -> Result<Aggregation, String> {
    let parts = a
        .parts
        .iter()
        .map(|p| {
            Ok(Part {
                name: p.name.clone(),
                service: p.service_key.clone(),
                port: p.port,
                path: PathTemplate::parse(&p.path)
                    .map_err(|e| format!("aggregate part {:?}: {e}", p.name))?,
                timeout: p.timeout,
                required: p.required,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let agg = Aggregation {
        parts,
        max_body_bytes: a.max_part_bytes,
        identity_headers,
    };
    agg.check().map_err(|e| format!("aggregate: {e}"))?;
    Ok(agg)
}

fn limiter(policy: &str, r: &RateLimit) -> Result<Limiter, String> {
    let limit = Limit::new(r.requests, r.per, r.burst).map_err(|e| format!("rate limit: {e}"))?;
    if !r.global {
        return Ok(Limiter::Local(LocalLimiter::new(
            limit,
            LocalConfig::default(),
        )));
    }
    let on_failure = if r.fail_closed {
        FailureMode::Closed
    } else {
        FailureMode::Open
    };
    GlobalPolicy::new(policy, limit, on_failure)
        .map(Limiter::Global)
        .map_err(|e| format!("rate limit: {e}"))
}

/// Reads a key set now and every `refresh.every` while a policy holds it.
/// A failed read keeps the keys held (the set's rule) and is logged.
async fn refresh_loop(set: Weak<KeySet>, refresh: RefreshSettings) {
    loop {
        let Some(keys) = set.upgrade() else { return };
        match keys.refresh().await {
            Ok(n) => tracing::debug!(source = %keys.source_name(), keys = n, "JWKS read"),
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; the keys held stay"),
        }
        drop(keys);
        tokio::time::sleep(refresh.every).await;
    }
}

#[cfg(test)]
mod tests;
