//! Checks of single values of a route, each returning the message of a
//! [`RouteError`](super::RouteError) without the field path (the caller
//! knows where the value sits). They repeat what the Gateway API schema
//! holds where mesh.yaml has no API server to apply it, and add what the
//! proxies would refuse (an HTTP name that is not a token, a regular
//! expression over their size cap), so that nothing a proxy would NACK
//! leaves the controller.

use mycel_crds::duration::parse_duration;

/// Cap of one compiled regular expression, the proxies' own
/// (`sidecar/src/core/directory/routes.rs`, `PATTERN_SIZE_LIMIT`).
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// An RE2 expression as the proxies compile it: anchored to the whole
/// value and under their size cap.
pub fn regex(source: &str) -> Result<(), String> {
    regex::RegexBuilder::new(&format!("^(?:{source})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map(drop)
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "regular expression {source:?} compiles to more than {limit} bytes (the proxies' limit)"
            ),
            other => format!("{source:?} is not a valid RE2 regular expression: {other}"),
        })
}

/// A header name, lowercased.
pub fn header_name(name: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))
}

pub fn header_value(value: &str) -> Result<(), String> {
    http::HeaderValue::from_str(value)
        .map(drop)
        .map_err(|_| format!("{value:?} is not a valid HTTP header value"))
}

/// A query parameter name: an RFC 7230 token, as the schema's pattern.
pub fn query_name(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > 256 || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid query parameter name"));
    }
    Ok(())
}

/// A path an exact or prefix match (or a path modifier) may hold: what
/// the Gateway API's rules on `path.value` allow.
pub fn path(value: &str) -> Result<(), String> {
    if !value.starts_with('/') {
        return Err(format!("{value:?} must start with '/'"));
    }
    if value.len() > 1024 {
        return Err("longer than 1024 characters".into());
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(bad) {
            return Err(format!("{value:?} must not contain {bad:?}"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err(format!("{value:?} must not end with \"/.\" or \"/..\""));
    }
    Ok(())
}

/// A hostname of `spec.hostnames` (`*.` wildcard allowed), lowercased.
pub fn hostname(raw: &str, wildcard: bool) -> Result<String, String> {
    let lower = raw.to_ascii_lowercase();
    let name = match lower.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        Some(_) => return Err(format!("{raw:?}: a wildcard is not allowed here")),
        None => lower.as_str(),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if lower.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{raw:?} is not a valid hostname (DNS labels; an IP address is not allowed)"
        ));
    }
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{raw:?}: an IP address is not allowed"));
    }
    Ok(lower)
}

pub fn port(value: i32) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{value} is not a port number (1-65535)"))
}

/// A Gateway API duration in milliseconds (`0s`: none).
pub fn duration_ms(raw: &str) -> Result<u64, String> {
    parse_duration(raw)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| e.to_string())
}

/// A gRPC service name as an `Exact` match may hold it.
pub fn grpc_service(value: &str) -> Result<(), String> {
    let ident = |s: &str| {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let body = value.strip_prefix('.').unwrap_or(value);
    if value.len() > 1024 || !body.split('.').all(ident) {
        return Err(format!("{value:?} is not a gRPC service name"));
    }
    Ok(())
}

/// A gRPC method name as an `Exact` match may hold it.
pub fn grpc_method(value: &str) -> Result<(), String> {
    let mut c = value.chars();
    let ok = c
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.len() <= 1024;
    if !ok {
        return Err(format!("{value:?} is not a gRPC method name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert!(regex("/api/v[0-9]+").is_ok());
        assert!(regex("(a)\\1").unwrap_err().contains("not a valid RE2"));
        assert!(regex("\\w{1000}{1000}")
            .unwrap_err()
            .contains("the proxies' limit"));
        assert_eq!(header_name("X-User").unwrap(), "x-user");
        assert!(header_name("bad name").is_err());
        assert!(header_value("a\nb").is_err());
        assert!(query_name("q").is_ok() && query_name("a b").is_err());
        assert!(path("/a/b").is_ok());
        for bad in ["a", "/a//b", "/a/../b", "/a%2fb", "/a#x", "/a/.."] {
            assert!(path(bad).is_err(), "{bad}");
        }
        assert_eq!(hostname("Foo.Example", true).unwrap(), "foo.example");
        assert_eq!(hostname("*.example", true).unwrap(), "*.example");
        assert!(hostname("*.example", false).is_err());
        assert!(hostname("10.0.0.1", true).is_err());
        assert!(hostname("a_b", true).is_err());
        assert_eq!(port(80).unwrap(), 80);
        assert!(port(0).is_err() && port(70000).is_err());
        assert_eq!(duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(duration_ms("0s").unwrap(), 0);
        assert!(duration_ms("10").is_err());
        assert!(grpc_service("shop.v1.Reviews").is_ok() && grpc_service("a b").is_err());
        assert!(grpc_method("Get").is_ok() && grpc_method("1x").is_err());
    }
}
