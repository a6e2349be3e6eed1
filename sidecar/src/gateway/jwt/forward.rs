//! Claims handed to the backend as request headers. The backend trusts
//! these headers because the gateway sets them, so any copy the client
//! sent is removed first, whether or not the token carries the claim.

use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::{JwtRule, VerifiedClaims};

/// Removes every header the rule forwards claims as (and the token's
/// header when the rule does not forward the token). For requests that
/// carry no verified token too: a client must never set them.
pub fn strip_forwarded(rule: &JwtRule, headers: &mut HeaderMap) {
    for f in &rule.forward {
        headers.remove(&f.header);
    }
    if !rule.forward_token {
        headers.remove(rule.token_source.header());
    }
}

/// Strips the forwarded headers, then sets them from the token's claims:
/// strings as they are, other values as JSON text. A claim that is absent
/// sets nothing; one that cannot be a header value (control characters,
/// non-ASCII) is dropped and logged.
pub fn forward_claims(claims: &VerifiedClaims, rule: &JwtRule, headers: &mut HeaderMap) {
    strip_forwarded(rule, headers);
    for f in &rule.forward {
        let Some(value) = claims.get(&f.claim) else {
            continue;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        match HeaderValue::from_str(&text) {
            Ok(v) => {
                headers.insert(f.header.clone(), v);
            }
            Err(_) => tracing::info!(
                claim = %f.claim,
                header = %f.header,
                "JWT: claim not forwarded: not a valid header value"
            ),
        }
    }
}
