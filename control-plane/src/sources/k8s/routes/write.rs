//! Writes route statuses through the status subresource, off the watch
//! loop, as policy statuses are written ([`super::super::policies::write`]):
//! queued per object, the newest replacing an older one not yet written,
//! retried with backoff.
//!
//! The patch replaces the whole `status.parents` list (a merge patch
//! cannot edit one entry of a list), so it carries the `resourceVersion`
//! the list was read at: should another controller have written its
//! entries meanwhile, the API server refuses the patch (409) instead of
//! the patch erasing them. The write is then dropped; the watch brings the
//! newer object, and from it a new status to write.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
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

/// What to write to one route: its whole `status.parents`, read at
/// `resource_version`. `None`: nothing (a queued write is dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub key: RouteKey,
    pub write: Option<(Option<String>, Vec<Value>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} {}/{}: writing its status: {source}", .key.0.as_str(), .key.1, .key.2)]
    Api {
        key: RouteKey,
        #[source]
        source: kube::Error,
    },
    #[error("{} {}/{}: writing its status took longer than {API_TIMEOUT:?}", .key.0.as_str(), .key.1, .key.2)]
    Timeout { key: RouteKey },
}

type Pending = BTreeMap<RouteKey, (Option<String>, Vec<Value>)>;

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
                    tracing::warn!(error = %e, "route status not written; retrying");
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
pub fn body(resource_version: Option<&str>, parents: &[Value]) -> Value {
    let mut body = serde_json::json!({ "status": { "parents": parents } });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    body
}

/// One merge patch of `status.parents`. An object deleted meanwhile needs
/// no status, and one changed meanwhile gets a new write from the watch:
/// both count as done.
async fn patch(
    client: &Client,
    key: &RouteKey,
    (resource_version, parents): &(Option<String>, Vec<Value>),
) -> Result<(), WriteError> {
    let resource = match key.0 {
        RouteKind::Http => ApiResource::erase::<HttpRoute>(&()),
        RouteKind::Grpc => ApiResource::erase::<GrpcRoute>(&()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.1, &resource);
    let body = body(resource_version.as_deref(), parents);
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let call = api.patch_status(&key.2, &params, &patch);
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
