//! Writes the statuses of routes, Gateways and GatewayClasses through the
//! status subresource, off the watch loop, as policy statuses are written
//! ([`super::super::policies::write`]): queued per object, the newest
//! replacing an older one not yet written, retried with backoff. One
//! writer for all three, so a route's Service-parent and Gateway-parent
//! entries are computed and written together and never race.
//!
//! The patch replaces whole lists (a merge patch cannot edit one entry of
//! a list: a route's `status.parents`, a Gateway's `listeners`), so it
//! carries the `resourceVersion` they were read at: should another
//! controller have written its entries meanwhile, the API server refuses
//! the patch (409) instead of the patch erasing them. The write is then
//! dropped; the watch brings the newer object, and from it a new status.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use mycel_crds::gateway_api::gatewayclasses::GatewayClass;
use mycel_crds::gateway_api::gateways::Gateway;
use mycel_crds::gateway_api::grpcroutes::GrpcRoute;
use mycel_crds::gateway_api::httproutes::HttpRoute;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::RouteKey;
use crate::routes::RouteKind;

/// Limit of one status patch.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The object a status is written to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Route(RouteKey),
    /// `(namespace, name)`.
    Gateway(String, String),
    /// Cluster-scoped: its name.
    GatewayClass(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Route((kind, ns, name)) => write!(f, "{} {ns}/{name}", kind.as_str()),
            Target::Gateway(ns, name) => write!(f, "Gateway {ns}/{name}"),
            Target::GatewayClass(name) => write!(f, "GatewayClass {name}"),
        }
    }
}

/// What to write to one object: the `status` fields to merge, read at
/// `resource_version`. `None`: nothing (a queued write is dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub key: Target,
    pub write: Option<(Option<String>, Value)>,
}

impl StatusUpdate {
    /// A route's whole `status.parents`.
    pub fn route(key: RouteKey, write: Option<(Option<String>, Vec<Value>)>) -> Self {
        Self {
            key: Target::Route(key),
            write: write.map(|(rv, parents)| (rv, serde_json::json!({ "parents": parents }))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{key}: writing its status: {source}")]
    Api {
        key: Target,
        #[source]
        source: kube::Error,
    },
    #[error("{key}: writing its status took longer than {API_TIMEOUT:?}")]
    Timeout { key: Target },
}

type Pending = BTreeMap<Target, (Option<String>, Value)>;

/// Writes the updates `rx` brings until it closes or `shutdown`.
pub async fn run(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<StatusUpdate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending: Pending = BTreeMap::new();
    let mut retry = FIRST_RETRY;
    let mut retry_at: Option<Instant> = None;
    loop {
        while let Ok(update) = rx.try_recv() {
            queue(&mut pending, update);
        }
        if !pending.is_empty() && retry_at.is_none_or(|t| Instant::now() >= t) {
            let mut failed = false;
            for (key, write) in pending.clone() {
                if let Err(e) = patch(&client, &key, &write).await {
                    tracing::warn!(error = %e, "status not written; retrying");
                    failed = true;
                    continue;
                }
                // A newer status queued meanwhile is still to be written.
                if pending.get(&key) == Some(&write) {
                    pending.remove(&key);
                }
            }
            if failed {
                retry_at = Some(Instant::now() + retry);
                retry = (retry * 2).min(MAX_RETRY);
            } else {
                retry_at = None;
                retry = FIRST_RETRY;
            }
        }
        let wake = retry_at.filter(|_| !pending.is_empty());
        tokio::select! {
            update = rx.recv() => match update {
                Some(update) => queue(&mut pending, update),
                None => return,
            },
            _ = sleep_until(wake) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn queue(pending: &mut Pending, update: StatusUpdate) {
    match update.write {
        Some(w) => pending.insert(update.key, w),
        None => pending.remove(&update.key),
    };
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The merge patch of one write.
pub fn body(resource_version: Option<&str>, status: &Value) -> Value {
    let mut body = serde_json::json!({ "status": status });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    body
}

/// One merge patch of `status`. An object deleted meanwhile needs no
/// status, and one changed meanwhile gets a new write from the watch:
/// both count as done.
async fn patch(
    client: &Client,
    key: &Target,
    (resource_version, status): &(Option<String>, Value),
) -> Result<(), WriteError> {
    let (api, name): (Api<DynamicObject>, &str) = match key {
        Target::Route((kind, ns, name)) => {
            let resource = match kind {
                RouteKind::Http => ApiResource::erase::<HttpRoute>(&()),
                RouteKind::Grpc => ApiResource::erase::<GrpcRoute>(&()),
            };
            (Api::namespaced_with(client.clone(), ns, &resource), name)
        }
        Target::Gateway(ns, name) => {
            let resource = ApiResource::erase::<Gateway>(&());
            (Api::namespaced_with(client.clone(), ns, &resource), name)
        }
        Target::GatewayClass(name) => {
            let resource = ApiResource::erase::<GatewayClass>(&());
            (Api::all_with(client.clone(), &resource), name)
        }
    };
    let body = body(resource_version.as_deref(), status);
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let call = api.patch_status(name, &params, &patch);
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() || s.code == 409 => Ok(()),
        Ok(Err(source)) => Err(WriteError::Api {
            key: key.clone(),
            source,
        }),
        Err(_) => Err(WriteError::Timeout { key: key.clone() }),
    }
}
