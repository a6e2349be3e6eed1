//! The mesh CA kept in a Secret (`mycel-system/mycel-ca`), so every
//! controller replica signs under the same root.
//!
//! [`sync_ca_secret`] runs once at start, before anything is signed:
//!
//! * the Secret exists: its keys are written into `<data-dir>/ca/` (a Mycel
//!   CA: `root.pem`, `root.key`, `issuer.pem`, `issuer.key`) or
//!   `<data-dir>/ca-provided/` (a cert-manager-style CA: `ca.crt` = root,
//!   `tls.crt` = issuer, `tls.key` = its key) and loaded from there by the
//!   existing loader, so the Secret always wins over what the data dir held
//!   (unless it records a rotation, whose phase says which CA signs:
//!   `resume.rs`);
//! * it is absent: the CA in the data dir is loaded, or generated on first
//!   start, and a Secret is created from its files. When that create answers
//!   409 AlreadyExists another replica won the race; its Secret is read and
//!   written over the local files, so both end with the same root.
//!
//! The Secret's own keys (the CA) are never written after it is created:
//! the user (or cert-manager) changes them, and the controller follows
//! (`follow.rs`): a new root there starts a trust-anchor rotation, shared
//! by every replica through the Secret itself (`record.rs`: annotations
//! `rotation.mycel.io/*` and, during a rotation, data keys `rotation.*`,
//! written with the `patch` the controller already has), and a restart
//! mid-rotation resumes it from there (`resume.rs`). No leader election is
//! needed: what the replicas must share is the root and the phase, both in
//! the Secret, whose resourceVersion orders their writes. Each replica
//! rotates its own issuer (an intermediate signed by the shared root key)
//! in its own data dir; every proxy trusts the root and receives the
//! issuer in the chain of each certificate, so certificates from different
//! replicas, or from before and after an issuer rotation, verify alike. A
//! replica that restarts with an empty data dir loads the Secret's issuer
//! and rotates it again if it is due or expired.
//!
//! A cert-manager-style Secret carries no root key: the controller then
//! cannot rotate the issuer (as with `--issuer-cert`/`--issuer-key` files)
//! and its owner renews `tls.crt`/`tls.key`; a renewed issuer of the same
//! root is used as soon as it is read.
//!
//! Only the Secret's owner references are ever patched (`patch` of this one
//! Secret): with `--webhook-config` the Secret is owned by that
//! MutatingWebhookConfiguration, so `helm uninstall` (which deletes it)
//! garbage-collects the CA too; a Secret from an older install gets the
//! reference at start. A Secret the user brought ([`Ownership::NeverBy`],
//! `--keep-ca-secret`) and a cert-manager-style one, which the controller
//! never creates, are never given an owner (see `owner.rs`). Owning is
//! housekeeping: a failure to patch is logged, never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client};
use mycel_api::files::{ensure_private_dir, write_private};

use super::owner::Ownership;

use crate::ca::authority::LoadError;
use crate::ca::rotation::store::Persisted;
use crate::ca::{Authority, CaFiles};

pub mod follow;
mod owners;
pub mod record;
mod resume;

use owners::own;

/// The keys of a Secret holding a Mycel CA, which are also the file names
/// in `<data-dir>/ca/`. Keys come before certificates, as the generator
/// writes them: a crash leaves an incomplete directory, never certificates
/// whose keys are lost (and the next start rewrites it from the Secret).
pub const MYCEL_KEYS: [&str; 4] = ["root.key", "issuer.key", "root.pem", "issuer.pem"];
/// The keys of a cert-manager-style CA Secret: the issuer certificate, its
/// key, and the root.
pub const PROVIDED_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];
/// The label on the Secret the controller creates.
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "mycel");
/// Where a cert-manager-style CA is written, beside `<data-dir>/ca/`.
pub const PROVIDED_DIR: &str = "ca-provided";
/// How long one API call at start may take before the controller gives up
/// (and Kubernetes restarts it).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Left behind by an interrupted issuer rotation; stale once the Secret's
/// issuer is written, so removed then (see `authority/issuer.rs`).
const ROTATION_LEFTOVERS: [&str; 2] = ["issuer-next.pem", "issuer-next.key"];

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("cannot {verb} CA Secret {secret}: {source}")]
    Api {
        verb: &'static str,
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot {verb} CA Secret {secret}: the API server did not answer within {API_TIMEOUT:?}"
    )]
    Timeout { verb: &'static str, secret: String },
    #[error("CA Secret {secret} has {present} but no {missing} (a Mycel CA Secret holds root.pem, root.key, issuer.pem and issuer.key; a cert-manager-style one tls.crt, tls.key and ca.crt)")]
    Missing {
        secret: String,
        present: String,
        missing: &'static str,
    },
    #[error("CA Secret {secret}: key {key} is empty")]
    Empty { secret: String, key: &'static str },
    #[error("CA Secret {secret}: key {key} is not PEM text (not UTF-8)")]
    NotText { secret: String, key: &'static str },
    #[error("CA Secret {secret} mixes a Mycel CA ({mycel}) and a cert-manager-style one ({provided}); keep one set")]
    Mixed {
        secret: String,
        mycel: String,
        provided: String,
    },
    #[error("CA Secret {secret} holds none of root.pem, root.key, issuer.pem, issuer.key (Mycel) nor tls.crt, tls.key, ca.crt (cert-manager style); it has: {present}")]
    NoCa { secret: String, present: String },
    #[error("CA Secret {secret} already existed when it was created, then was gone when read; is something deleting it?")]
    Vanished { secret: String },
    #[error(
        "CA Secret {secret} changed or disappeared each time its owner references were patched"
    )]
    Contended { secret: String },
    #[error("cannot write the CA from Secret {secret} to {path}: {cause}")]
    Write {
        secret: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the CA in Secret {secret} is not usable: {source}")]
    Invalid {
        secret: String,
        #[source]
        source: LoadError,
    },
    #[error("CA Secret {secret}: {problem}")]
    Rotation { secret: String, problem: String },
    #[error("loading the CA to store in Secret {secret}: {source}")]
    Local {
        secret: String,
        #[source]
        source: LoadError,
    },
}

/// Where the CA in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaOrigin {
    /// This replica created the Secret from the data dir's CA (generated
    /// now, or kept from before).
    Created,
    /// The Secret already held a Mycel CA (an earlier start, another
    /// replica, or the user), with its root key.
    Existing,
    /// The Secret was absent, and another replica created it while this
    /// one was generating: that replica's CA was adopted.
    LostRace,
    /// The Secret is cert-manager-style: no root key, no issuer rotation.
    Provided,
}

/// Where the CA Secret is, how its CA is loaded, and who owns it.
#[derive(Clone, Copy, Debug)]
pub struct CaSecretConfig<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Where the CA is written and loaded from (`<data-dir>/ca/`).
    pub data_dir: &'a Path,
    pub trust_domain: &'a str,
    /// The longest leaf lifetime.
    pub cert_ttl: Duration,
    /// The lifetime of each issuer generated here.
    pub issuer_ttl: Duration,
    /// The Secret's owner references (see the module doc).
    pub ownership: &'a Ownership,
    /// How often running replicas read the Secret (`--ca-secret-poll`).
    pub poll: Duration,
    /// `--rotation-overlap`.
    pub overlap: Duration,
}

/// The CA to serve with, and where it came from.
#[derive(Debug)]
pub struct CaSource {
    pub authority: Authority,
    pub origin: CaOrigin,
    /// The rotation the Secret records, for the driver to continue.
    pub resume: Option<Persisted>,
}

/// A CA as a Secret holds it, checked to be complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretCa {
    /// Text of [`MYCEL_KEYS`], in that order.
    Mycel([String; 4]),
    /// Text of [`PROVIDED_KEYS`], in that order.
    Provided([String; 3]),
}

/// Which CA a Secret's `data` holds, or why it holds none (the error names
/// the Secret and the missing key). Keys other than the two sets are
/// ignored.
pub fn classify(
    secret: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<SecretCa, CaSecretError> {
    let has = |keys: &[&'static str]| -> Vec<&'static str> {
        keys.iter()
            .copied()
            .filter(|k| data.contains_key(*k))
            .collect()
    };
    let (mycel, provided) = (has(&MYCEL_KEYS), has(&PROVIDED_KEYS));
    match (mycel.is_empty(), provided.is_empty()) {
        (false, true) => texts(secret, data, &MYCEL_KEYS, &mycel).map(SecretCa::Mycel),
        (true, false) => texts(secret, data, &PROVIDED_KEYS, &provided).map(SecretCa::Provided),
        (false, false) => Err(CaSecretError::Mixed {
            secret: secret.into(),
            mycel: mycel.join(", "),
            provided: provided.join(", "),
        }),
        (true, true) => {
            let all: Vec<&str> = data.keys().map(String::as_str).collect();
            Err(CaSecretError::NoCa {
                secret: secret.into(),
                present: if all.is_empty() {
                    "no keys".into()
                } else {
                    all.join(", ")
                },
            })
        }
    }
}

/// The text of each of `keys`, naming the first one missing, empty or not
/// UTF-8.
fn texts<const N: usize>(
    secret: &str,
    data: &BTreeMap<String, ByteString>,
    keys: &[&'static str; N],
    present: &[&str],
) -> Result<[String; N], CaSecretError> {
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, key) in out.iter_mut().zip(keys.iter().copied()) {
        let Some(value) = data.get(key) else {
            return Err(CaSecretError::Missing {
                secret: secret.into(),
                present: present.join(", "),
                missing: key,
            });
        };
        if value.0.is_empty() {
            return Err(CaSecretError::Empty {
                secret: secret.into(),
                key,
            });
        }
        *slot = String::from_utf8(value.0.clone()).map_err(|_| CaSecretError::NotText {
            secret: secret.into(),
            key,
        })?;
    }
    Ok(out)
}

/// The Secret created from a Mycel CA's files (`texts` in [`MYCEL_KEYS`]
/// order), owned as `ownership` says.
pub fn secret_for(
    namespace: &str,
    name: &str,
    texts: &[String; 4],
    ownership: &Ownership,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(PART_OF.0.into(), PART_OF.1.into())])),
            owner_references: ownership.for_new(),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            MYCEL_KEYS
                .iter()
                .zip(texts)
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Makes the CA in Secret `namespace/name` the one this controller uses,
/// creating the Secret from the data dir's CA (generated on first start)
/// when it is absent; see the module doc. Call it once at start instead of
/// `Authority::load_or_generate_with` / `Authority::from_files` (same
/// `data_dir`, trust domain, `cert_ttl` as max leaf lifetime, and
/// `issuer_ttl`); it returns the loaded [`Authority`]. Replicas may call it
/// at the same time: all end with the root of whichever created the Secret.
/// Any error is fatal at start (the Secret is not usable or the API server
/// not reachable within [`API_TIMEOUT`]); the error names the Secret. The
/// Secret's owner references are brought to what `config.ownership` asks
/// (a failure is only logged).
pub async fn sync_ca_secret(
    client: Client,
    config: &CaSecretConfig<'_>,
) -> Result<CaSource, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client, config.namespace);
    let load = Loader::new(config);
    if let Some(found) = get(&api, config.name, &load.secret).await? {
        let (source, found) = resume::load(&api, &load, config.name, found).await?;
        own(&api, &load, found, source.origin).await;
        return Ok(source);
    }
    store_or_adopt(api, config, &load).await
}

/// The half of [`sync_ca_secret`] after its GET found no Secret: creates it
/// from the data dir's CA (generated if absent) or, when another replica
/// created it meanwhile (409), adopts that one ([`CaOrigin::LostRace`]).
/// Public so that losing the race can be tested without luck.
pub async fn store_or_adopt_ca_secret(
    client: Client,
    config: &CaSecretConfig<'_>,
) -> Result<CaSource, CaSecretError> {
    let load = Loader::new(config);
    store_or_adopt(Api::namespaced(client, config.namespace), config, &load).await
}

async fn store_or_adopt(
    api: Api<Secret>,
    config: &CaSecretConfig<'_>,
    load: &Loader<'_>,
) -> Result<CaSource, CaSecretError> {
    let secret = load.secret.clone();
    let local = |source| CaSecretError::Local {
        secret: secret.clone(),
        source,
    };
    let authority = Authority::load_or_generate_with(
        config.data_dir,
        config.trust_domain,
        config.cert_ttl,
        config.issuer_ttl,
    )
    .map_err(local)?;
    let texts = read_mycel_files(config.data_dir).map_err(local)?;
    // Created with its owner, so no moment passes in which an uninstall
    // would leave it behind.
    let new = secret_for(config.namespace, config.name, &texts, config.ownership);
    let created = timed("create", &secret, api.create(&PostParams::default(), &new)).await?;
    match created {
        Ok(_) => {
            tracing::info!(secret = %secret, owner = ?config.ownership, "stored the mesh CA in a new Secret");
            Ok(CaSource {
                authority,
                origin: CaOrigin::Created,
                resume: None,
            })
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            // Another replica created it first: its CA is the mesh's.
            drop(authority);
            let found =
                get(&api, config.name, &secret)
                    .await?
                    .ok_or_else(|| CaSecretError::Vanished {
                        secret: secret.clone(),
                    })?;
            tracing::info!(secret = %secret, "another replica stored the mesh CA first; using it");
            let mut adopted = load.load_secret(&found)?;
            adopted.origin = CaOrigin::LostRace;
            own(&api, load, found, adopted.origin).await;
            Ok(adopted)
        }
        Err(source) => Err(CaSecretError::Api {
            verb: "create",
            secret,
            source,
        }),
    }
}

/// The CA Secret's ownership given `--webhook-config`, `--keep-ca-secret`
/// and the ownership of everything else: the user's Secret (`keep`) is
/// never owned by the webhook configuration, whatever its uid; otherwise
/// the Secret is owned like everything the controller creates.
pub fn ownership(webhook_config: Option<&str>, keep: bool, others: &Ownership) -> Ownership {
    match (webhook_config, keep) {
        (Some(name), true) => Ownership::NeverBy(name.into()),
        (None, true) => Ownership::Leave,
        (_, false) => others.clone(),
    }
}

/// The owner references a Secret holding a CA of `origin` gets: a
/// cert-manager-style Secret is never one the controller created, so it
/// is never given an owner (a reference [`Ownership::NeverBy`] forbids is
/// still removed).
pub fn secret_ownership(origin: CaOrigin, ownership: &Ownership) -> Ownership {
    match (origin, ownership) {
        (CaOrigin::Provided, Ownership::By(_)) => Ownership::Leave,
        _ => ownership.clone(),
    }
}

async fn timed<T>(
    verb: &'static str,
    secret: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, CaSecretError> {
    tokio::time::timeout(API_TIMEOUT, call)
        .await
        .map_err(|_| CaSecretError::Timeout {
            verb,
            secret: secret.into(),
        })
}

async fn get(api: &Api<Secret>, name: &str, secret: &str) -> Result<Option<Secret>, CaSecretError> {
    timed("get", secret, api.get_opt(name))
        .await?
        .map_err(|source| CaSecretError::Api {
            verb: "get",
            secret: secret.into(),
            source,
        })
}

fn read_mycel_files(data_dir: &Path) -> Result<[String; 4], LoadError> {
    let dir = data_dir.join("ca");
    let read = |key: &str| {
        let path = dir.join(key);
        std::fs::read_to_string(&path).map_err(|cause| LoadError::Read { path, cause })
    };
    Ok([
        read(MYCEL_KEYS[0])?,
        read(MYCEL_KEYS[1])?,
        read(MYCEL_KEYS[2])?,
        read(MYCEL_KEYS[3])?,
    ])
}

struct Loader<'a> {
    /// `namespace/name`, for messages.
    secret: String,
    data_dir: &'a Path,
    trust_domain: &'a str,
    cert_ttl: Duration,
    issuer_ttl: Duration,
    ownership: &'a Ownership,
    poll: Duration,
    overlap: Duration,
}

impl<'a> Loader<'a> {
    fn new(config: &CaSecretConfig<'a>) -> Self {
        Loader {
            secret: format!("{}/{}", config.namespace, config.name),
            data_dir: config.data_dir,
            trust_domain: config.trust_domain,
            cert_ttl: config.cert_ttl,
            issuer_ttl: config.issuer_ttl,
            ownership: config.ownership,
            poll: config.poll,
            overlap: config.overlap,
        }
    }

    /// Writes the Secret's CA into the data dir and loads it from there.
    fn load_secret(&self, found: &Secret) -> Result<CaSource, CaSecretError> {
        let data = found.data.clone().unwrap_or_default();
        let invalid = |source| CaSecretError::Invalid {
            secret: self.secret.clone(),
            source,
        };
        match classify(&self.secret, &data)? {
            SecretCa::Mycel(texts) => {
                let dir = self.data_dir.join("ca");
                self.write(&dir, &MYCEL_KEYS, &texts)?;
                for stale in ROTATION_LEFTOVERS {
                    let path = dir.join(stale);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(cause) => return Err(self.write_error(path, cause)),
                    }
                }
                let authority = Authority::load_or_generate_with(
                    self.data_dir,
                    self.trust_domain,
                    self.cert_ttl,
                    self.issuer_ttl,
                )
                .map_err(invalid)?;
                Ok(CaSource {
                    authority,
                    origin: CaOrigin::Existing,
                    resume: None,
                })
            }
            SecretCa::Provided(texts) => {
                let dir = self.data_dir.join(PROVIDED_DIR);
                self.write(&dir, &PROVIDED_KEYS, &texts)?;
                let files = CaFiles {
                    issuer_cert: dir.join(PROVIDED_KEYS[0]),
                    issuer_key: dir.join(PROVIDED_KEYS[1]),
                    root_cert: dir.join(PROVIDED_KEYS[2]),
                };
                let authority = Authority::from_files(&files, self.trust_domain, self.cert_ttl)
                    .map_err(invalid)?;
                Ok(CaSource {
                    authority,
                    origin: CaOrigin::Provided,
                    resume: None,
                })
            }
        }
    }

    fn write(&self, dir: &Path, keys: &[&str], texts: &[String]) -> Result<(), CaSecretError> {
        ensure_private_dir(dir).map_err(|cause| self.write_error(dir.to_path_buf(), cause))?;
        for (key, text) in keys.iter().zip(texts) {
            let path = dir.join(key);
            write_private(&path, text.as_bytes()).map_err(|cause| self.write_error(path, cause))?;
        }
        Ok(())
    }

    fn write_error(&self, path: PathBuf, cause: std::io::Error) -> CaSecretError {
        CaSecretError::Write {
            secret: self.secret.clone(),
            path,
            cause,
        }
    }
}

#[cfg(test)]
mod tests;
