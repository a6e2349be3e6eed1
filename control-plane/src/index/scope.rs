//! Which namespaces' services a proxy may discover. A proxy always sees
//! its own namespace (its certificate's); beyond it, the mesh setting
//! (`--discovery-namespaces`) is the limit, and a workload may only narrow
//! it with `mycel.io/discovery-namespaces` (a Pod annotation in a cluster,
//! a workload label in local mode). Out-of-scope services are answered as
//! if they did not exist, so a proxy cannot probe for them.

use std::collections::{BTreeMap, BTreeSet};

use mycel_api::names::{self, NameKind};

/// The Pod annotation (in a cluster) or workload label (local mode) that
/// narrows what one workload's proxy discovers.
pub const DISCOVERY_NAMESPACES_KEY: &str = "mycel.io/discovery-namespaces";

/// A set of namespaces, or every namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespaces {
    #[default]
    All,
    Only(BTreeSet<String>),
}

/// A namespace list that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a namespace (lowercase letters, digits and '-', at most 63) or *")]
pub struct BadNamespace(pub String);

impl Namespaces {
    /// Parses comma-separated lists (several may be given, as repeated
    /// flags): `*` anywhere means every namespace, and no names at all
    /// means every namespace too, so leaving the setting out changes
    /// nothing.
    pub fn parse<'a>(lists: impl IntoIterator<Item = &'a str>) -> Result<Self, BadNamespace> {
        let mut all = false;
        let mut set = BTreeSet::new();
        for item in lists.into_iter().flat_map(|l| l.split(',')) {
            let item = item.trim();
            match item {
                "" => {}
                "*" => all = true,
                ns => {
                    names::validate(NameKind::Namespace, ns)
                        .map_err(|_| BadNamespace(ns.to_string()))?;
                    set.insert(ns.to_string());
                }
            }
        }
        Ok(if all || set.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(set)
        })
    }

    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }

    fn intersect(&self, other: &Namespaces) -> Namespaces {
        match (self, other) {
            (Namespaces::All, x) | (x, Namespaces::All) => x.clone(),
            (Namespaces::Only(a), Namespaces::Only(b)) => {
                Namespaces::Only(a.intersection(b).cloned().collect())
            }
        }
    }

    fn with(mut self, ns: &str) -> Namespaces {
        if let Namespaces::Only(set) = &mut self {
            set.insert(ns.to_string());
        }
        self
    }
}

/// Who a connected proxy is, as far as its scope goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOrigin {
    /// Its certificate's namespace: always visible.
    pub namespace: String,
    /// Its workload (the Pod, in a cluster).
    pub name: String,
    /// The value of its own `mycel.io/discovery-namespaces` label, used
    /// while no Pod of that name is known.
    pub requested: Option<String>,
}

impl ProxyOrigin {
    /// The origin of a proxy whose Hello carried these workload labels.
    pub fn new(namespace: &str, name: &str, labels: &BTreeMap<String, String>) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            requested: labels.get(DISCOVERY_NAMESPACES_KEY).cloned(),
        }
    }
}

/// What a proxy may see. `requested` is the workload's own list (the
/// Pod's annotation or the proxy's label), which can only narrow the mesh
/// setting; one that does not parse narrows to the own namespace, since
/// guessing wider would defeat its purpose.
pub fn visible(mesh: &Namespaces, own: &str, requested: Option<&str>) -> Namespaces {
    let narrowed = match requested.map(|r| Namespaces::parse([r])) {
        None => Namespaces::All,
        Some(Ok(n)) => n,
        Some(Err(_)) => Namespaces::Only(BTreeSet::new()),
    };
    mesh.intersect(&narrowed).with(own)
}

/// The per-workload lists a source knows from Pods, by (namespace, name).
/// A Pod that is known but has no annotation is an entry with `None`: the
/// Pod's word (no narrowing) then wins over the proxy's label.
#[derive(Debug, Default)]
pub struct PodScopes {
    by_pod: BTreeMap<(String, String), Option<String>>,
}

impl PodScopes {
    /// Sets (Some: the Pod's annotations) or forgets (None) a Pod; returns
    /// whether its list changed.
    pub fn set(
        &mut self,
        namespace: &str,
        name: &str,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let key = (namespace.to_string(), name.to_string());
        match annotations {
            Some(a) => {
                let value = a.get(DISCOVERY_NAMESPACES_KEY).cloned();
                let changed = self.by_pod.insert(key, value.clone()) != Some(value.clone());
                // Said once per change: the proxy's own namespace is all it
                // sees until the annotation is fixed.
                if let (true, Some(v)) = (changed, &value) {
                    if let Err(e) = Namespaces::parse([v.as_str()]) {
                        tracing::warn!(pod = %format!("{namespace}/{name}"), annotation = DISCOVERY_NAMESPACES_KEY, error = %e, "discovery scope narrowed to the pod's own namespace");
                    }
                }
                changed
            }
            None => self.by_pod.remove(&key).is_some(),
        }
    }

    /// The list that narrows `origin`: its Pod's when the Pod is known,
    /// else its own label.
    pub fn requested<'a>(&'a self, origin: &'a ProxyOrigin) -> Option<&'a str> {
        match self
            .by_pod
            .get(&(origin.namespace.clone(), origin.name.clone()))
        {
            Some(pod) => pod.as_deref(),
            None => origin.requested.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(ns: &[&str]) -> Namespaces {
        Namespaces::Only(ns.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn parse_lists() {
        let cases: &[(&[&str], Namespaces)] = &[
            (&[], Namespaces::All),
            (&[""], Namespaces::All),
            (&["*"], Namespaces::All),
            (&["shop,*"], Namespaces::All),
            (&["shop"], only(&["shop"])),
            (&["shop, billing", "ops"], only(&["billing", "ops", "shop"])),
            (&["shop,,shop"], only(&["shop"])),
        ];
        for (input, want) in cases {
            assert_eq!(
                &Namespaces::parse(input.iter().copied()).unwrap(),
                want,
                "{input:?}"
            );
        }
        for bad in ["Shop", "a/b", "shop,bill ing", &"x".repeat(64)] {
            assert_eq!(
                Namespaces::parse([bad]).unwrap_err().0,
                bad.rsplit(',').next().unwrap().trim(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn visible_sets() {
        let all = Namespaces::All;
        let mesh = only(&["billing", "ops"]);
        let cases: &[(&Namespaces, Option<&str>, Namespaces)] = &[
            (&all, None, Namespaces::All),
            (&all, Some("*"), Namespaces::All),
            (&all, Some(""), Namespaces::All),
            (&all, Some("billing"), only(&["billing", "shop"])),
            (&mesh, None, only(&["billing", "ops", "shop"])),
            // Narrowing only: a workload cannot add a namespace the mesh
            // setting leaves out.
            (&mesh, Some("billing,payments"), only(&["billing", "shop"])),
            (&mesh, Some("payments"), only(&["shop"])),
            // Unparsable: own namespace only.
            (&all, Some("Not A Namespace"), only(&["shop"])),
        ];
        for (mesh, requested, want) in cases {
            assert_eq!(
                &visible(mesh, "shop", *requested),
                want,
                "{mesh:?} {requested:?}"
            );
        }
    }

    #[test]
    fn a_known_pod_wins_over_the_proxy_label() {
        let origin = ProxyOrigin {
            namespace: "shop".into(),
            name: "web-0".into(),
            requested: Some("billing".into()),
        };
        let mut pods = PodScopes::default();
        assert_eq!(pods.requested(&origin), Some("billing"));
        assert!(pods.set("shop", "web-0", Some(&BTreeMap::new())));
        assert_eq!(pods.requested(&origin), None);
        let ann = BTreeMap::from([(DISCOVERY_NAMESPACES_KEY.to_string(), "ops".to_string())]);
        assert!(pods.set("shop", "web-0", Some(&ann)));
        assert!(!pods.set("shop", "web-0", Some(&ann)));
        assert_eq!(pods.requested(&origin), Some("ops"));
        assert!(pods.set("shop", "web-0", None));
        assert_eq!(pods.requested(&origin), Some("billing"));
    }
}
