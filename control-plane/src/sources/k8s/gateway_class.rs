//! The GatewayClass of Mycel's gateways, created by the controller.
//!
//! The class cannot ship as a manifest beside the Gateway API CRDs: one
//! `kubectl apply` of a stream that creates a CRD cannot create an object
//! of that CRD (the kind is not known when the stream is mapped), and
//! `mycelctl install | kubectl apply -f -` is such a stream. So the
//! controller creates the class once the CRD is there, owned like the
//! other objects it creates (see [`super::owner`]) so `helm uninstall`
//! collects it. An existing class of that name is left as it is (a user
//! may have created it, or edited its description), but for the owner
//! reference of one the controller created: after a reinstall it names the
//! old owner, and is corrected before the garbage collector takes the
//! class away from the Gateways of the new install.

use std::time::Duration;

use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mycel_crds::gateway_api::gatewayclasses::{GatewayClass, GatewayClassSpec};
use tokio::sync::watch;

use super::owner::Ownership;
use crate::routes::gateway::GATEWAY_CONTROLLER_NAME;

/// How often the class is looked for again: it may have been deleted, or
/// the CRD may not be installed yet. Short, as Gateways of the class are
/// not served while it is missing; one GET per replica.
pub const RESYNC: Duration = Duration::from_secs(15);
/// The label of a class the controller created.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mycel-controller");
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// What one look at the class did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Exists,
    Created,
    /// One the controller created named an owner that is gone.
    OwnerCorrected,
    /// The Gateway API CRDs are not installed.
    NoCrd,
    /// The owner to name does not exist (yet): nothing could collect the
    /// class, so it is not created.
    AwaitOwner,
}

/// The class as the controller creates it.
pub fn desired(name: &str, ownership: &Ownership) -> Option<GatewayClass> {
    let owner_references = match ownership {
        Ownership::Absent(_) => return None,
        Ownership::By(reference) => Some(vec![reference.clone()]),
        Ownership::Leave | Ownership::NeverBy(_) => None,
    };
    Some(GatewayClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            owner_references,
            labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: GatewayClassSpec {
            controller_name: GATEWAY_CONTROLLER_NAME.to_string(),
            // The CRD allows 64 bytes.
            description: Some("Gateways served by Mycel gateway proxies".to_string()),
            parameters_ref: None,
        },
        status: None,
    })
}

/// Creates the class `name` when it is missing.
pub async fn ensure(
    client: &Client,
    name: &str,
    ownership: &Ownership,
) -> Result<Outcome, kube::Error> {
    let api: Api<GatewayClass> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(existing)) => {
            let created_by_us = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY.0))
                .is_some_and(|v| v == MANAGED_BY.1);
            let refs = existing.metadata.owner_references.as_deref().unwrap_or(&[]);
            let Some(want) = ownership.references(refs).filter(|_| created_by_us) else {
                return Ok(Outcome::Exists);
            };
            let patch = serde_json::json!({"metadata": {"ownerReferences": want}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(Outcome::OwnerCorrected);
        }
        Ok(None) => {}
        // The resource type itself is unknown: no Gateway API CRDs.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Outcome::NoCrd),
        Err(e) => return Err(e),
    }
    let Some(class) = desired(name, ownership) else {
        return Ok(Outcome::AwaitOwner);
    };
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(Outcome::Created),
        // Another replica was first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Exists),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Outcome::NoCrd),
        Err(e) => Err(e),
    }
}

/// Keeps the class there until `shutdown` turns true: looks every
/// [`RESYNC`] and whenever the owner changes. Failures are logged and
/// retried.
pub async fn keep(
    client: Client,
    name: String,
    mut owner: watch::Receiver<Ownership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let ownership = owner.borrow_and_update().clone();
        let looked = tokio::time::timeout(API_TIMEOUT, ensure(&client, &name, &ownership)).await;
        match looked {
            Ok(Ok(outcome)) => {
                if last.as_ref() != Some(&outcome) {
                    match outcome {
                        Outcome::Created => {
                            tracing::info!(class = %name, "created the GatewayClass")
                        }
                        Outcome::OwnerCorrected => {
                            tracing::info!(class = %name, "the GatewayClass names its current owner again")
                        }
                        Outcome::NoCrd => {
                            tracing::info!(class = %name, "no Gateway API CRDs; the GatewayClass is created once they are installed")
                        }
                        Outcome::AwaitOwner => {
                            tracing::info!(class = %name, "GatewayClass not created until its owner exists")
                        }
                        Outcome::Exists => {}
                    }
                }
                last = Some(outcome);
            }
            Ok(Err(e)) => {
                tracing::warn!(class = %name, error = %e, "cannot read or create the GatewayClass; retrying")
            }
            Err(_) => {
                tracing::warn!(class = %name, "the API server did not answer about the GatewayClass in time; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RESYNC) => {}
            _ = owner.changed() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn the_class_is_ours_and_owned_like_the_other_objects() {
        let owner = OwnerReference {
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: "MutatingWebhookConfiguration".into(),
            name: "mycel-injector".into(),
            uid: "u-1".into(),
            ..OwnerReference::default()
        };
        let class = desired("mycel", &Ownership::By(owner.clone())).unwrap();
        assert_eq!(class.spec.controller_name, GATEWAY_CONTROLLER_NAME);
        assert!(class.spec.description.as_ref().unwrap().len() <= 64);
        assert_eq!(class.metadata.name.as_deref(), Some("mycel"));
        assert_eq!(class.metadata.owner_references, Some(vec![owner]));
        let unowned = desired("mycel", &Ownership::Leave).unwrap();
        assert_eq!(unowned.metadata.owner_references, None);
        // Nothing could collect it: wait for the owner.
        assert!(desired("mycel", &Ownership::Absent("mycel-injector".into())).is_none());
    }
}
