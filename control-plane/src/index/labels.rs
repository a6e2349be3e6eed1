//! Postings by label: which items carry (or select) `key=value` in a
//! namespace. Selection by labels is an all-of match, so any one pair of a
//! selector narrows the search to a small set that is then checked whole;
//! this keeps a workload change from scanning every service and a service
//! from scanning every workload (10,000 registering proxies × 1,000
//! services made each registration cost a full scan of both).

use std::collections::{BTreeMap, BTreeSet, HashMap};

type Values<T> = HashMap<String, BTreeSet<T>>;

#[derive(Debug)]
pub struct LabelIndex<T> {
    /// namespace → label key → label value → items.
    by_namespace: HashMap<String, HashMap<String, Values<T>>>,
}

impl<T> Default for LabelIndex<T> {
    fn default() -> Self {
        LabelIndex {
            by_namespace: HashMap::new(),
        }
    }
}

impl<T: Ord + Clone> LabelIndex<T> {
    /// Files `item` under each of `labels` in `namespace`.
    pub fn insert(&mut self, namespace: &str, labels: &BTreeMap<String, String>, item: &T) {
        if labels.is_empty() {
            return;
        }
        let keys = self.by_namespace.entry(namespace.to_string()).or_default();
        for (k, v) in labels {
            keys.entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(item.clone());
        }
    }

    /// Undoes [`Self::insert`] with the same labels; empty postings go, so
    /// churn of short-lived label values does not accumulate.
    pub fn remove(&mut self, namespace: &str, labels: &BTreeMap<String, String>, item: &T) {
        let Some(keys) = self.by_namespace.get_mut(namespace) else {
            return;
        };
        for (k, v) in labels {
            let Some(values) = keys.get_mut(k.as_str()) else {
                continue;
            };
            if let Some(items) = values.get_mut(v.as_str()) {
                items.remove(item);
                if items.is_empty() {
                    values.remove(v.as_str());
                }
            }
            if values.is_empty() {
                keys.remove(k.as_str());
            }
        }
        if keys.is_empty() {
            self.by_namespace.remove(namespace);
        }
    }

    fn posting(&self, namespace: &str, key: &str, value: &str) -> Option<&BTreeSet<T>> {
        self.by_namespace.get(namespace)?.get(key)?.get(value)
    }

    /// Items filed under every pair of `selector` may match it: the
    /// smallest posting among its pairs, a superset of the matches (empty
    /// when a pair has no posting or the selector is empty).
    pub fn narrowest<'a>(
        &'a self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let mut best: Option<&BTreeSet<T>> = None;
        let mut missing = selector.is_empty();
        for (k, v) in selector {
            match self.posting(namespace, k, v) {
                None => {
                    missing = true;
                    break;
                }
                Some(items) if best.is_none_or(|b| items.len() < b.len()) => best = Some(items),
                Some(_) => {}
            }
        }
        best.filter(|_| !missing).into_iter().flatten()
    }

    /// Items filed under any of `labels`: every item whose selector could
    /// be satisfied by them, each once.
    pub fn any_of(&self, namespace: &str, labels: &BTreeMap<String, String>) -> BTreeSet<T> {
        labels
            .iter()
            .filter_map(|(k, v)| self.posting(namespace, k, v))
            .flatten()
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn narrowest_is_the_smallest_posting_and_empty_when_a_pair_is_unknown() {
        let mut idx = LabelIndex::default();
        for i in 0..10u32 {
            let version = if i == 3 { "v2" } else { "v1" };
            idx.insert("shop", &labels(&[("app", "web"), ("version", version)]), &i);
        }
        idx.insert("other", &labels(&[("app", "web"), ("version", "v2")]), &99);
        let got: Vec<u32> = idx
            .narrowest("shop", &labels(&[("app", "web"), ("version", "v2")]))
            .copied()
            .collect();
        assert_eq!(got, [3]);
        assert_eq!(
            idx.narrowest("shop", &labels(&[("app", "web")])).count(),
            10
        );
        assert_eq!(
            idx.narrowest("shop", &labels(&[("app", "web"), ("tier", "x")]))
                .count(),
            0
        );
        assert_eq!(idx.narrowest("shop", &BTreeMap::new()).count(), 0);
        assert_eq!(
            idx.narrowest("nowhere", &labels(&[("app", "web")])).count(),
            0
        );
    }

    #[test]
    fn any_of_unions_the_postings_once() {
        let mut idx = LabelIndex::default();
        idx.insert("shop", &labels(&[("app", "web")]), &"web");
        idx.insert(
            "shop",
            &labels(&[("app", "web"), ("version", "v2")]),
            &"web-v2",
        );
        idx.insert("shop", &labels(&[("tier", "front")]), &"front");
        let got = idx.any_of("shop", &labels(&[("app", "web"), ("version", "v2")]));
        assert_eq!(got, BTreeSet::from(["web", "web-v2"]));
        assert!(idx.any_of("other", &labels(&[("app", "web")])).is_empty());
    }

    #[test]
    fn remove_undoes_insert_and_leaves_nothing_behind() {
        let mut idx = LabelIndex::default();
        let l = labels(&[("app", "web"), ("pod-template-hash", "abc")]);
        idx.insert("shop", &l, &1u32);
        idx.insert("shop", &labels(&[("app", "web")]), &2u32);
        idx.remove("shop", &l, &1u32);
        assert_eq!(
            idx.narrowest("shop", &labels(&[("app", "web")]))
                .copied()
                .collect::<Vec<_>>(),
            [2]
        );
        idx.remove("shop", &labels(&[("app", "web")]), &2u32);
        assert!(idx.is_empty());
    }
}
