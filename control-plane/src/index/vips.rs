//! The VIP tables proxies receive: the whole mesh's for a proxy that may
//! see every namespace, and one per distinct scope otherwise, since a VIP
//! table names services and naming them is what scoping withholds. Scoped
//! tables are shared by every proxy with the same scope and counted, so a
//! proxy that reconnects with ever new scopes cannot grow them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::scope::Namespaces;
use super::services::Services;
use super::view;
use crate::model::{Resource, ServiceKey};

pub struct VipTables {
    /// Every VIP claim, duplicates included: a scope that leaves out the
    /// first claimant of a VIP gets the next one, so the whole set of
    /// claims (not just the mesh-wide table) decides whether a scoped table
    /// can have changed.
    claims: BTreeSet<(IpAddr, ServiceKey)>,
    all: Arc<Resource>,
    /// Table and number of proxies holding it, per scope.
    scoped: BTreeMap<Namespaces, (Arc<Resource>, usize)>,
}

impl Default for VipTables {
    fn default() -> Self {
        Self {
            claims: BTreeSet::new(),
            all: view::service_vips(std::iter::empty()),
            scoped: BTreeMap::new(),
        }
    }
}

fn table(services: &Services, scope: &Namespaces) -> Arc<Resource> {
    view::service_vips(
        services
            .iter()
            .filter(|(k, _)| scope.contains(k.namespace()))
            .map(|(_, svc)| svc),
    )
}

impl VipTables {
    /// Recomputes every table from `services`; returns whether any VIP
    /// claim changed (else no table did).
    pub fn update(&mut self, services: &Services) -> bool {
        let claims: BTreeSet<(IpAddr, ServiceKey)> = services
            .iter()
            .flat_map(|(k, svc)| svc.vips.iter().map(move |ip| (*ip, k.clone())))
            .collect();
        if claims == self.claims {
            return false;
        }
        self.claims = claims;
        self.all = table(services, &Namespaces::All);
        for (scope, (t, _)) in self.scoped.iter_mut() {
            *t = table(services, scope);
        }
        true
    }

    /// Takes the table of `scope` for one more proxy.
    pub fn acquire(&mut self, services: &Services, scope: &Namespaces) -> Arc<Resource> {
        if *scope == Namespaces::All {
            return self.all.clone();
        }
        let entry = self
            .scoped
            .entry(scope.clone())
            .or_insert_with(|| (table(services, scope), 0));
        entry.1 += 1;
        entry.0.clone()
    }

    /// One proxy no longer holds the table of `scope`.
    pub fn release(&mut self, scope: &Namespaces) {
        if let Some((_, users)) = self.scoped.get_mut(scope) {
            *users = users.saturating_sub(1);
            if *users == 0 {
                self.scoped.remove(scope);
            }
        }
    }

    /// The table of a scope some proxy holds; the empty table otherwise,
    /// so a bookkeeping slip hides names rather than showing them.
    pub fn get(&self, scope: &Namespaces) -> Arc<Resource> {
        match scope {
            Namespaces::All => self.all.clone(),
            _ => self
                .scoped
                .get(scope)
                .map(|(t, _)| t.clone())
                .unwrap_or_else(|| view::service_vips(std::iter::empty())),
        }
    }

    #[cfg(test)]
    pub fn scoped_count(&self) -> usize {
        self.scoped.len()
    }
}
