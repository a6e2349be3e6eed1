//! The rotation's state in the data dir (`<data-dir>/ca/rotation.json`,
//! 0600, replaced atomically), and loading the CA with it at start, so a
//! restart continues a rotation where it was.
//!
//! Switching to the new CA changes four files; the state file is the one
//! commit point: it is written first holding the new CA (`install`), then
//! the CA files are written, then the state again without `install`. A
//! crash in between is finished at the next start from the state file, so
//! the CA directory is never left half old, half new.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Phase;
use crate::ca::authority::{cert_pem, first_cert_der, LoadError};
use crate::ca::{Authority, CaFiles, CaMaterial};
use mycel_api::files::{ensure_private_dir, write_private};

pub const STATE_FILE: &str = "rotation.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a valid rotation state: {cause}")]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What is persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Persisted {
    pub phase: Phase,
    pub phase_since_unix: i64,
    /// When the rotation under way (or the last one) started.
    #[serde(default)]
    pub started_unix: i64,
    pub overlap_secs: u64,
    /// Distributing: the CA to switch to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<CaMaterial>,
    /// Overlap: the previous root, still trusted.
    #[serde(default)]
    pub previous_roots_pem: Vec<String>,
    /// Between the commit of Overlap and the CA files being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<CaMaterial>,
    /// Fingerprints of roots rotations retired: start-up flags naming one
    /// are stale, and the data dir's CA is used instead.
    #[serde(default)]
    pub retired: Vec<String>,
}

impl Persisted {
    pub fn stable(now_unix: i64, overlap: Duration) -> Self {
        Self {
            phase: Phase::Stable,
            phase_since_unix: now_unix,
            started_unix: 0,
            overlap_secs: overlap.as_secs(),
            next: None,
            previous_roots_pem: Vec::new(),
            install: None,
            retired: Vec::new(),
        }
    }
}

fn ca_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ca")
}

pub fn load(data_dir: &Path) -> Result<Option<Persisted>, StoreError> {
    let path = ca_dir(data_dir).join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|cause| StoreError::Parse { path, cause }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(StoreError::Read { path, cause }),
    }
}

pub fn save(data_dir: &Path, state: &Persisted) -> Result<(), StoreError> {
    let dir = ca_dir(data_dir);
    ensure_private_dir(&dir).map_err(|cause| StoreError::Write {
        path: dir.clone(),
        cause,
    })?;
    let path = dir.join(STATE_FILE);
    // Plain data: serializing cannot fail.
    let json = serde_json::to_vec_pretty(state).unwrap_or_default();
    write_private(&path, &json).map_err(|cause| StoreError::Write { path, cause })
}

/// Writes `ca` as the data dir's CA files: keys first, each file atomic.
/// A CA given without its root key leaves no `root.key` (the issuer is
/// then not rotated here).
pub fn install_files(data_dir: &Path, ca: &CaMaterial) -> Result<(), StoreError> {
    write_ca_dir(&ca_dir(data_dir), ca)
}

/// Writes `ca` into `dir` as `root.pem`, `root.key` (when given; removed
/// otherwise), `issuer.pem` and `issuer.key`: keys first, each file atomic.
pub fn write_ca_dir(dir: &Path, ca: &CaMaterial) -> Result<(), StoreError> {
    ensure_private_dir(dir).map_err(|cause| StoreError::Write {
        path: dir.to_path_buf(),
        cause,
    })?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        write_private(&path, text.as_bytes()).map_err(|cause| StoreError::Write { path, cause })
    };
    match &ca.root_key_pem {
        Some(key) => write("root.key", key)?,
        None => match std::fs::remove_file(dir.join("root.key")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(cause) => {
                return Err(StoreError::Write {
                    path: dir.join("root.key"),
                    cause,
                })
            }
        },
    }
    write("issuer.key", &ca.issuer_key_pem)?;
    write("root.pem", &ca.root_pem)?;
    write("issuer.pem", &ca.issuer_pem)
}

/// How the CA is loaded at start.
pub struct LoadSettings<'a> {
    pub data_dir: &'a Path,
    pub trust_domain: &'a str,
    pub cert_ttl: Duration,
    pub issuer_ttl: Duration,
    /// `--root-cert/--issuer-cert/--issuer-key`, if given.
    pub files: Option<&'a CaFiles>,
}

/// The CA and the rotation state at start: a pending install is finished,
/// flags naming a root a rotation retired give way to the data dir's CA,
/// and the roots the phase trusts besides the current one are set.
pub fn load_ca(s: &LoadSettings<'_>) -> Result<(Authority, Option<Persisted>), StoreError> {
    let mut state = load(s.data_dir)?;
    if let Some(st) = state.as_mut() {
        if let Some(ca) = st.install.take() {
            install_files(s.data_dir, &ca)?;
            save(s.data_dir, st)?;
            tracing::info!("finished installing the new CA a restart interrupted");
        }
    }
    let authority = match (s.files, &state) {
        (Some(files), st) => {
            let given = Authority::from_files(files, s.trust_domain, s.cert_ttl)?;
            let retired = st
                .as_ref()
                .is_some_and(|st| st.retired.contains(&given.root_fingerprint()));
            let rotated_from = st.as_ref().is_some_and(|st| {
                matches!(st.phase, Phase::Overlap | Phase::Finishing)
                    && st
                        .previous_roots_pem
                        .iter()
                        .any(|p| p.trim() == given.root_pem().trim())
            });
            if retired || rotated_from {
                tracing::warn!(
                    root = %given.root_fingerprint(),
                    "--root-cert names a root a rotation replaced; using the CA in the data dir (update the flags)"
                );
                load_data_dir(s, state.is_some())?
            } else {
                given
            }
        }
        (None, st) => load_data_dir(s, st.is_some())?,
    };
    if let Some(st) = &state {
        let also = match st.phase {
            Phase::Distributing => st
                .next
                .as_ref()
                .map(|n| pem_roots(&n.root_pem))
                .transpose()?
                .unwrap_or_default(),
            Phase::Overlap => st
                .previous_roots_pem
                .iter()
                .map(|p| pem_roots(p))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
            Phase::Stable | Phase::Finishing => Vec::new(),
        };
        authority.set_also_trusted(also);
        tracing::info!(
            phase = st.phase.as_str(),
            "trust-anchor rotation state loaded"
        );
    }
    Ok((authority, state))
}

fn pem_roots(pem: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(vec![first_cert_der(Path::new(STATE_FILE), pem)?])
}

/// The data dir's CA; one a rotation installed without its root key is
/// loaded like user files.
fn load_data_dir(s: &LoadSettings<'_>, rotated: bool) -> Result<Authority, StoreError> {
    let dir = ca_dir(s.data_dir);
    let keyless = !dir.join("root.key").exists()
        && ["root.pem", "issuer.pem", "issuer.key"]
            .iter()
            .all(|n| dir.join(n).exists());
    if rotated && keyless {
        let files = CaFiles {
            root_cert: dir.join("root.pem"),
            issuer_cert: dir.join("issuer.pem"),
            issuer_key: dir.join("issuer.key"),
        };
        return Ok(Authority::from_files(&files, s.trust_domain, s.cert_ttl)?);
    }
    Ok(Authority::load_or_generate_with(
        s.data_dir,
        s.trust_domain,
        s.cert_ttl,
        s.issuer_ttl,
    )?)
}

/// The PEM of a root for the state file.
pub fn root_pem(der: &[u8]) -> String {
    cert_pem(der)
}

#[cfg(test)]
mod tests;
