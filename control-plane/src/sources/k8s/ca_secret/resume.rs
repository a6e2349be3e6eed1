//! Start-up with a CA Secret that records a rotation (see `record.rs`): a
//! controller restarted mid-rotation signs with the CA the recorded phase
//! signs with and trusts the roots it trusts, whatever its data dir holds,
//! so a restart never drops the old root before the overlap has passed.
//!
//! When the Secret's own CA differs from the root recorded in force and no
//! rotation is recorded, the Secret changed while no controller read it.
//! The CA in force is then looked for in the data dir (a container restart
//! keeps it), else another running replica, which still holds it, is given
//! [`wait_for`] to record the rotation. Failing both, nobody holds the
//! retired CA's key any more: the rotation is recorded as already in its
//! overlap (new leaves from the new root, the old root trusted), which
//! skips the phase in which proxies learn the new root before meeting it.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::Api;
use time::OffsetDateTime;

use super::record::{self, Change, Held, Kept, Write};
use super::{get, timed, CaOrigin, CaSecretError, CaSource, Loader, PROVIDED_DIR};
use crate::ca::authority::{fingerprint, first_cert_der, Labels};
use crate::ca::rotation::shared::Record;
use crate::ca::rotation::store::{write_ca_dir, Persisted};
use crate::ca::rotation::Phase;
use crate::ca::{Authority, CaMaterial};
use crate::rotation::follow::ACTIVE_DIR;

/// How long a controller starting on a Secret changed behind every
/// controller's back waits for a running replica to record the rotation.
pub fn wait_for(poll: Duration) -> Duration {
    poll.saturating_mul(2) + Duration::from_secs(5)
}

fn root_fp(pem: &str) -> Option<String> {
    first_cert_der(Path::new("root"), pem)
        .ok()
        .map(|d| fingerprint(&d))
}

fn dir_labels() -> Labels<'static> {
    Labels {
        root: Path::new("root.pem"),
        root_key: Path::new("root.key"),
        issuer: Path::new("issuer.pem"),
        issuer_key: Path::new("issuer.key"),
    }
}

/// What to start with.
pub(super) enum Resolved {
    /// The Secret's own CA (written into the data dir and loaded as
    /// always).
    Own,
    /// A CA kept in the Secret, or found in the data dir.
    Kept {
        material: CaMaterial,
        labels: Labels<'static>,
        /// Roots trusted besides its root, in bundle order.
        also: Vec<Vec<u8>>,
    },
    /// The Secret changed while no controller read it.
    Changed,
}

fn incomplete(secret: &str, what: &str) -> CaSecretError {
    CaSecretError::Rotation {
        secret: secret.into(),
        problem: format!("its rotation record needs {what}, which it does not hold"),
    }
}

/// A CA in the data dir whose root is `fp`.
fn in_data_dir(data_dir: &Path, fp: &str) -> Option<CaMaterial> {
    [
        (data_dir.join(ACTIVE_DIR), false),
        (data_dir.join("ca"), false),
        (data_dir.join(PROVIDED_DIR), true),
    ]
    .into_iter()
    .filter_map(|(dir, provided)| record::ca_in_dir(&dir, provided))
    .find(|m| root_fp(&m.root_pem).as_deref() == Some(fp))
}

/// What `held` says to start with; pure but for reading the data dir.
pub(super) fn resolve(
    secret: &str,
    held: &Held,
    data_dir: &Path,
) -> Result<Resolved, CaSecretError> {
    let Some(record) = &held.record else {
        return Ok(Resolved::Own);
    };
    let der = |pem: &str, what: &str| {
        first_cert_der(Path::new("root"), pem).map_err(|_| incomplete(secret, what))
    };
    let next = || {
        held.next
            .clone()
            .ok_or_else(|| incomplete(secret, "the CA rotated to"))
    };
    let kept = |material: CaMaterial, labels, also| Resolved::Kept {
        material,
        labels,
        also,
    };
    Ok(match record.phase {
        Phase::Distributing => {
            let previous = held
                .previous
                .clone()
                .filter(|p| !p.issuer_key_pem.is_empty())
                .ok_or_else(|| incomplete(secret, "the CA being retired"))?;
            let also = vec![der(&next()?.root_pem, "the CA rotated to")?];
            kept(previous, Kept::Previous.labels(), also)
        }
        Phase::Overlap => {
            let also = vec![der(&record.root_pem, "the root being retired")?];
            kept(next()?, Kept::Next.labels(), also)
        }
        Phase::Finishing => kept(next()?, Kept::Next.labels(), Vec::new()),
        Phase::Stable => {
            if let Some(next) = held.next.clone() {
                return Ok(kept(next, Kept::Next.labels(), Vec::new()));
            }
            let in_force = root_fp(&record.root_pem);
            let own = held.own.as_ref().ok().and_then(|ca| {
                let m = record::material(ca);
                root_fp(&m.root_pem)
            });
            if own.is_some() && own == in_force {
                return Ok(Resolved::Own);
            }
            match in_force.and_then(|fp| in_data_dir(data_dir, &fp)) {
                Some(material) => kept(material, dir_labels(), Vec::new()),
                // An unusable Secret fails the start as it always did.
                None if own.is_none() => Resolved::Own,
                None => Resolved::Changed,
            }
        }
    })
}

/// The driver's state for a recorded phase.
fn persisted(record: &Record) -> Persisted {
    Persisted {
        phase: record.phase,
        phase_since_unix: record.phase_since_unix,
        started_unix: record.started_unix,
        ..Persisted::stable(
            record.phase_since_unix,
            Duration::from_secs(record.overlap_secs),
        )
    }
}

/// [`super::sync_ca_secret`] once the Secret was found: the CA to start
/// with, and the Secret as last read (for its owner references).
pub(super) async fn load(
    api: &Api<Secret>,
    load: &Loader<'_>,
    name: &str,
    mut found: Secret,
) -> Result<(CaSource, Secret), CaSecretError> {
    let deadline = tokio::time::Instant::now() + wait_for(load.poll);
    loop {
        let held = record::read(&load.secret, &found);
        let resume = held.record.as_ref().map(persisted);
        match resolve(&load.secret, &held, load.data_dir)? {
            Resolved::Own => {
                tracing::info!(secret = %load.secret, "using the mesh CA stored in the Secret");
                let mut source = load.load_secret(&found)?;
                source.resume = resume;
                return Ok((source, found));
            }
            Resolved::Kept {
                material,
                labels,
                also,
            } => {
                let dir = load.data_dir.join(ACTIVE_DIR);
                // Where an issuer rotated from its root key is written.
                if let Err(e) = write_ca_dir(&dir, &material) {
                    tracing::warn!(error = %e, "cannot keep a copy of the CA in use in the data dir");
                }
                let authority = Authority::from_material(
                    &material,
                    &labels,
                    load.trust_domain,
                    load.cert_ttl,
                    load.issuer_ttl,
                    &dir,
                )
                .map_err(|source| CaSecretError::Invalid {
                    secret: load.secret.clone(),
                    source,
                })?;
                authority.set_also_trusted(also);
                tracing::info!(
                    secret = %load.secret,
                    phase = resume.as_ref().map_or("stable", |r| r.phase.as_str()),
                    root = %authority.root_fingerprint(),
                    roots = authority.trust_bundle_der().len(),
                    "resuming the trust-anchor rotation the CA Secret records"
                );
                let source = CaSource {
                    authority,
                    origin: CaOrigin::Existing,
                    resume,
                };
                return Ok((source, found));
            }
            Resolved::Changed if tokio::time::Instant::now() < deadline => {
                tracing::info!(secret = %load.secret, "the CA Secret holds a new root no controller rotated to yet; waiting for a running replica to start the rotation");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Resolved::Changed => {
                if let Some(written) = overlap_at_once(api, load, name, &held).await? {
                    found = written;
                    continue;
                }
            }
        }
        found = get(api, name, &load.secret)
            .await?
            .ok_or_else(|| CaSecretError::Vanished {
                secret: load.secret.clone(),
            })?;
    }
}

/// Records a rotation to the Secret's CA as already in its overlap (no
/// controller holds the retired CA's key); `None` when another replica
/// wrote the Secret first.
async fn overlap_at_once(
    api: &Api<Secret>,
    load: &Loader<'_>,
    name: &str,
    held: &Held,
) -> Result<Option<Secret>, CaSecretError> {
    let (Some(record), Ok(own)) = (&held.record, &held.own) else {
        return Ok(None);
    };
    let material = record::material(own);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let next = Record {
        phase: Phase::Overlap,
        phase_since_unix: now,
        started_unix: now,
        overlap_secs: load.overlap.as_secs(),
        root_pem: record.root_pem.clone(),
        to: root_fp(&material.root_pem),
    };
    tracing::warn!(
        secret = %load.secret,
        "the CA Secret got a new root while no controller ran, and the retired CA is nowhere: signing with the new root at once, the old one trusted for the overlap; proxies that have not yet received the new bundle fail to verify new certificates until they do"
    );
    let patch = record::patch(&Write {
        resource_version: held.resource_version.as_deref(),
        record: Some(&next),
        previous: Change::Remove,
        next: Change::Set(&material),
        reports: Vec::new(),
    });
    match timed(
        "patch",
        &load.secret,
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(status)) if status.is_conflict() => Ok(None),
        Err(source) => Err(CaSecretError::Api {
            verb: "patch",
            secret: load.secret.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
