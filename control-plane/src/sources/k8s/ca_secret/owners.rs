//! The CA Secret's owner references: the only part of its metadata the
//! controller writes besides the rotation record (see the parent module).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::{get, secret_ownership, timed, CaOrigin, CaSecretError, Loader};
use crate::sources::k8s::owner::Ownership;

/// Patches the Secret's owner references as [`secret_ownership`] says,
/// logging a failure: the CA is in use either way.
pub(super) async fn own(api: &Api<Secret>, load: &Loader<'_>, found: Secret, origin: CaOrigin) {
    let ownership = secret_ownership(origin, load.ownership);
    match patch_owners(api, &load.secret, found, &ownership).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(secret = %load.secret, owner = ?ownership, "set the CA Secret's owner references")
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot set the CA Secret's owner references: uninstalling may leave it behind, or delete a Secret meant to be kept"
        ),
    }
}

/// How often a patch of the owner references is tried when another writer
/// changed the Secret between the read and the patch.
const PATCH_ATTEMPTS: usize = 3;

/// Writes the owner references `ownership` asks for, and only them: a JSON
/// merge patch of `metadata.ownerReferences` carrying the resourceVersion
/// read, so a concurrent change (another replica doing the same) fails it
/// with 409 and it is read and decided again. Whether it wrote.
async fn patch_owners(
    api: &Api<Secret>,
    secret: &str,
    mut found: Secret,
    ownership: &Ownership,
) -> Result<bool, CaSecretError> {
    let fail = |source| CaSecretError::Api {
        verb: "patch",
        secret: secret.into(),
        source,
    };
    for _ in 0..PATCH_ATTEMPTS {
        let existing = found.metadata.owner_references.clone().unwrap_or_default();
        let Some(references) = ownership.references(&existing) else {
            return Ok(false);
        };
        let Some(name) = found.metadata.name.clone() else {
            return Ok(false);
        };
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": found.metadata.resource_version,
                "ownerReferences": references,
            }
        });
        match timed(
            "patch",
            secret,
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                found = get(api, &name, secret)
                    .await?
                    .ok_or_else(|| CaSecretError::Contended {
                        secret: secret.into(),
                    })?;
            }
            Err(source) => return Err(fail(source)),
        }
    }
    Err(CaSecretError::Contended {
        secret: secret.into(),
    })
}
