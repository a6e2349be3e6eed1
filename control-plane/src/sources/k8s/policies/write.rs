//! Writes policy statuses (TrafficPolicy, AuthorizationPolicy,
//! PeerAuthentication, GatewayPolicy) through the status subresource (a
//! JSON merge patch of `status`), off the watch loop: the watch never waits
//! for the API server. Writes are queued per object, the newest replacing an
//! older one not yet written; a failed write is retried with backoff, one
//! for an object since deleted is dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource};
use mycel_crds::TrafficPolicyStatus;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::sources::k8s::cluster::ObjKey;

/// Limit of one status patch.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One object's status to write; `None`: the object already says the
/// right thing (or is gone), so a queued write for it is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate<S = TrafficPolicyStatus> {
    pub key: ObjKey,
    pub status: Option<S>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{kind} {}/{}: writing its status: {source}", .key.0, .key.1)]
    Api {
        kind: String,
        key: ObjKey,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {}/{}: writing its status took longer than {API_TIMEOUT:?}", .key.0, .key.1)]
    Timeout { kind: String, key: ObjKey },
}

/// Writes the statuses of kind `K` that `rx` brings until it closes or
/// `shutdown`.
pub async fn run<K, S>(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<StatusUpdate<S>>,
    mut shutdown: watch::Receiver<bool>,
) where
    K: Resource<DynamicType = ()>,
    S: Serialize + Clone + PartialEq,
{
    let resource = ApiResource::erase::<K>(&());
    let mut pending: BTreeMap<ObjKey, S> = BTreeMap::new();
    let mut retry = FIRST_RETRY;
    let mut retry_at: Option<Instant> = None;
    loop {
        while let Ok(update) = rx.try_recv() {
            queue(&mut pending, update);
        }
        if !pending.is_empty() && retry_at.is_none_or(|t| Instant::now() >= t) {
            let mut failed = false;
            for (key, status) in pending.clone() {
                match patch(&client, &resource, &key, &status).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "policy status not written; retrying");
                        failed = true;
                        continue;
                    }
                }
                // A newer status queued meanwhile is still to be written.
                if pending.get(&key) == Some(&status) {
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

fn queue<S>(pending: &mut BTreeMap<ObjKey, S>, update: StatusUpdate<S>) {
    match update.status {
        Some(status) => pending.insert(update.key, status),
        None => pending.remove(&update.key),
    };
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One merge patch of `status`. An object deleted meanwhile needs no
/// status: that counts as done.
async fn patch<S: Serialize>(
    client: &Client,
    resource: &ApiResource,
    key: &ObjKey,
    status: &S,
) -> Result<(), WriteError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.0, resource);
    let body = serde_json::json!({ "status": status });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let call = api.patch_status(&key.1, &params, &patch);
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
        Ok(Err(source)) => Err(WriteError::Api {
            kind: resource.kind.clone(),
            key: key.clone(),
            source,
        }),
        Err(_) => Err(WriteError::Timeout {
            kind: resource.kind.clone(),
            key: key.clone(),
        }),
    }
}
