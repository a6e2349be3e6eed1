//! Who owns the objects the controller creates, for Kubernetes garbage
//! collection.
//!
//! Helm deletes only what it created. The controller creates the CA Secret
//! and a trust-bundle ConfigMap in every meshed namespace, so with
//! `--webhook-config` each of them names that MutatingWebhookConfiguration
//! (which helm owns and deletes on `helm uninstall`) as its owner, and the
//! garbage collector deletes them once it is gone. A cluster-scoped owner
//! may own namespaced objects. The reference is not a controller reference
//! and has `blockOwnerDeletion: false`: deleting the configuration waits
//! for nothing, and setting the reference needs no right on the owner
//! (`true` would need `update` of its finalizers).
//!
//! A reference names its owner by uid: if the configuration is deleted and
//! created again, whatever points at the old uid is garbage, so references
//! are corrected when the uid changes ([`follow_owner`] notices it). The
//! CA Secret a user brought is never owned: [`Ownership::NeverBy`] removes a
//! reference to the configuration rather than adding one.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Api, Client};
use tokio::sync::watch;

/// The owner's group and kind.
pub const GROUP: &str = "admissionregistration.k8s.io";
pub const API_VERSION: &str = "admissionregistration.k8s.io/v1";
pub const KIND: &str = "MutatingWebhookConfiguration";
/// How long one read of the configuration may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`follow_owner`] reads the configuration again, and how soon
/// after a failed read.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(5);

/// What the owner references of an object the controller writes should be.
#[derive(Clone, Debug, PartialEq)]
pub enum Ownership {
    /// Left as they are: no `--webhook-config`.
    Leave,
    /// The configuration of this name should own them but is not there
    /// (not yet, or deleted: an uninstall in progress). References are left
    /// as they are, and an object that is not needed to run (a trust
    /// bundle) is not created, as nothing could collect it.
    Absent(String),
    /// Owned by the configuration this reference names (uid included).
    By(OwnerReference),
    /// Never owned by the configuration of this name: a reference to it,
    /// whatever its uid, is removed. For the CA Secret the user brought
    /// (`--keep-ca-secret`), which must outlive the install.
    NeverBy(String),
}

impl Ownership {
    /// The references to write given those the object has, or `None` when
    /// they are right already. References to other owners stay.
    pub fn references(&self, existing: &[OwnerReference]) -> Option<Vec<OwnerReference>> {
        let (name, want) = match self {
            Ownership::Leave | Ownership::Absent(_) => return None,
            Ownership::By(want) => (want.name.as_str(), Some(want)),
            Ownership::NeverBy(name) => (name.as_str(), None),
        };
        let (ours, mut others): (Vec<&OwnerReference>, Vec<&OwnerReference>) =
            existing.iter().partition(|r| names_config(r, name));
        let current = match want {
            Some(want) => ours == [want],
            None => ours.is_empty(),
        };
        if current {
            return None;
        }
        others.extend(want);
        Some(others.into_iter().cloned().collect())
    }

    /// The references a new object gets.
    pub fn for_new(&self) -> Option<Vec<OwnerReference>> {
        self.references(&[])
    }
}

/// Whether `r` points at the MutatingWebhookConfiguration `name`, in any
/// version of its API.
fn names_config(r: &OwnerReference, name: &str) -> bool {
    let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
    group == GROUP && r.kind == KIND && r.name == name
}

/// The reference to `config`, or `None` if it has no name or uid (not one
/// read from the API server).
pub fn owner_reference(config: &MutatingWebhookConfiguration) -> Option<OwnerReference> {
    let meta = &config.metadata;
    Some(OwnerReference {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot get MutatingWebhookConfiguration {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot get MutatingWebhookConfiguration {name}: no answer within {API_TIMEOUT:?}")]
    Timeout { name: String },
}

/// The ownership the configuration `name` gives now: [`Ownership::By`] it
/// when it exists, [`Ownership::Absent`] when it does not.
pub async fn current(client: &Client, name: &str) -> Result<Ownership, OwnerError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let found = tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| OwnerError::Timeout { name: name.into() })?
        .map_err(|source| OwnerError::Api {
            name: name.into(),
            source,
        })?;
    Ok(found
        .as_ref()
        .and_then(owner_reference)
        .map_or_else(|| Ownership::Absent(name.into()), Ownership::By))
}

/// Reads the configuration `name` every `resync` and sends its ownership
/// when it changed (created, deleted, created again with a new uid), until
/// `shutdown`. A failed read keeps the last value and is retried sooner.
pub async fn follow_owner(
    client: Client,
    name: String,
    owner: watch::Sender<Ownership>,
    resync: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = match current(&client, &name).await {
            Ok(now) => {
                let changed = owner.send_if_modified(|held| {
                    let changed = *held != now;
                    *held = now;
                    changed
                });
                if changed {
                    tracing::info!(webhook_config = %name, owner = ?*owner.borrow(), "owner of the controller's objects changed");
                }
                resync
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the owner of the controller's objects; retrying");
                RETRY.min(resync)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests;
