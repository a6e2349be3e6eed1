//! Local join tokens: `mycel.<64 hex>`, each created for one workload: a
//! (namespace, service account), the exact labels it registers with, the
//! addresses it may register, and an optional expiry. Only SHA-256 hashes
//! are stored, in `<data-dir>/tokens.json` (0600), so the file does not hand
//! out identities to whoever reads it. Every read-modify-write of the file
//! holds an advisory lock (`tokens.json.lock`) and replaces the file
//! atomically, so concurrent `token create` calls never lose a token.
//!
//! A token's public id is the first 16 hex digits of its hash: what
//! `token list` shows, `token revoke` takes, and what the controller puts in
//! every certificate issued for the token (`urn:mycel:token:<id>`), so
//! registrations and renewals can be checked against the token record
//! across controller restarts.
//!
//! A crate of its own so that `mycelctl` can create tokens without linking
//! the control plane; `mycel-controller` reads the same store through
//! [`TokenStore`].

pub mod cli;
mod range;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mycel_api::files::{ensure_private_dir, write_private};
use mycel_api::spiffe::SpiffeId;
use mycel_api::validate::limits;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use range::{AddressRange, RangeError};
pub use store::{AuthError, TokenStore, UNKNOWN_RELOAD_INTERVAL};

pub const TOKENS_FILE: &str = "tokens.json";
pub const TOKEN_PREFIX: &str = "mycel.";
/// The URI SAN prefix that carries a token id in issued certificates.
pub const TOKEN_URI_PREFIX: &str = "urn:mycel:token:";
/// Hex digits of the hash that form a token's public id.
pub const TOKEN_ID_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid {what} {value:?}: {rule}")]
    InvalidName {
        what: &'static str,
        value: String,
        rule: String,
    },
    #[error("invalid label {0:?}: {1}")]
    InvalidLabel(String, String),
    #[error("invalid --ttl: {0}")]
    InvalidTtl(String),
    #[error(transparent)]
    Address(#[from] RangeError),
    #[error("no token with id {0:?} (see `mycelctl token list`)")]
    NotFound(String),
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a valid token store: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot lock {path}: {cause}")]
    Lock {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// What a new token is for.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: String,
    /// Exactly the labels the workload must register with.
    pub labels: BTreeMap<String, String>,
    /// Addresses the workload may register besides its connection's source
    /// IP.
    pub addresses: Vec<AddressRange>,
    /// None = never expires.
    pub ttl: Option<Duration>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// One token as stored (and as `token list` shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub sha256: String,
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: Vec<AddressRange>,
    pub created_unix: u64,
    #[serde(default)]
    pub expires_unix: Option<u64>,
    #[serde(default)]
    pub revoked_unix: Option<u64>,
}

impl TokenRecord {
    pub fn id(&self) -> &str {
        self.sha256.get(..TOKEN_ID_LEN).unwrap_or(&self.sha256)
    }

    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_unix.is_some_and(|e| now_unix >= e)
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKENS_FILE)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a token has the shape `mycel.<64 lowercase hex>`.
pub fn is_well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The token id a certificate was issued for, if it carries one.
pub fn token_id_from_cert_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u
            .strip_prefix(TOKEN_URI_PREFIX)
            .filter(|id| id.len() == TOKEN_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string),
        _ => None,
    })
}

fn read_store(path: &Path) -> Result<TokenFile, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(cause) => Err(TokenError::Read {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Holds the advisory lock of the token store until dropped (closing the
/// file releases it).
struct StoreLock {
    _file: File,
}

fn lock_store(data_dir: &Path) -> Result<StoreLock, TokenError> {
    let path = data_dir.join(format!("{TOKENS_FILE}.lock"));
    let err = |cause| TokenError::Lock {
        path: path.clone(),
        cause,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    // An advisory flock: every writer (mycelctl, mycel-controller token,
    // the demo launcher) takes it.
    file.lock().map_err(err)?;
    Ok(StoreLock { _file: file })
}

/// Reads, changes and atomically rewrites the store under its lock.
fn modify<T>(
    data_dir: &Path,
    change: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>,
) -> Result<T, TokenError> {
    ensure_private_dir(data_dir).map_err(|cause| TokenError::Write {
        path: data_dir.to_path_buf(),
        cause,
    })?;
    let _lock = lock_store(data_dir)?;
    let path = tokens_path(data_dir);
    let mut store = read_store(&path)?;
    let out = change(&mut store)?;
    let json = serde_json::to_vec_pretty(&store).map_err(|e| TokenError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_private(&path, &json).map_err(|cause| TokenError::Write { path, cause })?;
    Ok(out)
}

fn validate_names(namespace: &str, service_account: &str) -> Result<(), TokenError> {
    // Any trust domain works here: only the name rules of SpiffeId matter.
    SpiffeId::new("cluster.local", namespace, service_account)
        .map(|_| ())
        .map_err(|e| match e {
            mycel_api::spiffe::SpiffeIdError::Name(e) => TokenError::InvalidName {
                what: e.kind.as_str(),
                rule: e.to_string(),
                value: e.value,
            },
            other => TokenError::InvalidName {
                what: "identity",
                value: String::new(),
                rule: other.to_string(),
            },
        })
}

/// The label rules a registration must meet (the proxy applies the same).
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), TokenError> {
    if labels.len() > limits::MAX_LABELS {
        return Err(TokenError::InvalidLabel(
            format!("{} labels", labels.len()),
            format!("at most {} labels", limits::MAX_LABELS),
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > limits::MAX_LABEL_LEN || v.len() > limits::MAX_LABEL_LEN {
            return Err(TokenError::InvalidLabel(
                format!("{k}={v}"),
                format!(
                    "keys are 1 to {0} bytes, values at most {0}",
                    limits::MAX_LABEL_LEN
                ),
            ));
        }
    }
    Ok(())
}

/// Parses `k=v` label flags; a key given twice is an error.
pub fn parse_labels(flags: &[String]) -> Result<BTreeMap<String, String>, TokenError> {
    let mut labels = BTreeMap::new();
    for flag in flags {
        let (k, v) = flag
            .split_once('=')
            .ok_or_else(|| TokenError::InvalidLabel(flag.clone(), "expected key=value".into()))?;
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(TokenError::InvalidLabel(
                flag.clone(),
                format!("key {k:?} is given twice"),
            ));
        }
    }
    validate_labels(&labels)?;
    Ok(labels)
}

/// Creates a join token for `spec`, records its hash in
/// `<data_dir>/tokens.json` and returns the token (shown once) with its
/// record.
pub fn create_token(
    data_dir: &Path,
    spec: &TokenSpec,
) -> Result<(String, TokenRecord), TokenError> {
    validate_names(&spec.namespace, &spec.service_account)?;
    validate_labels(&spec.labels)?;
    if spec.ttl.is_some_and(|t| t.is_zero()) {
        return Err(TokenError::InvalidTtl("must be longer than 0s".into()));
    }
    modify(data_dir, |store| {
        // A 64-bit id collision is unlikely; a fresh secret avoids it anyway.
        let (token, sha256) = loop {
            let secret: [u8; 32] = rand::random();
            let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
            let sha = hash_token(&token);
            if !store.tokens.iter().any(|t| t.id() == &sha[..TOKEN_ID_LEN]) {
                break (token, sha);
            }
        };
        let created_unix = now_unix();
        let record = TokenRecord {
            sha256,
            namespace: spec.namespace.clone(),
            service_account: spec.service_account.clone(),
            labels: spec.labels.clone(),
            addresses: spec.addresses.clone(),
            created_unix,
            expires_unix: spec
                .ttl
                .map(|t| created_unix.saturating_add(t.as_secs().max(1))),
            revoked_unix: None,
        };
        store.tokens.push(record.clone());
        Ok((token, record))
    })
}

/// Every token in the store, oldest first.
pub fn list_tokens(data_dir: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(read_store(&tokens_path(data_dir))?.tokens)
}

/// Marks the token with public id `id` revoked: it can no longer join,
/// register or renew. Revoking twice keeps the first time.
pub fn revoke_token(data_dir: &Path, id: &str) -> Result<TokenRecord, TokenError> {
    modify(data_dir, |store| {
        let t = store
            .tokens
            .iter_mut()
            .find(|t| t.id() == id)
            .ok_or_else(|| TokenError::NotFound(id.to_string()))?;
        t.revoked_unix.get_or_insert_with(now_unix);
        Ok(t.clone())
    })
}
