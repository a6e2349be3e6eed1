//! The trust bundle (the mesh roots, PEM) published as a ConfigMap
//! (`mycel-trust-bundle`, key `ca.crt`) in every meshed namespace, where the
//! injector mounts it as the proxy's `--ca-root`. It follows the live
//! bundle: during a trust-anchor rotation it holds the old and the new
//! root, so a Pod started then trusts the controller whichever root its
//! serving certificate chains to; and it tells when every meshed namespace
//! holds the current bundle, which a shared rotation waits for before
//! signing switches to the new root.
//!
//! A namespace is meshed while it carries the label `mycel.io/inject=enabled`
//! (a kube-runtime watcher selects on it). Each one is brought up to date
//! (get → create if absent → replace if different) when the watch shows it,
//! on every re-list, and again every `resync`, which is what puts back a
//! ConfigMap someone edited or deleted (the controller may not watch
//! ConfigMaps: its RBAC allows get/update of this one name only). A failure
//! is logged and retried with a growing delay; it never stops the
//! controller. A namespace that stops being meshed keeps its ConfigMap (the
//! controller may not delete), harmless as it holds public certificates.
//!
//! Every replica publishes: they write the same content, and a replace
//! that loses to another one's (409 Conflict) is retried and then finds
//! the ConfigMap current, so no leader election is needed.
//!
//! With `--webhook-config` each ConfigMap is owned by that configuration
//! (see `owner.rs`), so uninstalling garbage-collects them all; one without
//! the reference (an older install's) or naming an older uid is corrected
//! like any other difference, and when the owner changes every namespace
//! is checked again at once. While the owner is absent (an uninstall in
//! progress deleted it) no ConfigMap is created, since nothing would ever
//! collect it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ca_secret::PART_OF;
use super::owner::Ownership;

/// The namespace label (and annotation, for the injector) that meshes a
/// namespace, and its value.
pub const NAMESPACE_LABEL: &str = "mycel.io/inject";
pub const ENABLED: &str = "enabled";
/// The ConfigMap key holding the roots, the one the injector mounts.
pub const KEY: &str = "ca.crt";
/// How often every meshed namespace's ConfigMap is checked again.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// First and longest delay before a failed namespace is tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long one API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// What bringing one namespace's ConfigMap up to date takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create(ConfigMap),
    /// The ConfigMap as read, corrected (its resourceVersion kept, so a
    /// concurrent change makes the replace fail and be retried).
    Replace(ConfigMap),
    Current,
    /// Absent, and not created while its owner is absent: an uninstall in
    /// progress would leave it behind. Its owner's return makes it due.
    AwaitOwner,
}

/// The ConfigMap as it should be in `namespace`.
pub fn desired(
    name: &str,
    namespace: &str,
    key: &str,
    roots_pem: &str,
    ownership: &Ownership,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(PART_OF.0.into(), PART_OF.1.into())])),
            owner_references: ownership.for_new(),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.into(), roots_pem.into())])),
        ..Default::default()
    }
}

/// What to do given the ConfigMap found (`None`: absent). The controller
/// owns this ConfigMap: its data is exactly `key` = the roots, other keys
/// and binary data are removed; its owner references are what `ownership`
/// asks; labels, annotations and other owners others added stay.
pub fn plan(
    existing: Option<ConfigMap>,
    name: &str,
    namespace: &str,
    key: &str,
    roots_pem: &str,
    ownership: &Ownership,
) -> Action {
    let Some(mut cm) = existing else {
        if let Ownership::Absent(_) = ownership {
            return Action::AwaitOwner;
        }
        return Action::Create(desired(name, namespace, key, roots_pem, ownership));
    };
    let owners = ownership.references(cm.metadata.owner_references.as_deref().unwrap_or_default());
    let want = BTreeMap::from([(key.to_string(), roots_pem.to_string())]);
    let labelled = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PART_OF.0))
        .is_some_and(|v| v == PART_OF.1);
    let binary_empty = cm.binary_data.as_ref().is_none_or(BTreeMap::is_empty);
    if cm.data.as_ref() == Some(&want) && binary_empty && labelled && owners.is_none() {
        return Action::Current;
    }
    if let Some(owners) = owners {
        cm.metadata.owner_references = Some(owners);
    }
    cm.data = Some(want);
    cm.binary_data = None;
    cm.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(PART_OF.0.into(), PART_OF.1.into());
    Action::Replace(cm)
}

/// Whether a namespace the watch shows should get the bundle: not one
/// being deleted (creating in it is refused, and retrying would spin).
pub fn wanted(ns: &Namespace) -> bool {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating");
    !terminating
}

/// The delay before the `failures`-th retry: doubling from [`RETRY_MIN`],
/// at most [`RETRY_MAX`].
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    RETRY_MIN.saturating_mul(factor).min(RETRY_MAX)
}

/// When each meshed namespace is next checked. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeMap<String, (Instant, u32)>,
    /// Namespaces seen during a re-list, `None` outside one.
    relist: Option<BTreeSet<String>>,
    /// Namespaces whose ConfigMap was made current since the roots last
    /// changed.
    current: BTreeSet<String>,
    /// Whether the watch listed every meshed namespace at least once.
    listed: bool,
}

impl Schedule {
    /// Applies a watch event; the namespaces it shows are due at once.
    pub fn on_event(&mut self, event: Event<Namespace>, now: Instant) {
        match event {
            Event::Apply(ns) => self.show(&ns, now),
            Event::InitApply(ns) => {
                self.show(&ns, now);
                if let (Some(seen), Some(name)) = (self.relist.as_mut(), ns.metadata.name) {
                    seen.insert(name);
                }
            }
            Event::Delete(ns) => {
                if let Some(name) = &ns.metadata.name {
                    self.due.remove(name);
                    self.current.remove(name);
                }
            }
            Event::Init => self.relist = Some(BTreeSet::new()),
            Event::InitDone => {
                let seen = self.relist.take().unwrap_or_default();
                self.due.retain(|name, _| seen.contains(name));
                self.current.retain(|name| seen.contains(name));
                self.listed = true;
            }
        }
    }

    fn show(&mut self, ns: &Namespace, now: Instant) {
        let Some(name) = ns.metadata.name.clone() else {
            return;
        };
        if wanted(ns) {
            self.due.insert(name, (now, 0));
        } else {
            self.current.remove(&name);
            self.due.remove(&name);
        }
    }

    /// The earliest time something is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }

    /// The namespaces due at `now`.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Records the outcome of checking `namespace` (if still meshed).
    pub fn done(&mut self, namespace: &str, ok: bool, now: Instant, resync: Duration) {
        if let Some((at, failures)) = self.due.get_mut(namespace) {
            if ok {
                *failures = 0;
                *at = now + resync;
                self.current.insert(namespace.to_string());
            } else {
                *failures = failures.saturating_add(1);
                *at = now + backoff(*failures);
            }
        }
    }

    /// Makes every namespace due at `now` (what they must hold changed).
    pub fn all_due(&mut self, now: Instant) {
        for (at, _) in self.due.values_mut() {
            *at = now;
        }
    }

    pub fn namespaces(&self) -> Vec<String> {
        self.due.keys().cloned().collect()
    }

    /// What every namespace must hold changed (new roots): all due now,
    /// and none current until checked again.
    pub fn roots_changed(&mut self, now: Instant) {
        self.current.clear();
        self.all_due(now);
    }

    /// Whether every meshed namespace (all of them listed) holds the
    /// current roots.
    pub fn published(&self) -> bool {
        self.listed && self.due.keys().all(|ns| self.current.contains(ns))
    }
}

#[derive(Debug, thiserror::Error)]
enum EnsureError {
    #[error("cannot {verb} ConfigMap {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot {verb} ConfigMap {namespace}/{name}: no answer within {API_TIMEOUT:?}")]
    Timeout {
        verb: &'static str,
        namespace: String,
        name: String,
    },
}

/// Publishes `roots_pem` as ConfigMap `configmap_name` (key [`KEY`]) in
/// every namespace labelled `namespace_label=enabled`, owned as `owner`
/// says at the time, checking each again every `resync` and all of them
/// when `owner` changes, until `shutdown` turns true. Never returns an
/// error: failures are logged and retried. Spawn it once the CA is loaded,
/// with [`DEFAULT_RESYNC`] unless configured otherwise. The roots never
/// change; [`publish_live_trust_bundle`] follows a rotation.
pub async fn publish_trust_bundle(
    client: Client,
    configmap_name: &str,
    namespace_label: &str,
    roots_pem: String,
    resync: Duration,
    owner: watch::Receiver<Ownership>,
    shutdown: watch::Receiver<bool>,
) {
    let (_keep, roots) = watch::channel(roots_pem);
    let (published, _) = watch::channel(None);
    publish_live_trust_bundle(
        client,
        &Publish {
            configmap: configmap_name,
            namespace_label,
            resync,
        },
        Channels {
            roots,
            owner,
            shutdown,
            published,
        },
    )
    .await
}

/// Where and how often the trust bundle is published.
#[derive(Clone, Copy, Debug)]
pub struct Publish<'a> {
    pub configmap: &'a str,
    pub namespace_label: &'a str,
    pub resync: Duration,
}

/// What the publisher follows and what it tells.
pub struct Channels {
    /// The roots to publish, PEM; a change makes every namespace due.
    pub roots: watch::Receiver<String>,
    pub owner: watch::Receiver<Ownership>,
    pub shutdown: watch::Receiver<bool>,
    /// Set to the roots once every meshed namespace holds them, `None`
    /// while some do not yet.
    pub published: watch::Sender<Option<String>>,
}

/// [`publish_trust_bundle`] of roots that change: each change is written
/// to every meshed namespace at once, and `published` says when all of
/// them hold it.
pub async fn publish_live_trust_bundle(client: Client, at: &Publish<'_>, channels: Channels) {
    let Channels {
        mut roots,
        mut owner,
        mut shutdown,
        published,
    } = channels;
    let selector = format!("{}={ENABLED}", at.namespace_label);
    let mut events = watcher::watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .boxed();
    let mut schedule = Schedule::default();
    let mut roots_pem = roots.borrow_and_update().clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = Instant::now();
        for ns in schedule.due(now) {
            let ownership = owner.borrow_and_update().clone();
            let result = tokio::select! {
                r = ensure(&client, at.configmap, &ns, &roots_pem, &ownership) => r,
                _ = shutdown.changed() => return,
            };
            let configmap = at.configmap;
            let ok = match result {
                Ok(Action::Current) => true,
                Ok(Action::AwaitOwner) => {
                    tracing::info!(namespace = %ns, configmap, owner = ?ownership, "trust bundle not created until its owner exists");
                    true
                }
                Ok(action) => {
                    let what = if matches!(action, Action::Create(_)) {
                        "created"
                    } else {
                        "corrected"
                    };
                    tracing::info!(namespace = %ns, configmap, "{what} the trust bundle");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish the trust bundle; retrying");
                    false
                }
            };
            schedule.done(&ns, ok, Instant::now(), at.resync);
        }
        let now_published = schedule.published().then(|| roots_pem.clone());
        published.send_if_modified(|p| {
            let changed = *p != now_published;
            *p = now_published;
            changed
        });
        let wake = schedule
            .next()
            .unwrap_or_else(|| Instant::now() + at.resync);
        tokio::select! {
            next = events.next() => match next {
                Some(Ok(event)) => schedule.on_event(event, Instant::now()),
                // The watcher's backoff retries; the schedule stays.
                Some(Err(e)) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
            // A sender gone (no --webhook-config, or shutting down) keeps
            // the last ownership; the shutdown branch ends the loop.
            Ok(()) = owner.changed() => schedule.all_due(Instant::now()),
            Ok(()) = roots.changed() => {
                roots_pem = roots.borrow_and_update().clone();
                schedule.roots_changed(Instant::now());
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Brings one namespace's ConfigMap up to date; returns what it did.
async fn ensure(
    client: &Client,
    name: &str,
    namespace: &str,
    roots_pem: &str,
    ownership: &Ownership,
) -> Result<Action, EnsureError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let fail = |verb: &'static str| {
        move |source| EnsureError::Api {
            verb,
            namespace: namespace.into(),
            name: name.into(),
            source,
        }
    };
    let timeout = |verb: &'static str| EnsureError::Timeout {
        verb,
        namespace: namespace.into(),
        name: name.into(),
    };
    let existing = tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| timeout("get"))?
        .map_err(fail("get"))?;
    let action = plan(existing, name, namespace, KEY, roots_pem, ownership);
    let pp = PostParams::default();
    match &action {
        Action::Create(cm) => {
            tokio::time::timeout(API_TIMEOUT, api.create(&pp, cm))
                .await
                .map_err(|_| timeout("create"))?
                .map_err(fail("create"))?;
        }
        Action::Replace(cm) => {
            tokio::time::timeout(API_TIMEOUT, api.replace(name, &pp, cm))
                .await
                .map_err(|_| timeout("update"))?
                .map_err(fail("update"))?;
        }
        Action::Current | Action::AwaitOwner => {}
    }
    Ok(action)
}

#[cfg(test)]
mod tests;
