//! Service names as they travel on the wire: `<name>.<namespace>`.
//!
//! Hosts that apps use are resolved to this form by [`service_from_host`]:
//! `svc`, `svc.ns`, `svc.ns.svc`, and `svc.ns.svc.<cluster-domain>` all name
//! the same service, as Kubernetes DNS does.

/// The canonical key of a service: `<name>.<namespace>`.
pub fn service_key(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

/// Splits `<name>.<namespace>` back into its parts.
pub fn split_service_key(key: &str) -> Option<(&str, &str)> {
    let (name, ns) = key.split_once('.')?;
    if name.is_empty() || ns.is_empty() || ns.contains('.') {
        return None;
    }
    Some((name, ns))
}

/// Maps a host (without port) an app used to a service key, using the
/// caller's own namespace for a bare name. Returns `None` for hosts that
/// cannot name a mesh service (IP literals, other domains).
pub fn service_from_host(host: &str, own_namespace: &str, cluster_domain: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let suffix: Vec<&str> = if cluster_domain.is_empty() {
        Vec::new()
    } else {
        cluster_domain.split('.').collect()
    };
    match labels.as_slice() {
        [name] => Some(service_key(name, own_namespace)),
        [name, ns] => Some(service_key(name, ns)),
        [name, ns, "svc"] => Some(service_key(name, ns)),
        [name, ns, "svc", rest @ ..] if rest == suffix.as_slice() => Some(service_key(name, ns)),
        _ => None,
    }
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
        ];
        for (host, want) in cases {
            assert_eq!(
                service_from_host(host, "shop", "cluster.local").as_deref(),
                want,
                "{host}"
            );
        }
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(split_service_key("a.b"), Some(("a", "b")));
        assert_eq!(split_service_key("a"), None);
        assert_eq!(split_service_key("a.b.c"), None);
    }
}
