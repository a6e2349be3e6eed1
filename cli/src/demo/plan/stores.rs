//! The shop's data stores and broker as workloads of their own: each runs
//! beside a sidecar like any service (`mycel-demo store <kind>`), is a
//! Service with `appProtocol: tcp`, and is reached only through the mesh:
//! its owner's sidecar opens a local TCP port (`--tcp-upstream`) that
//! tunnels over mTLS to the store's sidecar, and an AuthorizationPolicy
//! lets only the owner's identity in.

use std::collections::BTreeSet;

/// What kind of server a store runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreKind {
    Postgres,
    Redis,
    Nats,
}

impl StoreKind {
    pub const ALL: [StoreKind; 3] = [StoreKind::Postgres, StoreKind::Redis, StoreKind::Nats];

    /// The `mycel-demo store <kind>` name.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
            StoreKind::Nats => "nats",
        }
    }

    /// The Service port, the server's usual one (as in the cluster).
    pub fn port(self) -> u16 {
        match self {
            StoreKind::Postgres => 5432,
            StoreKind::Redis => 6379,
            StoreKind::Nats => 4222,
        }
    }

    /// The `mycel-demo` flag that gives a service its address.
    pub fn app_flag(self) -> &'static str {
        match self {
            StoreKind::Postgres => "--postgres",
            StoreKind::Redis => "--redis",
            StoreKind::Nats => "--nats",
        }
    }
}

/// Which store kinds can run on this machine (their servers are installed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stores {
    pub available: BTreeSet<StoreKind>,
}

impl Stores {
    /// Every kind: the plan of a machine with all servers installed.
    #[cfg(test)]
    pub fn all() -> Stores {
        Stores {
            available: StoreKind::ALL.into_iter().collect(),
        }
    }

    /// None: every service keeps its data in memory.
    pub fn none() -> Stores {
        Stores::default()
    }

    pub fn has(&self, kind: StoreKind) -> bool {
        self.available.contains(&kind)
    }
}

/// One store workload: its name (also its Service and service account),
/// its kind, and the shop services that use it (the only identities its
/// AuthorizationPolicy admits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: &'static str,
    pub kind: StoreKind,
    pub users: &'static [&'static str],
}

/// Every store of the shop: a database per service, and the broker that
/// carries `OrderPlaced` from orders to catalog and notifications.
pub const STORES: [StoreSpec; 5] = [
    StoreSpec {
        name: "catalog-postgres",
        kind: StoreKind::Postgres,
        users: &["catalog"],
    },
    StoreSpec {
        name: "orders-postgres",
        kind: StoreKind::Postgres,
        users: &["orders"],
    },
    StoreSpec {
        name: "ratings-redis",
        kind: StoreKind::Redis,
        users: &["ratings"],
    },
    StoreSpec {
        name: "notifications-redis",
        kind: StoreKind::Redis,
        users: &["notifications"],
    },
    StoreSpec {
        name: "nats",
        kind: StoreKind::Nats,
        users: &["catalog", "orders", "notifications"],
    },
];

pub fn spec(name: &str) -> Option<&'static StoreSpec> {
    STORES.iter().find(|s| s.name == name)
}

/// The stores `service` uses, in a fixed order.
pub fn used_by(service: &str) -> impl Iterator<Item = &'static StoreSpec> + '_ {
    STORES.iter().filter(move |s| s.users.contains(&service))
}

/// Whether `service` can use `store` when the stores `running` run:
/// orders publishes its events from its outbox table, so it uses the
/// broker only with its database (`mycel-demo orders --nats` alone is
/// refused).
pub fn usable(service: &str, store: &StoreSpec, running: &[&StoreSpec]) -> bool {
    !(service == "orders" && store.kind == StoreKind::Nats)
        || running.iter().any(|s| s.name == "orders-postgres")
}

/// The most stores one service uses (catalog: its database and the broker).
pub const MAX_USED: usize = 2;

/// The AuthorizationPolicy that lets only a store's users reach it.
pub fn authorization(store: &StoreSpec, namespace: &str) -> serde_json::Value {
    let accounts: Vec<String> = store
        .users
        .iter()
        .map(|user| format!("{namespace}/{user}"))
        .collect();
    serde_json::json!({
        "apiVersion": "mycel.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": format!("{}-users", store.name), "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": store.name}},
            "action": "ALLOW",
            "rules": [{"from": [{"serviceAccounts": accounts}]}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_service_uses_more_stores_than_its_slot_has_ports() {
        for service in [
            "frontend",
            "catalog",
            "reviews",
            "ratings",
            "orders",
            "notifications",
        ] {
            assert!(used_by(service).count() <= MAX_USED, "{service}");
        }
        assert_eq!(
            used_by("catalog").map(|s| s.name).collect::<Vec<_>>(),
            ["catalog-postgres", "nats"]
        );
        assert_eq!(used_by("frontend").count(), 0);
    }

    #[test]
    fn every_store_has_a_user_and_a_unique_name() {
        let names: BTreeSet<_> = STORES.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), STORES.len());
        assert!(STORES.iter().all(|s| !s.users.is_empty()));
    }

    #[test]
    fn a_stores_policy_admits_only_its_users() {
        let policy = authorization(spec("orders-postgres").unwrap(), "shop");
        assert_eq!(
            policy["spec"]["selector"]["matchLabels"]["app"],
            "orders-postgres"
        );
        assert_eq!(
            policy["spec"]["rules"][0]["from"][0]["serviceAccounts"],
            serde_json::json!(["shop/orders"])
        );
        let broker = authorization(spec("nats").unwrap(), "shop");
        assert_eq!(
            broker["spec"]["rules"][0]["from"][0]["serviceAccounts"],
            serde_json::json!(["shop/catalog", "shop/orders", "shop/notifications"])
        );
    }
}
