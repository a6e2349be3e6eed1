//! Names as the whole mesh spells them, with one set of rules.
//!
//! Namespaces and service names are DNS-1123 labels (Kubernetes' own rule
//! for both), so every name a proxy accepts can also be a Service in a
//! cluster. Service accounts are DNS-1123 subdomains; a trust domain is a
//! lowercase DNS name. Service keys travel as `<name>.<namespace>`.
//!
//! Hosts that apps use are resolved to a key by [`service_from_host`]:
//! `svc`, `svc.ns`, `svc.ns.svc`, and `svc.ns.svc.<cluster-domain>` all name
//! the same service, as Kubernetes DNS does.

use std::fmt;
use std::str::FromStr;

/// What a name is used as; each kind has its own length and shape rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Namespace,
    Service,
    ServiceAccount,
    Workload,
    TrustDomain,
    Secret,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Service => "service name",
            Self::ServiceAccount => "service account",
            Self::Workload => "workload name",
            Self::TrustDomain => "trust domain",
            Self::Secret => "secret name",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Self::Namespace | Self::Service => {
                "a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
            }
            Self::ServiceAccount | Self::Workload | Self::TrustDomain | Self::Secret => {
                "a DNS name: dot-separated labels of lowercase letters, digits and '-', at most 253 characters"
            }
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that breaks the rule of its kind. The message names the value and
/// the rule, so a user can fix a flag or a manifest from it alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: it must be {rule}", rule = .kind.rule())]
pub struct NameError {
    pub kind: NameKind,
    pub value: String,
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// Checks `value` against the rule for `kind`.
pub fn validate(kind: NameKind, value: &str) -> Result<(), NameError> {
    let ok = match kind {
        NameKind::Namespace | NameKind::Service => is_label(value),
        NameKind::ServiceAccount
        | NameKind::Workload
        | NameKind::TrustDomain
        | NameKind::Secret => is_subdomain(value),
    };
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: value.to_string(),
        })
    }
}

/// Why a string is not a service key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceKeyError {
    #[error("service key {0:?} is not of the form <name>.<namespace>")]
    Shape(String),
    #[error("service key {key:?}: {source}")]
    Name {
        key: String,
        #[source]
        source: NameError,
    },
}

/// `<name>.<namespace>`, the key of a service everywhere in the mesh. Both
/// parts are valid DNS labels, so a key always splits back unambiguously.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    key: String,
    dot: usize,
}

impl ServiceKey {
    pub fn new(name: &str, namespace: &str) -> Result<Self, NameError> {
        validate(NameKind::Service, name)?;
        validate(NameKind::Namespace, namespace)?;
        Ok(Self {
            key: format!("{name}.{namespace}"),
            dot: name.len(),
        })
    }

    /// Parses `<name>.<namespace>`.
    pub fn parse(key: &str) -> Result<Self, ServiceKeyError> {
        let (name, ns) = key
            .split_once('.')
            .ok_or_else(|| ServiceKeyError::Shape(key.to_string()))?;
        if name.is_empty() || ns.is_empty() || ns.contains('.') {
            return Err(ServiceKeyError::Shape(key.to_string()));
        }
        Self::new(name, ns).map_err(|source| ServiceKeyError::Name {
            key: key.to_string(),
            source,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn into_string(self) -> String {
        self.key
    }

    pub fn name(&self) -> &str {
        &self.key[..self.dot]
    }

    pub fn namespace(&self) -> &str {
        &self.key[self.dot + 1..]
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl FromStr for ServiceKey {
    type Err = ServiceKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ServiceKey {
    fn as_ref(&self) -> &str {
        &self.key
    }
}

impl serde::Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key)
    }
}

impl<'de> serde::Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Joins parts that were already validated into `<name>.<namespace>`.
pub fn service_key(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

/// Maps a host (without port) an app used to a service key, using the
/// caller's own namespace for a bare name. Returns `None` for hosts that
/// cannot name a mesh service (IP literals, other domains, names that break
/// the label rule), so an app's typo never reaches the control plane.
pub fn service_from_host(
    host: &str,
    own_namespace: &str,
    cluster_domain: &str,
) -> Option<ServiceKey> {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    // Every request through the outbound proxy comes here: apps write their
    // hosts in lower case, so that case costs no copy.
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    };
    let mut labels = host.splitn(4, '.');
    let name = labels.next()?;
    let (name, ns) = match (labels.next(), labels.next(), labels.next()) {
        (None, _, _) => (name, own_namespace),
        (Some(ns), None, _) | (Some(ns), Some("svc"), None) => (name, ns),
        // Labels past `svc` are the cluster domain, whole, or no service.
        (Some(ns), Some("svc"), Some(domain))
            if !cluster_domain.is_empty() && domain == cluster_domain =>
        {
            (name, ns)
        }
        _ => return None,
    };
    ServiceKey::new(name, ns).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let cases = [
            ("catalog", Some("catalog.shop")),
            ("catalog.shop", Some("catalog.shop")),
            ("catalog.other", Some("catalog.other")),
            ("catalog.shop.svc", Some("catalog.shop")),
            ("catalog.shop.svc.cluster.local", Some("catalog.shop")),
            ("Catalog.Shop.svc.cluster.local.", Some("catalog.shop")),
            ("catalog.shop.svc.other.domain", None),
            ("example.com.evil", None),
            ("127.0.0.1", None),
            ("", None),
            // The attack of a bad Host header: never a key, so never a subscription.
            (".shop", None),
            ("-x.shop", None),
            ("a_b.shop", None),
            ("x.sh%op", None),
            ("catalog.shop.svc.cluster.local.evil", None),
            ("catalog.shop.svc.cluster", None),
            ("catalog.shop.svc..cluster.local", None),
            ("catalog.shop.other", None),
            ("CATALOG", Some("catalog.shop")),
        ];
        for (host, want) in cases {
            assert_eq!(
                service_from_host(host, "shop", "cluster.local")
                    .as_ref()
                    .map(ServiceKey::as_str),
                want,
                "{host}"
            );
        }
    }

    #[test]
    fn without_a_cluster_domain_only_the_short_forms_name_a_service() {
        let key = |host| service_from_host(host, "shop", "").map(ServiceKey::into_string);
        assert_eq!(key("catalog").as_deref(), Some("catalog.shop"));
        assert_eq!(key("catalog.other.svc").as_deref(), Some("catalog.other"));
        assert_eq!(key("catalog.other.svc.cluster.local"), None);
        assert_eq!(key("catalog.other.svc."), Some("catalog.other".into()));
    }

    #[test]
    fn keys_round_trip() {
        let k = ServiceKey::parse("catalog.shop").unwrap();
        assert_eq!((k.name(), k.namespace()), ("catalog", "shop"));
        assert_eq!(k.to_string(), "catalog.shop");
        for bad in ["a", "a.b.c", ".b", "a.", "A.b", "a.-b", "a b.c", ""] {
            assert!(ServiceKey::parse(bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(64);
        assert!(ServiceKey::new(&long, "ns").is_err());
        assert!(ServiceKey::new(&"a".repeat(63), "ns").is_ok());
    }

    #[test]
    fn name_rules_per_kind() {
        let cases = [
            (NameKind::Namespace, "shop", true),
            (NameKind::Namespace, "a.b", false),
            (NameKind::Namespace, "-a", false),
            (NameKind::Namespace, "a-", false),
            (NameKind::Namespace, "Shop", false),
            (NameKind::ServiceAccount, "a.b", true),
            (NameKind::ServiceAccount, "a..b", false),
            (NameKind::ServiceAccount, "a.-b", false),
            (NameKind::TrustDomain, "cluster.local", true),
            (NameKind::TrustDomain, "", false),
            (NameKind::Workload, "reviews-v2", true),
        ];
        for (kind, value, ok) in cases {
            assert_eq!(validate(kind, value).is_ok(), ok, "{kind} {value:?}");
        }
        let err = validate(NameKind::Namespace, "a.b")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("namespace \"a.b\"") && err.contains("DNS label"),
            "{err}"
        );
    }
}
