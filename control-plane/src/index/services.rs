//! The set of services the mesh config declares.

use std::collections::BTreeMap;

use crate::model::{Service, ServiceKey};

/// A service key that appears twice in one replacement set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("service {0} is declared more than once")]
pub struct DuplicateService(pub ServiceKey);

#[derive(Debug, Default)]
pub struct Services {
    by_key: BTreeMap<ServiceKey, Service>,
}

impl Services {
    /// Replaces every service at once, because mesh.yaml is applied whole.
    /// On a duplicate nothing changes.
    pub fn replace_all(&mut self, services: Vec<Service>) -> Result<bool, DuplicateService> {
        let mut next = BTreeMap::new();
        for svc in services {
            let key = svc.key();
            if next.contains_key(&key) {
                return Err(DuplicateService(key));
            }
            next.insert(key, svc);
        }
        let changed = next != self.by_key;
        self.by_key = next;
        Ok(changed)
    }

    /// Adds or replaces one service; returns whether anything changed.
    pub fn apply(&mut self, svc: Service) -> bool {
        let key = svc.key();
        if self.by_key.get(&key) == Some(&svc) {
            return false;
        }
        self.by_key.insert(key, svc);
        true
    }

    pub fn delete(&mut self, key: &ServiceKey) -> bool {
        self.by_key.remove(key).is_some()
    }

    pub fn get(&self, key: &ServiceKey) -> Option<&Service> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Service)> {
        self.by_key.iter()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}
