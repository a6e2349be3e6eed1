//! Workloads registered by their proxies, keyed by the discovery stream
//! that registered them, so a stale stream can never remove a newer
//! registration of the same proxy.

use std::collections::BTreeMap;

use super::labels::LabelIndex;
use super::ConnId;
use crate::model::{Endpoint, Service, Workload};

#[derive(Debug, Default)]
pub struct Workloads {
    by_conn: BTreeMap<ConnId, Workload>,
    /// The streams by their workload's labels: a service finds its
    /// endpoints without looking at every workload.
    by_label: LabelIndex<ConnId>,
}

impl Workloads {
    /// Registers or replaces the workload of a stream; returns whether
    /// anything changed.
    pub fn register(&mut self, conn: ConnId, workload: Workload) -> bool {
        if self.by_conn.get(&conn) == Some(&workload) {
            return false;
        }
        self.by_label
            .insert(workload.identity.namespace(), &workload.labels, &conn);
        if let Some(old) = self.by_conn.insert(conn, workload) {
            self.unfile(conn, &old);
        }
        true
    }

    /// Removes the postings of `old` that the stream's current workload
    /// (if any) no longer has.
    fn unfile(&mut self, conn: ConnId, old: &Workload) {
        let namespace = old.identity.namespace();
        let kept = self
            .by_conn
            .get(&conn)
            .filter(|w| w.identity.namespace() == namespace);
        let gone: BTreeMap<String, String> = old
            .labels
            .iter()
            .filter(|(k, v)| kept.is_none_or(|w| w.labels.get(*k) != Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.by_label.remove(namespace, &gone, &conn);
    }

    pub fn unregister(&mut self, conn: ConnId) -> bool {
        match self.by_conn.remove(&conn) {
            Some(old) => {
                self.unfile(conn, &old);
                true
            }
            None => false,
        }
    }

    /// Returns whether the readiness changed.
    pub fn set_ready(&mut self, conn: ConnId, ready: bool) -> bool {
        match self.by_conn.get_mut(&conn) {
            Some(w) if w.ready != ready => {
                w.ready = ready;
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, conn: ConnId) -> Option<&Workload> {
        self.by_conn.get(&conn)
    }

    /// Every registered workload `service` selects, ready or not.
    pub fn selected_by<'a>(&'a self, service: &'a Service) -> impl Iterator<Item = &'a Workload> {
        self.by_label
            .narrowest(&service.namespace, &service.selector)
            .filter_map(|conn| self.by_conn.get(conn))
            .filter(|w| service.selects(w))
    }

    /// The ready workloads a service selects, in a stable order so the
    /// content hash does not depend on registration order.
    pub fn endpoints_of(&self, service: &Service) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = self
            .selected_by(service)
            .filter(|w| w.ready)
            .map(Endpoint::of)
            .collect();
        eps.sort();
        eps.dedup();
        eps
    }

    #[cfg(test)]
    pub fn by_label_is_empty(&self) -> bool {
        self.by_label.is_empty()
    }
}
