//! A route filter's GatewayPolicy into
//! [`crate::core::directory::gateway_policy`]. What the data path relies on
//! is checked here (header names, digests, a limit it can hold, a key the
//! policy can give), so a bad policy is a NACK naming the field and the
//! last good routes stay.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use mycel_api::v1 as pb;

use super::{ConvertError, Ctx};
use crate::core::directory::gateway_policy::{
    Aggregate, AggregatePart, AllowOrigins, ApiKey, ApiKeyAuth, Cors, ForwardClaim, GatewayPolicy,
    JwksLocation, JwtAuth, RateLimit, RateLimitKey, RequiredClaim,
};

/// Caps on one policy, so a resource cannot make a gateway hold (and scan
/// per request) an unbounded list.
const MAX_API_KEYS: usize = 1000;
const MAX_CLAIMS: usize = 32;
const MAX_AUDIENCES: usize = 32;
const MAX_NAME: usize = 253;
const MAX_ORIGINS: usize = 64;
const MAX_CORS_HEADERS: usize = 64;
/// A day: the longest period and refresh interval the controller accepts.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

pub(super) fn gateway_policy(
    ctx: &Ctx,
    at: &str,
    p: &pb::GatewayPolicy,
) -> Result<GatewayPolicy, ConvertError> {
    if p.name.is_empty() || p.name.len() > MAX_NAME || !p.name.contains('/') {
        return Err(ctx.err(
            format!("{at}.name"),
            format!("{:?} is not <namespace>/<name>", p.name),
        ));
    }
    if p.jwt.is_none()
        && p.api_keys.is_none()
        && p.rate_limit.is_none()
        && p.cors.is_none()
        && p.max_request_body_bytes == 0
        && p.cache.is_none()
        && p.aggregate.is_none()
    {
        return Err(ctx.err(at, "a policy with nothing to enforce"));
    }
    let jwt = p
        .jwt
        .as_ref()
        .map(|j| jwt(ctx, &format!("{at}.jwt"), j))
        .transpose()?;
    let api_keys = p
        .api_keys
        .as_ref()
        .map(|k| api_keys(ctx, &format!("{at}.api_keys"), k))
        .transpose()?;
    let rate_limit = p
        .rate_limit
        .as_ref()
        .map(|r| rate_limit(ctx, &format!("{at}.rate_limit"), r))
        .transpose()?;
    if let Some(r) = &rate_limit {
        let missing = match r.key {
            RateLimitKey::JwtSubject if jwt.is_none() => Some("jwt"),
            RateLimitKey::ApiKey if api_keys.is_none() => Some("api_keys"),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(ctx.err(
                format!("{at}.rate_limit.key"),
                format!("{:?} needs the policy's {missing}", r.key),
            ));
        }
    }
    let cors = p
        .cors
        .as_ref()
        .map(|c| cors(ctx, &format!("{at}.cors"), c))
        .transpose()?;
    Ok(GatewayPolicy {
        name: p.name.clone(),
        jwt,
        api_keys,
        rate_limit,
        cors,
        max_request_body_bytes: (p.max_request_body_bytes != 0).then_some(p.max_request_body_bytes),
        cache: p.cache.is_some(),
        aggregate: p
            .aggregate
            .as_ref()
            .map(|a| aggregate(ctx, &format!("{at}.aggregate"), a))
            .transpose()?,
    })
}

const MAX_PARTS: usize = 16;
const DEFAULT_PART_BYTES: usize = 1024 * 1024;
const MAX_PART_BYTES: u64 = 16 * 1024 * 1024;
const MAX_PART_TIMEOUT: Duration = Duration::from_secs(60);

fn aggregate(ctx: &Ctx, at: &str, a: &pb::Aggregate) -> Result<Aggregate, ConvertError> {
    if a.parts.is_empty() || a.parts.len() > MAX_PARTS {
        return Err(ctx.err(
            format!("{at}.parts"),
            format!("{} parts; between 1 and {MAX_PARTS}", a.parts.len()),
        ));
    }
    if a.max_part_bytes > MAX_PART_BYTES {
        return Err(ctx.err(
            format!("{at}.max_part_bytes"),
            format!("{}; at most {MAX_PART_BYTES}", a.max_part_bytes),
        ));
    }
    let mut names = std::collections::HashSet::new();
    let parts = a
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pat = format!("{at}.parts[{i}]");
            let name_ok = p.name.len() <= 63
                && p.name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase())
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok || !names.insert(p.name.as_str()) {
                return Err(ctx.err(
                    format!("{pat}.name"),
                    format!("{:?} is not a part name, or is used twice", p.name),
                ));
            }
            mycel_api::names::ServiceKey::parse(&p.service)
                .map_err(|e| ctx.err(format!("{pat}.service"), e.to_string()))?;
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    ctx.err(format!("{pat}.port"), format!("{} is not a port", p.port))
                })?;
            if !p.path.starts_with('/') {
                return Err(ctx.err(
                    format!("{pat}.path"),
                    format!("{:?} does not start with '/'", p.path),
                ));
            }
            let timeout = Duration::from_millis(p.timeout_ms);
            if timeout.is_zero() || timeout > MAX_PART_TIMEOUT {
                return Err(ctx.err(
                    format!("{pat}.timeout_ms"),
                    format!("{} ms is not between 1 ms and 60 s", p.timeout_ms),
                ));
            }
            Ok(AggregatePart {
                name: p.name.clone(),
                service_key: p.service.clone(),
                port,
                path: p.path.clone(),
                timeout,
                required: p.required,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Aggregate {
        parts,
        max_part_bytes: match a.max_part_bytes {
            0 => DEFAULT_PART_BYTES,
            n => usize::try_from(n).unwrap_or(DEFAULT_PART_BYTES),
        },
    })
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn origin(ctx: &Ctx, at: String, o: &str) -> Result<String, ConvertError> {
    let uri: http::Uri = o
        .parse()
        .map_err(|_| ctx.err(at.clone(), format!("{o:?} is not an origin")))?;
    let plain = uri.scheme().is_some()
        && uri.host().is_some()
        && uri.path_and_query().is_none_or(|pq| pq.as_str() == "/")
        && !o.ends_with('/');
    if !plain || o.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ctx.err(
            at,
            format!("{o:?} is not a lowercase origin (scheme://host[:port], no path)"),
        ));
    }
    Ok(o.to_string())
}

fn cors(ctx: &Ctx, at: &str, c: &pb::Cors) -> Result<Cors, ConvertError> {
    if c.allow_origins.is_empty() || c.allow_origins.len() > MAX_ORIGINS {
        return Err(ctx.err(
            format!("{at}.allow_origins"),
            format!(
                "{} origins; between 1 and {MAX_ORIGINS}",
                c.allow_origins.len()
            ),
        ));
    }
    let allow_origins = if c.allow_origins.iter().any(|o| o == "*") {
        if c.allow_origins.len() > 1 {
            return Err(ctx.err(
                format!("{at}.allow_origins"),
                "\"*\" stands alone: it already allows every origin",
            ));
        }
        if c.allow_credentials {
            return Err(ctx.err(
                format!("{at}.allow_credentials"),
                "browsers refuse credentials with the origin \"*\"; name the origins",
            ));
        }
        AllowOrigins::Any
    } else {
        AllowOrigins::List(
            c.allow_origins
                .iter()
                .enumerate()
                .map(|(i, o)| origin(ctx, format!("{at}.allow_origins[{i}]"), o))
                .collect::<Result<_, _>>()?,
        )
    };
    let allow_methods = c
        .allow_methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                ctx.err(
                    format!("{at}.allow_methods[{i}]"),
                    format!("{m:?} is not a method"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let names = |list: &str, names: &[String]| -> Result<Vec<HeaderName>, ConvertError> {
        if names.len() > MAX_CORS_HEADERS {
            return Err(ctx.err(
                format!("{at}.{list}"),
                format!("{} headers; at most {MAX_CORS_HEADERS}", names.len()),
            ));
        }
        names
            .iter()
            .enumerate()
            .map(|(i, n)| header(ctx, format!("{at}.{list}[{i}]"), n))
            .collect()
    };
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers: names("allow_headers", &c.allow_headers)?,
        expose_headers: names("expose_headers", &c.expose_headers)?,
        allow_credentials: c.allow_credentials,
        max_age: (c.max_age_s != 0).then(|| Duration::from_secs(c.max_age_s.min(86_400))),
    })
}

fn header(ctx: &Ctx, at: String, name: &str) -> Result<HeaderName, ConvertError> {
    // Lowercase only: HeaderName lowercases, and a name that changed on
    // the way would not be the one the user configured.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ctx.err(at, format!("{name:?} is not lowercase")));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ctx.err(at, format!("{name:?} is not an HTTP header name")))
}

fn optional_header(ctx: &Ctx, at: String, name: &str) -> Result<Option<HeaderName>, ConvertError> {
    if name.is_empty() {
        return Ok(None);
    }
    header(ctx, at, name).map(Some)
}

fn jwt(ctx: &Ctx, at: &str, j: &pb::JwtAuth) -> Result<JwtAuth, ConvertError> {
    if j.issuer.is_empty() {
        return Err(ctx.err(format!("{at}.issuer"), "missing"));
    }
    if j.audiences.len() > MAX_AUDIENCES {
        return Err(ctx.err(
            format!("{at}.audiences"),
            format!("{} audiences; at most {MAX_AUDIENCES}", j.audiences.len()),
        ));
    }
    let jwks = match &j.jwks {
        None => return Err(ctx.err(format!("{at}.jwks"), "missing")),
        Some(pb::jwt_auth::Jwks::JwksFile(f)) => {
            let path = PathBuf::from(f);
            if !path.is_absolute() {
                return Err(ctx.err(
                    format!("{at}.jwks_file"),
                    format!("{f:?} is not an absolute path"),
                ));
            }
            JwksLocation::File(path)
        }
        Some(pb::jwt_auth::Jwks::JwksUrl(u)) => {
            let uri: http::Uri = u
                .parse()
                .map_err(|e| ctx.err(format!("{at}.jwks_url"), format!("{u:?}: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(ctx.err(
                    format!("{at}.jwks_url"),
                    format!("{u:?} is not an http:// URL"),
                ));
            }
            JwksLocation::Url(uri)
        }
    };
    let refresh = match j.jwks_refresh_ms {
        0 => DEFAULT_JWKS_REFRESH,
        ms => Duration::from_millis(ms).min(MAX_PERIOD),
    };
    if j.required_claims.len() > MAX_CLAIMS || j.forward_claims.len() > MAX_CLAIMS {
        return Err(ctx.err(
            at,
            format!("more than {MAX_CLAIMS} required or forwarded claims"),
        ));
    }
    let required_claims = j
        .required_claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.name.is_empty() {
                return Err(ctx.err(format!("{at}.required_claims[{i}].name"), "missing"));
            }
            Ok(RequiredClaim {
                name: c.name.clone(),
                value: (!c.value.is_empty()).then(|| c.value.clone()),
            })
        })
        .collect::<Result<_, _>>()?;
    let forward_claims = j
        .forward_claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.claim.is_empty() {
                return Err(ctx.err(format!("{at}.forward_claims[{i}].claim"), "missing"));
            }
            Ok(ForwardClaim {
                claim: c.claim.clone(),
                header: header(ctx, format!("{at}.forward_claims[{i}].header"), &c.header)?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(JwtAuth {
        issuer: j.issuer.clone(),
        audiences: j.audiences.clone(),
        jwks,
        refresh,
        algorithms: j.algorithms.clone(),
        leeway: j.leeway_ms.map(Duration::from_millis),
        required_claims,
        forward_claims,
        token_header: optional_header(ctx, format!("{at}.token_header"), &j.token_header)?,
        strip_token: j.strip_token,
    })
}

fn api_keys(ctx: &Ctx, at: &str, k: &pb::ApiKeyAuth) -> Result<ApiKeyAuth, ConvertError> {
    if k.keys.is_empty() || k.keys.len() > MAX_API_KEYS {
        return Err(ctx.err(
            format!("{at}.keys"),
            format!("{} keys; between 1 and {MAX_API_KEYS}", k.keys.len()),
        ));
    }
    let mut names = std::collections::HashSet::new();
    let keys = k
        .keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            if key.name.is_empty() || !names.insert(key.name.as_str()) {
                return Err(ctx.err(
                    format!("{at}.keys[{i}].name"),
                    format!("{:?} is empty or used twice", key.name),
                ));
            }
            let sha256: [u8; 32] = key.sha256.as_slice().try_into().map_err(|_| {
                ctx.err(
                    format!("{at}.keys[{i}].sha256"),
                    format!("{} bytes; a SHA-256 digest is 32", key.sha256.len()),
                )
            })?;
            Ok(ApiKey {
                name: key.name.clone(),
                sha256,
            })
        })
        .collect::<Result<_, _>>()?;
    let header = match k.header.as_str() {
        "" => HeaderName::from_static(DEFAULT_API_KEY_HEADER),
        h => header(ctx, format!("{at}.header"), h)?,
    };
    Ok(ApiKeyAuth {
        header,
        keys,
        forward_name_header: optional_header(
            ctx,
            format!("{at}.forward_name_header"),
            &k.forward_name_header,
        )?,
    })
}

fn rate_limit(ctx: &Ctx, at: &str, r: &pb::RateLimit) -> Result<RateLimit, ConvertError> {
    if r.requests == 0 {
        return Err(ctx.err(format!("{at}.requests"), "must be at least 1"));
    }
    if r.per_ms == 0 || Duration::from_millis(r.per_ms) > MAX_PERIOD {
        return Err(ctx.err(
            format!("{at}.per_ms"),
            format!("{} ms is not between 1 ms and a day", r.per_ms),
        ));
    }
    let key = match pb::RateLimitKey::try_from(r.key) {
        Ok(pb::RateLimitKey::ClientIp) => RateLimitKey::ClientIp,
        Ok(pb::RateLimitKey::Header) => {
            RateLimitKey::Header(header(ctx, format!("{at}.header"), &r.header)?)
        }
        Ok(pb::RateLimitKey::JwtSubject) => RateLimitKey::JwtSubject,
        Ok(pb::RateLimitKey::ApiKey) => RateLimitKey::ApiKey,
        Ok(pb::RateLimitKey::Unspecified) | Err(_) => {
            return Err(ctx.err(
                format!("{at}.key"),
                format!("{} is not a rate-limit key this proxy knows", r.key),
            ))
        }
    };
    if r.fail_closed && !r.global {
        return Err(ctx.err(
            format!("{at}.fail_closed"),
            "only a global limit asks Redis, so only it can fail closed",
        ));
    }
    Ok(RateLimit {
        requests: r.requests,
        per: Duration::from_millis(r.per_ms),
        burst: (r.burst != 0).then_some(r.burst),
        key,
        global: r.global,
        fail_closed: r.fail_closed,
    })
}
