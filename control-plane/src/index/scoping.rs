//! The index's side of discovery scope: who each proxy is, what it may
//! see, and re-publishing a proxy whose scope changed (the mesh setting,
//! its Pod's annotation).

use std::collections::{BTreeMap, BTreeSet};

use super::scope::{self, Namespaces, ProxyOrigin};
use super::{ConnId, Index};

impl Index {
    /// Sets the namespaces every proxy may discover besides its own;
    /// every proxy whose scope changed is re-published.
    pub fn set_discovery_namespaces(&mut self, namespaces: Namespaces) {
        if namespaces != self.discovery {
            self.discovery = namespaces;
            let all: Vec<ConnId> = self.proxies.keys().copied().collect();
            self.rescope(all);
        }
    }

    pub fn discovery_namespaces(&self) -> &Namespaces {
        &self.discovery
    }

    /// Says who a connected proxy is; its view is narrowed to its scope.
    pub fn set_proxy_origin(&mut self, conn: ConnId, origin: ProxyOrigin) {
        let Some(proxy) = self.proxies.get_mut(&conn) else {
            return;
        };
        proxy.origin = Some(origin);
        self.rescope(vec![conn]);
    }

    /// Sets (Some) or forgets (None) the annotations of a Kubernetes Pod;
    /// its proxies' scope follows `mycel.io/discovery-namespaces`.
    pub fn set_pod_annotations(
        &mut self,
        namespace: &str,
        name: &str,
        annotations: Option<&BTreeMap<String, String>>,
    ) {
        if self.pod_scopes.set(namespace, name, annotations) {
            let conns = self.proxies_of_pod(namespace, name);
            self.rescope(conns);
        }
    }

    /// The namespaces a connected proxy may discover.
    pub fn visible(&self, conn: ConnId) -> Option<&Namespaces> {
        self.proxies.get(&conn).map(|p| &p.visible)
    }

    /// Scoped VIP tables held; one per distinct scope in use.
    #[cfg(test)]
    pub(super) fn scoped_vip_tables(&self) -> usize {
        self.vips.scoped_count()
    }

    /// The proxies that name this Pod as their workload.
    pub(super) fn proxies_of_pod(&self, namespace: &str, name: &str) -> Vec<ConnId> {
        self.proxies
            .iter()
            .filter(|(_, p)| {
                let is = |ns: &str, n: &str| ns == namespace && n == name;
                p.workload
                    .as_ref()
                    .is_some_and(|w| is(&w.namespace, &w.name))
                    || p.origin.as_ref().is_some_and(|o| is(&o.namespace, &o.name))
            })
            .map(|(c, _)| *c)
            .collect()
    }

    /// What a proxy may see. One that has not said who it is sees nothing
    /// while the mesh limits discovery at all, since its own namespace is
    /// not known yet.
    pub(super) fn visible_for(&self, origin: Option<&ProxyOrigin>) -> Namespaces {
        match origin {
            Some(o) => scope::visible(&self.discovery, &o.namespace, self.pod_scopes.requested(o)),
            None if self.discovery == Namespaces::All => Namespaces::All,
            None => Namespaces::Only(BTreeSet::new()),
        }
    }

    /// Recomputes the scope of `conns`; those whose scope changed get the
    /// VIP table of the new one and every subscription re-read through it.
    fn rescope(&mut self, conns: Vec<ConnId>) {
        for conn in conns {
            let Some(proxy) = self.proxies.get(&conn) else {
                continue;
            };
            let next = self.visible_for(proxy.origin.as_ref());
            if next == proxy.visible {
                continue;
            }
            self.vips.acquire(&self.services, &next);
            let Some(proxy) = self.proxies.get_mut(&conn) else {
                continue;
            };
            let prev = std::mem::replace(&mut proxy.visible, next);
            let subscriptions = proxy.subscriptions.clone();
            self.vips.release(&prev);
            self.update_view(conn, &subscriptions);
            self.publish_vips(Some(conn));
        }
    }
}
