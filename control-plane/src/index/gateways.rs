//! The Gateways the sources know, each with the routes attached to it, as
//! the `GATEWAY_ROUTES` resource gateway proxies follow. A proxy follows at
//! most one Gateway (the one its Hello named).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::view;
use crate::model::{Resource, ResourceBody, ResourceKey, Route, ServiceKey};
use crate::routes::gateway::certificates::GatewayCertificates;

#[derive(Debug, Default)]
pub struct Gateways {
    /// Presence means the Gateway exists (and is this controller's).
    by_key: BTreeMap<ServiceKey, Arc<Resource>>,
    /// The HTTPS certificates of the Gateways that have any.
    certificates: BTreeMap<ServiceKey, Certificates>,
}

/// One Gateway's certificates as its followers get them: the whole set
/// for a proxy of its service account, an empty one for any other.
#[derive(Debug)]
struct Certificates {
    service_account: String,
    full: Arc<Resource>,
}

fn certificates_resource(
    key: &ServiceKey,
    certs: Vec<crate::routes::gateway::certificates::GatewayCertificate>,
) -> Arc<Resource> {
    view::resource(
        ResourceKey::gateway_certificates(key),
        ResourceBody::GatewayCertificates(certs),
    )
}

impl Certificates {
    fn new(key: &ServiceKey, c: GatewayCertificates) -> Self {
        Certificates {
            service_account: c.service_account,
            full: certificates_resource(key, c.certificates),
        }
    }
}

fn routes_resource(key: &ServiceKey, routes: Vec<Route>) -> Arc<Resource> {
    view::resource(
        ResourceKey::gateway_routes(key),
        ResourceBody::Routes {
            parent: key.clone(),
            routes,
        },
    )
}

impl Gateways {
    /// Replaces every Gateway; returns the keys whose resource changed.
    pub fn replace_all(&mut self, next: BTreeMap<ServiceKey, Vec<Route>>) -> BTreeSet<ServiceKey> {
        let next: BTreeMap<ServiceKey, Arc<Resource>> = next
            .into_iter()
            .map(|(k, r)| {
                let res = routes_resource(&k, r);
                (k, res)
            })
            .collect();
        let mut changed: BTreeSet<ServiceKey> = self
            .by_key
            .iter()
            .filter(|(k, r)| next.get(*k).map(|n| &n.version) != Some(&r.version))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            next.iter()
                .filter(|(k, r)| self.by_key.get(*k).map(|n| &n.version) != Some(&r.version))
                .map(|(k, _)| k.clone()),
        );
        self.by_key = next;
        changed
    }

    /// Sets (Some) or removes (None) one Gateway; whether it changed.
    pub fn set(&mut self, key: &ServiceKey, routes: Option<Vec<Route>>) -> bool {
        match routes {
            Some(r) => {
                let res = routes_resource(key, r);
                if self.by_key.get(key).map(|o| &o.version) == Some(&res.version) {
                    return false;
                }
                self.by_key.insert(key.clone(), res);
                true
            }
            None => self.by_key.remove(key).is_some(),
        }
    }

    /// What a proxy following `key` holds: its routes, or `not_found`.
    pub fn resource(&self, key: &ServiceKey) -> Arc<Resource> {
        match self.by_key.get(key) {
            Some(r) => r.clone(),
            None => view::resource(ResourceKey::gateway_routes(key), ResourceBody::NotFound),
        }
    }

    pub fn routes(&self, key: &ServiceKey) -> Option<&[Route]> {
        match &self.by_key.get(key)?.body {
            ResourceBody::Routes { routes, .. } => Some(routes),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Replaces every Gateway's certificates (Gateways without any are
    /// absent); returns the keys whose certificates changed.
    pub fn replace_certificates(
        &mut self,
        next: BTreeMap<ServiceKey, GatewayCertificates>,
    ) -> BTreeSet<ServiceKey> {
        let next: BTreeMap<ServiceKey, Certificates> = next
            .into_iter()
            .map(|(k, c)| {
                let c = Certificates::new(&k, c);
                (k, c)
            })
            .collect();
        let same = |a: Option<&Certificates>, b: Option<&Certificates>| match (a, b) {
            (Some(a), Some(b)) => {
                a.service_account == b.service_account && a.full.version == b.full.version
            }
            (None, None) => true,
            _ => false,
        };
        let changed: BTreeSet<ServiceKey> = self
            .certificates
            .keys()
            .chain(next.keys())
            .filter(|k| !same(self.certificates.get(*k), next.get(*k)))
            .cloned()
            .collect();
        self.certificates = next;
        changed
    }

    /// Sets (Some) or removes (None) one Gateway's certificates; whether
    /// they changed.
    pub fn set_certificates(
        &mut self,
        key: &ServiceKey,
        certs: Option<GatewayCertificates>,
    ) -> bool {
        let next = certs.map(|c| Certificates::new(key, c));
        let changed = match (self.certificates.get(key), &next) {
            (Some(a), Some(b)) => {
                a.service_account != b.service_account || a.full.version != b.full.version
            }
            (None, None) => false,
            _ => true,
        };
        match next {
            Some(c) => {
                self.certificates.insert(key.clone(), c);
            }
            None => {
                self.certificates.remove(key);
            }
        }
        changed
    }

    /// What a proxy of `service_account` following `key` holds: the
    /// certificates when it is the Gateway's service account, else none.
    pub fn certificates_for(&self, key: &ServiceKey, service_account: &str) -> Arc<Resource> {
        match self.certificates.get(key) {
            Some(c) if c.service_account == service_account => c.full.clone(),
            Some(c) => {
                tracing::warn!(
                    gateway = %key,
                    proxy_service_account = service_account,
                    gateway_service_account = %c.service_account,
                    "a gateway proxy follows a Gateway with HTTPS listeners but is not its service account; it gets no certificates (set the Gateway's mycel.io/gateway-service-account annotation)"
                );
                certificates_resource(key, Vec::new())
            }
            None => certificates_resource(key, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::discovery::session::Session;
    use crate::index::Index;
    use crate::model::ResourceKind;
    use crate::routes::model::RouteKind;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::parse(s).unwrap()
    }

    fn route(name: &str, host: &str) -> Route {
        Route {
            name: format!("shop/{name}"),
            kind: RouteKind::Http,
            ports: vec![],
            hostnames: vec![host.to_string()],
            rules: vec![],
            listener: crate::routes::ListenerSide::Any,
        }
    }

    #[test]
    fn a_follower_gets_not_found_then_the_routes_then_deltas() {
        let mut ix = Index::new();
        let conn = ix.allocate_conn();
        let mut rx = ix.connect_proxy(conn, []);
        ix.follow_gateway(conn, key("web.shop"), "gateway");
        let rk = ResourceKey::gateway_routes(&key("web.shop"));
        let mut session = Session::new([]);
        let first = session
            .delta(&rx.borrow_and_update(), || "n1".into())
            .unwrap();
        let gw = first.resources.iter().find(|r| r.key == rk).unwrap();
        assert_eq!(gw.body, ResourceBody::NotFound, "no such Gateway yet");
        assert!(ix.gateway_routes(&key("web.shop")).is_none());
        session.ack("n1");

        // The Gateway appears without routes: an empty list, not not_found.
        ix.apply_gateways(BTreeMap::from([(key("web.shop"), vec![])]));
        let d = session
            .delta(&rx.borrow_and_update(), || "n2".into())
            .unwrap();
        assert_eq!(d.resources.len(), 1, "only the Gateway's routes");
        assert!(matches!(
            &d.resources[0].body,
            ResourceBody::Routes { parent, routes } if parent == &key("web.shop") && routes.is_empty()
        ));
        session.ack("n2");

        // A route attaches; another Gateway's change is not this proxy's.
        ix.apply_gateways(BTreeMap::from([
            (key("web.shop"), vec![route("shop", "shop.example")]),
            (key("other.shop"), vec![route("x", "x.example")]),
        ]));
        let d = session
            .delta(&rx.borrow_and_update(), || "n3".into())
            .unwrap();
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].key.kind, ResourceKind::GatewayRoutes);
        session.ack("n3");
        ix.set_gateway(&key("other.shop"), None);
        assert!(!rx.has_changed().unwrap());
        // The same routes again are no change.
        ix.set_gateway(&key("web.shop"), Some(vec![route("shop", "shop.example")]));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(ix.gateway_routes(&key("web.shop")).unwrap().len(), 1);

        // The Gateway goes away: not_found again (never removed: the
        // proxy still follows it).
        ix.set_gateway(&key("web.shop"), None);
        let d = session
            .delta(&rx.borrow_and_update(), || "n4".into())
            .unwrap();
        assert_eq!(d.resources[0].body, ResourceBody::NotFound);
        assert!(d.removed.is_empty());
        assert!(ix.gateway_routes(&key("web.shop")).is_none());
    }

    #[test]
    fn a_reconnecting_follower_that_holds_the_version_is_sent_nothing_new() {
        let mut ix = Index::new();
        ix.apply_gateways(BTreeMap::from([(
            key("web.shop"),
            vec![route("shop", "shop.example")],
        )]));
        let conn = ix.allocate_conn();
        let mut rx = ix.connect_proxy(conn, []);
        ix.follow_gateway(conn, key("web.shop"), "gateway");
        let view = rx.borrow_and_update().clone();
        let rk = ResourceKey::gateway_routes(&key("web.shop"));
        let held: Vec<(ResourceKey, String)> = view
            .resources
            .values()
            .map(|r| (r.key.clone(), r.version.clone()))
            .collect();
        assert!(held.iter().any(|(k, _)| k == &rk));
        let mut session = Session::new(held);
        let d = session.delta(&view, || "n".into()).unwrap();
        assert!(d.resources.is_empty() && d.removed.is_empty());
    }

    fn certs(account: &str, sources: &[&str]) -> GatewayCertificates {
        use crate::routes::gateway::certificates::{GatewayCertificate, KeyPem};
        GatewayCertificates {
            service_account: account.into(),
            certificates: sources
                .iter()
                .map(|s| GatewayCertificate {
                    source: s.to_string(),
                    chain_pem: format!("chain of {s}").into_bytes(),
                    key_pem: KeyPem(format!("key of {s}").into_bytes()),
                })
                .collect(),
        }
    }

    fn held_certificates(
        rx: &mut tokio::sync::watch::Receiver<Arc<crate::model::ProxyView>>,
    ) -> Vec<String> {
        let view = rx.borrow_and_update().clone();
        let rk = ResourceKey::gateway_certificates(&key("web.shop"));
        match &view.resources[&rk].body {
            ResourceBody::GatewayCertificates(c) => c.iter().map(|c| c.source.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_gateways_service_account_gets_its_keys() {
        let mut ix = Index::new();
        ix.apply_gateways(BTreeMap::from([(key("web.shop"), vec![])]));
        let (ours, theirs) = (ix.allocate_conn(), ix.allocate_conn());
        let mut ours_rx = ix.connect_proxy(ours, []);
        let mut theirs_rx = ix.connect_proxy(theirs, []);
        ix.follow_gateway(ours, key("web.shop"), "web-gateway");
        ix.follow_gateway(theirs, key("web.shop"), "frontend");
        assert!(held_certificates(&mut ours_rx).is_empty(), "none yet");

        ix.apply_gateway_certificates(BTreeMap::from([(
            key("web.shop"),
            certs("web-gateway", &["shop/api"]),
        )]));
        assert_eq!(held_certificates(&mut ours_rx), ["shop/api"]);
        assert!(
            held_certificates(&mut theirs_rx).is_empty(),
            "another account of the namespace follows the routes, never the keys"
        );
        assert!(!theirs_rx.has_changed().unwrap());

        // A rotated key is a new version for the holder only.
        ix.set_gateway_certificates(
            &key("web.shop"),
            Some(certs("web-gateway", &["shop/api", "shop/www"])),
        );
        assert_eq!(held_certificates(&mut ours_rx), ["shop/api", "shop/www"]);
        assert!(!theirs_rx.has_changed().unwrap());
        // The same again is no change; gone is an empty set.
        ix.set_gateway_certificates(
            &key("web.shop"),
            Some(certs("web-gateway", &["shop/api", "shop/www"])),
        );
        assert!(!ours_rx.has_changed().unwrap());
        ix.set_gateway_certificates(&key("web.shop"), None);
        assert!(held_certificates(&mut ours_rx).is_empty());
    }
}
