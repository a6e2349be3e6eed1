//! Workloads registered by their proxies, keyed by the discovery stream
//! that registered them, so a stale stream can never remove a newer
//! registration of the same proxy.

use std::collections::BTreeMap;

use super::ConnId;
use crate::model::{Endpoint, Service, Workload};

#[derive(Debug, Default)]
pub struct Workloads {
    by_conn: BTreeMap<ConnId, Workload>,
}

impl Workloads {
    /// Registers or replaces the workload of a stream; returns whether
    /// anything changed.
    pub fn register(&mut self, conn: ConnId, workload: Workload) -> bool {
        if self.by_conn.get(&conn) == Some(&workload) {
            return false;
        }
        self.by_conn.insert(conn, workload);
        true
    }

    pub fn unregister(&mut self, conn: ConnId) -> bool {
        self.by_conn.remove(&conn).is_some()
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
        self.by_conn.values().filter(|w| service.selects(w))
    }

    /// The ready workloads a service selects, in a stable order so the
    /// content hash does not depend on registration order.
    pub fn endpoints_of(&self, service: &Service) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = self
            .by_conn
            .values()
            .filter(|w| w.ready && service.selects(w))
            .map(Endpoint::of)
            .collect();
        eps.sort();
        eps.dedup();
        eps
    }
}
