//! The set of services the mesh config declares.

use std::collections::{BTreeMap, BTreeSet};

use super::labels::LabelIndex;
use crate::model::{Service, ServiceKey};

/// A service key that appears twice in one replacement set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("service {0} is declared more than once")]
pub struct DuplicateService(pub ServiceKey);

#[derive(Debug, Default)]
pub struct Services {
    by_key: BTreeMap<ServiceKey, Service>,
    /// Services by the pairs of their selectors: a workload finds the
    /// services that may select it without looking at every service.
    by_selector: LabelIndex<ServiceKey>,
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
        if changed {
            self.by_selector = LabelIndex::default();
            for (key, svc) in &next {
                self.by_selector.insert(&svc.namespace, &svc.selector, key);
            }
        }
        self.by_key = next;
        Ok(changed)
    }

    /// Adds or replaces one service; returns whether anything changed.
    pub fn apply(&mut self, svc: Service) -> bool {
        let key = svc.key();
        if self.by_key.get(&key) == Some(&svc) {
            return false;
        }
        self.by_selector.insert(&svc.namespace, &svc.selector, &key);
        if let Some(old) = self.by_key.insert(key.clone(), svc) {
            self.unfile(&key, &old);
        }
        true
    }

    /// Removes the postings of `old`'s selector that the service's current
    /// selector (if any) no longer has.
    fn unfile(&mut self, key: &ServiceKey, old: &Service) {
        let kept = self
            .by_key
            .get(key)
            .filter(|s| s.namespace == old.namespace);
        let gone: BTreeMap<String, String> = old
            .selector
            .iter()
            .filter(|(k, v)| kept.is_none_or(|s| s.selector.get(*k) != Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.by_selector.remove(&old.namespace, &gone, key);
    }

    pub fn delete(&mut self, key: &ServiceKey) -> bool {
        match self.by_key.remove(key) {
            Some(old) => {
                self.unfile(key, &old);
                true
            }
            None => false,
        }
    }

    /// The services that select a workload of `namespace` with `labels`.
    pub fn selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> BTreeSet<ServiceKey> {
        self.by_selector
            .any_of(namespace, labels)
            .into_iter()
            .filter(|key| {
                self.by_key
                    .get(key)
                    .is_some_and(|svc| svc.selects_labels(namespace, labels))
            })
            .collect()
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
