//! The flags of `authz explain`, checked as they are parsed so a malformed
//! question ends with a usage error (status 2) before anything is asked.

use mycel_api::names::ServiceKey;
use mycel_api::spiffe::{SpiffeId, SpiffeIdError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Id(SpiffeId),
    /// Namespace and service account, already valid names; the trust
    /// domain comes from another flag.
    ServiceAccount(String, String),
    Unauthenticated,
}

impl Caller {
    /// The caller as the controller's `from` parameter.
    pub fn spiffe_id(&self, trust_domain: &str) -> Result<String, SpiffeIdError> {
        Ok(match self {
            Caller::Id(id) => id.to_string(),
            Caller::ServiceAccount(ns, sa) => SpiffeId::new(trust_domain, ns, sa)?.to_string(),
            Caller::Unauthenticated => "unauthenticated".to_string(),
        })
    }
}

pub fn caller(text: &str) -> Result<Caller, String> {
    if text == "unauthenticated" {
        return Ok(Caller::Unauthenticated);
    }
    if text.starts_with("spiffe://") {
        return text
            .parse()
            .map(Caller::Id)
            .map_err(|e: SpiffeIdError| e.to_string());
    }
    match text.split_once('/') {
        Some((ns, sa)) => {
            // Any valid trust domain will do: only the names are checked here.
            SpiffeId::new(super::DEFAULT_TRUST_DOMAIN, ns, sa)
                .map_err(|e| format!("{text:?} is not NAMESPACE/SERVICE-ACCOUNT: {e}"))?;
            Ok(Caller::ServiceAccount(ns.to_string(), sa.to_string()))
        }
        None => Err(format!(
            "{text:?} is not a caller: give a SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>), NAMESPACE/SERVICE-ACCOUNT, or unauthenticated"
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: ServiceKey,
    pub port: Option<u16>,
}

pub fn target(text: &str) -> Result<Target, String> {
    let (service, port) = match text.rsplit_once(':') {
        Some((service, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{port:?} in {text:?} is not a port number"))?;
            (service, Some(port))
        }
        None => (text, None),
    };
    if !service.contains('.') {
        return Err(format!(
            "{service:?}: name the service with its namespace, <name>.<namespace> (e.g. {service}.default)"
        ));
    }
    let service = ServiceKey::parse(service).map_err(|e| e.to_string())?;
    Ok(Target { service, port })
}

pub fn path(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} does not start with /"))
    }
}

/// `NAME=VALUE`, both valid in an HTTP header.
pub fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    http::HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a valid header name"))?;
    http::HeaderValue::try_from(value)
        .map_err(|_| format!("{value:?} is not a valid header value"))?;
    Ok((name.to_string(), value.to_string()))
}

/// `name=value&...`, every byte but the unreserved ones percent-encoded.
pub fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers() {
        assert_eq!(caller("unauthenticated"), Ok(Caller::Unauthenticated));
        assert_eq!(
            caller("shop/frontend"),
            Ok(Caller::ServiceAccount("shop".into(), "frontend".into()))
        );
        assert_eq!(
            caller("shop/frontend").unwrap().spiffe_id("example.org"),
            Ok("spiffe://example.org/ns/shop/sa/frontend".to_string())
        );
        let id = "spiffe://cluster.local/ns/shop/sa/frontend";
        assert_eq!(caller(id).unwrap().spiffe_id("x.y").unwrap(), id);
        for (bad, says) in [
            ("frontend", "is not a caller"),
            ("shop/", "NAMESPACE/SERVICE-ACCOUNT"),
            ("Shop/x", "NAMESPACE/SERVICE-ACCOUNT"),
            ("a/b/c", "NAMESPACE/SERVICE-ACCOUNT"),
            ("spiffe://cluster.local/ns/shop", "is not of the form"),
        ] {
            let err = caller(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn targets() {
        let t = target("ratings.shop:80").unwrap();
        assert_eq!((t.service.as_str(), t.port), ("ratings.shop", Some(80)));
        assert_eq!(target("ratings.shop").unwrap().port, None);
        for (bad, says) in [
            ("ratings", "<name>.<namespace>"),
            ("ratings:80", "<name>.<namespace>"),
            ("ratings.shop:http", "not a port number"),
            ("ratings.shop:0", "not a port number"),
            ("Ratings.shop", "ratings"),
        ] {
            let err = target(bad).unwrap_err();
            assert!(
                err.to_lowercase().contains(&says.to_lowercase()),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn headers_and_paths() {
        assert_eq!(header("x-a=b=c"), Ok(("x-a".into(), "b=c".into())));
        assert!(header("x-a").unwrap_err().contains("NAME=VALUE"));
        assert!(header("x a=b").unwrap_err().contains("header name"));
        assert!(path("x").is_err());
        assert_eq!(path("/x"), Ok("/x".into()));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query(&[
                ("from", "spiffe://a/ns/b".into()),
                ("header", "x:y z".into())
            ]),
            "from=spiffe%3A%2F%2Fa%2Fns%2Fb&header=x%3Ay%20z"
        );
    }
}
