//! Each sidecar's `INBOUND_POLICY`: the authorization policies selecting
//! its workload, chosen by the workload's labels (in a cluster, its Pod's),
//! kept current as policies and labels change.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{view, ConnId, Index};
use crate::authz::Authorization;
use crate::model::{ResourceBody, ResourceKey, Service};

/// The workload a sidecar guards, as its Hello names it (the namespace is
/// its certificate's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyWorkload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A workload behind a service, with the labels that choose its
/// authorization policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

impl Index {
    /// Gives a connected sidecar its workload's inbound policy, now and on
    /// every policy change.
    pub fn set_proxy_workload(&mut self, conn: ConnId, workload: ProxyWorkload) {
        let Some(proxy) = self.proxies.get_mut(&conn) else {
            return;
        };
        proxy.workload = Some(workload);
        self.update_inbound_views(Some(conn));
    }

    /// Sets (Some) or forgets (None) the labels of a Kubernetes Pod; the
    /// sidecars of that Pod get the policies those labels select.
    pub fn set_pod_labels(
        &mut self,
        namespace: &str,
        name: &str,
        labels: Option<BTreeMap<String, String>>,
    ) {
        let key = (namespace.to_string(), name.to_string());
        let changed = match labels {
            Some(l) => self.pod_labels.insert(key.clone(), l.clone()) != Some(l),
            None => self.pod_labels.remove(&key).is_some(),
        };
        if !changed {
            return;
        }
        let conns = self.proxies_of_pod(namespace, name);
        for conn in conns {
            self.update_inbound_views(Some(conn));
        }
    }

    /// Replaces every authorization policy and the default; every sidecar
    /// whose policy changed is re-published.
    pub fn set_authorization(&mut self, authz: Authorization) {
        if authz != self.authz {
            self.authz = authz;
            self.update_inbound_views(None);
        }
    }

    /// Adds, replaces (Some) or removes (None) one policy, named
    /// `<namespace>/<name>` (a watch event).
    pub fn set_authz_policy(&mut self, name: &str, policy: Option<crate::authz::SelectedPolicy>) {
        let mut next = self.authz.clone();
        next.policies.retain(|p| p.policy.name != name);
        if let Some(p) = policy {
            next.policies.push(p);
            next.policies
                .sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
        }
        self.set_authorization(next);
    }

    /// Adds, replaces (Some) or removes (None) one `PeerAuthentication`,
    /// named `<namespace>/<name>` (a watch event).
    pub fn set_peer_auth_policy(
        &mut self,
        name: &str,
        policy: Option<crate::authz::peer::PeerAuthPolicy>,
    ) {
        let mut next = self.authz.clone();
        next.peer.retain(|p| p.name != name);
        if let Some(p) = policy {
            next.peer.push(p);
            next.peer.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.set_authorization(next);
    }

    /// The workloads behind `service` as authorization sees them: the
    /// registered ones (local mode) and the Pods whose labels it selects
    /// (a cluster), one per name, with the labels that choose their
    /// policies.
    pub fn workloads_behind(&self, service: &Service) -> Vec<WorkloadLabels> {
        let mut out: BTreeMap<String, WorkloadLabels> = BTreeMap::new();
        for w in self.workloads.selected_by(service) {
            out.entry(w.name.clone()).or_insert_with(|| WorkloadLabels {
                name: w.name.clone(),
                namespace: w.identity.namespace().to_string(),
                labels: w.labels.clone(),
                ready: w.ready,
            });
        }
        for ((ns, name), labels) in &self.pod_labels {
            if service.selects_labels(ns, labels) {
                // The Pod's labels win, as they do for its sidecar.
                out.insert(
                    name.clone(),
                    WorkloadLabels {
                        name: name.clone(),
                        namespace: ns.clone(),
                        labels: labels.clone(),
                        ready: true,
                    },
                );
            }
        }
        out.into_values().collect()
    }

    pub fn authorization(&self) -> &Authorization {
        &self.authz
    }

    /// Puts the current inbound policy in the view of one proxy (or all).
    fn update_inbound_views(&mut self, only: Option<ConnId>) {
        for (conn, proxy) in &self.proxies {
            if only.is_some_and(|c| c != *conn) {
                continue;
            }
            let Some(w) = &proxy.workload else {
                continue;
            };
            let labels = self
                .pod_labels
                .get(&(w.namespace.clone(), w.name.clone()))
                .unwrap_or(&w.labels);
            let next = view::resource(
                ResourceKey::inbound_policy(),
                ResourceBody::InboundPolicy(Box::new(
                    self.authz.for_workload(&w.namespace, labels),
                )),
            );
            proxy.tx.send_if_modified(|cur| {
                if cur.resources.get(&next.key).map(|r| &r.version) == Some(&next.version) {
                    return false;
                }
                Arc::make_mut(cur)
                    .resources
                    .insert(next.key.clone(), next.clone());
                true
            });
        }
    }
}
